"""The rotation benchmark still runs and reports every row (figures are not asserted:
timings on shared machines vary from run to run)."""

from __future__ import annotations

import json
from pathlib import Path

from tests._bench import run_bench

BENCH = Path(__file__).parents[2] / "bench" / "bench_rotation.py"


def test_bench_rotation_reports_each_operation(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run_bench(BENCH, "--rounds", "400", "--json", str(out), timeout=120)
    rows = {row["operation"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {
        "check(), between looks",
        "check(), looking (2 stat)",
        "request via RotatingTransport",
        "load + validate a rotated pair",
    }
    for row in rows.values():
        assert row["p50_us"] > 0
