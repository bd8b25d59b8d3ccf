"""Mutual TLS, SPKI pinning and bearer-token checks, end to end against the sandbox.

Every refusal must surface as a clear typed error and leave exactly one audit record
(outcome ``failure``, ``error.type`` the raised class); refusals that happen before a
call (bad local configuration) must raise ``ConfigError`` and leave no record.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from secure_ds import (
    AsyncSecureDeepSeek,
    AuthenticationFailed,
    ConfigError,
    PinMismatch,
    SecureDeepSeek,
    Settings,
    TLSFailed,
)
from secure_ds.identity import StaticTokenProvider, spki_pin_of
from secure_ds.sandbox import LocalCA, Sandbox
from tests.security._support import (
    MESSAGES,
    AuditTail,
    der_of,
    hmac_confused_token,
    raw_ssl_context,
    sign_token,
    thumbprint_of_file,
    token_claims,
    unsigned_token,
    write_pair,
)

SettingsFactory = Callable[..., Settings]


def _chat(client: SecureDeepSeek) -> Any:
    return client.chat.completions.create(model=client.default_model, messages=MESSAGES)  # type: ignore[arg-type]


async def _achat(client: AsyncSecureDeepSeek) -> Any:
    return await client.chat.completions.create(model=client.default_model, messages=MESSAGES)  # type: ignore[arg-type]


def _assert_failure_record(record: dict[str, Any], exc: BaseException) -> None:
    assert record["outcome"] == "failure"
    assert record["error"]["type"] == type(exc).__name__
    assert record["event_id"] == exc.event_id  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- server verification


def test_wrong_ca_bundle_fails_tls_and_sends_nothing(
    sb: Sandbox,
    make_settings: SettingsFactory,
    audit: AuditTail,
    tmp_path: Path,
    foreign_ca: LocalCA,
) -> None:
    bundle = tmp_path / "foreign-ca.pem"
    bundle.write_bytes(foreign_ca.cert_pem)
    before = sb.stats
    with (
        SecureDeepSeek(settings=make_settings(ca_bundle=bundle)) as client,
        pytest.raises(TLSFailed) as caught,
    ):
        _chat(client)
    assert "SECURE_DS_CA_BUNDLE" in str(caught.value)
    assert isinstance(caught.value, openai.APIConnectionError)
    after = sb.stats
    assert after.requests == before.requests
    assert after.auth_failures == before.auth_failures
    record = audit.one()
    _assert_failure_record(record, caught.value)
    assert record["error"]["type"] == "TLSFailed"
    # a TLS failure is a configuration problem: not retried
    assert len(record["attempts"]) == 1


async def test_wrong_ca_bundle_fails_tls_async(
    sb: Sandbox,
    make_settings: SettingsFactory,
    audit: AuditTail,
    tmp_path: Path,
    foreign_ca: LocalCA,
) -> None:
    bundle = tmp_path / "foreign-ca.pem"
    bundle.write_bytes(foreign_ca.cert_pem)
    before = sb.stats.requests
    async with AsyncSecureDeepSeek(settings=make_settings(ca_bundle=bundle)) as client:
        with pytest.raises(TLSFailed) as caught:
            await _achat(client)
    assert "SECURE_DS_CA_BUNDLE" in str(caught.value)
    assert sb.stats.requests == before
    _assert_failure_record(audit.one(), caught.value)


# ---------------------------------------------------------------------- client certificates


def test_foreign_client_certificate_fails_tls_with_client_cert_hint(
    sb: Sandbox,
    make_settings: SettingsFactory,
    audit: AuditTail,
    tmp_path: Path,
    foreign_ca: LocalCA,
) -> None:
    cert, key = write_pair(tmp_path, "foreign-alice", *foreign_ca.issue_client_cert("alice"))
    before = sb.stats
    with (
        SecureDeepSeek(settings=make_settings(client_cert=cert, client_key=key)) as client,
        pytest.raises(TLSFailed) as caught,
    ):
        _chat(client)
    assert "client certificate" in caught.value.hint
    assert "SECURE_DS_CLIENT_CERT" in str(caught.value)
    after = sb.stats
    assert after.requests == before.requests
    assert after.auth_failures == before.auth_failures
    assert after.handshake_failures == before.handshake_failures + 1  # refused once, no retry
    record = audit.one()
    _assert_failure_record(record, caught.value)
    assert len(record["attempts"]) == 1


async def test_foreign_client_certificate_fails_tls_async(
    sb: Sandbox,
    make_settings: SettingsFactory,
    audit: AuditTail,
    tmp_path: Path,
    foreign_ca: LocalCA,
) -> None:
    cert, key = write_pair(tmp_path, "foreign-alice", *foreign_ca.issue_client_cert("alice"))
    before = sb.stats
    settings = make_settings(client_cert=cert, client_key=key)
    async with AsyncSecureDeepSeek(settings=settings) as client:
        with pytest.raises(TLSFailed) as caught:
            await _achat(client)
    assert "client certificate" in caught.value.hint
    assert sb.stats.requests == before.requests
    assert sb.stats.auth_failures == before.auth_failures
    record = audit.one()
    _assert_failure_record(record, caught.value)
    assert len(record["attempts"]) == 1


def _dated_cert(
    sb: Sandbox, tmp_path: Path, stem: str, not_before: datetime, not_after: datetime
) -> tuple[Path, Path]:
    pem, key = sb.ca.issue_client_cert("alice", not_before=not_before, not_after=not_after)
    return write_pair(tmp_path, stem, pem, key)


def _assert_tls_alert(exc: BaseException, alert: str) -> None:
    """``exc`` was caused by the server's TLS alert ``alert`` (an ``ssl.SSLError``)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    assert isinstance(cause, ssl.SSLError), f"no TLS error behind {exc!r}"
    assert f"alert {alert}" in str(cause)


_NOW = datetime.now(UTC)
# case -> (not_before, not_after, ConfigError wording, TLS alert the sandbox sends)
_OUT_OF_DATE = {
    "expired": (
        _NOW - timedelta(days=2),
        _NOW - timedelta(days=1),
        "expired",
        "certificate expired",
    ),
    "not-yet-valid": (
        _NOW + timedelta(days=1),
        _NOW + timedelta(days=2),
        "not valid until",
        "bad certificate",
    ),
}


@pytest.mark.parametrize("case", sorted(_OUT_OF_DATE))
def test_out_of_date_client_certificate_is_refused_locally_and_by_the_sandbox(
    case: str, sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail, tmp_path: Path
) -> None:
    not_before, not_after, wording, alert = _OUT_OF_DATE[case]
    cert, key = _dated_cert(sb, tmp_path, case, not_before, not_after)

    # locally: construction fails and names the variable
    with pytest.raises(ConfigError) as caught:
        SecureDeepSeek(settings=make_settings(client_cert=cert, client_key=key))
    assert caught.value.variable == "SECURE_DS_CLIENT_CERT"
    assert "SECURE_DS_CLIENT_CERT" in str(caught.value)
    assert wording in str(caught.value)
    assert audit.new() == []  # no call was made

    # and the sandbox refuses such a certificate in the handshake
    before = sb.stats
    with (
        httpx2.Client(verify=raw_ssl_context(sb, cert, key), trust_env=False) as raw,
        pytest.raises(httpx2.TransportError) as refused,
    ):
        raw.get(f"{sb.base_url}/models")
    _assert_tls_alert(refused.value, alert)
    assert sb.stats.requests == before.requests
    assert sb.stats.auth_failures == before.auth_failures
    assert sb.stats.handshake_failures == before.handshake_failures + 1


def test_raw_client_with_valid_certificate_reaches_token_check(sb: Sandbox, tmp_path: Path) -> None:
    """Control for the raw-client tests: the same code with a valid certificate gets
    through the handshake and is stopped only by the missing token (HTTP 401)."""
    pem, key = sb.ca.issue_client_cert("alice")
    cert, key_path = write_pair(tmp_path, "valid", pem, key)
    before = sb.stats
    with httpx2.Client(verify=raw_ssl_context(sb, cert, key_path), trust_env=False) as raw:
        response = raw.get(f"{sb.base_url}/models")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "missing bearer token"
    assert sb.stats.auth_failures == before.auth_failures + 1
    assert sb.stats.requests == before.requests


def test_missing_client_certificate_is_refused(sb: Sandbox, make_settings: SettingsFactory) -> None:
    before = sb.stats
    with (
        httpx2.Client(verify=raw_ssl_context(sb), trust_env=False) as raw,
        pytest.raises(httpx2.TransportError) as refused,
    ):
        raw.get(f"{sb.base_url}/models")
    _assert_tls_alert(refused.value, "certificate required")
    assert sb.stats.requests == before.requests
    assert sb.stats.auth_failures == before.auth_failures
    assert sb.stats.handshake_failures == before.handshake_failures + 1

    with pytest.raises(ConfigError) as caught:
        make_settings(token_provider="embedded", client_cert=None, client_key=None)
    assert caught.value.variable == "SECURE_DS_CLIENT_CERT"
    assert "SECURE_DS_CLIENT_CERT" in str(caught.value)


# ---------------------------------------------------------------------- bearer tokens


def _bad_token(case: str, sb: Sandbox, settings: Settings, tmp_path: Path) -> str:
    thumb = thumbprint_of_file(settings.client_cert)  # type: ignore[arg-type]
    claims = token_claims(sb, thumb)
    if case == "expired":
        claims = token_claims(
            sb, thumb, iat=claims["iat"] - 900, nbf=claims["iat"] - 900, exp=claims["iat"] - 600
        )
        return sign_token(sb, claims)
    if case == "wrong-audience":
        return sign_token(sb, token_claims(sb, thumb, aud="https://api.deepseek.com"))
    if case == "wrong-issuer":
        return sign_token(sb, token_claims(sb, thumb, iss="https://evil.example/issuer"))
    if case == "alg-none":
        return unsigned_token(claims)
    if case == "hs256-public-key":
        return hmac_confused_token(sb, claims)
    if case == "bound-to-other-cert":
        other, _ = write_pair(tmp_path, "other", *sb.ca.issue_client_cert("alice"))
        return sign_token(sb, token_claims(sb, thumbprint_of_file(other)))
    if case == "no-cnf":
        return sign_token(sb, token_claims(sb, None))
    raise AssertionError(case)


_REASONS = {
    "expired": "token expired",
    "wrong-audience": "token audience mismatch",
    "wrong-issuer": "token issuer mismatch",
    "alg-none": "algorithm none not allowed",
    "hs256-public-key": "algorithm HS256 not allowed",
    "bound-to-other-cert": "token not bound to the presented client certificate",
    "no-cnf": "token not bound to a client certificate (cnf.x5t#S256 missing)",
}


@pytest.mark.parametrize("case", list(_REASONS))
def test_bad_token_is_refused_with_the_sandbox_reason(
    case: str, sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail, tmp_path: Path
) -> None:
    settings = make_settings()
    token = _bad_token(case, sb, settings, tmp_path)
    before = sb.stats
    with (
        SecureDeepSeek(settings=settings, token_provider=StaticTokenProvider(token)) as client,
        pytest.raises(AuthenticationFailed) as caught,
    ):
        _chat(client)
    exc = caught.value
    assert isinstance(exc, openai.AuthenticationError)
    assert exc.status_code == 401
    assert _REASONS[case] in str(exc)
    after = sb.stats
    assert after.requests == before.requests  # never reached a handler
    assert after.auth_failures > before.auth_failures
    record = audit.one()
    _assert_failure_record(record, exc)
    assert record["error"]["type"] == "AuthenticationFailed"
    assert record["attempts"], "the 401 attempt must be recorded"
    assert all(attempt.get("status") == 401 for attempt in record["attempts"])


# An expired static token is past its refresh point, so each token() call builds a new
# Token object with the same value; the guard must still see that nothing changed.
@pytest.mark.parametrize("case", list(_REASONS))
def test_static_token_401_is_not_retried(
    case: str, sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail, tmp_path: Path
) -> None:
    """A static token cannot be refreshed: exactly one attempt reaches the server."""
    settings = make_settings()
    token = _bad_token(case, sb, settings, tmp_path)
    before = sb.stats.auth_failures
    with (
        SecureDeepSeek(settings=settings, token_provider=StaticTokenProvider(token)) as client,
        pytest.raises(AuthenticationFailed),
    ):
        _chat(client)
    record = audit.one()
    assert [a.get("status") for a in record["attempts"]] == [401]
    assert sb.stats.auth_failures == before + 1


def test_401_refreshes_the_token_once_and_retries(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    with SecureDeepSeek(settings=make_settings()) as client:
        _chat(client)
        first = audit.one()
        claims = sb.stats.last_claims
        assert claims is not None
        first_jti = claims["jti"]
        assert first["actor"]["token_jti"] == first_jti

        sb.fail_next(401)
        reply = _chat(client)
        assert reply.choices[0].message.content
        record = audit.one()
        assert record["outcome"] == "permit"
        assert [a.get("status") for a in record["attempts"]] == [401, 200]
        claims = sb.stats.last_claims
        assert claims is not None
        second_jti = claims["jti"]
        assert second_jti != first_jti  # the retry carried a freshly minted token
        assert client.guard.token_provider.token().jti == second_jti

        # the next call reuses the refreshed token
        _chat(client)
        assert audit.one()["actor"]["token_jti"] == second_jti


def test_401_is_refreshed_only_once(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    with SecureDeepSeek(settings=make_settings()) as client:
        sb.fail_next(401, times=2)
        with pytest.raises(AuthenticationFailed) as caught:
            _chat(client)
    record = audit.one()
    _assert_failure_record(record, caught.value)
    assert [a.get("status") for a in record["attempts"]] == [401, 401]


# ---------------------------------------------------------------------- SPKI pinning


def _foreign_pin() -> str:
    cert_pem, _ = LocalCA.create("impostor CA").issue_server_cert(["127.0.0.1"])
    return spki_pin_of(der_of(cert_pem))


def _sandbox_pin(sb: Sandbox) -> str:
    return spki_pin_of(der_of((sb.directory / "server.pem").read_bytes()))


def test_spki_pin_mismatch_sends_nothing(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    before = sb.stats
    with (
        SecureDeepSeek(settings=make_settings(spki_pin=_foreign_pin())) as client,
        pytest.raises(PinMismatch) as caught,
    ):
        _chat(client)
    assert isinstance(caught.value, TLSFailed)
    assert "SECURE_DS_SPKI_PIN" in str(caught.value)
    assert sb.stats.requests == before.requests
    assert sb.stats.auth_failures == before.auth_failures  # not even the token was sent
    record = audit.one()
    _assert_failure_record(record, caught.value)
    assert len(record["attempts"]) == 1


async def test_spki_pin_mismatch_sends_nothing_async(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    before = sb.stats
    async with AsyncSecureDeepSeek(settings=make_settings(spki_pin=_foreign_pin())) as client:
        with pytest.raises(PinMismatch) as caught:
            await _achat(client)
    assert sb.stats.requests == before.requests
    assert sb.stats.auth_failures == before.auth_failures
    record = audit.one()
    _assert_failure_record(record, caught.value)
    assert len(record["attempts"]) == 1


def test_correct_spki_pin_works(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    before = sb.stats.requests
    with SecureDeepSeek(settings=make_settings(spki_pin=_sandbox_pin(sb))) as client:
        assert _chat(client).choices[0].message.content
    assert sb.stats.requests == before + 1
    assert audit.one()["outcome"] == "permit"


async def test_correct_spki_pin_works_async(
    sb: Sandbox, make_settings: SettingsFactory, audit: AuditTail
) -> None:
    before = sb.stats.requests
    async with AsyncSecureDeepSeek(settings=make_settings(spki_pin=_sandbox_pin(sb))) as client:
        assert (await _achat(client)).choices[0].message.content
    assert sb.stats.requests == before + 1
    assert audit.one()["outcome"] == "permit"
