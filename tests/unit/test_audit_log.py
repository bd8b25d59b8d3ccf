"""The append-only audit log: durable lines, no interleaving, fail closed, nothing half-written."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from secure_ds import AuditError
from secure_ds.audit import AuditLog, encode_record


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default signing key is created in $XDG_STATE_HOME: keep it in the test's dir."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def _records(path: Path) -> list[dict[str, object]]:
    """The records (checkpoint lines skipped), without the integrity member."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [
        {k: v for k, v in line.items() if k != "integrity"}
        for line in lines
        if "checkpoint" not in line
    ]


def _record_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if '"checkpoint":' not in line]


# Since issue 5 every line is RFC 8785 canonical JSON (sorted keys, UTF-8) with an
# "integrity" member added, and checkpoint lines sit between the records.
def test_append_writes_one_canonical_signed_json_line(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "audit.jsonl"
    with AuditLog(path) as log:
        log.append({"b": 1, "a": "x"})
        log.append({"n": 2})
    lines = _record_lines(path)
    assert [line.split(',"integrity":')[0] for line in lines] == ['{"a":"x","b":1', '{"n":2']
    assert _records(path) == [{"a": "x", "b": 1}, {"n": 2}]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    filler = "x" * 3000  # larger than a pipe buffer's atomic size

    def worker(n: int) -> None:
        for i in range(50):
            log.append({"worker": n, "i": i, "filler": filler})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    records = _records(path)
    assert len(records) == 400
    assert {(r["worker"], r["i"]) for r in records} == {(n, i) for n in range(8) for i in range(50)}


def test_group_commit_uses_fewer_fsyncs_than_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    # the Python path (the native one's fsyncs are counted in test_native_append.py)
    log = AuditLog(tmp_path / "audit.jsonl", fsync="always", native=False)
    calls = 0

    async def many() -> None:
        await asyncio.gather(*(log.append_async({"i": i}) for i in range(64)))

    asyncio.run(many())
    assert len(_records(tmp_path / "audit.jsonl")) == 64
    assert 1 <= calls < 64
    log.close()


def test_always_policy_syncs_before_returning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    path = tmp_path / "audit.jsonl"

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(len(path.read_bytes()))

    monkeypatch.setattr(os, "fsync", recording_fsync)
    log = AuditLog(path, fsync="always", native=False)  # native: test_native_append.py
    synced.clear()
    log.append({"i": 1})
    assert synced == [len(path.read_bytes())]  # the sync covered the new line
    log.close()


def test_background_policy_syncs_soon_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = threading.Event()
    real_fsync = os.fsync

    def noting_fsync(fd: int) -> None:
        real_fsync(fd)
        synced.set()

    monkeypatch.setattr(os, "fsync", noting_fsync)
    log = AuditLog(tmp_path / "audit.jsonl", fsync="background")
    synced.clear()
    log.append({"i": 1})
    assert _records(tmp_path / "audit.jsonl") == [{"i": 1}]  # written before return
    assert synced.wait(5.0)  # and synced by the flusher without another call
    log.close()


def test_background_sync_failure_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = threading.Event()

    def broken_fsync(fd: int) -> None:
        failed.set()
        raise OSError(errno.EIO, "Input/output error")

    log = AuditLog(tmp_path / "audit.jsonl", fsync="background")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    log.append({"i": 1})
    assert failed.wait(5.0)
    deadline = time.monotonic() + 5
    while log._failure is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(AuditError, match="Input/output error"):
        log.check()
    monkeypatch.undo()
    log.close()


def test_write_failure_truncates_and_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, native=False)  # native writes fail for real in test_native_append.py
    log.append({"ok": 1})
    before = path.read_text()
    real_write = os.write

    def half_then_enospc(fd: int, data: bytes | memoryview) -> int:
        if fd == log._fd and len(data) > 4:
            real_write(fd, bytes(data[:4]))  # a partial line reaches the file...
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(AuditError, match="No space left on device"):
        log.append({"second": 2})
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_text() == before  # ...and is cut away again
    with pytest.raises(AuditError, match="failed earlier"):
        log.check()
    with pytest.raises(AuditError):
        log.append({"third": 3})
    assert path.read_text() == before


def test_a_batch_lost_to_an_unexpected_error_fails_the_log_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A committer's batch carries other callers' records. If it is lost to anything,
    # not just an AuditError, those callers must not be told their records were written.
    from secure_ds.audit import _log

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync="never", native=False)  # renders in Python
    log.append({"ok": 1})
    before = path.read_text()
    real_render = _log.render_line

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("a bug while rendering")

    monkeypatch.setattr(_log, "render_line", broken)
    with pytest.raises(RuntimeError, match="a bug while rendering"):
        log.append({"second": 2})
    monkeypatch.setattr(_log, "render_line", real_render)
    with pytest.raises(AuditError, match=r"failed earlier .*a bug while rendering"):
        log.append({"third": 3})
    assert path.read_text() == before
    log.close()


def test_full_file_system_is_refused_before_sending(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", min_free_bytes=1 << 62)
    with pytest.raises(AuditError, match="is full"):
        log.check()


def test_unopenable_path_is_an_audit_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AuditError, match="SECURE_DS_AUDIT_PATH"):
        AuditLog(blocker / "audit.jsonl")


def test_closed_log_refuses(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.check()


def test_encode_record_is_stable() -> None:
    assert encode_record({"z": [1, {"b": 2, "a": 1}], "é": "ü"}) == (
        b'{"z":[1,{"b":2,"a":1}],"\\u00e9":"\\u00fc"}\n'
    )


def test_close_stops_a_busy_flusher_and_syncs(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", fsync="background", fsync_interval=0.05)
    for i in range(20):
        log.append({"i": i})
        time.sleep(0.004)  # close() lands at random points of the flusher's cycle
    closer = threading.Thread(target=log.close)
    closer.start()
    closer.join(timeout=5)
    assert not closer.is_alive()  # close() must not hang waiting for the flusher
    assert len(_records(tmp_path / "audit.jsonl")) == 20
