"""The public surface: exactly what ``__all__`` says, and errors that fit both hierarchies."""

from __future__ import annotations

import openai
import pytest

import secure_ds
from secure_ds import errors

EXPECTED_PUBLIC = {
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
}


def test_all_is_exactly_the_public_surface() -> None:
    assert set(secure_ds.__all__) == EXPECTED_PUBLIC
    public = {n for n in dir(secure_ds) if not n.startswith("_")} - {
        # subpackages are importable, not part of the flat surface
        "audit",
        "dlp",
        "client",
        "config",
        "errors",
        "guard",
        "cost",
        "policy",
        "identity",
        "sandbox",
        "cli",
        "demo",
        "doctor",
        "fhe",
        "siem",
        "report",
    }
    assert public <= EXPECTED_PUBLIC
    for name in secure_ds.__all__:
        assert hasattr(secure_ds, name)


def test_clients_are_openai_clients() -> None:
    assert issubclass(secure_ds.SecureDeepSeek, openai.OpenAI)
    assert issubclass(secure_ds.AsyncSecureDeepSeek, openai.AsyncOpenAI)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (errors.SecureDSError, openai.OpenAIError),
        (errors.CallError, openai.APIError),
        (errors.ConnectionFailed, openai.APIConnectionError),
        (errors.RequestTimedOut, openai.APITimeoutError),
        (errors.StreamInterrupted, openai.APIConnectionError),
        (errors.UpstreamError, openai.APIStatusError),
        (errors.BadRequest, openai.BadRequestError),
        (errors.AuthenticationFailed, openai.AuthenticationError),
        (errors.PermissionDenied, openai.PermissionDeniedError),
        (errors.NotFound, openai.NotFoundError),
        (errors.InvalidParameters, openai.UnprocessableEntityError),
        (errors.RateLimited, openai.RateLimitError),
        (errors.ServerError, openai.InternalServerError),
        (errors.ServiceOverloaded, openai.InternalServerError),
    ],
)
def test_errors_derive_from_the_matching_openai_error(
    ours: type[Exception], theirs: type[Exception]
) -> None:
    assert issubclass(ours, theirs)
    assert issubclass(ours, errors.SecureDSError)


def test_every_error_class_is_under_one_base() -> None:
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, errors.SecureDSError), name
