"""verify_log finds every kind of tampering, at the right position; repair cuts only a
torn tail."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from secure_ds.audit import (
    AuditLog,
    generate_key_file,
    is_checkpoint_line,
    load_public_key,
    read_records,
    repair_log,
    verify_log,
)
from secure_ds.audit._entry import leaf_data, leaf_hash_of, parse_line, render_line

from ._logs import checkpoint_of_size, default_pub, lines, make_log, record_positions, write


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    make_log(path)
    return path


def _both_modes(path: Path, **kwargs: object) -> list[object]:
    full = verify_log(path, **kwargs)  # type: ignore[arg-type]
    chain = verify_log(path, signatures=False, **kwargs)  # type: ignore[arg-type]
    return [(r.ok, r.reason, r.first_bad_index) for r in (full, chain)]


def test_an_intact_log_verifies_in_both_modes(log: Path) -> None:
    result = verify_log(log)
    assert result.ok
    assert result.reason is None
    assert result.first_bad_index is None
    assert result.records == 20
    assert result.checkpoints == 4  # created, 8, 16, close (20)
    assert result.unsealed == 0
    assert not result.keys_pinned
    assert len(result.keys) == 1
    assert verify_log(log, signatures=False).ok
    pinned = verify_log(log, keys=[load_public_key(default_pub())])
    assert pinned.ok
    assert pinned.keys_pinned
    assert [r["i"] for r in read_records(log)] == list(range(20))
    content = lines(log)
    assert [is_checkpoint_line(x) for x in content].count(True) == 4
    assert is_checkpoint_line(content[0].decode())
    assert not is_checkpoint_line(content[1].decode())


def test_an_edited_record_is_found_at_its_index(log: Path) -> None:
    content = lines(log)
    at = record_positions(content)[5]
    content[at] = content[at].replace(b'"i":5', b'"i":6')
    write(log, content)
    assert _both_modes(log) == [(False, "edited", 5)] * 2
    result = verify_log(log)
    assert result.line == at + 1
    assert result.records == 5


def test_an_edit_with_its_hash_recomputed_is_still_found(log: Path) -> None:
    content = lines(log)
    at = record_positions(content)[5]
    entry = parse_line(content[at][:-1])
    body = entry.body.replace(b'"outcome":"permit"', b'"outcome":"deny"')
    h = leaf_hash_of(leaf_data(entry.alg, entry.index, entry.key, entry.prev, body))
    content[at] = render_line(
        body, alg=entry.alg, leaf_hash=h, index=5, key=entry.key, prev=entry.prev, sig=entry.sig
    )
    write(log, content)
    # the signature gives it away; without signatures the next record's chain link does
    assert _both_modes(log) == [(False, "edited", 5)] * 2


def test_reordered_records_are_found(log: Path) -> None:
    content = lines(log)
    a, b = record_positions(content)[5:7]
    content[a], content[b] = content[b], content[a]
    write(log, content)
    assert _both_modes(log) == [(False, "reordered", 5)] * 2


def test_a_deleted_record_is_found(log: Path) -> None:
    content = lines(log)
    del content[record_positions(content)[5]]
    write(log, content)
    assert _both_modes(log) == [(False, "deleted", 5)] * 2


def test_the_newest_records_deleted_before_a_kept_checkpoint_are_found(log: Path) -> None:
    content = lines(log)
    positions = record_positions(content)
    del content[positions[18] : positions[19] + 1]  # records 18, 19; the close checkpoint stays
    write(log, content)
    assert _both_modes(log) == [(False, "deleted", 18)] * 2


def test_a_replayed_record_is_found_as_inserted(log: Path) -> None:
    content = lines(log)
    positions = record_positions(content)
    content.insert(positions[6], content[positions[3]])  # a copy of record 3 before record 6
    write(log, content)
    assert _both_modes(log) == [(False, "inserted", 6)] * 2


def test_a_forged_record_is_found_as_inserted(log: Path) -> None:
    content = lines(log)
    positions = record_positions(content)
    real = parse_line(content[positions[6]][:-1])
    body = b'{"event_id":"forged","i":-1}'
    h = leaf_hash_of(leaf_data(real.alg, 6, real.key, real.prev, body))
    forged = render_line(
        body, alg=real.alg, leaf_hash=h, index=6, key=real.key, prev=real.prev, sig=bytes(64)
    )
    content.insert(positions[6], forged)
    write(log, content)
    assert verify_log(log).reason == "inserted"
    assert verify_log(log).first_bad_index == 6
    content.insert(positions[6], b'{"event_id":"junk"}\n')  # and a line that is not signed
    write(log, content)
    assert _both_modes(log)[0] == (False, "inserted", 6)


def test_truncation_is_found_with_a_checkpoint_kept_elsewhere(log: Path) -> None:
    content = lines(log)
    kept = checkpoint_of_size(content, 20).decode()  # e.g. shipped to the SIEM
    positions = record_positions(content)
    write(log, content[: positions[12]])  # the newest 8 records and 2 checkpoints gone
    # the file alone looks like a log whose writer stopped: only the outside copy tells
    alone = verify_log(log)
    assert alone.ok
    assert alone.records == 12
    assert alone.unsealed == 4
    assert _both_modes(log, checkpoints=[kept]) == [(False, "truncated", 12)] * 2
    note = json.loads(kept)["checkpoint"]["note"]  # the bare signed note works too
    assert verify_log(log, checkpoints=[note]).reason == "truncated"


def test_an_outside_checkpoint_of_an_intact_log_passes_and_a_rewrite_fails(log: Path) -> None:
    content = lines(log)
    kept = checkpoint_of_size(content, 8).decode()
    assert verify_log(log, checkpoints=[kept]).external_checkpoints == 1
    # rewritten wholesale by someone with their own key: the file verifies by itself...
    other = log.parent / "other" / "audit.jsonl"
    make_log(other, 20, signer=generate_key_file(log.parent / "other" / "key.pem"))
    other_kept = checkpoint_of_size(lines(other), 8).decode()
    assert verify_log(other).ok
    # ...but not against the outside checkpoint of the original, nor the pinned key
    assert not verify_log(other, checkpoints=[kept]).ok
    pinned = load_public_key(default_pub())
    assert _both_modes(other, keys=[pinned]) == [(False, "wrong key", 0)] * 2
    assert not verify_log(log, checkpoints=[other_kept]).ok


def test_a_record_signed_with_another_key_is_found(log: Path, tmp_path: Path) -> None:
    intruder = generate_key_file(tmp_path / "intruder" / "key.pem")
    content = lines(log)
    at = record_positions(content)[5]
    entry = parse_line(content[at][:-1])
    body = entry.body.replace(b'"outcome":"permit"', b'"outcome":"deny"')
    data = leaf_data(intruder.alg, 5, intruder.key_id, entry.prev, body)
    content[at] = render_line(
        body,
        alg=intruder.alg,
        leaf_hash=leaf_hash_of(data),
        index=5,
        key=intruder.key_id,
        prev=entry.prev,
        sig=intruder.sign(data),
    )
    write(log, content)
    assert _both_modes(log) == [(False, "wrong key", 5)] * 2


def test_a_torn_tail_is_reported_and_repair_cuts_only_it(log: Path) -> None:
    intact = log.read_bytes()
    assert repair_log(log).removed_bytes == 0
    assert log.read_bytes() == intact
    log.write_bytes(intact + b'{"event_id":"e20","i":2')  # a write cut off by a crash
    result = verify_log(log)
    assert (result.ok, result.reason, result.first_bad_index) == (False, "torn tail", 20)
    assert repair_log(log).removed_bytes == len(b'{"event_id":"e20","i":2')
    assert log.read_bytes() == intact
    assert verify_log(log).ok


def test_repair_leaves_other_problems_alone(log: Path) -> None:
    content = lines(log)
    del content[record_positions(content)[3]]
    write(log, content)
    before = log.read_bytes()
    assert repair_log(log).removed_bytes == 0
    assert log.read_bytes() == before
    assert verify_log(log).reason == "deleted"


def test_an_edited_checkpoint_is_found(log: Path) -> None:
    content = lines(log)
    at = content.index(checkpoint_of_size(content, 8))
    cp = json.loads(content[at])
    cp["checkpoint"]["size"] = 7
    content[at] = json.dumps(cp, separators=(",", ":")).encode() + b"\n"
    write(log, content)
    assert _both_modes(log) == [(False, "edited", 7)] * 2


def test_a_checkpoint_signed_with_a_foreign_key_fails_against_pinned_keys(
    log: Path, tmp_path: Path
) -> None:
    pinned = load_public_key(default_pub())
    other = tmp_path / "o" / "audit.jsonl"
    make_log(other, 8, every=8, signer=generate_key_file(tmp_path / "o" / "key.pem"))
    content = lines(log)
    foreign = checkpoint_of_size(lines(other), 8)
    at = content.index(checkpoint_of_size(content, 8))
    content[at] = foreign
    write(log, content)
    result = verify_log(log, keys=[pinned])
    assert (result.reason, result.first_bad_index) == ("wrong key", 8)
    assert not verify_log(log).ok  # unpinned: a checkpoint of another log's records


def test_ecdsa_p256_logs_verify_against_their_pinned_key(tmp_path: Path) -> None:
    signer = generate_key_file(tmp_path / "keys" / "p256.pem", alg="ecdsa-p256")
    path = tmp_path / "audit.jsonl"
    make_log(path, 10, signer=signer)
    assert json.loads(lines(path)[1])["integrity"]["alg"] == "ecdsa-p256"
    result = verify_log(path, keys=[load_public_key(tmp_path / "keys" / "p256.pub")])
    assert result.ok
    assert result.records == 10
    sig = base64.b64decode(json.loads(lines(path)[1])["integrity"]["sig"])
    assert sig[0] == 0x30  # DER


def test_an_unreadable_log_is_an_audit_error(tmp_path: Path) -> None:
    from secure_ds import AuditError

    with pytest.raises(AuditError, match="Cannot read"):
        verify_log(tmp_path / "missing.jsonl")


def test_the_log_api_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync="never") as log:
        log.append({"a": 1})
        cp = log.checkpoint()["checkpoint"]
        assert cp["size"] == 1
        assert cp["origin"] == log.origin
    assert verify_log(path).checkpoints == 2


def _bad_signature(content: list[bytes], index: int) -> None:
    """Record ``index`` keeps its chain and hash; only its signature is wrong."""
    at = record_positions(content)[index]
    entry = parse_line(content[at][:-1])
    content[at] = render_line(
        entry.body,
        alg=entry.alg,
        leaf_hash=entry.hash,
        index=index,
        key=entry.key,
        prev=entry.prev,
        sig=bytes(64),
    )


def test_parallel_signature_checks_give_the_sequential_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from secure_ds.audit import _verify

    monkeypatch.setattr(_verify, "_PARALLEL_MIN_BYTES", 0)
    # pytest's process has threads, so verify_log would spawn (each worker importing
    # secure_ds); fork keeps the test quick and checks the same code
    monkeypatch.setattr(_verify, "_START_METHOD", "fork")
    path = tmp_path / "audit.jsonl"
    make_log(path, 60, every=16)
    assert verify_log(path, jobs=3).ok
    assert verify_log(path, jobs=3).records == 60
    content = lines(path)
    for n, (old, new) in enumerate(((b'"i":41', b'"i":42'), (b'"latency_ms":1.5', b'"x":1'))):
        at = record_positions(content)[41 - n * 30]
        content[at] = content[at].replace(old, new)
        write(path, content)
        sequential = verify_log(path)
        parallel = verify_log(path, jobs=3)
        assert (parallel.reason, parallel.first_bad_index) == (
            sequential.reason,
            sequential.first_bad_index,
        )
    assert verify_log(path, jobs=3).first_bad_index == 11
    # only the signature is wrong: the chain walk passes, a worker finds it, wherever
    # the record sits in the worker's range
    for bad in (5, 29, 50, 59):
        path2 = tmp_path / f"sig-{bad}.jsonl"
        make_log(path2, 60, every=16)
        content = lines(path2)
        _bad_signature(content, bad)
        write(path2, content)
        assert verify_log(path2, signatures=False).ok
        parallel = verify_log(path2, jobs=3)
        assert (parallel.ok, parallel.reason, parallel.first_bad_index) == (False, "edited", bad)


def test_the_in_place_leaf_hash_equals_the_leaf_hash_of_the_leaf_data(tmp_path: Path) -> None:
    from secure_ds.audit._entry import leaf_hash_in_place, split_line

    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync="never") as log:
        log.append({})
        log.append({"event_id": "x", "n": [1.5, "é", {"k": None}]})
    for line in lines(path):
        if line.startswith(b'{"checkpoint":'):
            continue
        entry = parse_line(line[:-1])
        end, m = split_line(line[:-1])
        assert leaf_hash_in_place(line[:-1], end, m) == leaf_hash_of(entry.leaf_data())
        assert leaf_hash_of(entry.leaf_data()) == entry.hash


def test_leaf_data_rebuilt_from_a_line_equals_the_signed_leaf_data(tmp_path: Path) -> None:
    from secure_ds.audit._entry import leaf_data_of, split_line

    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync="never") as log:
        log.append({})
        log.append({"event_id": "y", "v": -0.0})
    for line in lines(path):
        if not line.startswith(b'{"checkpoint":'):
            end, m = split_line(line[:-1])
            assert leaf_data_of(line[:-1], end, m) == parse_line(line[:-1]).leaf_data()


@pytest.mark.parametrize(("records", "max_bytes"), [(4, 4 << 20), (10_000, 1500)])
def test_signatures_checked_on_threads_give_the_in_line_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, records: int, max_bytes: int
) -> None:
    # verify_log checks record signatures on threads by default; whatever is wrong, and
    # wherever, the answer must be the one the in-line walk (threads=0) gives. Small
    # batches (cut by record count, or by bytes of leaf data), so that a 60-record log
    # spans many of them and reaches the in-flight limit.
    from secure_ds.audit import _verify

    monkeypatch.setattr(_verify, "_SIGNATURE_BATCH", records)
    monkeypatch.setattr(_verify, "_SIGNATURE_BATCH_BYTES", max_bytes)
    cases: dict[str, list[int]] = {
        "intact": [],
        "signature at 0": [0],
        "signature at 29": [29],
        "signature at 59": [59],
        "two signatures": [17, 40],
    }
    for name, bad in cases.items():
        path = tmp_path / f"{name.replace(' ', '-')}.jsonl"
        make_log(path, 60, every=16)
        content = lines(path)
        for index in bad:
            _bad_signature(content, index)
        write(path, content)
        in_line = verify_log(path, threads=0).as_json()
        for threads in (1, 2, 3):
            assert verify_log(path, threads=threads).as_json() == in_line, (name, threads)
        assert in_line["ok"] is (not bad)
        if bad:
            assert (in_line["reason"], in_line["first_bad_index"]) == ("edited", bad[0])
    # a bad signature before a broken chain link: the signature is the first problem
    path = tmp_path / "both.jsonl"
    make_log(path, 60, every=16)
    content = lines(path)
    _bad_signature(content, 10)
    at = record_positions(content)[45]
    content[at] = content[at].replace(b'"i":45', b'"i":46')
    write(path, content)
    threaded = verify_log(path, threads=2)
    assert threaded.as_json() == verify_log(path, threads=0).as_json()
    assert (threaded.reason, threaded.first_bad_index) == ("edited", 10)
    # and a broken chain link with every signature before it good: named at the link
    good = tmp_path / "chain-only.jsonl"
    make_log(good, 60, every=16)
    fresh = lines(good)
    at = record_positions(fresh)[45]
    fresh[at] = fresh[at].replace(b'"i":45', b'"i":46')
    write(good, fresh)
    assert verify_log(good, threads=2).as_json() == verify_log(good, threads=0).as_json()
    assert verify_log(good, threads=2).first_bad_index == 45
