"""Verification of the certificate-bound bearer tokens the sandbox demands.

The sandbox plays a strict resource server, so a client that passes here would also
pass a real one. The checks themselves are :class:`secure_ds.identity.TokenValidator`'s
(one per trusted issuer: the sandbox's embedded issuer with its single key, and
optionally an external issuer such as Keycloak whose keys come from a JWKS URL). A
token is accepted only if all of these hold:

* its header ``alg`` is on the issuer's allow-list (the embedded issuer: exactly its
  own algorithm, ES256 or EdDSA); ``none`` and HMAC (including HMAC keyed with the
  public key) are refused before any signature check, and the key must be of the
  algorithm's type;
* its signature verifies with the issuer's public key (for a JWKS issuer, the key its
  ``kid`` names; unknown ``kid`` values cause one rate-limited refetch);
* ``iss`` and ``aud`` are the issuer's; ``exp``, ``iat``, ``sub``, ``jti`` are present;
  ``exp``, ``iat`` and ``nbf`` hold within a 30 s leeway; it lives at most an hour;
* ``cnf.x5t#S256`` (RFC 8705) equals the thumbprint of the client certificate
  presented on the connection that carries it.

A token that verified once is remembered, because clients reuse a token for many
calls; a remembered token is still checked for expiry and for its binding to the
connection's certificate on every request, the only checks whose outcome can change,
and is verified again once its issuer's key set has changed (a key rotated out).
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ..errors import JwksUnavailable, TokenRejected
from ..identity._jwks import (
    JwksCache,
    StaticKeys,
    TokenValidator,
    ValidatedToken,
)
from .pki import IssuerAlg, IssuerKey

__all__ = ["LEEWAY", "MAX_LIFETIME", "TokenError", "TokenVerifier", "VerifiedToken"]

LEEWAY: Final = 30
MAX_LIFETIME: Final = 3600
_REQUIRED: Final = ("exp", "iat", "sub", "jti", "aud", "iss")
_CACHE_SIZE: Final = 4096


class TokenError(TokenRejected):
    """A token was refused; ``reason`` is safe to send back (it never holds the token)."""

    def __init__(self, reason: str, check: str = "token") -> None:
        super().__init__(check, reason)


@dataclasses.dataclass(frozen=True, slots=True)
class VerifiedToken:
    """The claims handlers may rely on, plus the full claim set for inspection."""

    sub: str
    jti: str
    roles: tuple[str, ...]
    attrs: Mapping[str, Any]
    exp: float
    thumbprint: str
    claims: Mapping[str, Any]
    issuer: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class _Remembered:
    token: VerifiedToken
    validator: TokenValidator
    generation: int


class TokenVerifier:
    """Checks ``Authorization`` headers against one or more trusted issuers."""

    def __init__(
        self,
        public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey,
        alg: IssuerAlg,
        *,
        issuer: str,
        audience: str,
    ) -> None:
        self._validators: list[TokenValidator] = [
            TokenValidator(
                issuer=issuer,
                audience=audience,
                keys=StaticKeys.single(public_key),
                algorithms=[alg],
                leeway=LEEWAY,
                required_claims=_REQUIRED,
            )
        ]
        self._cache: dict[str, _Remembered] = {}

    @classmethod
    def for_issuer(cls, issuer_key: IssuerKey, *, issuer: str, audience: str) -> TokenVerifier:
        """A verifier for tokens signed by ``issuer_key`` (the algorithm follows the key)."""
        alg: IssuerAlg = "ES256" if isinstance(issuer_key, ec.EllipticCurvePrivateKey) else "EdDSA"
        return cls(issuer_key.public_key(), alg, issuer=issuer, audience=audience)

    def trust_jwks(
        self,
        jwks: JwksCache,
        *,
        issuer: str,
        audience: str | Sequence[str],
        algorithms: Sequence[str] = ("RS256", "PS256", "ES256", "EdDSA"),
    ) -> None:
        """Also accept tokens from ``issuer``, whose keys are published at a JWKS URL."""
        if any(v.issuer == issuer for v in self._validators):
            raise ValueError(f"issuer {issuer!r} is already trusted")
        self._validators.append(
            TokenValidator(
                issuer=issuer,
                audience=audience,
                keys=jwks,
                algorithms=algorithms,
                leeway=LEEWAY,
                required_claims=_REQUIRED,
            )
        )

    @property
    def may_block(self) -> bool:
        """Verifying a new token may fetch a JWKS (network I/O): run it off the loop."""
        return any(isinstance(v.keys, JwksCache) for v in self._validators)

    def cached(self, authorization: str | None, thumbprint: str | None) -> VerifiedToken | None:
        """The remembered token for this header, checked for expiry and binding; ``None``
        when it must be verified (first sight, or its issuer's keys changed since)."""
        token = _bearer(authorization)
        remembered = self._cache.get(token)
        if remembered is None or remembered.generation != remembered.validator.keys.generation:
            return None
        return _still_valid(remembered.token, thumbprint)

    def verify(self, authorization: str | None, thumbprint: str | None) -> VerifiedToken:
        """Verify a ``Bearer`` header for a connection whose client cert has ``thumbprint``.

        Raises :class:`TokenError` naming the first check that failed.
        """
        verified = self.cached(authorization, thumbprint)
        if verified is not None:
            return verified
        token = _bearer(authorization)
        validator = self._validator_for(token)
        try:
            validated = validator.validate(token)
        except JwksUnavailable:
            raise TokenError("token signing keys unavailable (JWKS fetch failed)", "kid") from None
        except TokenRejected as exc:
            raise TokenError(exc.reason, exc.check) from None
        verified = _claims(validated)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = _Remembered(verified, validator, validated.key_generation)
        return _still_valid(verified, thumbprint)

    def _validator_for(self, token: str) -> TokenValidator:
        """The validator of the token's (unverified) issuer; it then checks everything."""
        validators = self._validators
        if len(validators) == 1:
            return validators[0]
        iss = _unverified_issuer(token)
        for validator in validators:
            if validator.issuer == iss:
                return validator
        # refused with the first validator's reasons (alg, format, then issuer)
        return validators[0]


def _still_valid(verified: VerifiedToken, thumbprint: str | None) -> VerifiedToken:
    """The checks whose outcome can change between two uses of one token."""
    if verified.exp + LEEWAY <= time.time():
        raise TokenError("token expired", "exp")
    if thumbprint is None:
        raise TokenError("no client certificate on this connection", "cnf")
    # the same constant-time compare as identity.check_binding, without building its input
    if not hmac.compare_digest(verified.thumbprint.encode(), thumbprint.encode()):
        raise TokenError("token not bound to the presented client certificate", "cnf")
    return verified


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise TokenError("missing bearer token", "format")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise TokenError("authorization header is not a bearer token", "format")
    return token


def _unverified_issuer(token: str) -> object:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    return claims.get("iss") if isinstance(claims, dict) else None


def _claims(validated: ValidatedToken) -> VerifiedToken:
    payload = validated.claims
    exp, iat = float(payload["exp"]), float(payload["iat"])
    if exp - iat > MAX_LIFETIME:
        raise TokenError(f"token lifetime exceeds {MAX_LIFETIME} s", "exp")
    sub, jti = payload["sub"], payload["jti"]
    if not isinstance(sub, str) or not sub:
        raise TokenError("token subject invalid", "claims")
    if not isinstance(jti, str) or not jti:
        raise TokenError("token jti invalid", "claims")
    roles = payload.get("roles")
    if roles is None:  # Keycloak keeps realm roles in realm_access.roles
        realm_access = payload.get("realm_access")
        roles = realm_access.get("roles", []) if isinstance(realm_access, dict) else []
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise TokenError("token claim roles must be a list of strings", "claims")
    attrs = payload.get("attrs", {})
    if not isinstance(attrs, dict):
        raise TokenError("token claim attrs must be an object", "claims")
    if validated.bound_thumbprint is None:
        raise TokenError("token not bound to a client certificate (cnf.x5t#S256 missing)", "cnf")
    return VerifiedToken(
        sub=sub,
        jti=jti,
        roles=tuple(roles),
        attrs=attrs,
        exp=exp,
        thumbprint=validated.bound_thumbprint,
        claims=payload,
        issuer=validated.issuer,
    )
