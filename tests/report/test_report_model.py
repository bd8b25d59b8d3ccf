"""The report model: its numbers equal a recount of the records, it validates against
its schema, and it states what it cannot attest (empty period, gaps, tampering,
unsafe settings, records after the last checkpoint)."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from secure_ds.audit import default_key_path, load_public_key, read_records
from secure_ds.report import Period, build_report, load_controls

from ._records import make_record, varied_records, write_log

SCHEMA = json.loads((Path(__file__).parents[2] / "audit" / "report.schema.json").read_text())
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
NOV = Period(dt.date(2026, 11, 1), dt.date(2026, 11, 30))


def status_of(model: dict[str, Any], query: str) -> str:
    for fw in model["controls"]:
        for control in fw["controls"]:
            for ev in control["evidence"]:
                if ev["query"] == query:
                    return str(ev["status"])
    raise AssertionError(query)


def control(model: dict[str, Any], framework: str, cid: str) -> dict[str, Any]:
    fw = next(f for f in model["controls"] if f["framework"] == framework)
    return next(c for c in fw["controls"] if c["id"] == cid)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    # 600 records an hour apart: 2026-11-01 to 2026-11-25
    write_log(path, varied_records(600, T0, dt.timedelta(hours=1)), every=100)
    return path


def test_totals_match_a_recount_of_the_records_and_the_model_validates(log: Path) -> None:
    period = Period(dt.date(2026, 11, 3), dt.date(2026, 11, 20))
    model = build_report(log, period, load_controls())
    jsonschema.validate(model, SCHEMA)
    inside = [r for r in read_records(log) if period.lo <= r["time"] < period.hi]
    outcomes = Counter(r["outcome"] for r in inside)
    t = model["totals"]
    assert (t["calls"], t["permits"], t["denials"], t["failures"]) == (
        len(inside), outcomes["permit"], outcomes["deny"], outcomes["failure"],
    )  # fmt: skip
    assert t["calls"] == 18 * 24
    assert model["log"]["records_before_period"] == 48
    assert model["log"]["records_after_period"] == 600 - 48 - 18 * 24
    assert t["usd"] == pytest.approx(sum(r["cost"]["usd"] for r in inside if r["cost"]))
    by_principal = Counter(r["actor"]["subject"] for r in inside)
    assert {p["name"]: p["calls"] for p in model["by_principal"]} == dict(by_principal)
    teams = Counter(r["actor"]["attributes"].get("team", "(no team)") for r in inside)
    assert {p["name"]: p["calls"] for p in model["by_team"]} == dict(teams)
    kinds: Counter[str] = Counter()
    for r in inside:
        for f in r["classify"]["findings"]:
            kinds[f["kind"]] += f["count"]
    assert model["dlp"]["findings_by_kind"] == dict(kinds)
    assert t["denials_by"] == {"no-secrets": outcomes["deny"]}
    assert t["failures_by_reason"] == {"ServerError": outcomes["failure"]}
    assert sum(d["calls"] for d in model["timeline"]["day"]) == len(inside)
    assert len(model["timeline"]["hour"]) == 18 * 24
    # both policy revisions were in force in the period (the switch is at record 300)
    assert [r["revision"][0] for r in model["policy_revisions"]] == ["a", "b"]
    assert model["attestation"]["log_intact"] is True
    assert model["period"]["days_without_records"] == []
    assert status_of(model, "log_integrity_verified") == "met"
    assert status_of(model, "all_calls_mtls_bound_token") == "met"
    assert status_of(model, "records_present_every_day") == "met"
    assert status_of(model, "retention_covers_period") == "met"
    assert control(model, "soc2", "CC6.1")["status"] == "met"
    assert model["exceptions"] == []
    # trusted on first use: stated, never counted as met
    assert status_of(model, "log_signing_keys_pinned") == "cannot_attest"
    assert any("trusted on first use" in s for s in model["attestation"]["statements"])


def test_pinned_keys_are_attested(log: Path) -> None:
    key = load_public_key(default_key_path().with_name("audit-signing-key.pub"))
    model = build_report(log, NOV, load_controls(), keys=[key])
    assert model["integrity"]["verify"]["keys_pinned"] is True
    assert status_of(model, "log_signing_keys_pinned") == "met"


def test_an_empty_period_attests_nothing(log: Path) -> None:
    period = Period(dt.date(2027, 1, 1), dt.date(2027, 1, 31))
    model = build_report(log, period, load_controls())
    jsonschema.validate(model, SCHEMA)
    assert model["totals"]["calls"] == 0
    assert "No calls were recorded in the period" in model["attestation"]["statements"][0]
    assert model["summary"]["met"] == 0  # nothing is "met" for lack of data
    assert status_of(model, "all_calls_authenticated") == "cannot_attest"
    assert len(model["period"]["days_without_records"]) == 31


def test_a_gap_in_the_log_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    days = [1, 2, 5, 6]  # nothing on the 3rd and 4th
    recs = [make_record(i, T0.replace(day=d, hour=9)) for i, d in enumerate(days)]
    write_log(path, recs)
    model = build_report(path, Period(dt.date(2026, 11, 1), dt.date(2026, 11, 6)), load_controls())
    assert model["period"]["days_without_records"] == ["2026-11-03", "2026-11-04"]
    assert status_of(model, "records_present_every_day") == "cannot_attest"
    assert any("2026-11-03, 2026-11-04" in s for s in model["attestation"]["statements"])
    assert control(model, "nist-800-53", "AU-12")["status"] == "cannot_attest"


def test_a_tampered_log_is_stated_first(log: Path) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if b'"event_id"' in line and i > 200)
    lines[n] = (
        lines[n]
        .replace(b'"outcome":"permit"', b'"outcome":"deny"')
        .replace(b'"outcome":"failure"', b'"outcome":"permit"')
    )
    log.write_bytes(b"".join(lines))
    model = build_report(log, NOV, load_controls())
    jsonschema.validate(model, SCHEMA)
    assert list(model)[:4] == ["schema_version", "generated_at", "generator", "attestation"]
    assert model["attestation"]["log_intact"] is False
    first = model["attestation"]["statements"][0]
    assert first.startswith("THE AUDIT LOG IS NOT INTACT: log integrity not verified: edited")
    assert status_of(model, "log_integrity_verified") == "not_met"
    for fw in ("soc2", "nist-800-53"):
        assert control(model, fw, "CC7.2" if fw == "soc2" else "AU-9")["status"] == "not_met"


def test_a_line_that_is_no_longer_json_is_counted_not_fatal(log: Path) -> None:
    data = bytearray(log.read_bytes())
    data[data.index(b'"event_id"', 5000)] = ord("X")  # the quote becomes an X: not JSON
    log.write_bytes(bytes(data))
    model = build_report(log, NOV, load_controls())
    assert model["log"]["unreadable_lines"] == 1
    assert model["attestation"]["log_intact"] is False
    assert any("not JSON" in s for s in model["attestation"]["statements"])


def test_records_after_the_newest_checkpoint_are_not_attested(log: Path) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    assert lines[-1].startswith(b'{"checkpoint":')
    log.write_bytes(b"".join(lines[:-1]))  # the closing checkpoint cut away
    model = build_report(log, NOV, load_controls())
    assert status_of(model, "checkpoints_cover_period") == "not_met"
    assert model["integrity"]["largest_checkpoint_size"] == 500
    assert any(
        "from index 500 to 599 are after the newest signed checkpoint" in s
        for s in model["attestation"]["statements"]
    )


def test_unsafe_settings_are_listed_as_exceptions(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fallback = make_record(3, T0 + dt.timedelta(hours=3))
    fallback["meter"]["details"] = {"ledger_fallback": "redis unreachable"}
    write_log(
        path,
        [
            make_record(0, T0, engine="allow-all"),
            make_record(1, T0 + dt.timedelta(hours=1), meter_engine="unmetered"),
            make_record(2, T0 + dt.timedelta(hours=2), auth="api_key", bound=False),
            fallback,
            make_record(4, T0 + dt.timedelta(hours=4)),
        ],
    )
    model = build_report(path, Period(T0.date(), T0.date()), load_controls())
    exceptions = {x["setting"]: x["count"] for x in model["exceptions"]}
    assert exceptions == {
        "decide.engine=allow-all": 1,
        "meter.engine=unmetered": 1,
        "actor.auth=api_key": 1,
        "meter.details.ledger_fallback": 1,
    }
    assert model["exceptions"][0]["first_event_id"]
    assert status_of(model, "no_unsafe_settings") == "not_met"
    assert status_of(model, "policy_enforced_all_calls") == "not_met"
    assert status_of(model, "all_calls_mtls_bound_token") == "not_met"
    assert status_of(model, "cost_metered") == "not_met"
    assert control(model, "soc2", "CC6.1")["status"] == "not_met"


def test_key_rotations_and_keys_come_from_the_checkpoints(tmp_path: Path) -> None:
    from secure_ds.audit import AuditLog, generate_key_file

    path = tmp_path / "audit.jsonl"
    new = generate_key_file(tmp_path / "new-key.pem")
    with AuditLog(path, fsync="never") as log:
        log.append(make_record(0, T0))
        log.rotate_key(new)
        log.append(make_record(1, T0 + dt.timedelta(hours=1)))
    model = build_report(path, Period(T0.date(), T0.date()), load_controls())
    assert model["attestation"]["log_intact"] is True
    rotations = model["integrity"]["rotations"]
    assert len(rotations) == 1
    assert rotations[0]["new_key"] == new.key_id
    assert new.key_id in {k["key"] for k in model["integrity"]["keys"]}
    assert model["integrity"]["verify"]["rotations"] == 1
