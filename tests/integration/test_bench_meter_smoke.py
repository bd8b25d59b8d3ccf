"""The meter benchmark still runs and reports every ledger it can reach (figures are
not asserted: timings on shared machines vary from run to run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._bench import run_bench

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "bench_meter.py"


def test_bench_meter_reports_the_floor_and_each_ledger(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run_bench(BENCH, "--calls", "80", "--json", str(out), timeout=120)
    rows = {row["meter"]: row for row in json.loads(out.read_text())}
    assert "dict increment (floor)" in rows
    for name in ("memory", "sqlite"):
        row = rows[f"BudgetMeter, {name} ledger"]
        assert row["p50_us"] > 0
        # the quietest round's p50 is never above the p50 of all calls
        assert 0 < row["p50_best_round_us"] <= row["p50_us"] * 1.001
        assert row["p50_vs_floor"] > 0
        assert row["calls_per_s_8_threads"] > 0
