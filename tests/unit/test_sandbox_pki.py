"""The sandbox's throwaway PKI and its token verifier, without starting a server."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import secure_ds.sandbox
from secure_ds.sandbox import LocalCA, _tokens
from secure_ds.sandbox._tokens import TokenError, TokenVerifier
from secure_ds.sandbox.pki import generate_issuer_key, spiffe_id, x5t_s256

ISSUER = "https://issuer.test"
AUDIENCE = "https://127.0.0.1:1"


@pytest.fixture(scope="module")
def ca() -> LocalCA:
    return LocalCA.create("test CA")


def test_public_surface_is_sandbox_and_local_ca() -> None:
    assert sorted(secure_ds.sandbox.__all__) == ["LocalCA", "Sandbox"]


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> Any:
    return cert.extensions.get_extension_for_class(kind).value


def test_ca_is_a_self_signed_p256_ca_that_signs_only_leaves(ca: LocalCA) -> None:
    cert = _cert(ca.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "test CA"
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.public_key().curve, ec.SECP256R1)  # type: ignore[union-attr]
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.ca is True
    assert constraints.path_length == 0
    cert.verify_directly_issued_by(cert)


def test_server_cert_names_ip_and_dns_and_is_signed_by_the_ca(ca: LocalCA) -> None:
    cert_pem, key_pem = ca.issue_server_cert(["127.0.0.1", "localhost"])
    cert = _cert(cert_pem)
    cert.verify_directly_issued_by(ca.cert)
    san = _ext(cert, x509.SubjectAlternativeName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ExtendedKeyUsageOID.SERVER_AUTH in _ext(cert, x509.ExtendedKeyUsage)
    key = serialization.load_pem_private_key(key_pem, None)
    assert key.public_key() == cert.public_key()


def test_client_cert_carries_subject_spiffe_uri_and_client_auth(ca: LocalCA) -> None:
    cert = _cert(ca.issue_client_cert("bob smith/ops")[0])
    cert.verify_directly_issued_by(ca.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "bob smith/ops"
    uris = _ext(cert, x509.SubjectAlternativeName).get_values_for_type(
        x509.UniformResourceIdentifier
    )
    assert uris == ["spiffe://sandbox.secure-ds.invalid/user/bob%20smith%2Fops"]
    assert uris == [spiffe_id("bob smith/ops")]
    eku = _ext(cert, x509.ExtendedKeyUsage)
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == timedelta(days=1)
    assert cert.not_valid_before_utc <= datetime.now(UTC)


def test_client_cert_honours_validity_and_given_key(ca: LocalCA) -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    end = datetime(2020, 1, 2, tzinfo=UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert_pem, key_pem = ca.issue_client_cert("old", not_before=start, not_after=end, key=key)
    cert = _cert(cert_pem)
    assert (cert.not_valid_before_utc, cert.not_valid_after_utc) == (start, end)
    assert cert.public_key() == key.public_key()
    assert serialization.load_pem_private_key(key_pem, None).public_key() == key.public_key()


def test_very_long_subject_keeps_full_name_in_san(ca: LocalCA) -> None:
    subject = "x" * 100
    cert = _cert(ca.issue_client_cert(subject)[0])
    assert len(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value) == 64
    uris = _ext(cert, x509.SubjectAlternativeName).get_values_for_type(
        x509.UniformResourceIdentifier
    )
    assert uris == [spiffe_id(subject)]


def test_write_puts_ca_pem_in_directory(ca: LocalCA, tmp_path: Path) -> None:
    path = ca.write(tmp_path)
    assert path == tmp_path / "ca.pem"
    assert _cert(path.read_bytes()) == ca.cert


def test_issuer_keys_follow_the_algorithm() -> None:
    es = generate_issuer_key("ES256")
    assert isinstance(es, ec.EllipticCurvePrivateKey)
    assert isinstance(es.curve, ec.SECP256R1)
    assert isinstance(generate_issuer_key("EdDSA"), ed25519.Ed25519PrivateKey)
    with pytest.raises(ValueError, match="unsupported"):
        generate_issuer_key("HS256")  # type: ignore[arg-type]


def test_x5t_s256_is_unpadded_base64url_sha256() -> None:
    # SHA-256 of the empty string, base64url without padding (RFC 8705 form).
    assert x5t_s256(b"") == "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
    assert "=" not in x5t_s256(b"\x00" * 100)


# ---------------------------------------------------------------------- token verifier


@pytest.fixture(scope="module")
def issuer_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def verifier(issuer_key: ec.EllipticCurvePrivateKey) -> TokenVerifier:
    return TokenVerifier.for_issuer(issuer_key, issuer=ISSUER, audience=AUDIENCE)


def _token(key: ec.EllipticCurvePrivateKey, **changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "roles": ["engineer"],
        "attrs": {"team": "ml"},
        "cnf": {"x5t#S256": "thumb"},
    }
    claims.update(changes)
    return jwt.encode(claims, key, algorithm="ES256", headers={"typ": "at+jwt"})


def test_verifier_returns_claims_for_handlers(
    verifier: TokenVerifier, issuer_key: ec.EllipticCurvePrivateKey
) -> None:
    verified = verifier.verify(f"Bearer {_token(issuer_key)}", "thumb")
    assert (verified.sub, verified.roles, dict(verified.attrs)) == (
        "alice",
        ("engineer",),
        {"team": "ml"},
    )


def test_cached_token_is_still_checked_for_expiry(
    verifier: TokenVerifier,
    issuer_key: ec.EllipticCurvePrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    header = f"Bearer {_token(issuer_key)}"
    verifier.verify(header, "thumb")  # verified and remembered
    later = time.time() + 300 + _tokens.LEEWAY + 1
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(TokenError, match="token expired"):
        verifier.verify(header, "thumb")


def test_cached_token_is_still_checked_for_binding(
    verifier: TokenVerifier, issuer_key: ec.EllipticCurvePrivateKey
) -> None:
    header = f"Bearer {_token(issuer_key)}"
    verifier.verify(header, "thumb")
    with pytest.raises(TokenError, match="not bound to the presented client certificate"):
        verifier.verify(header, "other-thumb")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": int(time.time()) + 7200}, "token lifetime exceeds 3600 s"),
        ({"roles": "admin"}, "roles must be a list of strings"),
        ({"attrs": ["x"]}, "attrs must be an object"),
        ({"sub": ""}, "token subject invalid"),
        ({"cnf": {"x5t#S256": "th\u00fcmb"}}, "not a base64url thumbprint"),
        ({"cnf": "thumb"}, "cnf.x5t#S256 missing"),
    ],
)
def test_verifier_refuses_malformed_claims(
    verifier: TokenVerifier,
    issuer_key: ec.EllipticCurvePrivateKey,
    changes: dict[str, Any],
    reason: str,
) -> None:
    with pytest.raises(TokenError, match=reason):
        verifier.verify(f"Bearer {_token(issuer_key, **changes)}", "thumb")


def test_verifier_refuses_unknown_token_type(
    verifier: TokenVerifier, issuer_key: ec.EllipticCurvePrivateKey
) -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "a", "iat": now, "exp": now + 60, "jti": "j"}
    token = jwt.encode(claims, issuer_key, algorithm="ES256", headers={"typ": "id+jwt"})
    with pytest.raises(TokenError, match="token type not accepted"):
        verifier.verify(f"Bearer {token}", "thumb")


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer not.a.jwt"])
def test_verifier_refuses_missing_or_garbled_headers(
    verifier: TokenVerifier, header: str | None
) -> None:
    with pytest.raises(TokenError):
        verifier.verify(header, "thumb")
