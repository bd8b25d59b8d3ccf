"""The audit benchmark still runs and reports every row (figures are not asserted:
timings on shared machines vary from run to run)."""

from __future__ import annotations

import json
from pathlib import Path

from tests._bench import run_bench

BENCH = Path(__file__).parents[2] / "bench" / "bench_audit.py"


def test_bench_audit_reports_the_floor_appends_and_verification(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run_bench(BENCH, "--records", "160", "--processes", "2", "--json", str(out))
    report = json.loads(out.read_text())
    assert len(report["rows"]) == 13
    python_path = [r for r in report["rows"] if "Python path" in r["row"]]
    assert len(python_path) == 1  # the baseline of the native append path, same run
    for row in report["rows"]:
        assert row["records_per_s"] > 0
        assert row["vs_floor"] > 0
    assert any(r["row"].startswith("floor") for r in report["rows"])
    assert sum(r["row"].startswith("verify") for r in report["rows"]) == 4
    assert report["canonical_us"]["ours"] > 0
    assert report["seal"]["append_sealed_us"] > 0
    assert report["seal"]["seal_us"] > 0
    signers = report["signers"]  # software keys and the hybrid note always; SoftHSM2 if set up
    for name in (
        "software Ed25519",
        "software ECDSA P-256",
        "hybrid checkpoint Ed25519 + ML-DSA-65",
    ):
        assert signers[name]["sign_per_s"] > 0
        assert signers[name]["verify_per_s"] > 0
