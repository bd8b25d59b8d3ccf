"""Unit tests: the OCSF / GenAI mapping, the OTLP messages, the cursor and the settings."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import secure_ds.siem
from secure_ds import ConfigError, Settings
from secure_ds.siem import Cursor, cursor_path_for, genai_attributes, ocsf_attributes
from secure_ds.siem._cursor import read_from
from secure_ds.siem._mapping import event_time_ns, span_id_for, trace_id_for
from secure_ds.siem._otlp import Batch, build_requests

PERMIT: dict[str, Any] = {
    "schema": "secure-ds.audit/1",
    "event_id": "01a22185-4e28-72fc-9604-b37c41d500dd",
    "time": "2026-11-28T09:38:34.152Z",
    "trace_id": "01a221854e2872fc9604b37c41d500dd",
    "outcome": "permit",
    "action": "chat",
    "actor": {
        "subject": "alice",
        "roles": ["engineer"],
        "attributes": {"department": "platform"},
        "auth": "jwt",
        "issuer": "https://issuer.example",
        "token_jti": "706160e1-abc4-4069-a938-7068cfc22689",
        "cert_sha256": "mJgLx9AfNKRywVqdLPfSGR27a945qZX3qqKtnYVCo8s",
        "certificate_bound": True,
    },
    "request": {
        "method": "POST",
        "endpoint": "https://gw.example:8443",
        "path": "/chat/completions",
        "model": "deepseek-flash",
        "model_requested": "deepseek-flash@2026-10-17",
        "model_pin": "2026-10-17",
        "stream": False,
        "max_tokens": 256,
        "body_sha256": "3e" * 32,
        "body_bytes": 101,
    },
    "classify": {
        "engine": "dlp",
        "classification": "confidential",
        "findings": [{"kind": "email", "count": 2}],
    },
    "decide": {
        "effect": "permit",
        "engine": "cedar",
        "policies": ["engineers-use-code-models"],
        "denied_by": None,
        "revision": "sha256:5b3e",
        "reason": "",
        "context": {"source_ip": {"__extn": {"fn": "ip", "arg": "10.1.2.3"}}},
    },
    "enforce": {"applied": ["model_pin", "redact:email"]},
    "meter": {"engine": "unmetered", "allowed": True},
    "attempts": [{"ms": 500.0, "status": 503}, {"ms": 19.1, "status": 200}],
    "response": {
        "status": 200,
        "body_sha256": "de" * 32,
        "id": "chatcmpl-1",
        "model": "deepseek-flash",
        "usage": {"prompt_tokens": 9, "completion_tokens": 18, "total_tokens": 27},
        "finish_reason": "stop",
    },
    "cost": {"usd": 1.215e-05, "pricing": "deepseek-2026-11"},
    "fhe": None,
    "latency_ms": 525.8,
    "error": None,
}


def _deny() -> dict[str, Any]:
    record = copy.deepcopy(PERMIT)
    record.update(
        outcome="deny",
        attempts=[],
        response=None,
        cost=None,
        error={"type": "PolicyDenied", "policy": "no-secrets", "message": "no keys in prompts"},
    )
    record["decide"].update(effect="deny", policies=["no-secrets"], denied_by="no-secrets")
    return record


def test_public_surface() -> None:
    assert sorted(secure_ds.siem.__all__) == [
        "Cursor",
        "OCSF_VERSION",
        "Shipper",
        "ShipperStatus",
        "SiemExportError",
        "cursor_path_for",
        "genai_attributes",
        "ocsf_attributes",
    ]
    assert issubclass(secure_ds.siem.SiemExportError, secure_ds.SecureDSError)


def test_ocsf_api_activity_of_a_permitted_call() -> None:
    attrs = ocsf_attributes(PERMIT, host="app-1")
    assert attrs["class_uid"] == 6003
    assert attrs["category_uid"] == 6
    assert attrs["activity_id"] == 1
    assert attrs["type_uid"] == 600301
    assert attrs["time"] == 1795858714152  # ms since the epoch of 2026-11-28T09:38:34.152Z
    assert attrs["metadata.uid"] == attrs["api.request.uid"] == PERMIT["event_id"]
    assert attrs["metadata.correlation_uid"] == PERMIT["trace_id"]
    assert attrs["status_id"] == 1
    assert attrs["status"] == "Success"
    assert attrs["severity_id"] == 1
    assert attrs["action_id"] == 1
    assert attrs["disposition"] == "Allowed"
    # the required objects: actor, api, src_endpoint
    assert attrs["actor.user.name"] == "alice"
    assert attrs["actor.user.groups.name"] == ["engineer"]
    assert attrs["actor.session.uid"] == PERMIT["actor"]["token_jti"]
    assert attrs["actor.user.credential_uid"] == PERMIT["actor"]["cert_sha256"]
    assert attrs["api.operation"] == "chat.completions.create"
    assert attrs["api.service.name"] == "deepseek"
    assert attrs["api.response.code"] == 200
    assert attrs["src_endpoint.ip"] == "10.1.2.3"
    assert attrs["src_endpoint.hostname"] == "app-1"
    assert attrs["dst_endpoint.hostname"] == "gw.example"
    assert attrs["dst_endpoint.port"] == 8443
    # secure-ds's own fields: decision, DLP kinds and counts (never values), cost
    assert attrs["unmapped.secure_ds.decide.policies"] == ["engineers-use-code-models"]
    assert attrs["unmapped.secure_ds.dlp.kinds"] == ["email"]
    assert attrs["unmapped.secure_ds.dlp.counts"] == [2]
    assert attrs["unmapped.secure_ds.enforce.applied"] == ["model_pin", "redact:email"]
    assert attrs["unmapped.secure_ds.cost.usd"] == pytest.approx(1.215e-05)
    assert attrs["unmapped.secure_ds.attempts"] == 2
    assert None not in attrs.values()


def test_ocsf_of_a_denied_call() -> None:
    attrs = ocsf_attributes(_deny())
    assert attrs["status_id"] == 2
    assert attrs["action_id"] == 2
    assert attrs["action"] == "Denied"
    assert attrs["disposition"] == "Blocked"
    assert attrs["severity_id"] == 3
    assert attrs["status_detail"] == "denied by no-secrets: no keys in prompts"
    assert attrs["api.response.error"] == "PolicyDenied"
    assert "api.response.code" not in attrs  # never sent: no HTTP status
    assert "src_endpoint.hostname" not in attrs  # no host given: left out, not ""


def test_ocsf_read_activities_and_unknown_actions() -> None:
    record = copy.deepcopy(PERMIT)
    record["action"] = "list_models"
    assert ocsf_attributes(record)["activity_id"] == 2
    assert ocsf_attributes(record)["api.operation"] == "models.list"
    record["action"] = "something-new"
    assert ocsf_attributes(record)["activity_id"] == 99
    assert ocsf_attributes(record)["type_uid"] == 600399


def test_ocsf_passes_through_the_integrity_key_id() -> None:
    record = {**PERMIT, "integrity": {"key_id": "ed25519:abcd", "sig": "..."}}
    assert ocsf_attributes(record)["unmapped.secure_ds.integrity.key_id"] == "ed25519:abcd"


def test_genai_attributes() -> None:
    attrs = genai_attributes(PERMIT)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "deepseek"
    assert attrs["gen_ai.request.model"] == "deepseek-flash"
    assert attrs["gen_ai.request.max_tokens"] == 256
    assert attrs["gen_ai.response.model"] == "deepseek-flash"
    assert attrs["gen_ai.response.id"] == "chatcmpl-1"
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["gen_ai.usage.input_tokens"] == 9
    assert attrs["gen_ai.usage.output_tokens"] == 18
    assert attrs["server.address"] == "gw.example"
    assert attrs["server.port"] == 8443
    assert "error.type" not in attrs
    fim = {**PERMIT, "action": "fim"}
    assert genai_attributes(fim)["gen_ai.operation.name"] == "text_completion"
    denied = genai_attributes(_deny())
    assert denied["error.type"] == "PolicyDenied"
    assert "gen_ai.usage.input_tokens" not in denied


def test_ids_are_stable_and_derived() -> None:
    assert trace_id_for(PERMIT).hex() == PERMIT["trace_id"]
    assert span_id_for(PERMIT) == span_id_for(copy.deepcopy(PERMIT))
    assert len(span_id_for(PERMIT)) == 8
    other = {**PERMIT, "event_id": "01a22185-4e28-72fc-9604-b37c41d500de"}
    assert span_id_for(other) != span_id_for(PERMIT)
    no_trace = {**PERMIT, "trace_id": "00" * 16}
    assert len(trace_id_for(no_trace)) == 16
    assert any(trace_id_for(no_trace))
    assert event_time_ns(PERMIT) == 1795858714152 * 1_000_000


def test_otlp_requests_are_identical_when_resent() -> None:
    line = json.dumps(PERMIT, separators=(",", ":")).encode()
    batch = Batch([PERMIT, _deny()], [line, line])
    first = build_requests(batch, resource={"service.name": "secure-ds"}, scope_version="0")
    again = build_requests(batch, resource={"service.name": "secure-ds"}, scope_version="0")
    assert [r.SerializeToString() for r in first] == [r.SerializeToString() for r in again]
    logs, traces, metrics = first
    records = logs.resource_logs[0].scope_logs[0].log_records
    assert records[0].body.string_value == line.decode()
    assert records[0].severity_text == "INFO"
    assert records[1].severity_text == "WARN"
    spans = traces.resource_spans[0].scope_spans[0].spans
    assert spans[0].end_time_unix_nano - spans[0].start_time_unix_nano == 525_800_000
    assert spans[0].name == "chat deepseek-flash"
    names = [m.name for m in metrics.resource_metrics[0].scope_metrics[0].metrics]
    assert names == [
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "secure_ds.calls",
        "secure_ds.denials",
        "secure_ds.cost",
    ]


# ---------------------------------------------------------------------- the cursor


def _line(event: int) -> bytes:
    return json.dumps({**PERMIT, "event_id": f"id-{event}"}, separators=(",", ":")).encode()


def test_reading_stops_before_a_torn_tail(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(_line(1) + b"\n" + b'{"checkpoint":{"size":1}}\n' + _line(2)[:40])
    chunk = read_from(log, 0, max_records=10)
    assert [r["event_id"] for r in chunk.records] == ["id-1"]
    assert chunk.skipped == 1
    assert chunk.torn_tail
    assert chunk.end == len(_line(1)) + 1 + len(b'{"checkpoint":{"size":1}}\n')
    assert read_from(log, chunk.end, max_records=10).records == []


def test_reading_in_batches_resumes_where_it_stopped(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"".join(_line(i) + b"\n" for i in range(7)))
    seen, offset = [], 0
    while True:
        chunk = read_from(log, offset, max_records=3)
        if chunk.end == offset:
            break
        seen += [r["event_id"] for r in chunk.records]
        assert [line.decode() for line in chunk.lines] == [
            _line(int(e[3:])).decode() for e in [r["event_id"] for r in chunk.records]
        ]
        offset = chunk.end
    assert seen == [f"id-{i}" for i in range(7)]
    assert offset == log.stat().st_size


def test_a_batch_is_bounded_in_bytes_too(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    big = json.dumps({**PERMIT, "event_id": "big", "pad": "x" * 50_000}).encode()
    log.write_bytes(b"".join(line + b"\n" for line in [big, big, _line(1), big]))
    first = read_from(log, 0, max_records=100, max_bytes=60_000)
    assert len(first.records) == 2  # stopped once 60 kB were held (the second crossed it)
    second = read_from(log, first.end, max_records=100, max_bytes=10)
    assert [r["event_id"] for r in second.records] == ["id-1"]  # at least one, always
    assert not second.torn_tail
    third = read_from(log, second.end, max_records=100, max_bytes=10)
    assert third.end == log.stat().st_size


def test_cursor_saved_atomically_and_checked_against_the_log(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(_line(1) + b"\n" + _line(2) + b"\n")
    chunk = read_from(log, 0, max_records=10)
    cursor = Cursor(offset=chunk.end, event_id="id-2", line_sha256=chunk.last_line_sha256)
    path = cursor_path_for(log)
    cursor.save(path)
    assert path.name == "audit.jsonl.otlp-cursor.json"
    assert set(tmp_path.iterdir()) == {log, path}  # no temporary file left behind
    assert (path.stat().st_mode & 0o777) == 0o600
    loaded = Cursor.load(path)
    assert loaded.offset == cursor.offset
    assert loaded.event_id == "id-2"
    assert loaded.matches(log)
    with open(log, "ab") as f:  # appending keeps the cursor valid
        f.write(_line(3) + b"\n")
    assert loaded.matches(log)
    log.write_bytes(_line(7) + b"\n" + _line(8) + b"\n")  # replaced: same size, other lines
    assert not loaded.matches(log)
    log.write_bytes(_line(1) + b"\n")  # truncated below the cursor
    assert not loaded.matches(log)
    path.write_text("not json")
    assert Cursor.load(path) == Cursor()  # unreadable: from the start (duplicates, no gap)


# ---------------------------------------------------------------------- settings


def test_otlp_settings_from_env(tmp_path: Path) -> None:
    env = {
        "SECURE_DS_TOKEN_PROVIDER": "api-key",
        "DEEPSEEK_API_KEY": "sk-test",
        "SECURE_DS_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "SECURE_DS_OTLP_HEADERS": "Authorization=Bearer%20abc, X-Tenant=t1",
        "SECURE_DS_OTLP_BATCH": "100",
        "SECURE_DS_OTLP_INTERVAL": "0.5",
        "SECURE_DS_OTLP_SHIPPER": "sidecar",
    }
    settings = Settings.from_env(env)
    assert settings.otlp_endpoint == "http://127.0.0.1:4318"
    assert settings.otlp_header_map == {"Authorization": "Bearer abc", "X-Tenant": "t1"}
    assert settings.otlp_batch == 100
    assert settings.otlp_interval == 0.5
    assert settings.otlp_shipper == "sidecar"
    assert "Bearer" not in repr(settings)  # headers carry credentials


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SECURE_DS_OTLP_ENDPOINT", "http://collector.example:4318", "unencrypted"),
        ("SECURE_DS_OTLP_ENDPOINT", "https://u:p@collector.example", "without credentials"),
        ("SECURE_DS_OTLP_ENDPOINT", "grpc://127.0.0.1:4317", "http"),
        ("SECURE_DS_OTLP_HEADERS", "no-equals-sign", "name=value"),
        ("SECURE_DS_OTLP_SHIPPER", "cron", "thread"),
        ("SECURE_DS_OTLP_BATCH", "0", "outside"),
        ("SECURE_DS_OTLP_TIMEOUT", "soon", "not a number"),
    ],
)
def test_bad_otlp_settings_name_the_variable(variable: str, value: str, message: str) -> None:
    env = {"SECURE_DS_TOKEN_PROVIDER": "api-key", "DEEPSEEK_API_KEY": "sk-test", variable: value}
    with pytest.raises(ConfigError, match=message) as info:
        Settings.from_env(env)
    assert variable in str(info.value)
