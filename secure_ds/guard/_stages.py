"""The pluggable stages of the guard chain and their permissive defaults.

Later work replaces the defaults (DLP classifier, Cedar decider, budget meter) without
changing the shape: each stage is an object with one method taking the :class:`Call`.
A default is never silent: its name and effect land in every audit record, so a log
shows which calls ran without a real policy, classifier or budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol, runtime_checkable

from ..config import Settings
from ..cost._router import Router
from ..dlp._guard import DLPRefusal, apply_dlp_obligation
from ..policy._obligations import merge_obligations
from ._call import Call, Classification, Decision, Metering

__all__ = [
    "AllowAll",
    "Classifier",
    "Enforcer",
    "Meter",
    "NoClassification",
    "PolicyDecider",
    "Unmetered",
]


@runtime_checkable
class Classifier(Protocol):
    """classify: find sensitive data in the request and grade it."""

    def classify(self, call: Call) -> Classification: ...


@runtime_checkable
class PolicyDecider(Protocol):
    """decide: permit or deny the call, with the obligations a permit carries."""

    def decide(self, call: Call) -> Decision: ...


@runtime_checkable
class Meter(Protocol):
    """meter: rate limits and budget reservation before sending; settlement after."""

    def reserve(self, call: Call) -> Metering: ...

    def settle(self, call: Call) -> None: ...


class NoClassification:
    """Default classifier: scans nothing and says so in the record."""

    _RESULT = Classification(engine="none", level="unclassified")

    def classify(self, call: Call) -> Classification:
        return self._RESULT


class AllowAll:
    """Default decider: permits everything and says so in the record."""

    _RESULT = Decision(
        effect="permit",
        engine="allow-all",
        policies=("secure-ds/default-allow",),
        reason="no policy engine configured",
    )

    def decide(self, call: Call) -> Decision:
        return self._RESULT


class Unmetered:
    """Default meter: no rate limit or budget, and says so in the record."""

    _RESULT = Metering(engine="unmetered", allowed=True, reason="no budget configured")

    def reserve(self, call: Call) -> Metering:
        return self._RESULT

    def settle(self, call: Call) -> None:
        return None


class WithObligations:
    """Adds configured obligations (e.g. ``SECURE_DS_DLP_BLOCK``) to every permit of
    the decider it wraps; a deny stays a deny. A decider returning a fresh decision
    per call (Cedar) pays the merge each time; shared decisions are extended once."""

    def __init__(self, decider: PolicyDecider, obligations: tuple[str, ...]) -> None:
        self.decider = decider
        self.obligations = obligations
        self._last: tuple[Decision, Decision] | None = None

    @property
    def reads_budget(self) -> bool:
        return bool(getattr(self.decider, "reads_budget", False))

    def decide(self, call: Call) -> Decision:
        decision = self.decider.decide(call)
        if decision.effect != "permit":
            return decision
        last = self._last
        if last is not None and last[0] is decision:
            return last[1]  # a decider that returns shared values: extend it once
        # merged, not appended: a policy's redact:email and a configured redact:phone
        # become one redaction of both (see merge_obligations for the rules)
        merged = merge_obligations(decision.obligations + self.obligations)
        extended = replace(decision, obligations=merged)
        self._last = (decision, extended)
        return extended


def configured_obligations(settings: Settings) -> tuple[str, ...]:
    """The obligations the DLP settings ask for on every call."""
    obligations: list[str] = []
    if settings.dlp_block:
        obligations.append("block:" + ",".join(settings.dlp_block))
    if settings.dlp_redact:
        suffix = ":reversible" if settings.dlp_reversible else ""
        obligations.append("redact:" + ",".join(settings.dlp_redact) + suffix)
    return tuple(obligations)


class ObligationRefused(Exception):
    """The enforcer cannot carry out an obligation; the permit turns into a deny."""


class Enforcer:
    """enforce: carry out obligations and apply the configured request defaults.

    Known obligations: ``cap_max_tokens:N``, ``route:MODEL``, ``route:auto`` (the
    cost-aware router of :mod:`secure_ds.cost._router`), and the DLP ones,
    ``block:<kinds>`` and ``redact:<kinds>[:reversible]`` (see
    :mod:`secure_ds.dlp._guard`), and ``require:fhe``: met by an FHE call (the input is
    encrypted on the client, the endpoint only ever sees ciphertexts), refused for
    any other call, whose data would leave in the clear. Any other obligation raises
    :class:`ObligationRefused` (fail closed). Besides obligations it strips a
    model pin (``name@version`` is recorded, the bare name sent) and fills
    ``max_tokens``/``temperature``/``top_p``/``frequency_penalty`` from
    ``DEEPSEEK_*`` when the request leaves them out.
    """

    _PARAMS = ("max_tokens", "temperature", "top_p", "frequency_penalty")

    def __init__(
        self,
        settings: Settings,
        router: Router | None = None,
        remaining_usd: Callable[[Call], float | None] | None = None,
    ) -> None:
        self._router = router
        self._remaining_usd = remaining_usd  # the meter's, for route:auto
        self._defaults = {
            name: getattr(settings, name)
            for name in self._PARAMS
            if getattr(settings, name) is not None
        }
        self._default_model = settings.model_name
        self._default_pin = settings.model_pin

    def enforce(self, call: Call, decision: Decision) -> None:
        obligations = decision.obligations
        if "require:fhe" in obligations:
            self._require_fhe(call)
            obligations = tuple(o for o in obligations if o != "require:fhe")
        if call.action == "fhe_infer":
            for obligation in obligations:
                self._on_ciphertext(call, obligation)
            return
        body = call.body
        if body is None:
            if obligations:
                raise ObligationRefused(f"obligation {obligations[0]!r} needs a JSON request body")
            return
        self._pin(call, body)
        if call.action in ("chat", "stream", "fim"):
            for name, value in self._defaults.items():
                if name not in body:
                    body[name] = value
                    call.body_changed = True
                    call.enforcement.append(f"default:{name}")
        for obligation in obligations:
            self._apply(call, body, obligation)

    @staticmethod
    def _on_ciphertext(call: Call, obligation: str) -> None:
        """An FHE request's body is ciphertext: DLP obligations hold (no plaintext
        leaves), a token cap and route:auto do not apply; a fixed route cannot be
        honoured (the model is part of the encrypted evaluation), so it denies."""
        kind = obligation.partition(":")[0]
        if kind in ("block", "redact", "cap_max_tokens") or obligation == "route:auto":
            call.enforcement.append(f"{obligation} (not applicable: ciphertext only)")
            return
        raise ObligationRefused(
            f"obligation {obligation!r} cannot be carried out on an encrypted (FHE) request"
        )

    @staticmethod
    def _require_fhe(call: Call) -> None:
        if call.action != "fhe_infer":
            raise ObligationRefused(
                f"require:fhe: this {call.action} call must take the encrypted path, and a "
                f"{call.action} request cannot be encrypted end to end (only small models "
                "can be evaluated under FHE). Use client.fhe.infer(model=..., inputs=...) "
                "with one of the FHE models, or ask for a policy that permits this call"
            )
        call.enforcement.append("require:fhe (encrypted on the client; ciphertext only)")

    def _route_auto(self, call: Call, body: dict[str, object]) -> None:
        """Let the router pick the model (and cap max_tokens to fit the budget)."""
        if call.action not in ("chat", "stream", "fim"):
            call.enforcement.append("route:auto (not a model call)")
            return
        if self._router is None:
            raise ObligationRefused("route:auto needs a pricing table to choose a model")
        remaining = call.budget_remaining_usd
        if remaining is None and self._remaining_usd is not None:
            # not asked before deciding (no policy reads it): the router needs it now
            remaining = call.budget_remaining_usd = self._remaining_usd(call)
        route = self._router.choose(body, remaining, call.started_at, fim=call.action == "fim")
        if body.get("model") != route.model:
            body["model"] = route.model
            call.body_changed = True
        call.enforcement.append(f"route:auto -> {route.model} ({route.note})")
        if route.max_tokens is not None:
            body["max_tokens"] = route.max_tokens
            call.body_changed = True
            call.enforcement.append(f"cap_max_tokens:{route.max_tokens} (budget)")

    def _pin(self, call: Call, body: dict[str, object]) -> None:
        model = body.get("model")
        if not isinstance(model, str):
            return
        if "@" in model:
            name, pin = model.split("@", 1)
            body["model"] = name
            call.model_pin = pin
            call.body_changed = True
            call.enforcement.append("model_pin")
        elif model == self._default_model and self._default_pin:
            call.model_pin = self._default_pin

    def _apply(self, call: Call, body: dict[str, object], obligation: str) -> None:
        kind, _, arg = obligation.partition(":")
        if kind in ("block", "redact"):
            try:
                apply_dlp_obligation(call, obligation)
            except DLPRefusal as exc:
                raise ObligationRefused(str(exc)) from None
            return
        if kind == "cap_max_tokens" and arg.isdigit() and int(arg) > 0:
            cap = int(arg)
            current = body.get("max_tokens")
            if not isinstance(current, int) or current > cap:
                body["max_tokens"] = cap
                call.body_changed = True
            call.enforcement.append(obligation)
        elif obligation == "route:auto":
            self._route_auto(call, body)
        elif kind == "route" and arg:
            if body.get("model") != arg:
                body["model"] = arg
                call.body_changed = True
            call.enforcement.append(obligation)
        else:
            raise ObligationRefused(f"obligation {obligation!r} is not one secure-ds can carry out")
