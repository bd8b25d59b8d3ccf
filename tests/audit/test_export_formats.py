"""``secure-ds audit export``: JSON lines, CSV and CEF from a verified log, with hostile
values escaped, written atomically, and a tampered log refused."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from secure_ds import SecureDeepSeek
from secure_ds.audit import AuditLog, export_log, read_records
from secure_ds.audit._export import CSV_COLUMNS, _cef_header, cef_line, csv_row, parse_time
from secure_ds.cli import main
from secure_ds.errors import AuditError, LogNotVerified
from secure_ds.sandbox import Sandbox

from ._logs import CHECKPOINT_PREFIX, lines, record_positions, write

HOSTILE = [
    '=HYPERLINK("http://evil","x")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A2)",
    "\tleading tab",
    "\rleading cr",
    'quote " and, comma',
    "line one\nline two\r\nthree",
    "back\\slash = equals | pipe",
]


def _record(i: int, subject: str, *, time: str = "2026-11-28T10:00:00.000Z") -> dict[str, Any]:
    return {
        "schema": "secure-ds.audit/1",
        "event_id": f"0190-{i}",
        "time": time,
        "trace_id": f"{i:032x}",
        "outcome": "deny" if i % 2 else "permit",
        "action": "chat",
        "actor": {"subject": subject, "auth": "jwt", "token_jti": "j", "cert_sha256": "c"},
        "request": {
            "method": "POST",
            "endpoint": "https://api.example",
            "path": "/chat/completions",
            "model": "deepseek-flash",
            "model_requested": subject,
            "body_sha256": "a" * 64,
            "body_bytes": 120,
        },
        "classify": {"classification": "internal", "findings": [{"kind": "email", "count": 2}]},
        "decide": {
            "effect": "deny" if i % 2 else "permit",
            "policies": [subject, "p2"],
            "obligations": [],
            "revision": "r1",
            "reason": subject,
            "denied_by": None,
        },
        "attempts": [{"ms": 1.0, "status": 200}],
        "response": {
            "status": 200,
            "body_sha256": "b" * 64,
            "body_bytes": 300,
            "usage": {"prompt_tokens": 11, "completion_tokens": 22},
        },
        "cost": {"usd": 0.000123},
        "latency_ms": 12.5,
        "error": {"type": "PolicyDenied", "message": subject} if i % 2 else None,
    }


@pytest.fixture
def hostile_log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync="never", checkpoint_every=4) as log:
        for i, value in enumerate(HOSTILE):
            log.append(_record(i, value, time=f"2026-11-28T1{i}:00:00.000Z"))
    return path


def _export(path: Path, fmt: str, **kw: Any) -> str:
    out = io.StringIO()
    export_log(path, fmt=fmt, out=out, **kw)  # type: ignore[arg-type]
    return out.getvalue()


# ---------------------------------------------------------------------- JSON lines


def test_jsonl_is_the_records_canonical_bytes_without_checkpoints(hostile_log: Path) -> None:
    content = lines(hostile_log)
    assert any(line.startswith(CHECKPOINT_PREFIX) for line in content)
    out = _export(hostile_log, "jsonl").encode()
    exported = out.splitlines(keepends=True)
    records = [content[n] for n in record_positions(content)]
    assert len(exported) == len(records) == len(HOSTILE)
    for line, original in zip(exported, records, strict=True):
        # the record's own canonical JSON: the log line up to its integrity member
        assert original.startswith(line[:-2] + b',"integrity":{')
        assert "integrity" not in json.loads(line)
    with_integrity = _export(hostile_log, "jsonl", integrity=True).encode()
    assert with_integrity == b"".join(records)  # byte for byte: signatures checkable


def test_since_and_until_select_by_record_time(hostile_log: Path) -> None:
    out = _export(
        hostile_log,
        "jsonl",
        since=parse_time("2026-11-28T12:00:00Z"),
        until=parse_time("2026-11-28T15:00:00"),  # no zone: UTC
    )
    assert [json.loads(x)["event_id"] for x in out.splitlines()] == ["0190-2", "0190-3", "0190-4"]
    assert parse_time("2026-11-28") == datetime(2026, 11, 28, tzinfo=UTC)
    with pytest.raises(AuditError, match="not an ISO 8601"):
        parse_time("yesterday")


# ---------------------------------------------------------------------- CSV


def test_csv_has_a_header_quotes_everything_and_guards_formulas(hostile_log: Path) -> None:
    out = _export(hostile_log, "csv")
    assert out.startswith('"index","event_id","time"')
    assert "\r\n" in out
    rows = list(csv.reader(io.StringIO(out, newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    body = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]
    assert len(body) == len(HOSTILE)
    for row, value in zip(body, HOSTILE, strict=True):
        expected = "'" + value if value[0] in "=+-@\t\r" else value
        assert row["subject"] == expected
        assert row["model_requested"] == expected
        assert row["policies"] == f"{expected};p2"
        # no cell a spreadsheet would run as a formula
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row.values())
    first = body[0]
    assert first["input_tokens"] == "11"
    assert first["output_tokens"] == "22"
    assert first["cost_usd"] == "0.000123"
    assert first["dlp_findings"] == "email:2"
    assert first["status"] == "200"
    assert first["index"] == "0"
    assert first["request_sha256"] == "a" * 64
    assert body[1]["error_type"] == "PolicyDenied"
    assert body[1]["decision"] == "deny"


def test_csv_numbers_stay_numbers() -> None:
    record = _record(0, "alice")
    record["latency_ms"] = -1.5  # a number, even negative, is not a formula
    row = dict(zip(CSV_COLUMNS, csv_row(record), strict=True))
    assert row["latency_ms"] == "-1.5"


# ---------------------------------------------------------------------- CEF


def _parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """A strict reader of one CEF line: 7 header fields split on unescaped pipes, then
    key=value pairs whose values are unescaped (\\\\, \\=, \\n, \\r)."""
    assert "\n" not in line
    assert "\r" not in line
    header: list[str] = []
    field, i = "", 0
    while len(header) < 7:
        ch = line[i]
        if ch == "\\":
            assert line[i + 1] in "\\|", f"bad header escape at {i}"
            field += line[i + 1]
            i += 2
            continue
        if ch == "|":
            header.append(field)
            field = ""
        else:
            field += ch
        i += 1
    ext = line[i:]
    # a key starts a pair where an unescaped '=' follows a word after a space
    starts = [
        m.start() for m in re.finditer(r"(?:^| )(\w+)=", ext) if not _escaped(ext, m.end() - 1)
    ]
    pairs: dict[str, str] = {}
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(ext)
        chunk = ext[start:end].lstrip(" ")
        key, raw = chunk.split("=", 1)
        pairs[key] = _unescape(raw)
    return header, pairs


def _escaped(text: str, at: int) -> bool:
    backslashes = 0
    while at - 1 - backslashes >= 0 and text[at - 1 - backslashes] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def _unescape(raw: str) -> str:
    out, i = "", 0
    while i < len(raw):
        if raw[i] == "\\":
            nxt = raw[i + 1]
            assert nxt in "\\=nr", f"unknown escape \\{nxt}"
            out += {"n": "\n", "r": "\r"}.get(nxt, nxt)
            i += 2
        else:
            assert raw[i] != "=", "an unescaped '=' inside a value"
            out += raw[i]
            i += 1
    return out


def test_cef_escapes_hostile_values_and_round_trips(hostile_log: Path) -> None:
    out = _export(hostile_log, "cef")
    parsed = [_parse_cef(line) for line in out.splitlines()]
    assert len(parsed) == len(HOSTILE)
    for (header, ext), value in zip(parsed, HOSTILE, strict=True):
        assert header[:3] == ["CEF:0", "secure-ds", "secure-ds"]
        assert header[4] == "600301"  # OCSF API Activity: Create (a chat call)
        assert header[5] == "API Activity: Create"
        assert ext["suser"] == value
        assert ext["cs1Label"] == "policies"
        assert ext["cs1"] == f"{value};p2"
        assert ext["cs2Label"] == "model"
        assert ext["cs2"] == "deepseek-flash"
        assert ext["externalId"].startswith("0190-")
    permit, deny = parsed[0], parsed[1]
    assert (permit[0][6], deny[0][6]) == ("1", "5")
    assert deny[1]["reason"] == HOSTILE[1]
    assert deny[1]["outcome"] == "deny"
    assert permit[1]["cn1"] == "11"
    assert permit[1]["cfp1"] == "0.000123"
    assert permit[1]["request"] == "https://api.example/chat/completions"
    assert permit[1]["rt"] == str(int(datetime(2026, 11, 28, 10, tzinfo=UTC).timestamp() * 1000))


def test_cef_header_escaping() -> None:
    assert _cef_header("a|b\\c") == "a\\|b\\\\c"
    assert _cef_header("two\nlines") == "two lines"
    line = cef_line(_record(0, "x"))
    assert line.count("|") >= 7


# ---------------------------------------------------------------------- verification, atomicity


def test_a_tampered_log_is_refused_and_nothing_is_written(
    hostile_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = lines(hostile_log)
    at = record_positions(content)[3]
    content[at] = content[at].replace(b'"latency_ms":12.5', b'"latency_ms":1.25')
    write(hostile_log, content)
    target = tmp_path / "out.csv"
    for how in ("full", "chain"):
        with pytest.raises(LogNotVerified, match="edited at record 3"):
            export_log(hostile_log, fmt="csv", out=target, verify=how)  # type: ignore[arg-type]
    assert not target.exists()
    assert list(tmp_path.glob(".out.csv.*")) == []
    code = main(["audit", "export", str(hostile_log), "--format", "csv", "-o", str(target)])
    assert code == 1
    assert "does not verify" in capsys.readouterr().err
    assert not target.exists()
    # --no-verify exports what is there, the edited value included
    assert main(["audit", "export", str(hostile_log), "--no-verify", "-o", str(target)]) == 0
    assert b'"latency_ms":1.25' in target.read_bytes()


def test_a_failed_export_leaves_the_previous_file_untouched(
    hostile_log: Path, tmp_path: Path
) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("the previous export\n")

    def boom(done: int) -> None:
        if done == hostile_log.stat().st_size:
            raise RuntimeError("disk pulled at the last moment")

    with pytest.raises(RuntimeError):
        export_log(hostile_log, fmt="jsonl", out=target, progress=boom)
    assert target.read_text() == "the previous export\n"
    assert sorted(p.name for p in tmp_path.glob("*out*")) == ["out.jsonl"]  # no temp left
    result = export_log(hostile_log, fmt="jsonl", out=target)
    assert result.records == len(HOSTILE)
    assert len(target.read_text().splitlines()) == len(HOSTILE)


def test_an_unwritable_destination_is_a_clear_error(hostile_log: Path, tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="Cannot write the export"):
        export_log(hostile_log, fmt="csv", out=tmp_path / "no" / "such" / "dir" / "x.csv")


def test_a_torn_tail_is_refused_unless_no_verify(hostile_log: Path) -> None:
    with hostile_log.open("ab") as f:
        f.write(b'{"event_id":"half')
    with pytest.raises(LogNotVerified, match="torn tail"):
        _export(hostile_log, "jsonl")
    assert len(_export(hostile_log, "jsonl", verify="none").splitlines()) == len(HOSTILE)


# ---------------------------------------------------------------------- the CLI, a real log


def test_cli_exports_a_client_log_in_every_format(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = sb.client_settings("alice", audit_path=tmp_path / "a.jsonl")
    with SecureDeepSeek(settings=settings) as client:
        for n in range(3):
            client.chat.completions.create(
                model="deepseek-flash", messages=[{"role": "user", "content": f"hi {n}"}]
            )
    log = settings.audit_path
    records = list(read_records(log))
    for fmt in ("jsonl", "csv", "cef"):
        target = tmp_path / f"out.{fmt}"
        assert main(["audit", "export", str(log), "--format", fmt, "-o", str(target)]) == 0
        assert f"Exported 3 of 3 records to {target}" in capsys.readouterr().err
        text = target.read_text()
        assert records[2]["event_id"] in text
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text(), newline="")))
    assert [r["event_id"] for r in rows] == [r["event_id"] for r in records]
    assert rows[0]["subject"] == "alice"
    assert int(rows[0]["input_tokens"]) == records[0]["response"]["usage"]["prompt_tokens"]
    # stdout, chain-only verification
    assert main(["audit", "export", str(log), "--chain-only"]) == 0
    out = capsys.readouterr().out
    assert [json.loads(x)["event_id"] for x in out.splitlines()] == [r["event_id"] for r in records]


def test_cli_export_pins_the_signer_key(
    hostile_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from secure_ds.audit import generate_key_file

    from ._logs import default_pub

    assert main(["audit", "export", str(hostile_log), "--key", str(default_pub())]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(HOSTILE)
    generate_key_file(tmp_path / "other.pem")
    pub = tmp_path / "other.pub"  # written beside the key
    code = main(["audit", "export", str(hostile_log), "--key", str(pub)])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert "wrong key" in captured.err


def test_a_log_changed_after_verification_abandons_the_export(
    hostile_log: Path, tmp_path: Path
) -> None:
    from secure_ds.audit import _export

    verified = _export.verify_log

    def verify_then_damage(path: Path, **kw: Any) -> Any:
        result = verified(path, **kw)
        content = lines(path)
        content[record_positions(content)[2]] = b"not json\n"
        write(path, content)
        return result

    target = tmp_path / "out.jsonl"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_export, "verify_log", verify_then_damage)
        with pytest.raises(AuditError, match="changed while it was exported"):
            export_log(hostile_log, fmt="jsonl", out=target)
    assert not target.exists()
