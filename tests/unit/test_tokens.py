"""Token providers: claims, caching, refresh before expiry, one refresh under concurrency."""

from __future__ import annotations

import base64
import hashlib
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from secure_ds import Secret
from secure_ds.identity import ApiKeyProvider, EmbeddedIssuer, StaticTokenProvider, Token
from secure_ds.sandbox import LocalCA

CERT_PEM, _ = LocalCA.create("tokens CA").issue_client_cert("alice")


def _cert_der() -> bytes:
    from cryptography import x509

    return x509.load_pem_x509_certificate(CERT_PEM).public_bytes(serialization.Encoding.DER)


def _issuer(
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, ttl: int = 300
) -> EmbeddedIssuer:
    return EmbeddedIssuer(
        signing_key=key,
        issuer="https://issuer.test",
        audience="https://gateway.test",
        subject="alice",
        client_cert_der=_cert_der(),
        roles=["engineer"],
        attributes={"team": "ml"},
        ttl=ttl,
    )


@pytest.mark.parametrize(
    ("key", "alg"),
    [
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    ],
)
def test_embedded_issuer_claims(
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, alg: str
) -> None:
    token = _issuer(key).token()
    value = token.value.reveal()
    header = jwt.get_unverified_header(value)
    assert header["alg"] == alg
    assert header["typ"] == "at+jwt"
    claims = jwt.decode(
        value,
        key.public_key(),
        algorithms=[alg],
        audience="https://gateway.test",
        issuer="https://issuer.test",
    )
    assert claims["sub"] == "alice"
    assert claims["roles"] == ["engineer"]
    assert claims["attrs"] == {"team": "ml"}
    assert claims["exp"] - claims["iat"] == 300
    expected = base64.urlsafe_b64encode(hashlib.sha256(_cert_der()).digest()).rstrip(b"=").decode()
    assert claims["cnf"] == {"x5t#S256": expected}
    assert token.jti == claims["jti"]
    assert token.bound_thumbprint == expected


def test_rsa_or_other_curves_are_refused() -> None:
    from secure_ds import IdentityError

    with pytest.raises(IdentityError, match="P-256 or Ed25519"):
        _issuer(ec.generate_private_key(ec.SECP384R1()))  # type: ignore[arg-type]


def test_token_is_cached_then_refreshed_when_a_fifth_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    issuer = _issuer(ec.generate_private_key(ec.SECP256R1()), ttl=100)
    first = issuer.token()
    now[0] += 79  # 21 % of the lifetime left
    assert issuer.token() is first
    now[0] += 2  # 19 % left: refresh
    second = issuer.token()
    assert second is not first
    assert second.jti != first.jti


def test_invalidate_forces_a_new_token() -> None:
    issuer = _issuer(ec.generate_private_key(ec.SECP256R1()))
    first = issuer.token()
    issuer.invalidate(Token(value=Secret("other"), kind="jwt"))  # not the cached one: no-op
    assert issuer.token() is first
    issuer.invalidate(first)
    assert issuer.token() is not first


def test_concurrent_callers_trigger_one_fetch() -> None:
    issuer = _issuer(ec.generate_private_key(ec.SECP256R1()))
    fetches = 0
    real_fetch = issuer._fetch
    barrier = threading.Barrier(16)

    def slow_fetch() -> Token:
        nonlocal fetches
        fetches += 1
        time.sleep(0.05)
        return real_fetch()

    issuer._fetch = slow_fetch  # type: ignore[method-assign]
    seen: list[Token] = []

    def worker() -> None:
        barrier.wait()
        seen.append(issuer.token())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fetches == 1
    assert len({id(t) for t in seen}) == 1


def test_static_token_claims_are_read_for_the_record() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    value = jwt.encode(
        {
            "sub": "svc",
            "jti": "j1",
            "iss": "i",
            "exp": 2_000_000_000,
            "roles": ["a"],
            "cnf": {"x5t#S256": "abc"},
        },
        key,
        algorithm="ES256",
    )
    token = StaticTokenProvider(value).token()
    assert (token.subject, token.jti, token.issuer, token.roles) == ("svc", "j1", "i", ("a",))
    assert token.bound_thumbprint == "abc"
    assert token.expires_at == 2_000_000_000.0
    assert StaticTokenProvider("not-a-jwt").token().subject is None


def test_api_key_provider() -> None:
    token = ApiKeyProvider(Secret("sk-abc"), subject="svc").token()
    assert token.kind == "api_key"
    assert token.authorization == "Bearer sk-abc"
    assert "sk-abc" not in repr(token)
