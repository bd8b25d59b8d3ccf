"""The review library: the linter finds every problem with a file, a line and a fix;
decision tests compare what the live decide stage would do; explain agrees with it."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from secure_ds.guard._call import Call
from secure_ds.policy import CedarDecider, load_bundle
from secure_ds.policy._explain import explain_call, started_at_for
from secure_ds.policy._lint import _policy_lines, check_obligation, format_folder, lint_folder
from secure_ds.policy._testing import CaseProblem, parse_uid, run_policy_tests
from tests.policy._calls import make_call

POLICIES = Path(__file__).parents[2] / "policies"
CONTEXT = {
    "classification": "public",
    "classification_level": 0,
    "findings": [],
    "finding_count": 0,
    "max_tokens": 0,
    "stream": False,
    "hour_utc": 10,
    "weekday": 3,
    "source_ip": {"__extn": {"fn": "ip", "arg": "10.0.0.5"}},
    "auth": "jwt",
    "certificate_bound": True,
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the shipped policy folder, safe to break."""
    return Path(shutil.copytree(POLICIES, tmp_path / "policies"))


def user(name: str, *roles: str, **attrs: Any) -> dict[str, Any]:
    return {
        "uid": {"type": "SecureDS::User", "id": name},
        "attrs": attrs,
        "parents": [{"type": "SecureDS::Role", "id": r} for r in roles],
    }


def case(
    principal: str = "alice",
    *,
    action: str = "chat",
    resource: Any = 'SecureDS::Model::"deepseek-flash"',
    entities: Any = None,
    decision: str = "allow",
    reason: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "request": {
            "principal": f'SecureDS::User::"{principal}"',
            "action": f'SecureDS::Action::"{action}"',
            "resource": resource,
            "context": dict(CONTEXT),
        },
        "entities": [user("alice", "engineer")] if entities is None else entities,
        "decision": decision,
        "reason": ["engineers-use-code-models"] if reason is None else reason,
        **extra,
    }


def write_tests(folder: Path, *cases: Any, name: str = "extra.json") -> Path:
    shutil.rmtree(folder / "tests")
    (folder / "tests").mkdir()
    path = folder / "tests" / name
    path.write_text(json.dumps(list(cases)))
    return path


def add_policies(folder: Path, text: str, name: str = "extra.cedar") -> None:
    """Add a policy file, formatted (so only the problem a test is about shows)."""
    (folder / name).write_text(cedarpy.format_policies(text))


# ------------------------------------------------------------------------- linting


def test_the_shipped_folder_has_no_problems_at_all() -> None:
    report = lint_folder(POLICIES)
    assert report.problems == []
    assert report.ok
    assert report.bundle is not None
    assert report.files == ["access.cedar", "data.cedar", "session.cedar"]
    assert report.policy_count == len(report.bundle.policies) == 11


def test_problems_in_several_files_are_all_reported(folder: Path) -> None:
    # loading stops at the first broken file; the linter must not
    (folder / "a_broken.cedar").write_text("permit (principal, action, resource)\nwhen { };\n")
    (folder / "z_typed.cedar").write_text(
        '@id("typed")\npermit (\n  principal,\n  action,\n  resource is SecureDS::Model\n)\n'
        "when { resource.cost_tier > 3 };\n"
    )
    problems = lint_folder(folder).problems
    syntax = [p for p in problems if p.code == "syntax"]
    schema = [p for p in problems if p.code == "schema"]
    assert [(p.file, p.line) for p in syntax] == [("a_broken.cedar", 2)]
    assert [(p.file, p.line) for p in schema] == [("z_typed.cedar", 1)]
    assert "policy 'typed'" in schema[0].message
    assert "Long" in schema[0].message
    assert not any(p.code == "load" for p in problems)  # said once, not twice


def test_a_duplicate_id_is_one_error_naming_both_files(folder: Path) -> None:
    add_policies(
        folder,
        '@id("everyone-lists-models")\n'
        'permit (principal, action == SecureDS::Action::"list_models", resource);\n',
    )
    problems = [p for p in lint_folder(folder).problems if p.severity == "error"]
    assert len(problems) == 1
    assert problems[0].file == "extra.cedar"
    assert problems[0].line == 1
    assert "access.cedar" in problems[0].message
    assert "unique @id" in problems[0].message


def test_policy_level_warnings_point_at_the_policy(folder: Path) -> None:
    add_policies(
        folder,
        "// no id\n"
        'permit (principal, action == SecureDS::Action::"list_models", resource);\n'
        "\n"
        '@id("quiet-forbid")\n'
        'forbid (principal, action == SecureDS::Action::"balance", resource);\n',
    )
    found = {p.code: p for p in lint_folder(folder).problems}
    assert set(found) == {"missing-id", "forbid-reason"}
    assert (found["missing-id"].line, found["forbid-reason"].line) == (2, 8)
    assert "extra.cedar#0" in found["missing-id"].message
    assert all(p.severity == "warning" for p in found.values())


def test_obligations_and_advice_on_a_forbid_are_errors(folder: Path) -> None:
    add_policies(
        folder,
        '@id("capped-forbid")\n@reason("no")\n@obligation("cap_max_tokens:10")\n'
        'forbid (principal, action == SecureDS::Action::"balance", resource);\n\n'
        '@id("advised-forbid")\n@reason("no")\n@advice("be nice")\n'
        'forbid (principal, action == SecureDS::Action::"other", resource);\n',
    )
    problems = [p for p in lint_folder(folder).problems if p.code == "forbid-obligation"]
    assert [(p.severity, p.line) for p in problems] == [("error", 3), ("error", 10)]
    assert "only to the permits" in problems[0].message


def test_route_targets_are_checked_against_the_catalogue(folder: Path) -> None:
    add_policies(
        folder,
        '@id("to-nowhere")\n@obligation("route:gpt-9")\n'
        'permit (principal, action == SecureDS::Action::"chat", resource);\n',
    )
    [problem] = lint_folder(folder).problems
    assert (problem.severity, problem.code, problem.line) == ("error", "route-target", 2)
    assert "'gpt-9' is not in the model catalogue" in problem.message


def test_a_missing_catalogue_is_a_warning(folder: Path) -> None:
    (folder / "entities.json").unlink()
    problems = lint_folder(folder).problems
    assert ("warning", "no-catalogue", None) in [(p.severity, p.code, p.file) for p in problems]
    # and the route target it can no longer find is flagged too
    assert ("error", "route-target", "access.cedar") in [
        (p.severity, p.code, p.file) for p in problems
    ]


@pytest.mark.parametrize(
    ("obligation", "expected"),
    [
        ("cap_max_tokens:1024", None),
        ("route:deepseek-flash", None),
        ("redact:email,phone:reversible", None),
        ("redact:*", None),
        ("block:private_key,api_key", None),
        ("cap_max_tokens:0", ("error", "whole number above 0")),
        ("cap_max_tokens:ten", ("error", "whole number above 0")),
        ("route:", ("error", "names no model")),
        ("route:other-model", ("error", "not in the model catalogue")),
        ("redact:", ("error", "malformed")),
        ("redact:email:forever", ("error", "malformed")),
        ("block:email:reversible", ("error", "malformed")),
        ("block:passport_no", ("warning", "not a built-in DLP kind")),
        ("require:fhe", None),
        ("require:tpm", ("warning", "the enforce stage cannot carry this out yet")),
        ("notify:secops", ("warning", "the enforce stage cannot carry this out yet")),
    ],
)
def test_check_obligation(obligation: str, expected: tuple[str, str] | None) -> None:
    found = check_obligation(obligation, frozenset({"deepseek-flash"}))
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert (found[0], expected[1] in found[2]) == (expected[0], True), found


def test_an_unformatted_file_is_an_error_with_a_diff_and_format_fixes_it(folder: Path) -> None:
    path = folder / "access.cedar"
    original = path.read_text()
    squashed = original.replace("permit (\n  principal", "permit (principal", 1)
    path.write_text(squashed)
    [problem] = lint_folder(folder).problems
    assert (problem.code, problem.file, problem.line) == ("format", "access.cedar", 4)
    assert "-permit (principal" in problem.detail
    assert "+permit (" in problem.detail
    assert format_folder(folder, write=False).changed == ["access.cedar"]
    assert path.read_text() == squashed  # --check writes nothing
    assert format_folder(folder, write=True).changed == ["access.cedar"]
    assert path.read_text() == original
    assert lint_folder(folder).problems == []
    assert not list(folder.glob(".*formatting"))  # no temporary file left behind


def test_policy_lines_skip_strings_and_comments() -> None:
    text = (
        "// a comment; with a semicolon\n"
        '@id("a;b")\n'
        "permit (principal, action, resource)\n"
        'when { context.x == "; \\" ;" };\n'
        "\n"
        "forbid (principal, action, resource);"
    )
    assert _policy_lines(text) == [2, 6]


# -------------------------------------------------------------------- decision tests


def test_the_shipped_tests_pass_and_exercise_every_policy() -> None:
    bundle = load_bundle(POLICIES)
    run = run_policy_tests(bundle)
    assert [f.label for f in run.failed] == []
    assert run.errors == []
    assert run.uncovered == []
    assert run.covered == list(bundle.policies)
    assert run.files == ["tests/access.json", "tests/data.json", "tests/session.json"]


def test_reasons_must_match_exactly(folder: Path) -> None:
    # Cedar's run-tests accepts a subset; secure-ds wants the determining set itself
    confidential = case(
        entities=[user("alice", "engineer", clearance=2)],
        reason=["engineers-use-code-models"],
    )
    confidential["request"]["context"].update(classification="confidential")
    write_tests(folder, confidential)
    [failed] = run_policy_tests(load_bundle(folder)).failed
    assert failed.differences == (
        "determining policies: expected [engineers-use-code-models], got "
        "[confidential-redacted-for-engineers, engineers-use-code-models]",
    )


def test_the_decision_difference_says_why_it_was_denied(folder: Path) -> None:
    write_tests(folder, case(entities=[user("alice")], decision="allow"))
    [failed] = run_policy_tests(load_bundle(folder)).failed
    assert failed.differences[0] == (
        "decision: expected allow, got deny (no policy permits this call)"
    )
    assert failed.differences[1] == (
        "determining policies: expected [engineers-use-code-models], got []"
    )


def test_evaluation_errors_fail_a_case_unless_expected(folder: Path) -> None:
    # passes the strict validator, overflows at run time
    add_policies(
        folder,
        '@id("overflowing")\npermit (principal, action == SecureDS::Action::"list_models", '
        "resource)\nwhen { context.hour_utc * 4611686018427387904 > 0 };\n",
    )
    listing = case(
        "nobody",
        action="list_models",
        resource='SecureDS::Api::"deepseek"',
        entities=[user("nobody")],
        reason=["everyone-lists-models"],
    )
    fail_closed = {**listing, "decision": "deny", "num_errors": 1}
    write_tests(folder, listing, fail_closed)
    run = run_policy_tests(load_bundle(folder))
    [failed] = run.failed
    assert failed.index == 0
    assert failed.differences[0].startswith("decision: expected allow, got deny")
    assert "evaluation errors: expected 0, got 1" in failed.differences[-1]
    assert "overflowing" in failed.differences[-1]
    # Cedar allows (it skips the erroring policy); the live guard denies, and so do tests
    [passed] = run.passed
    assert passed.index == 1
    assert passed.evaluation.denied_by == "policy-error"


def test_obligations_are_the_merged_ones_the_guard_enforces(folder: Path) -> None:
    contractor = case(
        "carl",
        entities=[user("carl", "contractor")],
        reason=["contractors-capped-and-routed"],
        obligations=["route:deepseek-flash", "cap_max_tokens:1024"],  # any order
    )
    wrong = {**contractor, "obligations": ["cap_max_tokens:2048"]}
    write_tests(folder, contractor, wrong)
    run = run_policy_tests(load_bundle(folder))
    assert [r.index for r in run.passed] == [0]
    assert run.failed[0].differences == (
        "obligations: expected [cap_max_tokens:2048], got "
        "[cap_max_tokens:1024, route:deepseek-flash]",
    )


def test_conflicting_obligations_make_the_expected_decision_a_deny(folder: Path) -> None:
    add_policies(
        folder,
        '@id("route-pro")\n@obligation("route:deepseek-v4-pro")\n'
        'permit (\n  principal in SecureDS::Role::"engineer",\n'
        '  action == SecureDS::Action::"chat",\n  resource\n);\n',
    )
    write_tests(
        folder,
        case(
            "carl",
            entities=[user("carl", "engineer", "contractor")],
            decision="deny",
            reason=["contractors-capped-and-routed", "engineers-use-code-models", "route-pro"],
        ),
    )
    run = run_policy_tests(load_bundle(folder))
    assert run.failed == []
    assert len(run.passed) == 1
    assert run.passed[0].evaluation.denied_by == "obligation-conflict"


def test_case_entities_replace_the_catalogue_entity_with_the_same_uid(folder: Path) -> None:
    cheap_pro = {
        "uid": {"type": "SecureDS::Model", "id": "deepseek-v4-pro"},
        "attrs": {
            "family": "deepseek-v4",
            "capabilities": ["chat"],
            "context_tokens": 1,
            "region": "eu",
            "cost_tier": "standard",
        },
        "parents": [],
    }
    analyst = case(
        "bob",
        resource='SecureDS::Model::"deepseek-v4-pro"',
        entities=[user("bob", "analyst"), cheap_pro],
        reason=["analysts-chat-on-standard-models"],
    )
    write_tests(folder, analyst)
    run = run_policy_tests(load_bundle(folder))
    assert len(run.passed) == 1, [f.differences for f in run.failed] + run.errors


def test_uncovered_policies_are_listed_in_folder_order(folder: Path) -> None:
    write_tests(folder, case())
    run = run_policy_tests(load_bundle(folder))
    assert run.ok
    assert run.covered == ["engineers-use-code-models"]
    assert run.uncovered[:2] == [
        "analysts-chat-on-standard-models",
        "contractors-capped-and-routed",
    ]
    assert len(run.uncovered) == 10


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ({"reasons": []}, "unknown key(s) 'reasons'"),
        ({"decision": "permit"}, 'it must be "allow" or "deny"'),
        ({"reason": "engineers-use-code-models"}, "'reason' must be a list of strings"),
        ({"num_errors": -1}, "'num_errors' is -1"),
        ({"obligations": ["cap_max_tokens:1"], "decision": "deny"}, "only with an allow"),
        ({"entities": {"uid": 1}}, "'entities' must be a list"),
        ({"entities": "../../entities.json"}, "outside the test file's folder"),
        (
            {
                "entities": [
                    {"uid": {"type": "SecureDS::Group", "id": "x"}, "attrs": {}, "parents": []}
                ]
            },
            "`SecureDS::Group` which is not declared in the schema",
        ),
    ],
)
def test_malformed_cases_name_file_index_and_problem(
    folder: Path, broken: dict[str, Any], message: str
) -> None:
    good = case()
    write_tests(folder, good, {**good, "reason": [], **broken})
    run = run_policy_tests(load_bundle(folder))
    assert len(run.passed) == 1
    assert run.failed == []
    [error] = run.errors
    assert (error.file, error.index) == ("tests/extra.json", 1)
    assert message in error.message, error.message


@pytest.mark.parametrize(
    ("request_change", "message"),
    [
        ({"principal": 'SecureDS::Usr::"alice"'}, "principal type `SecureDS::Usr` is not declared"),
        ({"principal": 'User::"alice"'}, "Entity types are namespaced: write SecureDS::User"),
        ({"principal": "alice"}, "is not an entity uid; write it as Cedar does"),
        ({"action": 'SecureDS::Action::"delete"'}, "does not exist in the supplied schema"),
        ({"user": "alice"}, "unknown key(s) 'user'"),
        ({"context": {**CONTEXT, "hour_utc": "ten"}}, 'context.hour_utc is "ten"'),
        ({"context": {**CONTEXT, "colour": "red"}}, "`colour` should not exist"),
    ],
)
def test_malformed_requests_say_what_is_wrong(
    folder: Path, request_change: dict[str, Any], message: str
) -> None:
    bad = case()
    bad["request"].update(request_change)
    write_tests(folder, bad)
    [error] = run_policy_tests(load_bundle(folder)).errors
    assert message in error.message, error.message


def test_malformed_test_files_are_reported_not_raised(folder: Path) -> None:
    write_tests(folder, case())
    (folder / "tests" / "broken.json").write_text("[{")
    (folder / "tests" / "object.json").write_text("{}")
    bundle = load_bundle(folder)
    run = run_policy_tests(bundle)
    assert [(e.file, e.index) for e in run.errors] == [
        ("tests/broken.json", None),
        ("tests/object.json", None),
    ]
    assert "not valid JSON" in run.errors[0].message
    assert "must hold a JSON list of test cases" in run.errors[1].message
    assert len(run.passed) == 1


def test_uids_in_every_form_cedar_accepts() -> None:
    assert parse_uid('SecureDS::User::"a\\"b\\u{e9}"', "x") == {
        "type": "SecureDS::User",
        "id": 'a"b\u00e9',
    }
    assert parse_uid({"__entity": {"type": "T", "id": "i"}}, "x") == {"type": "T", "id": "i"}
    with pytest.raises(CaseProblem, match="is not an entity uid"):
        parse_uid({"type": "T"}, "x")


# ------------------------------------------------------------------------- explain


def _live_call(
    roles: tuple[str, ...],
    attributes: dict[str, Any],
    model: str,
    level: str,
    findings: tuple[tuple[str, int], ...],
    started_at: float,
    bound: bool,
) -> Call:
    return make_call(
        {"model": model, "messages": [], "max_tokens": 4096},
        roles=roles,
        attributes=attributes,
        level=level,
        findings=findings,
        bound=bound,
        started_at=started_at,
    )


@pytest.mark.parametrize(
    ("roles", "attributes", "model", "level", "findings", "hour", "bound"),
    [
        (("engineer",), {}, "deepseek-flash", "public", (), 10, True),
        (("contractor",), {}, "deepseek-v4-pro@2026", "public", (), 10, True),
        (("contractor",), {}, "deepseek-flash", "public", (), 22, True),
        (
            ("engineer",),
            {"clearance": 2},
            "deepseek-flash",
            "confidential",
            (("email", 2),),
            9,
            True,
        ),
        (("engineer",), {}, "deepseek-flash", "confidential", (("email", 1),), 9, True),
        (("engineer",), {"clearance": "high"}, "deepseek-flash", "public", (), 9, True),
        (("analyst",), {"shoe_size": 9}, "deepseek-v4-pro", "public", (), 9, True),
        (("engineer",), {}, "gpt-9", "public", (), 9, True),
        (("engineer",), {}, "deepseek-flash", "secret", (("api_key", 1),), 9, False),
    ],
)
def test_explain_decides_exactly_as_the_live_decider(
    roles: tuple[str, ...],
    attributes: dict[str, Any],
    model: str,
    level: str,
    findings: tuple[tuple[str, int], ...],
    hour: int,
    bound: bool,
) -> None:
    bundle = load_bundle(POLICIES)
    started_at = started_at_for(hour, 2, now=time.time())
    live = CedarDecider(bundle).decide(
        _live_call(roles, attributes, model, level, findings, started_at, bound)
    )
    explained = explain_call(
        bundle,
        subject="alice",
        roles=roles,
        attributes=attributes,
        action="chat",
        model=model,
        level=level,
        findings=findings,
        max_tokens=4096,
        started_at=started_at,
        certificate_bound=bound,
        cert_sha256="abc",
        source_ip=live.context["source_ip"]["__extn"]["arg"] if live.context else "",
    ).evaluation
    assert (explained.effect, set(explained.policies), explained.obligations) == (
        live.effect,
        set(live.policies),
        live.obligations,
    )
    # Cedar reports determining policies in no fixed order, and a deny is attributed
    # to the first: compare the attribution only where one policy (or none) decided
    if len(live.policies) < 2:
        assert (explained.denied_by, explained.reason) == (live.denied_by, live.reason)


def test_started_at_for_gives_the_hour_and_weekday_asked_for() -> None:
    for weekday in range(1, 8):
        moment = time.gmtime(started_at_for(13, weekday, now=0.0))
        assert (moment.tm_hour, moment.tm_wday + 1) == (13, weekday)
