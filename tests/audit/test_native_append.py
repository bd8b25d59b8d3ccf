"""The native append path (``secure_ds._native``: RecordSigner, Committer, GroupSync)
against the Python one, which stays the reference.

* the lines are the same bytes: Ed25519 is deterministic, so the Rust signer's
  signatures equal ``cryptography``'s, and the chain, leaf hashes and layout follow
  ``_entry``;
* the same guarantees: durable before ``append`` returns (the side file counts the
  bytes an fsync covered), group commit, one chain with other writers, checkpoints by
  count and by time, rotation, fail closed on a failed write or fsync (real system
  calls failing: a file-size limit, fsync on a pipe), and nothing half-written.

With ``SECURE_DS_REQUIRE_SERVICES=1`` (CI) a missing extension fails these tests.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from secure_ds import AuditError
from secure_ds.audit import AuditLog, _log, generate_key_file, load_signer, read_records, verify_log
from secure_ds.audit._entry import (
    EntryError,
    leaf_data,
    leaf_hash_in_place,
    leaf_hash_of,
    render_line,
    split_line,
)
from secure_ds.audit._jcs import canonicalize

from .._services import skip_unless_required
from ._logs import CHECKPOINT_PREFIX, lines, synced_count

try:
    from secure_ds._native import Committer, GroupSync, RecordSigner, take_in_records
except ImportError:  # pragma: no cover - checked by the fixture below
    Committer = GroupSync = RecordSigner = take_in_records = None  # type: ignore[assignment,misc]

REPO = Path(__file__).parents[2]


@pytest.fixture(autouse=True)
def _native_built() -> None:
    if RecordSigner is None:
        skip_unless_required(
            "secure_ds._native is not built (no Rust toolchain at install time); "
            "install one (rustup.rs) and run `make install` again"
        )


def _seed(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _random_record(rng: random.Random, i: int) -> dict[str, object]:
    words = ["permit", "deny", "ünïcode", "日本語", "emoji \U0001f600", 'quote " \\ /', "\n\t"]
    record: dict[str, object] = {"event_id": f"e-{i}", "i": i}
    for k in range(rng.randrange(0, 6)):
        record[f"k{k}{rng.choice(words)}"] = rng.choice(
            [rng.random() * 1e6, rng.randrange(-(10**12), 10**12), rng.choice(words), None, [1, 2]]
        )
    return record


def _python_lines(
    key: ed25519.Ed25519PrivateKey, key_id: str, index: int, prev: bytes, bodies: list[bytes]
) -> tuple[bytes, bytes]:
    out, hashes = [], []
    for offset, body in enumerate(bodies):
        data = leaf_data("ed25519", index + offset, key_id, prev, body)
        h = leaf_hash_of(data)
        out.append(
            render_line(
                body,
                alg="ed25519",
                leaf_hash=h,
                index=index + offset,
                key=key_id,
                prev=prev,
                sig=key.sign(data),
            )
        )
        hashes.append(h)
        prev = h
    return b"".join(out), b"".join(hashes)


def _appender(
    log: AuditLog, first: int, count: int, errors: list[BaseException]
) -> threading.Thread:
    def run() -> None:
        try:
            for i in range(first, first + count):
                log.append({"event_id": f"e-{i}", "i": i, "filler": "z" * 300})
        except BaseException as exc:  # seen by the caller's assertion
            errors.append(exc)

    return threading.Thread(target=run)


def _checkpoint_sizes(path: Path) -> list[int]:
    return [
        json.loads(line)["checkpoint"]["size"]
        for line in lines(path)
        if line.startswith(CHECKPOINT_PREFIX)
    ]


def _run_threads(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "an append never returned"


# ---------------------------------------------------------------------- the same bytes


def test_the_rust_signer_signs_as_cryptography_does() -> None:
    rng = random.Random(7)
    for _ in range(50):
        key = ed25519.Ed25519PrivateKey.generate()
        native = RecordSigner(_seed(key))
        raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
        assert native.public_key() == key.public_key().public_bytes(*raw)
        for size in (0, 1, 64, rng.randrange(2, 5000)):
            message = rng.randbytes(size)
            assert native.sign(message) == key.sign(message)
    with pytest.raises(ValueError, match="32 bytes"):
        RecordSigner(b"short")


def test_a_natively_committed_batch_is_the_python_lines_byte_for_byte() -> None:
    rng = random.Random(11)
    key = ed25519.Ed25519PrivateKey.generate()
    native = RecordSigner(_seed(key))
    for trial in range(40):
        bodies = [canonicalize(_random_record(rng, i)) for i in range(rng.randrange(1, 12))]
        if trial % 5 == 0:
            bodies.insert(0, b"{}")  # the empty record: no comma before "integrity"
        index, prev = rng.randrange(0, 10**15), rng.randbytes(32)
        key_id = rng.randbytes(8).hex()
        assert native.commit(key_id, index, prev, bodies) == _python_lines(
            key, key_id, index, prev, bodies
        )


def test_a_batch_of_the_wrong_shape_is_refused_before_signing() -> None:
    native = RecordSigner(bytes(32))
    with pytest.raises(ValueError, match="key id"):
        native.commit("NOT-HEX-KEY-ID!!", 0, bytes(32), [b"{}"])
    with pytest.raises(ValueError, match="32-byte"):
        native.commit("0123456789abcdef", 0, bytes(31), [b"{}"])
    with pytest.raises(ValueError, match="JSON object"):
        native.commit("0123456789abcdef", 0, bytes(32), [b"[1]"])


def test_the_native_log_writes_the_python_logs_record_lines(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    generate_key_file(key)
    rng = random.Random(3)
    records = [_random_record(rng, i) for i in range(300)]
    paths = {}
    for native in (True, False):
        path = paths[native] = tmp_path / f"{native}.jsonl"
        with AuditLog(
            path, fsync="never", signer=load_signer(key), checkpoint_every=64, native=native
        ) as log:
            assert (log._core is not None) is native
            for record in records:
                log.append(record)
        assert verify_log(path).ok

    def record_lines(path: Path) -> list[bytes]:
        return [line for line in lines(path) if not line.startswith(CHECKPOINT_PREFIX)]

    assert record_lines(paths[True]) == record_lines(paths[False])
    # checkpoints at the same tree sizes (their times differ)
    sizes = [_checkpoint_sizes(paths[True]), _checkpoint_sizes(paths[False])]
    assert sizes[0] == sizes[1] == [0, 64, 128, 192, 256, 300]


def test_only_a_software_ed25519_key_takes_the_native_path(tmp_path: Path) -> None:
    p256 = tmp_path / "p256.pem"
    generate_key_file(p256, "ecdsa-p256")
    with AuditLog(tmp_path / "a.jsonl", signer=load_signer(p256)) as log:
        assert log._core is None  # cryptography signs (ECDSA is randomised)
        log.append({"i": 1})
    with AuditLog(tmp_path / "b.jsonl", native=False) as log:
        assert log._core is None
    assert verify_log(tmp_path / "a.jsonl").ok


# ---------------------------------------------------------------------- durability


def test_each_append_returns_only_once_its_bytes_are_fsynced(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync="always") as log:
        assert log._group is not None
        for i in range(20):
            log.append({"event_id": f"e-{i}"})
            # the side file is written after an fsync returned, with the bytes it covered
            assert synced_count(path) >= path.stat().st_size
        fsyncs, fsync_seconds, _ = log._group.stats()
        assert fsyncs >= 20  # one writer: one fsync per record
        assert fsync_seconds > 0


def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    errors: list[BaseException] = []
    with AuditLog(path, fsync="always") as log:
        assert log._group is not None
        _run_threads([_appender(log, t * 50, 50, errors) for t in range(8)])
        fsyncs = log._group.stats()[0]
    assert not errors
    assert 1 <= fsyncs < 400
    result = verify_log(path)
    assert result.ok, result
    assert result.records == 400
    assert sorted(r["i"] for r in read_records(path)) == list(range(400))


def test_writers_of_one_file_in_one_process_keep_one_chain(tmp_path: Path) -> None:
    # Two logs on one file hold separate open file descriptions: each one's committer
    # finds the other's lines (a hand-back to Python's catch-up) as another process would.
    path = tmp_path / "audit.jsonl"
    errors: list[BaseException] = []
    logs = [AuditLog(path, fsync="always", checkpoint_every=50) for _ in range(2)]
    _run_threads([_appender(logs[t % 2], t * 60, 60, errors) for t in range(6)])
    for log in logs:
        log.close()
    assert not errors
    result = verify_log(path)
    assert result.ok, result
    records = list(read_records(path))
    assert [r["integrity"]["index"] for r in records] == list(range(360))
    assert sorted(r["i"] for r in records) == list(range(360))


def test_checkpoints_by_count_are_written_under_concurrency(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    errors: list[BaseException] = []
    with AuditLog(path, fsync="never", checkpoint_every=7) as log:
        _run_threads([_appender(log, t * 40, 40, errors) for t in range(8)])
    assert not errors
    sizes = _checkpoint_sizes(path)
    assert sizes[-1] == 320
    # A batch is handed back to Python, which writes the checkpoint, whenever one is
    # due; as on the Python path, the batch that crosses the count is written whole
    # first, so a gap is at most checkpoint_every - 1 records plus one batch (at most
    # one record per writer thread).
    assert len(sizes) >= 320 // (7 + 8)
    assert all(b - a < 7 + 8 for a, b in itertools.pairwise(sizes))
    assert verify_log(path).ok


def test_a_checkpoint_follows_unsealed_native_records_within_the_interval(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync="never", checkpoint_interval=0.2) as log:
        for i in range(3):
            log.append({"i": i})
        deadline = time.monotonic() + 10
        while not lines(path)[-1].startswith(CHECKPOINT_PREFIX) and time.monotonic() < deadline:
            time.sleep(0.02)
        newest = lines(path)[-1]
        assert newest.startswith(CHECKPOINT_PREFIX), "no checkpoint on the timer"
        assert json.loads(newest)["checkpoint"]["size"] == 3
        assert log.size == 3


def test_rotating_to_a_key_without_a_native_signer_hands_every_batch_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    p256 = tmp_path / "p256.pem"
    generate_key_file(p256, "ecdsa-p256")
    errors: list[BaseException] = []
    with AuditLog(path, fsync="never") as log:
        _run_threads([_appender(log, t * 20, 20, errors) for t in range(4)])
        log.rotate_key(load_signer(p256))
        _run_threads([_appender(log, 80 + t * 20, 20, errors) for t in range(4)])
    assert not errors
    result = verify_log(path)
    assert result.ok, result
    algs = [r["integrity"]["alg"] for r in read_records(path)]
    assert algs == ["ed25519"] * 80 + ["ecdsa-p256"] * 80


# ---------------------------------------------------------------------- failing closed


def test_a_failed_fsync_fails_the_log_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The syncer runs a real fsync on a pipe, which fails (EINVAL) as a broken disk would.
    read_end, write_end = os.pipe()
    real = GroupSync

    def on_a_pipe(
        fd: int, side_fd: int | None, dev: int, ino: int, probe_fd: int | None = None
    ) -> GroupSync:
        return real(write_end, side_fd, dev, ino, probe_fd)

    monkeypatch.setattr(_log, "GroupSync", on_a_pipe)
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync="always")
    before = synced_count(path)
    with pytest.raises(AuditError, match="Invalid argument"):
        log.append({"i": 1})
    assert synced_count(path) == before  # nothing claimed for the failed fsync
    with pytest.raises(AuditError, match="failed earlier"):
        log.check()
    with pytest.raises(AuditError):
        log.append({"i": 2})
    log.close()
    os.close(read_end)
    os.close(write_end)


_FILE_SIZE_LIMIT = """
import json, resource, signal, sys
from pathlib import Path
from secure_ds import AuditError
from secure_ds.audit import AuditLog
path = Path(sys.argv[1])
log = AuditLog(path, fsync="always")
assert log._core is not None
log.append({"ok": 1})
before = path.read_bytes()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write(2) fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 100, resource.RLIM_INFINITY))
out = {}
try:
    log.append({"second": "x" * 2000})
except AuditError as exc:
    out["error"] = str(exc)
try:
    log.check()
except AuditError as exc:
    out["check"] = str(exc)
try:
    log.append({"third": 3})
except AuditError as exc:
    out["third"] = str(exc)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
out["unchanged"] = path.read_bytes() == before
log.close()
print(json.dumps(out))
"""


def test_a_write_that_fails_part_way_is_cut_back_and_fails_the_log_closed(
    tmp_path: Path,
) -> None:
    # A real short write: the process's file-size limit lets 100 bytes of the line in,
    # then write(2) fails with EFBIG (in a child process: the limit is process-wide).
    path = tmp_path / "audit.jsonl"
    done = subprocess.run(  # noqa: S603 (our own interpreter and script)
        [sys.executable, "-c", _FILE_SIZE_LIMIT, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = json.loads(done.stdout)
    assert "File too large" in out["error"]
    assert "failed earlier" in out["check"]
    assert "third" in out
    assert out["unchanged"]  # the partial line was truncated away under the flock
    assert verify_log(path).ok


def test_an_append_racing_the_close_fails_rather_than_hangs(tmp_path: Path) -> None:
    # Threads append while the log closes: every append returns (its record in the
    # file) or raises AuditError; none waits for ever on a committer that stopped.
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync="always")
    acked: list[int] = []
    refused: list[BaseException] = []
    unexpected: list[BaseException] = []
    started = threading.Barrier(9)

    def run(first: int) -> None:
        started.wait()
        for i in range(first, first + 10_000):
            try:
                log.append({"i": i})
            except AuditError as exc:
                refused.append(exc)
                return
            except BaseException as exc:  # seen by the assertion below
                unexpected.append(exc)
                return
            acked.append(i)

    threads = [threading.Thread(target=run, args=(t * 10_000,)) for t in range(8)]
    for t in threads:
        t.start()
    started.wait()
    while len(acked) < 200:
        time.sleep(0.001)
    log.close()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "an append racing close() never returned"
    assert not unexpected, unexpected
    assert len(refused) == 8  # every thread was stopped by the close
    assert all("closed" in str(e) for e in refused)
    result = verify_log(path)
    assert result.ok, result
    assert set(acked) <= {r["i"] for r in read_records(path)}  # acknowledged: kept


def test_the_group_sync_reports_a_failed_fsync_to_every_waiter() -> None:
    read_end, write_end = os.pipe()
    group = GroupSync(write_end, None, 0, 0)
    try:
        for _ in range(2):  # sticky: the first failure answers every later wait
            with pytest.raises(OSError, match="Invalid argument") as caught:
                group.wait(10)
            assert caught.value.errno == 22  # EINVAL: fsync on a pipe
        assert group.stats()[0] == 0
    finally:
        group.close()
        os.close(read_end)
        os.close(write_end)


def test_sealed_body_fields_pass_through_the_native_path_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    blob = base64.b64encode(os.urandom(3000)).decode()
    with AuditLog(path, fsync="never") as log:
        log.append({"event_id": "e", "sealed": {"ct": blob}})
    (record,) = read_records(path)
    assert record["sealed"] == {"ct": blob}
    assert verify_log(path).ok


def test_a_log_opened_before_a_fork_refuses_appends_in_the_child(tmp_path: Path) -> None:
    # The committer and syncer threads do not survive fork(): an append in the child
    # would wait for them forever, so it is refused with a clear error instead.
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync="always")
    log.append({"i": 0})
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        try:
            log.append({"i": 1})
        except AuditError as exc:
            os._exit(0 if "forked" in str(exc) else 2)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.append({"i": 2})  # the parent goes on
    log.close()
    assert [r["i"] for r in read_records(path)] == [0, 2]


def test_coroutines_appending_at_once_share_fsyncs(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync="always") as log:
        assert log._group is not None

        async def many() -> None:
            await asyncio.gather(*(log.append_async({"i": i}) for i in range(128)))

        asyncio.run(many())
        fsyncs = log._group.stats()[0]
        # the log's own 32 waiting threads, not the loop's default executor (6 here)
        assert log._pool is not None
        assert log._pool._max_workers == 32
    assert 1 <= fsyncs < 128
    assert sorted(r["i"] for r in read_records(path)) == list(range(128))


def test_everything_at_once_keeps_one_verifiable_chain(tmp_path: Path) -> None:
    # Two writers of one file (separate open file descriptions, as two processes),
    # threads appending through both, checkpoints by count, by timer and on demand,
    # and a key rotation in the middle: every hand-back path of the native committer
    # runs while records are in flight. Every record must land once, in one chain.
    path = tmp_path / "audit.jsonl"
    keys = {name: tmp_path / f"{name}.pem" for name in ("a1", "a2", "b")}
    for key in keys.values():
        generate_key_file(key)
    a = AuditLog(
        path,
        fsync="never",
        signer=load_signer(keys["a1"]),
        checkpoint_every=13,
        checkpoint_interval=0.05,
    )
    b = AuditLog(path, fsync="always", signer=load_signer(keys["b"]), checkpoint_every=29)
    errors: list[BaseException] = []
    threads = [_appender(a if t % 2 else b, t * 150, 150, errors) for t in range(8)]
    stop = threading.Event()

    def meddle() -> None:
        try:
            n = 0
            while not stop.is_set():
                n += 1
                (a if n % 2 else b).checkpoint()
                if n == 5:
                    a.rotate_key(load_signer(keys["a2"]))
                time.sleep(0.003)
        except BaseException as exc:  # seen by the assertion below
            errors.append(exc)

    meddler = threading.Thread(target=meddle)
    meddler.start()
    _run_threads(threads)
    stop.set()
    meddler.join(30)
    a.close()
    b.close()
    assert not errors, errors
    result = verify_log(path)
    assert result.ok, result
    records = list(read_records(path))
    assert [r["integrity"]["index"] for r in records] == list(range(1200))
    assert sorted(r["i"] for r in records) == list(range(1200))
    signed_by = {r["integrity"]["key"] for r in records}
    assert len(signed_by) == 3  # a's two keys (the rotation happened mid-run) and b's


def test_a_hand_back_that_fails_fails_the_log_and_releases_every_waiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The appender sent to commit a handed-back batch in Python raises: the others
    # waiting on that batch must not wait for ever, and the log must fail closed.
    def broken(self: AuditLog, bodies: list[bytes]) -> None:
        raise RuntimeError("a bug in the Python commit")

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync="always", checkpoint_every=3)  # a hand-back every few
    monkeypatch.setattr(AuditLog, "_commit", broken)
    errors: list[BaseException] = []
    _run_threads([_appender(log, t * 20, 20, errors) for t in range(6)])  # all return
    assert errors  # the appends of the lost batch (and every later one) failed
    assert all(isinstance(e, RuntimeError | AuditError) for e in errors)
    with pytest.raises(AuditError, match="failed earlier"):
        log.check()
    monkeypatch.undo()
    log.close()
    assert verify_log(path).ok  # what was written before is intact


# ---------------------------------------------------------------------- other writers


def _python_takes_in(line: bytes, index: int, prev: bytes) -> bytes | None:
    """The leaf hash `_log.AuditLog._catch_up` / `_apply_record` accept ``line`` with
    as record ``index`` after ``prev``, or None where they refuse it (or, for a
    checkpoint line, take it in some other way)."""
    if line.startswith(CHECKPOINT_PREFIX):
        return None
    try:
        end, m = split_line(line)
    except EntryError:
        return None
    _, h_hex, idx, _, prev_hex, _ = m.groups()
    h = leaf_hash_in_place(line, end, m)
    if int(idx) != index or prev_hex != prev.hex().encode() or h_hex != h.hex().encode():
        return None
    return h


def _native_takes_in(line: bytes, index: int, prev: bytes) -> bytes | None:
    taken = take_in_records(line + b"\n", index, prev)
    if taken is None:
        return None
    hashes, after, newest = taken
    assert (after, newest) == (index + 1, hashes)
    return hashes


def test_other_writers_lines_are_taken_in_natively_exactly_as_python_does(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    rng = random.Random(5)
    with AuditLog(path, fsync="never", native=False) as log:
        log.append({})  # the empty record
        for i in range(60):
            log.append(_random_record(rng, i))
    content = lines(path)
    records = [x.rstrip(b"\n") for x in content if not x.startswith(CHECKPOINT_PREFIX)]
    # every record line chains after the one before it, both ways alike
    prev, chained = bytes(32), []
    for index, line in enumerate(records):
        h = _python_takes_in(line, index, prev)
        assert h is not None
        assert _native_takes_in(line, index, prev) == h
        chained.append(h)
        prev = h
    whole = take_in_records(b"\n".join(records) + b"\n", 0, bytes(32))
    assert whole == (b"".join(chained), len(records), chained[-1])
    # ...and every damaged line is refused by both, or accepted by both with one hash
    alphabet = b'0123456789abcdefABCDEF{}[],:"\\=+/ xyz\n\x00\xff'
    checked = 0
    for _ in range(6000):
        index = rng.randrange(len(records))
        line = bytearray(records[index])
        prev = chained[index - 1] if index else bytes(32)
        at = rng.randrange(len(line))
        kind = rng.randrange(4)
        if kind == 0:
            line[at] = rng.choice(alphabet)
        elif kind == 1:
            del line[at]
        elif kind == 2:
            line.insert(at, rng.choice(alphabet))
        else:  # near the integrity member, where the parsing happens
            tail = len(line) - rng.randrange(1, 300)
            line[max(tail, 0)] = rng.choice(alphabet)
        damaged = bytes(line)
        if b"\n" in damaged:
            continue  # two lines: not one line's question
        wrong_place = rng.random() < 0.1
        expected_index = index + 1 if wrong_place else index
        assert _native_takes_in(damaged, expected_index, prev) == _python_takes_in(
            damaged, expected_index, prev
        ), damaged
        checked += 1
    assert checked > 5000
    # a checkpoint line, a torn last line and an empty line are left to Python
    checkpoint = next(x for x in content if x.startswith(CHECKPOINT_PREFIX))
    assert take_in_records(checkpoint, 0, bytes(32)) is None
    assert take_in_records(records[0], 0, bytes(32)) is None  # no newline: torn
    assert take_in_records(b"\n", 0, bytes(32)) is None


def test_writers_of_one_file_take_in_each_others_records_natively(tmp_path: Path) -> None:
    # Two logs on one file: each batch finds the other's records, takes them in under
    # the lock and chains itself after them, without a hand-back to Python.
    path = tmp_path / "audit.jsonl"
    a = AuditLog(path, fsync="never", checkpoint_every=10_000)
    b = AuditLog(path, fsync="never", checkpoint_every=10_000)
    for i in range(50):
        (a if i % 2 else b).append({"i": i})

    def no_hand_back() -> None:
        raise AssertionError("a batch was handed back to Python")

    for log in (a, b):
        log._take_back = no_hand_back  # type: ignore[method-assign]
    for i in range(50, 100):
        (a if i % 2 else b).append({"i": i})
    assert (a.size, b.size) == (100, 99)  # b has not read a's newest record yet
    a.close()
    b.close()
    result = verify_log(path)
    assert result.ok, result
    assert [r["i"] for r in read_records(path)] == list(range(100))


def test_an_fsync_claims_the_whole_file_only_while_no_writer_holds_its_lock(
    tmp_path: Path,
) -> None:
    # The native syncer claims, in the side file, how far its fsync covered: the file's
    # size read under the log's flock (other writers' complete lines included, so
    # they skip their own fsync) when the flock is free, else only its own lines.
    import fcntl

    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"x" * 100)
    side = tmp_path / "audit.jsonl.synced"
    for held, expected in ((False, 100), (True, 10)):
        side.write_bytes(b"")
        fd = os.open(path, os.O_RDWR)
        st = os.fstat(fd)
        side_fd = os.open(side, os.O_RDWR)
        probe = os.open(path, os.O_RDONLY)
        other = os.open(path, os.O_RDWR)  # another writer (its own open file description)
        if held:
            fcntl.flock(other, fcntl.LOCK_EX)
        group = GroupSync(fd, side_fd, st.st_dev, st.st_ino, probe)
        try:
            group.wait(10)  # this writer's own lines end at 10
            assert synced_count(path) == expected
        finally:
            group.close()  # closes side_fd and probe
            os.close(other)
            os.close(fd)


def test_without_a_usable_side_file_each_append_is_still_fsynced(tmp_path: Path) -> None:
    # A side file that is a symlink is not followed (guarantee 44): the writer then
    # syncs alone, and every append must still wait for its own fsync.
    path = tmp_path / "audit.jsonl"
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep")
    (tmp_path / "audit.jsonl.synced").symlink_to(target)
    with AuditLog(path, fsync="always") as log:
        assert log._core is not None
        assert log._group is not None, "no syncer: appends would return unsynced"
        for i in range(3):
            log.append({"i": i})
        assert log._group.stats()[0] >= 3  # one fsync per append, alone
    assert target.read_bytes() == b"keep"
    assert verify_log(path).ok
