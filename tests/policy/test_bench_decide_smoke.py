"""The decide benchmark still runs and reports its ratio (figures are not asserted:
timings on shared machines vary from run to run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._bench import run_bench

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "bench_policy.py"


def test_bench_policy_reports_raw_and_decide_percentiles(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = run_bench(BENCH, "--rounds", "20", "--json", str(out), timeout=120)
    result = json.loads(out.read_text())
    assert result["decisions"] == 20 * 6
    for key in ("raw_p50_us", "decide_p50_us", "ratio_p50", "ratio_p99"):
        assert result[key] > 0
    # the mix exercises permits with and without obligations and every kind of deny
    effects = [line.rsplit(" ", 1)[-1] for line in result["mix"]]
    assert effects == ["permit", "permit", "permit", "deny", "deny", "permit"]
    assert "target" in " ".join(done.stdout.split())
