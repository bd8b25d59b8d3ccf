"""``secure-ds audit verify|repair|prove|tail|checkpoint``: check the signed audit log.

Thin on purpose: parse, call :mod:`secure_ds.audit`, print. ``verify`` exits 0 when the
log verifies and 1 when it does not (with ``--json``: one object with ``ok``,
``records``, ``first_bad_index``, ``reason``, ...); 2 is an error (an unreadable file,
a bad key).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

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
        audit = subparsers.add_parser("audit", help="the signed audit log: verify, repair, prove")
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
        default=os.cpu_count() or 1,
        metavar="N",
        help="processes checking signatures of a large log (default: one per CPU)",
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
