"""The review benchmark still runs and reports its throughput and baseline (figures
are not asserted: timings on shared machines vary from run to run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._bench import run_bench

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "bench_policy_review.py"


def test_bench_policy_review_reports_throughput_and_the_naive_ratio(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = run_bench(BENCH, "--quick", "--json", str(out))
    result = json.loads(out.read_text())
    assert result["records"] == 5_000
    # the generated log has calls made without a policy engine and torn lines, and
    # everything else is replayed
    assert result["skipped_no_context"] > 0
    assert result["replayed"] + result["skipped_no_context"] + result["malformed"] == 5_000
    assert 0 < result["evaluated_per_side"] < result["distinct_requests"] <= result["replayed"]
    for key in ("records_per_s", "naive_records_per_s", "ratio"):
        assert result[key] > 0
    assert result["new_access"] >= 1  # NEW lets analysts use premium models
    assert "Target: >= 10,000 records/s" in " ".join(done.stdout.split())
