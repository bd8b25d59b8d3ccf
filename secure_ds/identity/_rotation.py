"""Client certificate rotation: new connections use new files, in-flight calls finish.

cert-manager, SPIFFE agents and similar tools replace the client certificate and key
on disk while the workload runs: by renaming new files over the old ones, or by
rewriting them in place, and not always both at the same instant. This module lets a
long-lived client follow them without a restart:

* :class:`RotatingIdentity` holds the current :class:`ClientPair` (certificate, key,
  thumbprint and the ``ssl.SSLContext`` built from them). :meth:`RotatingIdentity.check`
  is cheap (a clock compare; at most once per ``SECURE_DS_CERT_CHECK_INTERVAL`` two
  ``stat`` calls) and, when either file changed, loads and validates the new pair. A
  pair that cannot be used (unreadable, key not matching the certificate, not valid
  now, refused by OpenSSL, or changed again while being loaded) is rejected with a
  :class:`~secure_ds.errors.CertificateRotationError` naming both files: the previous
  pair stays in use, and the next check tries again (the key may land a moment after
  the certificate).
* :class:`RotatingTransport` / :class:`AsyncRotatingTransport` keep one inner httpx2
  transport (connection pool) per pair. New requests go to the newest one; a request
  already sent keeps its connection until its response is closed, and the older pool
  is closed once its last response is. So a stream that started before a rotation
  completes on the old certificate, and the next call handshakes with the new one.
* Listeners (:meth:`RotatingIdentity.subscribe`) hear of every accepted rotation: the
  client uses that to drop a token bound to the old certificate
  (:meth:`TokenProvider.on_certificate_rotated`) and to let the audit record name the
  new thumbprint. Request signers read :meth:`RotatingIdentity.current` per request.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ..config import Settings
from ..errors import CertificateRotationError
from ._tls import build_ssl_context, cert_thumbprint

__all__ = ["AsyncRotatingTransport", "ClientPair", "RotatingIdentity", "RotatingTransport"]

_log = logging.getLogger("secure_ds.identity.rotation")

# (inode, device, size, mtime_ns, ctime_ns) per file; None when it cannot be stat'ed
# (between an unlink and a rename): any difference means "look again"
_Signature = tuple[tuple[int, int, int, int, int] | None, ...]
# File times tick coarsely (a few ms on Linux): a same-size rewrite in place within one
# tick leaves the stat unchanged. Files written this recently are compared by content.
_RECENT_NS = 2_000_000_000


@dataclass(frozen=True)
class ClientPair:
    """One accepted certificate/key pair and the TLS context built from it."""

    cert_der: bytes = field(repr=False)
    private_key: PrivateKeyTypes = field(repr=False)
    thumbprint: str  # RFC 8705 x5t#S256 of cert_der
    not_after: datetime
    ssl_context: ssl.SSLContext = field(repr=False)
    generation: int  # 0 for the pair loaded at start, +1 per accepted rotation


class RotatingIdentity:
    """The client's current certificate/key pair, re-read when the files change.

    ``clock`` (monotonic seconds) paces the checks and ``now`` (aware UTC datetime)
    decides validity; both are injectable for tests.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        check_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if settings.client_cert is None or settings.client_key is None:
            raise ValueError("certificate rotation needs SECURE_DS_CLIENT_CERT and _KEY")
        self._settings = settings
        self.cert_path: Path = settings.client_cert
        self.key_path: Path = settings.client_key
        self._interval = settings.cert_check_interval if check_interval is None else check_interval
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._listeners: list[Callable[[ClientPair], None]] = []
        self._seen = self._signature()
        self._loading_first = True
        self._seen_bytes: tuple[bytes, bytes] = (b"", b"")
        self._current = self._load(0)
        self._loading_first = False
        self._retry = False  # the last attempt failed: try again even if nothing changed
        self._next_check = clock() + self._interval
        self.last_error: CertificateRotationError | None = None

    def current(self) -> ClientPair:
        """The pair new connections (and request signatures) use now."""
        return self._current

    def subscribe(self, listener: Callable[[ClientPair], None]) -> None:
        """Call ``listener(pair)`` after every accepted rotation (outside any lock)."""
        with self._lock:
            self._listeners.append(listener)

    def check(self) -> bool:
        """Pick up changed files if it is time to look; True when a new pair was accepted.

        Never raises for a bad new pair: that is logged, kept in :attr:`last_error`, and
        the current pair stays in use (a call must not fail because a renewal is half
        written while the old certificate is still good).
        """
        if self._clock() < self._next_check:  # the common case: no lock, no syscall
            return False
        try:
            return self._look(force=False)
        except CertificateRotationError:
            return False

    def reload(self) -> ClientPair:
        """Look at the files now; raise :class:`CertificateRotationError` if the new pair
        is unusable (the current pair stays in use). Returns the pair in use after."""
        self._look(force=True, raise_errors=True)
        return self._current

    # ------------------------------------------------------------------ internals

    def _look(self, *, force: bool, raise_errors: bool = False) -> bool:
        with self._lock:
            now = self._clock()
            if not force and now < self._next_check:
                return False  # another thread looked meanwhile
            self._next_check = now + self._interval
            signature = self._signature()
            if (
                signature == self._seen
                and not self._retry
                and not force
                and not self._rewritten_within_a_tick(signature)
            ):
                return False
            self._seen = signature
            try:
                pair = self._load(self._current.generation + 1)
            except CertificateRotationError as exc:
                self._retry = True
                if self.last_error is None or str(self.last_error) != str(exc):
                    _log.error("%s", exc)  # once per distinct problem, not every second
                self.last_error = exc
                if raise_errors:
                    raise
                return False
            self._retry = False
            self.last_error = None
            if pair.cert_der == self._current.cert_der:
                return False  # touched or rewritten with the same certificate
            self._current = pair
            listeners = list(self._listeners)
        _log.info(
            "client certificate rotated: %s (x5t#S256 %s, valid until %s)",
            self.cert_path,
            pair.thumbprint,
            pair.not_after.isoformat(),
        )
        for listener in listeners:
            listener(pair)
        return True

    def _rewritten_within_a_tick(self, signature: _Signature) -> bool:
        """Unchanged stat, but recently written: did the content change all the same?"""
        recent = time.time_ns() - _RECENT_NS
        if not any(part is not None and part[3] >= recent for part in signature):
            return False
        try:
            return self._read_both() != self._seen_bytes
        except CertificateRotationError:
            return True

    def _signature(self) -> _Signature:
        parts: list[tuple[int, int, int, int, int] | None] = []
        for path in (self.cert_path, self.key_path):
            try:
                st = os.stat(path)
            except OSError:
                parts.append(None)
                continue
            parts.append((st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(parts)

    def _fail(self, problem: str, hint: str) -> CertificateRotationError:
        if self._loading_first:
            message = (
                f"The client certificate {self.cert_path} and key {self.key_path} cannot be "
                f"used: {problem}."
            )
        else:
            message = (
                f"The client certificate {self.cert_path} and key {self.key_path} changed on "
                f"disk, but {problem}; the previous certificate stays in use."
            )
        return CertificateRotationError(
            message,
            cert_path=self.cert_path,
            key_path=self.key_path,
            hint=hint,
        )

    def _read_both(self) -> tuple[bytes, bytes]:
        try:
            return self.cert_path.read_bytes(), self.key_path.read_bytes()
        except OSError as exc:
            raise self._fail(
                f"{exc.filename} cannot be read ({exc.strerror or type(exc).__name__})",
                "Make both files readable by this process; it retries on the next check.",
            ) from None

    def _load(self, generation: int) -> ClientPair:
        cert_pem, key_pem = self._read_both()
        try:
            certs = x509.load_pem_x509_certificates(cert_pem)
        except ValueError:
            certs = []
        if not certs:
            raise self._fail(
                f"{self.cert_path} holds no PEM certificate",
                "Write a PEM certificate there; it retries on the next check.",
            )
        password = self._settings.client_key_password
        try:
            key = serialization.load_pem_private_key(
                key_pem, password.reveal().encode() if password else None
            )
        except (TypeError, ValueError):
            raise self._fail(
                f"{self.key_path} holds no usable PEM private key (or the passphrase is wrong)",
                "Write the new private key there (SECURE_DS_CLIENT_KEY_PASSWORD for an "
                "encrypted one); it retries on the next check.",
            ) from None
        leaf = certs[0]
        if _spki(key.public_key()) != _spki(leaf.public_key()):
            raise self._fail(
                f"the key in {self.key_path} does not belong to the certificate in "
                f"{self.cert_path} (caught half-way through a rotation?)",
                "Replace both files with a matching pair; if the key is still being "
                "written it is picked up on the next check.",
            )
        now = self._now()
        if leaf.not_valid_after_utc <= now:
            raise self._fail(
                f"the new certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
                "Issue a certificate that is valid now (check the issuer's clock and renewal).",
            )
        if leaf.not_valid_before_utc > now:
            raise self._fail(
                f"the new certificate is not valid until "
                f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                "Check this machine's clock, or issue a certificate that is valid now.",
            )
        try:
            # the same function that builds the first context: same CA bundle, TLS floor
            # and SPKI pin; it reads the files itself (ssl takes paths only)...
            context = build_ssl_context(self._settings)
        except (ssl.SSLError, OSError) as exc:
            raise self._fail(
                f"OpenSSL refused the pair ({type(exc).__name__}: {getattr(exc, 'reason', '')})",
                "Check that both files hold the matching PEM certificate and key.",
            ) from None
        # ...so make sure it read what was validated above, not a later write
        if self._read_both() != (cert_pem, key_pem):
            raise self._fail(
                "they changed again while being loaded",
                "Nothing to do if a rotation is in progress: it retries on the next check.",
            )
        self._seen_bytes = (cert_pem, key_pem)
        cert_der = leaf.public_bytes(serialization.Encoding.DER)
        return ClientPair(
            cert_der=cert_der,
            private_key=key,
            thumbprint=cert_thumbprint(cert_der),
            not_after=leaf.not_valid_after_utc,
            ssl_context=context,
            generation=generation,
        )


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# ---------------------------------------------------------------------- transports


@dataclass
class _Pool:
    """One inner transport (connection pool) and the responses still open on it."""

    transport: object  # httpx2.BaseTransport or httpx2.AsyncBaseTransport
    generation: int
    open_responses: int = 0
    retired: bool = False


class _Pools:
    """Which pool new requests use, and which older ones are draining. Shared logic of
    the sync and async transports; the caller closes what :meth:`acquire` and
    :meth:`release` hand back, outside the lock."""

    def __init__(self, identity: RotatingIdentity, make: Callable[[ssl.SSLContext], object]):
        self.identity = identity
        self._make = make
        self._lock = threading.Lock()
        pair = identity.current()
        self.active = _Pool(make(pair.ssl_context), pair.generation)
        self.draining: list[_Pool] = []

    def acquire(self) -> tuple[_Pool, list[_Pool]]:
        pair = self.identity.current()
        to_close: list[_Pool] = []
        with self._lock:
            if pair.generation != self.active.generation:
                old = self.active
                old.retired = True
                self.active = _Pool(self._make(pair.ssl_context), pair.generation)
                if old.open_responses == 0:
                    to_close.append(old)
                else:
                    self.draining.append(old)
            pool = self.active
            pool.open_responses += 1
        return pool, to_close

    def release(self, pool: _Pool) -> _Pool | None:
        with self._lock:
            pool.open_responses -= 1
            if pool.retired and pool.open_responses == 0 and pool in self.draining:
                self.draining.remove(pool)
                return pool
        return None

    def all(self) -> list[_Pool]:
        with self._lock:
            pools, self.draining = [self.active, *self.draining], []
        return pools

    @property
    def draining_count(self) -> int:
        return len(self.draining)


class RotatingTransport(httpx2.BaseTransport):
    """Sends each request through the pool of the current certificate pair.

    ``make(ssl_context)`` builds an inner transport (e.g. ``httpx2.HTTPTransport``).
    The caller decides when to :meth:`RotatingIdentity.check`; this transport only
    follows :meth:`RotatingIdentity.current`.
    """

    def __init__(
        self, identity: RotatingIdentity, make: Callable[[ssl.SSLContext], httpx2.BaseTransport]
    ) -> None:
        self._pools = _Pools(identity, make)

    @property
    def generation(self) -> int:
        """The certificate generation new requests use."""
        return self._pools.active.generation

    @property
    def draining(self) -> int:
        """Older pools kept open for responses still being read."""
        return self._pools.draining_count

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        pool, to_close = self._pools.acquire()
        for old in to_close:
            _sync(old).close()
        try:
            response = _sync(pool).handle_request(request)
        except BaseException:
            self._release(pool)
            raise
        stream = response.stream
        assert isinstance(stream, httpx2.SyncByteStream)
        response.stream = _ReleasingStream(stream, lambda: self._release(pool))
        return response

    def _release(self, pool: _Pool) -> None:
        done = self._pools.release(pool)
        if done is not None:
            _sync(done).close()

    def close(self) -> None:
        for pool in self._pools.all():
            _sync(pool).close()


class AsyncRotatingTransport(httpx2.AsyncBaseTransport):
    """The async twin of :class:`RotatingTransport`."""

    def __init__(
        self,
        identity: RotatingIdentity,
        make: Callable[[ssl.SSLContext], httpx2.AsyncBaseTransport],
    ) -> None:
        self._pools = _Pools(identity, make)

    @property
    def generation(self) -> int:
        return self._pools.active.generation

    @property
    def draining(self) -> int:
        return self._pools.draining_count

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        pool, to_close = self._pools.acquire()
        for old in to_close:
            await _async(old).aclose()
        try:
            response = await _async(pool).handle_async_request(request)
        except BaseException:
            await self._release(pool)
            raise
        stream = response.stream
        assert isinstance(stream, httpx2.AsyncByteStream)
        response.stream = _AsyncReleasingStream(stream, lambda: self._release(pool))
        return response

    async def _release(self, pool: _Pool) -> None:
        done = self._pools.release(pool)
        if done is not None:
            await _async(done).aclose()

    async def aclose(self) -> None:
        for pool in self._pools.all():
            await _async(pool).aclose()


def _sync(pool: _Pool) -> httpx2.BaseTransport:
    assert isinstance(pool.transport, httpx2.BaseTransport)
    return pool.transport


def _async(pool: _Pool) -> httpx2.AsyncBaseTransport:
    assert isinstance(pool.transport, httpx2.AsyncBaseTransport)
    return pool.transport


class _ReleasingStream(httpx2.SyncByteStream):
    """The inner response stream; closing it (once) releases the pool it came from."""

    def __init__(self, inner: httpx2.SyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        yield from self._inner

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class _AsyncReleasingStream(httpx2.AsyncByteStream):
    def __init__(
        self, inner: httpx2.AsyncByteStream, release: Callable[[], Awaitable[None]]
    ) -> None:
        self._inner = inner
        self._release: Callable[[], Awaitable[None]] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                await release()
