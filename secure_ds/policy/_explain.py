"""Explain one decision: what the decide stage would answer for a call, and why.

:func:`explain_call` takes a call described the way the live guard sees it (the
token's subject, roles and claims; the action and model; the DLP classification;
the time; the certificate binding) and decides it the way
:class:`~secure_ds.policy.CedarDecider` does: the same catalogue check, the same
principal built from the claims by :class:`~secure_ds.policy.InputBuilder`, the same
context from :func:`~secure_ds.policy.call_context`, the same interpretation.
:func:`explain_request` takes a Cedar request (and entities) as a decision test
case gives it. Either way the result carries the request in test-case form, so an
explained call can be pasted into ``tests/*.json``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy

from ._bundle import CATALOGUE_FILE, PolicyBundle, PolicyInfo
from ._decider import Evaluation, PolicyOutcomes, interpret, not_in_catalogue
from ._inputs import (
    ACTION,
    API_RESOURCE,
    MODEL,
    MODEL_ACTIONS,
    ClaimError,
    InputBuilder,
    call_context,
    principal_json,
)
from ._testing import CaseProblem, authorize, case_entities, parse_request, parse_uid

__all__ = ["Explanation", "explain_call", "explain_request", "started_at_for"]

_MONDAY = 1704067200  # 2024-01-01T00:00:00Z, a Monday


@dataclass(frozen=True)
class Explanation:
    """A decision with what led to it."""

    evaluation: Evaluation
    request: dict[str, Any]  # the Cedar request, uids as {"type", "id"}
    entities: list[dict[str, Any]]  # what the request brings beyond the catalogue
    policies: tuple[PolicyInfo, ...]  # the determining policies, in folder order
    ignored_claims: tuple[str, ...] = ()  # claims the schema does not declare

    @property
    def decision(self) -> str:
        return self.evaluation.effect

    @property
    def why(self) -> str:
        """One sentence: why the call is permitted or denied, and what to do."""
        ev = self.evaluation
        if ev.effect == "permit":
            names = ", ".join(f"{p.id} ({p.file})" for p in self.policies)
            return f"permitted by {names}" if names else "permitted"
        by = ev.denied_by
        if by == "catalogue":
            return (
                f"{ev.reason}: the decide stage refuses it before any policy is evaluated. "
                f"Add the model to {CATALOGUE_FILE} to let the policies decide."
            )
        if by.startswith("claim") and not self.policies:
            return (
                f"{ev.reason}. The decide stage denies every call under such a token: fix "
                "the claim at the identity provider, or the attribute's type in the schema."
            )
        if by == "no permit matched":
            return "no permit matched: no policy permits this call"
        if by in ("policy-error", "obligation-conflict"):
            return ev.reason
        forbids = [p for p in self.policies if p.effect == "forbid"]
        if forbids:
            said = "; ".join(
                f"{p.id} ({p.file}): {p.annotations.get('reason') or 'a forbid policy matched'}"
                for p in forbids
            )
            return f"denied by forbid {said}"
        return ev.reason

    def as_test_case(self) -> dict[str, Any]:
        """The call as a decision test case expecting what was decided."""
        case: dict[str, Any] = {
            "request": self.request,
            "entities": self.entities,
            "decision": "allow" if self.evaluation.effect == "permit" else "deny",
            "reason": list(self.evaluation.policies),
            "num_errors": len(self.evaluation.errors),
        }
        if self.evaluation.effect == "permit":
            case["obligations"] = list(self.evaluation.obligations)
        return case

    def as_json(self) -> dict[str, Any]:
        ev = self.evaluation
        return {
            "decision": ev.effect,
            "why": self.why,
            "denied_by": ev.denied_by or None,
            "reason": ev.reason,
            "policies": [
                {
                    "id": p.id,
                    "file": p.file,
                    "effect": p.effect,
                    "reason": p.annotations.get("reason") or None,
                }
                for p in self.policies
            ],
            "obligations": list(ev.obligations),
            "advice": list(ev.advice),
            "errors": list(ev.errors),
            "ignored_claims": list(self.ignored_claims),
            "test_case": self.as_test_case(),
        }


def started_at_for(hour: int | None, weekday: int | None, now: float | None = None) -> float:
    """A UTC time at ``hour`` (0-23) on ISO ``weekday`` (1 Monday .. 7 Sunday); what is
    not given is taken from ``now`` (default: the current time), as a live call would."""
    moment = time.gmtime(time.time() if now is None else now)
    h = moment.tm_hour if hour is None else hour
    d = moment.tm_wday + 1 if weekday is None else weekday
    return float(_MONDAY + (d - 1) * 86400 + h * 3600 + moment.tm_min * 60)


def explain_call(
    bundle: PolicyBundle,
    *,
    subject: str | None,
    roles: Sequence[str],
    attributes: Mapping[str, Any],
    action: str,
    model: str | None = None,
    resource: str | None = None,
    level: str = "public",
    findings: Sequence[tuple[str, int]] = (),
    max_tokens: int | None = None,
    started_at: float | None = None,
    auth: str = "jwt",
    certificate_bound: bool = True,
    cert_sha256: str | None = None,
    source_ip: str = "127.0.0.1",
) -> Explanation:
    """Decide a call as the live decide stage would (see CedarDecider.decide)."""
    context = call_context(
        level=level,
        findings=findings,
        max_tokens=max_tokens,
        stream=action == "stream",
        started_at=time.time() if started_at is None else started_at,
        auth=auth,
        certificate_bound=certificate_bound,
        cert_sha256=cert_sha256,
        source_ip=source_ip,
    )
    entity = principal_json(subject, roles, attributes)
    request: dict[str, Any] = {
        "principal": entity["uid"],
        "action": {"type": ACTION, "id": action},
        "resource": dict(API_RESOURCE),
        "context": context,
    }

    def refused(denied_by: str, reason: str) -> Explanation:
        evaluation = Evaluation("deny", (), (), (), (), denied_by, reason)
        return Explanation(evaluation, request, [entity], ())

    if resource is not None:
        request["resource"] = parse_uid(resource, "--resource")
    elif action in MODEL_ACTIONS:
        # as the decider: a pinned model (name@version) is judged by its name
        name = (model or "").split("@", 1)[0]
        request["resource"] = {"type": MODEL, "id": name}
    target = request["resource"]
    if target["type"] == MODEL and target["id"] not in bundle.models:
        evaluation = not_in_catalogue(target["id"])
        return refused(evaluation.denied_by, evaluation.reason)
    try:
        inputs = InputBuilder(bundle).principal(subject, roles, attributes)
    except ClaimError as exc:
        return refused(f"claim:{exc.claim}" if exc.claim else "claims", str(exc))
    kept = {k: v for k, v in attributes.items() if k not in inputs.ignored_claims}
    entity = {**entity, "attrs": kept}
    result = cedarpy.is_authorized(request, bundle.policy_set, inputs.entities, bundle.schema)
    if result.decision is cedarpy.Decision.NoDecision:
        # e.g. an action the schema does not declare: say so the way a test case would
        authorize(bundle, request, [*bundle.catalogue_json, entity])
    return _explained(bundle, request, [entity], result, inputs.ignored_claims)


def explain_request(bundle: PolicyBundle, raw: Any, base: Path) -> Explanation:
    """Decide a Cedar request given as JSON: ``{"principal", "action", "resource",
    "context", "entities"?}`` or a decision test case (``{"request", "entities", ...}``).
    Raises :class:`CaseProblem` when it does not fit the schema."""
    if not isinstance(raw, dict):
        raise CaseProblem(
            "the request must be a JSON object: a Cedar request "
            '({"principal", "action", "resource", "context"}, optionally "entities") '
            "or a decision test case"
        )
    if "request" in raw:
        request_raw, entities_raw = raw["request"], raw.get("entities", [])
    else:
        request_raw = {k: v for k, v in raw.items() if k != "entities"}
        entities_raw = raw.get("entities", [])
    request = parse_request(request_raw)
    entities = case_entities(bundle, entities_raw, base)
    given = [e for e in entities if e not in bundle.catalogue_json]
    target = request["resource"]
    known = bundle.models | {
        str(e["uid"].get("id"))
        for e in given
        if isinstance(e, dict) and isinstance(e.get("uid"), dict) and e["uid"].get("type") == MODEL
    }
    if target["type"] == MODEL and target["id"] not in known:
        return Explanation(not_in_catalogue(target["id"]), request, given, ())
    result = authorize(bundle, request, entities)
    return _explained(bundle, request, given, result, ())


def _explained(
    bundle: PolicyBundle,
    request: dict[str, Any],
    entities: list[Any],
    result: cedarpy.AuthzResult,
    ignored: tuple[str, ...],
) -> Explanation:
    evaluation = interpret(PolicyOutcomes(bundle), result)
    # in folder order: Cedar reports determining policies in no fixed order
    determining = set(evaluation.policies)
    policies = tuple(info for pid, info in bundle.policies.items() if pid in determining)
    return Explanation(evaluation, request, entities, policies, ignored)
