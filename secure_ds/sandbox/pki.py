"""A throwaway certificate authority and token-issuer keys for the sandbox and its tests.

Everything here is made with ``cryptography`` alone, lives only as long as the sandbox,
and is never meant for production: keys are written unencrypted so that tests, demos
and benchmarks can point ``Settings`` at them. :class:`LocalCA` is public so tests can
also make deliberately bad material (certificates from another CA, expired or not yet
valid ones) and check that the sandbox refuses it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "SPIFFE_TRUST_DOMAIN",
    "IssuerAlg",
    "IssuerKey",
    "LocalCA",
    "generate_issuer_key",
    "private_key_pem",
    "spiffe_id",
    "x5t_s256",
]

IssuerAlg = Literal["ES256", "EdDSA"]
IssuerKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

SPIFFE_TRUST_DOMAIN = "sandbox.secure-ds.invalid"

# Backdating absorbs small clock differences between the minting and the checking side.
_BACKDATE = timedelta(minutes=5)
_CA_LIFETIME = timedelta(days=30)
_SERVER_LIFETIME = timedelta(days=30)
_CLIENT_LIFETIME = timedelta(days=1)
# X.520 caps commonName at 64 characters; the full subject is kept in the SAN URI.
_MAX_CN = 64


def generate_issuer_key(alg: IssuerAlg = "ES256") -> IssuerKey:
    """A fresh JWT signing key: EC P-256 for ES256, Ed25519 for EdDSA."""
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported token algorithm {alg!r}; use 'ES256' or 'EdDSA'")


def private_key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """PKCS#8 PEM, unencrypted: the sandbox's keys are throwaway by design."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def x5t_s256(cert_der: bytes) -> str:
    """RFC 8705 certificate thumbprint: base64url (no padding) of SHA-256 over the DER."""
    digest = hashlib.sha256(cert_der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def spiffe_id(subject: str) -> str:
    """The SAN URI naming a sandbox user; unsafe characters are percent-encoded."""
    return f"spiffe://{SPIFFE_TRUST_DOMAIN}/user/{quote(subject, safe='')}"


@dataclasses.dataclass(frozen=True)
class LocalCA:
    """A self-signed EC P-256 CA that issues server and client certificates."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str = "secure-ds sandbox CA") -> LocalCA:
        """Make a new CA; path length 0, so it can sign leaf certificates only."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:_MAX_CN])])
        now = datetime.now(UTC)
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key)

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate in PEM, for trust stores."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue_server_cert(self, hosts: Sequence[str]) -> tuple[bytes, bytes]:
        """A TLS server certificate for ``hosts`` (IP addresses become IP SANs).

        Returns ``(cert_pem, key_pem)``.
        """
        if not hosts:
            raise ValueError("a server certificate needs at least one host")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            self._leaf_builder(hosts[0], key, now - _BACKDATE, now + _SERVER_LIFETIME)
            .add_extension(x509.SubjectAlternativeName(_host_names(hosts)), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        return self._sign(builder), private_key_pem(key)

    def issue_client_cert(
        self,
        subject: str,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key: CertificateIssuerPrivateKeyTypes | None = None,
    ) -> tuple[bytes, bytes]:
        """A TLS client certificate: CN=subject, SAN URI spiffe://.../user/<subject>, clientAuth.

        Valid for one day unless ``not_before``/``not_after`` say otherwise (tests use
        them to make expired or not-yet-valid certificates). A fresh EC P-256 key is
        made unless ``key`` is given. Returns ``(cert_pem, key_pem)``.
        """
        key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        start = not_before if not_before is not None else now - _BACKDATE
        end = not_after if not_after is not None else start + _CLIENT_LIFETIME
        builder = (
            self._leaf_builder(subject, key, start, end)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id(subject))]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        return self._sign(builder), private_key_pem(key)

    def write(self, directory: Path | str) -> Path:
        """Write the CA certificate to ``directory/ca.pem`` (the key stays in memory)."""
        path = Path(directory) / "ca.pem"
        path.write_bytes(self.cert_pem)
        return path

    def _leaf_builder(
        self,
        common_name: str,
        key: CertificateIssuerPrivateKeyTypes,
        not_before: datetime,
        not_after: datetime,
    ) -> x509.CertificateBuilder:
        public = key.public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:_MAX_CN])])
            )
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )

    def _sign(self, builder: x509.CertificateBuilder) -> bytes:
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _host_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names
