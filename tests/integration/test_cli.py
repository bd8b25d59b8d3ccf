"""The `secure-ds` command: the demo end to end, and the pin helper."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from secure_ds.cli import main
from secure_ds.identity import spki_pin_of
from secure_ds.sandbox import Sandbox
from tests.conftest import read_audit

pytestmark = pytest.mark.integration


def test_demo_json_reports_every_step_and_the_audit_file(tmp_path: Path) -> None:
    audit = tmp_path / "demo.jsonl"
    out = subprocess.run(  # noqa: S603 (our own module, fixed arguments)
        [sys.executable, "-m", "secure_ds", "demo", "--json", "--audit-path", str(audit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True
    assert report["audit_path"] == str(audit)
    names = [s["name"] for s in report["steps"]]
    assert names == [
        "plain chat",
        "streamed chat",
        "FIM completion",
        "503 twice, retried",
        "token for another cert",
        "email redacted, restored",
        "email, no clearance",
        "private key in prompt",
        "contractor asks for v4-pro",
        "no role that may call",
    ]
    assert all(s["ok"] for s in report["steps"])
    records = read_audit(audit)
    assert [r["event_id"] for r in records] == [s["event_id"] for s in report["steps"]]
    outcomes = [r["outcome"] for r in records]
    # the contractor's call depends on the time of day (office hours): either is right
    assert outcomes[:8] + outcomes[9:] == ["permit"] * 4 + [
        "deny",
        "permit",
        "deny",
        "deny",
        "deny",
    ]
    assert {r["decide"]["engine"] for r in records} == {"cedar"}
    decided = [s["decided_by"] for s in report["steps"]]
    assert decided[6].startswith("confidential-needs-clearance")
    assert decided[7] == "no-secrets-in-prompts"
    assert decided[9] == "no permit matched"


def test_demo_table_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--audit-path", str(tmp_path / "d.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "All steps behaved as expected." in out
    assert str(tmp_path / "d.jsonl") in out.replace("\n", "")


def test_pin_prints_the_spki_pin(capsys: pytest.CaptureFixture[str]) -> None:
    with Sandbox() as sb:
        server_pem = (sb.directory / "server.pem").read_bytes()
        assert main(["pin", str(sb.directory / "server.pem")]) == 0
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(server_pem).public_bytes(serialization.Encoding.DER)
    assert capsys.readouterr().out.strip() == spki_pin_of(der)


def test_errors_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pin", str(tmp_path / "missing.pem")]) == 2
    err = capsys.readouterr().err
    assert "Cannot read a PEM certificate" in err
