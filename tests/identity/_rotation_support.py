"""Helpers for the certificate-rotation tests: client pairs on disk and the two ways
tools rotate them (rename over, or rewrite in place)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from secure_ds.identity import cert_thumbprint
from secure_ds.sandbox import LocalCA


@dataclass(frozen=True)
class Pair:
    cert_pem: bytes
    key_pem: bytes

    @property
    def der(self) -> bytes:
        cert = x509.load_pem_x509_certificate(self.cert_pem)
        return cert.public_bytes(serialization.Encoding.DER)

    @property
    def thumbprint(self) -> str:
        """RFC 8705 x5t#S256, what the sandbox binds tokens to."""
        return cert_thumbprint(self.der)

    @property
    def sha1(self) -> str:
        """What nginx's $ssl_client_fingerprint shows."""
        return hashlib.sha1(self.der).hexdigest()  # noqa: S324 (nginx's choice, not ours)


def issue(
    ca: LocalCA,
    subject: str,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Pair:
    cert_pem, key_pem = ca.issue_client_cert(subject, not_before=not_before, not_after=not_after)
    return Pair(cert_pem, key_pem)


class PairFiles:
    """The client certificate and key files a rotation tool manages."""

    def __init__(self, directory: Path, first: Pair) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.cert = directory / "tls.crt"
        self.key = directory / "tls.key"
        self.cert.write_bytes(first.cert_pem)
        self.key.write_bytes(first.key_pem)
        self.key.chmod(0o600)

    def rename_cert(self, pair: Pair) -> None:
        _rename_over(self.cert, pair.cert_pem)

    def rename_key(self, pair: Pair) -> None:
        _rename_over(self.key, pair.key_pem)

    def rename(self, pair: Pair) -> None:
        """cert-manager style: new files written aside, then renamed over the old ones."""
        self.rename_key(pair)
        self.rename_cert(pair)

    def rewrite(self, pair: Pair) -> None:
        """In place: same inodes, new content (truncate and write)."""
        for path, data in ((self.key, pair.key_pem), (self.cert, pair.cert_pem)):
            with open(path, "r+b") as handle:
                handle.truncate(0)
                handle.write(data)


def _rename_over(path: Path, data: bytes) -> None:
    aside = path.with_name(f".{path.name}.new")
    aside.write_bytes(data)
    os.replace(aside, path)
