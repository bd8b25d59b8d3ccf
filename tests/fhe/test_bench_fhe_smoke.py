"""The FHE benchmark still runs and reports every row and ratio (figures are not
asserted: timings on shared machines vary from run to run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._bench import run_bench

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "bench_fhe.py"


def test_bench_fhe_reports_plaintext_naive_and_ours(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = run_bench(BENCH, "--features", "64", "--quick", "--json", str(out))
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [r["formulation"].split()[0] for r in rows] == [
        *("plaintext", "naive", "TenSEAL", "ours"),  # the linear head also measures dot
        *("plaintext", "naive", "ours"),
    ]
    for row in rows:
        assert row["latency_ms"] > 0
        assert row["throughput"] > 0
    naive, ours = rows[1], rows[3]
    assert naive["batch"] == 1  # TenSEAL's matmul takes one vector
    assert naive["key_bytes"] > ours["key_bytes"] > 1_000_000  # Galois keys (+ public key)
    assert ours["upload_bytes"] > 0
    assert set(result["ratios"]) == {"linear 64->10", "digits MLP 64-16-10"}
    for ratio in result["ratios"].values():
        assert ratio["throughput_ours_over_naive"] > 0
    assert "targets:" in done.stdout
