"""Inclusion and consistency proofs for a signed audit log (``secure-ds audit prove``).

The proofs are RFC 9162's, over the log's leaves (a record's leaf is its signed leaf
data, :mod:`._entry`), so anyone can check them with :mod:`secure_ds.audit.merkle` or
any RFC 9162 implementation against the root of a signed checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import AuditError
from ._entry import EntryError, parse_line
from .merkle import (
    consistency_proof_from_hashes,
    inclusion_proof_from_hashes,
    root_from_hashes,
)

__all__ = ["newest_checkpoint_line", "prove_consistency", "prove_inclusion"]

_CHECKPOINT_PREFIX = b'{"checkpoint":'


def _read(path: Path) -> tuple[list[bytes], list[str], dict[int, str]]:
    """The leaf hashes, event ids and checkpoint notes (by size) of a log, unverified."""
    hashes: list[bytes] = []
    event_ids: list[str] = []
    notes: dict[int, str] = {}
    try:
        with Path(path).open("rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.endswith(b"\n"):
                    break  # a torn tail is no leaf
                if raw.startswith(_CHECKPOINT_PREFIX):
                    cp = json.loads(raw)["checkpoint"]
                    notes[int(cp["size"])] = str(cp["note"])
                    continue
                try:
                    entry = parse_line(raw[:-1])
                except EntryError as exc:
                    raise AuditError(
                        f"Line {number} of {path} is not a signed record ({exc}).",
                        hint=f"Run `secure-ds audit verify {path}` first.",
                    ) from None
                hashes.append(entry.hash)
                event_ids.append(str(json.loads(entry.body).get("event_id", "")))
    except OSError as exc:
        raise AuditError(
            f"Cannot read the audit log {path} ({exc.strerror or type(exc).__name__}).",
            hint="Pass the path of an audit log file.",
        ) from None
    return hashes, event_ids, notes


def _size(size: int | None, available: int, path: Path) -> int:
    if size is None:
        return available
    if not 0 <= size <= available:
        raise AuditError(
            f"{path} holds {available} records; there is no tree of size {size}.",
            hint=f"Use a size from 0 to {available}.",
        )
    return size


def prove_inclusion(
    path: Path, *, index: int | None = None, event_id: str | None = None, size: int | None = None
) -> dict[str, Any]:
    """The inclusion proof of one record (by leaf index or event id) in the tree of the
    first ``size`` records (default: all), with the checkpoint of that size if the log
    holds one. Run :func:`~secure_ds.audit.verify_log` first: this reads, it does not
    verify."""
    hashes, event_ids, notes = _read(path)
    if index is None:
        if event_id is None or event_id not in event_ids:
            raise AuditError(
                f"No record with event id {event_id!r} in {path}.",
                hint="Pass --index N or the event_id of a record in this log.",
            )
        index = event_ids.index(event_id)
    n = _size(size, len(hashes), path)
    if not 0 <= index < n:
        raise AuditError(
            f"Record {index} is not in the first {n} records of {path}.",
            hint=f"Use an index from 0 to {n - 1}." if n else "The log holds no records yet.",
        )
    return {
        "kind": "inclusion",
        "index": index,
        "event_id": event_ids[index],
        "size": n,
        "leaf_hash": hashes[index].hex(),
        "root": root_from_hashes(hashes[:n]).hex(),
        "proof": [h.hex() for h in inclusion_proof_from_hashes(hashes[:n], index)],
        "checkpoint": notes.get(n),
    }


def prove_consistency(path: Path, *, old_size: int, size: int | None = None) -> dict[str, Any]:
    """The proof that the tree of the first ``old_size`` records is a prefix of the tree
    of the first ``size`` (default: all), with the checkpoints of both sizes if held."""
    hashes, _, notes = _read(path)
    n = _size(size, len(hashes), path)
    old = _size(old_size, n, path)
    return {
        "kind": "consistency",
        "old_size": old,
        "size": n,
        "old_root": root_from_hashes(hashes[:old]).hex(),
        "root": root_from_hashes(hashes[:n]).hex(),
        "proof": [h.hex() for h in consistency_proof_from_hashes(hashes[:n], old)],
        "old_checkpoint": notes.get(old),
        "checkpoint": notes.get(n),
    }


def newest_checkpoint_line(path: Path) -> str:
    """The newest checkpoint line of a log (with its newline)."""
    newest = None
    try:
        with Path(path).open("rb") as f:
            for raw in f:
                if raw.startswith(_CHECKPOINT_PREFIX) and raw.endswith(b"\n"):
                    newest = raw
    except OSError as exc:
        raise AuditError(
            f"Cannot read the audit log {path} ({exc.strerror or type(exc).__name__}).",
            hint="Pass the path of an audit log file.",
        ) from None
    if newest is None:
        raise AuditError(f"{path} holds no checkpoint.", hint="Pass a signed audit log.")
    return newest.decode("utf-8")
