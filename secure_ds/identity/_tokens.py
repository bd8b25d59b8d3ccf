"""Token providers: where the bearer token on every request comes from.

A :class:`TokenProvider` hands out :class:`Token` values and keeps them cached until
shortly before they expire. The guard chain asks for a token once per call (cheap: a
cached value under a lock) and calls :meth:`TokenProvider.invalidate` when the endpoint
answers 401, so the retry carries a fresh one.

:class:`EmbeddedIssuer` is the default: it signs short-lived (5 min) ES256 or EdDSA
JWT access tokens (RFC 9068 shape) for the configured subject, bound to the client
certificate by an RFC 8705 ``cnf.x5t#S256`` claim. Holding the issuer key means the
workload may assert its own identity, so the key must be guarded like the client key;
an external issuer (Keycloak) removes that trust.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from .._secret import Secret
from ..config import Settings
from ..errors import IdentityError
from ._tls import cert_thumbprint

__all__ = [
    "ApiKeyProvider",
    "EmbeddedIssuer",
    "StaticTokenProvider",
    "Token",
    "TokenProvider",
    "token_provider_from_settings",
]

TokenKind = Literal["jwt", "api_key"]


@dataclass(frozen=True)
class Token:
    """A bearer credential and what the audit record may say about it (never the value)."""

    value: Secret
    kind: TokenKind
    expires_at: float | None = None
    subject: str | None = None
    issuer: str | None = None
    jti: str | None = None
    roles: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    bound_thumbprint: str | None = None

    @property
    def authorization(self) -> str:
        return "Bearer " + self.value.reveal()


class TokenProvider(ABC):
    """Supplies the bearer token for outgoing requests.

    Subclasses implement :meth:`_fetch`; :meth:`token` caches its result and refreshes
    it once ``refresh_margin`` of its lifetime is left. One lock guards the cache, so
    concurrent callers trigger one refresh, not many.
    """

    #: refresh when less than this fraction of the lifetime remains
    refresh_fraction = 0.2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: Token | None = None
        self._refresh_at = 0.0

    def token(self) -> Token:
        now = time.time()
        cached = self._cached
        if cached is not None and now < self._refresh_at:
            return cached
        with self._lock:
            cached = self._cached
            if cached is not None and time.time() < self._refresh_at:
                return cached
            fresh = self._fetch()
            self._cached = fresh
            if fresh.expires_at is None:
                self._refresh_at = float("inf")
            else:
                lifetime = max(fresh.expires_at - time.time(), 0.0)
                self._refresh_at = fresh.expires_at - lifetime * self.refresh_fraction
            return fresh

    def invalidate(self, token: Token) -> None:
        """Drop ``token`` from the cache (after a 401) so the next call fetches anew."""
        with self._lock:
            if self._cached is token:
                self._cached = None
                self._refresh_at = 0.0

    def on_certificate_rotated(self, cert_der: bytes) -> None:
        """The client certificate was rotated (:mod:`._rotation`): drop a cached token
        bound to another certificate, so the next call fetches one bound to this one.
        Providers that bind tokens themselves (or authenticate with the certificate)
        extend this to use the new one."""
        thumbprint = cert_thumbprint(cert_der)
        with self._lock:
            cached = self._cached
            if cached is not None and cached.bound_thumbprint not in (None, thumbprint):
                self._cached = None
                self._refresh_at = 0.0

    @abstractmethod
    def _fetch(self) -> Token:
        """Obtain a new token. Raise :class:`IdentityError` with a fix on failure."""


class EmbeddedIssuer(TokenProvider):
    """Signs certificate-bound JWT access tokens locally (ES256 or EdDSA by key type)."""

    def __init__(
        self,
        *,
        signing_key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
        issuer: str,
        audience: str,
        subject: str,
        client_cert_der: bytes,
        roles: Sequence[str] = (),
        attributes: Mapping[str, Any] | None = None,
        ttl: int = 300,
        client_id: str = "secure-ds",
    ) -> None:
        super().__init__()
        if isinstance(signing_key, ed25519.Ed25519PrivateKey):
            self.algorithm = "EdDSA"
        elif isinstance(signing_key, ec.EllipticCurvePrivateKey) and isinstance(
            signing_key.curve, ec.SECP256R1
        ):
            self.algorithm = "ES256"
        else:
            raise IdentityError(
                "The embedded issuer needs an EC P-256 or Ed25519 key.",
                hint="Point SECURE_DS_ISSUER_KEY at such a key.",
            )
        self._key = signing_key
        self.issuer = issuer
        self.audience = audience
        self.subject = subject
        self.roles = tuple(roles)
        self.attributes = dict(attributes or {})
        self.ttl = ttl
        self.client_id = client_id
        self.thumbprint = cert_thumbprint(client_cert_der)
        self.kid = _key_id(signing_key)

    def on_certificate_rotated(self, cert_der: bytes) -> None:
        # new tokens carry the new certificate's cnf; the old-bound one is dropped
        with self._lock:
            self.thumbprint = cert_thumbprint(cert_der)
        super().on_certificate_rotated(cert_der)

    def _fetch(self) -> Token:
        now = int(time.time())
        jti = str(uuid.uuid4())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": jti,
            "client_id": self.client_id,
            "roles": list(self.roles),
            "attrs": self.attributes,
            "cnf": {"x5t#S256": self.thumbprint},
        }
        value = jwt.encode(
            claims, self._key, algorithm=self.algorithm, headers={"typ": "at+jwt", "kid": self.kid}
        )
        return Token(
            value=Secret(value),
            kind="jwt",
            expires_at=float(now + self.ttl),
            subject=self.subject,
            issuer=self.issuer,
            jti=jti,
            roles=self.roles,
            attributes=self.attributes,
            bound_thumbprint=self.thumbprint,
        )


class StaticTokenProvider(TokenProvider):
    """A token obtained elsewhere (a sidecar, a test). Its claims are read, not verified,
    only to fill the audit record; the endpoint is what verifies it."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._value = Secret(token)

    def _fetch(self) -> Token:
        claims = _unverified_claims(self._value.reveal())
        exp = claims.get("exp")
        cnf = claims.get("cnf")
        roles = claims.get("roles")
        attrs = claims.get("attrs")
        return Token(
            value=self._value,
            kind="jwt",
            expires_at=None if not isinstance(exp, int | float) else float(exp),
            subject=_str_or_none(claims.get("sub")),
            issuer=_str_or_none(claims.get("iss")),
            jti=_str_or_none(claims.get("jti")),
            roles=tuple(str(r) for r in roles) if isinstance(roles, list) else (),
            attributes=attrs if isinstance(attrs, dict) else {},
            bound_thumbprint=_str_or_none(cnf.get("x5t#S256")) if isinstance(cnf, dict) else None,
        )

    def invalidate(self, token: Token) -> None:
        """A static token cannot be refreshed; keeping it lets the 401 surface."""


class ApiKeyProvider(TokenProvider):
    """Sends DEEPSEEK_API_KEY as the bearer token (direct calls, no gateway)."""

    def __init__(self, api_key: Secret, *, subject: str | None, roles: Sequence[str] = ()) -> None:
        super().__init__()
        self._api_key = api_key
        self._subject = subject
        self._roles = tuple(roles)

    def _fetch(self) -> Token:
        return Token(value=self._api_key, kind="api_key", subject=self._subject, roles=self._roles)

    def invalidate(self, token: Token) -> None:
        """An API key cannot be refreshed; keeping it lets the 401 surface."""


def token_provider_from_settings(settings: Settings) -> TokenProvider:
    """The provider ``SECURE_DS_TOKEN_PROVIDER`` names, built from validated settings."""
    if settings.token_provider == "api-key":
        assert settings.api_key is not None  # Settings validation guarantees it
        return ApiKeyProvider(settings.api_key, subject=settings.subject, roles=settings.roles)
    if settings.token_provider == "keycloak":
        from ._keycloak import KeycloakTokenProvider  # loads python-keycloak only when used

        return KeycloakTokenProvider.from_settings(settings)
    assert settings.issuer_key is not None
    assert settings.client_cert is not None
    key = serialization.load_pem_private_key(Path(settings.issuer_key).read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise IdentityError(
            "SECURE_DS_ISSUER_KEY holds an unsupported key type.",
            hint="Use an EC P-256 or Ed25519 key.",
        )
    cert = x509.load_pem_x509_certificates(Path(settings.client_cert).read_bytes())[0]
    return EmbeddedIssuer(
        signing_key=key,
        issuer=settings.issuer,
        audience=settings.effective_audience,
        subject=settings.subject or _common_name(cert),
        client_cert_der=cert.public_bytes(serialization.Encoding.DER),
        roles=settings.roles,
        attributes=settings.attributes,
        ttl=settings.token_ttl,
    )


# ---------------------------------------------------------------------- helpers


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else None
    if isinstance(value, str) and value:
        return value
    raise IdentityError(
        "The client certificate has no common name to use as the token subject.",
        hint="Set SECURE_DS_SUBJECT.",
    )


def _key_id(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> str:
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return cert_thumbprint(spki)[:16]


def _unverified_claims(token: str) -> dict[str, Any]:
    try:
        payload = token.split(".")[1]
        decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
