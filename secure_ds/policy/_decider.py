"""The decide stage backed by Cedar: :class:`CedarDecider`.

Fail closed, always: a request Cedar cannot build (a claim of the wrong type, a
model missing from the catalogue), an evaluation error in any policy (Cedar would
skip an erroring ``forbid`` and might permit), or obligations that conflict each
turn the call into a *deny* with the reason in the record.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cedarpy

from ..guard._call import Call, Decision
from ._bundle import PolicyBundle
from ._inputs import (
    ACTION,
    API_RESOURCE,
    MODEL,
    MODEL_ACTIONS,
    ClaimError,
    InputBuilder,
    PrincipalInputs,
    call_context,
    local_address,
)
from ._obligations import ObligationConflict, merge_obligations
from ._store import PolicyStore

__all__ = [
    "CedarDecider",
    "Evaluation",
    "PolicyOutcomes",
    "claim_refusal",
    "evaluate",
    "interpret",
    "not_in_catalogue",
    "prepare_request",
    "refusal",
]

ENGINE = "cedar"
_ACTIONS = {
    name: {"type": ACTION, "id": name}
    for name in ("chat", "stream", "fim", "fhe_infer", "list_models", "balance", "other")
}


@dataclass(frozen=True)
class Evaluation:
    """One Cedar decision with what the guard chain and the reviewers need."""

    effect: str  # "permit" or "deny"
    policies: tuple[str, ...]
    obligations: tuple[str, ...]
    advice: tuple[str, ...]
    errors: tuple[str, ...]
    denied_by: str
    reason: str


class PolicyOutcomes:
    """Per-bundle memo: determining policy ids -> merged obligations and advice."""

    def __init__(self, bundle: PolicyBundle) -> None:
        self.bundle = bundle
        self._memo: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...], str]] = {}
        self._names: dict[tuple[str, ...], tuple[str | None, ...]] = {}
        self._order = {policy_id: i for i, policy_id in enumerate(bundle.policies)}

    def position(self, policy_id: str) -> int:
        """Where the policy stands in the folder (files by name, then source order)."""
        return self._order.get(policy_id, len(self._order))

    def names(self, policies: tuple[str, ...]) -> tuple[str | None, ...]:
        """The ``@id`` annotation of each policy (memoised: the set of ids is small)."""
        names = self._names.get(policies)
        if names is None:
            known = self.bundle.policies
            names = tuple(known[p].name if p in known else None for p in policies)
            if len(self._names) < 4096:
                self._names[policies] = names
        return names

    def forbid_reason(self, reasons: tuple[str, ...]) -> str:
        """A forbid's ``@reason`` annotation says why, in words for the caller."""
        info = self.bundle.policies.get(reasons[0])
        said = info.annotations.get("reason") if info else None
        return said or "a forbid policy matched"

    def permit(self, reasons: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...], str]:
        """(obligations, advice, conflict) for a permit determined by ``reasons``."""
        memo = self._memo.get(reasons)
        if memo is None:
            infos = [self.bundle.policies[r] for r in reasons if r in self.bundle.policies]
            advice = tuple(dict.fromkeys(a for info in infos for a in info.advice))
            try:
                obligations = merge_obligations(o for info in infos for o in info.obligations)
                memo = (obligations, advice, "")
            except ObligationConflict as exc:
                memo = ((), advice, str(exc))
            if len(self._memo) < 4096:
                self._memo[reasons] = memo
        return memo


def evaluate(
    bundle: PolicyBundle,
    outcomes: PolicyOutcomes | None,
    request: Mapping[str, Any],
    entities: cedarpy.Entities | list[dict[str, Any]],
) -> Evaluation:
    """Evaluate one request against ``bundle`` (schema-checked) and interpret it."""
    outcomes = outcomes or PolicyOutcomes(bundle)
    result = cedarpy.is_authorized(dict(request), bundle.policy_set, entities, bundle.schema)
    return interpret(outcomes, result)


def interpret(outcomes: PolicyOutcomes, result: cedarpy.AuthzResult) -> Evaluation:
    diagnostics = result.diagnostics
    # Cedar reports determining policies in no fixed order; folder order makes the
    # policy a deny is attributed to (and the record) the same on every run
    reasons = tuple(sorted(diagnostics.reasons, key=outcomes.position))
    errors = tuple(diagnostics.errors)
    if errors:
        return Evaluation(
            "deny",
            reasons,
            (),
            (),
            errors,
            "policy-error",
            "policy evaluation failed, so the call is denied: " + errors[0],
        )
    if result.decision is cedarpy.Decision.Allow:
        obligations, advice, conflict = outcomes.permit(reasons)
        if conflict:
            return Evaluation("deny", reasons, (), advice, (), "obligation-conflict", conflict)
        return Evaluation("permit", reasons, obligations, advice, (), "", "")
    if reasons:
        return Evaluation("deny", reasons, (), (), (), reasons[0], outcomes.forbid_reason(reasons))
    return Evaluation("deny", (), (), (), (), "no permit matched", "no policy permits this call")


class CedarDecider:
    """decide: evaluate the call against the policy folder in force."""

    def __init__(self, source: PolicyStore | PolicyBundle) -> None:
        self._store = source if isinstance(source, PolicyStore) else None
        bundle = source.bundle if isinstance(source, PolicyStore) else source
        self._state = self._state_for(bundle)
        self._last_principal: tuple[Any, PrincipalInputs] | None = None
        local_address()  # resolve the host's address now, not on the first call's path

    @property
    def bundle(self) -> PolicyBundle:
        return self._store.bundle if self._store is not None else self._state[0]

    @property
    def reads_budget(self) -> bool:
        """See :attr:`PolicyBundle.reads_budget` (follows reloads)."""
        return self.bundle.reads_budget

    @staticmethod
    def _state_for(bundle: PolicyBundle) -> tuple[PolicyBundle, InputBuilder, PolicyOutcomes]:
        return bundle, InputBuilder(bundle), PolicyOutcomes(bundle)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def decide(self, call: Call) -> Decision:
        started = time.perf_counter()
        state = self._state
        store = self._store
        if store is not None and store.bundle is not state[0]:
            state = self._state = self._state_for(store.bundle)
            self._last_principal = None
        bundle, builder, outcomes = state
        identity = call.identity
        classification = call.classification
        body = call.body
        context = call_context(
            level=classification.level if classification else "unclassified",
            findings=classification.findings if classification else (),
            max_tokens=body.get("max_tokens") if body else None,
            stream=call.stream,
            started_at=call.started_at,
            auth=identity.auth if identity else "none",
            certificate_bound=identity is not None
            and identity.bound_thumbprint is not None
            and identity.bound_thumbprint == identity.cert_thumbprint,
            cert_sha256=identity.cert_thumbprint if identity else None,
            source_ip=local_address(),
            budget_remaining_usd=call.budget_remaining_usd,
        )
        try:
            principal: PrincipalInputs | ClaimError = self._principal(builder, identity)
        except ClaimError as exc:
            principal = exc
        prepared = prepare_request(bundle, call.action, call.model, principal, context)
        if isinstance(prepared, Evaluation):
            return self._decision(state, prepared, context, started)
        request, entities = prepared
        result = cedarpy.is_authorized(request, bundle.policy_set, entities, bundle.schema)
        return self._decision(state, interpret(outcomes, result), context, started)

    def _decision(
        self,
        state: tuple[PolicyBundle, InputBuilder, PolicyOutcomes],
        evaluation: Evaluation,
        context: dict[str, Any],
        started: float,
    ) -> Decision:
        bundle, _, outcomes = state
        store = self._store
        return Decision(
            effect="permit" if evaluation.effect == "permit" else "deny",
            engine=ENGINE,
            policies=evaluation.policies,
            obligations=evaluation.obligations,
            reason=evaluation.reason,
            revision=bundle.revision,
            eval_us=(time.perf_counter() - started) * 1e6,
            policy_names=outcomes.names(evaluation.policies),
            advice=evaluation.advice,
            errors=evaluation.errors,
            commit=bundle.commit,
            denied_by=evaluation.denied_by,
            context=context,
            reload_error=str(store.last_error) if store and store.last_error else None,
        )

    def _principal(self, builder: InputBuilder, identity: Any) -> PrincipalInputs:
        last = self._last_principal
        if last is not None and last[0] is identity:
            return last[1]  # the guard hands the same Identity to every call of a token
        if identity is None:
            inputs = builder.principal(None, (), {})
        else:
            inputs = builder.principal(identity.subject, identity.roles, identity.attributes)
        self._last_principal = (identity, inputs)
        return inputs


def prepare_request(
    bundle: PolicyBundle,
    action: str,
    model: str | None,
    principal: PrincipalInputs | ClaimError,
    context: dict[str, Any],
) -> tuple[dict[str, Any], cedarpy.Entities] | Evaluation:
    """The decider's steps before Cedar, shared by every evaluator (live guard,
    ``explain``, ``review``) so they cannot drift apart: a model action's model must be
    in the catalogue (a pin is ignored), then the principal's claims must fit the
    schema. Returns the Cedar request and its entities, or the refusal."""
    resource: dict[str, str] = API_RESOURCE
    if action in MODEL_ACTIONS:
        name = (model or "").split("@", 1)[0]
        if name not in bundle.models:
            return not_in_catalogue(name)
        resource = {"type": MODEL, "id": name}
    if isinstance(principal, ClaimError):
        return claim_refusal(principal)
    request = {
        "principal": principal.uid,
        "action": _ACTIONS.get(action) or {"type": ACTION, "id": action},
        "resource": resource,
        "context": context,
    }
    return request, principal.entities


def claim_refusal(error: ClaimError) -> Evaluation:
    """The deny for a token claim that does not fit the schema."""
    return refusal(f"claim:{error.claim}" if error.claim else "claims", str(error))


def not_in_catalogue(model: str) -> Evaluation:
    """The deny for a model the catalogue does not list (shared by every evaluator)."""
    reason = (
        f"model {model!r} is not in the policy catalogue (entities.json)"
        if model
        else "the request names no model"
    )
    return refusal("catalogue", reason)


def refusal(denied_by: str, reason: str) -> Evaluation:
    """A deny decided before Cedar was asked (nothing determined it)."""
    return Evaluation("deny", (), (), (), (), denied_by, reason)
