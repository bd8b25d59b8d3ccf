"""secure-ds: a zero-trust security and compliance layer for the DeepSeek API.

``SecureDeepSeek`` / ``AsyncSecureDeepSeek`` are drop-in ``openai.OpenAI`` /
``openai.AsyncOpenAI`` clients: every call goes out over mutual TLS with a short-lived
certificate-bound token, passes the guard chain (identify, classify, decide, enforce,
meter, send, account, audit) and leaves one audit record.
"""

from ._secret import Secret
from .client import AsyncSecureDeepSeek, SecureDeepSeek, UserBalance
from .config import Settings
from .errors import (
    AuditError,
    AuthenticationFailed,
    BudgetExceeded,
    CallError,
    CircuitOpen,
    ConfigError,
    ConnectionFailed,
    IdentityError,
    PinMismatch,
    PolicyDenied,
    PolicyError,
    RateLimited,
    RequestTimedOut,
    SecureDSError,
    StreamInterrupted,
    TLSFailed,
    UpstreamError,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncSecureDeepSeek",
    "AuditError",
    "AuthenticationFailed",
    "BudgetExceeded",
    "CallError",
    "CircuitOpen",
    "ConfigError",
    "ConnectionFailed",
    "IdentityError",
    "PinMismatch",
    "PolicyDenied",
    "PolicyError",
    "RateLimited",
    "RequestTimedOut",
    "Secret",
    "SecureDSError",
    "SecureDeepSeek",
    "Settings",
    "StreamInterrupted",
    "TLSFailed",
    "UpstreamError",
    "UserBalance",
    "__version__",
]
