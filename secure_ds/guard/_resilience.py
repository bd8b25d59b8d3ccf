"""Retries with backoff, the per-endpoint circuit breaker, and transport-error mapping.

Shared by the sync and async senders; nothing here does I/O or sleeps.

Circuit breaker invariants:

1. *closed*: calls pass; ``threshold`` consecutive failures open it.
2. *open*: every call is refused without touching the network until ``cooldown``
   seconds have passed since it opened.
3. *half-open*: exactly one probe call is let through; its success closes the
   breaker, its failure opens it again for a full cool-down. Other calls are refused
   while the probe is in flight.

A *failure* is a retryable outcome (429, 5xx, connection error, timeout). A 4xx that
is not retryable shows the endpoint is up, so it counts as a success. TLS failures
(untrusted server, refused client certificate, pin mismatch) are configuration
problems, not endpoint health, and leave the breaker unchanged.
"""

from __future__ import annotations

import email.utils
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import httpx2

from ..config import Settings
from ..errors import ConnectionFailed, PinMismatch, RequestTimedOut, TLSFailed
from ..identity import SPKIPinError

__all__ = [
    "RETRY_STATUSES",
    "TRANSPORT_ERRORS",
    "BreakerRegistry",
    "CircuitBreaker",
    "RetryPolicy",
    "map_transport_error",
    "parse_retry_after",
]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

#: What a transport can raise for a network or TLS failure. httpx2 maps most failures
#: to TransportError, but some AnyIO TLS failures escape unmapped (openai's own
#: request loop shims the same set).
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httpx2.TransportError,
    ssl.SSLError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    factor: float = 0.3
    max_delay: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.max_attempts, settings.backoff_factor, settings.backoff_max)

    def delay(self, failures: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt after ``failures`` failed ones.

        ``Retry-After`` wins over backoff; ``None`` means do not retry (attempts used
        up, or the server asked for a longer wait than ``max_delay``).
        """
        if failures >= self.max_attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_delay else None
        base = self.factor * float(2 ** (failures - 1))
        # "equal jitter": half fixed, half random, so concurrent callers spread out
        return min(base * (0.5 + random.random() / 2), self.max_delay)  # noqa: S311


def parse_retry_after(headers: httpx2.Headers) -> float | None:
    """``retry-after-ms``, else ``Retry-After`` in seconds or as an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(float(parsed.timestamp()) - time.time(), 0.0)


class CircuitBreaker:
    """One endpoint's breaker (see the module invariants). Thread-safe."""

    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._clock() - self._opened_at >= self.cooldown:
                return "half-open"
            return "open"

    def acquire(self) -> float | None:
        """``None`` if a call may go out now, else seconds until the breaker may let one."""
        with self._lock:
            if self._opened_at is None:
                return None
            waited = self._clock() - self._opened_at
            if waited < self.cooldown:
                return self.cooldown - waited
            if self._probing:
                return 1.0  # a probe is in flight; its result decides
            self._probing = True
            return None

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probing or self._failures >= self.threshold:
                self._opened_at = self._clock()
                self._probing = False

    def neutral(self) -> None:
        """The attempt said nothing about the endpoint's health (e.g. a TLS failure)."""
        with self._lock:
            self._probing = False


class BreakerRegistry:
    """One breaker per endpoint origin (scheme, host, port)."""

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def for_url(self, url: httpx2.URL) -> tuple[str, CircuitBreaker]:
        key = f"{url.scheme}://{url.netloc.decode('ascii')}"
        breaker = self._breakers.get(key)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.setdefault(
                    key, CircuitBreaker(self.threshold, self.cooldown)
                )
        return key, breaker


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def map_transport_error(
    exc: BaseException, request: httpx2.Request
) -> tuple[ConnectionFailed, bool]:
    """Turn a transport error (see TRANSPORT_ERRORS) into our typed error; the flag
    says whether retrying may help."""
    target = f"{request.url.scheme}://{request.url.netloc.decode('ascii')}"
    cause = _ssl_cause(exc)
    if isinstance(cause, SPKIPinError):
        return (
            PinMismatch(
                f"The server at {target} presented a public key that does not match "
                "SECURE_DS_SPKI_PIN; the request was not sent.",
                request=request,
                hint="If the server's key was rotated on purpose, update the pin; "
                "otherwise treat this as an interception attempt.",
            ),
            False,
        )
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            TLSFailed(
                f"The server certificate of {target} could not be verified "
                f"({cause.verify_message or cause.reason}).",
                request=request,
                hint="Point SECURE_DS_CA_BUNDLE at the CA that issued the server's "
                "certificate, and check DEEPSEEK_ENDPOINT's host name.",
            ),
            False,
        )
    if cause is not None:
        return (
            TLSFailed(
                f"The TLS handshake with {target} failed ({cause.reason or cause}).",
                request=request,
                hint="The server probably refused the client certificate: check that "
                "SECURE_DS_CLIENT_CERT is issued by a CA the endpoint trusts and is "
                "within its validity period.",
            ),
            False,
        )
    if isinstance(exc, httpx2.TimeoutException):
        kind = type(exc).__name__
        return (
            RequestTimedOut(
                f"{request.method} {request.url.path} to {target} timed out ({kind}).",
                request=request,
                hint="Raise SECURE_DS_CONNECT_TIMEOUT / SECURE_DS_READ_TIMEOUT or pass "
                "timeout=... if the endpoint is slow; secure-ds already retried.",
            ),
            True,
        )
    return (
        ConnectionFailed(
            f"Could not talk to {target} ({type(exc).__name__}: {exc}).",
            request=request,
            hint="Check that DEEPSEEK_ENDPOINT is reachable; secure-ds already retried.",
        ),
        True,
    )
