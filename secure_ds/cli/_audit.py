"""``secure-ds audit verify|repair|prove|tail|checkpoint|export|keygen-auditor|unseal``:
check the signed audit log, export it, and open sealed bodies.

Thin on purpose: parse, call :mod:`secure_ds.audit`, print. ``verify`` exits 0 when the
log verifies and 1 when it does not (with ``--json``: one object with ``ok``,
``records``, ``first_bad_index``, ``reason``, ...); 2 is an error (an unreadable file,
a bad key).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import SecureDSError

__all__ = ["register", "run"]

_VERIFY_EPILOG = (
    "Without --key the keys are learnt from the log's own checkpoints (trust on first "
    "use): that finds edits, reordering, deletions, insertions and torn tails, but a log "
    "rewritten wholesale with another key passes. Pin the signer's public key (--key, e.g. "
    "audit-signing-key.pub beside the log) and keep checkpoints outside the log "
    "(--checkpoint) to find those and removed newest records (truncation). "
    "Exit status: 0 verified, 1 a problem found, 2 error."
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``audit`` group (``verify``, ``repair``, ``prove``, ``tail``, ``checkpoint``)."""
    audit = subparsers.choices.get("audit")
    if audit is None:
        audit = subparsers.add_parser(
            "audit", help="the signed audit log: verify, repair, prove, export, unseal"
        )
    actions = audit.add_subparsers(dest="audit_command", required=True)

    verify = actions.add_parser(
        "verify",
        help="check every signature, the hash chain and the checkpoints",
        description="Verify a signed audit log and report the first problem: edited, "
        "reordered, deleted, inserted, truncated, wrong key or torn tail.",
        epilog=_VERIFY_EPILOG,
    )
    verify.add_argument("path", type=Path, help="the audit log")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.add_argument(
        "--key",
        type=Path,
        action="append",
        default=[],
        metavar="PUB.pem",
        help="a trusted signer's public key (repeatable); pins the keys",
    )
    verify.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a checkpoint kept outside the log (a signed note, or a checkpoint line)",
    )
    verify.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="processes checking signatures of a large log (default 1: this process, "
        "with the signatures checked on one thread per CPU, which measured faster)",
    )
    verify.add_argument(
        "--chain-only",
        action="store_true",
        help="skip the record signatures: chain, hashes and signed checkpoints only (faster)",
    )

    repair = actions.add_parser(
        "repair",
        help="cut a torn tail (a last line cut off by a crash), and nothing else",
    )
    repair.add_argument("path", type=Path, help="the audit log")
    repair.add_argument("--json", action="store_true", help="print one JSON object")

    prove = actions.add_parser(
        "prove",
        help="print an RFC 9162 inclusion or consistency proof as JSON",
        description="Inclusion: --index N or --event-id ID. Consistency: --old-size M. "
        "--size picks the tree (default: every record in the log).",
    )
    prove.add_argument("path", type=Path, help="the audit log")
    which = prove.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="leaf index of the record")
    which.add_argument("--event-id", help="event_id of the record")
    which.add_argument("--old-size", type=int, help="size of the older tree")
    prove.add_argument("--size", type=int, help="size of the tree (default: all records)")

    tail = actions.add_parser(
        "tail",
        help="show the newest records (checkpoint lines skipped); reads, does not verify",
    )
    tail.add_argument("path", type=Path, help="the audit log")
    tail.add_argument("-n", type=int, default=10, metavar="N", help="how many (default 10)")
    tail.add_argument("--json", action="store_true", help="print the records as JSON lines")

    checkpoint = actions.add_parser(
        "checkpoint",
        help="print the newest checkpoint of a log (to keep it somewhere else)",
    )
    checkpoint.add_argument("path", type=Path, help="the audit log")
    checkpoint.add_argument("--json", action="store_true", help="print the checkpoint line")
    _register_export_and_seal(actions)
    _register_rotate(actions)


def run(args: argparse.Namespace) -> int:
    if args.audit_command == "verify":
        return _verify(args)
    if args.audit_command == "repair":
        return _repair(args)
    if args.audit_command == "prove":
        return _prove(args)
    if args.audit_command == "checkpoint":
        return _checkpoint(args)
    if args.audit_command == "tail":
        return _tail(args)
    if args.audit_command == "export":
        return _export(args)
    if args.audit_command == "keygen-auditor":
        return _keygen_auditor(args)
    if args.audit_command == "unseal":
        return _unseal(args)
    if args.audit_command == "rotate-key":
        return _rotate_key(args)
    return 2  # pragma: no cover - argparse requires a known subcommand


def _verify(args: argparse.Namespace) -> int:
    from ..audit import load_public_key, verify_log

    keys = [load_public_key(k) for k in args.key]
    notes = []
    for file in args.checkpoint:
        try:
            notes.append(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise SecureDSError(
                f"Cannot read the checkpoint {file} ({exc}).",
                hint="Pass a file holding a signed checkpoint note or a checkpoint line.",
            ) from None
    result = verify_log(
        args.path,
        keys=keys,
        signatures=not args.chain_only,
        checkpoints=notes,
        jobs=max(args.jobs, 1),
    )
    if args.json:
        sys.stdout.write(json.dumps(result.as_json(), indent=2) + "\n")
        return 0 if result.ok else 1
    console = Console(highlight=False)
    what = "chain and checkpoints" if args.chain_only else "signatures, chain and checkpoints"
    keys_note = "pinned keys" if result.keys_pinned else "keys from the log (not pinned)"
    if result.ok:
        console.print(
            f"[green]OK[/] {escape(str(args.path))}: {result.records} records, "
            f"{result.checkpoints} checkpoints; {what} verified with {keys_note} "
            f"({', '.join(result.keys) or 'none'})."
        )
        if result.unsealed:
            console.print(
                f"[yellow]note:[/] the newest {result.unsealed} records follow the last "
                "checkpoint (a writer that is still running, or stopped without closing)."
            )
        return 0
    console.print(
        f"[bold red]FAILED[/] {escape(str(args.path))}: [bold]{result.reason}[/] at record "
        f"{result.first_bad_index} (line {result.line}): {escape(result.detail)}. "
        f"{result.records} records verified before it."
    )
    return 1


def _repair(args: argparse.Namespace) -> int:
    from ..audit import repair_log

    result = repair_log(args.path)
    if args.json:
        sys.stdout.write(json.dumps(result.as_json(), indent=2) + "\n")
    elif result.removed_bytes:
        print(f"Cut a torn tail of {result.removed_bytes} bytes from {args.path}.")
    else:
        print(f"{args.path} has no torn tail; nothing changed.")
    return 0


def _prove(args: argparse.Namespace) -> int:
    from ..audit._prove import prove_consistency, prove_inclusion

    if args.old_size is not None:
        proof = prove_consistency(args.path, old_size=args.old_size, size=args.size)
    else:
        proof = prove_inclusion(args.path, index=args.index, event_id=args.event_id, size=args.size)
    sys.stdout.write(json.dumps(proof, indent=2) + "\n")
    return 0


def _tail(args: argparse.Namespace) -> int:
    from collections import deque

    from ..audit import read_records

    try:
        newest = deque(read_records(args.path), maxlen=max(args.n, 0))
    except OSError as exc:
        raise SecureDSError(
            f"Cannot read the audit log {args.path} ({exc.strerror or type(exc).__name__}).",
            hint="Pass the path of an audit log file.",
        ) from None
    except ValueError:
        raise SecureDSError(
            f"{args.path} holds a line that is not JSON.",
            hint=f"Run `secure-ds audit verify {args.path}` to find it.",
        ) from None
    if args.json:
        for record in newest:
            sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
        return 0
    table = Table(title=f"newest {len(newest)} records of {args.path}")
    for column in ("#", "time", "outcome", "action", "subject", "model", "event_id"):
        table.add_column(column, overflow="fold")
    for record in newest:
        actor = record.get("actor") or {}
        request = record.get("request") or {}
        table.add_row(
            str((record.get("integrity") or {}).get("index", "-")),
            str(record.get("time", "-")),
            str(record.get("outcome", "-")),
            str(record.get("action", "-")),
            escape(str(actor.get("subject", "-"))),
            escape(str(request.get("model", "-"))),
            str(record.get("event_id", "-")),
        )
    Console().print(table)
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    from ..audit._prove import newest_checkpoint_line

    line = newest_checkpoint_line(args.path)
    if args.json:
        sys.stdout.write(line)
    else:
        sys.stdout.write(json.loads(line)["checkpoint"]["note"])
    return 0


# ---------------------------------------------------------------------- export, sealed bodies

_EXPORT_EPILOG = (
    "The log is verified first (every signature; --chain-only: chain, hashes and signed "
    "checkpoints) and refused if it does not verify; only the records that verified are "
    "exported. -o writes atomically (a temporary file renamed into place). CSV: a header "
    "row and the columns event_id, time, subject, action, model, decision, policies, "
    "status, error_type, tokens, cost, latency, body SHA-256s, ... (README); text cells "
    "starting with = + - @ get a leading ' (formula injection). Exit status: 0 exported, "
    "1 the log does not verify, 2 error."
)


def _register_export_and_seal(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    export = actions.add_parser(
        "export",
        help="write the records as JSON lines, CSV or ArcSight CEF (verified first)",
        description="Export a signed audit log's call records (checkpoint lines skipped).",
        epilog=_EXPORT_EPILOG,
    )
    export.add_argument("path", type=Path, help="the audit log")
    export.add_argument(
        "--format", choices=("jsonl", "csv", "cef"), default="jsonl", help="default: jsonl"
    )
    export.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    export.add_argument("--since", help="only records at or after this ISO 8601 time (UTC)")
    export.add_argument("--until", help="only records before this ISO 8601 time (UTC)")
    export.add_argument(
        "--integrity",
        action="store_true",
        help="jsonl: keep each line's integrity member (the signature stays checkable)",
    )
    export.add_argument(
        "--key",
        type=Path,
        action="append",
        default=[],
        metavar="PUB.pem",
        help="a trusted signer's public key for the verification (repeatable)",
    )
    how = export.add_mutually_exclusive_group()
    how.add_argument(
        "--chain-only",
        action="store_true",
        help="verify chain, hashes and signed checkpoints only (faster)",
    )
    how.add_argument(
        "--no-verify",
        action="store_true",
        help="export without verifying (to look at a log known to be damaged)",
    )

    keygen = actions.add_parser(
        "keygen-auditor",
        help="create an auditor key pair for sealed bodies (X25519 + ML-KEM-1024)",
        description="Write OUT (the auditor's private key, mode 0600: keep it off the "
        "writing host) and OUT.pub (give it to SECURE_DS_AUDIT_SEAL_TO). Never overwrites.",
    )
    keygen.add_argument("out", type=Path, help="path of the private key file to create")

    unseal = actions.add_parser(
        "unseal",
        help="print the sealed request and response bodies of records (auditor key needed)",
        description="Open the bodies sealed for an auditor (SECURE_DS_AUDIT_SEAL_TO) and "
        "check each against the SHA-256 its record holds. Does not verify the log's "
        "signatures: run `secure-ds audit verify` for that. Exit status: 0 all opened, "
        "1 a sealed member did not open, 2 error.",
    )
    unseal.add_argument("path", type=Path, help="the audit log")
    unseal.add_argument(
        "--key", type=Path, required=True, metavar="AUDITOR", help="the auditor's private key"
    )
    which = unseal.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, help="only the record with this leaf index")
    which.add_argument("--event-id", help="only the record with this event_id")
    unseal.add_argument("--json", action="store_true", help="print one JSON object per record")


def _export(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from ..audit import load_public_key
    from ..audit._export import Verify, export_log, parse_time
    from ..errors import LogNotVerified

    verify: Verify = "none" if args.no_verify else "chain" if args.chain_only else "full"
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    keys = [load_public_key(k) for k in args.key]
    show = args.output is not None and sys.stderr.isatty()
    try:
        total = args.path.stat().st_size
    except OSError:
        total = 0
    with Progress(
        "export",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not show or total < (4 << 20),
        transient=True,
    ) as bar:
        task = bar.add_task("export", total=total)
        try:
            result = export_log(
                args.path,
                fmt=args.format,
                out=args.output if args.output is not None else sys.stdout,
                since=since,
                until=until,
                verify=verify,
                keys=keys,
                integrity=args.integrity,
                progress=lambda done: bar.update(task, completed=done),
            )
        except BrokenPipeError:
            # the reader of stdout (e.g. `head`) stopped reading: stop quietly, as Unix
            # tools do; stdout goes to /dev/null so the interpreter's final flush is quiet
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except LogNotVerified as exc:
            Console(stderr=True, soft_wrap=True).print(
                f"[bold red]FAILED[/] {escape(str(exc))}", highlight=False
            )
            return 1
    if args.output is not None:
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"Exported {result.records} of {result.scanned} records to "
            f"{escape(str(args.output))} ({args.format}; verified: {result.verified})."
        )
    return 0


def _keygen_auditor(args: argparse.Namespace) -> int:
    from ..audit._seal import generate_auditor_key, load_auditor_public_key

    private, public = generate_auditor_key(args.out)
    key_id = load_auditor_public_key(public).key_id
    print(f"Wrote {private} (private, 0600: keep it off the host that writes the log).")
    print(f"Wrote {public} (key id {key_id}): set SECURE_DS_AUDIT_SEAL_TO={public}")
    return 0


def _records(path: Path) -> Iterator[dict[str, Any]]:
    """The log's records, one at a time (a large log is never held whole)."""
    from ..audit import read_records

    try:
        yield from read_records(path)
    except OSError as exc:
        raise SecureDSError(
            f"Cannot read the audit log {path} ({exc.strerror or type(exc).__name__}).",
            hint="Pass the path of an audit log file.",
        ) from None
    except ValueError:
        raise SecureDSError(
            f"{path} holds a line that is not JSON.",
            hint=f"Run `secure-ds audit verify {path}` to find it.",
        ) from None


def _unseal(args: argparse.Namespace) -> int:
    import base64

    from ..audit._seal import load_auditor_private_key, unseal_record
    from ..errors import SealError

    key = load_auditor_private_key(args.key)
    failed = found = 0
    for record in _records(args.path):
        index = (record.get("integrity") or {}).get("index")
        if args.index is not None and index != args.index:
            continue
        if args.event_id is not None and record.get("event_id") != args.event_id:
            continue
        if "sealed" not in record:
            continue
        found += 1
        try:
            bodies = unseal_record(key, record)
        except SealError as exc:
            failed += 1
            Console(stderr=True, soft_wrap=True).print(
                f"[bold red]record {index}:[/] {escape(str(exc))}", highlight=False
            )
            continue
        parts: dict[str, object] = {"index": index, "event_id": record.get("event_id")}
        for name, body in (("request", bodies.request), ("response", bodies.response)):
            if body is None:
                parts[name] = None
                continue
            try:
                parts[name] = body.decode("utf-8")
            except UnicodeDecodeError:
                parts[f"{name}_base64"] = base64.b64encode(body).decode("ascii")
        if args.json:
            sys.stdout.write(json.dumps(parts, ensure_ascii=False) + "\n")
            continue
        print(
            f"=== record {index}  event {record.get('event_id')}  {record.get('time')}  "
            f"{record.get('action')} {record.get('outcome')} (bodies match the record's SHA-256)"
        )
        for name in ("request", "response"):
            print(f"--- {name}")
            if f"{name}_base64" in parts:
                print(f"(binary, base64) {parts[f'{name}_base64']}")
            else:
                print("(none)" if parts[name] is None else parts[name])
    if not found:
        which = (
            f"record {args.index}"
            if args.index is not None
            else f"event {args.event_id}"
            if args.event_id
            else "any record"
        )
        raise SecureDSError(
            f"No sealed bodies found for {which} in {args.path}.",
            hint="Bodies are sealed only while SECURE_DS_AUDIT_SEAL_TO is set.",
        )
    return 1 if failed else 0


def _register_rotate(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rotate = actions.add_parser(
        "rotate-key",
        help="start a new signing-key epoch: the old key announces the new one",
        description="Write a checkpoint signed by the current key and the new key that "
        "announces the new key; the log's records are signed by the new key from then on, "
        "and verifiers that trust the old key learn the new one from it (the old key is "
        "retired). Point SECURE_DS_AUDIT_SIGNING_KEY at the new key afterwards.",
    )
    rotate.add_argument("path", type=Path, help="the audit log")
    rotate.add_argument(
        "--new-key",
        type=Path,
        required=True,
        metavar="NEW.pem",
        help="the new private key (PEM, 0600); created (Ed25519, or --alg) when missing",
    )
    rotate.add_argument(
        "--key",
        type=Path,
        metavar="OLD.pem",
        help="the current private key (default: SECURE_DS_AUDIT_SIGNING_KEY, else the "
        "default key file)",
    )
    rotate.add_argument(
        "--alg", choices=["ed25519", "ecdsa-p256"], default="ed25519", help="for a new key"
    )
    rotate.add_argument("--json", action="store_true", help="print the rotation checkpoint")


def _rotate_key(args: argparse.Namespace) -> int:
    from ..audit import AuditLog, default_signer, generate_key_file, load_signer

    old_path = args.key or (
        Path(os.environ["SECURE_DS_AUDIT_SIGNING_KEY"])
        if os.environ.get("SECURE_DS_AUDIT_SIGNING_KEY")
        else None
    )
    old = load_signer(old_path) if old_path is not None else default_signer()
    new = load_signer(args.new_key) if args.new_key.exists() else None
    if new is None:
        new = generate_key_file(args.new_key, args.alg)
    with AuditLog(args.path, signer=old) as log:
        line = log.rotate_key(new)
    if args.json:
        sys.stdout.write(json.dumps(line) + "\n")
    else:
        print(
            f"Rotated {args.path} from key {old.key_id} to {new.key_id} at record "
            f"{line['checkpoint']['size']}. Set SECURE_DS_AUDIT_SIGNING_KEY={args.new_key} "
            "for every writer of this log."
        )
    return 0
