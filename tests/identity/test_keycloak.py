"""KeycloakTokenProvider against a real Keycloak 26 (scripts/keycloak.sh, realm
keycloak/realm-secure-ds.json): the three client authentication methods, standard
token exchange, refresh, validation against the realm's JWKS, certificate binding,
one refresh for many callers, and the refusals (wrong secret, revoked client,
exchange not permitted, a forged subject token)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from secure_ds import Secret
from secure_ds.errors import TokenRejected, TokenRequestError
from secure_ds.identity import KeycloakTokenProvider, cert_thumbprint
from secure_ds.identity._jwks import JwksCache, TokenValidator, check_binding
from tests._services import (
    KEYCLOAK_MTLS_URL,
    KEYCLOAK_PKI,
    KEYCLOAK_REALM,
    require_keycloak,
)

pytestmark = pytest.mark.integration

GATEWAY = "deepseek-gateway"
APP_SECRET = "secure-ds-app-test-secret-not-for-production"
USER_PASSWORD = "alice-test-password-not-for-production"


class Clock:
    """A clock the test moves: the provider's idea of "now" (Keycloak keeps real time)."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def keycloak() -> str:
    return require_keycloak()


@pytest.fixture(scope="module")
def issuer(keycloak: str) -> str:
    return f"{keycloak}/realms/{KEYCLOAK_REALM}"


@pytest.fixture(scope="module")
def validator(issuer: str) -> TokenValidator:
    """Helper B's validator on the realm's JWKS: signature, iss, aud, exp/nbf/iat."""
    jwks = JwksCache(f"{issuer}/protocol/openid-connect/certs")
    return TokenValidator(issuer=issuer, audience=GATEWAY, keys=jwks, algorithms=("RS256",))


def provider(keycloak: str, method: str = "client_secret", **kwargs: Any) -> KeycloakTokenProvider:
    if method == "client_secret":
        base: dict[str, Any] = {
            "server_url": keycloak,
            "client_id": "secure-ds-app",
            "client_secret": Secret(APP_SECRET),
        }
    elif method == "private_key_jwt":
        base = {
            "server_url": keycloak,
            "client_id": "secure-ds-jwt",
            "assertion_key": KEYCLOAK_PKI / "jwt-client.key",
        }
    else:
        base = {
            "server_url": KEYCLOAK_MTLS_URL,
            "client_id": "secure-ds-mtls",
            "client_cert": KEYCLOAK_PKI / "mtls-client.pem",
            "client_key": KEYCLOAK_PKI / "mtls-client.key",
            "ca_bundle": KEYCLOAK_PKI / "ca.pem",
        }
    base.update(realm=KEYCLOAK_REALM, client_auth=method, audience=GATEWAY)
    base.update(kwargs)
    return KeycloakTokenProvider(**base)


def user_token(keycloak: str) -> str:
    """Alice logs in at the portal (password grant): her token names the secure-ds
    clients in its audience, so they may exchange it."""
    from keycloak import KeycloakOpenID

    portal = KeycloakOpenID(
        server_url=keycloak + "/", realm_name=KEYCLOAK_REALM, client_id="secure-ds-portal"
    )
    return str(portal.token("alice", USER_PASSWORD)["access_token"])


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def mtls_thumbprint() -> str:
    cert = x509.load_pem_x509_certificate((KEYCLOAK_PKI / "mtls-client.pem").read_bytes())
    return cert_thumbprint(cert.public_bytes(serialization.Encoding.DER))


class Requests:
    """Counts the HTTP requests that really reach Keycloak (a response hook on the
    provider's requests session) and remembers each one's grant type."""

    def __init__(self, p: KeycloakTokenProvider) -> None:
        self.grants: list[str] = []
        self._lock = threading.Lock()
        p._oidc.connection._s.hooks["response"].append(self._seen)

    def _seen(self, response: Any, *args: Any, **kwargs: Any) -> None:
        from urllib.parse import parse_qs

        body = response.request.body or ""
        form = parse_qs(body if isinstance(body, str) else body.decode())
        with self._lock:
            self.grants.append(form.get("grant_type", ["?"])[0])

    @property
    def count(self) -> int:
        return len(self.grants)


METHODS = ("client_secret", "private_key_jwt", "tls_client_auth")


# ---------------------------------------------------------------------- obtain + validate


@pytest.mark.parametrize("method", METHODS)
def test_client_credentials_token_for_each_auth_method(
    keycloak: str, validator: TokenValidator, issuer: str, method: str
) -> None:
    p = provider(keycloak, method)
    token = p.token()
    validated = validator.validate(token.value.reveal())  # signature by the realm's JWKS
    claims = claims_of(token.value.reveal())
    assert claims["azp"] == p.client_id
    assert token.issuer == issuer == validated.issuer
    assert token.subject == claims["sub"] == validated.subject
    assert token.jti == claims["jti"]
    assert token.roles == ("deepseek-service",)  # realm_access.roles
    assert token.kind == "jwt"
    assert token.expires_at is not None
    assert p.token() is token  # cached
    assert p.requests_sent == 1


def test_pyjwt_jwks_client_agrees(keycloak: str, issuer: str) -> None:
    """An independent check of the signature: pyjwt's own JWKS client."""
    token = provider(keycloak).token().value.reveal()
    key = jwt.PyJWKClient(f"{issuer}/protocol/openid-connect/certs").get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=GATEWAY, issuer=issuer)
    assert claims["azp"] == "secure-ds-app"


def test_tls_client_auth_token_is_bound_to_the_client_certificate(
    keycloak: str, validator: TokenValidator
) -> None:
    token = provider(keycloak, "tls_client_auth").token()
    thumbprint = mtls_thumbprint()
    assert claims_of(token.value.reveal())["cnf"] == {"x5t#S256": thumbprint}
    assert token.bound_thumbprint == thumbprint
    validated = validator.validate(token.value.reveal(), cert_thumbprint=thumbprint)
    other = cert_thumbprint(b"another certificate")
    with pytest.raises(TokenRejected) as caught:
        check_binding(validated, other)
    assert caught.value.check == "cnf"


def test_secret_and_jwt_tokens_are_not_bound(keycloak: str) -> None:
    """Without a client certificate in the handshake there is nothing to bind to."""
    assert provider(keycloak).token().bound_thumbprint is None


# ---------------------------------------------------------------------- exchange


@pytest.mark.parametrize("method", METHODS)
def test_exchange_down_scopes_a_user_token_to_the_gateway(
    keycloak: str, validator: TokenValidator, method: str
) -> None:
    subject_token = user_token(keycloak)
    before = claims_of(subject_token)
    assert GATEWAY not in before["aud"]  # the user's token is not for the gateway
    p = provider(keycloak, method)
    exchanged = p.exchange(subject_token)
    validated = validator.validate(exchanged.value.reveal())
    claims = claims_of(exchanged.value.reveal())
    assert claims["aud"] == GATEWAY  # only the gateway: down-scoped
    assert claims["azp"] == p.client_id
    assert exchanged.subject == before["sub"] == validated.subject
    assert exchanged.roles == ("deepseek-user",)
    assert exchanged.attributes == {"department": "eng", "clearance": 2}
    if method == "tls_client_auth":
        assert exchanged.bound_thumbprint == mtls_thumbprint()
    assert p.exchange(subject_token) is exchanged  # cached per (subject, audience)
    assert p.requests_sent == 1


def test_exchange_cache_is_keyed_by_subject_and_audience(keycloak: str) -> None:
    p = provider(keycloak)
    seen = Requests(p)
    first = user_token(keycloak)
    a = p.exchange(first)
    assert p.exchange(Secret(first)) is a
    assert seen.count == 1
    # another token of the same user (a new login) is sent to Keycloak, not served
    # from the cache: the cache key's subject was read unverified
    second = user_token(keycloak)
    b = p.exchange(second)
    assert b is not a
    assert b.subject == a.subject
    assert seen.grants == [
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "urn:ietf:params:oauth:grant-type:token-exchange",
    ]


def test_forged_subject_token_with_a_cached_subject_goes_to_keycloak(keycloak: str) -> None:
    """A token that merely claims a cached user's ``sub`` gets nothing from the cache:
    Keycloak verifies it and refuses it."""
    p = provider(keycloak)
    real = user_token(keycloak)
    p.exchange(real)
    claims = claims_of(real)
    forged = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    with pytest.raises(TokenRequestError) as caught:
        p.exchange(forged)
    assert caught.value.status == 400 or caught.value.status == 401
    assert p.requests_sent == 2


def test_exchange_not_permitted_for_the_audience(keycloak: str) -> None:
    p = KeycloakTokenProvider(
        server_url=keycloak,
        realm=KEYCLOAK_REALM,
        client_id="secure-ds-noexchange",
        client_secret=Secret("secure-ds-noexchange-test-secret-not-for-production"),
        audience=GATEWAY,
    )
    with pytest.raises(TokenRequestError) as caught:
        p.exchange(user_token(keycloak))
    message = str(caught.value)
    assert "does not permit client 'secure-ds-noexchange'" in message
    assert GATEWAY in message
    assert "audience mapper" in message  # the fix
    assert caught.value.url == p.token_url


# ---------------------------------------------------------------------- refresh


@pytest.mark.parametrize("method", ["client_secret", "private_key_jwt"])
def test_refresh_before_expiry_uses_the_refresh_token(keycloak: str, method: str) -> None:
    """secure-ds-app and secure-ds-jwt get a refresh token with client_credentials
    (realm attribute client_credentials.use_refresh_token); with private_key_jwt the
    refresh request carries a fresh client assertion (written here, not by the library)."""
    clock = Clock()
    p = provider(keycloak, method, clock=clock)
    seen = Requests(p)
    first = p.token()
    assert first.expires_at is not None
    lifetime = first.expires_at - clock.now
    clock.now += lifetime * 0.7  # 30 % left: still served from the cache
    assert p.token() is first
    clock.now += lifetime * 0.15  # 15 % left: under the 20 % margin, refreshed
    second = p.token()
    assert second is not first
    assert second.jti != first.jti
    assert second.subject == first.subject
    assert seen.grants == ["client_credentials", "refresh_token"]


def test_refresh_without_refresh_token_runs_the_grant_again(keycloak: str) -> None:
    clock = Clock()
    p = provider(keycloak, "tls_client_auth", clock=clock)  # no refresh token for it
    seen = Requests(p)
    first = p.token()
    clock.now += 290
    second = p.token()
    assert second.jti != first.jti
    assert second.bound_thumbprint == first.bound_thumbprint == mtls_thumbprint()
    assert seen.grants == ["client_credentials", "client_credentials"]


def test_exchanged_token_is_exchanged_again_when_due(keycloak: str) -> None:
    clock = Clock()
    p = provider(keycloak, clock=clock)
    subject_token = user_token(keycloak)
    first = p.exchange(subject_token)
    clock.now += 290
    second = p.exchange(subject_token)
    assert second.jti != first.jti
    assert p.requests_sent == 2


@pytest.mark.parametrize("kind", ["token", "exchange"])
def test_concurrent_callers_trigger_one_refresh(keycloak: str, kind: str) -> None:
    clock = Clock()
    p = provider(keycloak, clock=clock)
    subject_token = user_token(keycloak)
    get: Callable[[], Any] = p.token if kind == "token" else (lambda: p.exchange(subject_token))
    get()
    seen = Requests(p)
    clock.now += 290  # every caller below finds the token due
    threads = 16
    barrier = threading.Barrier(threads)
    results: list[Any] = []
    errors: list[BaseException] = []

    def call() -> None:
        barrier.wait()
        try:
            results.append(get())
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=call) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors
    assert len(results) == threads
    assert seen.count == 1  # one real request to Keycloak for sixteen callers
    assert all(r is results[0] for r in results)


def test_invalidate_after_a_401_fetches_anew(keycloak: str) -> None:
    p = provider(keycloak)
    first = p.token()
    p.invalidate(first)
    second = p.token()
    assert second is not first
    assert p.requests_sent == 2


def test_rotated_certificate_drops_the_bound_token(keycloak: str) -> None:
    p = provider(keycloak, "tls_client_auth")
    bound = p.token()
    p.on_certificate_rotated(
        x509.load_pem_x509_certificate(
            (KEYCLOAK_PKI / "mtls-client.pem").read_bytes()
        ).public_bytes(serialization.Encoding.DER)
    )
    assert p.token() is bound  # same certificate: kept
    p.on_certificate_rotated(b"not the same certificate")
    assert p.token() is not bound
    assert p.requests_sent == 2


# ---------------------------------------------------------------------- refusals


def test_wrong_client_secret(keycloak: str) -> None:
    wrong = "wrong-secret-0123456789"
    p = provider(keycloak, client_secret=Secret(wrong))
    with pytest.raises(TokenRequestError) as caught:
        p.token()
    message = str(caught.value)
    assert caught.value.oauth_error == "unauthorized_client"
    assert "credentials are wrong" in message
    assert "client 'secure-ds-app'" in message
    assert "SECURE_DS_KEYCLOAK_CLIENT_SECRET" in message
    assert wrong not in message
    assert wrong not in repr(p)
    assert APP_SECRET not in repr(p)


def test_revoked_client(keycloak: str) -> None:
    secret = "secure-ds-revoked-test-secret-not-for-production"
    p = KeycloakTokenProvider(
        server_url=keycloak,
        realm=KEYCLOAK_REALM,
        client_id="secure-ds-revoked",
        client_secret=Secret(secret),
    )
    with pytest.raises(TokenRequestError) as caught:
        p.token()
    message = str(caught.value)
    assert caught.value.oauth_error == "invalid_client"
    assert "disabled (revoked)" in message
    assert "client 'secure-ds-revoked'" in message
    assert secret not in message


def test_private_key_jwt_with_an_unregistered_key(keycloak: str, tmp_path: Path) -> None:
    key = tmp_path / "other.key"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(TokenRequestError) as caught:
        provider(keycloak, "private_key_jwt", assertion_key=key).token()
    assert "SECURE_DS_KEYCLOAK_CLIENT_ASSERTION_KEY" in str(caught.value)


def test_tls_client_auth_with_a_certificate_keycloak_does_not_trust(keycloak: str) -> None:
    """The JWT client's self-signed certificate is not from Keycloak's trust store:
    Keycloak ends the handshake, and the error says to check the client certificate."""
    p = provider(
        keycloak,
        "tls_client_auth",
        client_cert=KEYCLOAK_PKI / "jwt-client.pem",
        client_key=KEYCLOAK_PKI / "jwt-client.key",
    )
    with pytest.raises(TokenRequestError) as caught:
        p.token()
    message = str(caught.value)
    assert "refused the client certificate" in message
    assert "SECURE_DS_CLIENT_CERT" in message
    assert caught.value.status is None


def test_keycloak_certificate_not_trusted(keycloak: str) -> None:
    p = provider(keycloak, "tls_client_auth", ca_bundle=None)  # the system store
    with pytest.raises(TokenRequestError) as caught:
        p.token()
    message = str(caught.value)
    assert "does not trust" in message
    assert "SECURE_DS_KEYCLOAK_CA_BUNDLE" in message


@pytest.fixture
def sandbox_trusting_keycloak() -> Iterator[Any]:
    """The in-process sandbox, trusting Keycloak's JWKS for tokens and Keycloak's test
    CA for client certificates (the certificate the token is bound to)."""
    import ssl

    from secure_ds.sandbox import Sandbox

    class KeycloakSandbox(Sandbox):
        def _mint(self, directory: Path) -> tuple[Any, Any, ssl.SSLContext]:
            ca, issuer_key, context = super()._mint(directory)
            context.load_verify_locations(cafile=str(KEYCLOAK_PKI / "ca.pem"))
            return ca, issuer_key, context

    keycloak = require_keycloak()
    issuer = f"{keycloak}/realms/{KEYCLOAK_REALM}"
    with KeycloakSandbox(
        jwks_url=f"{issuer}/protocol/openid-connect/certs",
        jwks_issuer=issuer,
        jwks_audience=GATEWAY,
    ) as sb:
        yield sb


def test_secure_client_end_to_end_with_keycloak_tokens(
    sandbox_trusting_keycloak: Any, tmp_path: Path
) -> None:
    """SecureDeepSeek with SECURE_DS_TOKEN_PROVIDER=keycloak (tls_client_auth) calls
    the sandbox, which verifies Keycloak's token by the realm's JWKS and its binding to
    the connection's client certificate; then the same on behalf of a user (exchange)."""
    from secure_ds import SecureDeepSeek
    from secure_ds.identity import token_provider_from_settings

    sb = sandbox_trusting_keycloak
    keycloak = require_keycloak()
    settings = sb.client_settings(
        client_cert=KEYCLOAK_PKI / "mtls-client.pem",
        client_key=KEYCLOAK_PKI / "mtls-client.key",
        token_provider="keycloak",
        issuer_key=None,
        keycloak_url=KEYCLOAK_MTLS_URL,
        keycloak_realm=KEYCLOAK_REALM,
        keycloak_client_id="secure-ds-mtls",
        keycloak_client_auth="tls_client_auth",
        keycloak_ca_bundle=KEYCLOAK_PKI / "ca.pem",
        audience=GATEWAY,
        audit_path=tmp_path / "audit.jsonl",
    )
    p = token_provider_from_settings(settings)
    assert isinstance(p, KeycloakTokenProvider)
    with SecureDeepSeek(settings=settings, token_provider=p) as client:
        answer = client.chat.completions.create(
            model="deepseek-flash", messages=[{"role": "user", "content": "hello"}]
        )
        assert answer.choices[0].message.content
    workload = p.token()
    assert sb.stats.last_claims["sub"] == workload.subject

    alice = user_token(keycloak)
    with SecureDeepSeek(settings=settings, token_provider=p.on_behalf_of(alice)) as client:
        client.chat.completions.create(
            model="deepseek-flash", messages=[{"role": "user", "content": "hello"}]
        )
    assert sb.stats.last_claims["sub"] == claims_of(alice)["sub"]
