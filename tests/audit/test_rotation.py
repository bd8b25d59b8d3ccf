"""Key rotation epochs: the old key announces the new one in a checkpoint both sign;
verifiers that trust the old key learn the new one and retire the old one. A key that
was never announced, an announcement by an untrusted key, and the retired key signing
after the rotation are each a ``wrong key``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secure_ds import AuditError
from secure_ds.audit import (
    AuditLog,
    PublicKey,
    Signer,
    generate_key_file,
    load_public_key,
    read_records,
    verify_log,
)
from secure_ds.audit._entry import leaf_data, leaf_hash_of, parse_line, render_line
from secure_ds.audit._hybrid import HybridSigner, load_pq_signer
from secure_ds.cli import main
from tests._services import SOFTHSM_MODULE, SOFTHSM_PIN, SOFTHSM_TOKEN, require_softhsm

from ._logs import CHECKPOINT_PREFIX, lines, record_positions, write


def append(log: AuditLog, start: int, n: int) -> None:
    for i in range(start, start + n):
        log.append({"event_id": f"e{i}", "i": i})


def rotated_log(tmp_path: Path, new: Signer | None = None) -> tuple[Path, Signer, Signer]:
    """10 records by the old key, a rotation, 10 by the new one."""
    old = generate_key_file(tmp_path / "keys" / "old.pem")
    new = new or generate_key_file(tmp_path / "keys" / "new.pem")
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync="never", signer=old, checkpoint_every=4) as log:
        append(log, 0, 10)
        rotation = log.rotate_key(new)["checkpoint"]
        assert rotation["rotate"]["from"] == old.key_id
        assert [k["key"] for k in rotation["rotate"]["keys"]] == [new.key_id]
        append(log, 10, 10)
    return path, old, new


def old_pub(tmp_path: Path) -> list[PublicKey]:
    return [load_public_key(tmp_path / "keys" / "old.pub")]


def test_a_rotated_log_verifies_with_the_old_key_pinned(tmp_path: Path) -> None:
    path, old, new = rotated_log(tmp_path)
    keys = [r["integrity"]["key"] for r in read_records(path)]
    assert keys == [old.key_id] * 10 + [new.key_id] * 10
    for pinned in ([], old_pub(tmp_path)):
        result = verify_log(path, keys=pinned)
        assert (result.ok, result.records, result.rotations) == (True, 20, 1), result.detail
        assert set(result.keys) == {old.key_id, new.key_id}
    assert verify_log(path, keys=old_pub(tmp_path), jobs=2).ok
    # the rotation note signs the new key's epoch line and public key
    rotation = next(json.loads(x)["checkpoint"] for x in lines(path) if b'"rotate":' in x)
    assert f"epoch {new.key_id} previous {old.key_id}\n" in rotation["note"]
    # a writer reopening the file with the new key continues the chain
    with AuditLog(path, fsync="never", signer=new) as log:
        append(log, 20, 3)
    assert verify_log(path, keys=old_pub(tmp_path)).records == 23


def test_a_record_by_a_key_never_announced_is_a_wrong_key(tmp_path: Path) -> None:
    path, _old, _ = rotated_log(tmp_path)
    intruder = generate_key_file(tmp_path / "keys" / "intruder.pem")
    with AuditLog(path, fsync="never", signer=intruder) as log:  # announces itself only
        append(log, 20, 2)
    result = verify_log(path, keys=old_pub(tmp_path))
    assert (result.ok, result.reason, result.first_bad_index) == (False, "wrong key", 20)
    # and without its self-announcing checkpoint, even unpinned
    content = [
        x
        for x in lines(path)
        if not (x.startswith(CHECKPOINT_PREFIX) and intruder.key_id.encode() in x)
    ]
    write(path, content)
    result = verify_log(path)
    assert (result.ok, result.reason, result.first_bad_index) == (False, "wrong key", 20)


def test_an_announcement_signed_by_an_untrusted_key_is_refused(tmp_path: Path) -> None:
    path, _, _new = rotated_log(tmp_path)
    intruder = generate_key_file(tmp_path / "keys" / "intruder.pem")
    successor = generate_key_file(tmp_path / "keys" / "successor.pem")
    with AuditLog(path, fsync="never", signer=intruder) as log:
        log.rotate_key(successor)  # the intruder "rotates" to a key of its choosing
        append(log, 20, 2)
    # remove the intruder's self-announcement: its rotation is signed by a key nobody trusts
    content = lines(path)
    content = [
        x
        for x in content
        if not (
            x.startswith(CHECKPOINT_PREFIX)
            and b'"rotate":' not in x
            and json.loads(x)["checkpoint"]["key"] == intruder.key_id
        )
    ]
    write(path, content)
    for pinned in ([], old_pub(tmp_path)):
        result = verify_log(path, keys=pinned)
        assert (result.ok, result.reason, result.first_bad_index) == (False, "wrong key", 20)
        assert intruder.key_id in result.detail


def test_the_retired_key_signs_nothing_after_the_rotation(tmp_path: Path) -> None:
    path, old, _ = rotated_log(tmp_path)
    content = lines(path)
    at = record_positions(content)[15]
    entry = parse_line(content[at][:-1])
    data = leaf_data(old.alg, 15, old.key_id, entry.prev, entry.body)
    content[at] = render_line(
        entry.body,
        alg=old.alg,
        leaf_hash=leaf_hash_of(data),
        index=15,
        key=old.key_id,
        prev=entry.prev,
        sig=old.sign(data),
    )
    write(path, content)
    for pinned in ([], old_pub(tmp_path)):
        result = verify_log(path, keys=pinned)
        assert (result.ok, result.reason, result.first_bad_index) == (False, "wrong key", 15)
        assert "retired" in result.detail


def test_a_writer_holding_the_retired_key_fails_closed(tmp_path: Path) -> None:
    old = generate_key_file(tmp_path / "keys" / "old.pem")
    new = generate_key_file(tmp_path / "keys" / "new.pem")
    path = tmp_path / "audit.jsonl"
    with (
        AuditLog(path, fsync="never", signer=old) as a,
        AuditLog(path, fsync="never", signer=old) as b,
    ):
        append(a, 0, 2)
        append(b, 2, 2)
        a.rotate_key(new)
        with pytest.raises(AuditError, match="rotated away"):
            AuditLog(path, signer=old)  # opening: the newest checkpoint retires it
        append(a, 4, 2)
        with pytest.raises(AuditError, match="rotated away"):
            append(b, 6, 1)  # catching up: it reads the rotation
    assert verify_log(path, keys=old_pub(tmp_path)).ok


def test_an_edited_announcement_is_refused(tmp_path: Path) -> None:
    path, _, _ = rotated_log(tmp_path)
    other = generate_key_file(tmp_path / "keys" / "other.pem")
    content = lines(path)
    at = next(i for i, x in enumerate(content) if b'"rotate":' in x)
    cp = json.loads(content[at])
    entry = cp["checkpoint"]["rotate"]["keys"][0]
    entry["key"] = other.key_id
    entry["public_key"] = __import__("base64").b64encode(other.public_key_der).decode()
    content[at] = json.dumps(cp, separators=(",", ":")).encode() + b"\n"
    write(path, content)
    result = verify_log(path, keys=old_pub(tmp_path))
    assert (result.ok, result.reason, result.first_bad_index) == (False, "edited", 10)


def test_rotation_refuses_the_same_key_and_a_hybrid_downgrade(tmp_path: Path) -> None:
    old = generate_key_file(tmp_path / "keys" / "old.pem")
    pq = load_pq_signer(tmp_path / "keys" / "pq.pem", create=True)
    with AuditLog(tmp_path / "a.jsonl", fsync="never", signer=HybridSigner(old, pq)) as log:
        with pytest.raises(AuditError, match="already signed"):
            log.rotate_key(old)
        with pytest.raises(AuditError, match="downgrade"):
            log.rotate_key(generate_key_file(tmp_path / "keys" / "new.pem"))
        pq2 = load_pq_signer(tmp_path / "keys" / "pq2.pem", create=True)
        log.rotate_key(HybridSigner(generate_key_file(tmp_path / "keys" / "new2.pem"), pq2))
        append(log, 0, 3)
    pinned = [load_public_key(tmp_path / "keys" / n) for n in ("old.pub", "pq.pub")]
    result = verify_log(tmp_path / "a.jsonl", keys=pinned)
    assert (result.ok, result.rotations) == (True, 1), result.detail


@pytest.mark.integration
def test_rotation_from_a_software_key_to_an_hsm_key(tmp_path: Path) -> None:
    state = require_softhsm()
    from secure_ds.audit._pkcs11 import Pkcs11Signer

    hsm = Pkcs11Signer(
        module=SOFTHSM_MODULE, token_label=SOFTHSM_TOKEN, key_label="audit-p256", pin=SOFTHSM_PIN
    )
    try:
        path, _old, _ = rotated_log(tmp_path, new=hsm)
    finally:
        hsm.close()
    records = list(read_records(path))
    assert {r["integrity"]["alg"] for r in records[10:]} == {"ecdsa-p256"}
    result = verify_log(path, keys=old_pub(tmp_path))  # only the software key pinned
    assert (result.ok, result.records, result.rotations) == (True, 20, 1), result.detail
    assert load_public_key(state / "audit-p256.pub").key_id in result.keys


def test_the_cli_rotates_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = generate_key_file(tmp_path / "keys" / "old.pem")
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync="never", signer=old) as log:
        append(log, 0, 3)
    new_key = tmp_path / "keys" / "new.pem"
    old_key = str(tmp_path / "keys" / "old.pem")
    argv = ["audit", "rotate-key", str(path), "--key", old_key, "--new-key", str(new_key)]
    assert main([*argv, "--json"]) == 0
    rotation = json.loads(capsys.readouterr().out)["checkpoint"]
    assert rotation["rotate"]["from"] == old.key_id
    assert new_key.exists()
    assert main(argv) == 2  # the old key is retired now: refused, with a clear error
    assert "rotated away" in capsys.readouterr().err
    with AuditLog(path, fsync="never", signer=generate_key_file(new_key)) as log:
        append(log, 3, 2)
    pub = str(tmp_path / "keys" / "old.pub")
    assert main(["audit", "verify", str(path), "--key", pub, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["ok"], result["records"], result["rotations"]) == (True, 5, 1)
