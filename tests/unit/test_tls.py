"""The client SSLContext: TLS floor, hostname checks, client certificate, pin hooks."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest

from secure_ds import Settings
from secure_ds.identity import build_ssl_context
from secure_ds.sandbox import Sandbox


@pytest.fixture(scope="module")
def settings() -> Iterator[Settings]:
    with Sandbox() as sb:
        yield sb.client_settings("alice")


def test_defaults_are_tls13_with_hostname_checks(settings: Settings) -> None:
    ctx = build_ssl_context(settings)
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_3
    assert ctx.check_hostname is True
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.sslsocket_class is ssl.SSLSocket  # no pin configured: stock classes


def test_tls12_is_the_lowest_allowed(settings: Settings) -> None:
    ctx = build_ssl_context(settings.replace(tls_min_version="1.2"))
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ctx.check_hostname is True


def test_a_pin_installs_handshake_checks_for_both_backends(settings: Settings) -> None:
    pin = "sha256/" + "A" * 43 + "="
    ctx = build_ssl_context(settings.replace(spki_pin=pin))
    assert issubclass(ctx.sslsocket_class, ssl.SSLSocket)
    assert ctx.sslsocket_class is not ssl.SSLSocket  # sync backend
    assert ctx.sslobject_class is not ssl.SSLObject  # async backend
