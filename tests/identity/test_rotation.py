"""Client certificate rotation against the in-process sandbox (real mTLS, real tokens).

The sandbox refuses a token whose ``cnf.x5t#S256`` is not the thumbprint of the
certificate presented on the connection, so ``sb.stats.last_claims["cnf"]`` after a
successful call is the certificate the server saw.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from secure_ds import AsyncSecureDeepSeek, SecureDeepSeek, Settings
from secure_ds._secret import Secret
from secure_ds.errors import CertificateRotationError
from secure_ds.identity import RotatingIdentity, Token, TokenProvider
from secure_ds.sandbox import Sandbox
from tests.conftest import read_audit
from tests.identity._rotation_support import Pair, PairFiles, issue

pytestmark = pytest.mark.integration

MESSAGES: list[Any] = [{"role": "user", "content": "hello rotation"}]


@pytest.fixture
def first(sb: Sandbox) -> Pair:
    return issue(sb.ca, "rotor")


@pytest.fixture
def second(sb: Sandbox) -> Pair:
    return issue(sb.ca, "rotor")


@pytest.fixture
def files(tmp_path: Path, first: Pair) -> PairFiles:
    return PairFiles(tmp_path / "certs", first)


@pytest.fixture
def settings(sb: Sandbox, files: PairFiles, tmp_path: Path) -> Settings:
    return sb.client_settings(
        "rotor",
        client_cert=files.cert,
        client_key=files.key,
        cert_check_interval=0.0,  # look before every call: the tests rotate between calls
        audit_path=tmp_path / "audit.jsonl",
        backoff_factor=0.001,
    )


def seen_by_server(sb: Sandbox) -> str:
    claims = sb.stats.last_claims
    assert claims is not None
    return str(claims["cnf"]["x5t#S256"])


def chat(client: SecureDeepSeek) -> None:
    client.chat.completions.create(model=client.default_model, messages=MESSAGES)


def inner_transport(client: SecureDeepSeek | AsyncSecureDeepSeek) -> Any:
    return client._client._transport._inner  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- rename and in place


@pytest.mark.parametrize("style", ["rename", "rewrite"])
def test_rotated_files_are_used_by_the_next_call(
    sb: Sandbox,
    settings: Settings,
    files: PairFiles,
    first: Pair,
    second: Pair,
    style: str,
    tmp_path: Path,
) -> None:
    with SecureDeepSeek(settings=settings) as client:
        chat(client)
        assert seen_by_server(sb) == first.thumbprint
        failures = sb.stats.auth_failures
        getattr(files, style)(second)
        chat(client)
        # the server saw the new certificate and a token bound to it, at the first try
        assert seen_by_server(sb) == second.thumbprint
        assert sb.stats.auth_failures == failures
        last = sb.last_request
        assert last is not None
        # RFC 9421: signed with the new key, keyid naming the new certificate
        assert f'keyid="{second.thumbprint}"' in last["headers"]["signature-input"]
        assert client.certificate is not None
        assert client.certificate.current().generation == 1
        assert client.certificate.current().thumbprint == second.thumbprint
    actors = [r["actor"] for r in read_audit(tmp_path / "audit.jsonl")]
    assert [a["cert_sha256"] for a in actors] == [first.thumbprint, second.thumbprint]
    assert all(a["certificate_bound"] for a in actors)


async def test_async_client_follows_rotation(
    sb: Sandbox, settings: Settings, files: PairFiles, first: Pair, second: Pair
) -> None:
    async with AsyncSecureDeepSeek(settings=settings) as client:
        await client.chat.completions.create(model=client.default_model, messages=MESSAGES)
        assert seen_by_server(sb) == first.thumbprint
        files.rename(second)
        await client.chat.completions.create(model=client.default_model, messages=MESSAGES)
        assert seen_by_server(sb) == second.thumbprint


def test_token_is_reissued_bound_to_the_new_certificate(
    sb: Sandbox, settings: Settings, files: PairFiles, first: Pair, second: Pair
) -> None:
    with SecureDeepSeek(settings=settings) as client:
        chat(client)
        old = client.guard.token_provider.token()
        assert old.bound_thumbprint == first.thumbprint
        files.rename(second)
        chat(client)
        new = client.guard.token_provider.token()
        assert new is not old
        assert new.bound_thumbprint == second.thumbprint
        assert client.guard.cert_thumbprint == second.thumbprint


class _BoundProvider(TokenProvider):
    """A provider whose tokens are bound elsewhere (as Keycloak's are): the default
    rotation hook must drop a token bound to another certificate, keep an unbound one."""

    def __init__(self, bound: str | None) -> None:
        super().__init__()
        self.bound = bound
        self.fetches = 0

    def _fetch(self) -> Token:
        self.fetches += 1
        return Token(value=Secret(f"t{self.fetches}"), kind="jwt", bound_thumbprint=self.bound)


def test_default_rotation_hook_drops_only_tokens_bound_to_another_certificate(
    first: Pair, second: Pair
) -> None:
    bound = _BoundProvider(first.thumbprint)
    token = bound.token()
    bound.on_certificate_rotated(first.der)  # same certificate: nothing to do
    assert bound.token() is token
    bound.on_certificate_rotated(second.der)
    assert bound.token() is not token
    unbound = _BoundProvider(None)
    token = unbound.token()
    unbound.on_certificate_rotated(second.der)
    assert unbound.token() is token


# ---------------------------------------------------------------------- in-flight calls


def test_stream_in_flight_completes_on_the_old_certificate(
    sb: Sandbox, settings: Settings, files: PairFiles, first: Pair, second: Pair
) -> None:
    with SecureDeepSeek(settings=settings) as client:
        stream = client.chat.completions.create(
            model=client.default_model, messages=MESSAGES, stream=True
        )
        chunks = iter(stream)
        next(chunks)  # the stream is open on a connection that presented the first pair
        assert seen_by_server(sb) == first.thumbprint
        files.rename(second)
        chat(client)  # a new connection, the new pair
        assert seen_by_server(sb) == second.thumbprint
        transport = inner_transport(client)
        assert transport.generation == 1
        assert transport.draining == 1  # the old pool stays open for the stream
        rest = list(chunks)  # the stream completes ([DONE] seen, or it would raise)
        assert rest
        stream.close()
        assert transport.draining == 0  # closed once its last response was


async def test_async_stream_in_flight_completes(
    sb: Sandbox, settings: Settings, files: PairFiles, first: Pair, second: Pair
) -> None:
    async with AsyncSecureDeepSeek(settings=settings) as client:
        stream = await client.chat.completions.create(
            model=client.default_model, messages=MESSAGES, stream=True
        )
        chunks = stream.__aiter__()
        await chunks.__anext__()
        files.rewrite(second)
        await client.chat.completions.create(model=client.default_model, messages=MESSAGES)
        assert seen_by_server(sb) == second.thumbprint
        transport = inner_transport(client)
        assert transport.draining == 1
        rest = [chunk async for chunk in chunks]
        assert rest
        await stream.close()
        assert transport.draining == 0


# ---------------------------------------------------------------------- bad new pairs


def test_certificate_without_its_key_is_rejected_until_the_key_arrives(
    sb: Sandbox,
    settings: Settings,
    files: PairFiles,
    first: Pair,
    second: Pair,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with SecureDeepSeek(settings=settings) as client:
        chat(client)
        with caplog.at_level(logging.ERROR, logger="secure_ds.identity.rotation"):
            files.rename_cert(second)  # the key lands later
            chat(client)  # still works, on the old pair
        assert seen_by_server(sb) == first.thumbprint
        identity = client.certificate
        assert identity is not None
        error = identity.last_error
        assert isinstance(error, CertificateRotationError)
        assert str(files.cert) in str(error)
        assert str(files.key) in str(error)
        assert "does not belong" in str(error)
        assert error.cert_path == files.cert
        assert error.key_path == files.key
        assert any(str(files.key) in r.getMessage() for r in caplog.records)
        files.rename_key(second)
        chat(client)
        assert seen_by_server(sb) == second.thumbprint
        assert identity.last_error is None


def test_expired_new_certificate_is_rejected(
    sb: Sandbox, settings: Settings, files: PairFiles, first: Pair
) -> None:
    now = datetime.now(UTC)
    expired = issue(
        sb.ca, "rotor", not_before=now - timedelta(days=2), not_after=now - timedelta(days=1)
    )
    with SecureDeepSeek(settings=settings) as client:
        files.rename(expired)
        chat(client)
        assert seen_by_server(sb) == first.thumbprint
        identity = client.certificate
        assert identity is not None
        assert identity.current().generation == 0
        assert "expired" in str(identity.last_error)
        with pytest.raises(CertificateRotationError, match="expired"):
            identity.reload()


def test_not_yet_valid_new_certificate_is_rejected(
    sb: Sandbox, settings: Settings, files: PairFiles
) -> None:
    now = datetime.now(UTC)
    future = issue(sb.ca, "rotor", not_before=now + timedelta(days=1))
    identity = RotatingIdentity(settings)
    files.rename(future)
    with pytest.raises(CertificateRotationError, match="not valid until"):
        identity.reload()
    assert identity.current().generation == 0


def test_half_written_certificate_is_rejected(
    settings: Settings, files: PairFiles, second: Pair
) -> None:
    identity = RotatingIdentity(settings)
    files.cert.write_bytes(second.cert_pem[: len(second.cert_pem) // 2])
    assert identity.check() is False
    assert "holds no PEM certificate" in str(identity.last_error)
    files.rename(second)
    assert identity.check() is True
    assert identity.current().thumbprint == second.thumbprint


def test_missing_file_mid_rotation_is_rejected(settings: Settings, files: PairFiles) -> None:
    identity = RotatingIdentity(settings)
    files.key.unlink()
    assert identity.check() is False
    assert "cannot be read" in str(identity.last_error)
    assert str(files.key) in str(identity.last_error)


def test_checks_are_paced_by_the_interval(
    settings: Settings, files: PairFiles, second: Pair
) -> None:
    clock = [100.0]
    identity = RotatingIdentity(settings, check_interval=1.0, clock=lambda: clock[0])
    files.rename(second)
    assert identity.check() is False  # not yet time to look
    clock[0] += 1.0
    assert identity.check() is True
    assert identity.current().thumbprint == second.thumbprint


def test_touched_but_unchanged_files_are_not_a_rotation(
    settings: Settings, files: PairFiles, first: Pair
) -> None:
    identity = RotatingIdentity(settings)
    seen: list[object] = []
    identity.subscribe(seen.append)
    files.rename(first)  # same content, new inode
    assert identity.check() is False
    assert seen == []
    assert identity.current().generation == 0


def test_repr_of_a_pair_shows_no_key(settings: Settings) -> None:
    text = repr(RotatingIdentity(settings).current())
    assert "PRIVATE" not in text
    assert "private_key" not in text


def test_kubernetes_style_symlink_swap_is_a_rotation(
    sb: Sandbox, tmp_path: Path, first: Pair, second: Pair
) -> None:
    """A Secret volume: tls.crt -> ..data/tls.crt, and ..data (a symlink to a timestamped
    directory) is replaced by one rename, so both files change at the same instant."""
    volume = tmp_path / "volume"
    volume.mkdir()
    for name, pair in (("..2026_01", first), ("..2026_02", second)):
        (volume / name).mkdir()
        (volume / name / "tls.crt").write_bytes(pair.cert_pem)
        (volume / name / "tls.key").write_bytes(pair.key_pem)
    (volume / "..data").symlink_to("..2026_01")
    for name in ("tls.crt", "tls.key"):
        (volume / name).symlink_to(f"..data/{name}")
    settings = sb.client_settings(
        "rotor",
        client_cert=volume / "tls.crt",
        client_key=volume / "tls.key",
        cert_check_interval=0.0,
        audit_path=tmp_path / "audit.jsonl",
    )
    with SecureDeepSeek(settings=settings) as client:
        chat(client)
        assert seen_by_server(sb) == first.thumbprint
        (volume / "..data_tmp").symlink_to("..2026_02")
        (volume / "..data_tmp").replace(volume / "..data")
        chat(client)
        assert seen_by_server(sb) == second.thumbprint
