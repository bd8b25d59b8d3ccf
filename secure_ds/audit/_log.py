"""The local append-only audit log: one JSON line per call, written before a call returns.

Invariants (the rest of secure-ds relies on them):

1. A record handed to :meth:`AuditLog.append` is in the file (``write(2)`` done, so it
   survives a crash of this process) before ``append`` returns. How soon it is also on
   stable storage is the ``fsync`` policy:

   * ``"always"``: ``append`` returns only after the record is fsynced. Concurrent
     callers are group-committed (one ``write`` + one ``fsync`` for everyone queued).
   * ``"background"`` (default): a flusher thread fsyncs unsynced data every
     ``fsync_interval`` seconds (20 ms by default), so a power loss or kernel crash can
     take at most the records of that window plus one fsync; a crash of the process
     itself loses nothing. Syncing per record instead wakes the flusher on every call,
     and its GIL hand-offs cost the calling threads more than the fsync itself.
   * ``"never"``: the operating system decides (tests, tmpfs).

2. If a record cannot be written or synced, :meth:`append` (or, for a background sync,
   the next :meth:`check`) raises :class:`~secure_ds.errors.AuditError` and the log
   turns *failed*. A failed log stays failed, so the guard chain sends no further call
   (fail closed). :meth:`check` also refuses while the file system has less than
   ``min_free_bytes`` available, so a full disk stops calls before they go out.
3. Lines are never half-written: each write happens under an exclusive ``flock`` and,
   if it fails part-way, the file is truncated back to where it began.
4. Lines from several threads (and processes, through ``flock``) never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from ..errors import AuditError

__all__ = ["AuditLog", "FsyncPolicy", "encode_record"]

FsyncPolicy = Literal["always", "background", "never"]


class AuditLog:
    """Append-only JSON-lines file (mode 0600 in a 0700 directory)."""

    def __init__(
        self,
        path: Path,
        *,
        fsync: FsyncPolicy = "background",
        fsync_interval: float = 0.02,
        min_free_bytes: int = 1 << 20,
    ) -> None:
        if fsync not in ("always", "background", "never"):
            raise ValueError(f"unknown fsync policy {fsync!r}")
        self.path = Path(path)
        self.fsync: FsyncPolicy = fsync
        self.fsync_interval = fsync_interval
        self.min_free_bytes = min_free_bytes
        self._queue_lock = threading.Lock()  # guards _pending and the sequence numbers
        self._io_lock = threading.Lock()  # one writer at a time
        self._pending: list[bytes] = []
        self._next_seq = 0
        self._durable_seq = -1
        self._failure: str | None = None
        self._closed = False
        self._dirty = threading.Event()
        self._space_checked_until = 0.0
        self._stop = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            created = not self.path.exists()
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            if created:
                _fsync_dir(self.path.parent)
        except OSError as exc:
            raise AuditError(
                f"Cannot open the audit log {self.path} ({exc.strerror}).",
                hint="Set SECURE_DS_AUDIT_PATH to a writable file; no call is sent without it.",
            ) from None
        self._flusher: threading.Thread | None = None
        if fsync == "background":
            self._flusher = threading.Thread(
                target=self._flush_loop, name="secure-ds-audit-fsync", daemon=True
            )
            self._flusher.start()

    # ------------------------------------------------------------------ health

    def check(self) -> None:
        """Raise :class:`AuditError` unless the log can take records (called before sending)."""
        if self._failure is not None:
            raise AuditError(
                f"The audit log {self.path} failed earlier ({self._failure}); "
                "no call is sent while records cannot be kept.",
                hint="Fix the disk or permissions, then create a new client.",
            )
        if self._closed:
            raise AuditError(f"The audit log {self.path} is closed.", hint="Create a new client.")
        now = time.monotonic()
        if now < self._space_checked_until:
            return
        try:
            fs = os.fstatvfs(self._fd)
        except OSError:
            return  # not every file system reports space; the write itself still checks
        if not fs.f_blocks or fs.f_bavail * fs.f_frsize >= self.min_free_bytes:
            # Plenty of room: look again in a second, not on every call. A disk that fills
            # within that second still fails the write itself, which fails closed too.
            self._space_checked_until = now + 1.0
            return
        raise AuditError(
            f"The file system holding the audit log {self.path} is full; "
            "the call was not sent because it could not be recorded.",
            hint="Free disk space or move SECURE_DS_AUDIT_PATH.",
        )

    # ------------------------------------------------------------------ writing

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record (see the module invariants for when it is durable)."""
        line = encode_record(record)
        if self.fsync != "always":
            with self._io_lock:
                self.check()
                self._write(line, sync=False)
            if self._flusher is not None and not self._dirty.is_set():
                self._dirty.set()
            return
        with self._queue_lock:
            self.check()
            seq = self._next_seq
            self._next_seq += 1
            self._pending.append(line)
        with self._io_lock:
            if self._failure is not None:
                self.check()
            if self._durable_seq >= seq:
                return  # a concurrent caller's batch carried this line
            with self._queue_lock:
                batch, self._pending = self._pending, []
                last = self._next_seq - 1
            self._write(b"".join(batch), sync=True)
            self._durable_seq = last

    async def append_async(self, record: Mapping[str, Any]) -> None:
        """:meth:`append` without blocking the event loop on ``fsync``.

        Without ``"always"`` the write is a short ``write(2)`` to the page cache and
        runs inline: a hop to a worker thread would cost more than it saves.
        """
        if self.fsync != "always":
            self.append(record)
            return
        await asyncio.get_running_loop().run_in_executor(None, self.append, record)

    def _write(self, data: bytes, *, sync: bool) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            self._fail(exc)
        try:
            start = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                if sync:
                    os.fsync(self._fd)
            except OSError as exc:
                _truncate_quietly(self._fd, start)
                self._fail(exc)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _flush_loop(self) -> None:
        while True:
            self._dirty.wait()
            if not self._stop:
                # Let records gather for one interval, then sync them with one fsync.
                time.sleep(self.fsync_interval)
            self._dirty.clear()
            try:
                os.fsync(self._fd)
            except OSError as exc:
                # Seen by the next check(): no further call goes out.
                self._failure = exc.strerror or type(exc).__name__
                return
            if self._stop:
                return

    def _fail(self, exc: OSError) -> None:
        self._failure = exc.strerror or type(exc).__name__
        raise AuditError(
            f"Writing the audit log {self.path} failed ({self._failure}).",
            hint="Free disk space or fix permissions; secure-ds sends no call until it can "
            "record it.",
        ) from None

    def close(self) -> None:
        """Stop the flusher, sync what is left (unless ``"never"``) and close the file."""
        if self._flusher is not None:
            self._stop = True
            self._dirty.set()
            self._flusher.join()
            self._flusher = None
        with self._io_lock:
            if self._closed:
                return
            self._closed = True
            if self.fsync != "never" and self._failure is None:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
            os.close(self._fd)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Built once: json.dumps with keyword arguments builds a new encoder on every call,
# which doubles the cost of encoding a record. Keys are not sorted: records are built
# in a fixed order already, and signing (a later stage) canonicalises with RFC 8785.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One line of compact, ASCII-only JSON."""
    return _ENCODER.encode(record).encode("ascii") + b"\n"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _truncate_quietly(fd: int, size: int) -> None:
    # the original write error is what the caller must see
    with contextlib.suppress(OSError):
        os.ftruncate(fd, size)
