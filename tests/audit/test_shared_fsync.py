"""Group commit across writers of one log file: the side file ``<log>.synced`` lets a
writer skip its fsync when one that began after its lines were written has returned,
and it never claims bytes no successful fsync covered.

Two ``AuditLog`` objects on one file in one process hold separate open file
descriptions, so their ``flock``s exclude each other exactly as two processes' do.

The tests that count or break ``os.fsync`` run the Python protocol (``native=False``,
:class:`secure_ds.audit._log._SharedSync`); the native syncer follows the same
protocol with real system calls, tested in ``test_native_append.py``."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from secure_ds import AuditError
from secure_ds.audit import AuditLog, repair_log, verify_log
from secure_ds.audit._log import synced_path

from ._logs import SYNCED_LAYOUT, synced_count


def _set_count(log: Path, synced: int) -> None:
    st = log.stat()
    synced_path(log).write_bytes(SYNCED_LAYOUT.pack(st.st_dev, st.st_ino, synced))


def _record(i: int) -> dict[str, object]:
    return {"event_id": f"e-{i}", "i": i, "filler": "z" * 200}


def test_a_writer_whose_lines_another_fsync_covered_skips_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    logs = [AuditLog(path, fsync="always", native=False) for _ in range(3)]
    real_fsync = os.fsync
    calls: list[int] = []
    release = threading.Event()

    def slow_first_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            assert release.wait(30)  # the first writer's fsync "takes long"
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_first_fsync)
    errors: list[BaseException] = []

    def append(log: AuditLog, i: int) -> Callable[[], None]:
        def run() -> None:
            try:
                log.append(_record(i))
            except BaseException as exc:  # seen by the assertion below
                errors.append(exc)

        return run

    first = threading.Thread(target=append(logs[0], 0))
    first.start()
    while not calls:  # the first writer is inside its fsync, holding the side file's flock
        threading.Event().wait(0.005)
    others = [threading.Thread(target=append(logs[i], i)) for i in (1, 2)]
    for t in others:
        t.start()
    # both other writers' lines are written (they wait for the first writer's fsync)
    while path.read_bytes().count(b'"event_id":"e-') < 3:
        threading.Event().wait(0.005)
    release.set()
    for t in (first, *others):
        t.join(30)
    assert not errors
    # one fsync for the first line; the next covers both others' lines, which were
    # written before it began: the last writer returns without an fsync of its own
    assert len(calls) == 2
    assert synced_count(path) == path.stat().st_size
    for log in logs:
        log.close()
    result = verify_log(path)
    assert result.ok, result
    assert result.records == 3


def test_concurrent_writers_of_one_file_share_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    logs = [AuditLog(path, fsync="always", native=False) for _ in range(2)]
    real_fsync = os.fsync
    calls = 0

    def counting(fd: int) -> None:
        nonlocal calls
        calls += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting)

    def work(log: AuditLog, first: int) -> None:
        for i in range(first, first + 40):
            log.append(_record(i))

    threads = [threading.Thread(target=work, args=(logs[k % 2], k * 40)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    appended_calls = calls
    for log in logs:
        log.close()
    assert appended_calls < 240
    result = verify_log(path)
    assert result.ok, result
    assert result.records == 240


def test_a_failed_fsync_is_not_counted_and_the_next_writer_syncs_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    failing = AuditLog(path, fsync="always", native=False)
    other = AuditLog(path, fsync="always", native=False)
    before = synced_count(path)
    real_fsync = os.fsync

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(AuditError, match="Input/output error"):
        failing.append(_record(0))
    assert synced_count(path) == before  # nothing claimed for the failed fsync
    calls: list[int] = []

    def counting(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting)
    other.append(_record(1))
    assert len(calls) == 1  # its own fsync, covering both lines
    assert synced_count(path) == path.stat().st_size
    other.close()
    failing.close()


def test_a_count_beyond_the_file_is_forgotten_on_open_and_by_repair(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync="always") as log:
        log.append(_record(0))
        assert synced_count(path) == path.stat().st_size
    size = path.stat().st_size  # with the closing checkpoint
    # A writer counted a line while it was being written, then died: repair cuts it.
    with path.open("ab") as f:
        f.write(b'{"event_id":"torn')
    _set_count(path, size + 10)
    assert repair_log(path).removed_bytes == len(b'{"event_id":"torn')
    assert synced_count(path) == size  # never more than what is left
    # A count that claims more than the file holds (a file put in its place, a cut made
    # without repair) is dropped when a writer opens the log.
    _set_count(path, size + 500)
    with AuditLog(path, fsync="always") as log:
        assert synced_count(path) in (0, path.stat().st_size)
        log.append(_record(1))
    assert verify_log(path).ok


def test_a_count_for_another_file_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path, fsync="always").close()
    synced_path(path).write_bytes(SYNCED_LAYOUT.pack(1, 2, 1 << 40))  # another device and inode
    with AuditLog(path, fsync="always") as log:
        log.append(_record(0))
        assert synced_count(path) == path.stat().st_size


def test_a_side_file_that_is_a_symlink_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep")
    synced_path(path).symlink_to(target)
    real_fsync = os.fsync
    calls = 0

    def counting(fd: int) -> None:
        nonlocal calls
        calls += 1
        real_fsync(fd)

    with AuditLog(path, fsync="always", native=False) as log:
        monkeypatch.setattr(os, "fsync", counting)
        for i in range(3):
            log.append(_record(i))
        assert calls == 3  # syncs alone, every append durable
    assert target.read_bytes() == b"keep"
    assert verify_log(path).ok


def test_the_synced_claim_never_waits_for_a_writer_mid_batch(tmp_path: Path) -> None:
    # While a writer holds the log's flock (signing and writing a batch) or this one's
    # io_lock, the fsync about to run claims only where this writer's own lines end,
    # instead of waiting for the batch (which held every fsync back behind signing).
    import fcntl

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync="always", native=False)
    log.append(_record(0))
    own_end = path.stat().st_size
    with path.open("ab") as other:  # another open file description: another process
        other.write(b"")
        assert log._settled_size(own_end) == own_end  # nothing in between: the size

        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        other.write(b'{"event_id":"half-written')  # a line still being written
        other.flush()
        answers: list[int] = []
        reader = threading.Thread(target=lambda: answers.append(log._settled_size(own_end)))
        reader.start()
        reader.join(5)
        assert not reader.is_alive(), "waited for another writer's flock"
        assert answers == [own_end]  # not the size, which ends in a half-written line
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)
        os.ftruncate(other.fileno(), own_end)  # the other writer's write fails: cut back

    with log._io_lock:  # this writer's own batch in progress (another of its threads)
        answers.clear()
        reader = threading.Thread(target=lambda: answers.append(log._settled_size(own_end)))
        reader.start()
        reader.join(5)
        assert not reader.is_alive(), "waited for this writer's io_lock"
        assert answers == [own_end]
    log.close()
    assert verify_log(path).ok
