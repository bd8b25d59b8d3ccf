"""Verifying a signed audit log, and repairing a torn tail.

:func:`verify_log` reads a log from the start and checks, line by line, that

* every record line is a well-formed signed record (:mod:`._entry`), whose ``index`` is
  its position, whose ``prev`` is the leaf hash of the record before it, whose ``hash`` is
  the leaf hash of its leaf data, and (unless ``signatures=False``) whose signature
  verifies under its key;
* every key is trusted: one of ``keys`` when keys are given (pinned), else a key that a
  checkpoint earlier in the file announced (trust on first use: a log rewritten
  wholesale with another key passes, which only pinned keys or an external checkpoint
  detect); in both modes also a key that a **key rotation** announced: a checkpoint
  signed by a key trusted before it (and by the new key, as proof of possession) whose
  ``epoch``/``key`` lines name the new key. The rotation retires the old key: a record or
  checkpoint it signs after the rotation is a ``wrong key``, and it is never trusted
  again;
* a hybrid checkpoint (:mod:`._hybrid`) verifies only with BOTH its signatures (the
  classical one and the ML-DSA-65 one); once the log has had one, or an ML-DSA-65 key is
  pinned, every later checkpoint (and an external one) must be hybrid too;
* every checkpoint line is signed by a trusted key, and its size, root, newest leaf hash
  and compact range are those of the records before it;
* every checkpoint given from outside the file (``checkpoints``: kept elsewhere, e.g. in
  the SIEM) is signed by a trusted key and matches the log at its size; a checkpoint
  larger than the log means its newest records were removed (``truncated``).

It stops at the first problem and names it: ``edited``, ``reordered``, ``deleted``,
``inserted``, ``truncated``, ``wrong key``, ``torn tail``, with the record index
(``first_bad_index``) and the line number. Problems after the first are not looked for.

:func:`repair_log` cuts a torn tail (a last line without its newline) and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import collections
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import itertools
import json
import multiprocessing
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal

from ..errors import AuditError
from ._checkpoint import Checkpoint, NoteError, open_note
from ._entry import (
    GENESIS,
    Entry,
    EntryError,
    leaf_data,
    leaf_data_of,
    leaf_hash_in_place,
    leaf_hash_of,
    parse_line,
    split_line,
)
from ._log import lower_synced, synced_path
from ._signing import PublicKey
from .merkle import EMPTY_ROOT, CompactTree

__all__ = [
    "RepairResult",
    "VerifyResult",
    "is_checkpoint_line",
    "read_records",
    "repair_log",
    "verify_log",
]

Reason = Literal[
    "edited", "reordered", "deleted", "inserted", "truncated", "wrong key", "torn tail"
]
_CHECKPOINT_PREFIX = b'{"checkpoint":'
_LOOKAHEAD = 4096
_PARALLEL_MIN_BYTES = 1 << 20
_SIGNATURE_BATCH = 256  # records per batch handed to a signature-checking thread...
_SIGNATURE_BATCH_BYTES = 4 << 20  # ... or fewer, when their leaf data reach this size
_START_METHOD: str | None = None  # None: fork when single-threaded, else spawn


@dataclasses.dataclass
class VerifyResult:
    """What :func:`verify_log` found (``as_json`` for ``--json``)."""

    path: str
    ok: bool = True
    records: int = 0  # records verified before the first problem (all of them when ok)
    checkpoints: int = 0
    first_bad_index: int | None = None
    line: int | None = None  # 1-based line number of the first problem
    reason: Reason | None = None
    detail: str = ""
    signatures: bool = True  # False: chain and checkpoints only
    keys: list[str] = dataclasses.field(default_factory=list)  # every key trusted on the way
    keys_pinned: bool = False
    rotations: int = 0  # key rotations (new epochs) verified
    origin: str | None = None
    root: str = EMPTY_ROOT.hex()
    unsealed: int = 0  # records after the newest checkpoint in the file
    external_checkpoints: int = 0

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Bad(Exception):
    def __init__(self, reason: Reason, index: int, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.index, self.detail = reason, index, detail


def _load_external(text: str) -> str:
    """A checkpoint given from outside: a signed note, or a checkpoint JSON line."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            note = json.loads(stripped)["checkpoint"]["note"]
        except (ValueError, KeyError, TypeError):
            raise AuditError(
                "The external checkpoint is JSON but not a checkpoint line.",
                hint='Pass a line {"checkpoint": {...}} from a log, or a signed note.',
            ) from None
        return str(note)
    return text if text.endswith("\n") else text + "\n"


def verify_log(
    path: Path,
    *,
    keys: Sequence[PublicKey] = (),
    signatures: bool = True,
    checkpoints: Sequence[str] = (),
    jobs: int = 1,
    threads: int | None = None,
) -> VerifyResult:
    """Verify the log at ``path`` (see the module docstring).

    With ``jobs`` > 1 (and a log of more than ~1 MB) the record signatures are checked
    by that many worker processes while this one walks the chain; the answer is the same
    as with one job (on a bad signature the log is walked again in one process, so the
    first problem is named exactly as a sequential walk names it).

    With one job, record signatures are checked on ``threads`` threads (default: one
    per CPU, none on a single CPU) while this thread walks the chain: the signature
    library lets go of the interpreter lock while it checks, so the threads use the
    other cores. The answer is the same as with ``threads=0``: a bad signature makes
    the walk start again with every signature checked in line, which names the first
    problem exactly as always.
    """
    path = Path(path)
    external = [_load_external(c) for c in checkpoints]
    if threads is None:
        threads = _default_threads()
    try:
        size = path.stat().st_size
        if signatures and jobs > 1 and size > _PARALLEL_MIN_BYTES:
            return _verify_parallel(path, keys, external, jobs)
        if signatures and threads > 0:
            walk = _walk(path, keys, signatures, external, threads=threads)
            if not walk.signature_failed:
                return walk.result
        return _walk(path, keys, signatures, external).result
    except OSError as exc:
        raise AuditError(
            f"Cannot read the audit log {path} ({exc.strerror or type(exc).__name__}).",
            hint="Pass the path of an audit log file.",
        ) from None


def _walk(
    path: Path,
    keys: Sequence[PublicKey],
    signatures: bool,
    external: list[str],
    *,
    threads: int = 0,
) -> _Walk:
    walk = _Walk(path, keys, signatures, external)
    with path.open("rb") as f:
        if threads > 0 and signatures:
            with _SignatureChecks(threads) as checks:
                walk.checks = checks
                walk.run(f)
        else:
            walk.run(f)
    return walk


def _default_threads() -> int:
    cpus = os.cpu_count() or 1
    return 0 if cpus < 2 else min(cpus, 8)


class _SignatureFailed(Exception):
    """A record signature checked off the walk did not verify."""


class _SignatureChecks:
    """Record signatures checked in batches on a thread pool, off the chain walk.

    At most ``2 * threads`` batches are in flight, each of at most ``_SIGNATURE_BATCH``
    records or ``_SIGNATURE_BATCH_BYTES`` of leaf data (records can be up to 1 MiB with
    sealed bodies), so the walk holds a bounded amount of data; a walk that gets ahead
    waits for the oldest batch. :meth:`add` raises :class:`_SignatureFailed` as soon as
    a finished batch holds a bad signature, :meth:`finish` waits for all of them."""

    def __init__(self, threads: int) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="secure-ds-verify"
        )
        self._batch: list[tuple[PublicKey, bytes, bytes]] = []
        self._batch_bytes = 0
        self._in_flight: collections.deque[concurrent.futures.Future[bool]] = collections.deque()
        self._max_in_flight = 2 * threads

    def add(self, key: PublicKey, sig_b64: bytes, data: bytes) -> None:
        self._batch.append((key, sig_b64, data))
        self._batch_bytes += len(data)
        if len(self._batch) >= _SIGNATURE_BATCH or self._batch_bytes >= _SIGNATURE_BATCH_BYTES:
            self._submit()

    def _submit(self) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._in_flight.append(self._pool.submit(_all_verify, batch))
        while len(self._in_flight) > self._max_in_flight or (
            self._in_flight and self._in_flight[0].done()
        ):
            if not self._in_flight.popleft().result():
                raise _SignatureFailed

    def finish(self) -> None:
        if self._batch:
            self._submit()
        while self._in_flight:
            if not self._in_flight.popleft().result():
                raise _SignatureFailed

    def __enter__(self) -> _SignatureChecks:
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._in_flight:
            future.cancel()
        self._pool.shutdown(wait=True)


def _all_verify(batch: list[tuple[PublicKey, bytes, bytes]]) -> bool:
    return all(key.verify(base64.b64decode(sig), data) for key, sig, data in batch)


def _verify_parallel(
    path: Path, keys: Sequence[PublicKey], external: list[str], jobs: int
) -> VerifyResult:
    chain = _walk(path, keys, False, external)
    end = chain.good_bytes  # signatures are checked up to where the chain walk stopped
    trusted = {key_id: key.der for key_id, key in chain.known.items()}
    bounds = _split(path, end, jobs)
    # fork is quick and safe while this process has one thread (the CLI); with threads
    # about, a forked child could inherit a lock held mid-operation, so spawn instead
    method = _START_METHOD or ("fork" if threading.active_count() == 1 else "spawn")
    ctx = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = [pool.submit(_first_bad_signature, str(path), a, b, trusted) for a, b in bounds]
        bad = [i for i in (fut.result() for fut in futures) if i is not None]
    if bad:  # before where the chain walk stopped: name it as a sequential walk does
        return _walk(path, keys, True, external).result
    result = chain.result
    result.signatures = True
    return result


def _split(path: Path, end: int, jobs: int) -> list[tuple[int, int]]:
    """``jobs`` byte ranges of ``[0, end)`` that start and end on line boundaries."""
    cuts = [0]
    with path.open("rb") as f:
        for j in range(1, jobs):
            f.seek(max(end * j // jobs, cuts[-1]))
            f.readline()
            cuts.append(min(f.tell(), end))
    cuts.append(end)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def _first_bad_signature(path: str, start: int, end: int, trusted: dict[str, bytes]) -> int | None:
    """The leaf index of the first record in ``[start, end)`` whose signature does not
    verify under its (trusted) key; run in a worker process."""
    keys = {key_id: PublicKey.from_der(der) for key_id, der in trusted.items()}
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        while pos < end:
            raw = f.readline()
            pos += len(raw)
            if raw.startswith(_CHECKPOINT_PREFIX):
                continue
            line = raw[:-1]
            body_end, m = split_line(line)
            alg, _, index, key_id, _, sig_b64 = m.groups()
            key = keys[key_id.decode()]
            data = leaf_data_of(line, body_end, m)
            if key.alg != alg.decode() or not key.verify(base64.b64decode(sig_b64), data):
                return int(index)
    return None


class _Walk:
    def __init__(
        self, path: Path, keys: Sequence[PublicKey], signatures: bool, external: list[str]
    ) -> None:
        self.result = VerifyResult(path=str(path), signatures=signatures, keys_pinned=bool(keys))
        self.pinned = {k.key_id: k for k in keys}
        self.trusted: dict[str, PublicKey] = dict(self.pinned)  # may sign here, now
        self.known: dict[str, PublicKey] = dict(self.pinned)  # trusted at some point
        self.retired: dict[str, int] = {}  # key id -> tree size of the rotation retiring it
        # a pinned ML-DSA-65 key, or a hybrid checkpoint seen: checkpoints must be hybrid
        self.pq_required = any(k.alg == "ml-dsa-65" for k in keys)
        self.signatures = signatures
        self.tree = CompactTree()
        self.prev = GENESIS
        self.prev_hex = GENESIS.hex().encode()
        self.last_sealed = 0
        self.line_no = 0
        self.external = external
        self.roots_at: dict[int, bytes] = {}
        self.wanted_sizes: set[int] = set()
        self.external_checkpoints: list[Checkpoint] = []
        self.good_bytes = 0  # bytes of the lines verified before the first problem
        # record signatures checked off the walk (verify_log's threads), or None: inline
        self.checks: _SignatureChecks | None = None
        self.signature_failed = False  # ... and one of them did not verify

    # ------------------------------------------------------------------ the walk

    def run(self, f: IO[bytes]) -> None:
        res = self.result
        try:
            self._prepare_external()
            self._note_root()
            for raw in f:
                self.line_no += 1
                if not raw.endswith(b"\n"):
                    raise _Bad(
                        "torn tail",
                        self.tree.size,
                        "the last line has no newline: a write was cut off "
                        "(`secure-ds audit repair` cuts it away)",
                    )
                line = raw[:-1]
                if line.startswith(_CHECKPOINT_PREFIX):
                    self._checkpoint(line, f)
                else:
                    self._record(line, f)
                self.good_bytes += len(raw)
            self._check_external()
        except _Bad as bad:
            res.ok = False
            res.reason = bad.reason
            res.first_bad_index = bad.index
            res.detail = bad.detail
            res.line = self.line_no
        except _SignatureFailed:
            self.signature_failed = True
        if self.checks is not None and not self.signature_failed:
            try:  # every record before where the walk stopped must be checked too
                self.checks.finish()
            except _SignatureFailed:
                self.signature_failed = True
        res.records = self.tree.size
        res.root = self.tree.root().hex()
        res.unsealed = self.tree.size - self.last_sealed
        res.keys = sorted(self.known)

    def _note_root(self) -> None:
        if self.tree.size in self.wanted_sizes:
            self.roots_at[self.tree.size] = self.tree.root()

    def _record(self, line: bytes, f: IO[bytes]) -> None:
        expected = self.tree.size
        try:
            end, m = split_line(line)
        except EntryError as exc:
            raise self._classify(None, f, f"not a signed record ({exc})") from None
        alg, h_hex, index, key_id, prev_hex, sig_b64 = m.groups()
        if int(index) != expected or prev_hex != self.prev_hex:
            raise self._classify(parse_line(line), f, "")
        if self.signatures:
            data = leaf_data_of(line, end, m)
            h = leaf_hash_of(data)
        else:
            h = leaf_hash_in_place(line, end, m)
        if h.hex().encode() != h_hex:
            raise self._classify(parse_line(line), f, "its content does not match its hash")
        key = self.trusted.get(key_id.decode())
        if key is None:
            raise _Bad("wrong key", expected, self._untrusted(key_id.decode(), "signed"))
        if self.signatures:
            if key.alg != alg.decode():
                raise self._classify(parse_line(line), f, "its signature does not verify")
            if self.checks is not None:
                self.checks.add(key, sig_b64, data)
            elif not key.verify(base64.b64decode(sig_b64), data):
                raise self._classify(parse_line(line), f, "its signature does not verify")
        self.tree.append_hash(h)
        self.prev = h
        self.prev_hex = h_hex
        self._note_root()

    def _untrusted(self, key_id: str, what: str) -> str:
        if key_id in self.retired:
            return (
                f"{what} with key {key_id}, which the key rotation at record "
                f"{self.retired[key_id]} retired"
            )
        trust = "one of the pinned keys" if self.pinned else "announced by a checkpoint"
        return f"{what} with key {key_id}, which is not {trust} or a key rotation"

    def _checkpoint(self, line: bytes, f: IO[bytes]) -> None:
        size = self.tree.size
        try:
            cp = json.loads(line)["checkpoint"]
            announced = PublicKey.from_b64(cp["public_key"])
            note = cp["note"]
            pq_entry, rotate = cp.get("pq"), cp.get("rotate")
            pq_key = PublicKey.from_b64(pq_entry["public_key"]) if pq_entry is not None else None
            new_keys = self._rotation_keys(rotate, announced) if rotate is not None else []
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise self._classify(None, f, "a checkpoint line that does not parse") from None
        if (
            announced.key_id != cp.get("key")
            or announced.alg == "ml-dsa-65"
            or (
                pq_key is not None
                and (pq_key.key_id != pq_entry.get("key") or pq_key.alg != "ml-dsa-65")
            )
        ):
            raise _Bad("edited", size, "a checkpoint's key id does not match its public key")
        signed_by = [announced] if pq_key is None else [announced, pq_key]
        for key in signed_by:
            if key.key_id in self.retired or (
                key.key_id not in self.trusted and (self.pinned or rotate is not None)
            ):
                raise _Bad("wrong key", size, self._untrusted(key.key_id, "a checkpoint signed"))
        if self.pq_required and pq_key is None:
            raise _Bad(
                "wrong key",
                size,
                f"a checkpoint signed by key {announced.key_id} alone: this log's checkpoints "
                "need an ML-DSA-65 signature too (hybrid), so one without it is a downgrade",
            )
        candidates = [self.trusted.get(k.key_id, k) for k in signed_by] + new_keys
        try:
            checkpoint, verified = open_note(note, candidates)
        except NoteError as exc:
            raise _Bad("edited", size, f"a checkpoint does not verify ({exc})") from None
        verified_ids = {k.key_id for k in verified}
        for key in candidates:
            if key.key_id not in verified_ids:
                raise _Bad(
                    "edited",
                    size,
                    f"a checkpoint's {key.alg} signature (key {key.key_id}) does not verify; "
                    "every signature of a checkpoint must",
                )
        expected_extra = _rotation_text(announced, new_keys) if rotate is not None else ()
        if checkpoint.extra != expected_extra:
            raise _Bad("edited", size, "a checkpoint's key rotation lines do not match its line")
        res = self.result
        if res.origin is None:
            res.origin = checkpoint.origin
        elif checkpoint.origin != res.origin:
            raise _Bad("inserted", size, f"a checkpoint of another log ({checkpoint.origin})")
        if checkpoint.size > size:
            raise _Bad(
                "deleted",
                size,
                f"a checkpoint covers {checkpoint.size} records but only {size} precede it",
            )
        if checkpoint.size < size:
            raise _Bad(
                "inserted",
                checkpoint.size,
                f"a checkpoint covers {checkpoint.size} records but {size} precede it",
            )
        mirror = (
            cp.get("origin") == checkpoint.origin
            and cp.get("size") == checkpoint.size
            and cp.get("root") == base64.b64encode(checkpoint.root).decode()
            and cp.get("time") == checkpoint.time
        )
        if checkpoint.root != self.tree.root() or not mirror:
            raise _Bad(
                "edited",
                max(size - 1, 0),
                "the records before a checkpoint do not hash to its signed root",
            )
        if cp.get("last") != self.prev.hex() or cp.get("range") != [
            base64.b64encode(h).decode() for h in self.tree.range
        ]:
            raise _Bad("edited", size, "a checkpoint's chain state does not match the records")
        if rotate is not None:
            for key in signed_by:  # the old epoch ends: its keys sign nothing more
                self.trusted.pop(key.key_id, None)
                self.retired[key.key_id] = size
            for key in new_keys:
                self.trusted[key.key_id] = self.known[key.key_id] = key
            self.result.rotations += 1
        elif not self.pinned:
            for key in signed_by:
                self.trusted.setdefault(key.key_id, key)
                self.known.setdefault(key.key_id, key)
        if pq_key is not None or any(k.alg == "ml-dsa-65" for k in new_keys):
            self.pq_required = True
        self.last_sealed = size
        self.result.checkpoints += 1

    def _rotation_keys(self, rotate: Any, old: PublicKey) -> list[PublicKey]:
        """The new keys of a rotation line (raises ValueError/KeyError/TypeError when it
        does not parse): a classical key, then optionally an ML-DSA-65 key."""
        if rotate["from"] != old.key_id:
            raise ValueError("a rotation names another old key than its signer")
        keys = [PublicKey.from_b64(entry["public_key"]) for entry in rotate["keys"]]
        ids = [entry["key"] for entry in rotate["keys"]]
        algs = [k.alg for k in keys]
        if (
            ids != [k.key_id for k in keys]
            or algs[:1] == ["ml-dsa-65"]
            or algs[1:]
            not in (
                [],
                ["ml-dsa-65"],
            )
        ):
            raise ValueError("a rotation's keys are a classical key and an optional ML-DSA-65 key")
        if any(k.key_id in self.retired or k.key_id == old.key_id for k in keys):
            raise ValueError("a rotation to a retired key")
        return keys

    # ------------------------------------------------------------------ classifying

    def _ahead(self, f: IO[bytes]) -> Iterator[Entry | None]:
        """The record lines after the current one (None for one that does not parse)."""
        for _, raw in zip(range(_LOOKAHEAD), f, strict=False):
            line = raw.rstrip(b"\n")
            if line.startswith(_CHECKPOINT_PREFIX):
                continue
            try:
                yield parse_line(line)
            except EntryError:
                yield None

    def _classify(self, entry: Entry | None, f: IO[bytes], detail: str) -> _Bad:
        """Name the problem at the current line, looking at the lines after it."""
        expected, prev = self.tree.size, self.prev
        ahead = list(self._ahead(f))
        nxt = next((e for e in ahead if e is not None), None)
        chains_after = nxt is not None and nxt.index == expected and nxt.prev == prev
        if entry is None:
            if chains_after:
                return _Bad("inserted", expected, f"an extra line: {detail}")
            return _Bad("edited", expected, detail)
        if entry.index > expected:
            if any(e is not None and e.index == expected for e in ahead):
                return _Bad(
                    "reordered", expected, f"record {entry.index} comes before record {expected}"
                )
            return _Bad(
                "deleted",
                expected,
                f"records {expected}..{entry.index - 1} are missing",
            )
        if entry.index < expected:
            if chains_after:
                return _Bad("inserted", expected, f"an extra copy of record {entry.index} is here")
            return _Bad(
                "reordered", expected, f"record {entry.index} comes after record {expected - 1}"
            )
        # the right index
        if chains_after:
            return _Bad("inserted", expected, f"an extra record claims index {expected}")
        if entry.prev != prev:
            if self.signatures:
                key = self.trusted.get(entry.key)
                data = leaf_data(entry.alg, entry.index, entry.key, entry.prev, entry.body)
                if key is None or not key.verify(entry.sig, data):
                    return _Bad("edited", expected, "its chain link was changed")
            return _Bad(
                "edited",
                max(expected - 1, 0),
                "the record before it does not hash to its chain link",
            )
        return _Bad("edited", expected, detail)

    # ------------------------------------------------------------------ outside checkpoints

    def _prepare_external(self) -> None:
        self.deferred: list[str] = []
        for note in self.external:
            keys = list(self.pinned.values())
            try:
                if not keys:
                    raise NoteError("no pinned keys")
                checkpoint, verified = open_note(note, keys)
            except NoteError:
                # trust on first use, or a key a rotation in the file announces: the
                # keys are learnt from the file, so check it after the walk
                self.wanted_sizes.add(_note_size(note))
                self.deferred.append(note)
                continue
            self._check_hybrid(verified)
            self.external_checkpoints.append(checkpoint)
            self.wanted_sizes.add(checkpoint.size)

    def _check_hybrid(self, verified: Sequence[PublicKey]) -> None:
        if self.pq_required and not any(k.alg == "ml-dsa-65" for k in verified):
            raise _Bad(
                "wrong key",
                0,
                "an external checkpoint has no valid ML-DSA-65 signature; this log's "
                "checkpoints are hybrid",
            )

    def _check_external(self) -> None:
        keys = list(self.known.values())
        for note in self.deferred:
            try:
                checkpoint, verified = open_note(note, keys)
            except NoteError as exc:
                raise _Bad(
                    "wrong key", 0, f"an external checkpoint does not verify ({exc})"
                ) from None
            self._check_hybrid(verified)
            self.external_checkpoints.append(checkpoint)
        for checkpoint in self.external_checkpoints:
            if self.result.origin is not None and checkpoint.origin != self.result.origin:
                raise _Bad(
                    "wrong key",
                    0,
                    f"an external checkpoint is of another log ({checkpoint.origin})",
                )
            if checkpoint.size > self.tree.size:
                raise _Bad(
                    "truncated",
                    self.tree.size,
                    f"a checkpoint kept outside covers {checkpoint.size} records; the log "
                    f"has {self.tree.size}: its newest records were removed",
                )
            root = self.roots_at.get(checkpoint.size, EMPTY_ROOT if not checkpoint.size else None)
            if root != checkpoint.root:
                raise _Bad(
                    "edited",
                    0,
                    f"the log's first {checkpoint.size} records do not hash to the root of "
                    "a checkpoint kept outside: it was rewritten",
                )
            self.result.external_checkpoints += 1


def _rotation_text(old: PublicKey, new: Sequence[PublicKey]) -> tuple[str, ...]:
    """The note lines a rotation from ``old`` to ``new`` signs (as
    :func:`._checkpoint.rotation_lines` writes them)."""
    lines = [f"epoch {new[0].key_id} previous {old.key_id}"]
    lines += [f"key {k.alg} {k.key_id} {base64.b64encode(k.der).decode('ascii')}" for k in new]
    return tuple(lines)


def _note_size(note: str) -> int:
    lines = note.split("\n")
    try:
        return int(lines[1])
    except (IndexError, ValueError):
        raise AuditError(
            "The external checkpoint is not a checkpoint note.",
            hint="Pass a note of origin, size, root hash and signature lines.",
        ) from None


# ---------------------------------------------------------------------- repair and reading


@dataclasses.dataclass(frozen=True)
class RepairResult:
    path: str
    removed_bytes: int

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def repair_log(path: Path) -> RepairResult:
    """Cut a torn tail (the bytes after the last newline) away, under the log's flock.

    Nothing else is changed: a log with other problems stays as it is, for
    :func:`verify_log` to report.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise AuditError(
            f"Cannot open the audit log {path} ({exc.strerror or type(exc).__name__}).",
            hint="Pass the path of an audit log you may write.",
        ) from None
    # The writers' shared fsync count (_log._SharedSync) must not claim bytes cut here:
    # its flock first, then the log's (the order the writers take them in).
    try:
        side: int | None = os.open(synced_path(path), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        side = None  # no writer process shared fsyncs
    except OSError as exc:
        os.close(fd)
        raise AuditError(
            f"Cannot open {synced_path(path)} ({exc.strerror or type(exc).__name__}), "
            "where the log's writers share their fsyncs; the log was not changed.",
            hint="Run repair as the user who writes the log.",
        ) from None
    try:
        if side is not None:
            fcntl.flock(side, fcntl.LOCK_EX)
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        keep = size
        pos = size
        while pos > 0:
            n = min(1 << 16, pos)
            pos -= n
            chunk = os.pread(fd, n, pos)
            at = chunk.rfind(b"\n")
            if at != -1:
                keep = pos + at + 1
                break
        else:
            keep = 0
        if keep != size:
            os.ftruncate(fd, keep)
            os.fsync(fd)
            if side is not None:
                lower_synced(side, fd, keep)
        return RepairResult(str(path), size - keep)
    except OSError as exc:
        raise AuditError(
            f"Repairing the audit log {path} failed ({exc.strerror or type(exc).__name__}).",
            hint="Check the file's permissions and the disk.",
        ) from None
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        if side is not None:
            os.close(side)  # releases its flock


def is_checkpoint_line(line: bytes | str) -> bool:
    """Whether a log line is a checkpoint (not a call record): readers of records skip it."""
    if isinstance(line, bytes):
        return line.lstrip().startswith(_CHECKPOINT_PREFIX)
    return line.lstrip().startswith('{"checkpoint":')


def read_records(path: Path) -> Iterable[dict[str, Any]]:
    """The records of a log as JSON objects, checkpoint lines skipped (the ``integrity``
    member stays). Reads; does not verify (that is :func:`verify_log`)."""
    with Path(path).open("rb") as f:
        for raw in f:
            if raw.startswith(_CHECKPOINT_PREFIX) or not raw.endswith(b"\n"):
                continue
            yield json.loads(raw)
