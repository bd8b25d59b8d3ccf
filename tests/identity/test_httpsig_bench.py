"""bench/bench_signing.py still runs and reports every row (its figures are not
asserted: timings on a shared machine vary from run to run)."""

from __future__ import annotations

import json
from pathlib import Path

from tests._bench import run_bench

BENCH = Path(__file__).parents[2] / "bench" / "bench_signing.py"


def test_bench_signing_reports_signing_verification_and_identity_rows(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = run_bench(BENCH, "--quick", "--json", str(out))
    report = json.loads(out.read_text())
    rows = report["signing"]
    assert [(r["key"], r["body_bytes"]) for r in rows] == [
        ("ed25519", 1024),
        ("ed25519", 65536),
        ("ecdsa-p256", 1024),
        ("ecdsa-p256", 65536),
    ]
    for row in rows:
        for key in ("unsigned_us", "signed_us", "raw_sign_floor_us", "verify_us"):
            assert row[key] > 0
        assert row["sign_over_floor"] > 0
    assert report["library"][0]["library_over_ours"] > 0
    identity = report["identity"][0]
    assert identity["identify_us"] > 0
    assert identity["target_us"] == 20.0
    printed = " ".join(done.stdout.split())
    assert "identity stages, warm token cache" in printed
