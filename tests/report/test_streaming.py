"""The aggregation keeps counters and bounded structures only: its peak memory does not
grow with the number of records, and per-name tables are capped."""

from __future__ import annotations

import datetime as dt
import json
import tracemalloc
from pathlib import Path

import pytest

from secure_ds.report import Period, aggregate_log
from secure_ds.report import _aggregate as aggregate

from ._records import make_record, varied_records

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
PERIOD = Period(dt.date(2026, 11, 1), dt.date(2026, 11, 2))


def raw_log(path: Path, n: int) -> Path:
    """Unsigned record lines (the aggregation does not verify; that is verify_log)."""
    step = dt.timedelta(seconds=2 * 86_400 / n)
    with path.open("w") as f:
        for rec in varied_records(n, T0, step):
            f.write(json.dumps(rec) + "\n")
    return path


def peak_of(path: Path) -> int:
    tracemalloc.start()
    try:
        agg = aggregate_log(path, PERIOD)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert agg.total.calls > 0
    return peak


def test_peak_memory_does_not_grow_with_the_record_count(tmp_path: Path) -> None:
    small = peak_of(raw_log(tmp_path / "small.jsonl", 2_000))
    large = peak_of(raw_log(tmp_path / "large.jsonl", 16_000))  # 8x the records
    assert large < small * 1.25 + 32_768, (small, large)


def test_names_beyond_the_cap_share_one_other_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aggregate, "MAX_KEYS", 3)
    path = tmp_path / "many.jsonl"
    with path.open("w") as f:
        for i in range(10):
            rec = make_record(i, T0 + dt.timedelta(minutes=i), principal=(f"user{i}", None))
            f.write(json.dumps(rec) + "\n")
    agg = aggregate_log(path, PERIOD)
    names = [row["name"] for row in agg.by_principal.as_json()]
    assert len(names) == 4
    assert names[0] == "(other)"
    assert agg.by_principal.tallies["(other)"].calls == 7


def test_only_the_bytes_present_before_verification_are_counted(tmp_path: Path) -> None:
    """A live log grows during an export: records past the size taken before
    verification are not counted (they were not verified); a line cut there is torn."""
    path = raw_log(tmp_path / "live.jsonl", 10)
    lines = path.read_bytes().splitlines(keepends=True)
    upto = sum(len(line) for line in lines[:6])
    agg = aggregate_log(path, PERIOD, limit=upto)
    assert (agg.records_total, agg.torn_tail) == (6, False)
    agg = aggregate_log(path, PERIOD, limit=upto + 10)
    assert (agg.records_total, agg.torn_tail) == (6, True)
