"""``secure-ds fhe demo``: the round trip on a fresh sandbox, checked and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from secure_ds.cli import main
from secure_ds.cli._fhe import render
from secure_ds.fhe._demo import FheDemoReport, FheDemoStep
from tests.conftest import read_audit

pytestmark = pytest.mark.integration


def test_fhe_demo_json_reports_each_model_and_the_audit_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    status = main(["fhe", "demo", "--inputs", "3", "--json", "--audit-path", str(audit)])
    report = json.loads(capsys.readouterr().out)
    assert status == 0
    assert report["ok"] is True
    assert report["audit_path"] == str(audit)
    steps = {step["model"]: step for step in report["steps"]}
    assert set(steps) == {"digits-linear-v1", "breast-cancer-logistic-v1", "digits-mlp-v1"}
    for step in steps.values():
        assert step["agree"] == step["inputs"] == 3
        assert step["max_error"] <= 1e-3
        assert step["sizes"]["request_bytes"] > 0
        assert step["timings_ms"]["infer"] > 0
    # the linear and logistic models share one key; the MLP needs its own (deeper) one
    assert steps["breast-cancer-logistic-v1"]["sizes"]["context_bytes"] == 0
    assert steps["digits-mlp-v1"]["sizes"]["context_bytes"] > 0
    records = read_audit(audit)
    assert len(records) == sum(step["records"] for step in steps.values()) == 5
    assert {r["action"] for r in records} == {"fhe_infer"}
    # the same report as the table the command prints without --json
    fields = set(FheDemoStep.__dataclass_fields__)
    again = FheDemoReport(
        endpoint=report["endpoint"],
        audit_path=audit,
        steps=[FheDemoStep(**{k: v for k, v in s.items() if k in fields}) for s in steps.values()],
    )
    console = Console(record=True, width=100)
    render(console, again)
    text = console.export_text()
    assert "the service sees ciphertexts only" in text
    assert "reused session" in text  # the logistic model reuses the linear model's key
    assert "Encrypted and plaintext predictions agree." in text
