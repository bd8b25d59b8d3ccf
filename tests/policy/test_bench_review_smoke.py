"""The review benchmark still runs and reports its throughput and baseline (figures
are not asserted: timings on shared machines vary from run to run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "bench_policy_review.py"


def test_bench_policy_review_reports_throughput_and_the_naive_ratio(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(  # noqa: S603 (our own script, fixed arguments)
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
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
