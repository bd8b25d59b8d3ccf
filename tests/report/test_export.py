"""``secure-ds report export``: each format, written atomically, and every bad input
(bad dates, unknown control mapping reference, tampered log, missing log, unwritable
output) ends with nothing half-written."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from pathlib import Path

import pytest

from secure_ds.cli import main
from secure_ds.errors import ReportError
from secure_ds.report import CSV_COLUMNS, Period, atomic_output, export_report, load_controls

from ._records import make_record, varied_records, write_log

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    recs = list(varied_records(120, T0, dt.timedelta(hours=1)))
    recs[5]["actor"]["subject"] = '=HYPERLINK("http://evil")'  # a formula for a spreadsheet
    recs[6]["actor"]["subject"] = "<script>alert(1)</script>"
    write_log(path, recs, every=50)
    return path


def export(log: Path, out: Path, fmt: str, *extra: str) -> int:
    return main(
        ["report", "export", "--from", "2026-11-01", "--to", "2026-11-05", "--format", fmt,
         "--out", str(out), "--log", str(log), *extra]
    )  # fmt: skip


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_json_export_writes_the_model(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    assert export(log, out, "json") == 0
    model = json.loads(out.read_text())
    assert model["schema_version"] == "secure-ds.report/1"
    assert model["totals"]["calls"] == 120
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert leftovers(tmp_path) == []


def test_csv_export_has_one_row_per_call_in_the_period(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "calls.csv"
    period = Period(dt.date(2026, 11, 2), dt.date(2026, 11, 3))
    model = export_report(log, period, load_controls(), "csv", out)
    rows = list(csv.reader(out.open(newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) - 1 == model["totals"]["calls"] == 48
    col = {name: i for i, name in enumerate(CSV_COLUMNS)}
    assert all(r[col["time"]].startswith(("2026-11-02", "2026-11-03")) for r in rows[1:])
    assert [int(r[col["index"]]) for r in rows[1:]] == list(range(24, 72))


def test_csv_cells_that_would_be_formulas_are_defused(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "calls.csv"
    assert export(log, out, "csv") == 0
    rows = list(csv.reader(out.open(newline="")))
    subjects = [r[CSV_COLUMNS.index("principal")] for r in rows[1:]]
    assert '\'=HYPERLINK("http://evil")' in subjects
    assert not any(s.startswith("=") for s in subjects)


def test_html_export_is_self_contained_and_escaped(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert export(log, out, "html") == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page  # the principal named <script> is escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<svg") == 4  # calls, cost, denials, findings
    # nothing to fetch: the only URLs are the SVG namespace and escaped log values
    urls = set(re.findall(r'(?:src|href)="([^"]+)"', page))
    assert urls == set()
    assert "<link" not in page
    assert "Audit log verified" in page


def test_a_tampered_log_is_on_the_first_page_and_exits_1(log: Path, tmp_path: Path) -> None:
    data = log.read_bytes()
    log.write_bytes(data.replace(b'"max_tokens":256', b'"max_tokens":999', 1))
    out = tmp_path / "report.html"
    assert export(log, out, "html") == 1
    page = out.read_text()
    alert = page.index('class="alert" id="tampered"')
    assert alert < page.index("<h2>Summary</h2>")
    assert "THE AUDIT LOG IS NOT INTACT" in page[alert : page.index("<h2>Summary</h2>")]
    assert export(log, tmp_path / "r.json", "json") == 1
    assert json.loads((tmp_path / "r.json").read_text())["attestation"]["log_intact"] is False


def test_an_unknown_control_mapping_reference_writes_nothing(
    log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "controls"
    mine.mkdir()
    (mine / "acme.toml").write_text(
        '[framework]\nid = "acme"\nname = "ACME"\n\n[[controls]]\nid = "ACME-7"\n'
        'title = "t"\nevidence = ["denials_reviewed"]\n'
    )
    out = tmp_path / "report.json"
    assert export(log, out, "json", "--controls", str(mine)) == 2
    err = "".join(capsys.readouterr().err.split())  # rich wraps long paths mid-word
    assert "acme.toml" in err
    assert "ACME-7" in err
    assert "denials_reviewed" in err
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_a_user_mapping_is_evaluated(log: Path, tmp_path: Path) -> None:
    mine = tmp_path / "controls"
    mine.mkdir()
    (mine / "acme.toml").write_text(
        '[framework]\nid = "acme"\nname = "ACME"\n\n[[controls]]\nid = "ACME-1"\n'
        'title = "t"\nevidence = ["denials_recorded"]\n'
    )
    out = tmp_path / "report.json"
    assert export(log, out, "json", "--controls", str(mine)) == 0
    acme = json.loads(out.read_text())["controls"][-1]
    assert acme["framework"] == "acme"
    assert acme["controls"][0]["status"] == "met"


def test_an_unwritable_output_path_fails_before_reading_and_leaves_nothing(
    log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "report.json"  # its "folder" is a file: nothing can be created there
    assert export(log, out, "json") == 2
    assert "Cannot write the report" in capsys.readouterr().err
    assert blocker.read_text() == "x"
    assert leftovers(tmp_path) == []


def test_a_failure_mid_export_keeps_the_previous_report(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    out.write_text("the previous report\n")
    with pytest.raises(ReportError, match="does not exist"):
        export_report(tmp_path / "missing.jsonl", Period(T0.date(), T0.date()), [], "json", out)
    assert out.read_text() == "the previous report\n"
    assert leftovers(tmp_path) == []


def test_atomic_output_discards_the_temporary_file_on_an_exception(tmp_path: Path) -> None:
    out = tmp_path / "x.csv"

    def interrupted() -> None:
        with atomic_output(out) as f:
            f.write("half a report")
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        interrupted()
    assert not out.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("start", "end", "says"),
    [
        ("2026-13-01", "2026-11-05", "--from '2026-13-01' is not a date"),
        ("2026-11-01", "yesterday", "--to 'yesterday' is not a date"),
        ("2026-11-05", "2026-11-01", "ends (2026-11-01) before it starts"),
    ],
)
def test_bad_dates_write_nothing(
    log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], start: str, end: str, says: str
) -> None:
    out = tmp_path / "report.json"
    code = main(
        ["report", "export", "--from", start, "--to", end, "--out", str(out), "--log", str(log)]
    )
    assert code == 2
    assert says in " ".join(capsys.readouterr().err.split())
    assert not out.exists()


def test_an_empty_period_is_written_and_says_so(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    code = main(
        ["report", "export", "--from", "2025-01-01", "--to", "2025-01-02", "--out", str(out),
         "--log", str(log), "--json"]
    )  # fmt: skip
    assert code == 0
    model = json.loads(out.read_text())
    assert model["totals"]["calls"] == 0
    assert model["attestation"]["statements"][0].startswith("No calls were recorded")


def test_the_gap_is_reported_by_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "audit.jsonl"
    write_log(log, [make_record(0, T0), make_record(1, T0 + dt.timedelta(days=3))])
    out = tmp_path / "report.json"
    assert export(log, out, "json") == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "No records on 3 day(s) of the period: 2026-11-02, 2026-11-03, 2026-11-05" in text


def test_a_long_export_on_a_terminal_shows_progress_to_the_end(
    log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from secure_ds.cli import _report

    seen: list[int] = []
    real = _report.Progress.update

    def update(self: object, task: object, **kw: object) -> None:
        if "completed" in kw:
            seen.append(int(kw["completed"]))  # type: ignore[call-overload]
        real(self, task, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(_report, "_PROGRESS_MIN_BYTES", 0)  # this small log counts as long
    monkeypatch.setattr(_report.sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr(_report.Progress, "update", update)
    assert export(log, tmp_path / "r.json", "json") == 0
    assert seen
    assert seen[-1] == log.stat().st_size  # the bar reaches the end of the log
