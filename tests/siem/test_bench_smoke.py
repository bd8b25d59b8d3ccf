"""Smoke test for bench/bench_otel_export.py: it runs end to end and reports what it says."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests._services import require_otelcol

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_otel_export.py"

pytestmark = pytest.mark.integration


def test_bench_otel_export_runs_and_writes_its_report(tmp_path: Path) -> None:
    require_otelcol()
    spec = importlib.util.spec_from_file_location("bench_otel_export", BENCH)
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "otel.json"
    assert (
        bench.main(["--records", "1200", "--batch", "100", "--repeat", "1", "--json", str(out)])
        == 0
    )
    report = json.loads(out.read_text())
    assert report["records"] == 1200
    for path in ("floor", "encode", "ship"):
        assert report[path]["records_per_s"] > 0
    assert report["floor"]["x_floor"] == 1.0
