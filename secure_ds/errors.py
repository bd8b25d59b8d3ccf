"""One error base for everything secure-ds raises, each subclass saying what to do.

Every exception derives from :class:`SecureDSError`, which itself derives from
``openai.OpenAIError``. Errors raised while a call is in flight also derive from the
matching ``openai`` class (``openai.RateLimitError``, ``openai.APIConnectionError``,
...), so code written against ``openai.OpenAI`` keeps catching what it caught before,
and code written for secure-ds can catch ``SecureDSError`` alone.

Why deriving from ``openai.OpenAIError`` matters: the openai SDK propagates an
``OpenAIError`` raised by the HTTP transport unchanged (no wrapping in
``APIConnectionError``, no SDK-level retry), which is what lets the guard chain, which
runs inside the transport, raise typed errors to the caller.

Messages never contain secrets: they are built only from settings names, status
codes, server error texts and our own descriptions, never from header values, tokens,
keys or request bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
import openai

__all__ = [
    "AuditError",
    "AuthenticationFailed",
    "BadRequest",
    "BudgetExceeded",
    "CallError",
    "CertificateRotationError",
    "CircuitOpen",
    "ConfigError",
    "ConnectionFailed",
    "ControlMappingError",
    "FheContextError",
    "FheError",
    "FheInputError",
    "FheModelError",
    "FheParameterError",
    "FheWireError",
    "IdentityError",
    "InsufficientBalance",
    "InvalidParameters",
    "JwksUnavailable",
    "LogNotVerified",
    "NotFound",
    "PermissionDenied",
    "PinMismatch",
    "PolicyDenied",
    "PolicyError",
    "RateLimited",
    "ReportError",
    "RequestTimedOut",
    "SealError",
    "SecureDSError",
    "ServerError",
    "ServiceOverloaded",
    "SignatureRejected",
    "StreamInterrupted",
    "TLSFailed",
    "TokenRejected",
    "TokenRequestError",
    "UpstreamError",
    "upstream_error_for",
]


class SecureDSError(openai.OpenAIError):
    """Base of every secure-ds error. ``str(err)`` says what went wrong and what to do."""

    hint: str

    def __init__(self, message: str, *, hint: str = "") -> None:
        self.hint = hint
        text = f"{message} {hint}".strip() if hint else message
        # Exception.__init__ directly: with multiple inheritance the next class in the
        # MRO may be an openai error whose __init__ wants other arguments.
        Exception.__init__(self, text)


class ConfigError(SecureDSError):
    """A setting is missing, malformed or unsafe; raised when a client is constructed.

    ``variable`` names the environment variable (or keyword) that is wrong.
    """

    def __init__(self, variable: str, problem: str, *, fix: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {problem}.", hint=fix)


class PolicyError(ConfigError):
    """The policy folder (``SECURE_DS_POLICY_DIR``) cannot be loaded: a file does not
    parse or validate, or is not a plain file. ``file`` names the file at fault."""

    def __init__(self, problem: str, *, fix: str, file: Path | None = None) -> None:
        self.file = file
        super().__init__("SECURE_DS_POLICY_DIR", problem, fix=fix)


class IdentityError(SecureDSError):
    """The caller's identity (token, certificate) could not be established."""


class TokenRequestError(IdentityError):
    """A token endpoint (Keycloak) refused a request or could not be reached in time.

    ``url`` names the endpoint, ``status`` its HTTP status (``None``: no answer came) and
    ``oauth_error`` the RFC 6749 error code it gave (``invalid_client``...), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        hint: str = "",
        status: int | None = None,
        oauth_error: str | None = None,
    ) -> None:
        self.url = url
        self.status = status
        self.oauth_error = oauth_error
        super().__init__(message, hint=hint)


class CertificateRotationError(IdentityError):
    """Client certificate/key files changed on disk but the new pair cannot be used.

    ``cert_path`` and ``key_path`` name the two files; the previous pair stays in use.
    """

    def __init__(self, message: str, *, cert_path: Path, key_path: Path, hint: str = "") -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        super().__init__(message, hint=hint)


class TokenRejected(IdentityError):
    """A bearer token failed validation (:mod:`secure_ds.identity._jwks`).

    ``check`` names the check that failed (``alg``, ``kid``, ``signature``, ``iss``,
    ``aud``, ``exp``, ``nbf``, ``iat``, ``typ``, ``claims``, ``cnf``, ``format``);
    ``reason`` is a short text safe to send back to a client (it never holds the token).
    """

    def __init__(self, check: str, reason: str, *, hint: str = "") -> None:
        self.check = check
        self.reason = reason
        super().__init__(
            f"Token refused ({check}): {reason}.",
            hint=hint or "Obtain a fresh token from the configured issuer for this audience.",
        )


class JwksUnavailable(IdentityError):
    """The issuer's JWKS could not be fetched or parsed; no token can be checked."""


class SignatureRejected(IdentityError):
    """An RFC 9421 request signature failed verification (:mod:`secure_ds.identity._httpsig`).

    ``reason`` names the check that failed (``signature replayed``, ``content-digest
    mismatch``, ``signature expired``...) and is safe to send back to a client.
    """

    def __init__(self, reason: str, *, hint: str = "") -> None:
        self.reason = reason
        super().__init__(
            f"Request signature refused: {reason}.",
            hint=hint or "Sign every request afresh with the mTLS client key just before sending.",
        )


class AuditError(SecureDSError):
    """The audit log could not be written durably.

    secure-ds fails closed: while the log is unwritable no call goes out.
    """


class SealError(AuditError):
    """Sealed audit bodies (``SECURE_DS_AUDIT_SEAL_TO``) could not be opened: not sealed
    for this key, omitted as too large, moved from another record, or altered."""


class LogNotVerified(AuditError):
    """An audit log did not verify, so it was not exported (``secure-ds audit export``)."""


class ReportError(SecureDSError):
    """A compliance report (``secure-ds report export``) could not be built or written;
    nothing was left at the output path."""


class ControlMappingError(ReportError):
    """A control mapping file (``audit/controls/*.toml`` or ``--controls DIR``) is
    malformed or names an evidence query that does not exist. ``file``, ``control`` and
    ``query`` name what is wrong (``None`` where not applicable)."""

    def __init__(
        self,
        problem: str,
        *,
        hint: str,
        file: Path | None = None,
        control: str | None = None,
        query: str | None = None,
    ) -> None:
        self.file, self.control, self.query = file, control, query
        super().__init__(problem, hint=hint)


class FheError(SecureDSError):
    """The encrypted-inference path (:mod:`secure_ds.fhe`) refused something.

    The subclasses say which part was wrong; none of them ever quotes plaintext or key
    material. A service answers the same problem with HTTP ``status`` and the same text
    (``param`` names the request field at fault, as DeepSeek's error bodies do).
    """

    status: int = 400
    param: str | None = None

    def __init__(
        self, message: str, *, hint: str = "", status: int | None = None, param: str | None = None
    ) -> None:
        super().__init__(message if message.endswith(".") else message + ".", hint=hint)
        if status is not None:
            self.status = status
        if param is not None:
            self.param = param


class FheParameterError(FheError):
    """A CKKS parameter set is unknown, malformed or below 128-bit security."""


class FheModelError(FheError):
    """A model file is malformed, unknown, or needs more depth than its parameter set."""

    status = 422


class FheInputError(FheError):
    """Inputs do not fit the model or the ciphertext (wrong length, too many slots)."""

    status = 422


class FheWireError(FheError):
    """An FHE frame is malformed, truncated, oversized or of an unknown version."""


class FheContextError(FheError):
    """An evaluation context is unusable: it holds a secret key, is unknown to the
    service, or a ciphertext belongs to another context."""


class CallError(SecureDSError, openai.APIError):
    """An error raised for one call. ``event_id`` is the id of its audit record."""

    event_id: str | None

    def __init__(
        self,
        message: str,
        *,
        request: httpx2.Request,
        hint: str = "",
        body: object | None = None,
        event_id: str | None = None,
    ) -> None:
        SecureDSError.__init__(self, message, hint=hint)
        # The attributes openai.APIError promises, set directly: its __init__ would
        # replace our message with the bare one.
        self.request = _without_credentials(request)
        self.message = str(self)
        # like openai's errors: ``body`` is the API's error object, not the envelope
        error = body.get("error", body) if isinstance(body, dict) else body
        self.body = error
        self.event_id = event_id
        if isinstance(error, dict):
            code = error.get("code")
            self.code = str(code) if code is not None else None
            param = error.get("param")
            self.param = str(param) if param is not None else None
            kind = error.get("type")
            self.type = str(kind) if kind is not None else None
        else:
            self.code = None
            self.param = None
            self.type = None


class PolicyDenied(CallError):
    """A guard stage (policy, budget, rate limit, DLP) refused the call before it went out."""

    def __init__(
        self,
        message: str,
        *,
        request: httpx2.Request,
        policy: str,
        hint: str = "",
        event_id: str | None = None,
    ) -> None:
        self.policy = policy
        super().__init__(message, request=request, hint=hint, event_id=event_id)


class BudgetExceeded(PolicyDenied):
    """A hard budget would be passed by this call. ``details`` names the budget (scope,
    name, period), what is spent and reserved, the limit and when it resets."""

    def __init__(
        self,
        message: str,
        *,
        request: httpx2.Request,
        policy: str,
        details: dict[str, Any],
        hint: str = "",
        event_id: str | None = None,
    ) -> None:
        self.details = details
        super().__init__(message, request=request, policy=policy, hint=hint, event_id=event_id)


class CircuitOpen(CallError):
    """The endpoint failed repeatedly; calls are refused until the cool-down ends."""

    def __init__(
        self,
        endpoint: str,
        *,
        request: httpx2.Request,
        retry_in: float,
        event_id: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.retry_in = retry_in
        super().__init__(
            f"Circuit breaker for {endpoint} is open after repeated failures; "
            f"the call was not sent.",
            request=request,
            hint=f"Retry in {retry_in:.0f} s, or check the endpoint's health "
            "(SECURE_DS_BREAKER_COOLDOWN sets the cool-down).",
            event_id=event_id,
        )


class ConnectionFailed(CallError, openai.APIConnectionError):
    """The endpoint could not be reached, or the connection broke, after all retries."""


class RequestTimedOut(ConnectionFailed, openai.APITimeoutError):
    """The endpoint did not answer in time, after all retries."""


class TLSFailed(ConnectionFailed):
    """The mutual-TLS handshake failed: wrong CA, a refused or expired client certificate."""


class PinMismatch(TLSFailed):
    """The server's public key does not match SECURE_DS_SPKI_PIN; nothing was sent to it."""


class StreamInterrupted(ConnectionFailed):
    """A streamed response broke off before it finished."""


class UpstreamError(CallError, openai.APIStatusError):
    """The endpoint answered with an error status (after retries, where retrying applies)."""

    def __init__(
        self,
        message: str,
        *,
        response: httpx2.Response,
        body: object | None,
        hint: str = "",
        event_id: str | None = None,
    ) -> None:
        super().__init__(message, request=response.request, hint=hint, body=body, event_id=event_id)
        response.request = self.request  # the redacted copy (see CallError)
        self.response = response
        self.status_code = response.status_code
        self.request_id = response.headers.get("x-request-id")


class BadRequest(UpstreamError, openai.BadRequestError):
    """400: the request body is not valid for the API."""


class AuthenticationFailed(UpstreamError, openai.AuthenticationError):
    """401: the endpoint refused the token (after one refresh-and-retry)."""


class InsufficientBalance(UpstreamError):
    """402: the DeepSeek account has run out of balance."""


class PermissionDenied(UpstreamError, openai.PermissionDeniedError):
    """403: the endpoint (a gateway) refused the caller."""


class NotFound(UpstreamError, openai.NotFoundError):
    """404: no such endpoint or model."""


class InvalidParameters(UpstreamError, openai.UnprocessableEntityError):
    """422: a parameter has a value the API does not accept."""


class RateLimited(UpstreamError, openai.RateLimitError):
    """429: rate or concurrency limit reached (after retries honouring Retry-After)."""


class ServerError(UpstreamError, openai.InternalServerError):
    """500/502/504: the endpoint failed (after retries)."""


class ServiceOverloaded(ServerError):
    """503: the endpoint is overloaded (after retries)."""


_HINTS: dict[int, tuple[type[UpstreamError], str]] = {
    400: (BadRequest, "Fix the request body; the message above says which part is wrong."),
    401: (
        AuthenticationFailed,
        "Check that the token issuer, audience and client certificate match what the "
        "endpoint expects (secure-ds already refreshed the token once).",
    ),
    402: (InsufficientBalance, "Top up the DeepSeek account, then retry."),
    403: (PermissionDenied, "Ask the gateway's owner to grant this identity access."),
    404: (NotFound, "Check DEEPSEEK_ENDPOINT, DEEPSEEK_API_VERSION and the model name."),
    422: (InvalidParameters, "Fix the parameter named in the message."),
    429: (
        RateLimited,
        "Slow down or retry later; secure-ds already retried with backoff.",
    ),
    500: (ServerError, "The server failed; secure-ds retried. Try again later."),
    502: (ServerError, "A gateway failed; secure-ds retried. Try again later."),
    503: (ServiceOverloaded, "The server is overloaded; secure-ds retried. Try again later."),
    504: (ServerError, "A gateway timed out; secure-ds retried. Try again later."),
}


_REDIRECT_HINT = (
    "secure-ds does not follow redirects, so the token never travels to another "
    "address: point DEEPSEEK_ENDPOINT at the final URL."
)


def upstream_error_for(
    response: httpx2.Response, body: object | None, *, event_id: str | None = None
) -> UpstreamError:
    """Build the typed error for an error response (status >= 400) or a redirect."""
    if 300 <= response.status_code < 400:
        return UpstreamError(
            f"{response.request.method} {response.request.url.path} was redirected "
            f"(HTTP {response.status_code}) to {response.headers.get('location', '?')}.",
            response=response,
            body=body,
            hint=_REDIRECT_HINT,
            event_id=event_id,
        )
    cls, hint = _HINTS.get(
        response.status_code, (UpstreamError, "See the endpoint's error message above.")
    )
    detail = _server_message(body)
    request = response.request
    message = f"{request.method} {request.url.path} failed with HTTP {response.status_code}"
    if detail:
        message += f": {detail}"
    if not message.endswith("."):
        message += "."
    return cls(message, response=response, body=body, hint=hint, event_id=event_id)


def _without_credentials(request: httpx2.Request) -> httpx2.Request:
    """The request an error carries: the bearer token is replaced, so logging or
    serialising an exception (headers included) cannot leak a live credential."""
    if "authorization" not in request.headers:
        return request
    headers = [
        (k, "<redacted>" if k.lower() == "authorization" else v)
        for k, v in request.headers.multi_items()
    ]
    return httpx2.Request(
        request.method, request.url, headers=headers, extensions=request.extensions
    )


def _server_message(body: object | None) -> str:
    error: Any = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict):
        text = error.get("message")
        return str(text)[:500] if text else ""
    if isinstance(body, str):
        return body[:200]
    return ""
