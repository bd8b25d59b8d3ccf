"""DLP through the client: scanning every text, blocking, redacting, re-identifying."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from secure_ds import AsyncSecureDeepSeek, PolicyDenied, SecureDeepSeek, Settings
from secure_ds.sandbox import Sandbox
from tests.conftest import read_audit

pytestmark = pytest.mark.integration

EMAIL = "jane.doe@example.com"
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2\n"
    "OF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r\n"
    "1RTwjmYSi9R/zpBnuQ4EiMnCqfMPWiZqB4QdbAd0E7oH50VpuZ1P087G\n"
    "-----END PRIVATE KEY-----"
)


def _settings(sb: Sandbox, tmp_path: Path, **overrides: Any) -> Settings:
    return sb.client_settings("alice", audit_path=tmp_path / "a.jsonl", **overrides)


def _ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_findings_are_classified_and_counted_never_stored(sb: Sandbox, tmp_path: Path) -> None:
    settings = _settings(sb, tmp_path)
    with SecureDeepSeek(settings=settings) as c:
        c.chat.completions.create(model="deepseek-flash", messages=_ask(f"mail {EMAIL} now"))
    (record,) = read_audit(settings.audit_path)
    assert record["classify"] == {
        "engine": "dlp",
        "classification": "confidential",
        "findings": [{"kind": "email", "count": 1}],
    }
    assert EMAIL not in json.dumps(record)


def test_block_denies_before_sending(sb: Sandbox, tmp_path: Path) -> None:
    settings = _settings(sb, tmp_path, dlp_block=("private_key",))
    before = sb.stats.requests
    with (
        SecureDeepSeek(settings=settings) as c,
        pytest.raises(PolicyDenied, match=r"private_key \(1\), which block:private_key forbids"),
    ):
        c.chat.completions.create(
            model="deepseek-flash",
            messages=[
                {"role": "system", "content": "You review code."},
                {"role": "user", "content": f"Why does this fail?\n{PEM}"},
            ],
        )
    assert sb.stats.requests == before
    (record,) = read_audit(settings.audit_path)
    assert record["outcome"] == "deny"
    assert record["classify"]["classification"] == "secret"
    assert "BEGIN PRIVATE KEY" not in json.dumps(record)


def test_redaction_replaces_values_on_the_wire(sb: Sandbox, tmp_path: Path) -> None:
    settings = _settings(sb, tmp_path, dlp_redact=("email",))
    with SecureDeepSeek(settings=settings) as c:
        reply = c.chat.completions.create(model="deepseek-flash", messages=_ask(f"to {EMAIL}"))
    assert sb.last_request is not None
    assert sb.last_request["json"]["messages"][0]["content"] == "to <EMAIL_1>"
    assert reply.choices[0].message.content == "[sandbox deepseek-flash] alice said: to <EMAIL_1>"
    (record,) = read_audit(settings.audit_path)
    assert record["enforce"]["applied"] == ["redact:email [email=1]"]


def test_reversible_redaction_restores_the_reply(sb: Sandbox, tmp_path: Path) -> None:
    settings = _settings(sb, tmp_path, dlp_redact=("email",), dlp_reversible=True)
    with SecureDeepSeek(settings=settings) as c:
        reply = c.chat.completions.create(model="deepseek-flash", messages=_ask(f"to {EMAIL}"))
        stream = c.chat.completions.create(
            model="deepseek-flash", messages=_ask(f"to {EMAIL}"), stream=True
        )
        streamed = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert sb.last_request is not None
    assert EMAIL not in json.dumps(sb.last_request["json"])  # never left the client
    assert reply.choices[0].message.content == f"[sandbox deepseek-flash] alice said: to {EMAIL}"
    assert streamed == f"[sandbox deepseek-flash] alice said: to {EMAIL}"
    records = read_audit(settings.audit_path)
    assert all(EMAIL not in json.dumps(r) for r in records)
    assert records[1]["response"]["completed"] is True


async def test_reversible_redaction_async_stream(sb: Sandbox, tmp_path: Path) -> None:
    settings = _settings(sb, tmp_path, dlp_redact=("*",), dlp_reversible=True)
    async with AsyncSecureDeepSeek(settings=settings) as c:
        stream = await c.chat.completions.create(
            model="deepseek-flash", messages=_ask(f"ping {EMAIL}"), stream=True
        )
        parts = [ch.choices[0].delta.content or "" async for ch in stream if ch.choices]
    assert "".join(parts) == f"[sandbox deepseek-flash] alice said: ping {EMAIL}"


def test_fim_prompt_suffix_and_tool_arguments_are_scanned(sb: Sandbox, tmp_path: Path) -> None:
    settings = _settings(sb, tmp_path, dlp_redact=("email",))
    with SecureDeepSeek(settings=settings) as c:
        c.completions.create(
            model="deepseek-flash", prompt=f"# owner: {EMAIL}\ndef f(", suffix=f"# cc {EMAIL}"
        )
        assert sb.last_request is not None
        assert sb.last_request["json"]["prompt"] == "# owner: <EMAIL_1>\ndef f("
        assert sb.last_request["json"]["suffix"] == "# cc <EMAIL_1>"
        c.chat.completions.create(
            model="deepseek-flash",
            messages=[
                {"role": "user", "content": "look up the customer"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {
                                "name": "lookup",
                                "arguments": json.dumps({"email": EMAIL}),
                            },
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": f"found {EMAIL}"},
            ],
        )
    sent = json.dumps(sb.last_request["json"])
    assert EMAIL not in sent
    assert sent.count("<EMAIL_1>") == 2


def test_dlp_off_scans_nothing(sb: Sandbox, tmp_path: Path) -> None:
    settings = _settings(sb, tmp_path, dlp="off")
    with SecureDeepSeek(settings=settings) as c:
        c.chat.completions.create(model="deepseek-flash", messages=_ask(f"mail {EMAIL}"))
    assert read_audit(settings.audit_path)[0]["classify"]["engine"] == "none"


def test_a_placeholder_already_in_the_prompt_is_left_alone(sb: Sandbox, tmp_path: Path) -> None:
    settings = _settings(sb, tmp_path, dlp_redact=("email",), dlp_reversible=True)
    with SecureDeepSeek(settings=settings) as c:
        reply = c.chat.completions.create(
            model="deepseek-flash", messages=_ask(f"<EMAIL_1> is {EMAIL}")
        )
    assert sb.last_request is not None
    assert sb.last_request["json"]["messages"][0]["content"] == "<EMAIL_1> is <EMAIL_2>"
    assert reply.choices[0].message.content == (
        f"[sandbox deepseek-flash] alice said: <EMAIL_1> is {EMAIL}"
    )


def test_a_resent_history_is_answered_from_the_scan_cache_with_the_same_outcome(
    sb: Sandbox, tmp_path: Path
) -> None:
    # A chat resends its whole history on every call: with the cache each earlier
    # message costs a hash, and what goes on the wire and into the record is the same
    # as scanning everything again (SECURE_DS_DLP_CACHE=0).
    turns = [
        f"Ticket 4411: customer {EMAIL} reports card 4111 1111 1111 1111 was charged twice. "
        + "The order history follows in the next message. " * 6,
        "Order 77102 shipped to the address on file; the customer asked us to call back. "
        + "Please draft a reply that does not repeat any personal data. " * 5,
        f"Also cc {EMAIL.replace('jane', 'john')} and keep the tone short and polite. " * 4,
    ]
    wire: dict[int, list[Any]] = {}
    classified: dict[int, list[Any]] = {}
    for cache in (4096, 0):
        settings = sb.client_settings(
            "alice",
            audit_path=tmp_path / f"a{cache}.jsonl",
            dlp_redact=("email", "credit_card"),
            dlp_cache=cache,
        )
        history: list[Any] = []
        wire[cache] = []
        sent: set[str] = set()
        resent = 0  # texts of >= 32 characters sent again (the cache skips shorter ones)
        with SecureDeepSeek(settings=settings) as c:
            for turn in turns:
                history.append({"role": "user", "content": turn})
                resent += sum(m["content"] in sent and len(m["content"]) >= 32 for m in history)
                sent.update(m["content"] for m in history)
                reply = c.chat.completions.create(model="deepseek-flash", messages=history)
                history.append({"role": "assistant", "content": reply.choices[0].message.content})
                assert sb.last_request is not None
                wire[cache].append(sb.last_request["json"]["messages"])
            stats = c.guard.classifier.cache  # type: ignore[attr-defined]
            if cache:
                assert resent == 4  # call 2 resends turn 1; call 3 turns 1, 2 and reply 1
                assert stats.hits == resent
            else:
                assert stats.hits == 0
                assert len(stats) == 0
        classified[cache] = [(r["classify"], r["enforce"]) for r in read_audit(settings.audit_path)]
    assert wire[4096] == wire[0]
    assert classified[4096] == classified[0]
    assert EMAIL not in json.dumps(wire[4096])
