"""The client's mTLS handshake and certificate rotation against nginx, an independent peer.

nginx verifies the client certificate (``ssl_verify_client on``) and says which one it
saw: ``X-Client-Fingerprint`` is the SHA-1 of the certificate it verified.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from secure_ds import AsyncSecureDeepSeek, SecureDeepSeek, Settings
from secure_ds._secret import Secret
from secure_ds.errors import BadRequest
from secure_ds.sandbox import LocalCA
from secure_ds.sandbox.pki import generate_issuer_key, private_key_pem
from tests._services import require_nginx
from tests.identity._nginx import NginxPeer, Upstream
from tests.identity._rotation_support import Pair, PairFiles, issue

pytestmark = pytest.mark.integration

MESSAGES: list[Any] = [{"role": "user", "content": "hello nginx"}]


@pytest.fixture(scope="module")
def ca() -> LocalCA:
    return LocalCA.create("nginx peer test CA")


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def peer(tmp_path: Path, ca: LocalCA, upstream: Upstream) -> Iterator[NginxPeer]:
    nginx = NginxPeer(require_nginx(), tmp_path / "nginx", ca, upstream)
    yield nginx
    nginx.stop()


@pytest.fixture
def first(ca: LocalCA) -> Pair:
    return issue(ca, "rotor")


@pytest.fixture
def second(ca: LocalCA) -> Pair:
    return issue(ca, "rotor")


@pytest.fixture
def files(tmp_path: Path, first: Pair) -> PairFiles:
    return PairFiles(tmp_path / "certs", first)


def settings_for(peer: NginxPeer, files: PairFiles, tmp_path: Path, **overrides: Any) -> Settings:
    issuer_key = tmp_path / "issuer-key.pem"
    if not issuer_key.exists():
        issuer_key.write_bytes(private_key_pem(generate_issuer_key()))
    values: dict[str, Any] = {
        "endpoint": peer.base_url,
        "client_cert": files.cert,
        "client_key": files.key,
        "ca_bundle": peer.ca_path,
        "issuer_key": issuer_key,
        "subject": "rotor",
        "audit_path": tmp_path / "audit.jsonl",
        "cert_check_interval": 0.0,
        "backoff_factor": 0.001,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(peer: NginxPeer, files: PairFiles, tmp_path: Path) -> Settings:
    return settings_for(peer, files, tmp_path)


def fingerprint(client: SecureDeepSeek) -> str:
    """Which certificate nginx verified on the connection of a new call."""
    raw = client.models.with_raw_response.list()
    assert raw.headers["x-client-verify"] == "SUCCESS"
    return raw.headers["x-client-fingerprint"]


def test_nginx_verifies_the_client_certificate(settings: Settings, first: Pair) -> None:
    with SecureDeepSeek(settings=settings) as client:
        raw = client.models.with_raw_response.list()
        assert raw.headers["x-client-verify"] == "SUCCESS"
        assert raw.headers["x-client-fingerprint"] == first.sha1
        assert "CN=rotor" in raw.headers["x-client-subject"]
        assert raw.headers["x-tls-protocol"] == "TLSv1.3"
        assert [m.id for m in raw.parse().data] == ["deepseek-chat"]


def test_nginx_refuses_a_client_without_a_certificate(peer: NginxPeer, tmp_path: Path) -> None:
    settings = Settings(
        endpoint=peer.base_url,
        ca_bundle=peer.ca_path,
        token_provider="api-key",
        api_key=Secret("sk-not-a-real-key"),
        audit_path=tmp_path / "audit.jsonl",
        max_attempts=1,
    )
    with SecureDeepSeek(settings=settings) as client, pytest.raises(BadRequest):
        client.models.list()  # nginx answers 400 "No required SSL certificate was sent"


def test_nginx_refuses_a_certificate_from_another_ca(peer: NginxPeer, tmp_path: Path) -> None:
    foreign = issue(LocalCA.create("not trusted by nginx"), "mallory")
    files = PairFiles(tmp_path / "foreign", foreign)
    settings = settings_for(peer, files, tmp_path, max_attempts=1)
    with SecureDeepSeek(settings=settings) as client, pytest.raises(BadRequest):
        client.models.list()  # nginx answers 400 "The SSL certificate error"


def test_rotation_while_a_stream_is_in_flight_through_nginx(
    settings: Settings, files: PairFiles, first: Pair, second: Pair, upstream: Upstream
) -> None:
    with SecureDeepSeek(settings=settings) as client:
        stream = client.chat.completions.create(
            model="deepseek-chat", messages=MESSAGES, stream=True
        )
        chunks = iter(stream)
        assert next(chunks).choices[0].delta.content == "rotated "
        # the upstream now holds the rest until the gate opens: the stream is in flight
        files.rename(second)
        assert fingerprint(client) == second.sha1  # a new connection, the new pair
        transport = client._client._transport._inner  # type: ignore[attr-defined]
        assert transport.draining == 1
        upstream.gate.set()
        rest = [c.choices[0].delta.content for c in chunks if c.choices]
        assert "safely" in rest  # completed, not cut, on the old connection
        stream.close()
        assert transport.draining == 0
        assert upstream.fingerprints == [first.sha1]  # nginx saw the old pair for the stream
        assert fingerprint(client) == second.sha1


def test_rotation_in_place_against_nginx(
    settings: Settings, files: PairFiles, first: Pair, second: Pair
) -> None:
    with SecureDeepSeek(settings=settings) as client:
        assert fingerprint(client) == first.sha1
        files.rewrite(second)
        assert fingerprint(client) == second.sha1


async def test_async_rotation_against_nginx(
    settings: Settings, files: PairFiles, first: Pair, second: Pair
) -> None:
    async with AsyncSecureDeepSeek(settings=settings) as client:
        raw = await client.models.with_raw_response.list()
        assert raw.headers["x-client-fingerprint"] == first.sha1
        files.rename(second)
        raw = await client.models.with_raw_response.list()
        assert raw.headers["x-client-fingerprint"] == second.sha1


def test_mismatched_key_is_rejected_against_nginx(
    settings: Settings, files: PairFiles, first: Pair, second: Pair
) -> None:
    with SecureDeepSeek(settings=settings) as client:
        files.rename_cert(second)  # the key is not there yet
        assert fingerprint(client) == first.sha1
        assert client.certificate is not None
        assert str(files.cert) in str(client.certificate.last_error)
        assert str(files.key) in str(client.certificate.last_error)
        files.rename_key(second)
        assert fingerprint(client) == second.sha1


def test_expired_rotation_is_rejected_against_nginx(
    settings: Settings, files: PairFiles, first: Pair, ca: LocalCA
) -> None:
    now = datetime.now(UTC)
    expired = issue(ca, "rotor", not_before=now - timedelta(days=3), not_after=now - timedelta(1))
    with SecureDeepSeek(settings=settings) as client:
        assert fingerprint(client) == first.sha1
        files.rename(expired)
        assert fingerprint(client) == first.sha1
        assert "expired" in str(client.certificate.last_error if client.certificate else "")
