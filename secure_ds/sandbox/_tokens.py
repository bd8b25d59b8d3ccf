"""Verification of the certificate-bound bearer tokens the sandbox demands.

The sandbox plays a strict resource server, so a client that passes here would also
pass a real one. A token is accepted only if all of these hold:

* its header ``alg`` is the sandbox issuer's algorithm (ES256 or EdDSA) and nothing
  else: ``none``, HMAC (including HMAC keyed with the public key) and RSA are refused
  before any signature check;
* its signature verifies with the issuer's public key;
* ``iss`` and ``aud`` are the sandbox's; ``exp``, ``iat``, ``sub``, ``jti`` are present;
  ``exp``, ``iat`` and ``nbf`` hold within a 30 s leeway; it lives at most an hour;
* ``cnf.x5t#S256`` (RFC 8705) equals the thumbprint of the client certificate
  presented on the connection that carries it.

A token that verified once is remembered, because clients reuse a token for many
calls; a remembered token is still checked for expiry and for its binding to the
connection's certificate on every request, the only checks whose outcome can change.
"""

from __future__ import annotations

import dataclasses
import hmac
import time
from collections.abc import Mapping
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from .pki import IssuerAlg, IssuerKey

__all__ = ["LEEWAY", "MAX_LIFETIME", "TokenError", "TokenVerifier", "VerifiedToken"]

LEEWAY: Final = 30
MAX_LIFETIME: Final = 3600
_REQUIRED: Final = ["exp", "iat", "sub", "jti", "aud", "iss"]
_ACCEPTED_TYPES: Final = frozenset({"at+jwt", "jwt", "application/at+jwt"})
_CACHE_SIZE: Final = 4096

# Most specific first: the first matching class names the reason.
_REASONS: Final[tuple[tuple[type[jwt.PyJWTError], str], ...]] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "token audience mismatch"),
    (jwt.InvalidIssuerError, "token issuer mismatch"),
    (jwt.InvalidSignatureError, "token signature invalid"),
    (jwt.exceptions.InvalidSubjectError, "token subject invalid"),
    (jwt.exceptions.InvalidJTIError, "token jti invalid"),
    (jwt.InvalidIssuedAtError, "token iat invalid"),
    (jwt.DecodeError, "malformed token"),
)


class TokenError(Exception):
    """A token was refused; ``reason`` is safe to send back (it never holds the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


class TokenVerifier:
    """Checks ``Authorization`` headers against one issuer key, audience and issuer."""

    def __init__(
        self,
        public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey,
        alg: IssuerAlg,
        *,
        issuer: str,
        audience: str,
    ) -> None:
        self._key = public_key
        self._algorithms = [alg]
        self._issuer = issuer
        self._audience = audience
        self._options: Any = {"require": _REQUIRED}
        self._cache: dict[str, VerifiedToken] = {}

    @classmethod
    def for_issuer(cls, issuer_key: IssuerKey, *, issuer: str, audience: str) -> TokenVerifier:
        """A verifier for tokens signed by ``issuer_key`` (the algorithm follows the key)."""
        alg: IssuerAlg = "ES256" if isinstance(issuer_key, ec.EllipticCurvePrivateKey) else "EdDSA"
        return cls(issuer_key.public_key(), alg, issuer=issuer, audience=audience)

    def verify(self, authorization: str | None, thumbprint: str | None) -> VerifiedToken:
        """Verify a ``Bearer`` header for a connection whose client cert has ``thumbprint``.

        Raises :class:`TokenError` naming the first check that failed.
        """
        token = _bearer(authorization)
        verified = self._cache.get(token)
        if verified is None:
            verified = self._verify_new(token)
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[token] = verified
        elif verified.exp + LEEWAY <= time.time():
            raise TokenError("token expired")
        if thumbprint is None:
            raise TokenError("no client certificate on this connection")
        if not hmac.compare_digest(verified.thumbprint, thumbprint):
            raise TokenError("token not bound to the presented client certificate")
        return verified

    def _verify_new(self, token: str) -> VerifiedToken:
        try:
            decoded = jwt.decode_complete(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY,
                options=self._options,
            )
        except jwt.InvalidAlgorithmError:
            raise TokenError(f"algorithm {_header_alg(token)} not allowed") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"token missing required claim {exc.claim}") from None
        except jwt.PyJWTError as exc:
            raise TokenError(_reason(exc)) from None
        _check_type(decoded["header"])
        return _claims(decoded["payload"])


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise TokenError("missing bearer token")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise TokenError("authorization header is not a bearer token")
    return token


def _header_alg(token: str) -> str:
    """The ``alg`` a refused token claimed, for the error message (never the token)."""
    try:
        alg = jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError:
        return "(unreadable)"
    text = str(alg)
    return text if text.isascii() and text.isprintable() and len(text) <= 16 else "(invalid)"


def _reason(exc: jwt.PyJWTError) -> str:
    for cls, reason in _REASONS:
        if isinstance(exc, cls):
            return reason
    return "invalid token"


def _check_type(header: Mapping[str, Any]) -> None:
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYPES):
        raise TokenError("token type not accepted (use at+jwt)")


def _claims(payload: Mapping[str, Any]) -> VerifiedToken:
    exp, iat = float(payload["exp"]), float(payload["iat"])
    if exp - iat > MAX_LIFETIME:
        raise TokenError(f"token lifetime exceeds {MAX_LIFETIME} s")
    sub, jti = payload["sub"], payload["jti"]
    if not isinstance(sub, str) or not sub:
        raise TokenError("token subject invalid")
    if not isinstance(jti, str) or not jti:
        raise TokenError("token jti invalid")
    roles = payload.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise TokenError("token claim roles must be a list of strings")
    attrs = payload.get("attrs", {})
    if not isinstance(attrs, dict):
        raise TokenError("token claim attrs must be an object")
    return VerifiedToken(
        sub=sub,
        jti=jti,
        roles=tuple(roles),
        attrs=attrs,
        exp=exp,
        thumbprint=_bound_thumbprint(payload),
        claims=payload,
    )


def _bound_thumbprint(payload: Mapping[str, Any]) -> str:
    cnf = payload.get("cnf")
    thumbprint = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
    if not isinstance(thumbprint, str) or not thumbprint:
        raise TokenError("token not bound to a client certificate (cnf.x5t#S256 missing)")
    if not thumbprint.isascii():  # hmac.compare_digest refuses non-ASCII str
        raise TokenError("token cnf.x5t#S256 is not a base64url thumbprint")
    return thumbprint
