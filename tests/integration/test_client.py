"""The drop-in client against the sandbox: the openai surface, the guard chain, the audit trail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletion

from secure_ds import (
    AsyncSecureDeepSeek,
    AuditError,
    ConfigError,
    IdentityError,
    PolicyDenied,
    SecureDeepSeek,
    Settings,
    UpstreamError,
)
from secure_ds.guard import Call, Decision, Metering, NoClassification
from secure_ds.identity import StaticTokenProvider
from secure_ds.sandbox import Sandbox
from tests.conftest import read_audit

pytestmark = pytest.mark.integration

MESSAGES: list[Any] = [{"role": "user", "content": "hello sandbox"}]


@pytest.fixture
def settings(sb: Sandbox, tmp_path: Path) -> Settings:
    return sb.client_settings(
        "alice", roles=["engineer"], attributes={"team": "ml"}, audit_path=tmp_path / "a.jsonl"
    )


@pytest.fixture
def client(settings: Settings) -> Any:
    with SecureDeepSeek(settings=settings) as c:
        yield c


def test_is_an_openai_client_returning_sdk_types(client: SecureDeepSeek) -> None:
    assert isinstance(client, openai.OpenAI)
    reply = client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert isinstance(reply, ChatCompletion)
    assert reply.choices[0].message.content == "[sandbox deepseek-flash] alice said: hello sandbox"
    assert reply.usage is not None
    assert reply.usage.total_tokens > 0


def test_one_audit_record_per_call_with_identity_and_hashes(
    client: SecureDeepSeek, sb: Sandbox, settings: Settings
) -> None:
    client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    (record,) = read_audit(settings.audit_path)
    assert record["schema"] == "secure-ds.audit/1"
    assert record["outcome"] == "permit"
    assert record["action"] == "chat"
    actor = record["actor"]
    assert actor["subject"] == "alice"
    assert actor["roles"] == ["engineer"]
    assert actor["attributes"] == {"team": "ml"}
    assert actor["auth"] == "jwt"
    assert actor["certificate_bound"] is True
    assert actor["token_jti"] == sb.stats.last_claims["jti"]
    assert record["decide"]["engine"] == "allow-all"  # the permissive default is recorded
    assert record["classify"] == {"engine": "dlp", "classification": "public", "findings": []}
    assert record["meter"]["engine"] == "unmetered"
    usage = record["response"]["usage"]
    assert usage["prompt_cache_miss_tokens"] >= 0
    # priced from the shipped table: 0.15 (or 0.30 at peak) per 1M input, 0.60 (1.20) output
    cost = record["cost"]
    assert cost["model"] == "deepseek-flash"
    assert cost["pricing"] == "deepseek-2026-11"
    factor = 2 if cost["window"] == "peak" else 1
    expected = factor * (
        usage["prompt_cache_hit_tokens"] * 0.003
        + usage["prompt_cache_miss_tokens"] * 0.15
        + usage["completion_tokens"] * 0.60
    )
    assert cost["usd"] == pytest.approx(expected / 1e6)
    assert cost["usd"] > 0
    assert len(record["request"]["body_sha256"]) == 64
    assert "hello sandbox" not in json.dumps(record)  # no prompt text by default
    assert len(record["attempts"]) == 1


def test_streaming_yields_chunks_and_audits_usage(
    client: SecureDeepSeek, settings: Settings
) -> None:
    stream = client.chat.completions.create(model="deepseek-flash", messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "[sandbox deepseek-flash] alice said: hello sandbox"
    (record,) = read_audit(settings.audit_path)
    assert record["action"] == "stream"
    assert record["response"]["completed"] is True
    assert record["response"]["usage"]["total_tokens"] > 0
    assert record["response"]["chunks"] >= 3
    assert record["cost"]["usd"] > 0  # priced from the usage of the final chunk


def test_fim_goes_to_the_beta_base_url(
    client: SecureDeepSeek, sb: Sandbox, settings: Settings
) -> None:
    reply = client.completions.create(model="deepseek-flash", prompt="def f(", suffix="pass")
    assert reply.choices[0].text
    assert sb.last_request is not None
    assert sb.last_request["path"] == "/beta/completions"
    (record,) = read_audit(settings.audit_path)
    assert record["action"] == "fim"
    assert "fim_beta_base_url" in record["enforce"]["applied"]


def test_models_balance_raw_and_streaming_response(client: SecureDeepSeek) -> None:
    assert [m.id for m in client.models.list()] == ["deepseek-flash", "deepseek-v4-pro"]
    balance = client.user_balance()
    assert balance.is_available
    assert balance.balance_infos[0].currency == "USD"
    raw = client.chat.completions.with_raw_response.create(
        model="deepseek-flash", messages=MESSAGES
    )
    assert raw.status_code == 200
    assert raw.parse().object == "chat.completion"
    with client.chat.completions.with_streaming_response.create(
        model="deepseek-flash", messages=MESSAGES
    ) as response:
        assert json.loads(response.read())["object"] == "chat.completion"


def test_with_options_copies_share_the_guard(client: SecureDeepSeek, settings: Settings) -> None:
    copy = client.with_options(timeout=5.0, max_retries=1)
    assert isinstance(copy, SecureDeepSeek)
    assert copy.guard is client.guard
    copy.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert len(read_audit(settings.audit_path)) == 1


def test_what_goes_on_the_wire(client: SecureDeepSeek, sb: Sandbox, settings: Settings) -> None:
    client.chat.completions.create(model="deepseek-flash@2026-10-17", messages=MESSAGES)
    assert sb.last_request is not None
    headers = sb.last_request["headers"]
    assert sb.last_request["json"]["model"] == "deepseek-flash"  # the pin is not sent
    assert headers["accept-encoding"] == "identity"
    record = read_audit(settings.audit_path)[0]
    assert headers["traceparent"].split("-")[1] == record["trace_id"]
    assert record["request"]["model_pin"] == "2026-10-17"
    claims = sb.stats.last_claims
    assert claims["sub"] == "alice"
    assert claims["cnf"]["x5t#S256"] == record["actor"]["cert_sha256"]
    assert claims["exp"] - claims["iat"] == 300  # short-lived


def test_tokens_are_cached_between_calls(client: SecureDeepSeek, sb: Sandbox) -> None:
    client.models.list()
    first = sb.stats.last_claims["jti"]
    client.models.list()
    assert sb.stats.last_claims["jti"] == first


def test_env_defaults_are_applied(sb: Sandbox, tmp_path: Path) -> None:
    settings = sb.client_settings(
        "dana", max_tokens=64, temperature=0.3, audit_path=tmp_path / "a.jsonl"
    )
    with SecureDeepSeek(settings=settings) as c:
        c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert sb.last_request is not None
    assert sb.last_request["json"]["max_tokens"] == 64
    assert sb.last_request["json"]["temperature"] == 0.3


class DenyContractors:
    def decide(self, call: Call) -> Decision:
        assert call.identity is not None
        if "contractor" in call.identity.roles:
            return Decision(
                effect="deny",
                engine="test",
                policies=("no-contractors",),
                reason="contractors may not call models",
            )
        return Decision(effect="permit", engine="test", policies=("allow",))


def test_denied_call_is_audited_and_never_sent(sb: Sandbox, tmp_path: Path) -> None:
    settings = sb.client_settings("eve", roles=["contractor"], audit_path=tmp_path / "a.jsonl")
    before = sb.stats.requests
    with (
        SecureDeepSeek(settings=settings, decider=DenyContractors()) as c,
        pytest.raises(PolicyDenied) as info,
    ):
        c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert sb.stats.requests == before
    assert info.value.policy == "no-contractors"
    assert "contractors may not call models" in str(info.value)
    (record,) = read_audit(settings.audit_path)
    assert record["outcome"] == "deny"
    assert record["event_id"] == info.value.event_id
    assert record["decide"]["policies"] == ["no-contractors"]
    assert record["attempts"] == []


class ObligeUnknown:
    def decide(self, call: Call) -> Decision:
        return Decision(
            effect="permit", engine="test", policies=("p1",), obligations=("require:quantum",)
        )


def test_obligation_that_cannot_be_met_turns_into_a_deny(sb: Sandbox, tmp_path: Path) -> None:
    settings = sb.client_settings("alice", audit_path=tmp_path / "a.jsonl")
    before = sb.stats.requests
    with (
        SecureDeepSeek(settings=settings, decider=ObligeUnknown()) as c,
        pytest.raises(PolicyDenied, match="require:quantum"),
    ):
        c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert sb.stats.requests == before
    assert read_audit(settings.audit_path)[0]["outcome"] == "deny"


class NoBudget:
    def reserve(self, call: Call) -> Metering:
        return Metering(engine="test-budget", allowed=False, reason="daily budget spent")

    def settle(self, call: Call) -> None:
        raise AssertionError("a refused call is never settled")


def test_meter_refusal_is_a_deny(sb: Sandbox, tmp_path: Path) -> None:
    settings = sb.client_settings("alice", audit_path=tmp_path / "a.jsonl")
    with (
        SecureDeepSeek(settings=settings, meter=NoBudget()) as c,
        pytest.raises(PolicyDenied, match="daily budget spent"),
    ):
        c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    record = read_audit(settings.audit_path)[0]
    assert record["outcome"] == "deny"
    assert record["meter"]["engine"] == "test-budget"


def test_unwritable_audit_log_fails_closed(sb: Sandbox) -> None:
    settings = sb.client_settings("alice", audit_path=Path("/dev/full"))
    with SecureDeepSeek(settings=settings) as c:
        with pytest.raises(AuditError, match="No space left"):
            c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
        before = sb.stats.requests
        with pytest.raises(AuditError, match="failed earlier"):
            c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
        assert sb.stats.requests == before  # nothing more went out


def test_a_foreign_http_client_is_refused(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="bypass the guard chain"):
        SecureDeepSeek(settings=settings, http_client=httpx2.Client())


def test_copy_cannot_point_at_plain_http(client: SecureDeepSeek) -> None:
    with pytest.raises(ConfigError, match="plain http"):
        client.with_options(base_url="http://example.com")


def test_settings_from_environment(
    sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = sb.client_settings("frank", roles=["engineer", "oncall"], audit_path=tmp_path / "a.jsonl")
    env = {
        "DEEPSEEK_ENDPOINT": s.endpoint,
        "SECURE_DS_CLIENT_CERT": str(s.client_cert),
        "SECURE_DS_CLIENT_KEY": str(s.client_key),
        "SECURE_DS_CA_BUNDLE": str(s.ca_bundle),
        "SECURE_DS_ISSUER_KEY": str(s.issuer_key),
        "SECURE_DS_ISSUER": s.issuer,
        "SECURE_DS_AUDIENCE": str(s.audience),
        "SECURE_DS_ROLES": "engineer,oncall",
        "SECURE_DS_AUDIT_PATH": str(s.audit_path),
        "DEEPSEEK_MODEL": "deepseek-v4-pro",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with SecureDeepSeek() as c:
        reply = c.chat.completions.create(model=c.default_model, messages=MESSAGES)
    assert reply.model == "deepseek-v4-pro"
    assert sb.stats.last_claims["sub"] == "frank"  # the certificate's common name
    assert sb.stats.last_claims["roles"] == ["engineer", "oncall"]


async def test_async_client_surface(settings: Settings, sb: Sandbox) -> None:
    async with AsyncSecureDeepSeek(settings=settings) as c:
        assert isinstance(c, openai.AsyncOpenAI)
        reply = await c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
        assert reply.choices[0].message.content is not None
        stream = await c.chat.completions.create(
            model="deepseek-flash", messages=MESSAGES, stream=True
        )
        parts = [ch.choices[0].delta.content or "" async for ch in stream if ch.choices]
        assert "".join(parts) == reply.choices[0].message.content
        fim = await c.completions.create(model="deepseek-flash", prompt="x = ")
        assert fim.choices[0].text
        models = [m.id async for m in c.models.list()]
        assert "deepseek-flash" in models
        assert (await c.user_balance()).is_available
        raw = await c.with_options(max_retries=0).chat.completions.with_raw_response.create(
            model="deepseek-flash", messages=MESSAGES
        )
        assert raw.status_code == 200
    records = read_audit(settings.audit_path)
    assert [r["action"] for r in records] == [
        "chat",
        "stream",
        "fim",
        "list_models",
        "balance",
        "chat",
    ]
    assert all(r["outcome"] == "permit" for r in records)
    assert records[1]["response"]["completed"] is True


async def test_async_denial_is_audited(sb: Sandbox, tmp_path: Path) -> None:
    settings = sb.client_settings("eve", roles=["contractor"], audit_path=tmp_path / "a.jsonl")
    async with AsyncSecureDeepSeek(settings=settings, decider=DenyContractors()) as c:
        with pytest.raises(PolicyDenied):
            await c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert read_audit(settings.audit_path)[0]["outcome"] == "deny"


def test_errors_carry_no_live_credential(client: SecureDeepSeek, sb: Sandbox) -> None:
    sb.fail_next(403)
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    token = client.guard.token_provider.token().value.reveal()
    assert info.value.request.headers["authorization"] == "<redacted>"
    assert info.value.response.request.headers["authorization"] == "<redacted>"
    assert token not in repr(info.value.request.headers.multi_items())


def test_a_callers_trace_context_is_kept(
    client: SecureDeepSeek, sb: Sandbox, settings: Settings
) -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    client.chat.completions.create(
        model="deepseek-flash", messages=MESSAGES, extra_headers={"traceparent": parent}
    )
    assert sb.last_request is not None
    assert sb.last_request["headers"]["traceparent"] == parent
    assert read_audit(settings.audit_path)[0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_redirects_are_not_followed(
    client: SecureDeepSeek, sb: Sandbox, settings: Settings
) -> None:
    before = sb.stats.requests
    sb.redirect_next("https://attacker.invalid/collect")
    with pytest.raises(UpstreamError, match="redirected") as info:
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert "does not follow redirects" in str(info.value)
    assert sb.stats.requests == before + 1  # the one request; nothing followed it
    (record,) = read_audit(settings.audit_path)
    assert record["outcome"] == "failure"
    assert [a.get("status") for a in record["attempts"]] == [307]


def test_keepalive_blank_lines_before_a_body_are_tolerated(
    client: SecureDeepSeek, sb: Sandbox, settings: Settings
) -> None:
    sb.keepalive_next(blank_lines=4)
    reply = client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert reply.choices[0].message.content == "[sandbox deepseek-flash] alice said: hello sandbox"
    (record,) = read_audit(settings.audit_path)
    assert record["response"]["usage"]["total_tokens"] == reply.usage.total_tokens  # type: ignore[union-attr]
    assert record["response"]["body_bytes"] > 4  # the blank lines are part of what was hashed


async def test_keepalive_blank_lines_async(settings: Settings, sb: Sandbox) -> None:
    sb.keepalive_next(blank_lines=2)
    async with AsyncSecureDeepSeek(settings=settings) as c:
        reply = await c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert reply.choices[0].finish_reason == "stop"


def test_eddsa_issuer_round_trip(tmp_path: Path) -> None:
    with Sandbox(token_alg="EdDSA") as eddsa:
        settings = eddsa.client_settings("erin", audit_path=tmp_path / "a.jsonl")
        with SecureDeepSeek(settings=settings) as c:
            c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
        assert eddsa.stats.last_claims["sub"] == "erin"
    assert read_audit(settings.audit_path)[0]["outcome"] == "permit"


class Exploding:
    def __init__(self, stage: str) -> None:
        self.stage = stage

    def classify(self, call: Call) -> Any:
        if self.stage == "classify":
            raise RuntimeError("classifier bug")
        return NoClassification().classify(call)

    def decide(self, call: Call) -> Decision:
        raise RuntimeError("policy engine bug")

    def reserve(self, call: Call) -> Metering:
        raise RuntimeError("budget store down")

    def settle(self, call: Call) -> None:
        return None


@pytest.mark.parametrize("stage", ["classify", "decide", "meter"])
def test_a_stage_that_raises_fails_closed(sb: Sandbox, tmp_path: Path, stage: str) -> None:
    settings = sb.client_settings("alice", audit_path=tmp_path / "a.jsonl")
    broken = Exploding(stage)
    kwargs: dict[str, Any] = {
        "classify": {"classifier": broken},
        "decide": {"decider": broken},
        "meter": {"meter": broken},
    }[stage]
    before = sb.stats.requests
    with (
        SecureDeepSeek(settings=settings, **kwargs) as c,
        pytest.raises(PolicyDenied, match=f"the {stage} stage failed") as info,
    ):
        c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert info.value.policy == f"{stage}:error"
    assert sb.stats.requests == before
    assert read_audit(settings.audit_path)[0]["outcome"] == "deny"


class BrokenProvider(StaticTokenProvider):
    def _fetch(self) -> Any:
        raise OSError("vault unreachable at https://user:hunter2@vault.internal")


def test_a_failing_token_provider_is_an_audited_identity_error(sb: Sandbox, tmp_path: Path) -> None:
    settings = sb.client_settings("alice", audit_path=tmp_path / "a.jsonl")
    with (
        SecureDeepSeek(settings=settings, token_provider=BrokenProvider("x")) as c,
        pytest.raises(IdentityError, match="token provider failed") as info,
    ):
        c.models.list()
    assert "hunter2" not in str(info.value)
    record = read_audit(settings.audit_path)[0]
    assert record["outcome"] == "failure"
    assert record["error"]["type"] == "IdentityError"
    assert "hunter2" not in json.dumps(record)


def test_a_broken_pricing_table_stops_the_client(settings: Settings, tmp_path: Path) -> None:
    table = tmp_path / "pricing.toml"
    table.write_text("id = 'mine'\n[models.deepseek-flash]\noff_peak = {output = 1}\n")
    with pytest.raises(ConfigError, match="SECURE_DS_PRICING") as info:
        SecureDeepSeek(settings=settings.replace(pricing=table))
    assert "off_peak.input_cache_hit must be a price" in str(info.value)


def test_a_custom_pricing_table_prices_the_call(settings: Settings, tmp_path: Path) -> None:
    table = tmp_path / "pricing.toml"
    table.write_text(
        "id = 'negotiated-2026'\n[models.deepseek-flash]\n"
        "off_peak = {input_cache_hit = 0, input_cache_miss = 1, output = 1}\n"
        "peak = {input_cache_hit = 0, input_cache_miss = 1, output = 1}\n"
    )
    with SecureDeepSeek(settings=settings.replace(pricing=table)) as client:
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    (record,) = read_audit(settings.audit_path)
    usage = record["response"]["usage"]
    assert record["cost"]["pricing"] == "negotiated-2026"
    assert record["cost"]["usd"] == pytest.approx(
        (usage["prompt_tokens"] + usage["completion_tokens"]) / 1e6
    )
