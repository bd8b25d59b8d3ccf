"""httpx2 transports that run the guard chain around every request the openai SDK sends.

The openai client is handed an ``httpx2.Client`` whose transport is a
:class:`GuardedTransport` (or :class:`AsyncGuardedTransport`); so every SDK method,
``with_raw_response`` and ``with_options`` copies included, passes through the same
chain. Errors raised here derive from ``openai.OpenAIError``, which the SDK passes to
the caller unchanged.

Streamed responses are wrapped so that the call is accounted and audited when the
stream ends, breaks, or is closed by the caller.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx2

from ..dlp._responses import SSEReidentifier, reidentify_body
from ..errors import StreamInterrupted
from ._attempts import Attempts
from ._call import Call
from ._chain import Guard, SSEUsageTracker
from ._resilience import TRANSPORT_ERRORS, map_transport_error

__all__ = ["AsyncGuardedTransport", "GuardedTransport"]


def _is_event_stream(call: Call, response: httpx2.Response) -> bool:
    return call.stream or response.headers.get("content-type", "").startswith("text/event-stream")


class GuardedTransport(httpx2.BaseTransport):
    def __init__(self, guard: Guard, inner: httpx2.BaseTransport) -> None:
        self.guard = guard
        self._inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        guard = self.guard
        call = guard.begin(request)
        if call.exception is not None:
            self._audit(call)
            raise call.exception
        try:
            response = self._send(call)
            if _is_event_stream(call, response):
                stream = _AuditedStream(self, call, response)
                return httpx2.Response(
                    response.status_code,
                    headers=response.headers,
                    stream=stream,
                    extensions=response.extensions,
                )
            body = response.read()
            guard.complete(call, response.status_code, body)
            if call.reidentifier is not None:
                response = _with_body(response, reidentify_body(body, call.reidentifier))
        except TRANSPORT_ERRORS as exc:
            # Never let an httpx2 error out: the SDK would wrap it and retry the whole
            # call, which would leave one record per SDK attempt.
            error = _mapped(exc, call)
            guard.fail(call, error)
            self._audit(call)
            raise error from None
        except BaseException as exc:
            guard.fail(call, exc)
            self._audit(call)
            raise
        self._audit(call)
        return response  # already read: the client finds its content in place

    def _send(self, call: Call) -> httpx2.Response:
        attempts = Attempts(self.guard, call)
        while True:
            request = attempts.next_request()
            try:
                response = self._inner.handle_request(request)
                response.request = request
                if response.status_code < 300:
                    attempts.succeeded(response)
                    return response
                try:
                    body = response.read()
                finally:
                    response.close()
            except TRANSPORT_ERRORS as exc:
                time.sleep(attempts.after_exception(exc, request))
                continue
            time.sleep(attempts.after_error_status(response, body))

    def _audit(self, call: Call) -> None:
        self.guard.audit_log.append(self.guard.record(call))

    def close(self) -> None:
        self._inner.close()


class _AuditedStream(httpx2.SyncByteStream):
    def __init__(self, transport: GuardedTransport, call: Call, response: httpx2.Response) -> None:
        self._transport = transport
        self._call = call
        self._response = response
        self._tracker = transport.guard.stream_tracker()
        self._finished = False

    def __iter__(self) -> Iterator[bytes]:
        passing = _Passing(self._call, self._tracker)
        try:
            for chunk in self._response.iter_raw():
                if out := passing.feed(chunk):
                    yield out
            if rest := passing.flush():
                yield rest
        except TRANSPORT_ERRORS as exc:
            error = _stream_error(self._call, self._tracker, exc)
            self._finish(error)
            raise error from None
        if not self._tracker.done:
            error = _stream_error(self._call, self._tracker, None)
            self._finish(error)
            raise error

    def close(self) -> None:
        try:
            self._response.close()
        finally:
            self._finish(None)

    def _finish(self, error: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        guard = self._transport.guard
        guard.complete_stream(self._call, self._response.status_code, self._tracker)
        if error is not None:
            guard.fail(self._call, error)
        self._transport._audit(self._call)


class AsyncGuardedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, guard: Guard, inner: httpx2.AsyncBaseTransport) -> None:
        self.guard = guard
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        guard = self.guard
        if guard.meter_blocks:  # a shared ledger may make reserve wait: off the loop
            call = await anyio.to_thread.run_sync(guard.begin, request)
        else:
            call = guard.begin(request)
        if call.exception is not None:
            await self._audit(call)
            raise call.exception
        try:
            response = await self._send(call)
            if _is_event_stream(call, response):
                stream = _AsyncAuditedStream(self, call, response)
                return httpx2.Response(
                    response.status_code,
                    headers=response.headers,
                    stream=stream,
                    extensions=response.extensions,
                )
            body = await response.aread()
            guard.complete(call, response.status_code, body)
            if call.reidentifier is not None:
                response = _with_body(response, reidentify_body(body, call.reidentifier))
        except TRANSPORT_ERRORS as exc:
            error = _mapped(exc, call)
            guard.fail(call, error)
            with anyio.CancelScope(shield=True):
                await self._audit(call)
            raise error from None
        except BaseException as exc:
            guard.fail(call, exc)
            with anyio.CancelScope(shield=True):
                await self._audit(call)
            raise
        await self._audit(call)
        return response  # already read: the client finds its content in place

    async def _send(self, call: Call) -> httpx2.Response:
        attempts = Attempts(self.guard, call)
        while True:
            request = attempts.next_request()
            try:
                response = await self._inner.handle_async_request(request)
                response.request = request
                if response.status_code < 300:
                    attempts.succeeded(response)
                    return response
                try:
                    body = await response.aread()
                finally:
                    await response.aclose()
            except TRANSPORT_ERRORS as exc:
                await anyio.sleep(attempts.after_exception(exc, request))
                continue
            await anyio.sleep(attempts.after_error_status(response, body))

    async def _audit(self, call: Call) -> None:
        guard = self.guard
        if guard.meter_blocks:  # settling may wait on a shared ledger: not on the loop
            record = await anyio.to_thread.run_sync(guard.record, call)
        else:
            record = guard.record(call)
        await guard.audit_log.append_async(record)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _AsyncAuditedStream(httpx2.AsyncByteStream):
    def __init__(
        self, transport: AsyncGuardedTransport, call: Call, response: httpx2.Response
    ) -> None:
        self._transport = transport
        self._call = call
        self._response = response
        self._tracker = transport.guard.stream_tracker()
        self._finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        passing = _Passing(self._call, self._tracker)
        try:
            async for chunk in self._response.aiter_raw():
                if out := passing.feed(chunk):
                    yield out
            if rest := passing.flush():
                yield rest
        except TRANSPORT_ERRORS as exc:
            error = _stream_error(self._call, self._tracker, exc)
            await self._finish(error)
            raise error from None
        if not self._tracker.done:
            error = _stream_error(self._call, self._tracker, None)
            await self._finish(error)
            raise error

    async def aclose(self) -> None:
        try:
            await self._response.aclose()
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(None)

    async def _finish(self, error: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        guard = self._transport.guard
        guard.complete_stream(self._call, self._response.status_code, self._tracker)
        if error is not None:
            guard.fail(self._call, error)
        await self._transport._audit(self._call)


class _Passing:
    """What a streamed chunk goes through on its way to the caller: the tracker sees
    the bytes as received (so the record hashes what the endpoint sent); streams whose
    request was redacted reversibly get their placeholders replaced."""

    def __init__(self, call: Call, tracker: SSEUsageTracker) -> None:
        self._tracker = tracker
        self._rewriter = (
            SSEReidentifier(call.reidentifier) if call.reidentifier is not None else None
        )

    def feed(self, chunk: bytes) -> bytes:
        self._tracker.feed(chunk)
        return chunk if self._rewriter is None else self._rewriter.feed(chunk)

    def flush(self) -> bytes:
        return b"" if self._rewriter is None else self._rewriter.flush()


def _with_body(response: httpx2.Response, body: bytes) -> httpx2.Response:
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-length"]
    return httpx2.Response(
        response.status_code,
        headers=headers,
        content=body,
        request=response.request,
        extensions=response.extensions,
    )


def _mapped(exc: BaseException, call: Call) -> BaseException:
    error, _ = map_transport_error(exc, call.wire or call.request)
    error.event_id = call.event_id
    return error


def _stream_error(
    call: Call, tracker: SSEUsageTracker, exc: BaseException | None
) -> StreamInterrupted:
    cause = f"{type(exc).__name__}" if exc is not None else "the server ended the stream early"
    return StreamInterrupted(
        f"The streamed response broke off after {tracker.chunks} data chunks ({cause}) "
        "before [DONE]; the output is incomplete.",
        request=call.request,
        hint=f"Retry the call; the partial response was audited as event {call.event_id}.",
        event_id=call.event_id,
    )
