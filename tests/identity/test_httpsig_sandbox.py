"""RFC 9421 signatures end to end: the secure client signs every attempt, the sandbox
verifies them over the wire (key = the presented certificate's), and refuses replays,
altered bodies, expired signatures, other keys and missing components with a 401 that
names the check."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from secure_ds import AuthenticationFailed, ConfigError, SecureDeepSeek
from secure_ds.identity import RequestSigner, SigningAuth
from secure_ds.sandbox import Sandbox
from secure_ds.sandbox.pki import x5t_s256
from tests._jwt import sign_token, token_claims

pytestmark = pytest.mark.integration

CHAT = "/chat/completions"
BODY = b'{"model":"deepseek-flash","messages":[{"role":"user","content":"hello"}]}'
MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


class Alice:
    """alice's certificate, key, a token bound to it, and raw requests over her mTLS."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        settings = sb.client_settings("alice")
        assert settings.client_cert is not None
        assert settings.client_key is not None
        self.cert, self.key = settings.client_cert, settings.client_key
        self.context = ssl.create_default_context(cafile=str(sb.ca_path))
        self.context.load_cert_chain(self.cert, self.key)
        der = x509.load_pem_x509_certificate(self.cert.read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
        self.thumbprint = x5t_s256(der)
        self.token = sign_token(sb, token_claims(sb, self.thumbprint))
        self.signer = RequestSigner.from_files(self.cert, self.key)

    def request(self, body: bytes = BODY) -> httpx2.Request:
        return httpx2.Request(
            "POST",
            f"{self.sb.base_url}{CHAT}",
            content=body,
            headers={"authorization": f"Bearer {self.token}", "content-type": "application/json"},
        )

    def send(self, request: httpx2.Request) -> httpx2.Response:
        with httpx2.Client(verify=self.context, trust_env=False) as client:
            return client.send(request)


@pytest.fixture
def alice(sb: Sandbox) -> Alice:
    return Alice(sb)


def _refused(alice: Alice, request: httpx2.Request) -> str:
    before = alice.sb.stats
    response = alice.send(request)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'HttpSignature error="invalid_signature"'
    assert "secure-ds" in response.headers["accept-signature"]
    after = alice.sb.stats
    assert after.auth_failures == before.auth_failures + 1
    assert after.requests == before.requests  # never reached a handler
    return str(response.json()["error"]["message"])


def test_signed_raw_request_is_served(alice: Alice) -> None:
    request = alice.request()
    alice.signer.sign(request, BODY)
    before = alice.sb.stats.signed_requests
    assert alice.send(request).status_code == 200
    assert alice.sb.stats.signed_requests == before + 1


def test_replayed_signed_request_is_refused(alice: Alice) -> None:
    request = alice.request()
    alice.signer.sign(request, BODY)
    assert alice.send(request).status_code == 200
    assert _refused(alice, request) == "signature replayed"  # the same bytes, again


def test_body_altered_after_signing_is_refused(alice: Alice) -> None:
    signed = alice.request()
    alice.signer.sign(signed, BODY)
    altered = BODY.replace(b"hello", b"HELLO")
    tampered = httpx2.Request(
        "POST",
        signed.url,
        content=altered,
        headers=[(k, v) for k, v in signed.headers.multi_items() if k != "content-length"],
    )
    assert _refused(alice, tampered) == "content-digest mismatch"


def test_expired_signature_is_refused(alice: Alice) -> None:
    request = alice.request()
    alice.signer.sign(request, BODY, now=time.time() - 300)
    assert _refused(alice, request) == "signature expired"


def test_signature_by_another_key_is_refused(alice: Alice) -> None:
    """Another key, even claiming alice's certificate thumbprint as keyid."""
    impostor = RequestSigner(ec.generate_private_key(ec.SECP256R1()), keyid=alice.thumbprint)
    request = alice.request()
    impostor.sign(request, BODY)
    assert _refused(alice, request) == "signature invalid"


def test_signature_naming_another_certificate_is_refused(alice: Alice, sb: Sandbox) -> None:
    bob = sb.client_settings("bob")
    assert bob.client_cert is not None
    assert bob.client_key is not None
    request = alice.request()
    RequestSigner.from_files(bob.client_cert, bob.client_key).sign(request, BODY)
    message = _refused(alice, request)  # bob's signature, alice's connection
    assert message == "signature keyid is not the presented client certificate"


def test_missing_covered_component_is_refused(alice: Alice) -> None:
    request = alice.request()
    del request.headers["authorization"]
    alice.signer.sign(request, BODY)  # signed without the authorization header...
    request.headers["authorization"] = f"Bearer {alice.token}"  # ...which is added after
    assert _refused(alice, request) == "signature does not cover authorization"


def test_unsigned_request_is_refused_by_default(alice: Alice) -> None:
    message = _refused(alice, alice.request())
    assert message == "request not signed (no Signature-Input/Signature)"


def test_token_is_checked_before_the_signature(alice: Alice) -> None:
    request = alice.request()
    request.headers["authorization"] = "Bearer not.a.token"
    alice.signer.sign(request, BODY)
    response = alice.send(request)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.fixture(scope="module")
def lenient() -> Iterator[Sandbox]:
    with Sandbox(require_signatures=False) as sandbox:
        yield sandbox


def test_optional_signatures_pass_unsigned_but_still_check_signed(lenient: Sandbox) -> None:
    alice = Alice(lenient)
    assert alice.send(alice.request()).status_code == 200  # unsigned: allowed here
    request = alice.request()
    alice.signer.sign(request, BODY, now=time.time() - 300)
    assert _refused(alice, request) == "signature expired"  # present, so checked


def test_signing_auth_for_plain_httpx2_clients(alice: Alice) -> None:
    with httpx2.Client(
        base_url=alice.sb.base_url,
        verify=alice.context,
        headers={"authorization": f"Bearer {alice.token}"},
        auth=SigningAuth(alice.signer),
        trust_env=False,
    ) as client:
        for _ in range(3):
            assert client.get("/models").status_code == 200
            assert client.post(CHAT, content=BODY).status_code == 200


# ---------------------------------------------------------------------- the secure client


def test_secure_client_signs_every_call(sb: Sandbox) -> None:
    before = sb.stats.signed_requests
    with SecureDeepSeek(settings=sb.client_settings("alice")) as client:
        for _ in range(3):
            client.chat.completions.create(model=client.default_model, messages=MESSAGES)
    assert sb.stats.signed_requests == before + 3
    headers = sb.last_request["headers"]  # type: ignore[index]
    assert headers["signature-input"].startswith('secure-ds=("@method" "@authority" "@path"')
    assert headers["content-digest"].startswith("sha-256=:")


def test_every_retry_attempt_is_signed_afresh(sb: Sandbox) -> None:
    """Each attempt carries a new nonce: a reused one would be refused as a replay."""
    sb.fail_next(503, times=2)
    before = sb.stats.signed_requests
    with SecureDeepSeek(settings=sb.client_settings("alice", backoff_factor=0.0)) as client:
        client.chat.completions.create(model=client.default_model, messages=MESSAGES)
    assert sb.stats.signed_requests == before + 3


def test_signature_covers_a_rewritten_body(sb: Sandbox) -> None:
    """DLP redaction rewrites the body; the signature is made over the bytes sent."""
    settings = sb.client_settings("alice", dlp_redact=("email",))
    with SecureDeepSeek(settings=settings) as client:
        client.chat.completions.create(
            model=client.default_model,
            messages=[{"role": "user", "content": "mail ann@example.com please"}],
        )
    sent = sb.last_request["json"]  # type: ignore[index]
    assert "ann@example.com" not in str(sent)


def test_signing_off_is_refused_by_a_sandbox_that_requires_it(sb: Sandbox) -> None:
    settings = sb.client_settings("alice", request_signing="off")
    with SecureDeepSeek(settings=settings) as client, pytest.raises(AuthenticationFailed) as err:
        client.chat.completions.create(model=client.default_model, messages=MESSAGES)
    assert "request not signed" in str(err.value)


def test_signing_on_without_a_client_certificate_is_a_config_error(tmp_path: Path) -> None:
    from secure_ds import Secret, Settings

    with pytest.raises(ConfigError) as caught:
        Settings(
            token_provider="api-key",
            api_key=Secret("sk-test"),
            request_signing="on",
            audit_path=tmp_path / "a.jsonl",
        )
    assert caught.value.variable == "SECURE_DS_REQUEST_SIGNING"
    with pytest.raises(ConfigError, match="SECURE_DS_REQUEST_SIGNING"):
        Settings.from_env({"SECURE_DS_REQUEST_SIGNING": "maybe"})


def test_unchecked_signatures_are_for_benchmarks_only() -> None:
    """bench_client's set-up: the server does the same work for a signing and a
    non-signing client; it cannot be combined with required signatures."""
    with pytest.raises(ValueError, match="require_signatures needs check_signatures"):
        Sandbox(check_signatures=False)
    with Sandbox(require_signatures=False, check_signatures=False) as sandbox:
        alice = Alice(sandbox)
        request = alice.request()
        alice.signer.sign(request, BODY, now=time.time() - 300)
        assert alice.send(request).status_code == 200  # not looked at
        assert sandbox.stats.signed_requests == 0
