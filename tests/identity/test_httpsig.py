"""RFC 9421 request signatures: the RFC's test vectors, interoperability with the
``http-message-signatures`` library both ways, and the verifier's refusals."""

from __future__ import annotations

import base64
import datetime
import time
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    MappingKeyResolver,
    algorithms,
)
from http_message_signatures.httpx2 import adapt_message

from secure_ds.errors import IdentityError, SignatureRejected
from secure_ds.identity import (
    ReplayCache,
    RequestSigner,
    SignatureVerifier,
    content_digest,
)
from secure_ds.identity._httpsig import _check_signature, signature_base

# ---------------------------------------------------------------------- RFC test vectors

# RFC 9421 Appendix B.1.4, test-key-ed25519 (a published test key: test use only)
_ED25519_D = "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU"
_ED25519_X = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"
# RFC 9421 Appendix B.1.3, test-key-ecc-p256 (public part)
_P256_PUBLIC = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqIVYZVLCrPZHGHjP17CTW0/+D9Lf
w0EkjqF7xB4FivAxzic30tMM4GF+hR6Dxh71Z50VGGdldkkDXZCnTNnoXQ==
-----END PUBLIC KEY-----
"""


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_rfc9421_b26_ed25519_signature_is_reproduced_exactly() -> None:
    """B.2.6: Ed25519 is deterministic, so our base and signature must match byte for byte."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(_b64url(_ED25519_D))
    assert key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    ) == _b64url(_ED25519_X)
    base = signature_base(
        [
            ("date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("@method", "POST"),
            ("@path", "/foo"),
            ("@authority", "example.com"),
            ("content-type", "application/json"),
            ("content-length", "18"),
        ],
        '("date" "@method" "@path" "@authority" "content-type" "content-length")'
        ';created=1618884473;keyid="test-key-ed25519"',
    )
    expected = (
        "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
    )
    assert base64.b64encode(key.sign(base)).decode() == expected
    _check_signature(key.public_key(), base64.b64decode(expected), base)


def test_rfc9421_b24_ecdsa_p256_signature_verifies() -> None:
    """B.2.4: ECDSA is randomised, so the RFC's r||s signature is verified, not reproduced."""
    public = serialization.load_pem_public_key(_P256_PUBLIC)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    base = signature_base(
        [
            ("@status", "200"),
            ("content-type", "application/json"),
            (
                "content-digest",
                "sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJu"
                "ahq4l5aGgfLQ==:",
            ),
            ("content-length", "23"),
        ],
        '("@status" "content-type" "content-digest" "content-length")'
        ';created=1618884473;keyid="test-key-ecc-p256"',
    )
    signature = base64.b64decode(
        "wNmSUAhwb5LxtOtOpNa6W5xj067m5hFrj0XQ4fvpaCLx0NKocgPquLgyahnzDnDAUy5eCdlYUEkLIj+32oiasw=="
    )
    _check_signature(public, signature, base)
    with pytest.raises(SignatureRejected, match="signature invalid"):
        _check_signature(public, signature, base.replace(b"200", b"201"))


def test_rfc9530_content_digest_example() -> None:
    assert content_digest(b'{"hello": "world"}') == (
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    )


# ---------------------------------------------------------------------- sign, verify


BODY = b'{"model":"deepseek-flash","messages":[{"role":"user","content":"hi"}]}'
URL = "https://127.0.0.1:8443/v1/chat/completions"


def _request(url: str = URL, body: bytes = BODY) -> httpx2.Request:
    return httpx2.Request("POST", url, content=body, headers={"authorization": "Bearer t.o.k"})


def _verify(
    request: httpx2.Request,
    key: Any,
    keyid: str = "kid",
    body: bytes | None = None,
    verifier: SignatureVerifier | None = None,
    now: float | None = None,
) -> Any:
    verifier = verifier or SignatureVerifier()
    headers = request.headers
    return verifier.verify(
        method=request.method,
        authority=headers["host"],
        target=request.url.raw_path.decode(),
        field=lambda name: ", ".join(headers.get_list(name)) or None,
        body=request.content if body is None else body,
        public_key=key.public_key(),
        keyid=keyid,
        now=now,
    )


_KEYS = {
    "ed25519": lambda: ed25519.Ed25519PrivateKey.generate(),
    "ecdsa-p256-sha256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "rsa-pss-sha512": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
}


@pytest.mark.parametrize("alg", list(_KEYS))
def test_sign_then_verify_each_algorithm(alg: str) -> None:
    key = _KEYS[alg]()
    request = _request(URL + "?stream=1")
    signed = RequestSigner(key, keyid="kid").sign(request, BODY)
    assert signed.alg == alg
    assert request.headers["content-digest"] == content_digest(BODY)
    result = _verify(request, key)
    assert result.nonce == signed.nonce
    assert result.covered == (
        "@method",
        "@authority",
        "@path",
        "@query",
        "content-digest",
        "authorization",
    )
    assert signed.expires - signed.created == 60
    assert len(_b64url(signed.nonce)) == 16  # 128 random bits


def test_every_signature_gets_a_fresh_nonce() -> None:
    signer = RequestSigner(ed25519.Ed25519PrivateKey.generate(), keyid="kid")
    nonces = {signer.sign(_request(), BODY).nonce for _ in range(100)}
    assert len(nonces) == 100


_LIB_ALGS = {
    "ed25519": algorithms.ED25519,
    "ecdsa-p256-sha256": algorithms.ECDSA_P256_SHA256,
    "rsa-pss-sha512": algorithms.RSA_PSS_SHA512,
}


@pytest.mark.parametrize("alg", list(_KEYS))
def test_the_library_verifies_our_signatures(alg: str) -> None:
    key = _KEYS[alg]()
    request = _request(URL + "?a=1&b=2")
    RequestSigner(key, keyid="kid").sign(request, BODY)
    resolver = MappingKeyResolver(public_keys={"kid": key.public_key()}, private_keys={})
    verifier = HTTPMessageVerifier(signature_algorithm=_LIB_ALGS[alg], key_resolver=resolver)
    results = verifier.verify(adapt_message(request), body=BODY, expect_tag="secure-ds")
    assert results[0].body == BODY  # the digest was checked too


@pytest.mark.parametrize("alg", list(_KEYS))
def test_we_verify_the_librarys_signatures(alg: str) -> None:
    key = _KEYS[alg]()
    request = _request()
    now = datetime.datetime.now(datetime.UTC)
    resolver = MappingKeyResolver(public_keys={}, private_keys={"kid": key})
    HTTPMessageSigner(signature_algorithm=_LIB_ALGS[alg], key_resolver=resolver).sign(
        adapt_message(request),
        key_id="kid",
        created=now,
        expires=now + datetime.timedelta(seconds=60),
        nonce="bGlicmFyeS1ub25jZS0xMjM",
        tag="secure-ds",
        label="lib",
        covered_component_ids=("@method", "@authority", "@path", "authorization"),
        body=BODY,
    )
    assert _verify(request, key).nonce == "bGlicmFyeS1ub25jZS0xMjM"


def test_signer_key_must_belong_to_the_certificate(tmp_path: Any) -> None:
    from secure_ds.sandbox import LocalCA

    ca = LocalCA.create()
    cert_pem, _ = ca.issue_client_cert("alice")
    _, other_key_pem = ca.issue_client_cert("bob")
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(other_key_pem)
    with pytest.raises(IdentityError, match="does not belong to the client certificate"):
        RequestSigner.from_files(tmp_path / "c.pem", tmp_path / "k.pem")


def test_signer_repr_holds_no_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    text = repr(RequestSigner(key, keyid="kid"))
    assert "kid" in text
    assert "PRIVATE" not in text


# ---------------------------------------------------------------------- verifier refusals
# (end to end against the sandbox in test_httpsig_sandbox.py; here the verifier alone)


@pytest.fixture
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _signed(key: Any, **kwargs: Any) -> httpx2.Request:
    request = _request(**kwargs)
    RequestSigner(key, keyid="kid").sign(request, request.content)
    return request


def _refusal(request: httpx2.Request, key: Any, **kwargs: Any) -> str:
    with pytest.raises(SignatureRejected) as caught:
        _verify(request, key, **kwargs)
    return caught.value.reason


def test_replayed_nonce_is_refused(key: ed25519.Ed25519PrivateKey) -> None:
    verifier = SignatureVerifier()
    request = _signed(key)
    _verify(request, key, verifier=verifier)
    assert _refusal(request, key, verifier=verifier) == "signature replayed"


def test_replay_cache_forgets_expired_entries_and_is_bounded() -> None:
    cache = ReplayCache(max_entries=2)
    cache.remember("k", "n1", until=100.0, now=50.0)
    cache.remember("k", "n2", until=100.0, now=50.0)
    with pytest.raises(SignatureRejected, match="replay cache full"):
        cache.remember("k", "n3", until=100.0, now=60.0)
    cache.remember("k", "n3", until=200.0, now=101.0)  # n1, n2 expired and dropped
    assert len(cache) == 1
    cache.remember("other-key", "n3", until=200.0, now=101.0)  # keyed by (keyid, nonce)


def test_body_altered_after_signing_is_refused(key: ed25519.Ed25519PrivateKey) -> None:
    request = _signed(key)
    assert _refusal(request, key, body=BODY.replace(b"hi", b"ho")) == "content-digest mismatch"


def test_expired_signature_is_refused(key: ed25519.Ed25519PrivateKey) -> None:
    request = _request()
    RequestSigner(key, keyid="kid").sign(request, BODY, now=time.time() - 120)
    assert _refusal(request, key) == "signature expired"


def test_signature_from_the_future_is_refused(key: ed25519.Ed25519PrivateKey) -> None:
    request = _request()
    RequestSigner(key, keyid="kid").sign(request, BODY, now=time.time() + 60)
    assert _refusal(request, key) == "signature created in the future"


def test_small_clock_skew_is_tolerated(key: ed25519.Ed25519PrivateKey) -> None:
    request = _request()
    RequestSigner(key, keyid="kid").sign(request, BODY, now=time.time() + 3)
    assert _verify(request, key).keyid == "kid"


def test_signature_by_another_key_is_refused(key: ed25519.Ed25519PrivateKey) -> None:
    request = _signed(ed25519.Ed25519PrivateKey.generate())
    assert _refusal(request, key) == "signature invalid"


def test_keyid_of_another_certificate_is_refused(key: ed25519.Ed25519PrivateKey) -> None:
    request = _signed(key)
    assert _refusal(request, key, keyid="other") == (
        "signature keyid is not the presented client certificate"
    )


def test_missing_covered_component_is_refused(key: ed25519.Ed25519PrivateKey) -> None:
    request = httpx2.Request("POST", URL, content=BODY)  # signed before authorization was set
    RequestSigner(key, keyid="kid").sign(request, BODY)
    request.headers["authorization"] = "Bearer t.o.k"
    assert _refusal(request, key) == "signature does not cover authorization"


def test_query_must_be_covered_when_present(key: ed25519.Ed25519PrivateKey) -> None:
    request = _signed(key)
    headers = request.headers
    with pytest.raises(SignatureRejected, match=r"does not cover @query"):
        SignatureVerifier().verify(
            method="POST",
            authority=headers["host"],
            target="/v1/chat/completions?model=expensive",  # query added in transit
            field=lambda name: headers.get(name),
            body=BODY,
            public_key=key.public_key(),
            keyid="kid",
        )


def test_altered_covered_header_is_refused(key: ed25519.Ed25519PrivateKey) -> None:
    request = _signed(key)
    request.headers["authorization"] = "Bearer someone.elses.token"
    assert _refusal(request, key) == "signature invalid"


def test_unsigned_request_is_refused(key: ed25519.Ed25519PrivateKey) -> None:
    assert _refusal(_request(), key) == "request not signed (no Signature-Input/Signature)"


@pytest.mark.parametrize(
    ("signature_input", "signature", "reason"),
    [
        ('secure-ds=("@method";tag="secure-ds"', "secure-ds=:AA==:", "malformed"),
        ('secure-ds=("@method");tag="x"', "secure-ds=:AA==:", "expected one signature"),
        ('secure-ds=("@method");tag="secure-ds"', "secure-ds=:!!:", "malformed Signature"),
        ('secure-ds=("@method");tag="secure-ds"', "other=:AA==:", "no byte sequence"),
        ('secure-ds=("@method");tag="secure-ds"', "secure-ds=:AA==:", "no created time"),
    ],
)
def test_garbled_signature_headers_are_refused(
    key: ed25519.Ed25519PrivateKey, signature_input: str, signature: str, reason: str
) -> None:
    request = _signed(key)
    request.headers["signature-input"] = signature_input
    request.headers["signature"] = signature
    assert reason in _refusal(request, key)


def test_a_client_key_of_a_type_that_cannot_sign_names_its_file() -> None:
    # the client builds its signer from the pair it loaded (RequestSigner.for_key)
    from cryptography.hazmat.primitives.asymmetric import x25519

    with pytest.raises(IdentityError, match=r"client key in /keys/client\.key cannot sign"):
        RequestSigner.for_key(x25519.X25519PrivateKey.generate(), "kid", where="/keys/client.key")
    signer = RequestSigner.for_key(ed25519.Ed25519PrivateKey.generate(), "kid", where="k")
    assert signer.keyid == "kid"


def test_certificate_key_that_cannot_sign_is_refused_not_an_error() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(IdentityError, match="P-256 only"):
        RequestSigner(p384, keyid="kid")
    request = _signed(ed25519.Ed25519PrivateKey.generate())
    assert _refusal(request, p384) == "the certificate's key type cannot sign requests"


@pytest.mark.parametrize("value", ["plain", 'q"uote', "back\\slash", '\\"mix\\\\', ""])
def test_structured_field_strings_round_trip(value: str) -> None:
    from secure_ds.identity._httpsig import _parse_dictionary, _sf_string

    parsed = _parse_dictionary(f"k={_sf_string(value)};p={_sf_string(value)}, n=-5", "T")
    assert parsed["k"] == (value, {"p": value})
    assert parsed["n"] == (-5, {})


@pytest.mark.parametrize("text", ['k="a', 'k="\\x"', 'k="tab\there"', "k=1.5", "k=", "k=1,"])
def test_structured_field_garbage_is_refused(text: str) -> None:
    from secure_ds.identity._httpsig import _parse_dictionary

    with pytest.raises(SignatureRejected, match="malformed T header"):
        _parse_dictionary(text, "T")
