"""Worker processes for the audit tests (importable by spawned interpreters)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from secure_ds.audit import AuditLog, load_signer


def append_worker(path: str, n: int, key: str | None, barrier: Any, out: Any) -> None:
    signer = load_signer(Path(key)) if key else None
    with AuditLog(Path(path), fsync="always", signer=signer, checkpoint_every=37) as log:
        barrier.wait()
        for i in range(n):
            log.append({"event_id": f"{os.getpid()}-{i}", "i": i, "filler": "x" * 300})
    out.put(n)


def append_until_killed(path: str) -> None:
    """Append forever, printing each event id once its append has returned."""
    with AuditLog(Path(path), fsync="always", checkpoint_every=50) as log:
        i = 0
        while True:
            event_id = f"crash-{i}"
            log.append({"event_id": event_id, "i": i, "filler": "y" * 500})
            sys.stdout.write(event_id + "\n")
            sys.stdout.flush()
            i += 1


if __name__ == "__main__":
    append_until_killed(sys.argv[1])
