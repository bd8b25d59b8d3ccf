"""KeycloakTokenProvider when Keycloak is down or hangs, and its settings: no Keycloak
needed (a closed port, a socket that accepts and never answers, config validation)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from secure_ds import Secret
from secure_ds.config import Settings
from secure_ds.errors import ConfigError, IdentityError, TokenRequestError
from secure_ds.identity import KeycloakTokenProvider, token_provider_from_settings

pytest.importorskip("keycloak")  # python-keycloak: the optional extra (in dev)

SECRET = "fault-test-secret-0123456789"


def provider(url: str, **kwargs: Any) -> KeycloakTokenProvider:
    values: dict[str, Any] = {
        "server_url": url,
        "realm": "secure-ds",
        "client_id": "secure-ds-app",
        "client_secret": Secret(SECRET),
        "audience": "deepseek-gateway",
    }
    values.update(kwargs)
    return KeycloakTokenProvider(**values)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A listening socket that never accepts: the kernel completes the TCP handshake
    (backlog), the request is written, and no answer ever comes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def closed_port() -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}"


def finishes(call: Any, limit: float = 60.0) -> BaseException | None:
    """Run ``call`` in a thread; fail if it is still running after ``limit`` seconds
    (a hang detector, far above the timeouts under test: not a timing assertion)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(limit)
    assert not worker.is_alive(), f"the call still hangs after {limit} s"
    return outcome[0]


def test_keycloak_that_never_answers_times_out(silent_server: str) -> None:
    p = provider(silent_server, read_timeout=0.5)
    error = finishes(p.token)
    assert isinstance(error, TokenRequestError)
    message = str(error)
    assert p.token_url in message
    assert "did not answer within 0.5 s" in message
    assert "health" in message  # the fix
    assert error.status is None
    assert SECRET not in message


def test_exchange_against_a_hanging_keycloak_times_out(silent_server: str) -> None:
    p = provider(silent_server, read_timeout=0.5)
    error = finishes(lambda: p.exchange("a.b.c"))
    assert isinstance(error, TokenRequestError)
    assert "did not answer" in str(error)


def test_callers_waiting_on_a_failed_request_share_its_error(silent_server: str) -> None:
    """With Keycloak hanging, callers queued behind the one request get its error when
    it times out instead of each sending (and waiting out) a request of their own."""
    p = provider(silent_server, read_timeout=0.5)
    threads = 8
    barrier = threading.Barrier(threads)
    errors: list[BaseException | None] = []

    def call() -> None:
        barrier.wait()
        errors.append(finishes(p.token))

    workers = [threading.Thread(target=call) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert len(errors) == threads
    assert all(isinstance(e, TokenRequestError) for e in errors)
    assert p.requests_sent == 1
    # a later caller (not waiting on that request) tries again
    assert isinstance(finishes(p.token), TokenRequestError)
    assert p.requests_sent == 2


def test_keycloak_down_is_a_clear_error() -> None:
    url = closed_port()
    p = provider(url)
    error = finishes(p.token)
    assert isinstance(error, TokenRequestError)
    message = str(error)
    assert f"{url}/realms/secure-ds/protocol/openid-connect/token" in message
    assert "could not be reached" in message
    assert "SECURE_DS_KEYCLOAK_URL" in message
    assert SECRET not in message


def test_private_key_jwt_against_a_hanging_keycloak(silent_server: str, tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_bytes(pem(ec.generate_private_key(ec.SECP256R1())))
    p = provider(
        silent_server,
        client_auth="private_key_jwt",
        client_secret=None,
        assertion_key=key,
        read_timeout=0.5,
    )
    error = finishes(p.token)
    assert isinstance(error, TokenRequestError)


def test_secret_never_in_repr() -> None:
    p = provider("http://127.0.0.1:1")
    assert SECRET not in repr(p)
    assert SECRET not in str(vars(p))


def test_missing_inputs_for_each_method(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="SECURE_DS_KEYCLOAK_CLIENT_SECRET"):
        provider("http://127.0.0.1:1", client_secret=None)
    with pytest.raises(IdentityError, match="SECURE_DS_KEYCLOAK_CLIENT_ASSERTION_KEY"):
        provider("http://127.0.0.1:1", client_auth="private_key_jwt")
    with pytest.raises(IdentityError, match="SECURE_DS_CLIENT_CERT"):
        provider("http://127.0.0.1:1", client_auth="tls_client_auth")
    small = tmp_path / "small.pem"
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (refused)
    small.write_bytes(pem(weak))
    with pytest.raises(IdentityError, match="cannot sign the assertion"):
        provider("http://127.0.0.1:1", client_auth="private_key_jwt", assertion_key=small)


# ---------------------------------------------------------------------- settings


def pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


BASE_ENV = {
    "SECURE_DS_TOKEN_PROVIDER": "keycloak",
    "SECURE_DS_KEYCLOAK_URL": "http://127.0.0.1:18180",
    "SECURE_DS_KEYCLOAK_REALM": "secure-ds",
    "SECURE_DS_KEYCLOAK_CLIENT_ID": "secure-ds-app",
    "SECURE_DS_KEYCLOAK_CLIENT_SECRET": SECRET,
    "SECURE_DS_AUDIENCE": "deepseek-gateway",
    "SECURE_DS_KEYCLOAK_TIMEOUT": "4",
}


def test_settings_build_the_keycloak_provider(tmp_path: Path) -> None:
    settings = Settings.from_env(BASE_ENV, audit_path=tmp_path / "a.jsonl")
    assert SECRET not in repr(settings)
    p = token_provider_from_settings(settings)
    assert isinstance(p, KeycloakTokenProvider)
    assert p.client_auth == "client_secret"
    assert p.audience == "deepseek-gateway"
    assert p.timeout == (settings.connect_timeout, 4.0)
    assert p.token_url == "http://127.0.0.1:18180/realms/secure-ds/protocol/openid-connect/token"


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"SECURE_DS_KEYCLOAK_URL": ""}, "SECURE_DS_KEYCLOAK_URL"),
        ({"SECURE_DS_KEYCLOAK_URL": "http://sso.example.com"}, "SECURE_DS_KEYCLOAK_URL"),
        (
            {"SECURE_DS_KEYCLOAK_URL": "https://sso.example.com/realms/secure-ds"},
            "SECURE_DS_KEYCLOAK_URL",
        ),
        ({"SECURE_DS_KEYCLOAK_REALM": ""}, "SECURE_DS_KEYCLOAK_REALM"),
        ({"SECURE_DS_KEYCLOAK_REALM": "a/b"}, "SECURE_DS_KEYCLOAK_REALM"),
        ({"SECURE_DS_KEYCLOAK_CLIENT_ID": ""}, "SECURE_DS_KEYCLOAK_CLIENT_ID"),
        ({"SECURE_DS_KEYCLOAK_CLIENT_SECRET": ""}, "SECURE_DS_KEYCLOAK_CLIENT_SECRET"),
        ({"SECURE_DS_KEYCLOAK_CLIENT_AUTH": "basic"}, "SECURE_DS_KEYCLOAK_CLIENT_AUTH"),
        (
            {"SECURE_DS_KEYCLOAK_CLIENT_AUTH": "private_key_jwt"},
            "SECURE_DS_KEYCLOAK_CLIENT_ASSERTION_KEY",
        ),
        (
            {
                "SECURE_DS_KEYCLOAK_CLIENT_AUTH": "private_key_jwt",
                "SECURE_DS_KEYCLOAK_CLIENT_ASSERTION_KEY": "/nonexistent/key.pem",
            },
            "SECURE_DS_KEYCLOAK_CLIENT_ASSERTION_KEY",
        ),
        ({"SECURE_DS_KEYCLOAK_CLIENT_AUTH": "tls_client_auth"}, "SECURE_DS_CLIENT_CERT"),
        ({"SECURE_DS_KEYCLOAK_TIMEOUT": "0"}, "SECURE_DS_KEYCLOAK_TIMEOUT"),
        ({"SECURE_DS_KEYCLOAK_TIMEOUT": "soon"}, "SECURE_DS_KEYCLOAK_TIMEOUT"),
        ({"SECURE_DS_KEYCLOAK_CA_BUNDLE": "/nonexistent/ca.pem"}, "SECURE_DS_KEYCLOAK_CA_BUNDLE"),
    ],
)
def test_settings_errors_name_the_variable(
    change: dict[str, str], variable: str, tmp_path: Path
) -> None:
    env = {**BASE_ENV, **change}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env, audit_path=tmp_path / "a.jsonl")
    assert caught.value.variable == variable
    assert caught.value.hint  # says what to do
    assert SECRET not in str(caught.value)


def test_tls_client_auth_needs_an_https_keycloak(tmp_path: Path) -> None:
    from secure_ds.sandbox import Sandbox

    with Sandbox() as sb:
        settings = sb.client_settings()
        env = {**BASE_ENV, "SECURE_DS_KEYCLOAK_CLIENT_AUTH": "tls_client_auth"}
        with pytest.raises(ConfigError) as caught:
            Settings.from_env(
                env,
                audit_path=tmp_path / "a.jsonl",
                client_cert=settings.client_cert,
                client_key=settings.client_key,
            )
        assert caught.value.variable == "SECURE_DS_KEYCLOAK_URL"
        assert "https" in str(caught.value)
