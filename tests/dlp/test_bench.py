"""Smoke test for bench/bench_dlp.py: it runs end to end and reports what it says."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_dlp.py"


def test_bench_dlp_runs_and_writes_its_report(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_dlp", BENCH)
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "dlp.json"
    assert bench.main(["--repeat", "1", "--turns", "6", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["throughput"]) == {"corpus", "labelled documents", "clean text"}
    for row in report["throughput"].values():
        assert row["ours_mb_s"] > 0
        assert row["python_mb_s"] > 0  # the Python-only scanner, timed in the same run
        assert row["floor_mb_s"] > 0
        assert row["native_speedup"] == row["ours_mb_s"] / row["python_mb_s"]
    assert all(row["f1"] >= 0.95 for row in report["quality"].values())
    assert report["clean_fp_per_100kb"] <= 1.0
    chat = report["conversation"]
    assert chat["turns"] == 6
    assert chat["cached_ms"] > 0
    assert chat["uncached_ms"] > 0
