"""The signed log as a writer: chains across processes and reopenings, survives a kill -9,
fails closed on a file it cannot continue, refuses records it cannot keep."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from secure_ds import AuditError
from secure_ds.audit import (
    AuditLog,
    generate_key_file,
    load_public_key,
    load_signer,
    read_records,
    repair_log,
    verify_log,
)
from tests._processes import run_workers

from . import _workers
from ._logs import CHECKPOINT_PREFIX, default_pub, lines, make_log

REPO = Path(__file__).parents[2]


def test_writer_processes_share_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    other_key = tmp_path / "keys" / "other.pem"
    generate_key_file(other_key)
    AuditLog(path).close()  # creates the default key, so the workers do not race for it
    args = [(str(path), 150, None), (str(path), 150, None), (str(path), 150, str(other_key))]
    assert sorted(run_workers(_workers.append_worker, args)) == [150, 150, 150]
    result = verify_log(path)
    assert result.ok, result
    assert result.records == 450
    assert len(result.keys) == 2  # both keys announced by their writers' checkpoints
    records = list(read_records(path))
    assert [r["integrity"]["index"] for r in records] == list(range(450))
    assert len({r["event_id"] for r in records}) == 450
    pinned = [
        load_public_key(default_pub()),
        load_public_key(tmp_path / "keys" / "other.pub"),
    ]
    assert verify_log(path, keys=pinned).ok
    assert verify_log(path, keys=pinned[:1]).reason == "wrong key"


def test_a_killed_writer_loses_no_acknowledged_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).close()
    child = subprocess.Popen(  # noqa: S603 (our own worker, fixed arguments)
        [sys.executable, "-m", "tests.audit._workers", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acked: list[str] = []
    deadline = time.monotonic() + 60
    while len(acked) < 300 and time.monotonic() < deadline:
        acked.append(child.stdout.readline().strip())
    os.kill(child.pid, signal.SIGKILL)
    acked += [line.strip() for line in child.stdout]  # acknowledged before the kill
    child.wait()
    assert len(acked) >= 300
    repair_log(path)  # a torn tail, if the kill cut a write; nothing otherwise
    result = verify_log(path)
    assert result.ok, result
    logged = {r["event_id"] for r in read_records(path)}
    assert set(acked) <= logged
    # the next writer resumes from the newest checkpoint and the records after it
    with AuditLog(path) as log:
        assert log.size == result.records
        log.append({"event_id": "after"})
    assert verify_log(path).records == result.records + 1


def test_reopening_resumes_the_chain_from_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    make_log(path, 30, every=8)
    # as if the writer had crashed: drop the close checkpoint, keep records 24..29 unsealed
    content = lines(path)
    assert content[-1].startswith(CHECKPOINT_PREFIX)
    path.write_bytes(b"".join(content[:-1]))
    with AuditLog(path, checkpoint_every=8) as log:
        assert log.size == 30
        log.append({"event_id": "e30"})
    result = verify_log(path)
    assert result.ok
    assert result.records == 31
    # the same key reopening a sealed log adds no checkpoint line
    n = len(lines(path))
    AuditLog(path).close()
    assert len(lines(path)) == n


def test_a_torn_tail_stops_the_writer_until_repaired(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    make_log(path, 3)
    with path.open("ab") as f:
        f.write(b'{"event_id":"half')
    with pytest.raises(AuditError, match=r"torn line.*secure-ds audit repair"):
        AuditLog(path)
    repair_log(path)
    AuditLog(path).close()
    assert verify_log(path).ok


def test_a_file_of_unsigned_records_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"event_id":"old","outcome":"permit"}\n')
    with pytest.raises(AuditError, match="without integrity data"):
        AuditLog(path)
    assert path.read_text() == '{"event_id":"old","outcome":"permit"}\n'  # kept as it was


def test_a_line_another_process_forged_fails_the_log_closed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync="never")
    log.append({"event_id": "a"})
    with path.open("ab") as f:
        f.write(b'{"event_id":"forged"}\n')
    with pytest.raises(AuditError, match="not a signed record"):
        log.append({"event_id": "b"})
    with pytest.raises(AuditError, match="failed earlier"):
        log.check()
    log.close()


def test_a_file_cut_shorter_while_open_fails_the_log_closed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync="never")
    log.append({"event_id": "a"})
    os.truncate(path, 10)
    with pytest.raises(AuditError, match="shrank"):
        log.append({"event_id": "b"})
    log.close()


def test_a_record_over_the_limit_is_refused_without_failing_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, max_record_bytes=4096) as log:
        with pytest.raises(AuditError, match="over the log's limit of 4096"):
            log.append({"event_id": "big", "blob": "z" * 5000})
        log.check()  # still healthy
        log.append({"event_id": "small"})
    assert [r["event_id"] for r in read_records(path)] == ["small"]


def test_records_json_cannot_hold_or_that_claim_integrity_are_refused(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.jsonl") as log:
        with pytest.raises(AuditError, match="canonical JSON"):
            log.append({"latency_ms": float("nan")})
        with pytest.raises(AuditError, match="'integrity'"):
            log.append({"integrity": {}})
        with pytest.raises(AuditError, match="'checkpoint'"):
            log.append({"checkpoint": {}})
        log.check()


def test_an_idle_log_is_sealed_after_the_checkpoint_interval(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, checkpoint_interval=0.05)
    log.append({"event_id": "a"})
    deadline = time.monotonic() + 5
    while not lines(path)[-1].startswith(CHECKPOINT_PREFIX) and time.monotonic() < deadline:
        time.sleep(0.01)
    last = json.loads(lines(path)[-1])
    assert last["checkpoint"]["size"] == 1  # sealed without another call or close()
    log.close()
    assert verify_log(path).unsealed == 0


def test_a_clock_going_backwards_does_not_break_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    now = [2_000_000_000.0]

    def clock() -> float:
        now[0] -= 3600.0  # an hour earlier on every reading
        return now[0]

    monkeypatch.setattr(time, "time", clock)
    with AuditLog(path, checkpoint_every=2) as log:
        for i in range(5):
            log.append({"event_id": f"e{i}"})
    monkeypatch.undo()
    times = [
        json.loads(x)["checkpoint"]["time"] for x in lines(path) if x.startswith(CHECKPOINT_PREFIX)
    ]
    assert times == sorted(times, reverse=True)  # the checkpoints' times went backwards...
    assert verify_log(path).ok  # ...and order comes from the chain, not the clock


def test_signing_keys_must_be_private_to_their_owner(tmp_path: Path) -> None:
    signer = generate_key_file(tmp_path / "k" / "key.pem")
    assert (tmp_path / "k" / "key.pem").stat().st_mode & 0o777 == 0o600
    os.chmod(tmp_path / "k" / "key.pem", 0o644)
    with pytest.raises(AuditError, match="chmod 600"):
        load_signer(tmp_path / "k" / "key.pem")
    os.chmod(tmp_path / "k" / "key.pem", 0o600)
    assert load_signer(tmp_path / "k" / "key.pem").key_id == signer.key_id
    (tmp_path / "k" / "bad.pem").write_text("not a key")
    os.chmod(tmp_path / "k" / "bad.pem", 0o600)
    with pytest.raises(AuditError, match="no usable PEM private key"):
        load_signer(tmp_path / "k" / "bad.pem")
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(signer)
    assert "PRIVATE" not in repr(signer)


def test_the_default_key_is_created_once_in_the_state_directory(tmp_path: Path) -> None:
    first = AuditLog(tmp_path / "a" / "a.jsonl")
    second = AuditLog(tmp_path / "b" / "b.jsonl")
    assert first.signer.key_id == second.signer.key_id
    key = tmp_path / "state" / "secure-ds" / "audit-signing-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert load_public_key(default_pub()).key_id == first.signer.key_id
    assert not (tmp_path / "a" / "audit-signing-key.pem").exists()
    first.close()
    second.close()


def test_a_log_that_cannot_be_written_at_open_fails_the_first_call(tmp_path: Path) -> None:
    log = AuditLog(Path("/dev/full"))  # opens, but no byte can be written
    with pytest.raises(AuditError, match="No space left"):
        log.check()
    log.close()


def test_two_logs_on_one_file_in_one_process_share_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = AuditLog(path, fsync="never")
    second = AuditLog(path, fsync="never")  # another client on the same file

    def work(log: AuditLog, tag: str) -> None:
        for i in range(100):
            log.append({"event_id": f"{tag}-{i}"})

    threads = [
        threading.Thread(target=work, args=(log, tag))
        for log, tag in ((first, "a"), (second, "b"), (first, "c"), (second, "d"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first.close()
    second.close()
    result = verify_log(path)
    assert result.ok, result
    assert result.records == 400
