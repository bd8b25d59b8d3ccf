"""Hybrid Ed25519 + ML-DSA-65 checkpoints: both signatures or none. A checkpoint with
one signature missing or forged is refused, and so is a later classical-only checkpoint
(a downgrade) once the log has had a hybrid one or an ML-DSA-65 key is pinned."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from secure_ds import AuditError, ConfigError
from secure_ds.audit import (
    AuditLog,
    PublicKey,
    generate_key_file,
    load_public_key,
    read_records,
    verify_log,
)
from secure_ds.audit._checkpoint import open_note, sign_note
from secure_ds.audit._hybrid import HybridSigner, load_pq_signer
from secure_ds.config import Settings

from ._logs import CHECKPOINT_PREFIX, checkpoint_of_size, lines, make_log, write

DASH = "\u2014"


@pytest.fixture
def keys(tmp_path: Path) -> HybridSigner:
    ed = generate_key_file(tmp_path / "keys" / "ed.pem")
    pq = load_pq_signer(tmp_path / "keys" / "pq.pem", create=True)
    return HybridSigner(ed, pq)


@pytest.fixture
def log(tmp_path: Path, keys: HybridSigner) -> Path:
    path = tmp_path / "audit.jsonl"
    make_log(path, 20, every=8, signer=keys)  # checkpoints at 0, 8, 16, 20
    return path


def pins(tmp_path: Path) -> list[PublicKey]:
    return [load_public_key(tmp_path / "keys" / n) for n in ("ed.pub", "pq.pub")]


def replace_checkpoint(path: Path, size: int, change: object) -> None:
    content = lines(path)
    at = content.index(checkpoint_of_size(content, size))
    cp = json.loads(content[at])
    change(cp["checkpoint"])  # type: ignore[operator]
    content[at] = json.dumps(cp, separators=(",", ":")).encode() + b"\n"
    write(path, content)


def sig_lines(note: str) -> list[str]:
    return [x for x in note.split("\n\n", 1)[1].split("\n") if x]


def test_a_hybrid_log_signs_checkpoints_twice_and_records_once(
    log: Path, keys: HybridSigner, tmp_path: Path
) -> None:
    records = list(read_records(log))
    assert {r["integrity"]["alg"] for r in records} == {"ed25519"}  # records: Ed25519 only
    checkpoints = [
        json.loads(x)["checkpoint"] for x in lines(log) if x.startswith(CHECKPOINT_PREFIX)
    ]
    for cp in checkpoints:
        assert len(sig_lines(cp["note"])) == 2
        assert cp["pq"]["alg"] == "ml-dsa-65"
        assert cp["pq"]["key"] == keys.pq.key_id
        _, verified = open_note(cp["note"], pins(tmp_path))
        assert {k.alg for k in verified} == {"ed25519", "ml-dsa-65"}
    result = verify_log(log)
    assert (result.ok, result.records, result.checkpoints) == (True, 20, len(checkpoints))
    assert verify_log(log, keys=pins(tmp_path)).ok
    assert verify_log(log, keys=pins(tmp_path), jobs=2).ok


def test_a_checkpoint_without_its_ml_dsa_signature_is_refused(log: Path) -> None:
    def drop_pq(cp: dict[str, str]) -> None:
        text, _ = cp["note"].split("\n\n", 1)
        cp["note"] = f"{text}\n\n{sig_lines(cp['note'])[0]}\n"  # the Ed25519 line only

    replace_checkpoint(log, 8, drop_pq)
    result = verify_log(log)
    assert (result.ok, result.reason, result.first_bad_index) == (False, "edited", 8)
    assert "ml-dsa-65 signature" in result.detail


def test_a_forged_ml_dsa_signature_is_refused(log: Path, tmp_path: Path) -> None:
    def forge(cp: dict[str, str]) -> None:
        text, _ = cp["note"].split("\n\n", 1)
        ed_line, pq_line = sig_lines(cp["note"])
        name, blob = pq_line[2:].split(" ")
        raw = bytearray(base64.b64decode(blob))
        raw[40] ^= 1  # a bit of the signature, after the 4-byte key hash
        forged = f"{DASH} {name} {base64.b64encode(bytes(raw)).decode()}"
        cp["note"] = f"{text}\n\n{ed_line}\n{forged}\n"

    replace_checkpoint(log, 16, forge)
    for keys in ([], pins(tmp_path)):
        result = verify_log(log, keys=keys)
        assert (result.ok, result.reason, result.first_bad_index) == (False, "edited", 16)


def test_a_forged_ed25519_signature_is_refused_despite_a_good_ml_dsa_one(log: Path) -> None:
    def forge(cp: dict[str, str]) -> None:
        text, _ = cp["note"].split("\n\n", 1)
        ed_line, pq_line = sig_lines(cp["note"])
        name, blob = ed_line[2:].split(" ")
        raw = bytearray(base64.b64decode(blob))
        raw[10] ^= 1
        forged = f"{DASH} {name} {base64.b64encode(bytes(raw)).decode()}"
        cp["note"] = f"{text}\n\n{forged}\n{pq_line}\n"

    replace_checkpoint(log, 8, forge)
    result = verify_log(log)
    assert (result.ok, result.reason, result.first_bad_index) == (False, "edited", 8)


def test_a_downgraded_checkpoint_is_refused_even_when_ed25519_is_forgeable(
    log: Path, keys: HybridSigner
) -> None:
    # someone who can sign with the Ed25519 key (a future quantum forger) re-signs a
    # later checkpoint without the ML-DSA line and drops its "pq" member
    def downgrade(cp: dict[str, object]) -> None:
        del cp["pq"]
        text = str(cp["note"]).split("\n\n", 1)[0] + "\n"
        from secure_ds.audit._checkpoint import Checkpoint

        parts = text.split("\n")
        checkpoint = Checkpoint(parts[0], int(parts[1]), base64.b64decode(parts[2]), parts[3][5:])
        cp["note"] = sign_note(checkpoint, [keys.classical])

    replace_checkpoint(log, 16, downgrade)
    result = verify_log(log)
    assert (result.ok, result.reason, result.first_bad_index) == (False, "wrong key", 16)
    assert "downgrade" in result.detail


def test_a_pinned_ml_dsa_key_requires_hybrid_checkpoints(
    tmp_path: Path, keys: HybridSigner
) -> None:
    plain = tmp_path / "plain.jsonl"
    make_log(plain, 5, signer=keys.classical)  # the same Ed25519 key, no ML-DSA
    assert verify_log(plain, keys=pins(tmp_path)[:1]).ok
    result = verify_log(plain, keys=pins(tmp_path))
    assert (result.ok, result.reason, result.first_bad_index) == (False, "wrong key", 0)


def test_an_outside_checkpoint_without_ml_dsa_is_refused(log: Path, keys: HybridSigner) -> None:
    cp = json.loads(checkpoint_of_size(lines(log), 16))["checkpoint"]
    assert verify_log(log, checkpoints=[cp["note"]]).ok
    text = cp["note"].split("\n\n", 1)[0]
    classical_only = f"{text}\n\n{sig_lines(cp['note'])[0]}\n"
    result = verify_log(log, checkpoints=[classical_only])
    assert (result.ok, result.reason) == (False, "wrong key")


def test_an_ml_dsa_key_cannot_sign_records(tmp_path: Path, keys: HybridSigner) -> None:
    with pytest.raises(AuditError, match="cannot sign audit records"):
        AuditLog(tmp_path / "a.jsonl", signer=keys.pq)
    with pytest.raises(ValueError, match="ML-DSA-65"):
        HybridSigner(keys.classical, keys.classical)


def test_the_pq_key_setting_makes_the_log_hybrid(tmp_path: Path) -> None:
    pq_path = tmp_path / "keys" / "pq.pem"
    settings = Settings.from_env(
        {
            "SECURE_DS_AUDIT_PATH": str(tmp_path / "audit.jsonl"),
            "SECURE_DS_AUDIT_PQ_KEY": str(pq_path),
            "SECURE_DS_AUDIT_FSYNC": "never",
            "SECURE_DS_TOKEN_PROVIDER": "api-key",
            "DEEPSEEK_API_KEY": "sk-test",
        }
    )
    with AuditLog.from_settings(settings) as log:
        assert isinstance(log.signer, HybridSigner)
        log.append({"event_id": "e0"})
    assert pq_path.exists()  # created on first use, 0600
    assert pq_path.stat().st_mode & 0o077 == 0
    assert verify_log(
        tmp_path / "audit.jsonl",
        keys=[
            load_public_key(Path(str(pq_path).removesuffix(".pem") + ".pub")),
            log.signer.public_key(),
        ],
    ).ok
    ed_key = tmp_path / "keys" / "ed.pem"
    generate_key_file(ed_key)
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"SECURE_DS_AUDIT_PQ_KEY": str(ed_key)})
    assert err.value.variable == "SECURE_DS_AUDIT_PQ_KEY"
