"""The Cedar decision point: loading refuses broken folders, decisions fail closed,
obligations combine as documented, and calls are decided from the token and the call."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from secure_ds.guard import Decision
from secure_ds.guard._call import Call
from secure_ds.policy import (
    CedarDecider,
    ObligationConflict,
    PolicyError,
    PolicyStore,
    load_bundle,
    merge_obligations,
)
from tests.policy._calls import make_call as shared_make_call
from tests.policy._calls import monday_at

POLICIES = Path(__file__).parents[2] / "policies"
SCHEMA = (POLICIES / "secure-ds.cedarschema").read_text()
CATALOGUE = (POLICIES / "entities.json").read_text()


def folder(tmp_path: Path, policies: str, *, name: str = "p") -> Path:
    """A policy folder with the default schema and catalogue and the given policies."""
    path = tmp_path / name
    path.mkdir()
    (path / "secure-ds.cedarschema").write_text(SCHEMA)
    (path / "entities.json").write_text(CATALOGUE)
    (path / "main.cedar").write_text(policies)
    return path


def make_call(
    body: dict[str, Any] | None = None, *, hour: int | None = None, **kwargs: Any
) -> Call:
    started_at = monday_at(hour) if hour is not None else None
    return shared_make_call(body, started_at=started_at, **kwargs)


PERMIT_ENGINEERS = """
@id("engineers")
permit (principal in SecureDS::Role::"engineer", action, resource);
"""


# --------------------------------------------------------------------------- loading


def test_the_shipped_folder_loads_with_a_revision_and_named_policies() -> None:
    bundle = load_bundle(POLICIES)
    assert bundle.revision.startswith("sha256:")
    assert len(bundle.revision) == 71
    assert "no-secrets-in-prompts" in bundle.policies
    assert bundle.policies["contractors-capped-and-routed"].obligations == (
        "cap_max_tokens:1024",
        "route:deepseek-flash",
    )
    assert bundle.models == {"deepseek-flash", "deepseek-v4-pro"}
    assert all(info.name == pid for pid, info in bundle.policies.items())


def test_revision_changes_with_any_file(tmp_path: Path) -> None:
    path = folder(tmp_path, PERMIT_ENGINEERS)
    before = load_bundle(path).revision
    (path / "entities.json").write_text(CATALOGUE.replace("1048576", "65536"))
    assert load_bundle(path).revision != before


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = folder(tmp_path, PERMIT_ENGINEERS + '\n@id("x")\npermit (principal, action resource);\n')
    with pytest.raises(PolicyError, match=r"main\.cedar:6: Cedar syntax error") as info:
        load_bundle(path)
    assert info.value.variable == "SECURE_DS_POLICY_DIR"
    assert info.value.file == path / "main.cedar"


def test_a_schema_type_error_refuses_to_load(tmp_path: Path) -> None:
    bad = '@id("bad")\npermit (principal, action, resource is SecureDS::Model)\n'
    bad += "when { resource.cost_tier > 3 };\n"
    with pytest.raises(PolicyError, match=r"does not validate against the schema: \[bad\]"):
        load_bundle(folder(tmp_path, bad))


def test_an_unknown_attribute_refuses_to_load(tmp_path: Path) -> None:
    bad = '@id("typo")\npermit (principal, action, resource is SecureDS::Model)\n'
    bad += 'when { resource.cost_teir == "standard" };\n'
    with pytest.raises(PolicyError, match="cost_teir"):
        load_bundle(folder(tmp_path, bad))


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"no \.cedar policy files"):
        load_bundle(tmp_path)


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="is not a directory"):
        load_bundle(tmp_path / "nope")


def test_a_policy_file_replaced_by_a_directory_is_refused(tmp_path: Path) -> None:
    path = folder(tmp_path, PERMIT_ENGINEERS)
    (path / "extra.cedar").mkdir()
    with pytest.raises(PolicyError, match=r"extra\.cedar is a directory"):
        load_bundle(path)


def test_a_huge_policy_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = folder(tmp_path, PERMIT_ENGINEERS)
    (path / "huge.cedar").write_text("// padding\n" * 100_000)
    with pytest.raises(PolicyError, match="over the 1048576-byte limit"):
        load_bundle(path)


def test_a_duplicate_policy_id_is_refused(tmp_path: Path) -> None:
    path = folder(tmp_path, PERMIT_ENGINEERS)
    (path / "again.cedar").write_text(PERMIT_ENGINEERS)
    with pytest.raises(PolicyError, match=r"'engineers' is used in again\.cedar and again in main"):
        load_bundle(path)


def test_two_schemas_are_refused(tmp_path: Path) -> None:
    path = folder(tmp_path, PERMIT_ENGINEERS)
    (path / "other.cedarschema").write_text(SCHEMA)
    with pytest.raises(PolicyError, match=r"exactly one \.cedarschema"):
        load_bundle(path)


def test_a_catalogue_entry_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    path = folder(tmp_path, PERMIT_ENGINEERS)
    (path / "entities.json").write_text(CATALOGUE.replace("1048576", '"a lot"', 1))
    with pytest.raises(PolicyError, match="context_tokens"):
        load_bundle(path)


def test_templates_are_refused(tmp_path: Path) -> None:
    template = '@id("t")\npermit (principal == ?principal, action, resource);\n'
    with pytest.raises(PolicyError, match="templates"):
        load_bundle(folder(tmp_path, template))


def test_unnamed_policies_get_file_and_position_ids(tmp_path: Path) -> None:
    bundle = load_bundle(folder(tmp_path, "permit (principal, action, resource);\n" * 2))
    assert sorted(bundle.policies) == ["main.cedar#0", "main.cedar#1"]


# --------------------------------------------------------------------------- obligations


def test_the_stricter_cap_wins_and_redactions_merge() -> None:
    merged = merge_obligations(
        [
            "cap_max_tokens:4096",
            "redact:email:reversible",
            "cap_max_tokens:1024",
            "redact:phone",
            "block:private_key",
            "block:api_key",
        ]
    )
    assert merged == (
        "block:api_key,private_key",
        "redact:email,phone",  # one of them was not reversible: the result is not
        "cap_max_tokens:1024",
    )


def test_two_routes_conflict() -> None:
    with pytest.raises(ObligationConflict, match="deepseek-flash, deepseek-v4-pro"):
        merge_obligations(["route:deepseek-flash", "route:deepseek-v4-pro"])


def test_unknown_obligations_pass_through_once() -> None:
    assert merge_obligations(["require:fhe", "require:fhe"]) == ("require:fhe",)


# --------------------------------------------------------------------------- decisions


def decide(path: Path, call: Call) -> Decision:
    return CedarDecider(load_bundle(path)).decide(call)


def test_default_policies_permit_an_engineer_and_record_the_input() -> None:
    decision = CedarDecider(load_bundle(POLICIES)).decide(make_call(hour=12))
    assert decision.effect == "permit"
    assert decision.policies == ("engineers-use-code-models",)
    assert decision.policy_names == ("engineers-use-code-models",)
    assert decision.context is not None
    assert decision.context["hour_utc"] == 12
    assert decision.context["weekday"] == 1
    assert decision.context["certificate_bound"] is True
    assert decision.record["revision"] == load_bundle(POLICIES).revision
    assert decision.eval_us > 0


def test_default_policies_forbid_secrets_and_name_the_policy_and_reason() -> None:
    call = make_call(level="secret", findings=(("aws_access_key", 1),))
    decision = CedarDecider(load_bundle(POLICIES)).decide(call)
    assert decision.effect == "deny"
    assert decision.deciding_policy == "no-secrets-in-prompts"
    assert "must not contain credentials" in decision.reason


def test_default_policies_route_and_cap_contractors_in_office_hours_only() -> None:
    decider = CedarDecider(load_bundle(POLICIES))
    body = {"model": "deepseek-v4-pro", "messages": [], "max_tokens": 8000}
    day = decider.decide(make_call(body, roles=("contractor",), hour=10))
    assert day.effect == "permit"
    assert day.obligations == ("cap_max_tokens:1024", "route:deepseek-flash")
    assert day.advice == ("contractor calls are capped at 1024 tokens on deepseek-flash",)
    night = decider.decide(make_call(body, roles=("contractor",), hour=22))
    assert night.effect == "deny"
    assert night.deciding_policy == "contractors-office-hours"


def test_confidential_data_needs_clearance_then_is_redacted() -> None:
    decider = CedarDecider(load_bundle(POLICIES))
    findings = (("email", 2),)
    uncleared = decider.decide(make_call(level="confidential", findings=findings))
    assert uncleared.deciding_policy == "confidential-needs-clearance"
    cleared = decider.decide(
        make_call(level="confidential", findings=findings, attributes={"clearance": 2})
    )
    assert cleared.effect == "permit"
    assert set(cleared.policies) == {
        "engineers-use-code-models",
        "confidential-redacted-for-engineers",
    }
    assert cleared.obligations == ("redact:credit_card,email,iban,phone,us_ssn:reversible",)


def test_an_unbound_token_cannot_send_a_prompt() -> None:
    decision = CedarDecider(load_bundle(POLICIES)).decide(make_call(bound=False))
    assert decision.deciding_policy == "prompts-need-certificate-bound-token"


def test_no_matching_permit_is_a_deny_saying_so() -> None:
    decision = CedarDecider(load_bundle(POLICIES)).decide(make_call(roles=("visitor",)))
    assert decision.effect == "deny"
    assert decision.policies == ()
    assert decision.deciding_policy == "no permit matched"


def test_a_model_outside_the_catalogue_is_denied() -> None:
    call = make_call({"model": "gpt-4o", "messages": []})
    decision = CedarDecider(load_bundle(POLICIES)).decide(call)
    assert decision.deciding_policy == "catalogue"
    assert "'gpt-4o' is not in the policy catalogue" in decision.reason


def test_a_pinned_model_is_decided_by_its_name() -> None:
    call = make_call({"model": "deepseek-flash@2026-10-17", "messages": []})
    assert CedarDecider(load_bundle(POLICIES)).decide(call).effect == "permit"


def test_a_claim_of_the_wrong_type_is_denied_naming_the_claim() -> None:
    call = make_call(attributes={"clearance": "high"})
    decision = CedarDecider(load_bundle(POLICIES)).decide(call)
    assert decision.effect == "deny"
    assert decision.deciding_policy == "claim:clearance"
    assert "expected to have type long" in decision.reason


def test_claims_the_schema_does_not_declare_are_ignored() -> None:
    call = make_call(attributes={"email": "a@example.com", "clearance": 1})
    assert CedarDecider(load_bundle(POLICIES)).decide(call).effect == "permit"


def test_an_evaluation_error_denies_even_when_only_a_forbid_errs(tmp_path: Path) -> None:
    # Cedar skips a policy whose evaluation errors; a skipped forbid would let the
    # permit through. secure-ds denies instead.
    overflow = PERMIT_ENGINEERS + (
        '@id("overflowing-forbid")\nforbid (principal, action, resource)\n'
        "when { context.max_tokens * 4611686018427387904 > 0 };\n"
    )
    call = make_call({"model": "deepseek-flash", "messages": [], "max_tokens": 4})
    decision = decide(folder(tmp_path, overflow), call)
    assert decision.effect == "deny"
    assert decision.deciding_policy == "policy-error"
    assert decision.errors
    assert "overflowing-forbid" in decision.errors[0]


def test_conflicting_routes_deny(tmp_path: Path) -> None:
    routes = PERMIT_ENGINEERS.replace('@id("engineers")', '@id("a")\n@obligation("route:x")')
    routes += PERMIT_ENGINEERS.replace('@id("engineers")', '@id("b")\n@obligation("route:y")')
    decision = decide(folder(tmp_path, routes), make_call())
    assert decision.effect == "deny"
    assert decision.deciding_policy == "obligation-conflict"


def test_obligations_of_all_determining_permits_apply_stricter_cap(tmp_path: Path) -> None:
    caps = PERMIT_ENGINEERS.replace(
        '@id("engineers")', '@id("a")\n@obligation("cap_max_tokens:4096")'
    )
    caps += PERMIT_ENGINEERS.replace(
        '@id("engineers")', '@id("b")\n@obligation_2("cap_max_tokens:512")'
    )
    decision = decide(folder(tmp_path, caps), make_call())
    assert decision.effect == "permit"
    assert decision.obligations == ("cap_max_tokens:512",)


# --------------------------------------------------------------------------- hot reload


def test_reload_swaps_a_good_version_and_keeps_the_last_good_on_a_bad_one(
    tmp_path: Path,
) -> None:
    path = folder(tmp_path, PERMIT_ENGINEERS)
    store = PolicyStore(path, reload_interval=0)
    decider = CedarDecider(store)
    assert decider.decide(make_call(roles=("analyst",))).effect == "deny"
    first = store.bundle.revision

    (path / "main.cedar").write_text(PERMIT_ENGINEERS.replace("engineer", "analyst"))
    assert store.reload() is True
    assert decider.decide(make_call(roles=("analyst",))).effect == "permit"

    (path / "main.cedar").write_text("permit (principal, action resource);\n")
    assert store.reload() is False
    kept = decider.decide(make_call(roles=("analyst",)))
    assert kept.effect == "permit"
    assert kept.revision != first
    assert kept.reload_error is not None
    assert "syntax error" in kept.reload_error
    assert isinstance(store.last_error, PolicyError)

    (path / "main.cedar").write_text(PERMIT_ENGINEERS)
    assert store.reload() is True
    assert store.last_error is None
    assert decider.decide(make_call(roles=("analyst",))).reload_error is None


def test_the_watcher_picks_up_a_change(tmp_path: Path) -> None:
    path = folder(tmp_path, PERMIT_ENGINEERS)
    store = PolicyStore(path, reload_interval=0.05)
    try:
        before = store.bundle.revision
        (path / "main.cedar").write_text(PERMIT_ENGINEERS.replace("engineer", "analyst"))
        deadline = time.monotonic() + 10
        while store.bundle.revision == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.bundle.revision != before
    finally:
        store.close()


def test_a_broken_folder_stops_the_store_from_starting(tmp_path: Path) -> None:
    path = folder(tmp_path, "permit (principal, action resource);\n")
    with pytest.raises(PolicyError, match="syntax error"):
        PolicyStore(path, reload_interval=0)


def test_the_shipped_folder_copies_cleanly(tmp_path: Path) -> None:
    # the review and test tooling work on copies; a copy must load to the same revision
    copy = tmp_path / "copy"
    shutil.copytree(POLICIES, copy)
    assert load_bundle(copy).revision == load_bundle(POLICIES).revision


def test_concurrent_decisions_during_reloads_are_consistent(tmp_path: Path) -> None:
    # several threads decide for different identities while the folder flips between
    # two versions; every decision must match one of the two versions, never an error
    from concurrent.futures import ThreadPoolExecutor

    analysts = PERMIT_ENGINEERS.replace("engineer", "analyst")
    path = folder(tmp_path, PERMIT_ENGINEERS)
    store = PolicyStore(path, reload_interval=0)
    decider = CedarDecider(store)
    revisions = {store.bundle.revision}

    def decide_many(roles: tuple[str, ...]) -> set[tuple[str, str | None]]:
        seen = set()
        for _ in range(200):
            decision = decider.decide(make_call(roles=roles))
            assert not decision.errors
            if decision.effect == "permit":  # only ever by the version naming this role
                assert decision.policies == (roles[0] + "s",)
            seen.add((decision.effect, decision.revision))
        return seen

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(decide_many, (r,)) for r in ("engineer", "analyst") * 2]
        for text in (analysts, PERMIT_ENGINEERS, analysts):
            (path / "main.cedar").write_text(text)
            store.reload()
            revisions.add(store.bundle.revision)
        results = [f.result() for f in futures]
    assert len(revisions) == 2
    for seen in results:
        assert {revision for _, revision in seen} <= revisions
        assert {effect for effect, _ in seen} <= {"permit", "deny"}
