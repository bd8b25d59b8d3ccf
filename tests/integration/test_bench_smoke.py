"""The client benchmark still runs and reports every scenario (its figures are not
asserted: timings on shared machines vary from run to run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._bench import run_bench

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "bench_client.py"


def test_bench_client_reports_ratios_for_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = run_bench(BENCH, "--calls", "40", "--rounds", "2", "--json", str(out))
    rows = json.loads(out.read_text())
    assert [r["scenario"] for r in rows] == [
        "sync, 1 caller",
        "async, 1 caller",
        "async, 32 callers",
    ]
    for row in rows:
        assert row["calls_each"] >= 40
        for key in ("p50_ratio", "p99_ratio", "throughput_ratio"):
            assert row[key] > 0
    printed = " ".join(done.stdout.split())
    assert "targets: p50 ratio <= 1.15" in printed  # the table and its legend were printed
