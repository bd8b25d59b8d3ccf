"""The report benchmark still runs and reports every row (figures are not asserted:
timings on shared machines vary from run to run)."""

from __future__ import annotations

import json
from pathlib import Path

from tests._bench import run_bench

BENCH = Path(__file__).parents[2] / "bench" / "bench_report.py"


def test_bench_report_measures_each_format_at_two_sizes(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run_bench(
        BENCH,
        "--sizes",
        "60",
        "120",
        "--jobs",
        "1",
        "--cache",
        str(tmp_path / "cache"),
        "--json",
        str(out),
    )
    report = json.loads(out.read_text())
    assert [(r["records"], r["format"]) for r in report["rows"]] == [
        (n, f) for n in (60, 120) for f in ("json", "csv", "html", "pdf", "oscal")
    ]
    for row in report["rows"]:
        assert row["seconds"] > 0
        assert row["peak_rss_mib"] > 0
    assert set(report["rss_growth"]) == {"json", "csv", "html", "pdf", "oscal"}
