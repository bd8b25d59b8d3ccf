"""The diff between the sides: each decision normalised (:class:`Outcome`), cases
whose outcome changes the same way grouped into one :class:`Finding`, how NEW's
obligations compare with OLD's (:func:`obligation_strength`), and the policies
added, removed or modified (:func:`policy_changes`)."""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .._bundle import PolicyBundle
from .._decider import Evaluation
from ._replay import _Case
from ._requests import Example, _example

FindingKind = Literal["new-access", "restriction", "obligations", "reattributed"]
Strength = Literal["weaker", "stronger", "mixed", "changed"]


@dataclass(frozen=True)
class Outcome:
    """One side's decision, normalised for comparison: Cedar lists the determining
    policies in no fixed order, so they are sorted, and a deny by forbids is
    attributed to all of them rather than to whichever Cedar listed first."""

    effect: str
    policies: tuple[str, ...]
    obligations: tuple[str, ...]
    denied_by: str  # what a deny is attributed to when that is not a forbid policy
    reason: str = field(compare=False)

    @classmethod
    def of(cls, evaluation: Evaluation) -> Outcome:
        policies = tuple(sorted(set(evaluation.policies)))
        denied_by = evaluation.denied_by
        if evaluation.effect == "deny" and denied_by in policies:
            denied_by = ""
        return cls(
            evaluation.effect, policies, evaluation.obligations, denied_by, evaluation.reason
        )

    @property
    def decided_by(self) -> str:
        """The policies behind a permit or a forbid, or what else a deny is due to."""
        if self.denied_by:
            return self.denied_by
        return ", ".join(self.policies) or "no permit matched"

    def to_json(self) -> dict[str, Any]:
        return {
            "effect": self.effect,
            "policies": list(self.policies),
            "obligations": list(self.obligations),
            "denied_by": self.denied_by or None,
            "reason": self.reason,
        }


@dataclass
class Finding:
    """Requests whose outcome changes the same way (same OLD and NEW outcome): one
    row of the report, with the roles, actions and models it was seen for."""

    kind: FindingKind
    old: Outcome
    new: Outcome
    example: Example  # a recorded call when there is one, else a sweep request
    strength: Strength | None = None  # for obligation changes
    roles: list[tuple[str, ...]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)  # recorded subjects, a few
    classes: int = 0  # request classes evaluated
    audit_records: int = 0
    sweep_requests: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "old": self.old.to_json(),
            "new": self.new.to_json(),
            "strength": self.strength,
            "roles": [list(r) for r in self.roles],
            "actions": list(self.actions),
            "models": list(self.models),
            "subjects": list(self.subjects),
            "audit_records": self.audit_records,
            "sweep_requests": self.sweep_requests,
            "classes": self.classes,
            "example": self.example.to_json(),
        }


def _parse_obligations(obligations: Iterable[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {"others": set()}
    for obligation in obligations:
        verb, _, arg = obligation.partition(":")
        if verb == "cap_max_tokens" and arg.isdigit():
            parsed["cap"] = int(arg)
        elif verb == "route" and arg:
            parsed["route"] = arg
        elif verb in ("redact", "block") and arg:
            kinds, _, flag = arg.partition(":")
            parsed[verb] = ({k for k in kinds.split(",") if k}, flag == "reversible")
        else:
            parsed["others"].add(obligation)
    return parsed


def _covers(wide: set[str], narrow: set[str]) -> bool:
    return "*" in wide or narrow <= wide


def obligation_strength(old: Sequence[str], new: Sequence[str]) -> Strength:
    """How NEW's obligations compare with OLD's for one permit: ``weaker`` when NEW
    asks less of the call in some way and more in none (a higher or no token cap,
    fewer kinds redacted or blocked, a redaction made reversible, a route or another
    obligation dropped), ``stronger`` for the reverse, ``mixed`` for both, and
    ``changed`` when it is neither (a route to another model)."""
    a, b = _parse_obligations(old), _parse_obligations(new)
    weaker = stronger = False
    if a.get("cap") != b.get("cap"):
        if b.get("cap") is None or (a.get("cap") is not None and b["cap"] > a["cap"]):
            weaker = True
        else:
            stronger = True
    for verb in ("redact", "block"):
        before, after = a.get(verb), b.get(verb)
        if before == after:
            continue
        if after is None:
            weaker = True
        elif before is None:
            stronger = True
        else:
            if not _covers(after[0], before[0]):
                weaker = True
            if not _covers(before[0], after[0]):
                stronger = True
            if after[1] and not before[1]:
                weaker = True  # reversible: the original comes back on this machine
            if before[1] and not after[1]:
                stronger = True
    route_changed = False
    if a.get("route") != b.get("route"):
        if b.get("route") is None:
            weaker = True
        elif a.get("route") is None:
            stronger = True
        else:
            route_changed = True
    if a["others"] - b["others"]:
        weaker = True
    if b["others"] - a["others"]:
        stronger = True
    if weaker and stronger:
        return "mixed"
    if weaker:
        return "weaker"
    if stronger and not route_changed:
        return "stronger"
    return "changed"  # another route, or the same obligations written differently


def _findings(cases: Iterable[_Case]) -> list[Finding]:
    groups: dict[Hashable, Finding] = {}
    for case in cases:
        if case.old is None or case.new is None:
            continue
        old, new = Outcome.of(case.old), Outcome.of(case.new)
        strength: Strength | None = None
        kind: FindingKind
        if old.effect != new.effect:
            kind = "new-access" if new.effect == "permit" else "restriction"
        elif old.effect == "permit" and old.obligations != new.obligations:
            kind = "obligations"
            strength = obligation_strength(old.obligations, new.obligations)
        elif old != new:
            kind = "reattributed"
        else:
            continue
        request = case.request
        finding = groups.get((kind, old, new))
        if finding is None:
            finding = groups[(kind, old, new)] = Finding(
                kind, old, new, _example(request, case.source), strength
            )
        elif finding.example.source == "sweep" and case.audit:
            finding.example = _example(request, case.source)  # a recorded call says more
        roles = tuple(sorted(set(request.roles)))
        if roles not in finding.roles:
            finding.roles.append(roles)
        if request.action not in finding.actions:
            finding.actions.append(request.action)
        if request.model and request.model not in finding.models:
            finding.models.append(request.model)
        for subject in case.subjects:
            if subject not in finding.subjects and len(finding.subjects) < 5:
                finding.subjects.append(subject)
        finding.classes += 1
        finding.audit_records += case.audit
        finding.sweep_requests += case.sweep
    for finding in groups.values():
        finding.roles.sort()
        finding.actions.sort()
        finding.models.sort()
    return sorted(
        groups.values(),
        key=lambda f: (-f.audit_records, -f.sweep_requests, f.new.decided_by, f.old.decided_by),
    )


@dataclass(frozen=True)
class PolicyChange:
    """A policy added, removed or modified between OLD and NEW (matched by id)."""

    id: str
    change: Literal["added", "removed", "modified"]
    effect: str
    file: str
    details: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "change": self.change,
            "effect": self.effect,
            "file": self.file,
            "details": list(self.details),
        }


def policy_changes(old: PolicyBundle, new: PolicyBundle) -> list[PolicyChange]:
    changes: list[PolicyChange] = []
    for pid in sorted(set(old.policies) | set(new.policies)):
        before, after = old.policies.get(pid), new.policies.get(pid)
        if before is None and after is not None:
            changes.append(PolicyChange(pid, "added", after.effect, after.file))
        elif after is None and before is not None:
            changes.append(PolicyChange(pid, "removed", before.effect, before.file))
        elif before is not None and after is not None:
            details: list[str] = []
            if before.effect != after.effect:
                details.append(f"effect {before.effect} -> {after.effect}")
            if before.body != after.body:
                details.append("scope or conditions changed")
            for name in sorted(set(before.annotations) | set(after.annotations)):
                was, now = before.annotations.get(name), after.annotations.get(name)
                if name != "id" and was != now:
                    details.append(f"@{name}: {_show(was)} -> {_show(now)}")
            if before.file != after.file:
                details.append(f"moved from {before.file}")
            if details:
                changes.append(
                    PolicyChange(pid, "modified", after.effect, after.file, tuple(details))
                )
    return changes


def _show(value: str | None) -> str:
    return "(none)" if value is None else json.dumps(value)
