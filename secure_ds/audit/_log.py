"""The local append-only audit log: one signed, hash-chained JSON line per call, written
before a call returns, with signed checkpoints of its Merkle tree.

Each record is canonicalised (RFC 8785), given its leaf index and the hash of the record
before it, signed, and written as one line that keeps the record's fields at the top
level and adds one member, ``integrity`` (layout: :mod:`._entry`). Every record is a
leaf of the log's RFC 9162 Merkle tree; a signed checkpoint of the tree (C2SP
tlog-checkpoint, :mod:`._checkpoint`) is written as its own line
(``{"checkpoint": {...}}``, never an ``event_id``) when a log file is created, when a
writer opens it with another key, every ``checkpoint_every`` records, at most
``checkpoint_interval`` seconds after the newest unsealed record, and on close.
``secure-ds audit verify`` checks all of it (:mod:`._verify`).

Two append paths, one file format. With a software Ed25519 key and ``secure_ds._native``
built (the default), records take the *native path*: the appending thread chains and
signs its own record without the GIL, a committer thread writes the signed lines in
order, and (``"always"``) a syncer thread runs the fsyncs (``native/src/committer.rs``,
``native/src/sync.rs``); other writers' record lines are taken in natively too
(``native/src/foreign.rs``, as :meth:`_catch_up` does). The rare cases are *handed
back* to the Python path: a batch that needs a checkpoint or finds another writer's
checkpoint (or a line that does not chain), timed checkpoints, rotation and close pause
the committer (:meth:`_paused`) and run :meth:`_commit` and friends, which are also the
whole path for other keys (ECDSA, PKCS#11) and for ``native=False``. The lines are byte
for byte the same either way (tests/audit/test_native_append.py).

Invariants (the rest of secure-ds relies on them):

1. A record handed to :meth:`AuditLog.append` is in the file (``write(2)`` done, so it
   survives a crash of this process) before ``append`` returns. How soon it is also on
   stable storage is the ``fsync`` policy:

   * ``"always"`` (the default since issue 5, which wants a call's record durable
     before the call returns): ``append`` returns only after the record is fsynced.
     Concurrent callers are group-committed: one ``write`` for everyone queued, and one
     ``fsync`` for every record written before it started; the next batch is signed and
     written while the previous one syncs. (Native path: the syncer runs fsyncs back to
     back, and after one that released several writers it waits, at most as long as
     that fsync took, for as many records again before the next.) Writer *processes*
     of one file share their fsyncs too, through a small side file ``<log>.synced``
     (:class:`_SharedSync`; the native syncer follows the same protocol): one fsync at
     a time, and a writer whose lines an fsync that began after them already covered
     returns without its own.
   * ``"background"``: a flusher thread fsyncs unsynced data every ``fsync_interval``
     seconds (20 ms by default), so a power loss or kernel crash can take at most the
     records of that window plus one fsync; a crash of the process itself loses nothing.
   * ``"never"``: the operating system decides (tests, tmpfs).

2. If a record cannot be written, signed or synced, :meth:`append` (or, for a
   background sync, the next :meth:`check`) raises :class:`~secure_ds.errors.AuditError`
   and the log turns *failed*. A failed log stays failed, so the guard chain sends no
   further call (fail closed). :meth:`check` also refuses while the file system has less
   than ``min_free_bytes`` available, so a full disk stops calls before they go out. A
   single record that cannot be canonicalised or is larger than ``max_record_bytes`` is
   refused (that call fails) without failing the log.
3. Lines are never half-written: each write happens under an exclusive ``flock`` and,
   if it fails part-way, the file is truncated back to where it began (and the chain
   state rolls back with it). The ``fsync`` runs after the ``flock`` is released, so
   writer processes overlap their syncs; a failed ``fsync`` fails the log closed and
   leaves its (whole) lines in place.
4. Lines from several threads (and processes, through ``flock``) never interleave.
5. One chain per file: every process appending to a file continues the same chain and
   tree. Under the ``flock``, a writer first reads what other writers appended since its
   own last write and checks that it chains (index, ``prev``, leaf hash) before it
   adds its own records; anything else (a line that does not chain, a file that shrank,
   a torn line, records without integrity data) fails the log closed.
6. Opening a file reads only its tail: the last checkpoint carries the compact range of
   the tree and the newest leaf hash, and the records after it are replayed. A file
   ending in a torn line (a crash mid-write) is refused until ``secure-ds audit repair``
   cuts the torn line away.
7. :meth:`AuditLog.rotate_key` ends the current key's epoch with a checkpoint signed by
   the old key and the new one that announces the new key (:mod:`._checkpoint`); from
   then on this writer signs with the new key, and the old key is retired. A writer
   that still holds it fails closed when it reads the rotation (catching up with the
   file, or opening a file whose newest checkpoint is the rotation); one that opens the
   file later with the retired key is not stopped here, but ``verify`` names each line
   it signs a ``wrong key``.
8. Native path: the committer's chain state is the file as this writer last wrote or
   read it; Python's (``_tree``, ``_prev``, ``_end``) catches up with it whenever the
   committer is paused, and only one side writes at a time (Python only while it holds
   the committer paused, under the io_lock). A record signed for a chain position that
   may no longer hold is chained and signed again; its append returns only once its
   line is in the file (and fsynced, with ``"always"``). A log opened before ``fork``
   refuses appends in the child (the threads do not come along).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import json
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._ids import rfc3339_millis
from ..errors import AuditError
from ._checkpoint import Checkpoint, NoteError, checkpoint_line, open_note, rotation_lines
from ._entry import (
    GENESIS,
    EntryError,
    leaf_data,
    leaf_hash_in_place,
    leaf_hash_of,
    render_line,
    split_line,
)
from ._jcs import canonicalize
from ._signing import PublicKey, Signer, default_signer, load_signer
from .merkle import CompactTree

try:  # the Rust extension (native/): the append path on threads without the GIL
    from .._native import Committer, GroupSync
except ImportError:  # pragma: no cover - a build without the extension
    Committer = GroupSync = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["AuditLog", "FsyncPolicy", "encode_record", "lower_synced", "synced_path"]

FsyncPolicy = Literal["always", "background", "never"]

_CHECKPOINT_PREFIX = b'{"checkpoint":'
_TAIL_CHUNK = 1 << 18
_RESERVED = ("integrity", "checkpoint")
_SYNCED = struct.Struct("<QQQ")  # the side file: st_dev, st_ino of the log, bytes synced
# Durable appends of coroutines in flight at once (append_async): with 8 writers an fsync
# covers ~7 records, with 32 ~16 (measured, bench/bench_audit.py)
_ASYNC_APPENDERS = 32


class AuditLog:
    """Append-only, signed JSON-lines file (mode 0600 in a 0700 directory)."""

    def __init__(
        self,
        path: Path,
        *,
        fsync: FsyncPolicy = "always",
        fsync_interval: float = 0.02,
        min_free_bytes: int = 1 << 20,
        signer: Signer | None = None,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 10.0,
        max_record_bytes: int = 1 << 20,
        origin: str | None = None,
        native: bool = True,
    ) -> None:
        if fsync not in ("always", "background", "never"):
            raise ValueError(f"unknown fsync policy {fsync!r}")
        if checkpoint_every < 1 or checkpoint_interval <= 0 or max_record_bytes < 64:
            raise ValueError(
                "checkpoint_every, checkpoint_interval and max_record_bytes are positive"
            )
        self.path = Path(path)
        self.fsync: FsyncPolicy = fsync
        self.fsync_interval = fsync_interval
        self.min_free_bytes = min_free_bytes
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self.max_record_bytes = max_record_bytes
        self._queue_lock = threading.Lock()  # guards _pending and the sequence numbers
        self._io_lock = threading.Lock()  # one writer at a time; guards the chain state
        self._pending: list[bytes] = []
        self._next_seq = 0
        # (records up to this sequence number are in the file, which they end at this
        # offset): one tuple, so a syncing thread never pairs a new number with an old end
        self._written: tuple[int, int] = (-1, 0)
        self._synced_seq = -1  # ... and up to this one fsynced ("always")
        self._sync_lock = threading.Lock()  # one fsync at a time, outside the io_lock
        self._failure: str | None = None
        self._closed = False
        self._dirty = threading.Event()
        self._space_checked_until = 0.0
        self._stop = False
        # the chain and tree as of self._end (the file offset this writer has read to)
        self._tree = CompactTree()
        self._prev = GENESIS
        self._end = 0
        self._sealed = -1  # tree size of the newest checkpoint in the file
        self._unsealed_since = 0.0
        self._last_line_is_checkpoint = False
        self._closing = False
        self._origin = origin or f"secure-ds.audit/{secrets.token_hex(8)}"
        self._owned_signer: Signer | None = None
        self._core: Committer | None = None  # the native append path, when built
        self._pid = os.getpid()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None  # append_async
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            created = not self.path.exists()
            self._fd = os.open(
                self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            if created:
                _fsync_dir(self.path.parent)
        except OSError as exc:
            raise AuditError(
                f"Cannot open the audit log {self.path} ({exc.strerror}).",
                hint="Set SECURE_DS_AUDIT_PATH to a writable file; no call is sent without it.",
            ) from None
        self._shared = _SharedSync.open(self.path, self._fd) if fsync == "always" else None
        try:
            self._signer = _record_signer(signer if signer is not None else default_signer())
            self._alg = self._signer.alg
            self._key_id = self._signer.key_id
            self._native = native
            self._native_signer = self._signer.native_records() if native else None
            self._open_chain()
        except BaseException:
            if self._shared is not None:
                self._shared.close()
            os.close(self._fd)
            raise
        # The native path (module docstring): a committer thread writes and, with
        # fsync="always", a syncer thread runs the fsyncs (GroupSync; _sync_through and
        # _SharedSync are the same in Python). Without a usable side file the syncer
        # still fsyncs every append, alone.
        self._group: GroupSync | None = None
        if self._native_signer is not None and Committer is not None:
            try:
                if fsync == "always":
                    st = os.fstat(self._fd)
                    side = self._shared.handover() if self._shared is not None else None
                    self._shared = None
                    probe = _probe(self.path, st) if side is not None else None
                    self._group = GroupSync(self._fd, side, st.st_dev, st.st_ino, probe)
                self._core = Committer(
                    self._fd,
                    self._native_signer,
                    self._key_id,
                    self.checkpoint_every,
                    self._tree.size,
                    self._prev,
                    self._end,
                    max(self._sealed, 0),
                    self._group,
                )
            except BaseException:  # no thread may outlive the descriptor it uses
                if self._group is not None:
                    self._group.close()
                os.close(self._fd)
                raise
        self._flusher: threading.Thread | None = None
        if fsync == "background":
            self._flusher = threading.Thread(
                target=self._flush_loop, name="secure-ds-audit-fsync", daemon=True
            )
            self._flusher.start()
        self._seal_wakeup = threading.Event()
        self._sealer = threading.Thread(
            target=self._seal_loop, name="secure-ds-audit-checkpoint", daemon=True
        )
        self._sealer.start()

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditLog:
        """The log ``settings`` describe: path, fsync policy, signing key (a PEM file or
        a PKCS#11 token; with an ML-DSA-65 key, hybrid checkpoints), checkpoints."""
        signer: Signer | None = None
        if settings.audit_signer == "pkcs11":
            from ._pkcs11 import Pkcs11Signer

            assert settings.audit_pkcs11_pin is not None  # validated with the settings
            signer = Pkcs11Signer(
                module=settings.audit_pkcs11_module,
                token_label=settings.audit_pkcs11_token_label or "",
                key_label=settings.audit_pkcs11_key_label or "",
                pin=settings.audit_pkcs11_pin,
            )
        elif settings.audit_signing_key is not None:
            password = settings.audit_signing_key_password
            signer = load_signer(
                settings.audit_signing_key, password.reveal().encode() if password else None
            )
        if settings.audit_pq_key is not None:
            from ._hybrid import HybridSigner, load_pq_signer

            pq = load_pq_signer(settings.audit_pq_key, create=True)
            signer = HybridSigner(signer if signer is not None else default_signer(), pq)
        try:
            log = cls(
                settings.audit_path,
                fsync=settings.audit_fsync,
                fsync_interval=settings.audit_fsync_interval,
                signer=signer,
                checkpoint_every=settings.audit_checkpoint_every,
                checkpoint_interval=settings.audit_checkpoint_interval,
                max_record_bytes=settings.audit_max_record_bytes,
            )
        except BaseException:
            if signer is not None:
                signer.close()
            raise
        log._owned_signer = signer  # built here, so closed with the log (an HSM session)
        return log

    # ------------------------------------------------------------------ properties

    @property
    def signer(self) -> Signer:
        return self._signer

    @property
    def origin(self) -> str:
        """The log's name in its checkpoints (fixed when the file is created)."""
        return self._origin

    @property
    def size(self) -> int:
        """Records in the file's tree, as far as this writer has read it."""
        return self._core.size() if self._core is not None else self._tree.size

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
        """Sign, chain and write one record (see the module invariants for when it is
        durable)."""
        body = self._canonical(record)
        core = self._core
        if core is not None:
            self.check()
            if os.getpid() != self._pid:
                raise AuditError(
                    f"The audit log {self.path} was opened before this process was forked; "
                    "its writer threads did not come along.",
                    hint="Create the client (and its audit log) in each process after forking.",
                )
            try:
                seq = core.append(body)
                while seq is not None:  # a batch Python must commit (module docstring)
                    self._take_back()
                    seq = core.wait(seq)
            except OSError as exc:
                if self._failure is not None or self._closed:
                    self.check()
                self._fail(exc)
            if self._flusher is not None and not self._dirty.is_set():
                self._dirty.set()
            return
        with self._queue_lock:
            self.check()
            seq = self._next_seq
            self._next_seq += 1
            self._pending.append(body)
        with self._io_lock:
            if self._written[0] < seq:  # else a concurrent caller's batch carried it
                if self._failure is not None:
                    self.check()
                with self._queue_lock:
                    batch, self._pending = self._pending, []
                    last = self._next_seq - 1
                self._commit(batch)
                self._written = (last, self._end)
        if self.fsync == "always":
            self._sync_through(seq)
        elif self._flusher is not None and not self._dirty.is_set():
            self._dirty.set()

    def _take_back(self) -> None:
        """Commit, in Python, the queue the native committer handed back (a checkpoint
        is due, or another writer appended)."""
        # This thread was sent to do it: if it gives up, the other appenders would wait
        # for ever, so anything that stops it fails the log (as a failed commit does).
        try:
            with self._io_lock:
                if self._closed or self._failure is not None:
                    self.check()  # raises; close or the failure released the others
                with self._paused(take=True) as bodies:
                    if bodies:
                        self._commit(bodies)
        except BaseException:
            if self._failure is None and not self._closed and self._core is not None:
                self._failure = "a batch handed back to Python was not committed"
                self._core.fail()
            raise

    @contextlib.contextmanager
    def _paused(self, *, take: bool = False) -> Iterator[list[bytes]]:
        """The native committer stopped between batches (io_lock held), with this
        object's chain state (tree, ``_prev``, ``_end``) brought up to the file as the
        committer left it; with ``take``, the queued records, for :meth:`_commit`. On
        leaving, the committer continues from the chain as Python leaves it, or fails
        with the log."""
        core = self._core
        if core is None:
            yield []
            return
        index, prev, end, hashes, bodies, last = core.pause(take)
        for at in range(0, len(hashes), 32):
            self._tree.append_hash(hashes[at : at + 32])
        self._prev, self._end = prev, end
        committed = False
        try:
            if self._tree.size != index:  # pragma: no cover - a bug, not a disk fault
                raise self._broken(
                    f"has {index} records as written natively but {self._tree.size} in "
                    "the tree (a bug in secure-ds)",
                    "Report it; the log itself is intact.",
                )
            yield bodies
            committed = True
        finally:
            if take and bodies and not committed and self._failure is None:
                self._failure = "a batch of records could not be committed"
            if self._failure is not None:
                core.fail()
            else:
                core.resume(self._tree.size, self._prev, self._end, self._sealed, last)

    def _sync_through(self, seq: int) -> None:
        """Return once record ``seq`` is fsynced. The fsync runs outside the io_lock, so
        the next batch is signed and written while this one syncs (a pipeline); one
        fsync covers every record written before it started."""
        if self._synced_seq >= seq:  # another thread's fsync began after it was written
            return
        with self._sync_lock:
            if self._synced_seq >= seq:
                return
            if self._failure is not None:
                self.check()
            target, end = self._written  # written, hence covered by the fsync below
            shared = self._shared
            if shared is None:
                self._sync()
            else:
                try:
                    shared.sync_through(end, lambda: self._settled_size(end), self._sync)
                except OSError:  # the side file failed: sync alone from now on
                    self._shared = None
                    shared.close()
                    self._sync()
            self._synced_seq = target

    async def append_async(self, record: Mapping[str, Any]) -> None:
        """:meth:`append` without blocking the event loop on ``fsync``.

        Without ``"always"`` the write is a short ``write(2)`` to the page cache and
        runs inline: a hop to a worker thread would cost more than it saves.
        """
        if self.fsync != "always":
            self.append(record)
            return
        await asyncio.get_running_loop().run_in_executor(self._async_pool(), self.append, record)

    def _async_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        """The threads that wait for durable appends on behalf of coroutines: the log's
        own, not the event loop's default executor (min(32, CPUs + 4) threads, 6 on
        these machines, shared with the application), so that many calls in flight
        share fsyncs (group commit) and a slow disk never starves the application's
        other blocking work. A waiting thread holds no GIL and no CPU."""
        with self._queue_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=_ASYNC_APPENDERS, thread_name_prefix="secure-ds-audit-append"
                )
            return self._pool

    def rotate_key(self, new_signer: Signer) -> dict[str, Any]:
        """Start a new epoch signed by ``new_signer`` and return its checkpoint's JSON.

        The checkpoint (of the tree as it is) is signed by the current key and by the new
        one and names the new key (``epoch``/``key`` lines, :mod:`._checkpoint`); a
        verifier that trusts the old key learns the new one from it and retires the old
        one. Every record after it is signed by ``new_signer``; give the other writers of
        this file the new key too (a writer still holding the old key fails closed).
        """
        new_signer = _record_signer(new_signer)
        with self._io_lock, self._paused():
            self.check()
            old = self._signer
            if new_signer.key_id == old.key_id:
                raise AuditError(
                    f"The audit log {self.path} is already signed by key {old.key_id}.",
                    hint="Rotate to a new key.",
                )
            if len(old.note_signers()) > 1 and len(new_signer.note_signers()) < 2:
                raise AuditError(
                    f"The audit log {self.path} has hybrid (ML-DSA-65) checkpoints; the new "
                    "key would drop them, and verifiers refuse that downgrade.",
                    hint="Rotate to a hybrid signer (SECURE_DS_AUDIT_PQ_KEY).",
                )
            self._lock_file()
            try:
                self._catch_up()
                line = self._checkpoint_bytes(rotate_to=new_signer)
                self._write(line)
                self._signer = new_signer
                self._alg = new_signer.alg
                self._key_id = new_signer.key_id
                self._native_signer = new_signer.native_records() if self._native else None
                if self._core is not None:  # without a native key: every batch in Python
                    self._core.set_signer(self._native_signer, self._key_id)
            finally:
                self._unlock_file()
            if self.fsync != "never":
                self._sync()
        return dict(json.loads(line))

    def checkpoint(self) -> dict[str, Any]:
        """Write a signed checkpoint of the tree now (even if one was just written) and
        return its JSON object."""
        with self._io_lock, self._paused():
            self.check()
            return self._seal(force=True)

    def _canonical(self, record: Mapping[str, Any]) -> bytes:
        for key in _RESERVED:
            if key in record:
                raise AuditError(
                    f"An audit record may not hold a top-level {key!r} member; the log "
                    "adds its own.",
                    hint="Rename the field.",
                )
        try:
            body = canonicalize(record if isinstance(record, dict) else dict(record))
        except (TypeError, ValueError) as exc:
            raise AuditError(
                f"The audit record cannot be written as canonical JSON ({exc}).",
                hint="Records hold only JSON values: strings, finite numbers, booleans, "
                "null, lists and objects with string keys.",
            ) from None
        if len(body) > self.max_record_bytes:
            raise AuditError(
                f"The audit record is {len(body)} bytes, over the log's limit of "
                f"{self.max_record_bytes}; the call is refused because it cannot be recorded.",
                hint="Send a smaller request (records grow with the policy context and "
                "findings), or raise the limit.",
            )
        return body

    def _commit(self, bodies: list[bytes]) -> None:
        """Chain, sign and write ``bodies`` (and a checkpoint if one is due)."""
        self._lock_file()
        tree, prev = self._tree.copy(), self._prev
        try:
            self._catch_up()
            tree, prev = self._tree.copy(), self._prev
            out = []
            native = self._native_signer
            if native is not None:  # the same lines, signed without the GIL
                lines, hashes = native.commit(self._key_id, self._tree.size, self._prev, bodies)
                out.append(lines)
                for at in range(0, len(hashes), 32):
                    self._tree.append_hash(hashes[at : at + 32])
                self._prev = hashes[-32:]
            else:
                sign, alg, key = self._signer.sign, self._alg, self._key_id
                for body in bodies:
                    index = self._tree.size
                    data = leaf_data(alg, index, key, self._prev, body)
                    h = leaf_hash_of(data)
                    out.append(
                        render_line(
                            body,
                            alg=alg,
                            leaf_hash=h,
                            index=index,
                            key=key,
                            prev=self._prev,
                            sig=sign(data),
                        )
                    )
                    self._tree.append_hash(h)
                    self._prev = h
            if self._tree.size - self._sealed >= self.checkpoint_every:
                out.append(self._checkpoint_bytes())
            elif self._unsealed_since == 0.0:
                self._unsealed_since = time.monotonic()
                self._seal_wakeup.set()
            self._write(b"".join(out))
        except BaseException as exc:
            self._tree, self._prev = tree, prev
            # The batch held other callers' records and is gone: fail closed, or their
            # appends would return as if those records were written.
            self._failure = self._failure or str(exc) or type(exc).__name__
            raise
        finally:
            self._unlock_file()

    def _seal(self, *, force: bool) -> dict[str, Any]:
        """Write a checkpoint if records are unsealed (or ``force``); io_lock held."""
        self._lock_file()
        try:
            self._catch_up()
            if not force and self._sealed == self._tree.size:
                return {}
            line = self._checkpoint_bytes()
            self._write(line)
        finally:
            self._unlock_file()
        if self.fsync != "never":
            self._sync()
        return dict(json.loads(line))

    def _checkpoint_bytes(self, rotate_to: Signer | None = None) -> bytes:
        extra = rotation_lines(self._signer, rotate_to) if rotate_to is not None else ()
        cp = Checkpoint(
            self._origin, self._tree.size, self._tree.root(), rfc3339_millis(time.time()), extra
        )
        line = encode_record(
            checkpoint_line(
                cp,
                self._signer,
                last=self._prev,
                compact_range=self._tree.range,
                rotate_to=rotate_to,
            )
        )
        self._sealed = self._tree.size
        self._unsealed_since = 0.0
        return line

    def _write(self, data: bytes) -> None:
        """Append ``data`` (flock held); on failure cut it away again and fail the log."""
        start = self._end
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            _truncate_quietly(self._fd, start)
            self._fail(exc)
        self._end = start + len(data)

    def _settled_size(self, written_end: int) -> int:
        """How far the file is complete (no write half-done) as far as can be learnt
        without waiting: its size, taken under this writer's io_lock (its other threads
        share the flock's open file description, and unlocking here must not release a
        lock one of them holds) and the flock (other processes), when both are free;
        else ``written_end``, where this writer's own lines end. Every byte below that
        was whole before the fsync that follows begins (the lines of other processes
        below it were written under the flock before this writer's), so the fsync
        covers it. Waiting for the locks instead would hold this fsync back until the
        current batch is signed and written (a fifth to a quarter of the durable append
        rate with 8 to 32 writer threads, measured)."""
        if not self._io_lock.acquire(blocking=False):
            return written_end
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return written_end
            try:
                return max(written_end, os.fstat(self._fd).st_size)
            finally:
                self._unlock_file()
        finally:
            self._io_lock.release()

    def _sync(self) -> None:
        """fsync after the flock is released (io_lock still held): other processes can
        write meanwhile, and one fsync covers whatever reached the file before it. A
        failed fsync fails the log closed; the lines stay (others may follow them), and
        the caller whose append raised was told its record is not known durable."""
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._fail(exc)

    def _lock_file(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            self._fail(exc)

    def _unlock_file(self) -> None:
        with contextlib.suppress(OSError):
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

    def _seal_loop(self) -> None:
        """Write a checkpoint at most ``checkpoint_interval`` s after an unsealed record."""
        # The native committer cannot wake this thread (it never takes the GIL): it is
        # asked a few times per interval whether it wrote unsealed records.
        poll = None if self._core is None else min(self.checkpoint_interval / 4, 1.0)
        while not self._closing:
            delay = self._seal_due_in()
            if delay is None or delay > 0:
                self._seal_wakeup.wait(poll if delay is None else delay)
                self._seal_wakeup.clear()
                continue
            with self._io_lock:
                if self._closed or self._failure is not None:
                    return
                try:
                    with self._paused():
                        self._seal(force=False)
                except AuditError:
                    return  # recorded in _failure: the next check() refuses

    def _seal_due_in(self) -> float | None:
        """Seconds until a checkpoint is due (the oldest unsealed record is
        ``checkpoint_interval`` old), or None while every record is sealed."""
        now = time.monotonic()
        since = self._unsealed_since or None
        age = self._core.unsealed_age() if self._core is not None else None
        if age is not None:
            since = now - age if since is None else min(since, now - age)
        return None if since is None else since + self.checkpoint_interval - now

    def _fail(self, exc: OSError) -> None:
        self._failure = exc.strerror or type(exc).__name__
        if self._core is not None:
            self._core.fail()  # every waiting append fails too
        raise AuditError(
            f"Writing the audit log {self.path} failed ({self._failure}).",
            hint="Free disk space or fix permissions; secure-ds sends no call until it can "
            "record it.",
        ) from None

    # ------------------------------------------------------------------ the chain on disk

    def _open_chain(self) -> None:
        """Read the file's tail (under the flock) and announce this writer's key."""
        self._lock_file()
        try:
            size = os.fstat(self._fd).st_size
            last_checkpoint: dict[str, Any] | None = None
            if size:
                if os.pread(self._fd, 1, size - 1) != b"\n":
                    raise self._broken(
                        "ends in a torn line (a write was cut off)",
                        f"Run `secure-ds audit repair {self.path}` to cut it away, then "
                        f"`secure-ds audit verify {self.path}`.",
                    )
                after, cp_line = self._read_tail(size)
                if cp_line is None:
                    raise self._broken(
                        "holds no checkpoint: it was not written by this version of secure-ds",
                        "Move the file aside (it is kept as it is) or point "
                        "SECURE_DS_AUDIT_PATH at a new file.",
                    )
                last_checkpoint = self._resume_from(cp_line)
                self._refuse_if_retired(last_checkpoint)
                for line in after:
                    self._apply_record(line)
                self._end = size
            # A writer announces its key (and attests to the state it found) with a
            # checkpoint, unless the newest line already is its own checkpoint.
            newest_is_ours = (
                last_checkpoint is not None
                and self._last_line_is_checkpoint
                and last_checkpoint.get("key") == self._key_id
            )
            if not newest_is_ours:
                # a failed write is recorded in _failure: check() refuses the first call
                with contextlib.suppress(AuditError):
                    self._write(self._checkpoint_bytes())
        finally:
            self._unlock_file()
        if self.fsync != "never" and self._failure is None:
            with contextlib.suppress(AuditError):
                self._sync()

    def _read_tail(self, size: int) -> tuple[list[bytes], bytes | None]:
        """The lines after the newest checkpoint (oldest first) and that checkpoint."""
        pos, carry = size, b""
        newest_first: list[bytes] = []
        while pos > 0:
            n = min(_TAIL_CHUNK, pos)
            pos -= n
            parts = (os.pread(self._fd, n, pos) + carry).split(b"\n")
            carry = parts[0] if pos > 0 else b""
            for line in reversed(parts[1:] if pos > 0 else parts):
                if not line:
                    continue
                if line.startswith(_CHECKPOINT_PREFIX):
                    self._last_line_is_checkpoint = not newest_first
                    newest_first.reverse()
                    return newest_first, line
                if b'"integrity":{' not in line:
                    raise self._broken(
                        "holds lines without integrity data (an older secure-ds wrote it)",
                        "Move the file aside (it is kept as it is) or point "
                        "SECURE_DS_AUDIT_PATH at a new file.",
                    )
                newest_first.append(line)
        newest_first.reverse()
        return newest_first, None

    def _resume_from(self, line: bytes) -> dict[str, Any]:
        try:
            cp = json.loads(line)["checkpoint"]
            key = PublicKey.from_b64(cp["public_key"])
            checkpoint, _ = open_note(cp["note"], [key])
            tree = CompactTree(
                checkpoint.size, [base64.b64decode(h, validate=True) for h in cp["range"]]
            )
            last = bytes.fromhex(cp["last"])
        except (KeyError, TypeError, ValueError, NoteError) as exc:
            raise self._broken(
                f"has a checkpoint that does not parse or verify ({exc})",
                f"Run `secure-ds audit verify {self.path}`; start a new file meanwhile.",
            ) from None
        if tree.root() != checkpoint.root or len(last) != 32:
            raise self._broken(
                "has a checkpoint whose tree state does not match its signed root",
                f"Run `secure-ds audit verify {self.path}`; start a new file meanwhile.",
            )
        self._origin = checkpoint.origin
        self._tree, self._prev, self._sealed = tree, last, checkpoint.size
        return dict(cp)

    def _apply_record(self, line: bytes) -> None:
        """Continue the chain with a line another writer appended (or found on open)."""
        # The verifier's in-place checks (no copy of the body, no Entry object): with
        # several writer processes each one takes in every other's lines under the
        # flock, so this cost is paid ~N times per record, inside the critical section.
        try:
            end, m = split_line(line)
        except EntryError as exc:
            raise self._broken(
                f"holds a line that is not a signed record ({exc})",
                f"Run `secure-ds audit verify {self.path}`.",
            ) from None
        _, h_hex, index, _, prev_hex, _ = m.groups()
        h = leaf_hash_in_place(line, end, m)
        if (
            int(index) != self._tree.size
            or prev_hex != self._prev.hex().encode("ascii")
            or h_hex != h.hex().encode("ascii")
        ):
            raise self._broken(
                f"does not chain at record {self._tree.size} (edited, reordered or "
                "written by something else)",
                f"Run `secure-ds audit verify {self.path}`.",
            )
        self._tree.append_hash(h)
        self._prev = h

    def _catch_up(self) -> None:
        """Take in what other writers appended since this one last wrote (flock held)."""
        size = os.fstat(self._fd).st_size
        if size == self._end:
            return
        if size < self._end:
            raise self._broken(
                f"shrank from {self._end} to {size} bytes while it was open",
                f"Run `secure-ds audit verify {self.path}`.",
            )
        data = os.pread(self._fd, size - self._end, self._end)
        if not data.endswith(b"\n"):
            raise self._broken(
                "ends in a torn line written by another process",
                f"Run `secure-ds audit repair {self.path}`.",
            )
        for line in data[:-1].split(b"\n"):
            if line.startswith(_CHECKPOINT_PREFIX):
                try:
                    cp = json.loads(line)["checkpoint"]
                    self._sealed = int(cp["size"])
                except (KeyError, TypeError, ValueError):
                    raise self._broken(
                        "holds a checkpoint line that does not parse",
                        f"Run `secure-ds audit verify {self.path}`.",
                    ) from None
                self._refuse_if_retired(cp)
            else:
                self._apply_record(line)
        self._end = size
        if self._sealed == self._tree.size:
            self._unsealed_since = 0.0

    def _refuse_if_retired(self, cp: Mapping[str, Any]) -> None:
        """Fail closed when a checkpoint retires this writer's key (another writer, or an
        earlier run, rotated it): what it signed now would not verify."""
        rotate = cp.get("rotate")
        if isinstance(rotate, dict) and rotate.get("from") == self._key_id:
            raise self._broken(
                f"was rotated away from this writer's key {self._key_id}",
                "Configure the new signing key (SECURE_DS_AUDIT_SIGNING_KEY) and create "
                "a new client.",
            )

    def _broken(self, problem: str, fix: str) -> AuditError:
        self._failure = f"the log {problem}"
        if self._core is not None:
            self._core.fail()
        return AuditError(f"The audit log {self.path} {problem}.", hint=fix)

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Seal what is unsealed, stop the threads, sync (unless ``"never"``) and close."""
        self._closing = True
        self._seal_wakeup.set()
        if threading.current_thread() is not self._sealer:
            self._sealer.join()
        with self._io_lock:
            if not self._closed and self._failure is None:
                with contextlib.suppress(AuditError), self._paused(take=True) as bodies:
                    if bodies:  # appends racing the close
                        self._commit(bodies)
                    self._seal(force=False)
        if self._flusher is not None:
            self._stop = True
            self._dirty.set()
            self._flusher.join()
            self._flusher = None
        with self._io_lock:
            if self._closed:
                return
            self._closed = True
            if self._core is not None:
                self._core.close()  # appends racing the close fail
            if self._group is not None:
                self._group.close()  # after syncing what was written
            if self.fsync != "never" and self._failure is None:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
            os.close(self._fd)
            if self._shared is not None:
                self._shared.close()
            if self._owned_signer is not None:
                self._owned_signer.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)  # its appends have returned or now fail

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Built once: json.dumps with keyword arguments builds a new encoder on every call.
# The log itself writes records as RFC 8785 canonical JSON (``_canonical``); this
# compact encoding is for its checkpoint lines and for callers of ``encode_record``.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One line of compact, ASCII-only JSON."""
    return _ENCODER.encode(record).encode("ascii") + b"\n"


def _record_signer(signer: Signer) -> Signer:
    if signer.alg not in ("ed25519", "ecdsa-p256"):
        raise AuditError(
            f"An {signer.alg} key cannot sign audit records (key {signer.key_id}).",
            hint="Sign records with an Ed25519 or EC P-256 key; an ML-DSA-65 key signs "
            "checkpoints beside one of those (SECURE_DS_AUDIT_PQ_KEY).",
        )
    return signer


def _probe(path: Path, st: os.stat_result) -> int | None:
    """The log opened again for the native syncer (``GroupSync``), whose flock on this
    separate open file description also excludes this process's own writer, so it can
    read how far the file is whole (``_settled_size``); None if it is not the same file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    again = os.fstat(fd)
    if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        return None
    return fd


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _SharedSync:
    """Group commit across the writer processes of one log file (``fsync="always"``).

    Without it each process runs its own ``fsync``, and N processes syncing one file
    at once queue in the kernel (measured here: 8 writer processes spent ~4 ms per
    fsync, one alone ~0.3 ms). The side file ``<log>.synced`` (0600, 24 bytes) holds
    the log's device and inode numbers and how many of its bytes are known fsynced.
    Under the side file's ``flock`` one process at a time takes how far the log is
    whole, its size *under the log's flock* (so no write is half-done: a failed write
    is cut back before that flock is released) when that flock is free, else where its
    own lines end, and fsyncs; every byte below that was in the page cache before the
    fsync began, so the fsync made it durable. A process whose own lines end
    at or below the recorded size returns without an fsync of its own.

    The number only ever claims what an fsync that returned without error covered, and
    only for the file it names (a replaced log reads as 0). ``repair`` lowers it when it
    cuts a torn tail (:func:`._verify.repair_log`, taking the two flocks in the same
    order: side file, then log). Any failure to use the side file means the process
    syncs alone, as without it.
    """

    def __init__(self, fd: int, log_id: tuple[int, int]) -> None:
        self._fd = fd
        self._id = log_id

    @classmethod
    def open(cls, log_path: Path, log_fd: int) -> _SharedSync | None:
        try:
            st = os.fstat(log_fd)
            fd = os.open(
                synced_path(log_path),
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o600,
            )
        except OSError:
            return None  # e.g. a directory others own: sync alone
        shared = cls(fd, (st.st_dev, st.st_ino))
        try:
            shared._forget_beyond(st.st_size)
        except OSError:
            shared.close()
            return None
        return shared

    def _synced(self) -> int:
        raw = os.pread(self._fd, _SYNCED.size, 0)
        if len(raw) != _SYNCED.size:
            return 0
        dev, ino, synced = _SYNCED.unpack(raw)
        return int(synced) if (dev, ino) == self._id else 0

    def _store(self, synced: int) -> None:
        os.pwrite(self._fd, _SYNCED.pack(*self._id, synced), 0)

    def _forget_beyond(self, size: int) -> None:
        """A count beyond the log's size is stale (a torn tail cut away, a file put in
        its place): drop it, on opening."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if self._synced() > size:
                self._store(0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def sync_through(
        self, end: int, settled_size: Callable[[], int], fsync: Callable[[], None]
    ) -> None:
        """Return once the log's bytes below ``end`` are fsynced. ``settled_size`` is
        how far the log is whole (at least ``end``, at most its size taken under its
        flock); ``fsync`` syncs the log (AuditError when
        that fails: nothing is recorded). OSError: the side file (or the log's flock)
        failed, and the caller syncs alone."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # waits while another process syncs
        try:
            if self._synced() >= end:
                return
            size = settled_size()
            fsync()
            self._store(max(size, self._synced()))
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def handover(self) -> int | None:
        """The side file's descriptor, for :class:`secure_ds._native.GroupSync` to own
        (this object is done with it), or None if it cannot be passed on."""
        fd, self._fd = self._fd, -1
        return fd if fd >= 0 else None

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)


def synced_path(log_path: Path) -> Path:
    """The side file in which writer processes share their fsyncs (:class:`_SharedSync`)."""
    return log_path.with_name(log_path.name + ".synced")


def lower_synced(side_fd: int, log_fd: int, size: int) -> None:
    """Lower the side file's synced count of the log to at most ``size`` bytes (the log
    is cut to ``size``; the caller holds the side file's flock, then the log's)."""
    st = os.fstat(log_fd)
    raw = os.pread(side_fd, _SYNCED.size, 0)
    if len(raw) == _SYNCED.size:
        dev, ino, synced = _SYNCED.unpack(raw)
        if (dev, ino) == (st.st_dev, st.st_ino) and synced > size:
            os.pwrite(side_fd, _SYNCED.pack(st.st_dev, st.st_ino, size), 0)


def _truncate_quietly(fd: int, size: int) -> None:
    # the original write error is what the caller must see
    with contextlib.suppress(OSError):
        os.ftruncate(fd, size)
