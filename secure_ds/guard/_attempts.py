"""The *send* stage's decisions, shared by the sync and async transports.

:class:`Attempts` decides, for one call, what each attempt sends and what follows its
outcome: return the response, wait and retry, refresh the token and retry, or raise a
typed error. The transports only do the I/O and the sleeping, so the retry rules exist
once.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import httpx2

from ..errors import CircuitOpen, upstream_error_for
from ._call import Call
from ._chain import Guard
from ._resilience import RETRY_STATUSES, map_transport_error, parse_retry_after

__all__ = ["Attempts"]


class Attempts:
    def __init__(self, guard: Guard, call: Call) -> None:
        self._guard = guard
        self._call = call
        self._endpoint, self._breaker = guard.breakers.for_url(call.url or call.request.url)
        self._failures = 0
        self._refreshed = False
        # with_options(max_retries=N) on the client asks for N + 1 attempts
        requested = call.request.extensions.get("secure_ds.max_attempts")
        self._retry = guard.retry
        if isinstance(requested, int) and requested != guard.retry.max_attempts:
            self._retry = replace(guard.retry, max_attempts=min(max(requested, 1), 10))
        self._started = 0.0

    def next_request(self) -> httpx2.Request:
        """The request for the next attempt; raises :class:`CircuitOpen` if refused."""
        wait = self._breaker.acquire()
        if wait is not None:
            self._guard.note_attempt(self._call, time.perf_counter(), error="CircuitOpen")
            raise CircuitOpen(
                self._endpoint,
                request=self._call.request,
                retry_in=wait,
                event_id=self._call.event_id,
            )
        self._started = time.perf_counter()
        return self._guard.outgoing(self._call, self._call.token)

    def succeeded(self, response: httpx2.Response) -> None:
        self._breaker.success()
        self._guard.note_attempt(self._call, self._started, status=response.status_code)

    def after_exception(self, exc: BaseException, request: httpx2.Request) -> float:
        """Seconds to wait before retrying after a transport error, or raise the typed error."""
        error, retryable = map_transport_error(exc, request)
        error.event_id = self._call.event_id
        if not retryable:
            self._breaker.neutral()
            self._guard.note_attempt(self._call, self._started, error=type(error).__name__)
            raise error from None
        self._breaker.failure()
        self._failures += 1
        delay = self._retry.delay(self._failures, None)
        self._guard.note_attempt(
            self._call, self._started, error=type(exc).__name__, retry_in=delay
        )
        if delay is None:
            raise error from None
        return delay

    def after_error_status(self, response: httpx2.Response, body: bytes) -> float:
        """Seconds to wait before retrying after an error status (or a redirect, which is
        never followed), or raise the typed error."""
        status = response.status_code
        if status == 401 and not self._refreshed:
            self._refreshed = True
            if self._guard.refresh_token(self._call) is not None:
                self._breaker.neutral()
                self._guard.note_attempt(self._call, self._started, status=status, retry_in=0.0)
                return 0.0
        delay: float | None = None
        if status in RETRY_STATUSES:
            self._breaker.failure()
            self._failures += 1
            delay = self._retry.delay(self._failures, parse_retry_after(response.headers))
        else:
            self._breaker.success()
        self._guard.note_attempt(self._call, self._started, status=status, retry_in=delay)
        if delay is None:
            raise upstream_error_for(response, _decode(body), event_id=self._call.event_id)
        return delay


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
