"""``secure-ds policy validate|format|test|explain|review``: exit codes, and messages
that name the file, the line and the fix, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from secure_ds.cli import main

POLICIES = Path(__file__).parents[2] / "policies"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the shipped policy folder, safe to break."""
    return Path(shutil.copytree(POLICIES, tmp_path / "policies"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr, with rich's line wrapping undone."""
    status = main(["policy", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, " ".join(out.split()), " ".join(err.split())


def add_policies(folder: Path, text: str, name: str = "extra.cedar") -> Path:
    path = folder / name
    path.write_text(cedarpy.format_policies(text))
    return path


def first_case(name: str = "access.json") -> dict[str, Any]:
    cases: list[dict[str, Any]] = json.loads((POLICIES / "tests" / name).read_text())
    return cases[0]


# -------------------------------------------------------------------- shipped set


def test_the_shipped_folder_validates_clean(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "validate", str(POLICIES))
    assert status == 0
    assert "3 policy file(s), 11 policies; 0 error(s), 0 warning(s)" in out


def test_the_shipped_tests_pass_with_full_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "test", str(POLICIES), "--require-coverage")
    assert status == 0
    assert "policies exercised: 11/11" in out
    assert "not exercised" not in out
    assert "0 failed, 0 malformed" in out
    status, out, _ = run(capsys, "test", str(POLICIES), "--json")
    report = json.loads(out)
    assert status == 0
    assert report["ok"]
    assert report["uncovered"] == []
    assert report["passed"] == len(report["cases"]) >= 10


def test_dir_defaults_to_the_configured_policy_folder(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SECURE_DS_POLICY_DIR", str(POLICIES))
    assert run(capsys, "validate")[0] == 0
    monkeypatch.delenv("SECURE_DS_POLICY_DIR")
    monkeypatch.chdir(tmp_path)  # no ./policies here
    status, _, err = run(capsys, "validate")
    assert status == 2
    assert "policies is not a directory" in err


# ------------------------------------------------------------------------ validate


def test_syntax_error_names_file_and_line(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    (folder / "broken.cedar").write_text(
        '@id("ok")\npermit (principal, action, resource);\n\n'
        "permit (principal, action, resource)\nwhen { principal == };\n"
    )
    status, out, _ = run(capsys, "validate", str(folder))
    assert status == 1
    assert "error broken.cedar:5: Cedar syntax error: unexpected token `}`" in out


def test_schema_type_error_names_policy_and_types(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    add_policies(
        folder,
        '@id("pricey")\npermit (principal, action, resource is SecureDS::Model)\n'
        "when { resource.cost_tier > 3 };",
    )
    status, out, _ = run(capsys, "validate", str(folder))
    assert status == 1
    assert (
        "error extra.cedar:1: policy 'pricey' does not validate against the schema: "
        "unexpected type: expected Long but saw String" in out
    )
    assert "declare the attribute or entity type in the .cedarschema file" in out


def test_unknown_attribute_in_a_policy(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    add_policies(
        folder,
        '@id("red-models")\npermit (principal, action, resource is SecureDS::Model)\n'
        'when { resource.colour == "red" };',
    )
    status, out, _ = run(capsys, "validate", str(folder))
    assert status == 1
    assert "attribute `colour` on entity type `SecureDS::Model` not found" in out


def test_empty_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, _ = run(capsys, "validate", str(tmp_path))
    assert status == 1
    assert "has no .cedar policy files. Add the policies" in out
    status, _, err = run(capsys, "test", str(tmp_path))
    assert status == 2
    assert "has no .cedar policy files" in err


def test_a_cedar_entry_that_is_a_directory(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    (folder / "more.cedar").mkdir()
    status, out, _ = run(capsys, "validate", str(folder))
    assert status == 1
    assert "error more.cedar: more.cedar is a directory" in out
    assert "must be plain files; move or rename it" in out


def test_a_huge_file(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    (folder / "huge.cedar").write_text("// padding\n" * 100_000)  # 1.1 MB of comments
    status, out, _ = run(capsys, "validate", str(folder))
    assert status == 1
    assert "huge.cedar is 1100000 bytes, over the 1048576-byte limit" in out
    assert "Split it into smaller files" in out


def test_unformatted_file_validate_fails_format_fixes_it(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    path = folder / "session.cedar"
    original = path.read_text()
    path.write_text(
        original.replace(
            "unless { context.certificate_bound }", "unless{context.certificate_bound}"
        )
    )
    policies_before = cedarpy.policies_to_json_str(path.read_text())

    status, out, _ = run(capsys, "validate", str(folder))
    assert status == 1
    assert "error session.cedar:11: the file is not in Cedar's canonical format" in out
    assert "-unless{context.certificate_bound};" in out
    assert "+unless { context.certificate_bound };" in out

    status, out, _ = run(capsys, "format", str(folder), "--check")
    assert status == 1
    assert "would reformat" in out
    assert "session.cedar" in out
    assert path.read_text() != original

    status, out, _ = run(capsys, "format", str(folder))
    assert status == 0
    assert "reformatted" in out
    assert path.read_text() == original
    assert cedarpy.policies_to_json_str(path.read_text()) == policies_before

    assert run(capsys, "validate", str(folder))[0] == 0
    status, out, _ = run(capsys, "format", str(folder), "--check")
    assert status == 0
    assert "every .cedar file is formatted" in out


def test_format_refuses_a_file_that_does_not_parse(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    (folder / "broken.cedar").write_text("permit (principal, action, resource")
    status, out, _ = run(capsys, "format", str(folder))
    assert status == 1
    assert "error broken.cedar: cannot format: the file does not parse" in out


def test_obligations_on_a_forbid_are_flagged(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    add_policies(
        folder,
        '@id("capped-forbid")\n@reason("no balance for you")\n'
        '@obligation("cap_max_tokens:10")\n'
        'forbid (principal, action == SecureDS::Action::"balance", resource);',
    )
    status, out, _ = run(capsys, "validate", str(folder))
    assert status == 1
    assert (
        "error extra.cedar:3: policy 'capped-forbid' is a forbid with obligations, which "
        "is never carried out" in out
    )


def test_warnings_fail_only_with_strict(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    add_policies(
        folder,
        '@id("fhe-only")\n@obligation("notify:secops")\n'
        'permit (principal, action == SecureDS::Action::"fhe_infer", resource);',
    )
    status, out, _ = run(capsys, "validate", str(folder))
    assert status == 0
    assert (
        "warning extra.cedar:2: policy 'fhe-only': obligation 'notify:secops': the enforce "
        "stage cannot carry this out yet: a permit carrying it becomes a deny" in out
    )
    assert run(capsys, "validate", str(folder), "--strict")[0] == 1
    status, out, _ = run(capsys, "validate", str(folder), "--json")
    [problem] = json.loads(out)["problems"]
    assert (problem["severity"], problem["code"], problem["line"]) == ("warning", "obligation", 2)


# ---------------------------------------------------------------------------- test


def test_failing_decision_test_shows_expected_and_actual(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    path = folder / "tests" / "access.json"
    cases = json.loads(path.read_text())
    cases[4]["decision"] = "allow"  # analyst on a premium model: really a deny
    cases[4]["reason"] = ["analysts-chat-on-standard-models"]
    path.write_text(json.dumps(cases))
    status, out, _ = run(capsys, "test", str(folder))
    assert status == 1
    assert "FAILED tests/access.json[4] analyst is denied a premium-tier model" in out
    assert "decision: expected allow, got deny (no policy permits this call)" in out
    assert "determining policies: expected [analysts-chat-on-standard-models], got []" in out
    assert "1 failed, 0 malformed" in out


def test_uncovered_policy_is_listed(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    add_policies(
        folder,
        '@id("auditors-read-balance")\n'
        'permit (principal in SecureDS::Role::"auditor", '
        'action == SecureDS::Action::"balance", resource);',
    )
    status, out, _ = run(capsys, "test", str(folder))
    assert status == 0  # reported, not failed...
    assert "policies exercised: 11/12; not exercised: auditors-read-balance" in out
    status, out, _ = run(capsys, "test", str(folder), "--require-coverage")
    assert status == 1  # ...unless coverage is required
    assert "not exercised: auditors-read-balance" in out


def test_unknown_entity_type_in_a_test_case(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    bad = first_case()
    bad["request"]["principal"] = 'SecureDS::Person::"alice"'
    (folder / "tests" / "zz_bad.json").write_text(json.dumps([bad]))
    status, out, _ = run(capsys, "test", str(folder))
    assert status == 1
    assert (
        "MALFORMED tests/zz_bad.json[0]: the request does not fit the schema: principal "
        "type `SecureDS::Person` is not declared in the schema" in out
    )


def test_no_test_cases_is_a_failure(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    shutil.rmtree(folder / "tests")
    status, out, _ = run(capsys, "test", str(folder))
    assert status == 1
    assert "no decision test cases found" in out
    assert "tests/ directory" in out


def test_one_test_file_can_be_run(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    only = folder / "tests" / "session.json"
    status, out, _ = run(capsys, "test", str(folder), "--file", str(only), "--json")
    report = json.loads(out)
    assert status == 0
    assert report["files"] == ["tests/session.json"]
    assert {c["file"] for c in report["cases"]} == {"tests/session.json"}
    assert "everyone-lists-models" in report["covered"]  # partial coverage, not a failure


# ------------------------------------------------------------------------- explain


def explain(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    status, out, _ = run(capsys, "explain", str(POLICIES), *argv, "--json")
    assert status == 0  # whatever the decision
    result: dict[str, Any] = json.loads(out)
    return result


def test_explain_contractor_permit_with_obligations_and_advice(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ("--principal", "carol", "--role", "contractor", "--model", "deepseek-v4-pro")
    status, out, _ = run(capsys, "explain", str(POLICIES), *argv, "--hour", "10", "--weekday", "1")
    assert status == 0
    assert "decision: PERMIT" in out
    assert "why: permitted by contractors-capped-and-routed (access.cedar)" in out
    assert (
        "obligations (merged, carried out by enforce): cap_max_tokens:1024, route:deepseek-flash"
        in out
    )
    assert "advice: contractor calls are capped at 1024 tokens on deepseek-flash" in out


def test_explain_contractor_at_night_names_the_forbid_and_its_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = explain(
        capsys,
        "--principal",
        "carol",
        "--role",
        "contractor",
        "--model",
        "deepseek-flash",
        "--hour",
        "22",
        "--weekday",
        "2",
    )
    assert result["decision"] == "deny"
    assert result["policies"] == [
        {
            "id": "contractors-office-hours",
            "file": "session.cedar",
            "effect": "forbid",
            "reason": "contractors may call models on weekdays 07:00-19:00 UTC",
        }
    ]
    assert result["why"] == (
        "denied by forbid contractors-office-hours (session.cedar): contractors may call "
        "models on weekdays 07:00-19:00 UTC"
    )
    # the explained call is a ready-made decision test
    case = result["test_case"]
    assert case["request"]["context"]["hour_utc"] == 22
    assert (case["decision"], case["reason"]) == ("deny", ["contractors-office-hours"])


def test_explain_no_permit_matched(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys, "explain", str(POLICIES), "--principal", "x", "--model", "deepseek-flash"
    )
    assert status == 0
    assert "decision: DENY" in out
    assert "why: no permit matched" in out


def test_explain_unknown_model_is_not_in_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    result = explain(capsys, "--principal", "al", "--role", "engineer", "--model", "gpt-9")
    assert (result["decision"], result["denied_by"]) == ("deny", "catalogue")
    assert "model 'gpt-9' is not in the policy catalogue" in result["why"]
    assert "Add the model to entities.json" in result["why"]


def test_explain_a_claim_of_the_wrong_type(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("--principal", "al", "--role", "engineer", "--model", "deepseek-flash")
    result = explain(capsys, *argv, "--attr", "clearance=high")
    assert (result["decision"], result["denied_by"]) == ("deny", "claim:clearance")
    assert "claim 'clearance' has the wrong type for the schema" in result["why"]
    assert "fix the claim at the identity provider" in result["why"]
    # the same claim as a number is fine, and clears confidential data (redacted)
    result = explain(capsys, *argv, "--attr", "clearance=2", "--finding", "email")
    assert result["decision"] == "permit"
    assert result["obligations"] == ["redact:credit_card,email,iban,phone,us_ssn:reversible"]


def test_explain_reports_claims_the_schema_ignores(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("--principal", "al", "--role", "engineer", "--model", "deepseek-flash")
    result = explain(capsys, *argv, "--attr", "shoe_size=44")
    assert result["decision"] == "permit"
    assert result["ignored_claims"] == ["shoe_size"]


def test_explain_findings_set_the_classification_as_dlp_would(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ("--principal", "al", "--role", "engineer", "--model", "deepseek-flash")
    result = explain(capsys, *argv, "--finding", "private_key", "--no-cert-binding")
    context = result["test_case"]["request"]["context"]
    assert (context["classification"], context["findings"]) == ("secret", ["private_key"])
    assert context["certificate_bound"] is False
    assert {p["id"] for p in result["policies"]} == {
        "no-secrets-in-prompts",
        "prompts-need-certificate-bound-token",
    }


def test_explain_a_request_file_and_a_case_of_a_test_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    request = {**first_case()["request"], "entities": first_case()["entities"]}
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    status, out, _ = run(capsys, "explain", str(POLICIES), "--request", str(path))
    assert status == 0
    assert "decision: PERMIT" in out
    assert "engineers-use-code-models (access.cedar)" in out

    tests = POLICIES / "tests" / "session.json"
    status, out, _ = run(capsys, "explain", str(POLICIES), "--request", str(tests), "--case", "0")
    assert status == 0
    assert "prompts-need-certificate-bound-token" in out
    status, _, err = run(capsys, "explain", str(POLICIES), "--request", str(tests))
    assert status == 2
    assert "Pick one with --case N" in err


def test_explain_unknown_entity_type_in_a_request_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    request = dict(first_case()["request"])
    request["resource"] = 'SecureDS::Gadget::"x"'
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    status, out, err = run(capsys, "explain", str(POLICIES), "--request", str(path))
    assert status == 2
    assert out == ""
    assert (
        "error: Cannot explain this request: the request does not fit the schema: resource "
        "type `SecureDS::Gadget` is not declared in the schema" in err
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--principal", "al"), "--action chat is a model call, but no model is given"),
        (("--model", "deepseek-flash", "--attr", "clearance"), "is not KEY=VALUE"),
        (("--model", "deepseek-flash", "--finding", "email=lots"), "is not KIND or KIND=N"),
        (
            ("--model", "deepseek-flash", "--action", "delete"),
            "does not exist in the supplied schema",
        ),
        (("--model", "deepseek-flash", "--resource", "deepseek"), "is not an entity uid"),
    ],
)
def test_explain_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    status, out, err = run(capsys, "explain", str(POLICIES), *argv)
    assert status == 2
    assert out == ""
    assert message in err


def test_explain_request_file_cannot_be_mixed_with_call_flags(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(first_case()["request"]))
    status, _, err = run(capsys, "explain", str(POLICIES), "--request", str(path), "--hour", "0")
    assert status == 2
    assert "cannot be combined with --hour" in err


# -------------------------------------------------------------------------- review
