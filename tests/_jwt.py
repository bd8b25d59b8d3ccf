"""Hand-made JWTs for tests: valid ones the sandbox accepts, and the classic attacks
(``alg: none``, HS256 keyed with the public key). Shared by the sandbox's own tests and
the security tests, so both attack the verifier the same way."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from secure_ds.sandbox import Sandbox


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def token_claims(sb: Sandbox, thumbprint: str | None, **overrides: Any) -> dict[str, Any]:
    """Claims the sandbox accepts (for ``thumbprint``), with ``overrides`` applied;
    an override of ``None`` removes the claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": sb.issuer,
        "sub": "alice",
        "aud": sb.audience,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": f"test-{time.time_ns()}",
        "roles": ["engineer"],
        "attrs": {},
    }
    if thumbprint is not None:
        claims["cnf"] = {"x5t#S256": thumbprint}
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def sign_token(sb: Sandbox, claims: dict[str, Any]) -> str:
    """Sign ``claims`` with the sandbox issuer key, as a legitimate issuer would."""
    key = serialization.load_pem_private_key(sb.issuer_key_path.read_bytes(), None)
    return jwt.encode(claims, key, algorithm=sb.token_alg, headers={"typ": "at+jwt"})  # type: ignore[arg-type]


def unsigned_token(claims: dict[str, Any]) -> str:
    """``alg: none``: header.payload. with an empty signature."""
    header = b64url(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    payload = b64url(json.dumps(claims).encode())
    return f"{header}.{payload}."


def hmac_confused_token(sb: Sandbox, claims: dict[str, Any]) -> str:
    """HS256 keyed with the issuer's *public* key PEM (the classic key-confusion attack)."""
    public_pem = sb.issuer_public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64url(json.dumps({"alg": "HS256", "typ": "at+jwt"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"
