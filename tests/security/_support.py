"""Helpers shared by the security tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from secure_ds.identity import cert_thumbprint
from secure_ds.sandbox import Sandbox

MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "hello sandbox"}]


class AuditTail:
    """Reads the records a test's calls appended to an audit file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = len(self.all())

    def all(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def new(self) -> list[dict[str, Any]]:
        """Records appended since the last call (or construction)."""
        records = self.all()
        fresh = records[self._seen :]
        self._seen = len(records)
        return fresh

    def one(self) -> dict[str, Any]:
        """Exactly one new record, which is returned."""
        fresh = self.new()
        assert len(fresh) == 1, f"expected exactly one new audit record, got {len(fresh)}"
        return fresh[0]


# ---------------------------------------------------------------------- PKI helpers


def write_pair(directory: Path, stem: str, cert_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / f"{stem}.pem"
    key = directory / f"{stem}-key.pem"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    return cert, key


def der_of(cert_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


def thumbprint_of_file(path: Path) -> str:
    return cert_thumbprint(der_of(path.read_bytes()))


def raw_ssl_context(
    sb: Sandbox, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A plain client context trusting the sandbox CA, optionally with a client certificate."""
    ctx = ssl.create_default_context(cafile=str(sb.ca_path))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    return ctx


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ---------------------------------------------------------------------- token helpers


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
