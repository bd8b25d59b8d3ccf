"""``secure-ds audit verify|repair|prove|checkpoint``: exit codes, --json, and proofs that
check out against the log's own signed checkpoints."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from secure_ds.audit import merkle
from secure_ds.cli import main

from ._logs import default_pub, lines, make_log, record_positions, write


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    make_log(path, 20)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_verify_json_of_an_intact_log(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "audit", "verify", str(log), "--json")
    result = json.loads(out)
    assert code == 0
    assert result["ok"] is True
    assert result["records"] == 20
    assert result["first_bad_index"] is None
    assert result["reason"] is None
    code, out = _run(capsys, "audit", "verify", str(log), "--key", str(default_pub()))
    assert code == 0
    assert "OK" in out
    assert "pinned keys" in out


def test_verify_exits_1_naming_the_problem(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    content = lines(log)
    del content[record_positions(content)[7]]
    write(log, content)
    code, out = _run(capsys, "audit", "verify", str(log), "--json")
    result = json.loads(out)
    assert code == 1
    assert (result["ok"], result["reason"], result["first_bad_index"]) == (False, "deleted", 7)
    code, out = _run(capsys, "audit", "verify", str(log), "--chain-only")
    assert code == 1
    assert "deleted at record 7" in out


def test_truncation_with_a_kept_checkpoint(
    log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, note = _run(capsys, "audit", "checkpoint", str(log))
    assert code == 0
    assert note.split("\n")[1] == "20"
    kept = tmp_path / "kept.note"
    kept.write_text(note)
    content = lines(log)
    write(log, content[: record_positions(content)[15]])
    code, out = _run(capsys, "audit", "verify", str(log), "--checkpoint", str(kept), "--json")
    assert code == 1
    assert json.loads(out)["reason"] == "truncated"
    assert json.loads(out)["first_bad_index"] == 15


def test_repair_cuts_a_torn_tail(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with log.open("ab") as f:
        f.write(b'{"event_id":"cut')
    code, out = _run(capsys, "audit", "verify", str(log), "--json")
    assert code == 1
    assert json.loads(out)["reason"] == "torn tail"
    code, out = _run(capsys, "audit", "repair", str(log), "--json")
    assert code == 0
    assert json.loads(out)["removed_bytes"] == len(b'{"event_id":"cut')
    assert _run(capsys, "audit", "verify", str(log))[0] == 0
    assert "nothing changed" in _run(capsys, "audit", "repair", str(log))[1]


def _note_root(note: str) -> bytes:
    return base64.b64decode(note.split("\n")[2])


def test_prove_inclusion_checks_out_against_a_signed_checkpoint(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for index in (0, 5, 15):
        code, out = _run(capsys, "audit", "prove", str(log), "--index", str(index), "--size", "16")
        proof = json.loads(out)
        assert code == 0
        root = _note_root(proof["checkpoint"])  # the log's checkpoint of 16 records
        assert proof["root"] == root.hex()
        assert merkle.verify_inclusion_hash(
            bytes.fromhex(proof["leaf_hash"]),
            index,
            16,
            [bytes.fromhex(h) for h in proof["proof"]],
            root,
        )
    code, out = _run(capsys, "audit", "prove", str(log), "--event-id", "e19")
    assert json.loads(out)["index"] == 19


def test_prove_consistency_between_two_checkpoints(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(capsys, "audit", "prove", str(log), "--old-size", "8")
    proof = json.loads(out)
    assert code == 0
    assert proof["size"] == 20
    assert merkle.verify_consistency(
        8,
        20,
        _note_root(proof["old_checkpoint"]),
        _note_root(proof["checkpoint"]),
        [bytes.fromhex(h) for h in proof["proof"]],
    )


def test_errors_exit_2_and_say_what_to_do(
    tmp_path: Path, log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", str(tmp_path / "nope.jsonl")]) == 2
    assert "Cannot read the audit log" in capsys.readouterr().err
    assert main(["audit", "verify", str(log), "--key", str(tmp_path / "nope.pub")]) == 2
    assert "public key" in capsys.readouterr().err
    assert main(["audit", "prove", str(log), "--index", "20"]) == 2
    assert "index from 0 to 19" in capsys.readouterr().err


def test_tail_shows_the_newest_records(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "audit", "tail", str(log), "-n", "3", "--json")
    assert code == 0
    assert [json.loads(line)["event_id"] for line in out.splitlines()] == ["e17", "e18", "e19"]
    code, out = _run(capsys, "audit", "tail", str(log), "-n", "2")
    assert code == 0
    assert "e19" in out
    assert "e17" not in out
