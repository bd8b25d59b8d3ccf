"""Who is calling, on the wire: mutual-TLS contexts and bearer-token providers."""

from ._httpsig import (
    ReplayCache,
    RequestSigner,
    SignatureVerifier,
    SignedRequest,
    SigningAuth,
    VerifiedSignature,
    content_digest,
)
from ._jwks import (
    ASYMMETRIC_ALGORITHMS,
    JwksCache,
    StaticKeys,
    TokenValidator,
    ValidatedToken,
    check_binding,
)
from ._keycloak import KeycloakTokenProvider
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
    "ASYMMETRIC_ALGORITHMS",
    "ApiKeyProvider",
    "AsyncRotatingTransport",
    "ClientPair",
    "EmbeddedIssuer",
    "JwksCache",
    "KeycloakTokenProvider",
    "ReplayCache",
    "RequestSigner",
    "RotatingIdentity",
    "RotatingTransport",
    "SPKIPinError",
    "SignatureVerifier",
    "SignedRequest",
    "SigningAuth",
    "StaticKeys",
    "StaticTokenProvider",
    "Token",
    "TokenProvider",
    "TokenValidator",
    "ValidatedToken",
    "VerifiedSignature",
    "build_ssl_context",
    "cert_thumbprint",
    "check_binding",
    "content_digest",
    "spki_pin_of",
    "token_provider_from_settings",
]
