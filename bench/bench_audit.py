"""The signed audit log: appends and verification against the floor, in one run.

The floor is what signing a record costs at the least: SHA-256 of its bytes plus one
raw Ed25519 signature, in a loop. Our append path does that plus RFC 8785
canonicalisation, the chain, the Merkle tree, checkpoints, the ``flock``, the write and
the fsync policy:

* durable (``fsync="always"``: each append returns after its record is on disk, group
  committed), 1, 8, 16 and 32 writer threads sharing one log, through the native
  append path (``secure_ds._native``: records chained and signed by their own threads
  without the GIL, a committer thread writing, a syncer thread running the fsyncs),
  and 8 threads through the Python path (``native=False``) for comparison; also 8
  writer *processes* appending to one file (one chain through the ``flock``);
* ``fsync="background"`` (write before return, fsync within 20 ms), 1 writer, for the
  durability decision;
* verification of the resulting log: full (every signature), in one process with the
  signatures checked in line (``threads=0``), then on threads beside the chain walk
  (the default), and by one process per CPU (``verify --jobs``); and chain +
  checkpoints only;
* the signers, sign and verify per second over a record's leaf data, against software
  Ed25519 (the default): software ECDSA P-256, SoftHSM2 through PKCS#11 (Ed25519 and
  P-256; when scripts/softhsm.sh has made its test token) and a hybrid Ed25519 +
  ML-DSA-65 checkpoint note (signed by both; verified: both signatures checked).

Records are a realistic ~2 KB audit record (a chat call under a Cedar policy). Targets
(issue 5, on these 2-core machines): >= 10,000 durable signed appends/s; full
verification >= 5,000 records/s; chain + checkpoint verification >= 50,000 records/s.
Timings on shared machines vary from run to run; nothing here is asserted.

    .venv/bin/python bench/bench_audit.py [--records 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from rich.console import Console
from rich.table import Table

from secure_ds.audit import AuditLog, load_signer, verify_log
from secure_ds.audit._jcs import canonicalize

TARGETS = {"append": 10_000.0, "verify_full": 5_000.0, "verify_chain": 50_000.0}


def make_record(i: int) -> dict[str, Any]:
    """An audit record shaped like build_record's for a permitted chat call."""
    return {
        "schema": "secure-ds.audit/1",
        "event_id": f"0193a5c4-7e2b-7{i:03x}-8a1b-{i:012x}",
        "time": "2026-11-28T09:30:12.345Z",
        "trace_id": f"{i:032x}",
        "outcome": "permit",
        "action": "chat",
        "actor": {
            "subject": "alice",
            "roles": ["engineer"],
            "attributes": {"department": "eng", "team": "ml", "clearance": "confidential"},
            "auth": "jwt",
            "issuer": "secure-ds-embedded",
            "token_jti": f"{i:032x}",
            "cert_sha256": "9f" * 32,
            "certificate_bound": True,
        },
        "request": {
            "method": "POST",
            "endpoint": "https://127.0.0.1:8443",
            "path": "/chat/completions",
            "model": "deepseek-flash",
            "model_requested": "deepseek-flash",
            "model_pin": "2026-10-17",
            "stream": False,
            "max_tokens": 1024,
            "body_sha256": hashlib.sha256(str(i).encode()).hexdigest(),
            "body_bytes": 812,
        },
        "classify": {"classification": "internal", "findings": {"email": 1}},
        "decide": {
            "effect": "permit",
            "engine": "cedar",
            "policies": ["policy0", "policy3"],
            "policy_ids": ["engineers-use-code-models", "confidential-redacted-for-engineers"],
            "obligations": ["redact:email"],
            "advice": [],
            "errors": [],
            "denied_by": None,
            "revision": "a3" * 32,
            "git_commit": "0b90772",
            "eval_us": 71.4,
            "context": {
                "classification": "internal",
                "finding_kinds": ["email"],
                "max_tokens": 1024,
                "hour_utc": 9,
                "weekday": 6,
                "certificate_bound": True,
                "budget_remaining_usd": 48.21,
                "source_ip": "10.0.0.7",
            },
            "reload_error": None,
        },
        "enforce": {"applied": ["redact:email"]},
        "meter": {"engine": "budgets", "reserved_usd": 0.0123, "settled_usd": 0.00042},
        "attempts": [{"status": 200, "ms": 41.27}],
        "response": {
            "status": 200,
            "id": f"chatcmpl-{i}",
            "model": "deepseek-flash",
            "usage": {
                "prompt_tokens": 120,
                "completion_tokens": 256,
                "total_tokens": 376,
                "prompt_cache_hit_tokens": 64,
                "prompt_cache_miss_tokens": 56,
            },
            "finish_reason": "stop",
            "body_sha256": hashlib.sha256(str(-i).encode()).hexdigest(),
            "body_bytes": 1433,
        },
        "cost": {"usd": 0.00016, "model": "deepseek-flash", "window": "off-peak", "table": "x"},
        "fhe": None,
        "latency_ms": 43.219,
        "error": None,
    }


def floor(n: int) -> float:
    """Records/s of SHA-256 + one raw Ed25519 signature over each record's bytes."""
    key = ed25519.Ed25519PrivateKey.generate()
    bodies = [json.dumps(make_record(i)).encode() for i in range(n)]
    start = time.perf_counter()
    for body in bodies:
        hashlib.sha256(body).digest()
        key.sign(body)
    return n / (time.perf_counter() - start)


def appends(
    path: Path, n: int, threads: int, fsync: str, key: Path, *, native: bool = True
) -> tuple[float, float | None]:
    """Records/s of ``threads`` writer threads on one log, and records per fsync (the
    native syncer counts its fsyncs; None on the Python path)."""
    records = [make_record(i) for i in range(n)]
    log = AuditLog(path, fsync=fsync, signer=load_signer(key), native=native)  # type: ignore[arg-type]
    share = n // threads

    def work(part: list[dict[str, Any]]) -> None:
        for record in part:
            log.append(record)

    workers = [
        threading.Thread(target=work, args=(records[t * share : (t + 1) * share],))
        for t in range(threads)
    ]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    fsyncs = log._group.stats()[0] if log._group is not None else 0
    log.close()
    return share * threads / elapsed, (share * threads / fsyncs) if fsyncs else None


def _process_worker(path: str, key: str, first: int, count: int, barrier: Any, fsyncs: Any) -> None:
    log = AuditLog(Path(path), fsync="always", signer=load_signer(Path(key)))
    records = [make_record(first + i) for i in range(count)]
    real_fsync, calls = os.fsync, [0]

    def counting_fsync(fd: Any) -> None:  # how many fsyncs the processes shared
        calls[0] += 1
        real_fsync(fd)

    os.fsync = counting_fsync  # the Python path's fsyncs; the native syncer counts its own
    barrier.wait()
    for record in records:
        log.append(record)
    fsyncs.put(calls[0] + (log._group.stats()[0] if log._group is not None else 0))
    log.close()


def process_appends(path: Path, n: int, processes: int, key: Path) -> tuple[float, int]:
    """Records/s of ``processes`` writer processes on one file, and the fsyncs their
    appends made (fewer than records: the processes share them)."""
    AuditLog(path, fsync="always", signer=load_signer(key)).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    fsyncs = ctx.Queue()
    share = n // processes
    procs = [
        ctx.Process(
            target=_process_worker, args=(str(path), str(key), p * share, share, barrier, fsyncs)
        )
        for p in range(processes)
    ]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=300)
    except threading.BrokenBarrierError:
        for p in procs:
            p.kill()
        raise SystemExit("the writer processes did not start (run this file, not stdin)") from None
    start = time.perf_counter()
    synced = sum(fsyncs.get(timeout=600) for _ in procs)
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - start
    if any(p.exitcode for p in procs):
        raise SystemExit("a writer process failed")
    return share * processes / elapsed, synced


def verification(
    path: Path, *, signatures: bool, jobs: int = 1, threads: int | None = None
) -> tuple[float, int]:
    start = time.perf_counter()
    result = verify_log(path, signatures=signatures, jobs=jobs, threads=threads)
    elapsed = time.perf_counter() - start
    if not result.ok:
        raise SystemExit(f"the benchmark's own log does not verify: {result}")
    return result.records / elapsed, result.records


def sealing_us(d: Path, n: int, key: Path) -> dict[str, float]:
    """Per-record cost of sealed bodies (SECURE_DS_AUDIT_SEAL_TO): the append path (no
    fsync, to isolate the CPU) with and without the bodies (812 + 1,433 bytes, as in
    make_record) sealed for an X25519 + ML-KEM-1024 auditor key, and one seal alone."""
    from secure_ds.audit import AuditorPrivateKey, Sealer

    sealer = Sealer(AuditorPrivateKey.generate().public)
    request, response = os.urandom(812), os.urandom(1433)
    records = [make_record(i) for i in range(n)]

    def run(path: Path, seal: bool) -> float:
        with AuditLog(path, fsync="never", signer=load_signer(key)) as log:
            start = time.perf_counter()
            for record in records:
                if seal:
                    record = {**record, "sealed": sealer.seal_record(record, request, response)}
                log.append(record)
            return (time.perf_counter() - start) / n * 1e6

    plain = run(d / "seal-off.jsonl", False)
    sealed = run(d / "seal-on.jsonl", True)
    start = time.perf_counter()
    for record in records:
        sealer.seal(record["event_id"], request, response)
    alone = (time.perf_counter() - start) / n * 1e6
    return {"append_us": plain, "append_sealed_us": sealed, "seal_us": alone}


def _rate(n: int, fn: Any) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def _hsm_signers() -> tuple[dict[str, Any], str]:
    """The SoftHSM2 test token's signers (scripts/softhsm.sh), or why there are none."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    conf = cache / "secure-ds" / "softhsm" / "softhsm2.conf"
    if conf.is_file():
        os.environ.setdefault("SOFTHSM2_CONF", str(conf))
    try:
        from secure_ds.audit import Pkcs11Signer

        env = os.environ.get
        signers = {
            f"SoftHSM2 (PKCS#11) {alg}": Pkcs11Signer(
                module=env("SECURE_DS_AUDIT_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so"),
                token_label=env("SECURE_DS_AUDIT_PKCS11_TOKEN_LABEL", "secure-ds-test"),
                key_label=label,
                pin=env("SECURE_DS_AUDIT_PKCS11_PIN", "secure-ds-test-pin"),
            )
            for alg, label in (("Ed25519", "audit-ed25519"), ("ECDSA P-256", "audit-p256"))
        }
    except Exception as exc:  # an optional row: the rest of the benchmark still runs
        return {}, f"{type(exc).__name__}: {exc} (run bash scripts/softhsm.sh)"
    return signers, ""


class _NativeRow:
    """The native signer as a row: signs with the Rust key, verifies as any Ed25519."""

    def __init__(self, native: Any, software: Any) -> None:
        self._native, self._software = native, software

    def sign(self, message: bytes) -> bytes:
        return bytes(self._native.sign(message))

    def public_key(self) -> Any:
        return self._software.public_key()

    def close(self) -> None:
        """Nothing to release (the software row closes the key)."""


def signer_rates(d: Path, n: int) -> tuple[dict[str, dict[str, float]], str]:
    """Sign and verify per second for each signer over ~2 KB leaf data; the hybrid row
    signs and opens checkpoint notes (two signatures each)."""
    from secure_ds.audit import HybridSigner, generate_key_file, load_pq_signer
    from secure_ds.audit._checkpoint import Checkpoint, open_note, sign_note

    messages = [canonicalize(make_record(i)) for i in range(n)]
    software = generate_key_file(d / "keys" / "ed.pem")
    signers: dict[str, Any] = {
        "software Ed25519": software,
        "software ECDSA P-256": generate_key_file(d / "keys" / "p256.pem", "ecdsa-p256"),
    }
    native = software.native_records()
    if native is not None:  # the same key in Rust (the native append path's signer)
        signers["software Ed25519, native (secure_ds._native)"] = _NativeRow(native, software)
    hsm, why = _hsm_signers()
    signers.update(hsm)
    out: dict[str, dict[str, float]] = {}
    for name, signer in signers.items():
        count = n if name.startswith("software") else max(n // 4, 1)
        sigs = [signer.sign(messages[i]) for i in range(min(count, 8))]
        key = signer.public_key()
        out[name] = {
            "sign_per_s": _rate(count, lambda i, s=signer: s.sign(messages[i])),
            "verify_per_s": _rate(
                count, lambda i, k=key, g=sigs: k.verify(g[i % 8], messages[i % 8])
            ),
        }
        signer.close()
    hybrid = HybridSigner(
        signers["software Ed25519"], load_pq_signer(d / "keys" / "pq.pem", create=True)
    )
    keys = [s.public_key() for s in hybrid.note_signers()]
    notes_n = max(n // 10, 1)
    cps = [
        Checkpoint("bench", i, hashlib.sha256(str(i).encode()).digest(), "t")
        for i in range(notes_n)
    ]
    notes = [sign_note(cps[i], hybrid.note_signers()) for i in range(min(notes_n, 8))]
    out["hybrid checkpoint Ed25519 + ML-DSA-65"] = {
        "sign_per_s": _rate(notes_n, lambda i: sign_note(cps[i], hybrid.note_signers())),
        "verify_per_s": _rate(notes_n, lambda i: open_note(notes[i % 8], keys)),
    }
    return out, why


def canonicalisation_us(n: int) -> tuple[float, float | None]:
    records = [make_record(i) for i in range(n)]
    start = time.perf_counter()
    for record in records:
        canonicalize(record)
    ours = (time.perf_counter() - start) / n * 1e6
    try:
        import rfc8785
    except ImportError:
        return ours, None
    start = time.perf_counter()
    for record in records[: max(n // 10, 1)]:
        rfc8785.dumps(record)
    return ours, (time.perf_counter() - start) / max(n // 10, 1) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per row")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--dir", type=Path, help="directory for the logs (default: a temp dir)")
    parser.add_argument(
        "--processes", type=int, default=8, help="writer processes in the one-file row"
    )
    args = parser.parse_args(argv)
    n = args.records
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        key = d / "keys" / "bench.pem"
        from secure_ds.audit import generate_key_file

        generate_key_file(key)
        base = floor(n)
        rows: list[dict[str, Any]] = [
            {"row": "floor: SHA-256 + Ed25519 sign", "records_per_s": base, "target": None}
        ]
        for label, threads, fsync, native in (
            ("append, durable (fsync always), 1 writer", 1, "always", True),
            ("append, durable (fsync always), 8 writer threads", 8, "always", True),
            ("append, durable (fsync always), 16 writer threads", 16, "always", True),
            ("append, durable (fsync always), 32 writer threads", 32, "always", True),
            ("append, durable, 8 writer threads, Python path (native=False)", 8, "always", False),
            ("append, no fsync, 8 writer threads (the CPU side alone)", 8, "never", True),
            ("append, fsync background, 1 writer", 1, "background", True),
        ):
            path = d / f"{fsync}-{threads}-{native}.jsonl"
            rate, per_fsync = appends(path, n, threads, fsync, key, native=native)
            target = TARGETS["append"] if fsync == "always" else None
            rows.append(
                {"row": label, "records_per_s": rate, "target": target, "per_fsync": per_fsync}
            )
        rate, process_fsyncs = process_appends(d / "processes.jsonl", n, args.processes, key)
        rows.append(
            {
                "row": f"append, durable (fsync always), {args.processes} writer processes, "
                "one file",
                "records_per_s": rate,
                "target": TARGETS["append"],
            }
        )
        verified = d / "always-8-True.jsonl"
        in_line, count = verification(verified, signatures=True, threads=0)
        full, _ = verification(verified, signatures=True)
        chain, _ = verification(verified, signatures=False)
        jobs = os.cpu_count() or 1
        parallel, _ = verification(verified, signatures=True, jobs=jobs)
        rows.append(
            {
                "row": f"verify, full, signatures in line (threads=0), {count} records",
                "records_per_s": in_line,
                "target": TARGETS["verify_full"],
            }
        )
        rows.append(
            {
                "row": f"verify, full (every signature; the default: checked on threads), "
                f"{count} records",
                "records_per_s": full,
                "target": TARGETS["verify_full"],
            }
        )
        rows.append(
            {
                "row": f"verify, full, signatures in {jobs} processes, {count} records",
                "records_per_s": parallel,
                "target": TARGETS["verify_full"],
            }
        )
        rows.append(
            {
                "row": f"verify, chain + checkpoints, {count} records",
                "records_per_s": chain,
                "target": TARGETS["verify_chain"],
            }
        )
        ours_us, reference_us = canonicalisation_us(min(n, 5000))
        seal = sealing_us(d, min(n, 5000), key)
        signers, hsm_missing = signer_rates(d, min(n, 4000))
    for row in rows:
        row["vs_floor"] = row["records_per_s"] / base
        row["meets_target"] = (
            None if row["target"] is None else row["records_per_s"] >= row["target"]
        )
    table = Table(title=f"secure-ds signed audit log ({n} records per row)")
    for column in ("", "records/s", "vs floor", "records/fsync", "target", "met"):
        table.add_column(column, justify="left" if not column else "right")
    for row in rows:
        met = row["meets_target"]
        per_fsync = row.get("per_fsync")
        table.add_row(
            row["row"],
            f"{row['records_per_s']:,.0f}",
            f"{row['vs_floor']:.2f}x",
            "-" if per_fsync is None else f"{per_fsync:.1f}",
            "-" if row["target"] is None else f">= {row['target']:,.0f}",
            "-" if met is None else ("yes" if met else "NO"),
        )
    console = Console()
    console.print(table)
    share = n // args.processes * args.processes
    console.print(
        f"{args.processes} writer processes, one file: {process_fsyncs:,} fsyncs for "
        f"{share:,} durable appends ({process_fsyncs / share:.2f} per record; the "
        "processes share them through the log's .synced side file)"
    )
    extra = f"RFC 8785 canonicalisation per record: ours {ours_us:.1f} us"
    if reference_us is not None:
        extra += f", the rfc8785 package {reference_us:.1f} us"
    console.print(extra)
    console.print(
        f"Sealed bodies per record: append (no fsync) {seal['append_us']:.0f} us, with the "
        f"bodies sealed {seal['append_sealed_us']:.0f} us "
        f"(+{seal['append_sealed_us'] - seal['append_us']:.0f} us; one seal alone "
        f"{seal['seal_us']:.0f} us)"
    )
    base_signer = signers["software Ed25519"]
    sig_table = Table(title="audit signers (sign/verify per second; ratio vs software Ed25519)")
    for column in ("", "sign/s", "vs Ed25519", "verify/s", "vs Ed25519"):
        sig_table.add_column(column, justify="left" if not column else "right")
    for name, figures in signers.items():
        figures["sign_vs_ed25519"] = figures["sign_per_s"] / base_signer["sign_per_s"]
        figures["verify_vs_ed25519"] = figures["verify_per_s"] / base_signer["verify_per_s"]
        sig_table.add_row(
            name,
            f"{figures['sign_per_s']:,.0f}",
            f"{figures['sign_vs_ed25519']:.3f}x",
            f"{figures['verify_per_s']:,.0f}",
            f"{figures['verify_vs_ed25519']:.3f}x",
        )
    console.print(sig_table)
    if hsm_missing:
        console.print(f"SoftHSM2 rows not measured: {hsm_missing}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": rows,
                    "process_fsyncs_per_record": process_fsyncs / share,
                    "canonical_us": {"ours": ours_us, "rfc8785": reference_us},
                    "seal": seal,
                    "signers": signers,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
