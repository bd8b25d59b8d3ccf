"""The rotation benchmark still runs and reports every row (figures are not asserted:
timings on shared machines vary from run to run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench" / "bench_rotation.py"


def test_bench_rotation_reports_each_operation(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(  # noqa: S603 (our own script, fixed arguments)
        [sys.executable, str(BENCH), "--rounds", "400", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["operation"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {
        "check(), between looks",
        "check(), looking (2 stat)",
        "request via RotatingTransport",
        "load + validate a rotated pair",
    }
    for row in rows.values():
        assert row["p50_us"] > 0
