"""Secrets never show up: not in reprs, exception texts, the audit log or any log output.

The secrets: a DeepSeek API key, the passphrase of an encrypted client key, and every
JWT the client mints (captured by wrapping the token provider's ``_fetch``). Calls are
made in both token-provider modes, succeeding and failing, with every logger at DEBUG.
"""

from __future__ import annotations

import logging
import pickle
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import openai
import pytest
from cryptography.hazmat.primitives import serialization

from secure_ds import (
    AsyncSecureDeepSeek,
    AuthenticationFailed,
    ConfigError,
    PinMismatch,
    Secret,
    SecureDeepSeek,
    Settings,
    StreamInterrupted,
    TLSFailed,
)
from secure_ds.audit import is_checkpoint_line
from secure_ds.errors import ServiceOverloaded
from secure_ds.identity import Token, spki_pin_of
from secure_ds.sandbox import LocalCA, Sandbox
from tests.security._support import MESSAGES, der_of, write_pair

API_KEY = "sk-SECRET-canary-1234567890"
PASSPHRASE = "canary-passphrase"
WRONG_PASSPHRASE = "canary-WRONG-passphrase-987"
LOGGERS = ("openai", "httpx2", "httpcore2", "secure_ds", "asyncio", "aiohttp")


@dataclass
class Secrets:
    """Every secret value of the test; ``tokens`` grows as the client mints JWTs."""

    fixed: tuple[str, ...] = (API_KEY, PASSPHRASE, WRONG_PASSPHRASE)
    tokens: list[str] = field(default_factory=list)

    def values(self) -> list[str]:
        found: list[str] = list(self.fixed)
        for token in self.tokens:
            found.append(token)
            found.append(token.rsplit(".", 1)[1])  # the signature alone is a leak too
        return found

    def assert_absent(self, text: str, where: str) -> None:
        for secret in self.values():
            assert secret not in text, f"a secret leaked into {where}"


@pytest.fixture
def secrets() -> Secrets:
    return Secrets()


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@pytest.fixture
def encrypted_key_files(sb: Sandbox, tmp_path: Path) -> tuple[Path, Path]:
    """carol's client certificate with its key encrypted under PASSPHRASE."""
    cert_pem, key_pem = sb.ca.issue_client_cert("carol")
    key = serialization.load_pem_private_key(key_pem, None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    )
    return write_pair(tmp_path / "carol", "carol", cert_pem, encrypted)


@pytest.fixture
def carol_settings(
    sb: Sandbox, encrypted_key_files: tuple[Path, Path], tmp_path: Path
) -> Callable[..., Settings]:
    cert, key = encrypted_key_files

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "client_cert": cert,
            "client_key": key,
            "client_key_password": Secret(PASSPHRASE),
            "api_key": Secret(API_KEY),
            "audit_path": tmp_path / "audit.jsonl",
            "backoff_factor": 0.001,
            "max_attempts": 2,
            "breaker_threshold": 100,
        }
        values.update(overrides)
        return sb.client_settings("carol", **values)

    return make


def _record_tokens(client: SecureDeepSeek | AsyncSecureDeepSeek, secrets: Secrets) -> None:
    """Capture every token the client's provider mints from now on (and the current one)."""
    provider = client.guard.token_provider
    fetch = provider._fetch

    def recording() -> Token:
        token = fetch()
        secrets.tokens.append(token.value.reveal())
        return token

    provider._fetch = recording  # type: ignore[method-assign]
    secrets.tokens.append(provider.token().value.reveal())


def _exception_texts(exc: BaseException) -> str:
    parts = [str(exc), repr(exc), getattr(exc, "hint", ""), repr(vars(exc))]
    parts.append("".join(traceback.format_exception(exc)))
    request = getattr(exc, "_request", None) or getattr(exc, "request", None)
    if request is not None:
        parts.append(repr(request.headers))
    body = getattr(exc, "body", None)
    if body is not None:
        parts.append(repr(body))
    return "\n".join(parts)


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    lines = [caplog.text]
    for record in caplog.records:
        lines.append(record.getMessage())
        lines.append(repr(record.args))
        if record.exc_text:
            lines.append(record.exc_text)
    return "\n".join(lines)


def _assert_logs_clean(caplog: pytest.LogCaptureFixture, secrets: Secrets) -> None:
    names = {record.name.split(".")[0] for record in caplog.records}
    # the capture works: the SDK and the HTTP stack did log at DEBUG
    assert {"openai", "httpcore2"} <= names, names
    secrets.assert_absent(_log_text(caplog), "log output")


# ---------------------------------------------------------------------- the Secret type


def test_secret_masks_itself_and_refuses_pickling() -> None:
    secret = Secret(API_KEY)
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>40}"):
        assert API_KEY not in text
    assert secret.reveal() == API_KEY
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(secret, protocol=protocol)


def test_settings_holding_secrets_refuse_pickling(carol_settings: Callable[..., Settings]) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(carol_settings())


def test_settings_reprs_hide_secrets(
    carol_settings: Callable[..., Settings], secrets: Secrets
) -> None:
    for mode in ("embedded", "api-key"):
        settings = carol_settings(token_provider=mode)
        secrets.assert_absent(repr(settings), "repr(settings)")
        secrets.assert_absent(str(settings), "str(settings)")
        with SecureDeepSeek(settings=settings) as client:
            secrets.assert_absent(repr(client.settings), "repr(client.settings)")
            secrets.assert_absent(repr(client.guard), "repr(client.guard)")
            secrets.assert_absent(repr(client.guard.token_provider.token()), "repr(token)")


# ---------------------------------------------------------------------- bad input


def test_config_errors_do_not_echo_secrets(
    sb: Sandbox,
    carol_settings: Callable[..., Settings],
    encrypted_key_files: tuple[Path, Path],
    tmp_path: Path,
    secrets: Secrets,
) -> None:
    cert, _ = encrypted_key_files
    plain_cert, plain_key = write_pair(tmp_path / "plain", "plain", *sb.ca.issue_client_cert("p"))
    bad: list[Callable[[], object]] = [
        lambda: carol_settings(client_key_password=Secret(WRONG_PASSPHRASE)),
        lambda: carol_settings(client_key_password=None),
        lambda: carol_settings(
            client_cert=plain_cert, client_key=plain_key, client_key_password=Secret(PASSPHRASE)
        ),
        lambda: carol_settings(token_provider="api-key", endpoint="ftp://api.deepseek.com"),
        lambda: carol_settings(token_provider="api-key", temperature=7.0),
        lambda: carol_settings(endpoint=f"https://user:{API_KEY}@api.deepseek.com"),
        lambda: carol_settings(endpoint=f"https://api.deepseek.com/?key={API_KEY}"),
        lambda: Settings.from_env(
            {
                "DEEPSEEK_API_KEY": API_KEY,
                "SECURE_DS_TOKEN_PROVIDER": "api-key",
                "SECURE_DS_CLIENT_KEY_PASSWORD": PASSPHRASE,
                "SECURE_DS_MAX_ATTEMPTS": "lots",
            }
        ),
        lambda: Settings.from_env(
            {
                "DEEPSEEK_API_KEY": API_KEY,
                "SECURE_DS_TOKEN_PROVIDER": "api-key",
                "SECURE_DS_CLIENT_CERT": str(cert),
                "SECURE_DS_CLIENT_KEY": str(encrypted_key_files[1]),
                "SECURE_DS_CLIENT_KEY_PASSWORD": WRONG_PASSPHRASE,
            }
        ),
        lambda: SecureDeepSeek(settings=carol_settings(), base_url="ftp://api.deepseek.com"),
    ]
    for index, make in enumerate(bad):
        with pytest.raises(ConfigError) as caught:
            make()
        secrets.assert_absent(_exception_texts(caught.value), f"ConfigError #{index}")


def test_malformed_endpoint_with_credentials_is_not_echoed(secrets: Secrets) -> None:
    for endpoint in (
        f"htps://user:{API_KEY}@api.deepseek.com",
        f"https://:{API_KEY}@",
        f"ftp://api.deepseek.com/?key={API_KEY}",
    ):
        with pytest.raises(ConfigError) as caught:
            Settings(endpoint=endpoint, token_provider="api-key", api_key=Secret("x"))
        secrets.assert_absent(_exception_texts(caught.value), "ConfigError (endpoint)")


# ---------------------------------------------------------------------- calls


def test_no_leaks_in_embedded_mode_calls(
    sb: Sandbox,
    carol_settings: Callable[..., Settings],
    secrets: Secrets,
    debug_logs: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    settings = carol_settings()
    errors: list[BaseException] = []
    with SecureDeepSeek(settings=settings) as client:
        _record_tokens(client, secrets)
        model = client.default_model

        assert client.chat.completions.create(model=model, messages=MESSAGES).choices  # type: ignore[arg-type]
        assert (
            sum(
                1
                for _ in client.chat.completions.create(
                    model=model,
                    messages=MESSAGES,
                    stream=True,  # type: ignore[arg-type]
                )
            )
            > 1
        )
        assert client.user_balance().is_available

        sb.fail_next(401, times=2)  # refreshed once, so two JWTs are sent
        with pytest.raises(AuthenticationFailed) as auth:
            client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
        errors.append(auth.value)

        sb.fail_next(503, times=2)  # max_attempts=2
        with pytest.raises(ServiceOverloaded) as overloaded:
            client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
        errors.append(overloaded.value)

        sb.drop_next_stream(1)
        with pytest.raises(StreamInterrupted) as cut:
            for _ in client.chat.completions.create(
                model=model,
                messages=MESSAGES,
                stream=True,  # type: ignore[arg-type]
            ):
                pass
        errors.append(cut.value)

        sb.fail_next(400)
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
        errors.append(bad.value)

    assert len(set(secrets.tokens)) >= 2  # the 401 refresh minted a second token
    # the capture saw what went out: the last token the sandbox verified is among them
    claims = sb.stats.last_claims
    assert claims is not None
    assert claims["sub"] == "carol"
    captured = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in secrets.tokens}
    assert claims["jti"] in captured

    # TLS failures with the same secrets configured
    foreign = LocalCA.create("foreign")
    bundle = tmp_path / "foreign-ca.pem"
    bundle.write_bytes(foreign.cert_pem)
    wrong_pin = spki_pin_of(der_of(foreign.issue_server_cert(["127.0.0.1"])[0]))
    for overrides, expected in (
        ({"ca_bundle": bundle}, TLSFailed),
        ({"spki_pin": wrong_pin}, PinMismatch),
    ):
        with SecureDeepSeek(settings=carol_settings(**overrides)) as client:
            _record_tokens(client, secrets)
            with pytest.raises(expected) as tls:
                client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
            errors.append(tls.value)

    for exc in errors:
        secrets.assert_absent(_exception_texts(exc), f"{type(exc).__name__} text")
    audit = settings.audit_path.read_text()
    assert _records(audit) == 9
    secrets.assert_absent(audit, "the audit log")
    _assert_logs_clean(debug_logs, secrets)


def test_no_leaks_in_api_key_mode_calls(
    sb: Sandbox,
    carol_settings: Callable[..., Settings],
    secrets: Secrets,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    settings = carol_settings(token_provider="api-key")
    before = sb.stats.auth_failures
    with SecureDeepSeek(settings=settings) as client:
        # the sandbox only accepts JWTs: the API key earns a 401
        with pytest.raises(AuthenticationFailed) as caught:
            client.chat.completions.create(model=client.default_model, messages=MESSAGES)  # type: ignore[arg-type]
        with pytest.raises(AuthenticationFailed) as caught_balance:
            client.user_balance()
    assert sb.stats.auth_failures > before  # the key really went out as the bearer token
    for exc in (caught.value, caught_balance.value):
        secrets.assert_absent(_exception_texts(exc), "AuthenticationFailed text")
    audit = settings.audit_path.read_text()
    assert _records(audit) == 2
    assert '"auth":"api_key"' in audit
    secrets.assert_absent(audit, "the audit log")
    _assert_logs_clean(debug_logs, secrets)


async def test_no_leaks_in_async_calls(
    sb: Sandbox,
    carol_settings: Callable[..., Settings],
    secrets: Secrets,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    settings = carol_settings()
    errors: list[BaseException] = []
    async with AsyncSecureDeepSeek(settings=settings) as client:
        _record_tokens(client, secrets)
        model = client.default_model
        reply = await client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
        assert reply.choices
        sb.fail_next(401, times=2)
        with pytest.raises(AuthenticationFailed) as auth:
            await client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
        errors.append(auth.value)
    async with AsyncSecureDeepSeek(settings=carol_settings(token_provider="api-key")) as client:
        with pytest.raises(AuthenticationFailed) as api_key_auth:
            await client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
        errors.append(api_key_auth.value)
    for exc in errors:
        secrets.assert_absent(_exception_texts(exc), f"{type(exc).__name__} text")
    audit = settings.audit_path.read_text()
    assert _records(audit) == 3
    secrets.assert_absent(audit, "the audit log")
    _assert_logs_clean(debug_logs, secrets)


def _records(audit: str) -> int:
    """Call records in a log's text (checkpoint lines are the log's own)."""
    return sum(1 for line in audit.splitlines() if line and not is_checkpoint_line(line))
