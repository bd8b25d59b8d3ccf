"""SIEM export speed: records/s shipped to a real OpenTelemetry Collector, against the
floor of reading and parsing the same log, measured in one run.

A log of N call records (copies of one realistic record with fresh event and trace
ids, plus a checkpoint line every 1000 records, as the signed log writes them) is:

* **floor**: read and parsed from byte 0 (``read_from``: complete lines, JSON), the
  least any shipper does;
* **encode**: read, parsed and turned into the three OTLP requests (logs with OCSF
  attributes, GenAI spans, metrics), serialised, not sent;
* **ship**: shipped to a collector built by ``scripts/otelcol.sh`` (private ports, file
  exporter), cursor saved after each acknowledged batch, from a fresh cursor.

Each is run ``--repeat`` times; medians are reported, with the ratio to the floor.

    .venv/bin/python bench/bench_otel_export.py [--records 20000] [--batch 512]
        [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from secure_ds._ids import uuid7
from secure_ds.siem import Shipper, cursor_path_for
from secure_ds.siem._cursor import read_from
from secure_ds.siem._otlp import Batch, build_requests

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "otelcol.sh"

TEMPLATE: dict[str, Any] = {
    "action": "chat",
    "actor": {
        "attributes": {"clearance": 2, "department": "platform"},
        "auth": "jwt",
        "cert_sha256": "mJgLx9AfNKRywVqdLPfSGR27a945qZX3qqKtnYVCo8s",
        "certificate_bound": True,
        "issuer": "https://issuer.example",
        "roles": ["engineer"],
        "subject": "alice",
        "token_jti": "706160e1-abc4-4069-a938-7068cfc22689",
    },
    "attempts": [{"ms": 19.119, "status": 200}],
    "classify": {"classification": "public", "engine": "dlp", "findings": []},
    "cost": {"model": "deepseek-flash", "pricing": "deepseek-2026-11", "usd": 1.215e-05},
    "decide": {
        "denied_by": None,
        "effect": "permit",
        "engine": "cedar",
        "policies": ["engineers-use-code-models"],
        "reason": "",
        "revision": "sha256:5b3ece4f5f966e1651e25818c1282800594ef3daad9ce699ebc1c79c183bbfc8",
    },
    "enforce": {"applied": ["model_pin"]},
    "error": None,
    "fhe": None,
    "latency_ms": 25.808,
    "meter": {"allowed": True, "engine": "unmetered"},
    "outcome": "permit",
    "request": {
        "body_bytes": 101,
        "body_sha256": "3edd4b520228fe946d2cd8112fe59119a8dfc32020c0cae165fe9dac048f039a",
        "endpoint": "https://gw.example",
        "max_tokens": None,
        "method": "POST",
        "model": "deepseek-flash",
        "model_pin": "2026-10-17",
        "model_requested": "deepseek-flash@2026-10-17",
        "path": "/chat/completions",
        "stream": False,
    },
    "response": {
        "body_sha256": "de2761558f25de2ffe0a253450d453d6b038a6d9e0856dd664b6cd81e3b0d25c",
        "finish_reason": "stop",
        "id": "chatcmpl-1",
        "model": "deepseek-flash",
        "status": 200,
        "usage": {"completion_tokens": 18, "prompt_tokens": 9, "total_tokens": 27},
    },
    "schema": "secure-ds.audit/1",
    "time": "2026-11-28T09:38:34.152Z",
}


def write_log(path: Path, n: int) -> None:
    with open(path, "wb") as f:
        for i in range(n):
            record = {**TEMPLATE, "event_id": uuid7(), "trace_id": secrets.token_hex(16)}
            f.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
            if (i + 1) % 1000 == 0:
                f.write(b'{"checkpoint":{"size":%d}}\n' % (i + 1))


def floor(path: Path, batch: int) -> int:
    offset, total = 0, 0
    while True:
        chunk = read_from(path, offset, max_records=batch)
        if chunk.end == offset:
            return total
        total += len(chunk.records)
        offset = chunk.end


def encode(path: Path, batch: int) -> int:
    offset, total = 0, 0
    while True:
        chunk = read_from(path, offset, max_records=batch)
        if chunk.end == offset:
            return total
        for request in build_requests(
            Batch(chunk.records, chunk.lines),
            resource={"service.name": "secure-ds"},
            scope_version="bench",
        ):
            request.SerializeToString()
        total += len(chunk.records)
        offset = chunk.end


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _collector(command: str, directory: Path, http_port: int, grpc_port: int) -> None:
    env = {
        **os.environ,
        "SECURE_DS_OTELCOL_DIR": str(directory),
        "SECURE_DS_OTELCOL_HTTP_PORT": str(http_port),
        "SECURE_DS_OTELCOL_GRPC_PORT": str(grpc_port),
    }
    done = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        ["bash", str(SCRIPT), command],  # noqa: S607
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"otelcol.sh {command} failed: {done.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-otel-") as tmp:
        work = Path(tmp)
        log = work / "audit.jsonl"
        write_log(log, args.records)
        http_port, grpc_port = _free_port(), _free_port()
        _collector("start", work / "otelcol", http_port, grpc_port)
        times: dict[str, list[float]] = {"floor": [], "encode": [], "ship": []}
        try:
            for _ in range(args.repeat):
                start = time.perf_counter()
                assert floor(log, args.batch) == args.records
                times["floor"].append(time.perf_counter() - start)
                start = time.perf_counter()
                assert encode(log, args.batch) == args.records
                times["encode"].append(time.perf_counter() - start)
                cursor_path_for(log).unlink(missing_ok=True)
                with Shipper(
                    log, f"http://127.0.0.1:{http_port}", batch_size=args.batch
                ) as shipper:
                    start = time.perf_counter()
                    shipped = shipper.ship_pending()
                    times["ship"].append(time.perf_counter() - start)
                assert shipped == args.records, shipped
        finally:
            _collector("stop", work / "otelcol", http_port, grpc_port)

    rows: dict[str, dict[str, float]] = {}
    base = statistics.median(times["floor"])
    for name, values in times.items():
        median = statistics.median(values)
        rows[name] = {
            "seconds": round(median, 4),
            "records_per_s": round(args.records / median, 1),
            "x_floor": round(median / base, 2),
        }
    table = Table(title=f"SIEM export: {args.records} records, batches of {args.batch}")
    for column in ("path", "median s", "records/s", "x floor"):
        table.add_column(column, justify="right" if column != "path" else "left")
    labels = {
        "floor": "floor: read + parse the log",
        "encode": "read + OTLP encode (logs, spans, metrics)",
        "ship": "shipped to the collector, acknowledged",
    }
    for name, row in rows.items():
        table.add_row(
            labels[name],
            f"{row['seconds']:.3f}",
            f"{row['records_per_s']:,.0f}",
            f"{row['x_floor']:.2f}",
        )
    Console().print(table)
    report = {"records": args.records, "batch": args.batch, "repeat": args.repeat, **rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
