"""Policies through the real client against the sandbox: denials raise PolicyDenied and
are audited, obligations change what is sent, a broken folder stops the client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from secure_ds import PolicyDenied, SecureDeepSeek
from secure_ds.errors import ConfigError
from secure_ds.policy import PolicyError
from secure_ds.sandbox import Sandbox
from tests.conftest import read_audit

pytestmark = pytest.mark.integration

POLICIES = Path(__file__).parents[2] / "policies"
SCHEMA = (POLICIES / "secure-ds.cedarschema").read_text()
CATALOGUE = (POLICIES / "entities.json").read_text()
AUDIT_SCHEMA = json.loads((POLICIES.parent / "audit" / "record.schema.json").read_text())
MESSAGES: list[Any] = [{"role": "user", "content": "write a haiku about queues"}]


def folder(tmp_path: Path, policies: str) -> Path:
    path = tmp_path / "policies"
    path.mkdir()
    (path / "secure-ds.cedarschema").write_text(SCHEMA)
    (path / "entities.json").write_text(CATALOGUE)
    (path / "main.cedar").write_text(policies)
    return path


def client(sb: Sandbox, tmp_path: Path, policy_dir: Path, **kwargs: Any) -> SecureDeepSeek:
    settings = sb.client_settings(
        kwargs.pop("subject", "alice"),
        roles=kwargs.pop("roles", ("engineer",)),
        attributes=kwargs.pop("attributes", {}),
        policy_dir=policy_dir,
        policy_reload=0,
        audit_path=tmp_path / "audit.jsonl",
        **kwargs,
    )
    return SecureDeepSeek(settings=settings)


def test_a_forbid_raises_policy_denied_naming_it_and_is_audited(
    sb: Sandbox, tmp_path: Path
) -> None:
    with client(sb, tmp_path, POLICIES) as c:
        before = sb.stats.requests
        with pytest.raises(PolicyDenied) as info:
            c.chat.completions.create(
                model="deepseek-flash",
                messages=[{"role": "user", "content": "my key is AKIAIOSFODNN7EXAMPLE"}],
            )
        assert sb.stats.requests == before  # nothing went out
    assert info.value.policy == "no-secrets-in-prompts"
    assert "must not contain credentials" in str(info.value)
    record = read_audit(tmp_path / "audit.jsonl")[-1]
    assert record["outcome"] == "deny"
    assert record["decide"]["engine"] == "cedar"
    assert record["decide"]["policies"] == ["no-secrets-in-prompts"]
    assert record["decide"]["revision"].startswith("sha256:")
    assert record["decide"]["context"]["classification"] == "secret"
    assert record["error"]["policy"] == "no-secrets-in-prompts"
    assert "AKIA" not in json.dumps(record)


def test_no_permit_matched_is_named_in_the_error(sb: Sandbox, tmp_path: Path) -> None:
    with (
        client(sb, tmp_path, POLICIES, subject="vic", roles=("visitor",)) as c,
        pytest.raises(PolicyDenied) as info,
    ):
        c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert info.value.policy == "no permit matched"


def test_cap_and_route_obligations_change_what_is_sent(sb: Sandbox, tmp_path: Path) -> None:
    policy = (
        '@id("capped")\n@obligation("cap_max_tokens:64 route:deepseek-flash")\n'
        'permit (principal in SecureDS::Role::"engineer", action, resource);\n'
    )
    with client(sb, tmp_path, folder(tmp_path, policy)) as c:
        reply = c.chat.completions.create(
            model="deepseek-v4-pro", messages=MESSAGES, max_tokens=4000
        )
    last = sb.last_request
    assert last is not None
    sent = last["json"]
    assert sent["model"] == "deepseek-flash"
    assert sent["max_tokens"] == 64
    assert reply.model == "deepseek-flash"
    record = read_audit(tmp_path / "audit.jsonl")[-1]
    assert record["decide"]["obligations"] == ["cap_max_tokens:64", "route:deepseek-flash"]
    assert record["enforce"]["applied"][-2:] == ["cap_max_tokens:64", "route:deepseek-flash"]
    assert record["request"]["model_requested"] == "deepseek-v4-pro"
    assert record["request"]["model"] == "deepseek-flash"


def test_an_obligation_the_enforcer_cannot_carry_out_turns_the_permit_into_a_deny(
    sb: Sandbox, tmp_path: Path
) -> None:
    policy = (
        '@id("needs-fhe")\n@obligation("require:fhe")\n'
        'permit (principal in SecureDS::Role::"engineer", action, resource);\n'
    )
    with (
        client(sb, tmp_path, folder(tmp_path, policy)) as c,
        pytest.raises(PolicyDenied, match="require:fhe") as info,
    ):
        c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert info.value.policy == "needs-fhe"
    assert read_audit(tmp_path / "audit.jsonl")[-1]["outcome"] == "deny"


def test_a_redact_obligation_redacts_before_sending(sb: Sandbox, tmp_path: Path) -> None:
    policy = (
        '@id("redacting")\n@obligation("redact:email")\n'
        'permit (principal in SecureDS::Role::"engineer", action, resource);\n'
    )
    with client(sb, tmp_path, folder(tmp_path, policy)) as c:
        c.chat.completions.create(
            model="deepseek-flash",
            messages=[{"role": "user", "content": "mail jane.doe@example.com today"}],
        )
    assert "jane.doe@example.com" not in json.dumps(sb.last_request)
    applied = read_audit(tmp_path / "audit.jsonl")[-1]["enforce"]["applied"]
    assert "redact:email [email=1]" in applied


def test_a_broken_policy_folder_stops_the_client_from_starting(sb: Sandbox, tmp_path: Path) -> None:
    path = folder(tmp_path, "permit (principal, action resource);\n")
    with pytest.raises(PolicyError, match=r"main\.cedar:1: Cedar syntax error") as info:
        client(sb, tmp_path, path)
    assert isinstance(info.value, ConfigError)
    assert not (tmp_path / "audit.jsonl").exists() or not read_audit(tmp_path / "audit.jsonl")


def test_the_environment_variable_points_the_client_at_a_folder(
    sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECURE_DS_POLICY_DIR", str(tmp_path / "missing"))
    monkeypatch.setenv("SECURE_DS_POLICY_RELOAD", "0.5")
    monkeypatch.setenv("SECURE_DS_TOKEN_PROVIDER", "api-key")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test")
    from secure_ds.config import Settings

    from_env = Settings.from_env()
    assert from_env.policy_dir == tmp_path / "missing"
    assert from_env.policy_reload == 0.5
    with pytest.raises(PolicyError, match="is not a directory"):
        SecureDeepSeek(settings=from_env.replace(audit_path=tmp_path / "audit.jsonl"))


def test_cedar_records_match_the_audit_schema(sb: Sandbox, tmp_path: Path) -> None:
    with client(sb, tmp_path, POLICIES, attributes={"clearance": 2}) as c:
        c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
        c.models.list()
        with pytest.raises(PolicyDenied):
            c.user_balance()
    with (
        client(sb, tmp_path, POLICIES, subject="bob", attributes={"clearance": "high"}) as c,
        pytest.raises(PolicyDenied, match="claim 'clearance'"),
    ):
        c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    records = read_audit(tmp_path / "audit.jsonl")
    assert [r["outcome"] for r in records] == ["permit", "permit", "deny", "deny"]
    assert records[2]["decide"]["denied_by"] == "no permit matched"
    assert records[3]["decide"]["denied_by"] == "claim:clearance"
    validator = jsonschema.Draft202012Validator(AUDIT_SCHEMA)
    for record in records:
        errors = sorted(validator.iter_errors(record), key=str)
        assert not errors, errors[0].message


async def test_the_async_client_decides_the_same_way(sb: Sandbox, tmp_path: Path) -> None:
    from secure_ds import AsyncSecureDeepSeek

    settings = sb.client_settings(
        "alice",
        roles=("analyst",),
        policy_dir=POLICIES,
        audit_path=tmp_path / "audit.jsonl",
    )
    async with AsyncSecureDeepSeek(settings=settings) as c:
        await c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
        with pytest.raises(PolicyDenied) as info:
            await c.chat.completions.create(model="deepseek-v4-pro", messages=MESSAGES)
    assert info.value.policy == "no permit matched"  # analysts: standard tier only
    records = read_audit(tmp_path / "audit.jsonl")
    assert [r["decide"]["policies"] for r in records] == [
        ["analysts-chat-on-standard-models"],
        [],
    ]


def test_closing_the_client_stops_the_policy_watcher(sb: Sandbox, tmp_path: Path) -> None:
    import threading

    settings = sb.client_settings(
        "alice", policy_dir=POLICIES, policy_reload=0.05, audit_path=tmp_path / "a.jsonl"
    )
    with SecureDeepSeek(settings=settings):
        assert any(t.name == "secure-ds-policy-watch" for t in threading.enumerate())
    for thread in threading.enumerate():
        if thread.name == "secure-ds-policy-watch":
            thread.join(timeout=2)
    assert not any(
        t.name == "secure-ds-policy-watch" and t.is_alive() for t in threading.enumerate()
    )


def test_route_auto_sends_a_simple_prompt_to_the_cheap_model(sb: Sandbox, tmp_path: Path) -> None:
    policy = (
        '@id("auto-routed")\n@obligation("route:auto")\n'
        'permit (principal in SecureDS::Role::"engineer", action, resource);\n'
    )
    with client(sb, tmp_path, folder(tmp_path, policy)) as c:
        reply = c.chat.completions.create(
            model="deepseek-v4-pro", messages=[{"role": "user", "content": "Say hi."}]
        )
    assert reply.model == "deepseek-flash"
    record = read_audit(tmp_path / "audit.jsonl")[-1]
    assert record["request"]["model_requested"] == "deepseek-v4-pro"
    assert record["request"]["model"] == "deepseek-flash"
    applied = record["enforce"]["applied"]
    assert any(a.startswith("route:auto -> deepseek-flash (complexity") for a in applied)
