"""The local append-only audit log: one JSON line per call, durable before a call returns.

Invariants (the rest of secure-ds relies on them):

1. A record handed to :meth:`AuditLog.append` is on disk (written and, unless
   ``fsync=False``, fsynced) before ``append`` returns; if it cannot be, ``append``
   raises :class:`~secure_ds.errors.AuditError` and the log turns *failed*.
2. A failed log stays failed: :meth:`AuditLog.check` raises, so the guard chain sends
   no further call (fail closed) until a new log is opened. ``check`` also refuses
   while the log's filesystem has less than ``min_free_bytes`` available, so a full
   disk stops calls *before* they go out rather than after.
3. Lines are never half-written: a batch is written under an exclusive ``flock`` and,
   if the write fails part-way, the file is truncated back to where the batch began.
4. Lines from several threads (and processes, through ``flock``) never interleave.

Durability is group-committed: concurrent callers queue their lines, the first to
take the I/O lock writes everyone's queued lines with one ``write`` and one ``fsync``,
and the rest find their line already durable. One fsync costs ~0.4 ms on these disks;
batching keeps it from limiting throughput under concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import AuditError

__all__ = ["AuditLog"]


class AuditLog:
    """Append-only JSON-lines file (mode 0600 in a 0700 directory)."""

    def __init__(self, path: Path, *, fsync: bool = True, min_free_bytes: int = 1 << 20) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.min_free_bytes = min_free_bytes
        self._queue_lock = threading.Lock()  # guards _pending and the sequence numbers
        self._io_lock = threading.Lock()  # one batch writer at a time
        self._pending: list[bytes] = []
        self._next_seq = 0
        self._durable_seq = -1
        self._failure: str | None = None
        self._closed = False
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
        try:
            fs = os.fstatvfs(self._fd)
        except OSError:
            return  # not every file system reports space; the write itself still checks
        if fs.f_blocks and fs.f_bavail * fs.f_frsize < self.min_free_bytes:
            raise AuditError(
                f"The file system holding the audit log {self.path} is full; "
                "the call was not sent because it could not be recorded.",
                hint="Free disk space or move SECURE_DS_AUDIT_PATH.",
            )

    # ------------------------------------------------------------------ writing

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record durably (see the module invariants)."""
        line = encode_record(record)
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
            self._write_batch(b"".join(batch))
            self._durable_seq = last

    async def append_async(self, record: Mapping[str, Any]) -> None:
        """:meth:`append` without blocking the event loop on ``fsync``."""
        await asyncio.get_running_loop().run_in_executor(None, self.append, record)

    def _write_batch(self, data: bytes) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            self._fail(exc)
        try:
            start = os.fstat(self._fd).st_size
            try:
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                if self.fsync:
                    os.fsync(self._fd)
            except OSError as exc:
                _truncate_quietly(self._fd, start)
                self._fail(exc)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _fail(self, exc: OSError) -> None:
        self._failure = exc.strerror or type(exc).__name__
        raise AuditError(
            f"Writing the audit log {self.path} failed ({self._failure}).",
            hint="Free disk space or fix permissions; secure-ds sends no call until it can "
            "record it.",
        ) from None

    def close(self) -> None:
        with self._io_lock:
            if not self._closed:
                self._closed = True
                os.close(self._fd)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One line of compact, key-sorted JSON (stable bytes for the signing issue to build on)."""
    return (
        json.dumps(record, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
        + b"\n"
    )


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
