"""Helpers for the audit tests: a small signed log and line-level surgery on it."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from secure_ds.audit import AuditLog, Signer, default_key_path
from secure_ds.audit._log import synced_path

CHECKPOINT_PREFIX = b'{"checkpoint":'
SYNCED_LAYOUT = struct.Struct("<QQQ")  # the side file <log>.synced: st_dev, st_ino, bytes


def synced_count(log: Path) -> int:
    """What the side file says is fsynced of ``log`` (0 when it names another file)."""
    raw = synced_path(log).read_bytes()
    if len(raw) != SYNCED_LAYOUT.size:
        return 0
    dev, ino, synced = SYNCED_LAYOUT.unpack(raw)
    st = log.stat()
    return int(synced) if (dev, ino) == (st.st_dev, st.st_ino) else 0


def make_log(
    path: Path, n: int = 20, *, every: int = 8, signer: Signer | None = None
) -> list[bytes]:
    """A log of ``n`` records (checkpoints at creation, every ``every`` and on close)."""
    with AuditLog(path, fsync="never", checkpoint_every=every, signer=signer) as log:
        for i in range(n):
            log.append({"event_id": f"e{i}", "i": i, "outcome": "permit", "latency_ms": 1.5})
    return lines(path)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write(path: Path, content: list[bytes]) -> None:
    path.write_bytes(b"".join(content))


def record_positions(content: list[bytes]) -> list[int]:
    """Line numbers (0-based) of the record lines, in order."""
    return [n for n, line in enumerate(content) if not line.startswith(CHECKPOINT_PREFIX)]


def checkpoint_of_size(content: list[bytes], size: int) -> bytes:
    for line in content:
        if line.startswith(CHECKPOINT_PREFIX) and json.loads(line)["checkpoint"]["size"] == size:
            return line
    raise AssertionError(f"no checkpoint of size {size}")


def default_pub() -> Path:
    """The public half of the default signing key (the tests' own state directory)."""
    return default_key_path().with_name("audit-signing-key.pub")
