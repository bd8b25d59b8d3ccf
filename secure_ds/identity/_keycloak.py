"""Tokens from a real Keycloak (26.2+): client credentials and standard token exchange.

:class:`KeycloakTokenProvider` authenticates to Keycloak's token endpoint as one client,
by ``client_secret``, by a signed JWT (``private_key_jwt``, RFC 7523) or by the mutual-TLS
client certificate (``tls_client_auth``, RFC 8705; Keycloak then binds the access token
to that certificate with ``cnf.x5t#S256``). It obtains

- the workload's own token with the ``client_credentials`` grant (:meth:`token`), and
- a down-scoped token for a user with RFC 8693 *standard token exchange*
  (:meth:`exchange`): the user's access token in, a token whose audience is the DeepSeek
  gateway out.

Tokens are cached per (subject, audience) and refreshed once ``refresh_fraction`` of
their lifetime is left; concurrent callers of one key wait for one request (a lock per
key), callers of other keys are not held up. Every request has a connect and a read
timeout: a Keycloak that is down or hangs becomes an :class:`~secure_ds.errors.IdentityError`
naming the URL, never a hang.

python-keycloak (7.x) does the requests where it can: ``KeycloakOpenID.token`` (its
``**extra`` carries a client assertion), ``refresh_token`` and ``exchange_token``. Its
``refresh_token`` and ``exchange_token`` add ``client_secret`` but take no extra form
fields, so with ``private_key_jwt`` they cannot carry the client assertion: those two
requests are written here (:meth:`KeycloakTokenProvider._post_token`), sent through the
library's own connection (same session, timeouts, TLS settings).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .._secret import Secret
from ..config import Settings
from ..errors import IdentityError, TokenRequestError
from ._tls import cert_thumbprint
from ._tokens import Token, TokenProvider, _unverified_claims

if TYPE_CHECKING:
    from keycloak import KeycloakOpenID

__all__ = ["ClientAuth", "KeycloakTokenProvider"]

ClientAuth = Literal["client_secret", "private_key_jwt", "tls_client_auth"]
CLIENT_AUTH_METHODS: tuple[ClientAuth, ...] = (
    "client_secret",
    "private_key_jwt",
    "tls_client_auth",
)

_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
_ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
_ASSERTION_TTL = 60  # seconds; the assertion is used once, at once


@dataclass
class _Entry:
    """One cache slot: the token for a (subject, audience) and what refreshes it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    token: Token | None = None
    refresh_at: float = 0.0
    refresh_token: Secret | None = None
    refresh_expires_at: float = 0.0
    # exchange only: SHA-256 of the subject token the cached token was exchanged for
    source: bytes = b""
    # requests completed for this key, and how the last one failed (None: it did not)
    # for which subject token
    attempts: int = 0
    error: IdentityError | None = None
    error_source: bytes = b""


class KeycloakTokenProvider(TokenProvider):
    """Access tokens from Keycloak for one client (see the module docstring).

    ``server_url`` is Keycloak's base URL (``https://sso.example.com``; with
    ``tls_client_auth`` the https listener that asks for client certificates).
    ``audience`` is what :meth:`exchange` asks for by default (the gateway's client id);
    the ``client_credentials`` token carries whatever audience the realm gives the
    client (an audience mapper), so ``audience`` there only keys the cache.
    """

    #: at most this many exchanged tokens are cached (least recently used go first)
    max_entries = 1024

    def __init__(
        self,
        *,
        server_url: str,
        realm: str,
        client_id: str,
        client_auth: ClientAuth = "client_secret",
        client_secret: Secret | None = None,
        assertion_key: Path | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        ca_bundle: Path | None = None,
        audience: str | None = None,
        scope: str | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        if client_auth not in CLIENT_AUTH_METHODS:
            raise IdentityError(
                f"Unknown Keycloak client authentication {client_auth!r}.",
                hint="Use client_secret, private_key_jwt or tls_client_auth.",
            )
        self.server_url = server_url.rstrip("/")
        self.realm = realm
        self.client_id = client_id
        self.client_auth: ClientAuth = client_auth
        self.audience = audience
        self.scope = scope
        self.token_url = f"{self.server_url}/realms/{realm}/protocol/openid-connect/token"
        self.timeout = (connect_timeout, read_timeout)
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        # subject token -> (cache subject, its SHA-256): exchange()'s fast path
        self._subject_tokens: dict[str, tuple[str, bytes]] = {}
        #: token-endpoint requests sent (tests and benchmarks read it)
        self.requests_sent = 0
        self._count_lock = threading.Lock()

        self._assertion_key: Any = None
        self._assertion_alg = ""
        if client_auth == "client_secret" and (client_secret is None or not client_secret.reveal()):
            raise IdentityError(
                f"Keycloak client {client_id!r} authenticates with client_secret, but no "
                "secret was given.",
                hint="Set SECURE_DS_KEYCLOAK_CLIENT_SECRET to the client's secret.",
            )
        if client_auth == "private_key_jwt":
            if assertion_key is None:
                raise IdentityError(
                    f"Keycloak client {client_id!r} authenticates with private_key_jwt, but "
                    "no signing key was given.",
                    hint="Set SECURE_DS_KEYCLOAK_CLIENT_ASSERTION_KEY to the PEM private key "
                    "whose certificate or JWKS is registered for the client in Keycloak.",
                )
            self._assertion_key, self._assertion_alg = _load_assertion_key(assertion_key)
        cert: tuple[str, str] | None = None
        if client_auth == "tls_client_auth":
            if client_cert is None or client_key is None:
                raise IdentityError(
                    f"Keycloak client {client_id!r} authenticates with tls_client_auth, but "
                    "no client certificate and key were given.",
                    hint="Set SECURE_DS_CLIENT_CERT and SECURE_DS_CLIENT_KEY (the certificate "
                    "Keycloak maps to the client; tokens are bound to it).",
                )
            cert = (str(client_cert), str(client_key))

        # imported here, not at module level: python-keycloak (and requests, httpx,
        # jwcrypto under it) is loaded only by those who configure Keycloak
        try:
            from keycloak import KeycloakOpenID
        except ImportError:
            raise IdentityError(
                "SECURE_DS_TOKEN_PROVIDER=keycloak needs python-keycloak, which is not installed.",
                hint="Install it: pip install 'secure-ds[keycloak]'.",
            ) from None

        self._oidc: KeycloakOpenID = KeycloakOpenID(
            server_url=self.server_url + "/",
            realm_name=realm,
            client_id=client_id,
            # the library adds client_secret to every token-endpoint form it builds
            client_secret_key=client_secret.reveal()
            if client_secret and client_auth == "client_secret"
            else None,
            # verify and cert are set below, on the connection: given here they would
            # also configure the library's httpx async client (unused; and httpx
            # deprecates a path as verify=)
            timeout=None,  # replaced below by (connect, read)
            # no retries: urllib3 would resend the POST after a read timeout, doubling
            # the wait on a Keycloak that hangs (the guard chain has its own retries)
            max_retries=0,
        )
        connection = self._oidc.connection
        connection.verify = str(ca_bundle) if ca_bundle else True
        connection.cert = cert
        # requests takes (connect, read); the library's type says int but passes it through
        connection.timeout = self.timeout  # type: ignore[assignment]

    @classmethod
    def from_settings(cls, settings: Settings) -> KeycloakTokenProvider:
        """The provider ``SECURE_DS_KEYCLOAK_*`` describe (validated by :class:`Settings`)."""
        assert settings.keycloak_url is not None
        assert settings.keycloak_realm is not None
        assert settings.keycloak_client_id is not None
        return cls(
            server_url=settings.keycloak_url,
            realm=settings.keycloak_realm,
            client_id=settings.keycloak_client_id,
            client_auth=settings.keycloak_client_auth,
            client_secret=settings.keycloak_client_secret,
            assertion_key=settings.keycloak_client_assertion_key,
            client_cert=settings.client_cert,
            client_key=settings.client_key,
            ca_bundle=settings.keycloak_ca_bundle,
            audience=settings.audience,
            scope=settings.keycloak_scope,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.keycloak_timeout,
        )

    def __repr__(self) -> str:
        return (
            f"KeycloakTokenProvider(token_url={self.token_url!r}, client_id={self.client_id!r}, "
            f"client_auth={self.client_auth!r})"
        )

    # ------------------------------------------------------------------ public API

    def token(self) -> Token:
        """The client's own access token (``client_credentials``), cached."""
        return self._through_cache(
            ("client:" + self.client_id, self.audience or ""), b"", self._client_credentials
        )

    def exchange(
        self, subject_token: str | Secret, *, audience: str | None = None, scope: str | None = None
    ) -> Token:
        """RFC 8693 standard token exchange: ``subject_token`` (a user's access token
        that names this client in its audience) for an access token whose audience is
        ``audience`` (default: the provider's). Cached per (subject, audience).

        The cache key's subject is read from the subject token *unverified*, so a cached
        token is handed out only to a caller presenting the very subject token it was
        exchanged for (compared by SHA-256); any other token, even with the same ``sub``,
        goes to Keycloak, which verifies it.
        """
        value = subject_token.reveal() if isinstance(subject_token, Secret) else subject_token
        target = audience or self.audience
        if not target:
            raise IdentityError(
                "Token exchange needs an audience (the gateway's client id), and none was given.",
                hint="Pass audience=..., or set SECURE_DS_AUDIENCE (e.g. deepseek-gateway).",
            )
        # a subject token seen before skips the hash and the JSON decode (the cached hit
        # is then one dict lookup: ~1 us instead of ~12 us for a 1 KB token)
        known = self._subject_tokens.get(value)
        if known is None:
            digest = hashlib.sha256(value.encode()).digest()
            sub = _unverified_claims(value).get("sub")
            subject = f"user:{sub}" if isinstance(sub, str) else "token:" + digest.hex()
            known = (subject, digest)
            with self._lock:
                if len(self._subject_tokens) >= self.max_entries:
                    self._subject_tokens.clear()
                self._subject_tokens[value] = known
        subject, digest = known
        return self._through_cache(
            (subject, target), digest, lambda: self._exchange(value, target, scope or self.scope)
        )

    def on_behalf_of(
        self, subject_token: str | Secret, *, audience: str | None = None
    ) -> TokenProvider:
        """A provider for ``SecureDeepSeek(token_provider=...)`` whose token is
        ``exchange(subject_token)``: calls made with it act as the user, down-scoped to
        the gateway. It shares this provider's cache, connection and credentials."""
        secret = subject_token if isinstance(subject_token, Secret) else Secret(subject_token)
        return _OnBehalfOf(self, secret, audience)

    def invalidate(self, token: Token) -> None:
        """Drop ``token`` from the cache (after a 401) so the next call fetches anew."""
        with self._lock:
            for entry in self._entries.values():
                if entry.token is token:
                    entry.token = None
                    entry.refresh_at = 0.0

    def on_certificate_rotated(self, cert_der: bytes) -> None:
        """The client certificate was rotated: drop every cached token bound to another
        certificate (and its refresh token), and with ``tls_client_auth`` close the
        pooled connections, so the next request's handshake presents the new pair
        (requests reads the certificate files for each new connection)."""
        thumbprint = cert_thumbprint(cert_der)
        with self._lock:
            for entry in self._entries.values():
                token = entry.token
                if token is not None and token.bound_thumbprint not in (None, thumbprint):
                    entry.token = None
                    entry.refresh_at = 0.0
                    entry.refresh_token = None
        if self.client_auth == "tls_client_auth":
            session = getattr(self._oidc.connection, "_s", None)
            if session is not None:
                session.close()  # adapters drop their pools; the next request makes new ones

    # ------------------------------------------------------------------ cache

    def _through_cache(
        self, key: tuple[str, str], source: bytes, fetch: Callable[[], dict[str, Any]]
    ) -> Token:
        entry = self._entries.get(key)
        if entry is not None:
            token = entry.token
            if token is not None and entry.source == source and self._clock() < entry.refresh_at:
                return token
        else:
            with self._lock:
                entry = self._entries.get(key)
                if entry is None:
                    entry = self._entries[key] = _Entry()
                    while len(self._entries) > self.max_entries:
                        self._entries.popitem(last=False)
                else:
                    self._entries.move_to_end(key)
        attempts = entry.attempts
        with entry.lock:  # one request per key: the others wait and take its result
            token = entry.token
            if token is not None and entry.source == source and self._clock() < entry.refresh_at:
                return token
            if entry.attempts != attempts and entry.error and entry.error_source == source:
                # the request this caller waited for failed: share its error rather than
                # queue another (with Keycloak down, N callers would wait N timeouts)
                raise entry.error.with_traceback(None)
            try:
                answer = self._refresh(entry) if entry.source == source else None
                if answer is None:
                    answer = fetch()
            except IdentityError as exc:
                entry.error, entry.error_source = exc, source
                raise
            finally:
                entry.attempts += 1  # counted once done: who waited for it sees the change
            entry.error = None
            now = self._clock()
            token = self._token_from(answer, now)
            lifetime = max((token.expires_at or now) - now, 0.0)
            entry.token = token
            entry.source = source
            entry.refresh_at = now + lifetime * (1.0 - self.refresh_fraction)
            refresh = answer.get("refresh_token")
            refresh_in = answer.get("refresh_expires_in")
            if isinstance(refresh, str) and isinstance(refresh_in, int | float) and refresh_in > 0:
                entry.refresh_token = Secret(refresh)
                entry.refresh_expires_at = now + float(refresh_in)
            else:
                entry.refresh_token = None
                entry.refresh_expires_at = 0.0
            return token

    def _refresh(self, entry: _Entry) -> dict[str, Any] | None:
        """Use the entry's refresh token while it lasts; ``None`` when there is none or
        Keycloak no longer accepts it (the caller then runs the full grant)."""
        refresh = entry.refresh_token
        if refresh is None or entry.token is None:
            return None
        # a refresh token that expires within the access token's margin is not worth it
        if self._clock() >= entry.refresh_expires_at - 5.0:
            return None
        try:
            if self.client_auth == "private_key_jwt":
                return self._post_token(
                    {"grant_type": "refresh_token", "refresh_token": refresh.reveal()}
                )
            return self._call(lambda: self._oidc.refresh_token(refresh.reveal()))
        except TokenRequestError as exc:
            if exc.oauth_error == "invalid_grant":  # session gone or token expired
                return None
            raise

    # ------------------------------------------------------------------ grants

    def _fetch(self) -> Token:
        return self._token_from(self._client_credentials(), self._clock())

    def _client_credentials(self) -> dict[str, Any]:
        extra: dict[str, Any] = self._assertion_fields()
        # the library's token() always sends username/password fields (empty here);
        # Keycloak ignores them for client_credentials
        return self._call(
            lambda: self._oidc.token(
                grant_type="client_credentials", scope=self.scope or "openid", **extra
            )
        )

    def _exchange(self, subject_token: str, audience: str, scope: str | None) -> dict[str, Any]:
        form = {
            "grant_type": _EXCHANGE_GRANT,
            "subject_token": subject_token,
            "subject_token_type": _ACCESS_TOKEN_TYPE,
            # an access token, not the library's default refresh token: standard token
            # exchange issues no refresh token to a confidential client unless asked
            "requested_token_type": _ACCESS_TOKEN_TYPE,
            "audience": audience,
        }
        if scope:
            form["scope"] = scope
        if self.client_auth == "private_key_jwt":
            # exchange_token() cannot carry a client assertion: the request is built here
            return self._post_token(form)
        return self._call(
            lambda: self._oidc.exchange_token(
                subject_token,
                audience=audience,
                subject_token_type=_ACCESS_TOKEN_TYPE,
                requested_token_type=_ACCESS_TOKEN_TYPE,
                # the library always sends a scope (an empty one is refused as
                # invalid_scope); "openid" adds no audience and no claims here
                scope=scope or "openid",
            )
        )

    def _assertion_fields(self) -> dict[str, str]:
        if self.client_auth != "private_key_jwt":
            return {}
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "exp": now + _ASSERTION_TTL,
        }
        assertion = jwt.encode(claims, self._assertion_key, algorithm=self._assertion_alg)
        return {"client_assertion_type": _ASSERTION_TYPE, "client_assertion": assertion}

    def _post_token(self, form: dict[str, str]) -> dict[str, Any]:
        """A token-endpoint request python-keycloak cannot make (see the module docstring)."""
        data = {"client_id": self.client_id, **form, **self._assertion_fields()}
        path = f"realms/{self.realm}/protocol/openid-connect/token"

        def send() -> dict[str, Any]:
            from keycloak.exceptions import KeycloakPostError, raise_error_from_response

            response = self._oidc.connection.raw_post(path, data=data)
            answer = raise_error_from_response(response, KeycloakPostError)
            if not isinstance(answer, dict):
                raise KeycloakPostError(
                    error_message="not a JSON object", response_code=response.status_code
                )
            return answer

        return self._call(send)

    # ------------------------------------------------------------------ errors

    def _call(self, request: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Send one token-endpoint request; every failure becomes a TokenRequestError."""
        from keycloak.exceptions import KeycloakConnectionError, KeycloakError

        with self._count_lock:
            self.requests_sent += 1
        try:
            answer = request()
        except KeycloakConnectionError as exc:
            raise self._connection_error(exc.__cause__ or exc) from None
        except KeycloakError as exc:
            raise self._refusal(exc.response_code, exc.response_body) from None
        except TypeError as exc:  # the library's check that the answer is a JSON object
            raise TokenRequestError(
                f"Keycloak's token endpoint {self.token_url} answered something that is not "
                f"a token response ({exc.__class__.__name__}).",
                url=self.token_url,
                hint="Check SECURE_DS_KEYCLOAK_URL and SECURE_DS_KEYCLOAK_REALM point at a "
                "Keycloak realm (a proxy may be answering instead).",
            ) from None
        if not isinstance(answer.get("access_token"), str):
            raise TokenRequestError(
                f"Keycloak's token endpoint {self.token_url} answered without an access token.",
                url=self.token_url,
                hint="Check the client's settings in Keycloak.",
            )
        return answer

    def _connection_error(self, cause: BaseException) -> TokenRequestError:
        name = type(cause).__name__
        connect, read = self.timeout
        if "ConnectTimeout" in name:
            problem = f"did not accept a connection within {connect:g} s"
            fix = "Check that Keycloak is running and reachable from here"
        elif "Timeout" in name:
            problem = f"did not answer within {read:g} s"
            fix = "Keycloak is overloaded or hanging: check its health and logs"
        elif "SSLError" in name and "CERTIFICATE_VERIFY_FAILED" in str(cause):
            problem = "presented a certificate this client does not trust"
            fix = "Set SECURE_DS_KEYCLOAK_CA_BUNDLE to the CA that issued Keycloak's certificate"
        elif "SSLError" in name:
            problem = "ended the TLS handshake (it refused the client certificate, or TLS failed)"
            fix = (
                "With tls_client_auth, check that SECURE_DS_CLIENT_CERT is issued by a CA in "
                "Keycloak's trust store (https-trust-store-file) and matches SECURE_DS_CLIENT_KEY"
            )
        else:
            problem = f"could not be reached ({name})"
            fix = "Check that Keycloak is running and SECURE_DS_KEYCLOAK_URL is its base URL"
        return TokenRequestError(
            f"Keycloak's token endpoint {self.token_url} {problem}.",
            url=self.token_url,
            hint=f"{fix} (try: curl {self.server_url}/realms/{self.realm}/.well-known/"
            "openid-configuration).",
        )

    def _refusal(self, status: int | None, body: bytes | None) -> TokenRequestError:
        import json

        try:
            parsed = json.loads(body or b"")
        except ValueError:
            parsed = None
        error = str(parsed.get("error", "")) if isinstance(parsed, dict) else ""
        description = str(parsed.get("error_description", "")) if isinstance(parsed, dict) else ""
        said = f" ({error}: {description[:200]})" if error else ""
        who = f"client {self.client_id!r} of realm {self.realm!r}"
        if error in ("invalid_client", "unauthorized_client"):
            # Keycloak says "Invalid client or Invalid client credentials" either way; the
            # code tells which is likelier: unauthorized_client when the client exists
            # and its authenticator failed, invalid_client when it is disabled or unknown
            likely = (
                "its credentials are wrong (or the client is disabled or unknown)"
                if error == "unauthorized_client"
                else "the client is disabled (revoked) or unknown (or its credentials are wrong)"
            )
            return TokenRequestError(
                f"Keycloak refused to authenticate {who}{said}: {likely}.",
                url=self.token_url,
                status=status,
                oauth_error=error,
                hint=_credentials_fix(self.client_auth),
            )
        if "audience" in description.lower() or error in ("access_denied", "invalid_target"):
            return TokenRequestError(
                f"Keycloak does not permit {who} to exchange a token for the requested "
                f"audience{said}.",
                url=self.token_url,
                status=status,
                oauth_error=error,
                hint="In Keycloak, enable standard token exchange on the client and give it "
                "the audience (a client scope with an audience mapper for the gateway), or "
                "request an audience it is allowed.",
            )
        if error in ("invalid_token", "invalid_grant", "invalid_request") and description:
            return TokenRequestError(
                f"Keycloak refused the request of {who}{said}.",
                url=self.token_url,
                status=status,
                oauth_error=error,
                hint="For token exchange, pass a current access token of the user that names "
                "this client in its audience; otherwise check the client's grants in Keycloak.",
            )
        return TokenRequestError(
            f"Keycloak's token endpoint {self.token_url} answered HTTP {status}{said}.",
            url=self.token_url,
            status=status,
            oauth_error=error or None,
            hint="Check SECURE_DS_KEYCLOAK_URL and SECURE_DS_KEYCLOAK_REALM, and Keycloak's log.",
        )

    # ------------------------------------------------------------------ tokens

    def _token_from(self, answer: dict[str, Any], now: float) -> Token:
        value = str(answer["access_token"])
        claims = _unverified_claims(value)
        expires_in = answer.get("expires_in")
        # the local clock plus expires_in, not the token's exp: immune to clock skew
        if isinstance(expires_in, int | float) and expires_in > 0:
            expires_at: float | None = now + float(expires_in)
        elif isinstance(claims.get("exp"), int | float):
            expires_at = float(claims["exp"])
        else:
            expires_at = None
        realm_access = claims.get("realm_access")
        roles = realm_access.get("roles") if isinstance(realm_access, dict) else None
        attrs = claims.get("attrs")
        cnf = claims.get("cnf")
        thumb = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
        sub = claims.get("sub") or claims.get("preferred_username")
        return Token(
            value=Secret(value),
            kind="jwt",
            expires_at=expires_at,
            subject=sub if isinstance(sub, str) else None,
            issuer=claims.get("iss") if isinstance(claims.get("iss"), str) else None,
            jti=claims.get("jti") if isinstance(claims.get("jti"), str) else None,
            roles=tuple(str(r) for r in roles) if isinstance(roles, list) else (),
            attributes=attrs if isinstance(attrs, dict) else {},
            bound_thumbprint=thumb if isinstance(thumb, str) else None,
        )


class _OnBehalfOf(TokenProvider):
    """:meth:`KeycloakTokenProvider.on_behalf_of`: the exchanged token as a provider."""

    def __init__(
        self, parent: KeycloakTokenProvider, subject_token: Secret, audience: str | None
    ) -> None:
        super().__init__()
        self._parent = parent
        self._subject_token = subject_token
        self._audience = audience

    def token(self) -> Token:
        return self._parent.exchange(self._subject_token, audience=self._audience)

    def _fetch(self) -> Token:
        return self.token()

    def invalidate(self, token: Token) -> None:
        self._parent.invalidate(token)

    def on_certificate_rotated(self, cert_der: bytes) -> None:
        self._parent.on_certificate_rotated(cert_der)


def _credentials_fix(method: ClientAuth) -> str:
    if method == "client_secret":
        return (
            "Check SECURE_DS_KEYCLOAK_CLIENT_ID and SECURE_DS_KEYCLOAK_CLIENT_SECRET (the "
            "client's Credentials tab in Keycloak), and that the client is enabled."
        )
    if method == "private_key_jwt":
        return (
            "Check that SECURE_DS_KEYCLOAK_CLIENT_ASSERTION_KEY is the key whose certificate "
            "(or JWKS) the client has in Keycloak (Credentials: Signed JWT), that the clocks "
            "agree, and that the client is enabled."
        )
    return (
        "Check that SECURE_DS_CLIENT_CERT is issued by a CA in Keycloak's trust store and "
        "its subject DN is the one the client expects (Credentials: X509 certificate), that "
        "SECURE_DS_KEYCLOAK_URL is Keycloak's https listener, and that the client is enabled."
    )


def _load_assertion_key(path: Path) -> tuple[Any, str]:
    """The private_key_jwt signing key and its JWS algorithm (ES256, RS256 or EdDSA)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except OSError as exc:
        raise IdentityError(
            f"Cannot read the client assertion key {path} ({exc.strerror or type(exc).__name__}).",
            hint="Point SECURE_DS_KEYCLOAK_CLIENT_ASSERTION_KEY at a readable PEM private key.",
        ) from None
    except (TypeError, ValueError):
        raise IdentityError(
            f"{path} holds no unencrypted PEM private key.",
            hint="Point SECURE_DS_KEYCLOAK_CLIENT_ASSERTION_KEY at an unencrypted PEM key "
            "(EC P-256, RSA or Ed25519), mode 0600.",
        ) from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return key, "RS256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key, "EdDSA"
    raise IdentityError(
        f"The client assertion key {path} is a {type(key).__name__}, which cannot sign the "
        "assertion.",
        hint="Use an EC P-256 (ES256), RSA >= 2048 (RS256) or Ed25519 (EdDSA) key, and "
        "register its certificate for the client in Keycloak.",
    )
