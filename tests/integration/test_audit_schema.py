"""Every kind of audit record the client writes validates against audit/record.schema.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from secure_ds import PolicyDenied, RateLimited, SecureDeepSeek, StreamInterrupted
from secure_ds.audit import read_records, verify_log
from secure_ds.guard import Call, Decision
from secure_ds.sandbox import Sandbox

pytestmark = pytest.mark.integration

SCHEMA = json.loads((Path(__file__).parents[2] / "audit" / "record.schema.json").read_text())
MESSAGES: list[Any] = [{"role": "user", "content": "schema check"}]


class DenyAll:
    def decide(self, call: Call) -> Decision:
        return Decision(effect="deny", engine="test", policies=("deny-all",), reason="no")


def test_permit_deny_and_failure_records_match_the_schema(sb: Sandbox, tmp_path: Path) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    settings = sb.client_settings(
        "alice", audit_path=tmp_path / "a.jsonl", backoff_factor=0.001, max_attempts=2
    )
    with SecureDeepSeek(settings=settings) as c:
        c.chat.completions.create(model="deepseek-flash@2026-10-17", messages=MESSAGES)
        list(c.chat.completions.create(model="deepseek-flash", messages=MESSAGES, stream=True))
        c.completions.create(model="deepseek-flash", prompt="x")
        c.models.list()
        c.user_balance()
        sb.fail_next(429, times=2, retry_after=0)
        with pytest.raises(RateLimited):
            c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
        sb.drop_next_stream(1)
        with pytest.raises(StreamInterrupted):
            list(c.chat.completions.create(model="deepseek-flash", messages=MESSAGES, stream=True))
    with (
        SecureDeepSeek(settings=settings, decider=DenyAll()) as denied,
        pytest.raises(PolicyDenied),
    ):
        denied.models.list()
    # checkpoint lines (issue 5) are not records: read_records skips them
    records = list(read_records(settings.audit_path))
    assert [r["outcome"] for r in records] == ["permit"] * 5 + ["failure", "failure", "deny"]
    # priced: the calls that reported usage (chat, stream, FIM); never a deny or failure
    assert [r["cost"] is not None for r in records] == [True] * 3 + [False] * 5
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for record in records:
        errors = sorted(validator.iter_errors(record), key=str)
        assert not errors, f"{record['action']}/{record['outcome']}: {errors[0].message}"
    assert [r["integrity"]["index"] for r in records] == list(range(8))
    assert verify_log(settings.audit_path).ok


def test_the_schema_rejects_a_record_with_a_secret_field() -> None:
    bad = {"schema": "secure-ds.audit/1", "token": "eyJ..."}
    assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(bad))
