"""Compliance report export: time and peak memory per format, at two log sizes.

For each size a signed log of varied, schema-valid records (tests/report/_records.py:
permits, denials, failures, DLP findings, four principals, two models, two policy
revisions) is written once (kept under ~/.cache/secure-ds/bench-report/, keyed by size
and the generator's seed) with records spread over 30 days, and exported as JSON, CSV,
HTML, signed PDF (a P-256 key and self-signed certificate made for the run) and OSCAL
for the whole period. Each export runs in a fresh interpreter, so its peak
RSS (``ru_maxrss``) is its own; the same interpreter doing only its imports is the
memory baseline, and the floor for time is the same work without the report:
``verify_log`` (which every export runs first) plus one ``json.loads`` per line.

What it shows: peak memory does not grow with the record count (the aggregation keeps
counters and bounded structures only). Time grows linearly; most of it is the
signature verification of the whole log. Figures vary on shared machines; nothing is
asserted.

    .venv/bin/python bench/bench_report.py [--sizes 100000 400000] [--jobs 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.report._records: the generator the tests use

FORMATS = ("json", "csv", "html", "pdf", "oscal")
DAYS = 30


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "secure-ds" / "bench-report"


def make_log(n: int, folder: Path) -> Path:
    """A signed log of ``n`` records over DAYS days (written once, then reused)."""
    from tests.report._records import varied_records, write_log

    path = folder / f"audit-{n}.jsonl"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XDG_STATE_HOME", str(folder / "state"))
    tmp = path.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    step = dt.timedelta(seconds=DAYS * 86_400 / n)
    start = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    write_log(tmp, varied_records(n, start, step), every=1000)
    tmp.rename(path)
    return path


def child(what: str, log: Path, jobs: int) -> dict[str, Any]:
    """Run in a fresh interpreter: one export (or the floor, or nothing)."""
    from secure_ds.audit import verify_log
    from secure_ds.report import Period, export_report, load_controls

    period = Period(dt.date(2026, 10, 1), dt.date(2026, 10, DAYS))
    t0 = time.perf_counter()
    records = 0
    if what == "floor":
        verify_log(log, jobs=jobs)
        with log.open("rb") as f:
            for raw in f:
                json.loads(raw)
                records += 1
    elif what in FORMATS:
        from secure_ds.report import PdfSigning

        out = log.with_name(f"report-{log.stem}.{what}")
        signing = PdfSigning(log.with_name("signer.key.pem"), log.with_name("signer.cert.pem"))
        model = export_report(
            log,
            period,
            load_controls(),
            what,  # type: ignore[arg-type]
            out,
            jobs=jobs,
            signing=signing if what == "pdf" else None,
        )
        records = model["log"]["records_total"]
        out.unlink()
    seconds = time.perf_counter() - t0
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"what": what, "seconds": seconds, "peak_rss_mib": rss_kib / 1024, "records": records}


def make_signer(folder: Path) -> None:
    """A P-256 key and a self-signed certificate for the PDF signature."""
    from tests.report._certs import write_signer

    write_signer(folder, "signer", days=7)


def run_child(what: str, log: Path, jobs: int) -> dict[str, Any]:
    done = subprocess.run(  # noqa: S603 (this script, fixed arguments)
        [sys.executable, __file__, "--child", what, "--log", str(log), "--jobs", str(jobs)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the {what} export failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[100_000, 400_000])
    parser.add_argument("--jobs", type=int, default=2, help="verification processes")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--cache", type=Path, default=None, help="folder for the logs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.log, args.jobs)))
        return 0

    console = Console()
    folder = args.cache or _cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    make_signer(folder)
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        with console.status(f"writing a signed log of {n:,} records (once; cached)"):
            log = make_log(n, folder)
        baseline = run_child("none", log, args.jobs)
        floor = run_child("floor", log, args.jobs)
        for what in args.formats:
            with console.status(f"{n:,} records: exporting {what}"):
                r = run_child(what, log, args.jobs)
            rows.append(
                {
                    "records": n,
                    "log_mib": round(log.stat().st_size / 2**20, 1),
                    "format": what,
                    "seconds": round(r["seconds"], 2),
                    "records_per_s": round(n / r["seconds"]),
                    "vs_floor": round(r["seconds"] / floor["seconds"], 2),
                    "peak_rss_mib": round(r["peak_rss_mib"], 1),
                    "rss_over_baseline_mib": round(r["peak_rss_mib"] - baseline["peak_rss_mib"], 1),
                    "floor_seconds": round(floor["seconds"], 2),
                    "floor_peak_rss_mib": round(floor["peak_rss_mib"], 1),
                }
            )
    small, large = args.sizes
    growth = {
        f: next(r["peak_rss_mib"] for r in rows if r["records"] == large and r["format"] == f)
        / next(r["peak_rss_mib"] for r in rows if r["records"] == small and r["format"] == f)
        for f in args.formats
    }
    table = Table(title=f"report export, {DAYS} days, verify with {args.jobs} job(s)")
    for col in ("records", "log MiB", "format", "s", "records/s", "x floor", "peak RSS MiB",
                "over baseline MiB"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            f"{r['records']:,}", str(r["log_mib"]), r["format"], str(r["seconds"]),
            f"{r['records_per_s']:,}", str(r["vs_floor"]), str(r["peak_rss_mib"]),
            str(r["rss_over_baseline_mib"]),
        )  # fmt: skip
    console.print(table)
    console.print(
        "floor = verify_log + json.loads per line; peak RSS "
        f"{large:,} / {small:,} records: "
        + ", ".join(f"{f} {g:.2f}x" for f, g in growth.items())
        + f" (records: {large / small:.0f}x)"
    )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "rss_growth": growth}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
