"""Client-side TLS: the ``ssl.SSLContext`` every connection uses, and SPKI pinning.

The context verifies the server against ``SECURE_DS_CA_BUNDLE`` (or the system store),
checks the hostname, refuses anything below TLS 1.2 (1.3 unless told otherwise) and
presents the client certificate for mutual TLS.

Pinning is checked *inside the handshake*, before the first byte of the request (and so
the bearer token) is written: the context's socket and object classes are replaced by
subclasses whose ``do_handshake`` compares the peer's SubjectPublicKeyInfo hash with the
pin and raises :class:`SPKIPinError` on mismatch. Both httpcore's sync backend
(``SSLSocket``) and its async backend (``SSLObject`` over memory BIOs) go through them.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..config import Settings

__all__ = ["SPKIPinError", "build_ssl_context", "cert_thumbprint", "spki_pin_of"]


class SPKIPinError(ssl.SSLError):
    """The server's public key does not match the configured pin."""


def spki_pin_of(cert_der: bytes) -> str:
    """``sha256/<base64>`` of a DER certificate's SubjectPublicKeyInfo (RFC 7469 style)."""
    spki = (
        x509.load_der_x509_certificate(cert_der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def cert_thumbprint(cert_der: bytes) -> str:
    """RFC 8705 ``x5t#S256``: base64url (no padding) of SHA-256 over the DER certificate."""
    return base64.urlsafe_b64encode(hashlib.sha256(cert_der).digest()).rstrip(b"=").decode()


def _check_pin(expected: str, cert_der: bytes | None) -> None:
    if cert_der is None:
        raise SPKIPinError("server presented no certificate to check against SECURE_DS_SPKI_PIN")
    if spki_pin_of(cert_der) != expected:
        raise SPKIPinError("server public key does not match SECURE_DS_SPKI_PIN")


def _pinned_classes(pin: str) -> tuple[type[ssl.SSLSocket], type[ssl.SSLObject]]:
    class PinnedSSLSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            _check_pin(pin, self.getpeercert(binary_form=True))

    class PinnedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            # Raises SSLWantReadError until the handshake completes; only then is the
            # peer certificate known and the pin checked.
            super().do_handshake()
            _check_pin(pin, self.getpeercert(binary_form=True))

    return PinnedSSLSocket, PinnedSSLObject


def build_ssl_context(settings: Settings) -> ssl.SSLContext:
    """Build the client context from settings (files are read now, at build time)."""
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=str(settings.ca_bundle) if settings.ca_bundle else None,
    )
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if settings.tls_min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if settings.client_cert is not None and settings.client_key is not None:
        password: Any = (
            settings.client_key_password.reveal() if settings.client_key_password else None
        )
        ctx.load_cert_chain(str(settings.client_cert), str(settings.client_key), password)
    if settings.spki_pin:
        ctx.sslsocket_class, ctx.sslobject_class = _pinned_classes(settings.spki_pin)
    return ctx
