"""The replay: requests grouped into cases (classes no policy of either side can
tell apart, keyed as :mod:`._facts` says) and each case decided once per side,
exactly as the live decider would: the same principal building, the decider's own
:func:`prepare_request` (catalogue check, then claims) and :func:`interpret`."""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cedarpy

from .._bundle import PolicyBundle
from .._decider import Evaluation, PolicyOutcomes, interpret, prepare_request, refusal
from .._inputs import (
    ACTION,
    API_RESOURCE,
    MODEL,
    MODEL_ACTIONS,
    USER,
    ClaimError,
    InputBuilder,
    PrincipalInputs,
)
from ._common import _SWEEP_SUBJECT, ProgressFn, _base_context, _Request
from ._facts import _Facts, _Group

_BATCH = 256  # requests per is_authorized_batch call (one principal's Entities each)


class _Side:
    """One loaded side, with the per-bundle helpers the live decider uses."""

    def __init__(self, bundle: PolicyBundle) -> None:
        self.bundle = bundle
        self.builder = InputBuilder(bundle)
        self.outcomes = PolicyOutcomes(bundle)
        self.policies = {pid: json.loads(info.body) for pid, info in bundle.policies.items()}
        # each policy cut down to its action scope: evaluating these tells which
        # policies can apply to an action, by Cedar's own action hierarchy
        scopes = {
            pid: {
                **est,
                "effect": "permit",
                "principal": {"op": "All"},
                "resource": {"op": "All"},
                "conditions": [],
            }
            for pid, est in self.policies.items()
        }
        self.scopes = cedarpy.PolicySet.from_json_str(
            json.dumps({"staticPolicies": scopes, "templates": {}, "templateLinks": []})
        )

    def principal(
        self, subject: str | None, roles: Sequence[str], attributes: Mapping[str, Any]
    ) -> PrincipalInputs | ClaimError:
        try:
            return self.builder.principal(subject, roles, attributes)
        except ClaimError as exc:
            return exc

    def admits(self, action: str) -> tuple[bool, frozenset[str]]:
        """Whether this side's schema takes ``action`` with the resource the decider
        gives it, and the policies whose action scope admits it (all of them when
        the probe cannot tell: a superset only makes the classes finer)."""
        if action in MODEL_ACTIONS:
            model = min(self.bundle.models, default="review-probe")
            resource: dict[str, str] = {"type": MODEL, "id": model}
        else:
            resource = API_RESOURCE
        request = {
            "principal": {"type": USER, "id": _SWEEP_SUBJECT},
            "action": {"type": ACTION, "id": action},
            "resource": resource,
            "context": _base_context(),
        }
        result = cedarpy.is_authorized(
            request, self.scopes, self.bundle.catalogue, self.bundle.schema
        )
        errors = result.diagnostics.errors
        if errors:
            accepted = not any("failed to build request" in e for e in errors)
            return accepted, frozenset(self.policies)
        return True, frozenset(result.diagnostics.reasons)


@dataclass
class _Case:
    """One class of requests: evaluated once per side for all its members."""

    request: _Request  # the first member seen: a real request, evaluated as is
    source: str
    principal: int
    audit: int = 0  # records of this class
    sweep: int = 0  # sweep requests of this class
    subjects: list[str] = field(default_factory=list)  # recorded subjects, a few
    old: Evaluation | None = None
    new: Evaluation | None = None


class _Replay:
    """Groups requests into cases and evaluates every case against both sides."""

    def __init__(self, old: _Side, new: _Side) -> None:
        self.sides = (old, new)
        self.cases: dict[Hashable, _Case] = {}
        self._groups: dict[tuple[frozenset[str], frozenset[str]], _Group] = {}
        self._probes: dict[str, tuple[bool, _Group]] = {}
        self._inputs: dict[tuple[Any, ...], tuple[tuple[PrincipalInputs | ClaimError, ...], Any]]
        self._inputs = {}
        self._classes: dict[Hashable, int] = {}
        self._raw_class: dict[tuple[Any, ...], int] = {}
        self.representatives: list[tuple[PrincipalInputs | ClaimError, ...]] = []

    def probe(self, action: str) -> tuple[bool, _Group]:
        """(whether some side accepts ``action``, its group)."""
        known = self._probes.get(action)
        if known is not None:
            return known
        (old_ok, old_ids), (new_ok, new_ids) = (side.admits(action) for side in self.sides)
        key = (old_ids, new_ids)
        group = self._groups.get(key)
        if group is None:
            facts = _Facts()
            for side, ids in zip(self.sides, key, strict=True):
                for pid in sorted(ids):
                    facts.add_policy(side.policies[pid])
                facts.add_catalogue(side.bundle)
            group = self._groups[key] = _Group(len(self._groups), facts)
        known = self._probes[action] = (old_ok or new_ok, group)
        return known

    def add(self, request: _Request, source: str, line: int = 0) -> None:
        """Count ``request`` in its case: a recorded one (``source`` names the audit
        file, ``line`` its line) or, with no line, a sweep request."""
        case = self.case_for(request, f"{source}:{line}" if line else source)
        if line:
            case.audit += 1
            subject = request.subject
            if subject and len(case.subjects) < 5 and subject not in case.subjects:
                case.subjects.append(subject)
        else:
            case.sweep += 1

    def case_for(self, request: _Request, source: str = "") -> _Case:
        """The case (class) of ``request``; a new one, with ``request`` as its
        representative, when it is the first of its class."""
        group = self.probe(request.action)[1]
        # repr, not canonical JSON: cheaper, and it tells 1 from True and "1"; claims
        # written in another order only get a principal of their own
        attributes = repr(request.attributes)
        principal = self._principal(group, request, attributes)
        context_key = group.abstraction.context_key(request.context)
        key = (principal, request.action, request.model, context_key)
        case = self.cases.get(key)
        if case is None:
            case = self.cases[key] = _Case(request, source, principal)
        return case

    def _principal(self, group: _Group, request: _Request, attributes: str) -> int:
        raw = (request.subject, request.roles, attributes)
        known = self._raw_class.get((raw, group.index))
        if known is not None:
            return known
        built = self._inputs.get(raw)
        if built is None:
            inputs = tuple(
                side.principal(request.subject, request.roles, request.attributes)
                for side in self.sides
            )
            # a claim refused on one side must not share a class with one accepted
            # there (claims the schema ignores leave the entity as it would be without)
            status = tuple((i.claim, str(i)) if isinstance(i, ClaimError) else None for i in inputs)
            built = self._inputs[raw] = (inputs, status)
        inputs, status = built
        abstraction = group.abstraction
        key = (
            group.index,
            abstraction.principal_key(request.subject, request.roles, request.attributes),
            status,
        )
        pid = self._classes.get(key)
        if pid is None:
            pid = self._classes[key] = len(self.representatives)
            self.representatives.append(inputs)
        self._raw_class[(raw, group.index)] = pid
        return pid

    def evaluate(self, progress: ProgressFn | None) -> None:
        by_principal: dict[int, list[_Case]] = {}
        for case in self.cases.values():
            by_principal.setdefault(case.principal, []).append(case)
        total = len(self.cases)
        done = 0
        for pid, cases in by_principal.items():
            # the context as JSON once for both sides (cedarpy would encode it per call)
            contexts = [json.dumps(case.request.context) for case in cases]
            for index, side in enumerate(self.sides):
                results = _evaluate(side, self.representatives[pid][index], cases, contexts)
                for case, evaluation in zip(cases, results, strict=True):
                    if index == 0:
                        case.old = evaluation
                    else:
                        case.new = evaluation
            done += len(cases)
            if progress is not None:
                progress("evaluating", done, total)


def _evaluate(
    side: _Side,
    principal: PrincipalInputs | ClaimError,
    cases: Sequence[_Case],
    contexts: Sequence[str],
) -> list[Evaluation]:
    """Decide ``cases`` (all of one principal) as the live decider would."""
    results: list[Evaluation | None] = [None] * len(cases)
    pending: list[tuple[int, dict[str, Any]]] = []
    bundle = side.bundle
    for index, case in enumerate(cases):
        request = case.request
        # the decider's own steps before Cedar (the catalogue check, then the claims),
        # so a refusal here is the refusal a live call gets
        prepared = prepare_request(bundle, request.action, request.model, principal, {})
        if isinstance(prepared, Evaluation):
            results[index] = prepared
            continue
        cedar_request = prepared[0]
        cedar_request["context"] = contexts[index]  # as JSON, encoded once for both sides
        pending.append((index, cedar_request))
    if pending and not isinstance(principal, ClaimError):  # (a refused principal has none)
        for start in range(0, len(pending), _BATCH):
            chunk = pending[start : start + _BATCH]
            answers = cedarpy.is_authorized_batch(
                [r for _, r in chunk], bundle.policy_set, principal.entities, bundle.schema
            )
            for (index, _), answer in zip(chunk, answers, strict=True):
                results[index] = interpret(side.outcomes, answer)
    return [r if r is not None else refusal("review", "not evaluated") for r in results]
