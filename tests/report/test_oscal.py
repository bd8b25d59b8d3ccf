"""OSCAL assessment results: the document reads back through compliance-trestle's
models (generated from NIST's OSCAL schema), has one finding per control with the
report's status, one observation per evidence query, and says when the log is not
intact."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from secure_ds.cli import main

from ._records import varied_records, write_log

pytest.importorskip("trestle")

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    write_log(path, varied_records(96, T0, dt.timedelta(hours=1)), every=50)
    return path


def export(log: Path, out: Path, fmt: str) -> int:
    return main(
        ["report", "export", "--from", "2026-11-01", "--to", "2026-11-04", "--format", fmt,
         "--out", str(out), "--log", str(log)]
    )  # fmt: skip


def test_oscal_assessment_results_read_back_and_match_the_report(log: Path, tmp_path: Path) -> None:
    from trestle.oscal import OSCAL_VERSION
    from trestle.oscal.assessment_results import AssessmentResults

    out, model_out = tmp_path / "ar.json", tmp_path / "report.json"
    assert export(log, out, "oscal") == 0
    assert export(log, model_out, "json") == 0
    doc = AssessmentResults.oscal_read(out)
    assert doc is not None
    assert (
        json.loads(out.read_text())["assessment-results"]["metadata"]["oscal-version"]
        == OSCAL_VERSION
    )
    model = json.loads(model_out.read_text())
    (result,) = doc.results
    expected = {
        f"{fw['framework']}-{c['id']}".lower(): c["status"]
        for fw in model["controls"]
        for c in fw["controls"]
    }
    assert result.findings is not None
    got = {f.target.target_id: f.target.status.state.value for f in result.findings}  # type: ignore[union-attr]
    assert got == {k: "satisfied" if v == "met" else "not-satisfied" for k, v in expected.items()}
    reasons = {  # a reason is a token or the enum of OSCAL's own values
        f.target.target_id: str(getattr(f.target.status.reason, "value", f.target.status.reason))  # type: ignore[union-attr]
        for f in result.findings
    }
    assert reasons["iso27001-a.8.24"] == "other"  # cannot attest: keys not pinned
    assert reasons["soc2-cc6.1"] == "pass"
    assert result.observations is not None
    used = {q for fw in model["controls"] for c in fw["controls"] for q in
            (e["query"] for e in c["evidence"])}  # fmt: skip
    assert {o.title for o in result.observations} == used
    selected = result.reviewed_controls.control_selections[0].include_controls
    assert selected is not None
    assert {s.control_id for s in selected} == set(expected)


def test_oscal_for_a_tampered_log_says_so(log: Path, tmp_path: Path) -> None:
    from trestle.oscal.assessment_results import AssessmentResults

    log.write_bytes(log.read_bytes().replace(b'"max_tokens":256', b'"max_tokens":999', 1))
    out = tmp_path / "ar.json"
    assert export(log, out, "oscal") == 1
    doc = AssessmentResults.oscal_read(out)
    assert doc is not None
    (result,) = doc.results
    assert result.remarks is not None
    assert result.remarks.startswith("THE AUDIT LOG IS NOT INTACT")
    assert "log NOT INTACT" in result.description
    assert {p.name: p.value for p in result.props or []}["log-intact"] == "false"


def test_an_independent_binding_of_nists_schema_accepts_it(log: Path, tmp_path: Path) -> None:
    """oscal-bindings (pydantic models generated from NIST's OSCAL JSON schema by other
    hands than compliance-trestle) parses the document as assessment results, and
    rejects it once a finding's state is not one OSCAL allows."""
    bindings = pytest.importorskip("oscal_bindings.v1.parser")
    from oscal_bindings.v1.models import AssessmentResultsDocument

    out = tmp_path / "ar.json"
    assert export(log, out, "oscal") == 0
    assert isinstance(bindings.parse_oscal(out.read_bytes()).root, AssessmentResultsDocument)
    doc = json.loads(out.read_text())
    doc["assessment-results"]["results"][0]["findings"][0]["target"]["status"]["state"] = "maybe"
    with pytest.raises(bindings.OscalParseError):
        bindings.parse_oscal(json.dumps(doc))
