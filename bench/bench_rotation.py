"""What following certificate rotation costs a call, against the same work without it, in
one run.

Rows (p50 and p99 per operation, and the ratio to its baseline):

* ``check()`` between looks (the per-call cost with the default 1 s interval: a clock
  compare) vs an empty function call;
* ``check()`` when it is time to look (two ``stat`` calls; files older than 2 s) vs the
  same two ``os.stat`` calls bare;
* a request through :class:`RotatingTransport` (pool choice, open-response count, stream
  wrapper) vs the same inner transport called directly (an in-process
  ``httpx2.MockTransport``, so no network time hides the difference);
* loading and validating a rotated pair and building its ``SSLContext`` (once per
  rotation), no baseline.

    .venv/bin/python bench/bench_rotation.py [--rounds 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
from rich.console import Console
from rich.table import Table

from secure_ds.config import Settings
from secure_ds.identity import RotatingIdentity, RotatingTransport
from secure_ds.sandbox import LocalCA
from secure_ds.sandbox.pki import generate_issuer_key, private_key_pem


def _times(fn: Callable[[], object], rounds: int) -> list[float]:
    out: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        start = clock()
        fn()
        out.append((clock() - start) / 1000.0)
    return out


def _paired(
    fn: Callable[[], object], base: Callable[[], object], rounds: int
) -> tuple[list[float], list[float]]:
    """Both timed in alternation, so drift on a shared machine hits them alike."""
    ours: list[float] = []
    theirs: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for call, out in ((fn, ours), (base, theirs)):
            start = clock()
            call()
            out.append((clock() - start) / 1000.0)
    return ours, theirs


def _row(name: str, samples: list[float], baseline: list[float] | None) -> dict[str, Any]:
    p50 = statistics.median(samples)
    row: dict[str, Any] = {
        "operation": name,
        "p50_us": round(p50, 3),
        "p99_us": round(statistics.quantiles(samples, n=100)[98], 3),
    }
    if baseline is not None:
        base = statistics.median(baseline)
        row["baseline_p50_us"] = round(base, 3)
        row["ratio"] = round(p50 / base, 2) if base > 0 else None
    return row


def _settings(directory: Path) -> Settings:
    ca = LocalCA.create("bench CA")
    cert_pem, key_pem = ca.issue_client_cert("bench")
    (directory / "tls.crt").write_bytes(cert_pem)
    (directory / "tls.key").write_bytes(key_pem)
    (directory / "issuer.pem").write_bytes(private_key_pem(generate_issuer_key()))
    old = time.time() - 3600  # older than 2 s: the stat path, not the content compare
    for name in ("tls.crt", "tls.key"):
        os.utime(directory / name, (old, old))
    return Settings(
        endpoint="https://127.0.0.1:9",
        client_cert=directory / "tls.crt",
        client_key=directory / "tls.key",
        ca_bundle=ca.write(directory),
        issuer_key=directory / "issuer.pem",
        audit_path=directory / "audit.jsonl",
    )


def run(rounds: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="secure-ds-bench-rotation-") as tmp:
        settings = _settings(Path(tmp))
        rows: list[dict[str, Any]] = []

        paced = RotatingIdentity(settings, check_interval=3600.0)
        rows.append(_row("check(), between looks", *_paired(paced.check, lambda: None, rounds)))

        eager = RotatingIdentity(settings, check_interval=0.0)
        cert, key = settings.client_cert, settings.client_key
        assert cert is not None
        assert key is not None
        looks = max(rounds // 10, 50)
        bare = _paired(eager.check, lambda: (os.stat(cert), os.stat(key)), looks)
        rows.append(_row("check(), looking (2 stat)", *bare))

        def answer(request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(200, content=b"{}")

        inner = httpx2.MockTransport(answer)
        rotating = RotatingTransport(paced, lambda _ctx: inner)
        request = httpx2.Request("GET", "https://127.0.0.1:9/models")

        def through_rotating() -> None:
            rotating.handle_request(request).close()

        def direct() -> None:
            inner.handle_request(request).close()

        via = _paired(through_rotating, direct, rounds)
        rows.append(_row("request via RotatingTransport", *via))

        loads = max(rounds // 200, 20)
        rows.append(_row("load + validate a rotated pair", _times(eager.reload, loads), None))
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20000)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = run(args.rounds)
    table = Table(title="certificate rotation: cost per operation (µs)")
    for column in ("operation", "p50", "p99", "baseline p50", "ratio"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["operation"],
            f"{row['p50_us']:.2f}",
            f"{row['p99_us']:.2f}",
            "-" if "baseline_p50_us" not in row else f"{row['baseline_p50_us']:.2f}",
            "-" if row.get("ratio") is None else f"{row['ratio']:.2f}x",
        )
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
