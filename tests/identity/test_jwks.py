"""Token validation: JWKS fetching, caching and rotation against a real local HTTP server,
the algorithm allow-list, claim checks with leeway, and RFC 8705 certificate binding.

The JWKS is served by a real ``http.server`` on 127.0.0.1 that counts the requests it
answers, so "one refetch, rate-limited" is checked by what the issuer actually saw.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from secure_ds.errors import ConfigError, JwksUnavailable, TokenRejected
from secure_ds.identity import (
    JwksCache,
    StaticKeys,
    TokenValidator,
    check_binding,
)
from secure_ds.sandbox._tokens import TokenError, TokenVerifier

ISSUER = "https://keycloak.test/realms/secure-ds"
AUDIENCE = "deepseek-gateway"
THUMB = "dGh1bWJwcmludC1vZi10aGUtY2xpZW50LWNlcnQ"


# ---------------------------------------------------------------------- a real JWKS server


class JwksServer:
    """Serves ``{"keys": [...]}`` at /jwks on 127.0.0.1 and counts the requests."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.status = 200
        self.hang = threading.Event()  # set: accept, then never answer
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if outer.hang.is_set():
                    time.sleep(5)
                    return
                body = json.dumps({"keys": list(outer.keys.values())}).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def publish(self, kid: str, key: Any, **extra: Any) -> None:
        member = _jwk(key.public_key())
        member.update({"kid": kid, "use": "sig", **extra})
        self.keys[kid] = member

    def withdraw(self, kid: str) -> None:
        del self.keys[kid]


def _jwk(public: Any) -> dict[str, Any]:
    if isinstance(public, rsa.RSAPublicKey):
        return json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))  # type: ignore[no-any-return]
    if isinstance(public, ec.EllipticCurvePublicKey):
        return json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))  # type: ignore[no-any-return]
    return json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public))  # type: ignore[no-any-return]


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.hang.clear()
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture
def es_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "service-account-secure-ds",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
        "cnf": {"x5t#S256": THUMB},
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def _token(key: Any, kid: str | None, alg: str = "ES256", **changes: Any) -> str:
    headers: dict[str, Any] = {"typ": "at+jwt"}
    if kid is not None:
        headers["kid"] = kid
    return jwt.encode(_claims(**changes), key, algorithm=alg, headers=headers)


def _validator(keys: Any, **kwargs: Any) -> TokenValidator:
    return TokenValidator(issuer=ISSUER, audience=AUDIENCE, keys=keys, **kwargs)


def _rejected(validator: TokenValidator, token: str) -> TokenRejected:
    with pytest.raises(TokenRejected) as caught:
        validator.validate(token)
    return caught.value


# ---------------------------------------------------------------------- JWKS fetch and cache


def test_token_from_jwks_is_accepted_and_the_jwks_is_fetched_once(
    jwks_server: JwksServer, es_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks_server.publish("k1", es_key)
    validator = _validator(JwksCache(jwks_server.url))
    for _ in range(20):
        validated = validator.validate(_token(es_key, "k1"), cert_thumbprint=THUMB)
    assert validated.kid == "k1"
    assert validated.subject == "service-account-secure-ds"
    assert validated.bound_thumbprint == THUMB
    assert jwks_server.requests == 1  # cached


@pytest.mark.parametrize("alg", ["RS256", "PS256", "EdDSA"])
def test_rsa_pss_and_eddsa_keys_from_jwks(jwks_server: JwksServer, alg: str) -> None:
    key: Any = (
        ed25519.Ed25519PrivateKey.generate()
        if alg == "EdDSA"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    jwks_server.publish("k", key)
    validator = _validator(JwksCache(jwks_server.url), algorithms=[alg])
    assert validator.validate(_token(key, "k", alg=alg)).alg == alg


def test_unknown_kid_flood_causes_one_refetch_not_a_storm(
    jwks_server: JwksServer, es_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks_server.publish("k1", es_key)
    now = [1000.0]
    cache = JwksCache(jwks_server.url, min_refetch_interval=30.0, clock=lambda: now[0])
    validator = _validator(cache)
    validator.validate(_token(es_key, "k1"))
    assert jwks_server.requests == 1

    def flood() -> None:  # an attacker's tokens, each with a made-up kid
        for _ in range(100):
            rejected = _rejected(validator, _token(es_key, f"bogus-{uuid.uuid4()}"))
            assert rejected.check == "kid"
            assert "unknown key id" in rejected.reason

    flood()
    assert jwks_server.requests == 1  # fetched just now: no refetch within 30 s
    now[0] += 31
    flood()
    assert jwks_server.requests == 2  # the first unknown kid refetched; the rest waited
    now[0] += 10
    flood()
    assert jwks_server.requests == 2
    validator.validate(_token(es_key, "k1"))  # known keys still pass meanwhile
    now[0] += 21
    flood()
    assert jwks_server.requests == 3


def test_concurrent_unknown_kids_share_one_fetch(
    jwks_server: JwksServer, es_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks_server.publish("k1", es_key)
    validator = _validator(JwksCache(jwks_server.url))
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            validator.validate(_token(es_key, f"bogus-{uuid.uuid4()}"))
        except TokenRejected as exc:
            errors.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 16
    assert jwks_server.requests == 1  # the cold cache fetched once for all of them


def test_rotation_new_key_accepted_after_refetch_removed_key_refused(
    jwks_server: JwksServer, es_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks_server.publish("old", es_key)
    cache = JwksCache(jwks_server.url, min_refetch_interval=0.0)
    validator = _validator(cache)
    validator.validate(_token(es_key, "old"))
    generation = cache.generation

    new_key = ec.generate_private_key(ec.SECP256R1())
    jwks_server.publish("new", new_key)
    jwks_server.withdraw("old")
    # a token with the new kid: unknown locally -> one refetch -> accepted
    assert validator.validate(_token(new_key, "new")).kid == "new"
    assert jwks_server.requests == 2
    assert cache.kids == {"new"}
    assert cache.generation == generation + 1
    # the withdrawn key is gone with that refetch
    rejected = _rejected(validator, _token(es_key, "old"))
    assert rejected.check == "kid"


def test_sandbox_verifier_reverifies_cached_tokens_after_rotation(
    jwks_server: JwksServer, es_key: ec.EllipticCurvePrivateKey
) -> None:
    """A token remembered by the sandbox's verifier is checked again once its issuer's
    keys changed, so a key rotated out stops working even for cached tokens."""
    jwks_server.publish("old", es_key)
    cache = JwksCache(jwks_server.url, min_refetch_interval=0.0)
    embedded = ec.generate_private_key(ec.SECP256R1())
    verifier = TokenVerifier(
        embedded.public_key(), "ES256", issuer="https://embedded.test", audience=AUDIENCE
    )
    verifier.trust_jwks(cache, issuer=ISSUER, audience=AUDIENCE)
    header = "Bearer " + _token(es_key, "old")
    assert verifier.verify(header, THUMB).sub == "service-account-secure-ds"
    assert verifier.cached(header, THUMB) is not None
    jwks_server.withdraw("old")
    jwks_server.publish("new", ec.generate_private_key(ec.SECP256R1()))
    cache.refresh()
    assert verifier.cached(header, THUMB) is None  # the key set changed: not trusted as is
    with pytest.raises(TokenError, match="unknown key id"):
        verifier.verify(header, THUMB)


def test_jwks_server_down_is_a_clear_error_and_known_keys_survive_a_failed_refresh(
    jwks_server: JwksServer, es_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks_server.status = 503
    now = [0.0]
    cache = JwksCache(jwks_server.url, clock=lambda: now[0])
    validator = _validator(cache)
    with pytest.raises(JwksUnavailable, match="HTTP 503"):
        validator.validate(_token(es_key, "k1"))
    with pytest.raises(JwksUnavailable, match="not been fetched yet"):  # within 30 s
        validator.validate(_token(es_key, "k1"))
    assert jwks_server.requests == 1
    now[0] += 30
    jwks_server.status = 200
    jwks_server.publish("k1", es_key)
    validator.validate(_token(es_key, "k1"))
    jwks_server.status = 500
    now[0] += 3600  # stale (older than max_age): the next use refetches, which fails
    validator.validate(_token(es_key, "k1"))  # served from the keys it had
    assert jwks_server.requests == 3


def test_jwks_fetch_that_hangs_times_out(jwks_server: JwksServer) -> None:
    jwks_server.hang.set()
    cache = JwksCache(jwks_server.url, timeout=0.3)
    with pytest.raises(JwksUnavailable, match="could not be fetched"):
        cache.key_for("k1")


def test_unreachable_jwks_is_a_clear_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = JwksCache(f"http://127.0.0.1:{port}/jwks", timeout=1.0)
    with pytest.raises(JwksUnavailable, match="ConnectError"):
        cache.key_for("k1")


@pytest.mark.parametrize(
    "url", ["http://keycloak.example/jwks", "ftp://127.0.0.1/jwks", "file:///etc/jwks.json"]
)
def test_jwks_url_must_be_https_or_loopback(url: str) -> None:
    with pytest.raises(ConfigError, match="jwks_url"):
        JwksCache(url)


def test_jwks_skips_symmetric_and_encryption_keys(jwks_server: JwksServer) -> None:
    secret = base64.urlsafe_b64encode(b"s" * 32).rstrip(b"=").decode()
    jwks_server.keys["hmac"] = {"kty": "oct", "kid": "hmac", "k": secret}
    enc = ec.generate_private_key(ec.SECP256R1())
    jwks_server.publish("enc", enc, use="enc")
    cache = JwksCache(jwks_server.url)
    with pytest.raises(TokenRejected, match="unknown key id"):
        cache.key_for("hmac")
    assert cache.kids == frozenset()


# ---------------------------------------------------------------------- algorithms and keys


def test_alg_none_is_refused_before_any_key_lookup(jwks_server: JwksServer) -> None:
    validator = _validator(JwksCache(jwks_server.url))
    token = jwt.encode(_claims(), None, algorithm="none", headers={"kid": "k1"})
    rejected = _rejected(validator, token)
    assert (rejected.check, rejected.reason) == ("alg", "algorithm none not allowed")
    assert jwks_server.requests == 0


def test_hs256_keyed_with_the_public_key_is_refused(es_key: ec.EllipticCurvePrivateKey) -> None:
    """The classic confusion: an HMAC token whose secret is the issuer's public key."""
    from cryptography.hazmat.primitives import serialization

    public_pem = es_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"at+jwt"}').rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(_claims()).encode()).rstrip(b"=")
    signing_input = header + b"." + payload
    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    token = (signing_input + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
    rejected = _rejected(_validator(StaticKeys.single(es_key.public_key())), token)
    assert (rejected.check, rejected.reason) == ("alg", "algorithm HS256 not allowed")


def test_hmac_algorithms_cannot_even_be_configured() -> None:
    with pytest.raises(ConfigError, match="HS256"):
        _validator(StaticKeys({}), algorithms=["ES256", "HS256"])


def test_jwk_whose_type_does_not_fit_the_header_alg_is_refused(
    jwks_server: JwksServer, es_key: ec.EllipticCurvePrivateKey
) -> None:
    """kid points at an EC key, the header claims RS256: refused (no cross-type use)."""
    jwks_server.publish("k1", es_key)
    validator = _validator(JwksCache(jwks_server.url), algorithms=["ES256", "RS256"])
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rejected = _rejected(validator, _token(other, "k1", alg="RS256"))
    assert rejected.check == "alg"
    assert "needs an RSA key" in rejected.reason


def test_jwk_stating_another_alg_is_refused(jwks_server: JwksServer) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks_server.publish("k1", key, alg="RS256")
    validator = _validator(JwksCache(jwks_server.url), algorithms=["RS256", "PS256"])
    rejected = _rejected(validator, _token(key, "k1", alg="PS256"))
    assert (rejected.check, rejected.reason) == ("alg", "key is for RS256, token claims PS256")


def test_ec_key_on_another_curve_is_refused(jwks_server: JwksServer) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    jwks_server.publish("k1", p384)
    validator = _validator(JwksCache(jwks_server.url), algorithms=["ES256", "ES384"])
    assert validator.validate(_token(p384, "k1", alg="ES384")).alg == "ES384"
    header = {"alg": "ES256", "kid": "k1", "typ": "at+jwt"}
    forged = jwt.encode(_claims(), ec.generate_private_key(ec.SECP256R1()), headers=header)
    rejected = _rejected(validator, forged)
    assert (rejected.check, rejected.reason) == ("alg", "algorithm ES256 needs an EC P-256 key")


def test_token_signed_by_another_realm_is_refused(
    jwks_server: JwksServer, es_key: ec.EllipticCurvePrivateKey
) -> None:
    """Another realm's key, even under a kid this issuer uses, fails the signature;
    its own issuer name fails the issuer check."""
    jwks_server.publish("k1", es_key)
    validator = _validator(JwksCache(jwks_server.url))
    other_realm = ec.generate_private_key(ec.SECP256R1())
    rejected = _rejected(validator, _token(other_realm, "k1"))
    assert (rejected.check, rejected.reason) == ("signature", "token signature invalid")
    other_iss = _token(es_key, "k1", iss="https://keycloak.test/realms/other")
    assert _rejected(validator, other_iss).check == "iss"


# ---------------------------------------------------------------------- claims


@pytest.fixture
def static(es_key: ec.EllipticCurvePrivateKey) -> TokenValidator:
    return _validator(StaticKeys.single(es_key.public_key()), leeway=30)


class _In:
    """A time claim ``seconds`` from when the test runs (not from when it was collected:
    a long run would otherwise turn "in two minutes" into the past)."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds


@pytest.mark.parametrize(
    ("changes", "check", "reason"),
    [
        ({"iss": "https://evil.example"}, "iss", "token issuer mismatch"),
        ({"aud": "https://api.deepseek.com"}, "aud", "token audience mismatch"),
        ({"aud": ["a", "b"]}, "aud", "token audience mismatch"),
        ({"exp": _In(-31)}, "exp", "token expired"),
        ({"nbf": _In(120)}, "nbf", "token not yet valid"),
        ({"iat": _In(120)}, "iat", "token issued in the future (iat)"),
        ({"iat": "yesterday"}, "iat", "token iat invalid"),
        ({"jti": None}, "claims", "token missing required claim jti"),
        ({"exp": None}, "claims", "token missing required claim exp"),
        ({"sub": ""}, "claims", "token subject invalid"),
    ],
)
def test_claim_checks_name_what_failed(
    static: TokenValidator,
    es_key: ec.EllipticCurvePrivateKey,
    changes: dict[str, Any],
    check: str,
    reason: str,
) -> None:
    now = int(time.time())
    claims = {k: now + v.seconds if isinstance(v, _In) else v for k, v in changes.items()}
    rejected = _rejected(static, _token(es_key, None, **claims))
    assert (rejected.check, rejected.reason) == (check, reason)
    assert reason in str(rejected)
    assert f"({check})" in str(rejected)


def test_small_clock_differences_are_within_leeway(
    static: TokenValidator, es_key: ec.EllipticCurvePrivateKey
) -> None:
    now = int(time.time())
    token = _token(es_key, None, iat=now + 20, nbf=now + 20, exp=now - 20 + 300)
    assert static.validate(token).subject is not None
    expired_just_now = _token(es_key, None, iat=now - 400, nbf=now - 400, exp=now - 10)
    assert static.validate(expired_just_now).expires_at == now - 10


def test_audience_list_naming_ours_is_accepted(
    static: TokenValidator, es_key: ec.EllipticCurvePrivateKey
) -> None:
    assert static.validate(_token(es_key, None, aud=["account", AUDIENCE])).issuer == ISSUER


def test_unknown_token_type_is_refused(
    static: TokenValidator, es_key: ec.EllipticCurvePrivateKey
) -> None:
    token = jwt.encode(_claims(), es_key, algorithm="ES256", headers={"typ": "id+jwt"})
    assert _rejected(static, token).check == "typ"


@pytest.mark.parametrize("token", ["", "a.b", "not.a.jwt", "x" * 20000])
def test_garbage_is_a_format_error(static: TokenValidator, token: str) -> None:
    assert _rejected(static, token).check == "format"


# ---------------------------------------------------------------------- RFC 8705 binding


def test_binding_to_the_presented_certificate(
    static: TokenValidator, es_key: ec.EllipticCurvePrivateKey
) -> None:
    validated = static.validate(_token(es_key, None))
    check_binding(validated, THUMB)
    with pytest.raises(TokenRejected, match="not bound to the presented client certificate"):
        check_binding(validated, "another-thumbprint")
    with pytest.raises(TokenRejected, match="no client certificate"):
        check_binding(validated, None)
    with pytest.raises(TokenRejected, match="not bound to the presented client certificate"):
        static.validate(_token(es_key, None), cert_thumbprint="another-thumbprint")
    unbound = static.validate(_token(es_key, None, cnf=None))
    with pytest.raises(TokenRejected, match=r"cnf\.x5t#S256 missing"):
        check_binding(unbound, THUMB)
