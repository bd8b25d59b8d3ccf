"""Helpers shared by the security tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from secure_ds.audit import read_records
from secure_ds.identity import cert_thumbprint
from secure_ds.sandbox import Sandbox
from tests._jwt import (  # noqa: F401 (re-exported for the security tests)
    b64url,
    hmac_confused_token,
    sign_token,
    token_claims,
    unsigned_token,
)

MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "hello sandbox"}]


class AuditTail:
    """Reads the records a test's calls appended to an audit file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = len(self.all())

    def all(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return list(read_records(self.path))  # checkpoint lines are skipped

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
