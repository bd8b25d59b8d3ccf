"""Who is calling, on the wire: mutual-TLS contexts and bearer-token providers."""

from ._rotation import AsyncRotatingTransport, ClientPair, RotatingIdentity, RotatingTransport
from ._tls import SPKIPinError, build_ssl_context, cert_thumbprint, spki_pin_of
from ._tokens import (
    ApiKeyProvider,
    EmbeddedIssuer,
    StaticTokenProvider,
    Token,
    TokenProvider,
    token_provider_from_settings,
)

__all__ = [
    "ApiKeyProvider",
    "AsyncRotatingTransport",
    "ClientPair",
    "EmbeddedIssuer",
    "RotatingIdentity",
    "RotatingTransport",
    "SPKIPinError",
    "StaticTokenProvider",
    "Token",
    "TokenProvider",
    "build_ssl_context",
    "cert_thumbprint",
    "spki_pin_of",
    "token_provider_from_settings",
]
