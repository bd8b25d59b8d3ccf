"""bench/bench_identity.py still runs against the test Keycloak and reports every row
(its figures are not asserted: timings on a shared machine vary from run to run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._bench import run_bench
from tests._services import require_keycloak

pytestmark = pytest.mark.integration

BENCH = Path(__file__).parents[2] / "bench" / "bench_identity.py"


def test_bench_identity_reports_cold_miss_and_cached_rows(tmp_path: Path) -> None:
    require_keycloak()
    out = tmp_path / "bench.json"
    done = run_bench(BENCH, "--quick", "--json", str(out))
    report = json.loads(out.read_text())
    rows = report["client_credentials"]
    assert [r["method"] for r in rows] == ["client_secret", "private_key_jwt", "tls_client_auth"]
    for row in rows:
        for key in ("cold_fetch_ms", "miss_ms", "cached_hit_us", "cold_over_hit"):
            assert row[key] > 0
    assert report["exchange"]["cached_hit_us"] > 0
    assert report["baseline_static_hit_us"] > 0
    assert "cold fetch" in done.stdout
    # the per-call side in the same run: identify with a warm cache, and the signature
    assert report["identify_warm"]["identify_us"] > 0
    assert {row["key"] for row in report["signing_1kib"]} == {"ed25519", "ecdsa-p256"}
    assert all(row["signing_adds_us"] > 0 for row in report["signing_1kib"])
