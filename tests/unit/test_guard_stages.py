"""Guard-chain pieces that need no network: actions, enforcement, SSE accounting, ids."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx2
import pytest

from secure_ds._ids import uuid7
from secure_ds.guard import Decision, Enforcer
from secure_ds.guard._call import Call, action_for
from secure_ds.guard._chain import SSEUsageTracker
from secure_ds.guard._stages import ObligationRefused
from secure_ds.sandbox import Sandbox


def _call(body: dict[str, object], path: str = "/chat/completions") -> Call:
    request = httpx2.Request(
        "POST", f"https://api.example/{path.lstrip('/')}", content=json.dumps(body).encode()
    )
    return Call.from_request(request)


PERMIT = Decision(effect="permit", engine="test")


@pytest.mark.parametrize(
    ("method", "path", "body", "action"),
    [
        ("POST", "/chat/completions", {"stream": False}, "chat"),
        ("POST", "/v1/chat/completions", {"stream": True}, "stream"),
        ("POST", "/beta/completions", {}, "fim"),
        ("POST", "/completions", {}, "fim"),
        ("GET", "/models", None, "list_models"),
        ("GET", "/user/balance", None, "balance"),
        ("POST", "/embeddings", {}, "other"),
    ],
)
def test_action_for(method: str, path: str, body: dict[str, object] | None, action: str) -> None:
    assert action_for(method, path, body) == action


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with Sandbox() as sb:
        yield sb.client_settings(
            "alice",
            model="deepseek-flash@2026-10-17",
            max_tokens=512,
            temperature=0.2,
            audit_path=Path(tmp_path_factory.mktemp("a")) / "a.jsonl",
        )


def test_defaults_fill_only_missing_parameters(settings) -> None:  # type: ignore[no-untyped-def]
    call = _call({"model": "deepseek-flash", "messages": [], "temperature": 1.0})
    Enforcer(settings).enforce(call, PERMIT)
    assert call.body is not None
    assert call.body["max_tokens"] == 512
    assert call.body["temperature"] == 1.0  # the caller's value stays
    assert call.model_pin == "2026-10-17"  # the configured pin is recorded
    assert json.loads(call.outgoing_content())["max_tokens"] == 512


def test_model_pin_is_stripped_and_recorded(settings) -> None:  # type: ignore[no-untyped-def]
    call = _call({"model": "deepseek-v4-pro@2026-11-01", "messages": []})
    Enforcer(settings).enforce(call, PERMIT)
    assert call.model == "deepseek-v4-pro"
    assert call.model_pin == "2026-11-01"
    assert json.loads(call.outgoing_content())["model"] == "deepseek-v4-pro"
    assert "model_pin" in call.enforcement


def test_obligations_cap_and_route(settings) -> None:  # type: ignore[no-untyped-def]
    call = _call({"model": "deepseek-v4-pro", "messages": [], "max_tokens": 9000})
    decision = Decision(
        effect="permit",
        engine="test",
        obligations=("cap_max_tokens:2048", "route:deepseek-flash"),
    )
    Enforcer(settings).enforce(call, decision)
    sent = json.loads(call.outgoing_content())
    assert sent["max_tokens"] == 2048
    assert sent["model"] == "deepseek-flash"
    assert call.enforcement[-2:] == ["cap_max_tokens:2048", "route:deepseek-flash"]


def test_smaller_request_is_not_raised_by_a_cap(settings) -> None:  # type: ignore[no-untyped-def]
    call = _call({"model": "deepseek-flash", "messages": [], "max_tokens": 100})
    Enforcer(settings).enforce(
        call, Decision(effect="permit", engine="t", obligations=("cap_max_tokens:2048",))
    )
    assert json.loads(call.outgoing_content())["max_tokens"] == 100


@pytest.mark.parametrize(
    "obligation", ["quarantine:pii", "cap_max_tokens:lots", "route:", "x", "redact:"]
)
def test_unknown_or_malformed_obligation_is_refused(settings, obligation: str) -> None:  # type: ignore[no-untyped-def]
    call = _call({"model": "deepseek-flash", "messages": []})
    with pytest.raises(ObligationRefused, match=r"not one secure-ds can carry out|malformed"):
        Enforcer(settings).enforce(
            call, Decision(effect="permit", engine="t", obligations=(obligation,))
        )


@pytest.mark.parametrize("obligation", ["redact:email", "block:private_key"])
def test_dlp_obligations_need_the_dlp_classifier(settings, obligation: str) -> None:  # type: ignore[no-untyped-def]
    call = _call({"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}]})
    assert call.dlp is None  # no DLP scan ran for this call
    with pytest.raises(ObligationRefused, match="needs the DLP classifier"):
        Enforcer(settings).enforce(
            call, Decision(effect="permit", engine="t", obligations=(obligation,))
        )


def test_unchanged_body_is_sent_byte_for_byte() -> None:
    raw = b'{"model":"m","messages":[],  "odd_spacing":true}'
    call = Call.from_request(httpx2.Request("POST", "https://x/chat/completions", content=raw))
    assert call.outgoing_content() is raw


SSE = (
    b": keep-alive\n\n"
    b'data: {"id":"c1","model":"deepseek-flash","choices":[{"delta":{"role":"assistant"}}]}\n\n'
    b'data: {"id":"c1","choices":[{"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","choices":[{"delta":{},"finish_reason":"stop"}],"usage":null}\n\n'
    b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,'
    b'"total_tokens":4,"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":3}}\n\n'
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("piece", [1, 7, 64, len(SSE)])
def test_sse_tracker_survives_any_chunking(piece: int) -> None:
    tracker = SSEUsageTracker()
    for i in range(0, len(SSE), piece):
        tracker.feed(SSE[i : i + piece])
    assert tracker.done
    assert tracker.chunks == 4
    assert tracker.size == len(SSE)
    assert tracker.fields["id"] == "c1"
    assert tracker.fields["model"] == "deepseek-flash"
    assert tracker.fields["finish_reason"] == "stop"
    assert tracker.fields["usage"]["total_tokens"] == 4


def test_sse_tracker_notices_a_missing_done() -> None:
    tracker = SSEUsageTracker()
    tracker.feed(SSE[: SSE.index(b"data: [DONE]")])
    assert not tracker.done


def test_uuid7_is_version_7_and_time_ordered() -> None:
    ids = [uuid7() for _ in range(50)]
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
    prefixes = [i[:13] for i in ids]  # 48-bit millisecond timestamp
    assert prefixes == sorted(prefixes)
    assert len(set(ids)) == 50


def test_rfc3339_millis_matches_datetime() -> None:
    from datetime import UTC, datetime

    from secure_ds._ids import rfc3339_millis

    for ts in (0.0, 1_764_303_493.69, 1_764_303_493.0005, 1_764_303_494.999):
        expected = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        assert rfc3339_millis(ts) == expected
