"""Faults on the wire: broken streams, rate-limit storms, error statuses, timeouts.

Each case checks the typed error (and its openai base class), how many attempts went
out (counted both in the audit record and at the sandbox), and that the call left
exactly one audit record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

from secure_ds import (
    AsyncSecureDeepSeek,
    CircuitOpen,
    ConnectionFailed,
    RateLimited,
    RequestTimedOut,
    SecureDeepSeek,
    Settings,
    StreamInterrupted,
)
from secure_ds.errors import (
    AuthenticationFailed,
    BadRequest,
    InsufficientBalance,
    InvalidParameters,
    NotFound,
    PermissionDenied,
    ServerError,
    ServiceOverloaded,
    UpstreamError,
)
from secure_ds.identity import StaticTokenProvider
from secure_ds.sandbox import Sandbox
from tests.security._support import (
    MESSAGES,
    AuditTail,
    closed_port,
    sign_token,
    thumbprint_of_file,
    token_claims,
)

SettingsFactory = Callable[..., Settings]

STREAM_MESSAGES = [
    {"role": "user", "content": "tell me a fairly long story about mutual TLS and tokens"}
]


def _chat(client: SecureDeepSeek) -> Any:
    return client.chat.completions.create(model=client.default_model, messages=MESSAGES)  # type: ignore[arg-type]


def _statuses(record: dict[str, Any]) -> list[int | None]:
    return [attempt.get("status") for attempt in record["attempts"]]


def _breaker_state(client: SecureDeepSeek, sb: Sandbox) -> str:
    return client.guard.breakers.for_url(httpx2.URL(sb.base_url))[1].state


# ---------------------------------------------------------------------- streams


def _consume(stream: Any, received: list[object]) -> None:
    for chunk in stream:
        received.append(chunk)


async def _aconsume(stream: Any, received: list[object]) -> None:
    async for chunk in stream:
        received.append(chunk)


def test_stream_cut_by_server_raises_stream_interrupted(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    received: list[object] = []
    with SecureDeepSeek(settings=make_settings()) as client:
        sb.drop_next_stream(2)
        stream = client.chat.completions.create(
            model=client.default_model,
            messages=STREAM_MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        with pytest.raises(StreamInterrupted) as caught:
            _consume(stream, received)
        stream.close()  # closing afterwards must not add a second record
    assert isinstance(caught.value, openai.APIConnectionError)
    assert len(received) == 2
    record = audit.one()
    assert record["outcome"] == "failure"
    assert record["error"]["type"] == "StreamInterrupted"
    assert record["event_id"] == caught.value.event_id
    assert record["response"]["chunks"] == len(received)
    assert record["response"]["completed"] is False


async def test_stream_cut_by_server_raises_stream_interrupted_async(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    received: list[object] = []
    async with AsyncSecureDeepSeek(settings=make_settings()) as client:
        sb.drop_next_stream(2)
        stream = await client.chat.completions.create(
            model=client.default_model,
            messages=STREAM_MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        with pytest.raises(StreamInterrupted) as caught:
            await _aconsume(stream, received)
        await stream.close()
    assert isinstance(caught.value, openai.APIConnectionError)
    assert len(received) == 2
    record = audit.one()
    assert record["outcome"] == "failure"
    assert record["error"]["type"] == "StreamInterrupted"
    assert record["response"]["chunks"] == len(received)
    assert record["response"]["completed"] is False


def test_complete_stream_is_audited_as_completed(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    """Control for the stream tests: an uninterrupted stream records completed=true."""
    with SecureDeepSeek(settings=make_settings()) as client:
        stream = client.chat.completions.create(
            model=client.default_model,
            messages=STREAM_MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        received = sum(1 for _ in stream)
    record = audit.one()
    assert record["outcome"] == "permit"
    assert record["response"]["completed"] is True
    assert record["response"]["chunks"] == received > 2


def test_caller_breaking_out_of_a_stream_is_a_permit(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    """Abandoning a stream is the caller's choice, not a failure: one permit record.

    (The sandbox sends a whole stream in one burst, so here the transport has usually
    seen ``[DONE]`` already and ``completed`` may be true; the next test pins the case
    where the end has not arrived.)
    """
    with SecureDeepSeek(settings=make_settings()) as client:
        with client.chat.completions.create(
            model=client.default_model,
            messages=STREAM_MESSAGES,  # type: ignore[arg-type]
            stream=True,
        ) as stream:
            for _chunk in stream:
                break
        stream.close()  # a second close is harmless
    record = audit.one()
    assert record["outcome"] == "permit"
    assert record["error"] is None
    assert record["response"]["chunks"] >= 1


def test_caller_breaking_out_before_the_end_arrived_is_not_completed(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    """The server has sent 5 events and no ``[DONE]`` yet (it would then cut the
    connection, but the caller leaves first): permit, completed false, one record."""
    with SecureDeepSeek(settings=make_settings()) as client:
        sb.drop_next_stream(5)
        with client.chat.completions.create(
            model=client.default_model,
            messages=STREAM_MESSAGES,  # type: ignore[arg-type]
            stream=True,
        ) as stream:
            for _chunk in stream:
                break
    record = audit.one()
    assert record["outcome"] == "permit"
    assert record["error"] is None
    assert record["response"]["completed"] is False
    assert 1 <= record["response"]["chunks"] <= 5


async def test_caller_breaking_out_before_the_end_arrived_is_not_completed_async(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    async with AsyncSecureDeepSeek(settings=make_settings()) as client:
        sb.drop_next_stream(5)
        stream = await client.chat.completions.create(
            model=client.default_model,
            messages=STREAM_MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        async with stream:
            async for _chunk in stream:
                break
    record = audit.one()
    assert record["outcome"] == "permit"
    assert record["error"] is None
    assert record["response"]["completed"] is False
    assert 1 <= record["response"]["chunks"] <= 5


# ---------------------------------------------------------------------- circuit breaker


def test_429_storm_opens_the_breaker_and_a_probe_closes_it(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    cooldown = 0.5
    settings = make_settings(breaker_threshold=3, max_attempts=5, breaker_cooldown=cooldown)
    with SecureDeepSeek(settings=settings) as client:
        sb.fail_next(429, times=50, retry_after=0)

        # 1st call: three 429s reach the server, the third opens the breaker, and the
        # fourth attempt is refused by the breaker before it is sent
        before = sb.stats.requests
        with pytest.raises(CircuitOpen) as first:
            _chat(client)
        opened_at = time.monotonic()
        assert sb.stats.requests == before + 3
        assert isinstance(first.value, openai.APIError)
        record = audit.one()
        assert record["outcome"] == "failure"
        assert record["error"]["type"] == "CircuitOpen"
        assert _statuses(record) == [429, 429, 429, None]
        assert [a.get("retry_in_s") for a in record["attempts"][:3]] == [0.0, 0.0, 0.0]
        assert record["attempts"][3]["error"] == "CircuitOpen"
        assert _breaker_state(client, sb) == "open"

        # 2nd call: refused at once, nothing sent
        before = sb.stats.requests
        with pytest.raises(CircuitOpen) as second:
            _chat(client)
        assert sb.stats.requests == before
        assert 0 < second.value.retry_in <= cooldown
        record = audit.one()
        assert record["error"]["type"] == "CircuitOpen"
        assert [a.get("error") for a in record["attempts"]] == ["CircuitOpen"]

        # after the cool-down one probe goes out; it succeeds and closes the breaker
        sb.clear_faults()
        time.sleep(max(0.0, cooldown - (time.monotonic() - opened_at)) + 0.05)
        assert _breaker_state(client, sb) == "half-open"
        before = sb.stats.requests
        assert _chat(client).choices[0].message.content
        assert sb.stats.requests == before + 1
        record = audit.one()
        assert record["outcome"] == "permit"
        assert _statuses(record) == [200]
        assert _breaker_state(client, sb) == "closed"
        _chat(client)
        assert audit.one()["outcome"] == "permit"


def test_failed_probe_reopens_the_breaker(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    cooldown = 0.3
    settings = make_settings(breaker_threshold=1, max_attempts=5, breaker_cooldown=cooldown)
    with SecureDeepSeek(settings=settings) as client:
        sb.fail_next(429, times=50, retry_after=0)
        before = sb.stats.requests
        with pytest.raises(CircuitOpen):
            _chat(client)
        assert sb.stats.requests == before + 1
        assert _statuses(audit.one()) == [429, None]

        time.sleep(cooldown + 0.05)
        before = sb.stats.requests
        with pytest.raises(CircuitOpen):
            _chat(client)  # the probe gets a 429: open again for a full cool-down
        assert sb.stats.requests == before + 1
        assert _statuses(audit.one()) == [429, None]

        before = sb.stats.requests
        with pytest.raises(CircuitOpen):
            _chat(client)
        assert sb.stats.requests == before
        assert _statuses(audit.one()) == [None]


# ---------------------------------------------------------------------- retries


def test_retry_after_is_honoured(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    with SecureDeepSeek(settings=make_settings(breaker_threshold=10)) as client:
        sb.fail_next(429, times=1, retry_after=0.3)
        started = time.perf_counter()
        assert _chat(client).choices[0].message.content
        elapsed = time.perf_counter() - started
    assert elapsed >= 0.3
    record = audit.one()
    assert record["outcome"] == "permit"
    assert _statuses(record) == [429, 200]
    assert record["attempts"][0]["retry_in_s"] == 0.3


def test_retry_after_beyond_backoff_max_is_not_waited_for(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    settings = make_settings(breaker_threshold=10, backoff_max=1.0)
    with SecureDeepSeek(settings=settings) as client:
        sb.fail_next(429, times=1, retry_after=5)
        before = sb.stats.requests
        started = time.perf_counter()
        with pytest.raises(RateLimited) as caught:
            _chat(client)
        elapsed = time.perf_counter() - started
    assert isinstance(caught.value, openai.RateLimitError)
    assert elapsed < 1.0
    assert sb.stats.requests == before + 1
    record = audit.one()
    assert record["error"]["type"] == "RateLimited"
    assert record["attempts"] == [{"ms": record["attempts"][0]["ms"], "status": 429}]


_NOT_RETRIED: list[tuple[int, type[UpstreamError], type[openai.APIStatusError]]] = [
    (400, BadRequest, openai.BadRequestError),
    (401, AuthenticationFailed, openai.AuthenticationError),
    (402, InsufficientBalance, openai.APIStatusError),
    (403, PermissionDenied, openai.PermissionDeniedError),
    (404, NotFound, openai.NotFoundError),
    (422, InvalidParameters, openai.UnprocessableEntityError),
]


@pytest.mark.parametrize(
    ("status", "error", "openai_error"), _NOT_RETRIED, ids=[str(s) for s, _, _ in _NOT_RETRIED]
)
def test_client_errors_are_not_retried(
    status: int,
    error: type[UpstreamError],
    openai_error: type[openai.APIStatusError],
    sb: Sandbox,
    make_settings: SettingsFactory,
    audit: AuditTail,
) -> None:
    settings = make_settings()
    provider = None
    if status == 401:
        # a static (valid) token: nothing to refresh, so the 401 surfaces at once
        thumb = thumbprint_of_file(settings.client_cert)  # type: ignore[arg-type]
        provider = StaticTokenProvider(sign_token(sb, token_claims(sb, thumb)))
    with SecureDeepSeek(settings=settings, token_provider=provider) as client:
        sb.fail_next(status, times=3)
        before = sb.stats.requests
        with pytest.raises(error) as caught:
            _chat(client)
        assert _breaker_state(client, sb) == "closed"  # a 4xx shows the endpoint is up
    assert type(caught.value) is error
    assert isinstance(caught.value, openai_error)
    assert caught.value.status_code == status
    assert sb.stats.requests == before + 1
    record = audit.one()
    assert record["outcome"] == "failure"
    assert record["error"]["type"] == error.__name__
    assert _statuses(record) == [status]


_SERVER_ERRORS: list[tuple[int, type[ServerError]]] = [
    (500, ServerError),
    (502, ServerError),
    (503, ServiceOverloaded),
    (504, ServerError),
]


@pytest.mark.parametrize(
    ("status", "error"), _SERVER_ERRORS, ids=[str(s) for s, _ in _SERVER_ERRORS]
)
def test_server_errors_are_retried_up_to_max_attempts(
    status: int,
    error: type[ServerError],
    sb: Sandbox,
    make_settings: SettingsFactory,
    audit: AuditTail,
) -> None:
    settings = make_settings(max_attempts=3, breaker_threshold=10)
    with SecureDeepSeek(settings=settings) as client:
        sb.fail_next(status, times=10)
        before = sb.stats.requests
        with pytest.raises(error) as caught:
            _chat(client)
    assert type(caught.value) is error
    assert isinstance(caught.value, openai.InternalServerError)
    assert caught.value.status_code == status
    assert sb.stats.requests == before + 3
    record = audit.one()
    assert record["error"]["type"] == error.__name__
    assert _statuses(record) == [status] * 3
    assert "retry_in_s" in record["attempts"][0]
    assert "retry_in_s" in record["attempts"][1]
    assert "retry_in_s" not in record["attempts"][2]


def test_server_error_then_success(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    with SecureDeepSeek(settings=make_settings(max_attempts=3, breaker_threshold=10)) as client:
        sb.fail_next(503, times=2)
        assert _chat(client).choices[0].message.content
    record = audit.one()
    assert record["outcome"] == "permit"
    assert _statuses(record) == [503, 503, 200]


def test_read_timeout_is_retried_then_raised(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    settings = make_settings(read_timeout=0.3, max_attempts=2, breaker_threshold=10)
    with SecureDeepSeek(settings=settings) as client:
        sb.delay_next(2.0, times=5)
        before = sb.stats.requests
        started = time.perf_counter()
        with pytest.raises(RequestTimedOut) as caught:
            _chat(client)
        elapsed = time.perf_counter() - started
    assert isinstance(caught.value, openai.APITimeoutError)
    assert isinstance(caught.value, openai.APIConnectionError)
    assert 0.6 <= elapsed < 2.0
    assert sb.stats.requests == before + 2
    record = audit.one()
    assert record["outcome"] == "failure"
    assert record["error"]["type"] == "RequestTimedOut"
    assert [a.get("error") for a in record["attempts"]] == ["ReadTimeout", "ReadTimeout"]


def test_connection_refused_is_retried_then_raised(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    endpoint = f"https://127.0.0.1:{closed_port()}"
    settings = make_settings(endpoint=endpoint, max_attempts=3, breaker_threshold=10)
    with SecureDeepSeek(settings=settings) as client, pytest.raises(ConnectionFailed) as caught:
        _chat(client)
    assert type(caught.value) is ConnectionFailed
    assert isinstance(caught.value, openai.APIConnectionError)
    assert endpoint in str(caught.value)
    record = audit.one()
    assert record["outcome"] == "failure"
    assert record["error"]["type"] == "ConnectionFailed"
    assert [a.get("error") for a in record["attempts"]] == ["ConnectError"] * 3


@pytest.mark.parametrize(("max_retries", "attempts"), [(0, 1), (2, 3)])
def test_with_options_max_retries_sets_the_attempts(
    max_retries: int,
    attempts: int,
    sb: Sandbox,
    make_settings: SettingsFactory,
    audit: AuditTail,
) -> None:
    with SecureDeepSeek(settings=make_settings(max_attempts=5, breaker_threshold=10)) as client:
        sb.fail_next(503, times=10)
        before = sb.stats.requests
        with pytest.raises(ServiceOverloaded):
            _chat(client.with_options(max_retries=max_retries))  # type: ignore[arg-type]
    assert sb.stats.requests == before + attempts
    record = audit.one()
    assert _statuses(record) == [503] * attempts


def test_an_abandoned_stream_is_still_audited(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    """A caller that drops a stream without reading it to the end or closing it: the
    SDK's stream cleanup closes the response when it is collected, and closing is
    where the guard records the call."""
    import gc

    with SecureDeepSeek(settings=make_settings()) as client:
        stream = client.chat.completions.create(
            model=client.default_model,
            messages=STREAM_MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        next(iter(stream))
        del stream
        gc.collect()
        record = audit.one()
    assert record["outcome"] == "permit"
    assert record["action"] == "stream"
    assert record["response"]["chunks"] >= 1


def test_a_body_cut_after_a_200_is_one_failure_not_a_retry(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    """The request was served (and charged): it is not sent again, by secure-ds or by
    the SDK's own retry loop, and it leaves one record."""
    before = sb.stats.requests
    sb.cut_next_body()
    with (
        SecureDeepSeek(settings=make_settings()) as client,
        pytest.raises(ConnectionFailed) as caught,
    ):
        _chat(client)
    assert isinstance(caught.value, openai.APIConnectionError)
    assert sb.stats.requests == before + 1
    record = audit.one()
    assert record["outcome"] == "failure"
    assert record["error"]["type"] == "ConnectionFailed"
