"""`secure-ds policy review OLD NEW`: real Cedar, real policy folders (copies of this
repository's policies/, edited), a real audit log written by real calls through the
sandbox, and git revisions of a real repository."""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from secure_ds import PolicyDenied, SecureDeepSeek
from secure_ds.audit import is_checkpoint_line
from secure_ds.cli import main
from secure_ds.cli._policy_review import add_review_parser, run_review
from secure_ds.errors import SecureDSError
from secure_ds.policy import ClaimError, InputBuilder, evaluate, load_bundle
from secure_ds.policy._inputs import ACTION, API_RESOURCE, MODEL, MODEL_ACTIONS
from secure_ds.policy._review import REVIEW_SCHEMA, ReviewReport, obligation_strength, review
from secure_ds.policy._review._common import _Request
from secure_ds.policy._review._diff import Outcome
from secure_ds.policy._review._replay import _Replay, _Side
from secure_ds.sandbox import Sandbox
from tests.conftest import read_audit

pytestmark = pytest.mark.integration

POLICIES = Path(__file__).parents[2] / "policies"
MESSAGES: list[Any] = [{"role": "user", "content": "summarise the release notes"}]

WIDEN = """
@id("analysts-use-premium")
permit (
  principal in SecureDS::Role::"analyst",
  action in [SecureDS::Action::"chat", SecureDS::Action::"stream"],
  resource is SecureDS::Model
);
"""

RESTRICT = """
@id("engineers-off-premium")
@reason("premium models are being retired for engineering")
forbid (
  principal in SecureDS::Role::"engineer",
  action,
  resource == SecureDS::Model::"deepseek-v4-pro"
);
"""


def copy_policies(root: Path, name: str) -> Path:
    target = root / name
    shutil.copytree(POLICIES, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer contains {old!r}: update this test"
    path.write_text(text.replace(old, new))


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_review_parser(parser.add_subparsers(dest="command"))
    return run_review(parser.parse_args(["review", *argv]))


@pytest.fixture(scope="module")
def recorded(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An audit log of real calls decided by (a copy of) the default policies, plus
    one call made without a policy engine."""
    root = tmp_path_factory.mktemp("recorded")
    policy_dir = copy_policies(root, "policies")
    log = root / "audit.jsonl"
    calls = [
        ("alice", ("engineer",), {"clearance": 2}, "deepseek-flash"),
        ("alice", ("engineer",), {"clearance": 2}, "deepseek-v4-pro"),
        ("bob", ("analyst",), {"clearance": 1}, "deepseek-flash"),
        ("bob", ("analyst",), {"clearance": 1}, "deepseek-v4-pro"),  # no permit: denied
        ("carl", ("contractor",), {"employment": "contractor"}, "deepseek-flash"),
    ]
    for subject, roles, attributes, model in calls:
        settings = sandbox.client_settings(
            subject,
            roles=roles,
            attributes=attributes,
            policy_dir=policy_dir,
            policy_reload=0,
            audit_path=log,
        )
        # a denial is recorded like any call; the replay wants both
        with SecureDeepSeek(settings=settings) as client, contextlib.suppress(PolicyDenied):
            client.chat.completions.create(model=model, messages=MESSAGES)
    settings = sandbox.client_settings("dora", roles=("analyst",), audit_path=log)
    with SecureDeepSeek(settings=settings) as client:
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    records = read_audit(log)
    assert len(records) == 6
    assert [r["outcome"] for r in records[:4]] == ["permit", "permit", "permit", "deny"]
    assert records[5]["decide"]["context"] is None  # the call without policies
    return log


@pytest.fixture
def old(tmp_path: Path) -> Path:
    return copy_policies(tmp_path, "old")


def test_identical_policies_change_nothing_and_exit_0(
    recorded: Path, old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = copy_policies(tmp_path, "new")
    report = review(str(old), str(new), audit=[recorded])
    assert report.new_access == []
    assert report.restrictions == []
    assert report.obligation_changes == []
    assert report.reattributed == []
    assert report.policy_changes == []
    assert not report.grants_new_access
    assert report.exit_code() == 0
    assert report.replay.replayed == 5
    assert report.replay.skipped_no_context == 1  # made without a policy engine
    assert report.replay.sweep_requests > 100
    assert report.tests is not None
    assert report.tests.status == "passed"
    text = report.to_markdown()
    assert "NEW grants no new access" in text
    assert "1 record(s) made without a policy engine" in text
    assert cli(str(old), str(new), "--audit", str(recorded)) == 0
    assert "## Policy review" in capsys.readouterr().out


def test_widening_is_new_access_found_in_the_log_and_by_the_sweep(
    recorded: Path, old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = copy_policies(tmp_path, "new")
    (new / "widen.cedar").write_text(WIDEN)

    from_log = review(str(old), str(new), audit=[recorded], sweep=False)
    assert from_log.grants_new_access
    [finding] = [f for f in from_log.new_access if "analysts-use-premium" in f.new.policies]
    assert finding.old.effect == "deny"
    assert finding.new.effect == "permit"
    assert finding.old.decided_by == "no permit matched"
    assert finding.audit_records == 1  # bob's call on the premium model
    assert finding.example.subject == "bob"
    assert finding.example.model == "deepseek-v4-pro"
    assert finding.example.source.startswith("audit.jsonl:")
    assert finding.models == ["deepseek-v4-pro"]

    from_sweep = review(str(old), str(new))
    swept = [f for f in from_sweep.new_access if "analysts-use-premium" in f.new.policies]
    assert swept
    assert all(f.audit_records == 0 and f.sweep_requests > 0 for f in swept)
    assert {a for f in swept for a in f.actions} == {"chat", "stream"}  # both actions

    text = from_log.to_markdown()
    assert "NEW grants new access" in text
    new_access = text.index("### New access")
    assert new_access < text.index("### Restrictions")  # new access comes first
    assert "bob (analyst; clearance=1): `chat` on `deepseek-v4-pro`" in text[new_access:]
    assert "| `analysts-use-premium` | added |" in text

    assert cli(str(old), str(new), "--audit", str(recorded)) == 1
    err = " ".join(capsys.readouterr().err.split())  # rich wraps lines
    assert "re-run with --allow-new-access" in err
    # the widening breaks decision tests of the default set (analysts' expectations):
    # --allow-new-access accepts reviewed new access, not the tests it breaks
    assert cli(str(old), str(new), "--audit", str(recorded), "--allow-new-access") == 1
    shutil.rmtree(new / "tests")  # (a reviewed widening comes with its tests updated)
    assert cli(str(old), str(new), "--audit", str(recorded), "--allow-new-access") == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "allowed by --allow-new-access" in err


def test_restriction_is_listed_and_exits_0(recorded: Path, old: Path, tmp_path: Path) -> None:
    new = copy_policies(tmp_path, "new")
    (new / "restrict.cedar").write_text(RESTRICT)
    # the edit breaks a decision test of the default set; that gate is tested on its own
    report = review(str(old), str(new), audit=[recorded], run_tests=False)
    assert report.new_access == []
    [finding] = [f for f in report.restrictions if f.audit_records]
    assert finding.new.policies == ("engineers-off-premium",)
    assert finding.old.effect == "permit"
    assert finding.example.subject == "alice"
    assert finding.models == ["deepseek-v4-pro"]
    assert not report.grants_new_access
    assert report.exit_code() == 0
    assert "deny by engineers-off-premium" in report.to_markdown()


def test_raising_a_token_cap_is_a_weaker_obligation(
    recorded: Path, old: Path, tmp_path: Path
) -> None:
    new = copy_policies(tmp_path, "new")
    edit(new / "access.cedar", "cap_max_tokens:1024", "cap_max_tokens:4096")
    # the contractor's call, moved into office hours (a Tuesday, 10:00 UTC) so the
    # outcome does not depend on when this test runs
    log = tmp_path / "audit.jsonl"
    lines = _record_lines(recorded)
    record = json.loads(lines[4])
    assert record["actor"]["subject"] == "carl"
    record["decide"]["context"].update(hour_utc=10, weekday=2)
    log.write_text(json.dumps(record) + "\n")

    # the edit breaks a decision test of the default set; that gate is tested on its own
    report = review(str(old), str(new), audit=[log], run_tests=False)
    weaker = [f for f in report.obligation_changes if f.strength == "weaker"]
    assert weaker
    assert all("cap_max_tokens:1024" in f.old.obligations for f in weaker)
    assert all("cap_max_tokens:4096" in f.new.obligations for f in weaker)
    assert sum(f.audit_records for f in weaker) == 1  # carl's call
    assert sum(f.sweep_requests for f in weaker) > 0
    assert report.new_access == []
    assert report.grants_new_access  # asking less of a permitted call is new access
    assert report.exit_code() == 1
    assert report.exit_code(allow_new_access=True) == 0
    text = report.to_markdown()
    assert "**⚠️ weaker**" in text
    assert '@obligation: "cap_max_tokens:1024 route:deepseek-flash" ->' in text


def test_a_renamed_policy_is_removed_and_added(recorded: Path, old: Path, tmp_path: Path) -> None:
    new = copy_policies(tmp_path, "new")
    edit(new / "access.cedar", '@id("everyone-lists-models")', '@id("all-list-models")')
    # the edit breaks a decision test of the default set; that gate is tested on its own
    report = review(str(old), str(new), audit=[recorded], run_tests=False)
    changes = {(c.id, c.change) for c in report.policy_changes}
    assert changes == {("everyone-lists-models", "removed"), ("all-list-models", "added")}
    assert report.new_access == []
    assert report.restrictions == []
    moved = [f for f in report.reattributed if f.actions == ["list_models"]]
    assert moved
    assert moved[0].old.policies == ("everyone-lists-models",)
    assert moved[0].new.policies == ("all-list-models",)
    assert report.exit_code() == 0
    text = report.to_markdown()
    assert "| `everyone-lists-models` | removed | permit |" in text
    assert "Same decision, other determining policies" in text


def test_a_new_that_does_not_load_is_reported_and_exits_1(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = copy_policies(tmp_path, "new")
    with (new / "access.cedar").open("a") as fh:
        fh.write('\n@id("broken")\npermit (principal, action\n')
    report = review(str(old), str(new))
    assert not report.new.loaded
    assert report.new.error is not None
    assert "access.cedar" in report.new.error
    assert "SECURE_DS_POLICY_DIR" not in report.new.error  # PolicyError's prefix, dropped
    assert report.exit_code(allow_new_access=True) == 1
    assert report.replay.sweep_requests == 0  # nothing to replay against
    text = report.to_markdown()
    assert "NEW does not load" in text
    assert "Cedar syntax error" in text
    assert "SECURE_DS_POLICY_DIR" not in text
    assert cli(str(old), str(new), "--allow-new-access") == 1
    assert "NEW does not load" in capsys.readouterr().out


@pytest.mark.parametrize("problem", ["failed", "malformed"])
def test_failing_decision_tests_of_new_fail_the_review(
    problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = copy_policies(tmp_path, "new")
    tests_file = new / "tests" / "access.json"
    cases = json.loads(tests_file.read_text())
    broken = cases[0]
    assert broken["decision"] == "allow", "policies/tests/access.json changed: update this test"
    if problem == "failed":
        broken["decision"] = "deny"  # an expectation the unchanged policies do not meet
        del broken["obligations"]  # (obligations come only with an allow)
    else:
        broken["decison"] = broken.pop("decision")  # a misspelt key: a malformed case
    tests_file.write_text(json.dumps(cases, indent=2))

    report = review(str(POLICIES), str(new))
    assert report.policy_changes == []
    assert not report.grants_new_access  # the policies are the same: only the tests fail
    assert report.tests is not None
    assert report.tests.status == "failed"
    if problem == "failed":
        assert report.tests.failed == (broken["name"],)
    else:
        [error] = report.tests.errors
        assert error.startswith(f"{broken['name']}: unknown key(s) 'decison'")
    assert report.tests_fail
    assert report.exit_code() == 1
    assert report.exit_code(allow_new_access=True) == 1  # it excuses new access only
    text = report.to_markdown()
    assert "**❌ NEW fails its decision tests**" in text
    assert broken["name"] in text[text.index("### Validation and tests") :]

    assert cli(str(POLICIES), str(new), "--no-sweep", "--allow-new-access") == 1
    captured = capsys.readouterr()
    assert broken["name"] in captured.out
    assert "NEW fails its decision tests" in " ".join(captured.err.split())


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(  # noqa: S603 - git with fixed arguments
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example", *args],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """A git repository whose last commit lets analysts use premium models."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    copy_policies(root, "policies")
    git(root, "add", "policies")
    git(root, "commit", "-q", "-m", "policies")
    (root / "policies" / "widen.cedar").write_text(WIDEN)
    git(root, "add", "policies")
    git(root, "commit", "-q", "-m", "analysts may use premium models")
    return root


def test_git_revisions_are_reviewed(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    report = review("HEAD~1", "HEAD:policies", cwd=repo)
    head = git(repo, "rev-parse", "HEAD")
    assert report.old.kind == "git"
    assert report.new.kind == "git"
    assert report.new.location == f"{head}:policies"
    assert [c.id for c in report.policy_changes] == ["analysts-use-premium"]
    assert any("analysts-use-premium" in f.new.policies for f in report.new_access)
    assert report.tests is not None
    assert report.tests.status == "failed"
    monkeypatch.chdir(repo)
    # no log, no sweep: no new access found, but NEW's decision tests still fail it
    assert cli("HEAD~1", "HEAD", "--no-sweep") == 1
    out = capsys.readouterr().out
    assert "NEW grants no new access" in out
    assert "NEW fails its decision tests" in out
    assert cli("HEAD~1", "HEAD") == 1
    assert "analysts-use-premium" in capsys.readouterr().out


def test_missing_revisions_and_folders_say_what_to_do(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SecureDSError, match="not a revision of the git repository"):
        review("HEAD~7", "HEAD", cwd=repo)
    with pytest.raises(SecureDSError, match=r"has no folder 'nowhere'.*REV:path"):
        review("HEAD:nowhere", "HEAD", cwd=repo)
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(SecureDSError, match="not inside a git work tree"):
        review("HEAD~1", "HEAD", cwd=outside)
    assert cli(str(tmp_path / "nope"), str(repo / "policies")) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps lines
    assert f"No folder {tmp_path / 'nope'}" in err


def test_an_old_that_does_not_load_is_a_usage_error(tmp_path: Path) -> None:
    old = copy_policies(tmp_path, "old")
    (old / "access.cedar").write_text("permit (")
    with pytest.raises(SecureDSError, match=r"OLD .* does not load") as raised:
        review(str(old), str(POLICIES))
    assert "SECURE_DS_POLICY_DIR" not in str(raised.value)
    assert "access.cedar" in str(raised.value)


def test_malformed_lines_are_counted_not_fatal(recorded: Path, old: Path, tmp_path: Path) -> None:
    new = copy_policies(tmp_path, "new")
    (new / "widen.cedar").write_text(WIDEN)
    log = tmp_path / "audit.jsonl"
    good = _record_lines(recorded)
    other_schema = json.dumps({"schema": "someone-else/2", "decide": {"context": {}}})
    no_actor_roles = json.loads(good[0])
    no_actor_roles["actor"]["roles"] = "engineer"  # a string, not a list
    log.write_text(
        "\n".join(
            [
                good[0],
                "not json at all",
                "[1, 2, 3]",
                "",
                other_schema,
                good[3][:40],  # a torn write
                json.dumps(no_actor_roles),
                *good[1:],
            ]
        )
        + "\n"
    )
    report = review(str(old), str(new), audit=[log], sweep=False)
    stats = report.replay
    assert stats.malformed == 5
    assert stats.malformed_notes == [
        "audit.jsonl:2: not JSON",
        "audit.jsonl:3: not a JSON object",
        "audit.jsonl:5: schema is 'someone-else/2', not 'secure-ds.audit/1'",
        "audit.jsonl:6: not JSON",
        "audit.jsonl:7: actor.roles is not a list of strings",
    ]
    assert stats.replayed == 5  # every good record still replayed
    assert sum(f.audit_records for f in report.new_access) == 1
    assert "5 malformed line(s) (audit.jsonl:2: not JSON" in report.to_markdown()


def test_an_unreadable_audit_log_is_a_usage_error(old: Path, tmp_path: Path) -> None:
    with pytest.raises(SecureDSError, match="Cannot read the audit log"):
        review(str(old), str(old), audit=[tmp_path / "missing.jsonl"])


def test_json_output_is_versioned_and_written_to_out(
    recorded: Path, old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = copy_policies(tmp_path, "new")
    (new / "widen.cedar").write_text(WIDEN)
    out = tmp_path / "review.json"
    status = cli(str(old), str(new), "--audit", str(recorded), "--json", "--out", str(out))
    assert status == 1
    printed = capsys.readouterr().out
    data = json.loads(printed)
    assert data == json.loads(out.read_text())
    assert data["schema"] == REVIEW_SCHEMA == "secure-ds.policy-review/1"
    assert data["grants_new_access"] is True
    assert data["summary"]["policies_added"] == 1
    assert data["replay"]["replayed"] == 5
    [finding] = [f for f in data["new_access"] if f["audit_records"]]
    assert finding["new"]["policies"] == ["analysts-use-premium"]
    assert finding["example"]["subject"] == "bob"
    assert data["new"]["loaded"] is True
    assert data["old"]["error"] is None


def test_markdown_tables_are_capped(old: Path, tmp_path: Path) -> None:
    new = copy_policies(tmp_path, "new")
    (new / "widen.cedar").write_text(WIDEN)
    (new / "restrict.cedar").write_text(RESTRICT)
    report = review(str(old), str(new), max_rows=1)
    assert len(report.restrictions) > 1
    text = report.to_markdown()
    assert f"_… and {len(report.restrictions) - 1} more (see `--json`)._" in text


def test_the_sweep_sample_is_deterministic_and_said(old: Path, tmp_path: Path) -> None:
    new = copy_policies(tmp_path, "new")
    (new / "widen.cedar").write_text(WIDEN)
    first = review(str(old), str(new), sweep_limit=300)
    second = review(str(old), str(new), sweep_limit=300)
    assert first.replay.sweep_sampled
    assert first.replay.sweep_requests == 300
    assert first.replay.sweep_space > 300
    assert [f.to_json() for f in first.new_access] == [f.to_json() for f in second.new_access]
    assert "a sample (seed 8705) of" in first.to_markdown()


def test_the_sweep_finds_values_from_patterns_and_boundaries(old: Path, tmp_path: Path) -> None:
    new = copy_policies(tmp_path, "new")
    (new / "night-ops.cedar").write_text(
        """
@id("ops-complete-code-at-night")
permit (principal, action == SecureDS::Action::"fim", resource is SecureDS::Model)
when {
  principal has department && principal.department like "op*" && context.hour_utc >= 22
};
"""
    )
    report = review(str(old), str(new))
    found = [f for f in report.new_access if "ops-complete-code-at-night" in f.new.policies]
    assert found
    for finding in found:
        assert finding.actions == ["fim"]
        assert finding.example.attributes["department"] == "op"  # "op*" with * empty
        assert finding.example.hour_utc is not None
        assert finding.example.hour_utc >= 22  # 22 (the literal) or 23 (one past it)
    assert report.restrictions == []


def test_the_secure_ds_command_dispatches_review(
    old: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "review", str(old), str(old), "--no-sweep"]) == 0
    assert "NEW grants no new access" in capsys.readouterr().out
    assert main(["policy", "review", str(old), str(old), "--max-rows", "0"]) == 2
    assert "--max-rows must be at least 1" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize(
    ("old", "new", "strength"),
    [
        (["cap_max_tokens:1024"], ["cap_max_tokens:4096"], "weaker"),
        (["cap_max_tokens:1024"], [], "weaker"),
        (["cap_max_tokens:4096"], ["cap_max_tokens:1024"], "stronger"),
        (["redact:email,phone"], ["redact:email"], "weaker"),
        (["redact:email"], [], "weaker"),
        (["redact:email"], ["redact:email:reversible"], "weaker"),
        (["redact:email"], ["redact:*"], "stronger"),
        ([], ["block:aws_access_key"], "stronger"),
        (["route:deepseek-flash"], [], "weaker"),
        (["route:deepseek-flash"], ["route:deepseek-v4-pro"], "changed"),
        (["cap_max_tokens:1024", "redact:email"], ["cap_max_tokens:512"], "mixed"),
    ],
)
def test_obligation_strength(old: list[str], new: list[str], strength: str) -> None:
    assert obligation_strength(old, new) == strength


# ------------------------------------------------------------------------------------------
# Grouping requests into classes must never change a decision: every request of a class
# is decided, one by one as the live decider would, and compared with its class's result.

TRICKY = """
@id("eng-department-long-prompts")
@obligation("cap_max_tokens:2048")
permit (principal, action == SecureDS::Action::"chat", resource is SecureDS::Model)
when { principal has department && principal.department == "eng" && context.max_tokens <= 4000 };

@id("alice-anywhere")
permit (principal == SecureDS::User::"alice", action, resource);

@id("no-emails-at-night")
@reason("no personal data outside office hours")
forbid (principal, action in SecureDS::Action::"generate", resource)
when { context.findings.contains("email") && (context.hour_utc >= 20 || 6 > context.hour_utc) };

@id("pinned-certificate-only")
@reason("streams only from the registered workstation")
forbid (principal, action == SecureDS::Action::"stream", resource)
when { context has client_cert_sha256 && context.client_cert_sha256 != "abc" };

@id("finance-from-the-lab")
permit (principal, action == SecureDS::Action::"balance", resource)
when {
  principal in SecureDS::Role::"finance" &&
  context.source_ip.isInRange(ip("10.0.0.2/32")) &&
  context.findings.containsAny(["iban", "phone"]) &&
  context.certificate_bound
};

@id("ops-like")
permit (principal, action == SecureDS::Action::"fim", resource)
when { principal has department && principal.department like "op*" };
"""


def random_requests(count: int, seed: int) -> list[_Request]:
    rng = random.Random(seed)
    requests = []
    for _ in range(count):
        attributes: dict[str, Any] = {}
        for name, values in (
            ("clearance", [0, 1, 2, 3, 1, 2, 3, "high", 2.5, True]),  # some are claim errors
            ("department", ["eng", "ops", "opal", "data", "eng", "ops", 7]),
            ("employment", ["employee", "contractor"]),
            ("location", ["DE", "US"]),  # not in the schema: ignored
        ):
            if rng.random() < 0.6:
                attributes[name] = rng.choice(values)
        action = rng.choice(["chat", "stream", "fim", "fhe_infer", "list_models", "balance"])
        model = None
        if action in MODEL_ACTIONS:
            model = rng.choice(["deepseek-flash", "deepseek-v4-pro"] * 4 + ["", "unlisted"])
        findings = rng.sample(["email", "phone", "iban"], rng.randint(0, 2))
        level = rng.choice(["unclassified", "public", "internal", "confidential", "secret"])
        context: dict[str, Any] = {
            "classification": level,
            "classification_level": {"unclassified": -1, "public": 0, "internal": 1}.get(
                level, 2 if level == "confidential" else 3
            ),
            "findings": findings,
            "finding_count": len(findings) * rng.randint(1, 3),
            "max_tokens": rng.choice([0, 3999, 4000, 4001, 8000]),
            "stream": action == "stream",
            "hour_utc": rng.randrange(24),
            "weekday": rng.randint(1, 7),
            "source_ip": {"__extn": {"fn": "ip", "arg": rng.choice(["10.0.0.1", "10.0.0.2"])}},
            "auth": rng.choice(["jwt", "api_key"]),
            "certificate_bound": rng.random() < 0.8,
        }
        if rng.random() < 0.5:
            context["client_cert_sha256"] = rng.choice(["abc", "def"])
        if rng.random() < 0.05:
            context["hour_utc"] = "noon"  # not a Long: the request does not build
        requests.append(
            _Request(
                subject=rng.choice(["alice", "bob", "carl", None]),
                roles=tuple(
                    rng.sample(["engineer", "analyst", "contractor", "finance"], 2)[
                        : rng.randint(0, 2)
                    ]
                ),
                attributes=attributes,
                action=action,
                model=model,
                context=context,
            )
        )
    return requests


def decide_alone(bundle: Any, request: _Request) -> Outcome:
    """One request, decided the way CedarDecider.decide does, with no grouping."""
    resource: dict[str, str] = API_RESOURCE
    if request.action in MODEL_ACTIONS:
        if request.model not in bundle.models:
            return Outcome("deny", (), (), "catalogue", "")
        resource = {"type": MODEL, "id": request.model}
    try:
        principal = InputBuilder(bundle).principal(
            request.subject, request.roles, request.attributes
        )
    except ClaimError as exc:
        return Outcome("deny", (), (), f"claim:{exc.claim}" if exc.claim else "claims", "")
    cedar_request = {
        "principal": principal.uid,
        "action": {"type": ACTION, "id": request.action},
        "resource": resource,
        "context": dict(request.context),
    }
    return Outcome.of(evaluate(bundle, None, cedar_request, principal.entities))


def test_grouping_never_changes_a_decision(tmp_path: Path) -> None:
    old_dir = copy_policies(tmp_path, "old")
    new_dir = copy_policies(tmp_path, "new")
    (new_dir / "tricky.cedar").write_text(TRICKY)
    old, new = load_bundle(old_dir), load_bundle(new_dir)
    replay = _Replay(_Side(old), _Side(new))
    requests = random_requests(1500, seed=7)
    cases = [replay.case_for(r) for r in requests]
    replay.evaluate(None)
    for request, case in zip(requests, cases, strict=True):
        assert case.old is not None
        assert case.new is not None
        assert Outcome.of(case.old) == decide_alone(old, request), request
        assert Outcome.of(case.new) == decide_alone(new, request), request
    assert len(replay.cases) < len(requests) * 0.8  # and the grouping does group


def test_review_is_exported_by_the_policy_package() -> None:
    import secure_ds.policy

    assert secure_ds.policy.review is review
    assert secure_ds.policy.ReviewReport is ReviewReport
    assert {"review", "ReviewReport"} <= set(secure_ds.policy.__all__)


def test_report_round_trips_through_json_types(old: Path) -> None:
    report = review(str(old), str(old), sweep=False, run_tests=False)
    assert isinstance(report, ReviewReport)
    assert json.loads(json.dumps(report.to_json()))["schema"] == REVIEW_SCHEMA
    assert report.tests is None
    assert "Decision tests" not in report.to_markdown()


def _record_lines(log: Path) -> list[str]:
    """A log's call-record lines, without its checkpoint lines."""
    return [line for line in log.read_text().splitlines() if not is_checkpoint_line(line)]
