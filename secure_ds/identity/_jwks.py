"""Validation of JWT access tokens: keys from a JWKS URL (or fixed keys), claims, binding.

:class:`TokenValidator` checks one issuer's tokens, in this order, and raises
:class:`~secure_ds.errors.TokenRejected` naming the first check that failed:

1. ``alg`` is on an explicit allow-list of *asymmetric* algorithms (RS/PS/ES/EdDSA);
   ``none`` and every HMAC algorithm are refused before any key is looked at, so a
   token "signed" with HS256 keyed by the issuer's public key (the classic algorithm
   confusion) never reaches a verifier;
2. the key named by ``kid`` exists, and its type fits the algorithm (an RSA key for
   RS*/PS*, an EC key on the algorithm's curve for ES*, an Ed25519 key for EdDSA; a JWK
   that states its own ``alg`` or ``use`` must agree);
3. the signature verifies;
4. ``typ`` (when present) is an access-token type; ``iss`` and ``aud`` are the expected
   ones; ``exp``, ``nbf`` and ``iat`` hold within a small leeway (an ``iat`` in the
   future beyond it is refused too); required claims are present;
5. optionally, RFC 8705 ``cnf.x5t#S256`` equals the presented certificate's thumbprint
   (:func:`check_binding`, a constant-time compare).

:class:`JwksCache` fetches the issuer's JWKS over https (or plain http to a loopback
address only) with bounded timeouts and size, and caches it. A token whose ``kid`` is
not in the cache triggers *one* refetch, and refetches are rate-limited (by default at
most one per 30 s), so a flood of tokens with made-up ``kid`` values costs the issuer
at most one request per interval. A refetch replaces the whole key set: a key the
issuer added is accepted from then on, a key it removed is refused. Keys are also
refetched once they are older than ``max_age``; if that fails the old keys stay.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.api_jws import PyJWS

from ..errors import ConfigError, JwksUnavailable, TokenRejected

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "DEFAULT_LEEWAY",
    "JwksCache",
    "KeySet",
    "PublicKey",
    "StaticKeys",
    "TokenValidator",
    "ValidatedToken",
    "check_binding",
]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

#: Every algorithm a validator may be configured with: asymmetric only, never ``none``/HS*.
ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_LEEWAY: Final = 30
_MAX_LEEWAY: Final = 120
_MIN_RSA_BITS: Final = 2048
_EC_CURVES: Final = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_JWK_CURVES: Final = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_ACCEPTED_TYPES: Final = frozenset({"at+jwt", "jwt", "application/at+jwt"})
_DEFAULT_REQUIRED: Final = ("exp", "iat", "iss", "aud", "sub", "jti")
_MAX_JWKS_BYTES: Final = 512 * 1024
_MAX_TOKEN_CHARS: Final = 16 * 1024
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})


@dataclasses.dataclass(frozen=True, slots=True)
class ValidatedToken:
    """A token that passed every check; ``claims`` is its full payload."""

    claims: Mapping[str, Any]
    alg: str
    kid: str | None
    issuer: str
    subject: str | None
    expires_at: float
    #: ``cnf.x5t#S256``, the certificate the token is bound to (None: unbound)
    bound_thumbprint: str | None
    #: the key set's generation when verified: a cache can tell when keys rotated
    key_generation: int


class KeySet(Protocol):
    """Where a validator finds the key for a ``kid``."""

    @property
    def generation(self) -> int:
        """Changes whenever the set of keys changes."""
        ...

    def key_for(self, kid: str | None) -> tuple[PublicKey, Mapping[str, Any]]:
        """The key for ``kid`` and its JWK members (``{}`` for a fixed key).

        Raises :class:`TokenRejected` (check ``kid``) when there is none."""
        ...


class StaticKeys:
    """Fixed keys, e.g. an issuer known by its public key. A single key registered
    under ``None`` is used whatever ``kid`` a token names."""

    generation = 0

    def __init__(self, keys: Mapping[str | None, PublicKey]) -> None:
        self._keys = dict(keys)

    @classmethod
    def single(cls, key: PublicKey) -> StaticKeys:
        return cls({None: key})

    def key_for(self, kid: str | None) -> tuple[PublicKey, Mapping[str, Any]]:
        key = self._keys.get(kid)
        if key is None and len(self._keys) == 1 and None in self._keys:
            key = self._keys[None]
        if key is None:
            raise TokenRejected("kid", f"unknown key id {_printable(kid)}")
        return key, {}


class JwksCache:
    """An issuer's JWKS, fetched on first use and refetched on rotation (rate-limited).

    ``verify`` is what httpx2 checks the JWKS server's certificate with (an
    ``ssl.SSLContext``, or ``True`` for the system store). Thread-safe: one lock
    serialises fetches, so concurrent tokens with an unknown ``kid`` cause one request.
    The rate limit counts from the last fetch of any kind (``clock``: monotonic seconds).
    """

    def __init__(
        self,
        url: str,
        *,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 5.0,
        min_refetch_interval: float = 30.0,
        max_age: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_jwks_url(url)
        if not 0.1 <= timeout <= 60:
            raise ConfigError("timeout", f"{timeout} s is out of range", fix="Use 0.1 to 60 s.")
        if min_refetch_interval < 0:
            raise ConfigError(
                "min_refetch_interval", "must not be negative", fix="Use e.g. 30 seconds."
            )
        self.url = url
        self._verify = verify
        self._timeout = httpx2.Timeout(timeout, connect=min(timeout, 3.05))
        self.min_refetch_interval = min_refetch_interval
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[PublicKey, Mapping[str, Any]]] = {}
        self._fetched_at: float | None = None  # last successful fetch (monotonic)
        self._attempted_at: float | None = None  # last attempt, successful or not
        self.generation = 0
        self.fetches = 0  # requests made, for tests and diagnostics

    def __repr__(self) -> str:
        return f"JwksCache({self.url!r}, keys={sorted(self._keys)})"

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def key_for(self, kid: str | None) -> tuple[PublicKey, Mapping[str, Any]]:
        if kid is None:
            raise TokenRejected("kid", "token header has no kid; the issuer publishes a JWKS")
        entry = self._keys.get(kid)
        if entry is not None and not self._stale():
            return entry
        with self._lock:
            entry = self._keys.get(kid)
            if entry is not None and not self._stale():
                return entry
            if self._may_fetch():
                self._fetch_locked(keep_on_error=entry is not None)
                entry = self._keys.get(kid)
        if entry is None and self._fetched_at is None:
            # never fetched (the issuer was down, and the retry waits for the interval):
            # say so, rather than blaming the token's kid
            raise JwksUnavailable(
                f"The JWKS at {self.url} has not been fetched yet (the last attempt failed).",
                hint=f"Check that the issuer is reachable; retried after "
                f"{self.min_refetch_interval:g} s.",
            )
        if entry is None:
            raise TokenRejected(
                "kid",
                f"unknown key id {_printable(kid)}",
                hint="The issuer does not publish this key (rotated out, or another issuer's).",
            )
        return entry

    def refresh(self) -> None:
        """Fetch now, ignoring the rate limit (an operator's explicit request)."""
        with self._lock:
            self._fetch_locked(keep_on_error=False)

    def _stale(self) -> bool:
        fetched = self._fetched_at
        return fetched is None or self._clock() - fetched > self.max_age

    def _may_fetch(self) -> bool:
        attempted = self._attempted_at
        return attempted is None or self._clock() - attempted >= self.min_refetch_interval

    def _fetch_locked(self, *, keep_on_error: bool) -> None:
        self._attempted_at = self._clock()
        self.fetches += 1
        try:
            keys = _parse_jwks(self._get())
        except JwksUnavailable:
            if keep_on_error or self._keys:
                return  # serve the keys we have; the next attempt waits for the interval
            raise
        if set(keys) != set(self._keys) or any(
            keys[k][1] != self._keys[k][1] for k in keys if k in self._keys
        ):
            self.generation += 1
        self._keys = keys
        self._fetched_at = self._clock()

    def _get(self) -> bytes:
        try:
            with (
                httpx2.Client(
                    verify=self._verify,
                    timeout=self._timeout,
                    follow_redirects=False,
                    trust_env=False,
                ) as client,
                client.stream("GET", self.url, headers={"accept": "application/json"}) as resp,
            ):
                if resp.status_code != 200:
                    raise JwksUnavailable(
                        f"The JWKS at {self.url} answered HTTP {resp.status_code}.",
                        hint="Check the issuer's jwks_uri and that the issuer is up.",
                    )
                data = bytearray()
                for chunk in resp.iter_bytes():
                    data += chunk
                    if len(data) > _MAX_JWKS_BYTES:
                        raise JwksUnavailable(
                            f"The JWKS at {self.url} is larger than {_MAX_JWKS_BYTES} bytes.",
                            hint="Point the validator at the issuer's jwks_uri.",
                        )
                return bytes(data)
        except httpx2.HTTPError as exc:
            raise JwksUnavailable(
                f"The JWKS at {self.url} could not be fetched ({type(exc).__name__}).",
                hint="Check that the issuer is reachable and its certificate is trusted.",
            ) from None


class TokenValidator:
    """Checks one issuer's JWT access tokens (see the module docstring for the order).

    ``audience`` may be one value or several (a token passes if its ``aud`` names any).
    ``algorithms`` must be a subset of :data:`ASYMMETRIC_ALGORITHMS`.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | Collection[str],
        keys: KeySet,
        algorithms: Iterable[str] = ("ES256", "EdDSA", "RS256", "PS256"),
        leeway: int = DEFAULT_LEEWAY,
        required_claims: Iterable[str] = _DEFAULT_REQUIRED,
        accepted_types: Collection[str] = _ACCEPTED_TYPES,
    ) -> None:
        algs = tuple(algorithms)
        bad = [a for a in algs if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not algs:
            raise ConfigError(
                "algorithms",
                f"{bad or '(none)'} not allowed",
                fix=f"Use asymmetric algorithms only, from {sorted(ASYMMETRIC_ALGORITHMS)}.",
            )
        if not 0 <= leeway <= _MAX_LEEWAY:
            raise ConfigError(
                "leeway", f"{leeway} s is out of range", fix=f"Use 0 to {_MAX_LEEWAY} seconds."
            )
        self.issuer = issuer
        self.audiences = frozenset([audience] if isinstance(audience, str) else audience)
        self.keys = keys
        self.algorithms = frozenset(algs)
        self.leeway = leeway
        self.required_claims = tuple(required_claims)
        self._types = frozenset(t.lower() for t in accepted_types)
        self._jws = PyJWS(algorithms=sorted(self.algorithms))

    def validate(self, token: str, *, cert_thumbprint: str | None = None) -> ValidatedToken:
        """Check ``token``; with ``cert_thumbprint``, also its RFC 8705 binding to it."""
        header = _header(token)
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise TokenRejected("alg", f"algorithm {_printable(alg)} not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("kid", "token kid is not a string")
        key, jwk = self.keys.key_for(kid)  # may (re)fetch: read the generation after it
        generation = self.keys.generation
        _check_key_fits(alg, key, jwk)
        try:
            payload_bytes = self._jws.decode_complete(token, key, algorithms=[alg])["payload"]
        except jwt.InvalidSignatureError:
            raise TokenRejected("signature", "token signature invalid") from None
        except jwt.PyJWTError:
            raise TokenRejected("format", "malformed token") from None
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in self._types):
            raise TokenRejected("typ", "token type not accepted (use at+jwt)")
        claims = _payload(payload_bytes)
        validated = self._check_claims(claims, alg, kid, generation)
        if cert_thumbprint is not None:
            check_binding(validated, cert_thumbprint)
        return validated

    def _check_claims(
        self, claims: dict[str, Any], alg: str, kid: str | None, generation: int
    ) -> ValidatedToken:
        for name in self.required_claims:
            if claims.get(name) is None:
                raise TokenRejected("claims", f"token missing required claim {name}")
        now = time.time()
        leeway = self.leeway
        iat = _number(claims, "iat")
        if iat is not None and iat > now + leeway:
            raise TokenRejected("iat", "token issued in the future (iat)")
        nbf = _number(claims, "nbf")
        if nbf is not None and nbf > now + leeway:
            raise TokenRejected("nbf", "token not yet valid")
        exp = _number(claims, "exp")
        if exp is not None and exp <= now - leeway:
            raise TokenRejected("exp", "token expired")
        iss = claims.get("iss")
        if iss != self.issuer:
            raise TokenRejected("iss", "token issuer mismatch")
        if "aud" in claims or "aud" in self.required_claims:
            aud = claims.get("aud")
            auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
            if auds is None or not self.audiences.intersection(
                a for a in auds if isinstance(a, str)
            ):
                raise TokenRejected("aud", "token audience mismatch")
        sub = claims.get("sub")
        if sub is not None and (not isinstance(sub, str) or not sub):
            raise TokenRejected("claims", "token subject invalid")
        return ValidatedToken(
            claims=claims,
            alg=alg,
            kid=kid,
            issuer=self.issuer,
            subject=sub,
            expires_at=exp if exp is not None else float("inf"),
            bound_thumbprint=_bound_thumbprint(claims),
            key_generation=generation,
        )


def check_binding(token: ValidatedToken, cert_thumbprint: str | None) -> None:
    """RFC 8705: the token's ``cnf.x5t#S256`` must equal the presented certificate's."""
    bound = token.bound_thumbprint
    if bound is None:
        raise TokenRejected("cnf", "token not bound to a client certificate (cnf.x5t#S256 missing)")
    if cert_thumbprint is None:
        raise TokenRejected("cnf", "no client certificate on this connection")
    if not hmac.compare_digest(bound.encode(), cert_thumbprint.encode()):
        raise TokenRejected("cnf", "token not bound to the presented client certificate")


# ---------------------------------------------------------------------- helpers


def _header(token: str) -> dict[str, Any]:
    if not token or len(token) > _MAX_TOKEN_CHARS or token.count(".") != 2:
        raise TokenRejected("format", "malformed token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenRejected("format", "malformed token") from None
    return header


def _payload(raw: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(raw)
    except ValueError:
        raise TokenRejected("format", "malformed token") from None
    if not isinstance(claims, dict):
        raise TokenRejected("format", "malformed token")
    return claims


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected(name, f"token {name} invalid")
    return float(value)


def _bound_thumbprint(claims: Mapping[str, Any]) -> str | None:
    cnf = claims.get("cnf")
    thumbprint = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
    if thumbprint is None:
        return None
    if not isinstance(thumbprint, str) or not thumbprint or not thumbprint.isascii():
        raise TokenRejected("cnf", "token cnf.x5t#S256 is not a base64url thumbprint")
    return thumbprint


def _check_key_fits(alg: str, key: PublicKey, jwk: Mapping[str, Any]) -> None:
    """The key's type must be the one ``alg`` is defined for: no cross-type use."""
    stated = jwk.get("alg")
    if stated is not None and stated != alg:
        raise TokenRejected("alg", f"key is for {_printable(stated)}, token claims {alg}")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise TokenRejected("kid", "key is not a signing key (use != sig)")
    if alg.startswith(("RS", "PS")):
        if not isinstance(key, rsa.RSAPublicKey):
            raise TokenRejected("alg", f"algorithm {alg} needs an RSA key")
        if key.key_size < _MIN_RSA_BITS:
            raise TokenRejected("kid", f"RSA key shorter than {_MIN_RSA_BITS} bits")
    elif alg in _EC_CURVES:
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != _EC_CURVES[alg]:
            raise TokenRejected("alg", f"algorithm {alg} needs an EC {_JWK_CURVES[alg]} key")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise TokenRejected("alg", "algorithm EdDSA needs an Ed25519 key")


def _parse_jwks(raw: bytes) -> dict[str, tuple[PublicKey, Mapping[str, Any]]]:
    try:
        document = json.loads(raw)
    except ValueError:
        raise JwksUnavailable(
            "The JWKS is not valid JSON.", hint="Point the validator at the issuer's jwks_uri."
        ) from None
    members = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(members, list):
        raise JwksUnavailable(
            'The JWKS has no "keys" list.', hint="Point the validator at the issuer's jwks_uri."
        )
    keys: dict[str, tuple[PublicKey, Mapping[str, Any]]] = {}
    for member in members:
        if not isinstance(member, dict) or not isinstance(member.get("kid"), str):
            continue  # a key without a kid cannot be selected by a token
        if member.get("kty") not in ("RSA", "EC", "OKP") or member.get("use", "sig") != "sig":
            continue  # symmetric ("oct") and encryption keys are never verification keys
        try:
            key = jwt.PyJWK(member).key
        except (jwt.PyJWTError, ValueError, TypeError):
            continue  # an unusable key (e.g. an OKP X25519 key) is skipped, not fatal
        if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            public = {k: v for k, v in member.items() if k in ("kid", "kty", "crv", "alg", "use")}
            keys[member["kid"]] = (key, public)
    return keys


def _check_jwks_url(url: str) -> None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and _is_loopback(host):
        return
    raise ConfigError(
        "jwks_url",
        f"{url!r} is neither https nor http to a loopback address",
        fix="Use the issuer's https jwks_uri (plain http only to 127.0.0.1/::1/localhost).",
    )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _printable(value: object) -> str:
    """A header value for an error message: short printable ASCII, else a placeholder."""
    if value is None:
        return "(none)"
    text = str(value)
    return text if text.isascii() and text.isprintable() and len(text) <= 64 else "(invalid)"
