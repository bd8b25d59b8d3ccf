"""``secure-ds cost report`` and the aggregation behind it, over hand-written audit logs.

Records are built in the shape the client writes (copied from a permit record of
``secure-ds demo``), trimmed to the fields a report reads plus enough of the rest to
look real; no network.
"""

from __future__ import annotations

import copy
import io
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from secure_ds.cli import main
from secure_ds.cli._cost import _bar_chart
from secure_ds.cost._report import REPORT_SCHEMA, build_report, parse_bound
from secure_ds.errors import SecureDSError

_PERMIT: dict[str, Any] = {
    "schema": "secure-ds.audit/1",
    "event_id": "01a22106-b91b-7ba4-bf09-6b97946fd930",
    "time": "2026-11-10T12:00:00.000Z",
    "trace_id": "01a22106b91b7ba4bf096b97946fd930",
    "outcome": "permit",
    "action": "chat",
    "actor": {
        "subject": "alice",
        "roles": ["engineer"],
        "attributes": {"team": "platform"},
        "auth": "jwt",
        "issuer": "https://sandbox.secure-ds.invalid/issuer",
        "token_jti": "e44e3f85-b747-4052-9ec7-f2d8043a6507",
        "cert_sha256": "ce50H7C7i-KDnkcXAh3uFzgqa3CrAyclxZfq5Nbim8A",
        "certificate_bound": True,
    },
    "request": {
        "method": "POST",
        "endpoint": "https://127.0.0.1:50817",
        "path": "/chat/completions",
        "model": "deepseek-flash",
        "model_requested": "deepseek-flash",
        "model_pin": None,
        "stream": False,
        "max_tokens": None,
        "body_sha256": "3edd4b520228fe946d2cd8112fe59119a8dfc32020c0cae165fe9dac048f039a",
        "body_bytes": 101,
    },
    "classify": {"engine": "dlp", "classification": "public", "findings": []},
    "decide": {"effect": "permit", "engine": "cedar", "policies": ["engineers-use-code-models"]},
    "enforce": {"applied": []},
    "meter": {"engine": "unmetered", "allowed": True, "reserved_usd": None, "reason": "none"},
    "attempts": [{"ms": 10.593, "status": 200}],
    "response": {
        "status": 200,
        "body_sha256": "8595d6161926b3017b60cae069459b2c3839916ab20f2d04b7abd30689a5a350",
        "body_bytes": 523,
        "id": "chatcmpl-sandbox-1",
        "model": "deepseek-flash",
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 18,
            "total_tokens": 27,
            "prompt_cache_hit_tokens": 0,
            "prompt_cache_miss_tokens": 9,
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "finish_reason": "stop",
    },
    "cost": {
        "usd": 1.215e-05,
        "model": "deepseek-flash",
        "window": "off_peak",
        "pricing": "deepseek-2026-11",
        "tokens": {"input_cache_hit": 0, "input_cache_miss": 9, "output": 18, "reasoning": 0},
        "usd_by_part": {"input_cache_hit": 0.0, "input_cache_miss": 1.35e-06, "output": 1.08e-05},
    },
    "latency_ms": 12.978,
    "error": None,
}


def permit(
    *,
    usd: float = 0.001,
    time: str = "2026-11-10T12:00:00.000Z",
    subject: str = "alice",
    attributes: dict[str, Any] | None = None,
    model: str = "deepseek-flash",
    hit: int = 0,
    miss: int = 100,
    output: int = 50,
) -> dict[str, Any]:
    record = copy.deepcopy(_PERMIT)
    record["time"] = time
    record["actor"]["subject"] = subject
    record["actor"]["attributes"] = {"team": "platform"} if attributes is None else attributes
    record["request"]["model"] = model
    usage = record["response"]["usage"]
    usage.update(
        prompt_tokens=hit + miss,
        completion_tokens=output,
        total_tokens=hit + miss + output,
        prompt_cache_hit_tokens=hit,
        prompt_cache_miss_tokens=miss,
    )
    record["cost"]["usd"] = usd
    record["cost"]["model"] = model.split("@")[0]
    record["cost"]["tokens"].update(input_cache_hit=hit, input_cache_miss=miss, output=output)
    return record


def denied(**kwargs: Any) -> dict[str, Any]:
    """A deny as the client records it: no response, so no usage and no cost."""
    record = permit(**kwargs)
    record.update(outcome="deny", response=None, cost=None, attempts=[])
    record["decide"]["effect"] = "deny"
    return record


def unpriced(model: str = "deepseek-mystery", **kwargs: Any) -> dict[str, Any]:
    """A call that reported usage for a model the pricing table has no price for."""
    record = permit(model=model, **kwargs)
    record["cost"] = None
    return record


def write(path: Path, *records: dict[str, Any] | str | bytes) -> Path:
    with path.open("wb") as handle:
        for record in records:
            if isinstance(record, dict):
                record = json.dumps(record)
            handle.write((record.encode() if isinstance(record, str) else record) + b"\n")
    return path


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["cost", "report", *argv, "--json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


# ------------------------------------------------------------------------ grouping


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    return write(
        tmp_path / "audit.jsonl",
        permit(usd=0.004, subject="alice", attributes={"team": "platform"}),
        permit(usd=0.002, subject="alice", model="deepseek-v4-pro", time="2026-11-11T08:00:00Z"),
        permit(usd=0.003, subject="bob", attributes={"department": "finance"}),
        # a team attribute wins over a department
        permit(usd=0.001, subject="carol", attributes={"team": "ml", "department": "finance"}),
        permit(usd=0.0005, subject="dave", attributes={}, time="2026-11-11T23:59:59.999Z"),
    )


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("principal", {"alice": "0.006", "bob": "0.003", "carol": "0.001", "dave": "0.0005"}),
        ("team", {"platform": "0.006", "finance": "0.003", "ml": "0.001", "(none)": "0.0005"}),
        ("model", {"deepseek-flash": "0.0085", "deepseek-v4-pro": "0.002"}),
        ("day", {"2026-11-10": "0.008", "2026-11-11": "0.0025"}),
    ],
)
def test_groups_each_way_and_sorts_by_spend(mixed: Path, by: Any, expected: dict[str, str]) -> None:
    report = build_report([mixed], by=by)
    rows, rest = report.rows()
    assert rest is None
    assert [key for key, _ in rows] == list(expected)  # the dicts are written biggest first
    assert {key: t.usd for key, t in rows} == {k: Decimal(v) for k, v in expected.items()}
    assert report.total.usd == Decimal("0.0105")
    assert report.total.calls == 5


def test_model_groups_ignore_the_pin_and_fall_back_to_the_request_model(tmp_path: Path) -> None:
    pinned = denied(model="deepseek-flash@2026-10-17")  # no cost: only request.model says
    log = write(tmp_path / "a.jsonl", permit(usd=0.001), pinned)
    report = build_report([log], by="model")
    assert list(report.groups) == ["deepseek-flash"]
    assert report.groups["deepseek-flash"].calls == 2


def test_usd_is_summed_without_float_drift(tmp_path: Path) -> None:
    log = write(tmp_path / "a.jsonl", *(permit(usd=0.1) for _ in range(10)))
    assert sum([0.1] * 10) != 1.0  # what a float sum would have reported
    report = build_report([log])
    assert report.total.usd == Decimal("1.0")
    assert report.to_json()["total"]["usd"] == 1.0


def test_tokens_are_summed_per_group(tmp_path: Path) -> None:
    log = write(
        tmp_path / "a.jsonl",
        permit(hit=30, miss=70, output=10),
        permit(hit=10, miss=90, output=5),
        unpriced(hit=1, miss=2, output=3),  # tokens from response.usage when there is no cost
    )
    total = build_report([log]).total
    assert (total.input_cache_hit, total.input_cache_miss, total.output) == (41, 162, 18)


def test_top_lumps_the_rest_so_rows_still_add_up(mixed: Path) -> None:
    report = build_report([mixed], by="principal")
    rows, rest = report.rows(top=2)
    assert [key for key, _ in rows] == ["alice", "bob"]
    assert rest is not None
    assert (rest.calls, rest.usd) == (2, Decimal("0.0015"))
    assert sum((t.usd for _, t in rows), rest.usd) == report.total.usd
    others = report.to_json(top=2)["others"]
    assert (others["groups"], others["calls"]) == (2, 2)


# -------------------------------------------------------------------------- dates


def test_date_filters_are_inclusive_whole_utc_days(tmp_path: Path) -> None:
    log = write(
        tmp_path / "a.jsonl",
        permit(usd=1, time="2026-11-01T23:59:59.999Z"),
        permit(usd=2, time="2026-11-02T00:00:00.000Z"),  # first instant of --from's day
        permit(usd=4, time="2026-11-03T23:59:59.999Z"),  # last millisecond of --to's day
        permit(usd=8, time="2026-11-04T00:00:00.000Z"),
        # 2026-11-04T00:30 in UTC, although its local date is the 3rd: outside
        permit(usd=16, time="2026-11-03T20:30:00.000-04:00"),
    )
    report = build_report(
        [log],
        by="day",
        since=parse_bound("2026-11-02", "--from", end=False),
        until=parse_bound("2026-11-03", "--to", end=True),
    )
    assert report.total.usd == Decimal(6)
    assert (report.records_read, report.outside_range) == (5, 3)
    assert set(report.groups) == {"2026-11-02", "2026-11-03"}


def test_rfc3339_bounds_include_their_exact_instant(tmp_path: Path) -> None:
    log = write(
        tmp_path / "a.jsonl",
        permit(usd=1, time="2026-11-02T09:59:59.999Z"),
        permit(usd=2, time="2026-11-02T10:00:00.000Z"),
        permit(usd=4, time="2026-11-02T11:00:00.000Z"),
        permit(usd=8, time="2026-11-02T11:00:00.001Z"),
    )
    report = build_report(
        [log],
        # 11:00 UTC written with an offset: bounds are compared as instants
        since=parse_bound("2026-11-02T10:00:00Z", "--from", end=False),
        until=parse_bound("2026-11-02T12:00:00+01:00", "--to", end=True),
    )
    assert report.total.usd == Decimal(6)


def test_the_day_series_fills_days_without_calls(tmp_path: Path) -> None:
    log = write(
        tmp_path / "a.jsonl",
        permit(usd=1, time="2026-11-01T10:00:00Z"),
        permit(usd=2, time="2026-11-04T10:00:00Z"),
    )
    series = build_report([log], by="principal").daily()  # whatever the grouping
    assert [(day, t.usd) for day, t in series] == [
        (date(2026, 11, 1), Decimal(1)),
        (date(2026, 11, 2), Decimal(0)),
        (date(2026, 11, 3), Decimal(0)),
        (date(2026, 11, 4), Decimal(2)),
    ]


@pytest.mark.parametrize("text", ["2026-13-01", "2026-02-30", "yesterday", "2026-11-02T10:00"])
def test_a_bad_date_names_the_flag_and_the_format(text: str) -> None:
    with pytest.raises(SecureDSError) as caught:
        parse_bound(text, "--to", end=True)
    assert "--to" in str(caught.value)
    assert "YYYY-MM-DD" in str(caught.value)


def test_parse_bound_gives_utc_instants() -> None:
    assert parse_bound("2026-11-02", "--from", end=False) == datetime(2026, 11, 2, tzinfo=UTC)
    end = parse_bound("2026-11-02", "--to", end=True)
    assert end == datetime(2026, 11, 2, 23, 59, 59, 999999, tzinfo=UTC)
    assert parse_bound("2026-11-02T12:00:00+02:00", "--to", end=True) == datetime(
        2026, 11, 2, 10, tzinfo=UTC
    )


# ---------------------------------------------------------- what is not plain spend


def test_malformed_lines_and_other_schemas_are_counted_and_named(tmp_path: Path) -> None:
    no_time = permit()
    del no_time["time"]
    bad_cost = permit()
    bad_cost["cost"]["usd"] = "free"
    log = write(
        tmp_path / "a.jsonl",
        permit(usd=0.5),
        '{"schema": "secure-ds.audit/1", "time": "2026-11-',  # torn by a crash
        "[1, 2]",
        b"\xff\xfe not utf-8",
        no_time,
        bad_cost,
        {"schema": "secure-ds.audit/2", "time": "2026-11-10T12:00:00Z"},
        "",  # a blank line is no record and no problem
        permit(usd=0.25),
    )
    report = build_report([log])
    assert report.total.usd == Decimal("0.75")
    assert (report.malformed, report.other_schema, report.records_read) == (5, 1, 2)
    assert report.examples[0] == f"{log}:2: not JSON"
    assert report.examples[1] == f"{log}:3: not a JSON object"
    assert len(report.examples) == 5  # capped: the sixth problem is counted, not named
    skipped = report.to_json()["skipped"]
    assert (skipped["malformed"], skipped["other_schema"]) == (5, 1)


def test_denied_and_failed_calls_are_counted_at_zero_cost(tmp_path: Path) -> None:
    failed = denied(subject="bob")
    failed["outcome"] = "failure"
    log = write(tmp_path / "a.jsonl", permit(usd=0.01), denied(), denied(), failed)
    report = build_report([log], by="principal")
    alice, bob = report.groups["alice"], report.groups["bob"]
    assert (alice.calls, alice.denied, alice.priced, alice.usd) == (3, 2, 1, Decimal("0.01"))
    assert (bob.calls, bob.failed, bob.usd) == (1, 1, Decimal(0))
    assert (report.total.denied, report.total.failed) == (2, 1)


def test_unpriced_models_are_listed_not_hidden(tmp_path: Path) -> None:
    log = write(
        tmp_path / "a.jsonl",
        permit(usd=0.01),
        unpriced(),
        unpriced(),
        denied(model="deepseek-other"),  # no usage: a deny is no pricing gap
    )
    report = build_report([log], by="model")
    assert report.unpriced_models == {"deepseek-mystery": 2}
    assert report.groups["deepseek-mystery"].unpriced == 2
    assert report.groups["deepseek-mystery"].usd == 0
    assert report.total.priced == 1


def test_records_from_before_cost_recording_are_not_called_unpriced(tmp_path: Path) -> None:
    old = permit()
    del old["cost"]
    report = build_report([write(tmp_path / "a.jsonl", old, permit(usd=0.01))])
    assert report.no_cost_field == 1
    assert report.unpriced_models == {}
    assert report.total.input_cache_miss == 200  # its tokens still count


def test_several_files_are_read_as_one_log(tmp_path: Path) -> None:
    first = write(tmp_path / "a.jsonl", permit(usd=0.5), "oops")
    second = write(tmp_path / "b.jsonl", permit(usd=0.25, subject="bob"))
    report = build_report([first, second])
    assert report.total.usd == Decimal("0.75")
    assert report.examples == [f"{first}:2: not JSON"]


def test_progress_reports_every_byte(tmp_path: Path) -> None:
    log = write(tmp_path / "a.jsonl", *(permit() for _ in range(3)))
    seen: list[int] = []
    build_report([log], progress=seen.append)
    assert sum(seen) == log.stat().st_size


# ---------------------------------------------------------------------------- CLI


def test_cli_json_is_versioned_and_complete(
    mixed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = cli_json(capsys, str(mixed), "--by", "team")
    assert report["schema"] == REPORT_SCHEMA == "secure-ds.cost-report/1"
    assert report["by"] == "team"
    assert [g["key"] for g in report["groups"]] == ["platform", "finance", "ml", "(none)"]
    assert report["total"]["usd"] == 0.0105
    assert sum(g["share"] for g in report["groups"]) == pytest.approx(1.0)
    assert [d["day"] for d in report["days"]] == ["2026-11-10", "2026-11-11"]


def test_cli_date_flags_filter(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = cli_json(capsys, str(mixed), "--from", "2026-11-11", "--to", "2026-11-11")
    assert report["total"]["calls"] == 2
    assert report["from"] == "2026-11-11T00:00:00Z"
    assert report["records"]["outside_range"] == 3


def test_cli_reads_secure_ds_audit_path_by_default(
    mixed: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECURE_DS_AUDIT_PATH", str(mixed))
    assert cli_json(capsys)["files"] == [str(mixed)]


def test_cli_table_and_charts(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "report", str(mixed), "--by", "team"]) == 0
    out = capsys.readouterr().out
    assert "Spend by team" in out
    assert "$0.0105" in out  # the total, with its digits
    assert "USD by team" in out
    assert "Costs over time" in out
    assert "█" in out


def test_cli_footnote_names_the_unpriced_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path / "a.jsonl", permit(usd=0.01), unpriced("deepseek-mystery"))
    assert main(["cost", "report", str(log), "--by", "model"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # undo rich's line wrapping
    assert "deepseek-mystery (1 call(s))" in out
    assert "SECURE_DS_PRICING" in out


def test_cli_svg_is_written(
    mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svg = tmp_path / "report.svg"
    report = cli_json(capsys, str(mixed), "--svg", str(svg))
    assert report["schema"] == REPORT_SCHEMA  # --json output is untouched by --svg
    text = svg.read_text()
    assert "<svg" in text
    assert ">alice<" in text  # the rendering itself, not an empty frame


def test_cli_bad_date_exits_2_naming_the_flag(
    mixed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cost", "report", str(mixed), "--from", "11/02/2026"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--from '11/02/2026' is not a date" in err
    assert "YYYY-MM-DD" in err


def test_cli_from_after_to_exits_2(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "report", str(mixed), "--from", "2026-11-12", "--to", "2026-11-11"]) == 2
    assert "is after --to" in capsys.readouterr().err


def test_cli_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "report", str(tmp_path / "nope.jsonl")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "nope.jsonl does not exist" in err


def test_cli_empty_log_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write(tmp_path / "a.jsonl", "garbage")
    assert main(["cost", "report", str(log)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "No audit records in" in err
    assert f"{log}:1: not JSON" in err  # says why, not only that


def test_cli_empty_range_is_not_an_error(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "report", str(mixed), "--from", "2027-01-01"]) == 0
    assert "No calls in this range (5 record(s) outside it)" in capsys.readouterr().out


def test_bars_scale_to_the_width() -> None:
    out = io.StringIO()
    console = Console(width=60, file=out, color_system=None)
    console.print(_bar_chart("t", [("a", Decimal(4)), ("b", Decimal(1))], 60, Decimal(5)))
    lines = [line for line in out.getvalue().splitlines() if line[:2] in ("a ", "b ")]
    long, short = (line.count("█") for line in lines)
    assert all(len(line.rstrip()) <= 60 for line in lines)
    assert long >= 30  # the largest bar uses the room there is
    assert abs(short - long / 4) <= 1


def test_a_narrow_terminal_drops_columns_not_group_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = write(tmp_path / "a.jsonl", permit(usd=123.456789, subject="someone-long"))
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["cost", "report", str(log)]) == 0
    out = capsys.readouterr().out
    assert " someone-long " in out  # not folded over two lines
    assert "$123.46" in out  # not cut to "$12…"
    assert "cached" not in out.split("USD by")[0]
    assert max(len(line) for line in out.splitlines()) <= 60


def test_a_long_range_is_charted_by_week(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(
        tmp_path / "a.jsonl",
        permit(usd=1, time="2026-01-05T10:00:00Z"),  # a Monday
        permit(usd=2, time="2026-01-11T10:00:00Z"),  # the Sunday of the same week
        permit(usd=4, time="2026-06-01T10:00:00Z"),
    )
    assert main(["cost", "report", str(log)]) == 0
    chart = capsys.readouterr().out.split("Costs over time")[1]
    assert "USD per week" in chart
    week = next(line for line in chart.splitlines() if line.startswith("wk 2026-01-05"))
    assert "$3.00" in week  # Monday to Sunday summed into one bar
    assert "wk 2026-01-12" in chart  # a week without calls still has its row
