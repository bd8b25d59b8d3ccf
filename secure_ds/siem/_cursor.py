"""Where shipping stands in the log: a persisted cursor, and reading on from it.

The cursor is a small JSON file next to the log (``<log>.otlp-cursor.json``)::

    {"version": 1, "offset": 73421, "event_id": "01a2...", "line_sha256": "9f...",
     "shipped": 120, "updated": "2026-11-28T09:38:34.152Z"}

``offset`` is the byte just past the last line the collector acknowledged (every line
before it was shipped or is not a call record), ``event_id`` the last record shipped
and ``line_sha256`` the SHA-256 of the line that ends at ``offset``. It is written
atomically: a temporary file in the same folder, fsynced, renamed over the old one,
then the folder fsynced, so a crash leaves the old cursor or the new one, never a
mix. On start the line ending at ``offset`` is hashed again: if the log was replaced,
truncated or rotated under the cursor, shipping starts again from the beginning
(duplicates, which the SIEM drops by event id, rather than a silent gap).

Reading: only complete lines (ending in ``\\n``) are consumed; a torn last line after a
crash is never shipped and never stepped over. Lines without ``event_id`` (the log's
checkpoints) and lines that are not JSON objects are stepped over and counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Cursor", "LogChunk", "cursor_path_for", "read_from"]

_VERSION = 1
_READ_BYTES = 1 << 20
_MAX_LINE_BACK = 16 << 20  # how far back from the offset to look for its line's start


def cursor_path_for(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".otlp-cursor.json")


@dataclass(frozen=True, slots=True)
class Cursor:
    offset: int = 0
    event_id: str | None = None
    line_sha256: str | None = None
    shipped: int = 0

    @classmethod
    def load(cls, path: Path) -> Cursor:
        """The saved cursor, or the start of the log when there is none (or it is unreadable)."""
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError):
            return cls()  # from the start: duplicates, never a gap
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            return cls()
        offset = data.get("offset")
        if not isinstance(offset, int) or offset < 0:
            return cls()
        event_id = data.get("event_id")
        line_sha = data.get("line_sha256")
        shipped = data.get("shipped")
        return cls(
            offset=offset,
            event_id=event_id if isinstance(event_id, str) else None,
            line_sha256=line_sha if isinstance(line_sha, str) else None,
            shipped=shipped if isinstance(shipped, int) else 0,
        )

    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename, fsync the folder)."""
        body = json.dumps(
            {
                "version": _VERSION,
                "offset": self.offset,
                "event_id": self.event_id,
                "line_sha256": self.line_sha256,
                "shipped": self.shipped,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            separators=(",", ":"),
        ).encode()
        tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def matches(self, log_path: Path) -> bool:
        """Whether the line ending at :attr:`offset` is still the one the cursor saw."""
        if self.offset == 0:
            return True
        if self.line_sha256 is None:
            return False
        try:
            with open(log_path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:
                    return False
                back = min(self.offset, _MAX_LINE_BACK)
                f.seek(self.offset - back)
                data = f.read(back)
        except OSError:
            return False
        if not data.endswith(b"\n"):
            return False
        start = data.rfind(b"\n", 0, len(data) - 1) + 1
        return hashlib.sha256(data[start:-1]).hexdigest() == self.line_sha256


@dataclass(frozen=True, slots=True)
class LogChunk:
    """Call records read from ``start``; ``end`` is just past the last line consumed."""

    start: int
    end: int
    records: list[dict[str, Any]]
    lines: list[bytes]  # each record's line exactly as logged, without the newline
    last_line_sha256: str | None  # of the line ending at ``end`` (record or not)
    skipped: int  # lines consumed that are not call records (checkpoints, non-JSON)
    torn_tail: bool  # bytes after ``end`` that do not end in a newline (yet)


def read_from(
    log_path: Path, offset: int, *, max_records: int, max_bytes: int = 4 << 20
) -> LogChunk:
    """Read up to ``max_records`` call records from ``offset`` (complete lines only).

    Reading also stops once the records read hold ``max_bytes`` (but always takes at
    least one), so a batch of large records stays far below a collector's request size
    limit (20 MiB by default) and cannot be refused for its size on every retry.
    """
    records: list[dict[str, Any]] = []
    record_bytes = 0
    lines: list[bytes] = []
    skipped = 0
    position = offset
    last_line: bytes | None = None
    pending = b""
    try:
        f = open(log_path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return LogChunk(offset, offset, [], [], None, 0, False)
    with f:
        f.seek(offset)
        while len(records) < max_records and record_bytes < max_bytes:
            data = f.read(_READ_BYTES)
            if not data:
                break
            buffer = pending + data
            begin = 0
            while len(records) < max_records and record_bytes < max_bytes:
                newline = buffer.find(b"\n", begin)
                if newline < 0:
                    break
                line = buffer[begin:newline]
                begin = newline + 1
                position += len(line) + 1
                last_line = line
                record = _parse(line)
                if record is None:
                    if line.strip():
                        skipped += 1
                    continue
                records.append(record)
                lines.append(line)
                record_bytes += len(line)
            pending = buffer[begin:]
    last_sha = hashlib.sha256(last_line).hexdigest() if last_line is not None else None
    # bytes left without a newline at the end of the file: a torn (or still being
    # written) last line. It stays unread: the next read starts at ``position`` again.
    torn = bool(pending) and len(records) < max_records and record_bytes < max_bytes
    return LogChunk(offset, position, records, lines, last_sha, skipped, torn)


def _parse(line: bytes) -> dict[str, Any] | None:
    if not line.startswith(b"{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, dict) or "event_id" not in value:
        return None  # a checkpoint line, or something that is not a call record
    return value
