"""``secure-ds dlp scan``: JSON shape, exit codes, masking, stdin, invalid UTF-8."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from secure_ds.cli import _dlp

from . import _values as v


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="secure-ds")
    _dlp.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.handler is _dlp.run
    return _dlp.run(args)


SAMPLE = "Hi, I am Jane (jane.doe@example.com), card 4111 1111 1111 1111, key {key}\n"


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, str, str]:
    key = v.openai_key()
    text = SAMPLE.format(key=key)
    path = tmp_path / "prompt.txt"
    path.write_text(text, encoding="utf-8")
    return path, text, key


def test_json_shape_exactly(
    sample: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, text, key = sample
    assert _run(["dlp", "scan", str(path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"findings", "classification"}
    assert out["classification"] == "secret"
    assert [set(f) for f in out["findings"]] == [{"kind", "start", "end", "confidence"}] * 3
    assert [(f["kind"], text[f["start"] : f["end"]]) for f in out["findings"]] == [
        ("email", "jane.doe@example.com"),
        ("credit_card", "4111 1111 1111 1111"),
        ("api_key", key),
    ]
    assert all(0 < f["confidence"] <= 1 for f in out["findings"])


def test_exit_zero_when_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "clean.txt"
    path.write_text("nothing sensitive here, version 1.2.3.4 on 127.0.0.1\n")
    assert _run(["dlp", "scan", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"findings": [], "classification": "public"}
    assert _run(["dlp", "scan", str(path)]) == 0
    assert "No sensitive data found" in capsys.readouterr().out


def test_table_masks_every_value(
    sample: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, key = sample
    assert _run(["dlp", "scan", str(path)]) == 1
    out = capsys.readouterr().out
    for kind in ("email", "credit_card", "api_key"):
        assert kind in out
    assert "ja***@***.com" in out
    assert "jane.doe" not in out
    assert "1111 1111" not in out
    for piece in (key, key[3:12], key[-6:]):
        assert piece not in out


@pytest.mark.parametrize(
    ("kind", "value", "preview"),
    [
        ("email", "jane.doe@example.com", "ja***@***.com"),
        ("credit_card", "4111 1111 1111 1111", "***11"),
        ("phone", "+44 20 7946 0958", "***58"),
        ("ip_address", "192.168.1.20", "192.***"),
        (
            "private_key",
            "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
            "-----BEGIN ***",
        ),
        ("secret", "Tr0ub4dor&3x", "Tr***"),
    ],
)
def test_mask(kind: str, value: str, preview: str) -> None:
    assert _dlp.mask(kind, value) == preview


def test_dash_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"call (415) 555-0132 please"))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert _run(["dlp", "scan", "-", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "findings": [{"kind": "phone", "start": 5, "end": 19, "confidence": 0.9}],
        "classification": "confidential",
    }


def test_invalid_utf8_is_replaced_and_offsets_are_characters(tmp_path: Path) -> None:
    raw = (
        b"\xff\xfe bad \xc3( bytes \xed\xa0\x80 caf\xc3\xa9 \xe2\x82\xac "
        b"then jane.doe@example.com\n"
    )
    script = (
        "import argparse, sys\n"
        "from secure_ds.cli import _dlp\n"
        "p = argparse.ArgumentParser()\n"
        "_dlp.register(p.add_subparsers(dest='command'))\n"
        "sys.exit(_dlp.run(p.parse_args(['dlp', 'scan', '-', '--json'])))\n"
    )
    out = subprocess.run(  # noqa: S603 (our own code, fixed arguments)
        [sys.executable, "-c", script], input=raw, capture_output=True, timeout=60, check=False
    )
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    decoded = raw.decode("utf-8", errors="replace")
    (finding,) = report["findings"]
    assert decoded[finding["start"] : finding["end"]] == "jane.doe@example.com"
    assert finding["start"] != raw.index(b"jane")  # characters, not bytes


def test_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["dlp", "scan", str(tmp_path / "missing.txt")]) == 2
    assert "Cannot read" in capsys.readouterr().err
    bad = tmp_path / "dlp.toml"
    bad.write_text("[[pattern]]\nname = 'employee_id'\nregex = '('\nclassification = 'internal'\n")
    text = tmp_path / "t.txt"
    text.write_text("EMP-1")
    assert _run(["dlp", "scan", str(text), "--config", str(bad)]) == 2
    assert "pattern 'employee_id'" in capsys.readouterr().err


def test_config_rules_apply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "dlp.toml"
    config.write_text(
        "[[pattern]]\nname = 'employee_id'\nregex = 'EMP-[0-9]{6}'\n"
        "classification = 'confidential'\n"
    )
    text = tmp_path / "t.txt"
    text.write_text("ask EMP-004211 about it")
    assert _run(["dlp", "scan", str(text), "--config", str(config), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["findings"] == [{"kind": "employee_id", "start": 4, "end": 14, "confidence": 0.9}]


def test_help_says_how_bytes_are_decoded(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _run(["dlp", "scan", "--help"])
    assert "errors='replace'" in capsys.readouterr().out
