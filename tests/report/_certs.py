"""Test certificates for the signed-PDF tests and bench/bench_report.py: one builder
instead of a copy of the same x509 chain in each of them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def certificate(
    subject: str,
    public_key: Any,
    signing_key: Any,
    *,
    issuer: str | None = None,
    days: int = 30,
    extensions: Sequence[x509.ExtensionType] = (),
) -> x509.Certificate:
    """A certificate for ``public_key`` named ``subject``, signed by ``signing_key``
    (self-signed when ``issuer`` is None), valid from a day ago for ``days`` days, with
    ``extensions``, each critical."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer or subject))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=True)
    return builder.sign(signing_key, hashes.SHA256())


def document_signing(*, cert_sign: bool = False) -> x509.KeyUsage:
    """digitalSignature and nonRepudiation (what a PDF signer's certificate carries);
    keyCertSign too for a self-signed one."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def write_signer(
    folder: Path,
    name: str,
    *,
    days: int = 30,
    extensions: Sequence[x509.ExtensionType] = (),
) -> tuple[Path, Path]:
    """A new P-256 key (0600, PKCS#8 PEM) and a self-signed certificate for it, written
    as ``<name>.key.pem`` and ``<name>.cert.pem`` in ``folder``."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate(
        f"secure-ds report {name}", key.public_key(), key, days=days, extensions=extensions
    )
    key_path, cert_path = folder / f"{name}.key.pem", folder / f"{name}.cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
