"""The sandbox endpoint: an aiohttp app on its own thread, its PKI, and fault injection.

:class:`Sandbox` owns a temporary directory with the throwaway PKI, a background thread
running an asyncio loop with the aiohttp server, the fault queues tests fill, and the
counters tests read. Request handling order is fixed: TLS client certificate (enforced
by the handshake) → bearer token (:mod:`._tokens`) → RFC 9421 request signature
(:mod:`secure_ds.identity._httpsig`: made with the presented certificate's key, over the
body received, not replayed) → injected fault → handler, so an injected fault never
hides an authentication failure.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import itertools
import json
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from aiohttp import hdrs, web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ..config import Settings
from ..errors import SignatureRejected
from ..identity._httpsig import ReplayCache, SignatureVerifier, VerifyingKey
from ..identity._jwks import JwksCache
from . import _responses as R
from ._tokens import TokenError, TokenVerifier, VerifiedToken
from .pki import IssuerAlg, IssuerKey, LocalCA, generate_issuer_key, private_key_pem, x5t_s256

__all__ = ["Sandbox", "SandboxStats"]

ISSUER: Final = "https://sandbox.secure-ds.invalid/issuer"
_HOST: Final = "127.0.0.1"
_START_TIMEOUT: Final = 10.0
_SHUTDOWN_TIMEOUT: Final = 1.0
_MAX_BODY: Final = 16 * 1024 * 1024
_TOKEN: Final = web.RequestKey("token", VerifiedToken)
_BLANK_LINES: Final = web.RequestKey("blank_lines", int)
_CUT_BODY: Final = web.RequestKey("cut_body", bool)
_BODY: Final = web.RequestKey("body", bytes)
_WWW_AUTHENTICATE: Final = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
# RFC 9421 §5.1: the signature a request must carry (and why it was refused)
_SIGNATURE_REQUIRED: Final = (
    'sig=("@method" "@authority" "@path" "content-digest" "authorization");tag="secure-ds"'
)
_KEEP_ALIVE: Final = b": keep-alive\n\n"
_DONE: Final = b"data: [DONE]\n\n"
_UNSAFE_FILE_CHARS: Final = re.compile(r"[^A-Za-z0-9._-]")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---------------------------------------------------------------------- faults and stats


@dataclasses.dataclass(frozen=True, slots=True)
class _Fault:
    """One queued fault: wait ``delay`` seconds, then answer ``status`` (if set)."""

    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    location: str | None = None  # for a redirect
    blank_lines: int = 0  # keep-alive blank lines before a non-streamed body
    cut_body: bool = False  # send half of a non-streamed body, then close


class _Faults:
    """Queued faults, filled from the test thread and consumed on the server loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: collections.deque[_Fault] = collections.deque()
        self._stream_drops: collections.deque[int] = collections.deque()

    def add(self, fault: _Fault, times: int) -> None:
        with self._lock:
            self._requests.extend([fault] * times)

    def add_stream_drop(self, after_chunks: int) -> None:
        with self._lock:
            self._stream_drops.append(after_chunks)

    def next_request_fault(self) -> _Fault | None:
        if not self._requests:  # lock-free fast path: the common case has no faults
            return None
        with self._lock:
            return self._requests.popleft() if self._requests else None

    def next_stream_drop(self) -> int | None:
        if not self._stream_drops:
            return None
        with self._lock:
            return self._stream_drops.popleft() if self._stream_drops else None

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._stream_drops.clear()


@dataclasses.dataclass(frozen=True)
class SandboxStats:
    """A snapshot of the sandbox counters.

    ``requests`` counts requests that passed authentication and reached a handler (or an
    injected fault); ``auth_failures`` counts 401s; ``handshake_failures`` counts TLS
    handshakes the server refused (no, unknown, expired or not-yet-valid client
    certificate); ``last_claims`` is the last verified token's claim set.
    """

    requests: int
    auth_failures: int
    handshake_failures: int
    last_claims: dict[str, Any] | None
    signed_requests: int = 0  # requests whose RFC 9421 signature verified


class _Recorder:
    """Counters and the last authenticated request, written only by the server loop."""

    def __init__(self) -> None:
        self.requests = 0
        self.auth_failures = 0
        self.handshake_failures = 0
        self.signed_requests = 0
        self.last_claims: Mapping[str, Any] | None = None
        self.last_path: str | None = None
        self.last_headers: Mapping[str, str] = {}
        self.last_json: object = None

    def snapshot(self) -> SandboxStats:
        claims = dict(self.last_claims) if self.last_claims is not None else None
        return SandboxStats(
            self.requests,
            self.auth_failures,
            self.handshake_failures,
            claims,
            self.signed_requests,
        )

    def last_request(self) -> dict[str, Any] | None:
        """Built on demand so the request path only keeps references."""
        if self.last_path is None:
            return None
        headers = {name.lower(): value for name, value in self.last_headers.items()}
        if "authorization" in headers:
            headers["authorization"] = "<redacted>"
        return {"path": self.last_path, "headers": headers, "json": self.last_json}


# ---------------------------------------------------------------------- the aiohttp app


def _error(
    status: int,
    message: str | None = None,
    *,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.Response(
        body=R.error_body(status, message, param=param),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _sse(chunk: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


class _App:
    """Middleware and handlers; one instance per running server."""

    def __init__(
        self,
        verifier: TokenVerifier,
        faults: _Faults,
        recorder: _Recorder,
        base_url: str,
        signatures: SignatureVerifier | None,
        require_signatures: bool,
    ) -> None:
        self._verifier = verifier
        self._faults = faults
        self._recorder = recorder
        self._base_url = base_url
        self._signatures = signatures
        self._require_signatures = require_signatures
        self._ids = itertools.count(1)
        self._peers: weakref.WeakKeyDictionary[ssl.SSLObject, tuple[str, VerifyingKey]] = (
            weakref.WeakKeyDictionary()
        )
        self.fhe = _FheEndpoint()

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=_MAX_BODY)
        routes = [
            web.post("/chat/completions", self._chat),
            web.post("/beta/completions", self._fim),
            web.post("/completions", self._fim_without_beta),
            web.get("/models", self._models),
            web.get("/user/balance", self._balance),
            web.post("/fhe/contexts", self._fhe_contexts),
            web.post("/fhe/infer", self._fhe_infer),
        ]
        for prefix in ("", "/v1"):
            for route in routes:
                app.router.add_route(route.method, prefix + route.path, route.handler)
        return app

    # -------------------------------------------------------------- middleware

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Token, then signature, then any queued fault, then the handler; errors in
        DeepSeek's shape."""
        recorder = self._recorder
        peer = self._peer(request)
        thumbprint = peer[0] if peer is not None else None
        authorization = request.headers.get(hdrs.AUTHORIZATION)
        verifier = self._verifier
        try:
            token = verifier.cached(authorization, thumbprint)
            if token is None:
                if verifier.may_block:  # may fetch a JWKS: not on the loop
                    loop = asyncio.get_running_loop()
                    token = await loop.run_in_executor(
                        None, verifier.verify, authorization, thumbprint
                    )
                else:
                    token = verifier.verify(authorization, thumbprint)
        except TokenError as exc:
            recorder.auth_failures += 1
            return _error(401, exc.reason, headers=_WWW_AUTHENTICATE)
        signed = "signature-input" in request.headers or "signature" in request.headers
        # a signature is checked whenever one is present, even where none is required
        if (
            self._signatures is not None
            and peer is not None
            and (self._require_signatures or signed)
        ):
            try:
                await self._check_signature(request, peer)
            except SignatureRejected as exc:
                recorder.auth_failures += 1
                return _error(
                    401,
                    exc.reason,
                    headers={
                        "WWW-Authenticate": 'HttpSignature error="invalid_signature"',
                        "Accept-Signature": _SIGNATURE_REQUIRED,
                    },
                )
            except R.RequestError as exc:
                return _error(exc.status, exc.message, param=exc.param)
            recorder.signed_requests += 1
        request[_TOKEN] = token
        recorder.requests += 1
        recorder.last_claims = token.claims
        recorder.last_path = request.path
        recorder.last_headers = request.headers
        recorder.last_json = None
        fault = self._faults.next_request_fault()
        if fault is not None:
            await asyncio.sleep(fault.delay)
            if fault.blank_lines:
                request[_BLANK_LINES] = fault.blank_lines
            if fault.cut_body:
                request[_CUT_BODY] = True
            if fault.location is not None and fault.status is not None:
                return web.Response(status=fault.status, headers={"Location": fault.location})
            if fault.status is not None:
                return _fault_response(fault.status, fault.retry_after)
        try:
            return await handler(request)
        except R.RequestError as exc:
            return _error(exc.status, exc.message, param=exc.param)
        except web.HTTPException as exc:  # the router's 404 / 405
            return _error(exc.status)

    def _peer(self, request: web.Request) -> tuple[str, VerifyingKey] | None:
        """The x5t#S256 and public key of this connection's client certificate,
        worked out once per connection."""
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is None:
            return None
        peer = self._peers.get(ssl_object)
        if peer is None:
            der = ssl_object.getpeercert(binary_form=True)
            if der is None:
                return None
            key = x509.load_der_x509_certificate(der).public_key()
            if not isinstance(key, VerifyingKey):
                return None  # the CA issues EC/Ed25519/RSA keys only; anything else: no peer
            peer = self._peers[ssl_object] = (x5t_s256(der), key)
        return peer

    async def _check_signature(self, request: web.Request, peer: tuple[str, VerifyingKey]) -> None:
        """RFC 9421: signed with the presented certificate's key, over the body received."""
        assert self._signatures is not None
        body = request[_BODY] = await _read_body(request)
        headers = request.headers
        thumbprint, key = peer

        def field(name: str) -> str | None:
            values = headers.getall(name, None)
            return ", ".join(values) if values else None

        self._signatures.verify(
            method=request.method,
            authority=request.host,
            target=request.raw_path,
            field=field,
            body=body,
            public_key=key,
            keyid=thumbprint,
        )

    # -------------------------------------------------------------- handlers

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        chat = R.parse_chat(await self._json(request))
        completion = R.chat_completion(chat, request[_TOKEN].sub)
        meta: dict[str, Any] = {
            "response_id": f"chatcmpl-sandbox-{next(self._ids)}",
            "created": int(time.time()),
            "model": chat.model,
        }
        if chat.stream:
            return await self._stream(request, R.chat_chunks(completion, **meta))
        body = R.chat_body(completion, **meta)
        if request.get(_CUT_BODY):
            return await self._cut(request, body)
        if request.get(_BLANK_LINES):
            return await self._after_blank_lines(request, body)
        return web.json_response(body)

    async def _cut(self, request: web.Request, body: Mapping[str, Any]) -> web.StreamResponse:
        """A 200 whose body breaks off half-way (Content-Length promises the rest)."""
        data = json.dumps(body).encode()
        response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "application/json"})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        _break_off(request)
        return response

    async def _after_blank_lines(
        self, request: web.Request, body: Mapping[str, Any]
    ) -> web.StreamResponse:
        """DeepSeek under load: headers at once, blank lines while waiting, then the JSON."""
        response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "application/json"})
        await response.prepare(request)
        for _ in range(request[_BLANK_LINES]):
            await response.write(b"\n")
            await asyncio.sleep(0.01)
        await response.write(json.dumps(body).encode())
        await response.write_eof()
        return response

    async def _fim(self, request: web.Request) -> web.StreamResponse:
        fim = R.parse_fim(await self._json(request))
        completion = R.fim_completion(fim)
        meta: dict[str, Any] = {
            "response_id": f"cmpl-sandbox-{next(self._ids)}",
            "created": int(time.time()),
            "model": fim.model,
        }
        if fim.stream:
            return await self._stream(request, R.fim_chunks(completion, **meta))
        return web.json_response(R.fim_body(completion, **meta))

    async def _fim_without_beta(self, request: web.Request) -> web.StreamResponse:
        raise R.RequestError(
            404,
            "FIM completion is a beta feature: use the base URL "
            f"{self._base_url}/beta (POST /beta/completions)",
        )

    async def _fhe_contexts(self, request: web.Request) -> web.StreamResponse:
        """Cache a public evaluation context (tens of MB); answers its id."""
        return await self.fhe.upload(request)

    async def _fhe_infer(self, request: web.Request) -> web.StreamResponse:
        """Score an encrypted batch; answers the encrypted result frame."""
        return await self.fhe.infer(request)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=R.MODELS_BODY, content_type="application/json")

    async def _balance(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=R.BALANCE_BODY, content_type="application/json")

    async def _json(self, request: web.Request) -> object:
        raw = request[_BODY] if _BODY in request else await request.read()
        try:
            body: object = json.loads(raw)
        except ValueError as exc:
            raise R.RequestError(400, f"Invalid JSON body: {exc}") from None
        self._recorder.last_json = body
        return body

    async def _stream(
        self, request: web.Request, chunks: Sequence[Mapping[str, Any]]
    ) -> web.StreamResponse:
        """Send SSE: a keep-alive comment, one write per event, then ``[DONE]``.

        One write per event, as a real stream arrives, so a client that stops reading
        early really does leave the rest unread. A queued drop closes the connection
        after that many events instead.
        """
        response = web.StreamResponse(
            headers={hdrs.CONTENT_TYPE: "text/event-stream", hdrs.CACHE_CONTROL: "no-cache"}
        )
        await response.prepare(request)
        await response.write(_KEEP_ALIVE)
        drop_after = self._faults.next_stream_drop()
        for index, chunk in enumerate(chunks):
            if index == drop_after:
                _break_off(request)
                return response
            await response.write(_sse(chunk))
        await response.write(_DONE)
        return response


class _FheEndpoint:
    """``POST /fhe/contexts`` and ``POST /fhe/infer`` over :class:`secure_ds.fhe.FheService`.

    TenSEAL is imported on the first FHE request, so a sandbox that never sees one
    never loads it. Bodies are binary frames (``application/vnd.secure-ds.fhe.v1``);
    their size is checked from ``Content-Length`` and while reading, before the frame
    is parsed. Evaluation is CPU-bound, so it runs on a worker thread, not the loop.
    """

    def __init__(self) -> None:
        self._service: Any = None
        self._lock = threading.Lock()

    def service(self) -> Any:
        with self._lock:
            if self._service is None:
                from ..fhe import FheService

                self._service = FheService()
            return self._service

    async def upload(self, request: web.Request) -> web.StreamResponse:
        from ..fhe._wire import MAX_CONTEXT_BYTES

        data = await self._body(request, MAX_CONTEXT_BYTES + 64 * 1024)
        context_id = await self._run(self.service().upload_context, data)
        return web.json_response({"context_id": context_id})

    async def infer(self, request: web.Request) -> web.StreamResponse:
        from ..fhe._wire import CONTENT_TYPE

        data = await self._body(request, _MAX_BODY * 8)
        result = await self._run(self.service().infer, data)
        return web.Response(body=result, content_type=CONTENT_TYPE)

    async def _body(self, request: web.Request, limit: int) -> bytes:
        from ..fhe._wire import CONTENT_TYPE

        if request.content_type != CONTENT_TYPE:
            raise R.RequestError(
                415, f"FHE endpoints take Content-Type {CONTENT_TYPE}, not {request.content_type}"
            )
        if _BODY in request:  # already read (and digest-checked) by the signature check
            if len(request[_BODY]) > limit:
                raise R.RequestError(413, f"FHE frame is over {limit} bytes")
            return request[_BODY]
        return await _read_limited(request, limit, "FHE frame")

    async def _run(self, work: Callable[[bytes], Any], data: bytes) -> Any:
        from ..fhe import FheError

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, work, data)
        except FheError as exc:
            raise R.RequestError(exc.status, str(exc), param=exc.param) from None


async def _read_body(request: web.Request) -> bytes:
    """The whole body, up to the route's limit (FHE frames are larger than chat bodies)."""
    path = request.path
    limit = _MAX_BODY
    if path.endswith("/fhe/contexts"):
        from ..fhe._wire import MAX_CONTEXT_BYTES

        limit = MAX_CONTEXT_BYTES + 64 * 1024
    elif path.endswith("/fhe/infer"):
        limit = _MAX_BODY * 8
    return await _read_limited(request, limit, "request body")


async def _read_limited(request: web.Request, limit: int, what: str) -> bytes:
    """The body, refused with a 413 naming ``what`` once it is (or says it is) over
    ``limit`` bytes, before more than a chunk past the limit is held in memory."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise R.RequestError(413, f"{what} of {declared} bytes is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(1 << 20):
        size += len(chunk)
        if size > limit:
            raise R.RequestError(413, f"{what} is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _fault_response(status: int, retry_after: float | None) -> web.Response:
    headers = None
    if status == 429 and retry_after is not None:
        headers = {"Retry-After": f"{retry_after:g}"}
    return _error(status, headers=headers)


def _break_off(request: web.Request) -> None:
    """Close the connection mid-body: no terminating chunk, so the client sees a cut stream.

    ``close()`` rather than ``abort()`` so the chunks already written are flushed first;
    aiohttp's own ``write_eof`` afterwards fails quietly on the closed transport.
    """
    if request.transport is not None:
        request.transport.close()


# ---------------------------------------------------------------------- the server thread


class _ServerThread:
    """Serves an aiohttp app on a bound socket from a thread with its own event loop."""

    def __init__(
        self, app: web.Application, ssl_context: ssl.SSLContext, sock: socket.socket
    ) -> None:
        self._app = app
        self._ssl_context = ssl_context
        self._sock = sock
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._startup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="secure-ds-sandbox", daemon=True)

    def start(self) -> None:
        """Start serving; returns once the socket accepts connections."""
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError("the sandbox server did not start in time")
        if self._startup_error is not None:
            self._thread.join()
            raise RuntimeError("the sandbox server failed to start") from self._startup_error

    def stop(self) -> None:
        """Stop the loop (the thread then shuts the server down) and wait for the thread."""
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(
            self._app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        try:
            try:
                loop.run_until_complete(self._serve(runner))
            except BaseException as exc:  # handed to start(), which raises it
                self._startup_error = exc
                return
            finally:
                self._ready.set()
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            _cancel_leftovers(loop)
            loop.close()

    async def _serve(self, runner: web.AppRunner) -> None:
        await runner.setup()
        await web.SockSite(runner, self._sock, ssl_context=self._ssl_context).start()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


def _server_ssl_context(cert: Path, key: Path, ca: Path, recorder: _Recorder) -> ssl.SSLContext:
    """TLS 1.2+, client certificate required and checked against the sandbox CA only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca)
    context.sslobject_class = _counting_ssl_object(recorder)
    return context


def _counting_ssl_object(recorder: _Recorder) -> type[ssl.SSLObject]:
    """An SSLObject that counts refused handshakes and lets the client hear why.

    asyncio (3.11) closes the socket as soon as a server-side handshake fails, dropping
    the TLS alert OpenSSL queued, and tells nobody. So on failure this reports "want
    read" once: asyncio then flushes the queued alert (``unknown ca``, ``certificate
    expired``, ``certificate required``...) to the client, which closes; a further call
    raises the real error and asyncio closes the connection.
    """

    class CountingSSLObject(ssl.SSLObject):
        refusal: ssl.SSLError | None = None

        def do_handshake(self) -> None:
            if self.refusal is not None:
                raise self.refusal
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as exc:
                recorder.handshake_failures += 1
                self.refusal = exc
                raise ssl.SSLWantReadError("handshake refused; sending the alert") from exc

    return CountingSSLObject


# ---------------------------------------------------------------------- the public class


@dataclasses.dataclass(frozen=True)
class _Running:
    """Everything one start() created; dropped by stop()."""

    directory: Path
    ca: LocalCA
    issuer_key: IssuerKey
    server: _ServerThread
    base_url: str
    fhe: _FheEndpoint


class Sandbox:
    """A local DeepSeek-compatible endpoint that demands mTLS and a certificate-bound JWT.

    Use as ``with Sandbox() as sb:`` or ``sb.start()`` / ``sb.stop()`` (both idempotent).
    ``token_alg`` picks the issuer key: ``"ES256"`` (EC P-256) or ``"EdDSA"`` (Ed25519).

    Besides its embedded issuer's tokens, the sandbox accepts tokens of one external
    issuer (e.g. Keycloak) whose keys it fetches from ``jwks_url``: ``jwks_issuer`` is
    the ``iss`` they must carry, ``jwks_audience`` the ``aud`` (default: the base URL),
    ``jwks_verify`` what the JWKS server's certificate is checked with (an
    ``ssl.SSLContext``; default: the system store). They must be certificate-bound too.

    ``require_signatures`` (default on): every request must carry a valid RFC 9421
    signature made with the presented certificate's key; off, unsigned requests pass
    but a signature that is present is still checked, unless ``check_signatures`` is
    off too (benchmarks comparing a signing client with one that does not sign, where
    the server should do the same work for both).
    """

    def __init__(
        self,
        *,
        token_alg: IssuerAlg = "ES256",  # noqa: S107 (an algorithm name)
        jwks_url: str | None = None,
        jwks_issuer: str | None = None,
        jwks_audience: str | Sequence[str] | None = None,
        jwks_verify: ssl.SSLContext | bool = True,
        require_signatures: bool = True,
        check_signatures: bool = True,
    ) -> None:
        if token_alg not in ("ES256", "EdDSA"):
            raise ValueError(f"unsupported token_alg {token_alg!r}; use 'ES256' or 'EdDSA'")
        if (jwks_url is None) != (jwks_issuer is None):
            raise ValueError("jwks_url and jwks_issuer go together: set both or neither")
        if require_signatures and not check_signatures:
            raise ValueError("require_signatures needs check_signatures")
        self._token_alg: IssuerAlg = token_alg
        # built now: a bad URL fails here, and the cache outlives restarts
        self._jwks = JwksCache(jwks_url, verify=jwks_verify) if jwks_url is not None else None
        self._jwks_issuer = jwks_issuer
        self._jwks_audience = jwks_audience
        self.require_signatures = require_signatures
        self.check_signatures = check_signatures
        self._faults = _Faults()
        self._recorder = _Recorder()
        self._lock = threading.Lock()
        self._running: _Running | None = None
        self._client_files: dict[str, tuple[Path, Path]] = {}

    # -------------------------------------------------------------- lifecycle

    def start(self) -> Sandbox:
        """Mint the PKI and issuer key in a fresh temp dir and start serving."""
        with self._lock:
            if self._running is None:
                self._running = self._start()
        return self

    def stop(self) -> None:
        """Stop serving, join the server thread and remove the temp dir."""
        with self._lock:
            running, self._running = self._running, None
            self._client_files.clear()
        if running is not None:
            try:
                running.server.stop()
            finally:
                shutil.rmtree(running.directory, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _start(self) -> _Running:
        directory = Path(tempfile.mkdtemp(prefix="secure-ds-sandbox-"))
        # Bound before the app is built: the port is part of the audience tokens must carry.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((_HOST, 0))
            base_url = f"https://{_HOST}:{sock.getsockname()[1]}"
            ca, issuer_key, context = self._mint(directory)
            verifier = TokenVerifier.for_issuer(issuer_key, issuer=ISSUER, audience=base_url)
            if self._jwks is not None:
                assert self._jwks_issuer is not None
                verifier.trust_jwks(
                    self._jwks,
                    issuer=self._jwks_issuer,
                    audience=self._jwks_audience or base_url,
                )
            handlers = _App(
                verifier,
                self._faults,
                self._recorder,
                base_url,
                SignatureVerifier(replay_cache=ReplayCache()) if self.check_signatures else None,
                self.require_signatures,
            )
            app = handlers.build()
            server = _ServerThread(app, context, sock)
            server.start()
        except BaseException:
            sock.close()
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return _Running(directory, ca, issuer_key, server, base_url, handlers.fhe)

    def _mint(self, directory: Path) -> tuple[LocalCA, IssuerKey, ssl.SSLContext]:
        """Write ca.pem, server.pem, server-key.pem, issuer-key.pem; return the server context."""
        ca = LocalCA.create("secure-ds sandbox CA")
        ca_path = ca.write(directory)
        cert_pem, key_pem = ca.issue_server_cert([_HOST, "localhost"])
        cert_path = _write(directory / "server.pem", cert_pem)
        key_path = _write(directory / "server-key.pem", key_pem)
        issuer_key = generate_issuer_key(self._token_alg)
        _write(directory / "issuer-key.pem", private_key_pem(issuer_key))
        return ca, issuer_key, _server_ssl_context(cert_path, key_path, ca_path, self._recorder)

    # -------------------------------------------------------------- properties

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT``, the endpoint to point clients at."""
        return self._require().base_url

    @property
    def audience(self) -> str:
        """The ``aud`` tokens must carry: the base URL (RFC 8707 style)."""
        return self._require().base_url

    @property
    def issuer(self) -> str:
        """The ``iss`` tokens must carry."""
        return ISSUER

    @property
    def token_alg(self) -> IssuerAlg:
        """The only JWT ``alg`` accepted: ES256 or EdDSA."""
        return self._token_alg

    @property
    def directory(self) -> Path:
        """The temp dir holding ca.pem, server.pem, issuer-key.pem and client files."""
        return self._require().directory

    @property
    def ca_path(self) -> Path:
        """The sandbox CA certificate (PEM): trust it to reach the sandbox."""
        return self._require().directory / "ca.pem"

    @property
    def issuer_key_path(self) -> Path:
        """The issuer's private key (PKCS#8 PEM), for clients that mint their own tokens."""
        return self._require().directory / "issuer-key.pem"

    @property
    def issuer_public_key(self) -> ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey:
        """The key the sandbox verifies token signatures with."""
        return self._require().issuer_key.public_key()

    @property
    def ca(self) -> LocalCA:
        """The sandbox CA, for tests that need more (or deliberately bad) certificates."""
        return self._require().ca

    @property
    def jwks(self) -> JwksCache | None:
        """The external issuer's key cache (``jwks_url``), if one is trusted."""
        return self._jwks

    @property
    def stats(self) -> SandboxStats:
        """A snapshot of the request counters and the last verified claims."""
        return self._recorder.snapshot()

    @property
    def fhe_service(self) -> Any:
        """The :class:`secure_ds.fhe.FheService` behind ``/fhe/*`` (created on first use)."""
        return self._require().fhe.service()

    @property
    def last_request(self) -> dict[str, Any] | None:
        """The last authenticated request: path, headers (lower-cased, token redacted), json."""
        return self._recorder.last_request()

    # -------------------------------------------------------------- fault injection

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``times`` authenticated requests with a DeepSeek error ``status``.

        ``retry_after`` (seconds) is sent as ``Retry-After`` on 429s.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status, not {status}")
        self._faults.add(_Fault(status=status, retry_after=retry_after), _positive(times))

    def redirect_next(self, location: str, status: int = 307, times: int = 1) -> None:
        """Answer the next ``times`` authenticated requests with a redirect to ``location``
        (to test that clients do not follow it, and so do not carry the token there)."""
        if status not in (301, 302, 303, 307, 308):
            raise ValueError(f"status must be a redirect status, not {status}")
        self._faults.add(_Fault(status=status, location=location), _positive(times))

    def cut_next_body(self, times: int = 1) -> None:
        """Answer the next ``times`` non-streamed chat calls with a 200 whose body breaks
        off half-way through."""
        self._faults.add(_Fault(cut_body=True), _positive(times))

    def keepalive_next(self, blank_lines: int = 3, times: int = 1) -> None:
        """Precede the next ``times`` non-streamed chat bodies with keep-alive blank
        lines, sent 10 ms apart, as DeepSeek does while a request waits for inference."""
        if blank_lines < 1:
            raise ValueError("blank_lines must be at least 1")
        self._faults.add(_Fault(blank_lines=blank_lines), _positive(times))

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` authenticated requests for ``seconds``, sending nothing."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        self._faults.add(_Fault(delay=seconds), _positive(times))

    def drop_next_stream(self, after_chunks: int = 2) -> None:
        """Cut the next streamed response after ``after_chunks`` data chunks."""
        if after_chunks < 0:
            raise ValueError("after_chunks must not be negative")
        self._faults.add_stream_drop(after_chunks)

    def clear_faults(self) -> None:
        """Forget every queued fault."""
        self._faults.clear()

    # -------------------------------------------------------------- client material

    def client_settings(
        self,
        subject: str = "alice",
        roles: Sequence[str] = ("engineer",),
        attributes: Mapping[str, object] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Settings for a secure client acting as ``subject`` against this sandbox.

        Mints (once per subject) a client certificate signed by the sandbox CA and
        points the embedded token issuer at the sandbox's issuer key, so tokens the
        client mints are accepted. ``overrides`` replace any other setting.
        """
        running = self._require()
        cert_path, key_path = self._client_files_for(running, subject)
        values: dict[str, Any] = {
            "endpoint": running.base_url,
            "client_cert": cert_path,
            "client_key": key_path,
            "ca_bundle": running.directory / "ca.pem",
            "token_provider": "embedded",
            "issuer_key": running.directory / "issuer-key.pem",
            "issuer": ISSUER,
            "audience": running.base_url,
            "subject": subject,
            "roles": tuple(roles),
            "attributes": dict(attributes or {}),
            "audit_path": running.directory / "audit.jsonl",
        }
        values.update(overrides)
        return Settings(**values)

    def _client_files_for(self, running: _Running, subject: str) -> tuple[Path, Path]:
        with self._lock:
            files = self._client_files.get(subject)
            if files is None:
                cert_pem, key_pem = running.ca.issue_client_cert(subject)
                stem = f"client-{_file_safe(subject)}"
                files = (
                    _write(running.directory / f"{stem}.pem", cert_pem),
                    _write(running.directory / f"{stem}-key.pem", key_pem),
                )
                self._client_files[subject] = files
            return files

    def _require(self) -> _Running:
        running = self._running
        if running is None:
            raise RuntimeError("the sandbox is not running; call start() or use `with Sandbox()`")
        return running


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _positive(times: int) -> int:
    if times < 1:
        raise ValueError("times must be at least 1")
    return times


def _file_safe(subject: str) -> str:
    """A file-name-safe form of ``subject``; a hash suffix keeps altered names distinct."""
    safe = _UNSAFE_FILE_CHARS.sub("_", subject)[:64]
    if safe == subject:
        return safe
    return f"{safe}-{hashlib.sha256(subject.encode()).hexdigest()[:8]}"
