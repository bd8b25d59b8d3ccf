"""The budget meter: rate limits, and worst-case budget reservations settled at cost.

Before a call (``reserve``) the meter finds the caller's budgets and rate limits (see
:mod:`._budgets`), estimates the call's worst-case cost and reserves it against every
budget at once; a budget that could be passed refuses the call, as does a rate limit.
After the call (``settle``) the reservation is replaced by the real cost, or released
when the call failed. The ledger (:mod:`._ledger`) makes both atomic.

**The worst case.** Prompt tokens are estimated from the request's text: the UTF-8
bytes of every string in ``messages`` and ``tools`` (chat) or ``prompt`` and
``suffix`` (FIM), divided by 3 and rounded up, plus :data:`MESSAGE_OVERHEAD` tokens
per message. Bytes, not characters, keep the estimate above the real count for both
English (a token is roughly 3-4 characters) and CJK text (roughly one token per
character, three UTF-8 bytes). They are priced at the cache-miss input price (no
cache hit assumed), and ``max_tokens`` (else ``[meter] default_max_tokens``, 8192) at
the output price, in the peak or off-peak window in force now. A model the price
table does not list is priced as the dearest model in it: an unknown model must not
be a way around a budget.

Only calls that can cost money are reserved (chat, stream, FIM); every call counts
against rate limits. The estimate is also what a call counts against a token rate
limit until it settles, when the count is corrected to the tokens actually used.

**Soft limits.** A reservation that takes a budget to its ``soft_usd`` is allowed and
flagged (``soft_limit_crossed`` in the audit record, on every such call); with an
``[alerts]`` table the first crossing per budget and period is also posted to a webhook
by an :class:`~._alerts.AlertSender`, off the call path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from itertools import chain
from typing import Any, Literal, NamedTuple, TypeVar

from ..config import Settings
from ..guard._call import Call, Metering
from ._alerts import AlertSender, BudgetAlert
from ._budgets import BudgetConfig, BudgetRule, RateRule, load_budgets, team_of
from ._ledger import (
    WINDOW_S,
    Admission,
    BudgetLimit,
    Ledger,
    MemoryLedger,
    RateLimit,
    Reservation,
)
from ._ledgers import ledger_from_settings
from ._pricing import PriceTable, Window

__all__ = ["MESSAGE_OVERHEAD", "BudgetMeter", "Estimate", "estimate_prompt_tokens"]

MESSAGE_OVERHEAD = 8  # tokens per message for role and chat-template markers
_COSTED = ("chat", "stream", "fim")
_NO_PRINCIPAL = "(none)"  # the same label the cost report gives unidentified calls
_DAY_S = 86_400  # Unix time has no leap seconds: every UTC day is this long
_MAX_PLANS = 4096  # cached caller plans; past this the cache starts again
_MILLION = Decimal(1_000_000)
_MICRO = Decimal("0.000001")
_ZERO = Decimal(0)
# Building a NamedTuple through tuple.__new__ skips its Python-level __new__ (about
# 0.2 us each on these machines); used on the hot path only, with every field given.
_new = tuple.__new__
_R = TypeVar("_R", BudgetRule, RateRule)


class Estimate(NamedTuple):
    """The worst-case cost of one call, and how it was reached. (A NamedTuple: one is
    built per call, and it is 2.5x cheaper to build than a frozen dataclass.)"""

    usd: Decimal
    model: str  # the model priced (the dearest one when ``assumed``)
    window: Window
    prompt_tokens: int
    max_tokens: int
    assumed: bool = False  # the model has no price: priced as the dearest


@dataclass(frozen=True)
class _Budget:
    """One budget rule as it applies to this caller now."""

    rule: BudgetRule
    label: str  # the principal, team or org label the key is for
    key: str
    resets_at: datetime
    period_id: str  # 2026-11-28 or 2026-11: which day or month the key counts


@dataclass(frozen=True)
class _Rate:
    rule: RateRule
    label: str
    key: str


@dataclass(frozen=True)
class _Plan:
    """A caller's budgets and rate limits on one UTC day, worked out once and reused:
    finding the rules and building the period keys is most of what ``reserve`` would
    otherwise spend its time on."""

    budgets: tuple[_Budget, ...]
    limits: tuple[BudgetLimit, ...]
    keys: tuple[str, ...]  # the limits' keys, in order
    rates: tuple[_Rate, ...]
    rate_limits: tuple[RateLimit, ...]
    rate_keys: tuple[str, ...]
    soft: bool  # some budget has a soft limit
    reason: str  # an allowed call's reason (the amount is in Metering.reserved_usd)
    reason_unbilled: str  # the same for an action that costs nothing (rate limits only)


class _Held(NamedTuple):
    """What ``reserve`` took for a call (``call.reservation``), for ``settle``."""

    reservation: Reservation | None
    rate_keys: tuple[str, ...]
    window: int | None
    tokens: int  # counted against token rate limits at reserve


class BudgetMeter:
    """The :class:`~secure_ds.guard.Meter` for budgets and rate limits.

    Thread-safe (the ledger serialises); share one per process. ``clock`` is the Unix
    time source: by default the ledger's (:meth:`~._ledger.Ledger.now`), replaceable
    in tests. ``alerts``, when given, is handed each first
    soft-limit crossing per budget and period; the meter closes it.
    """

    engine = "budget"

    def __init__(
        self,
        config: BudgetConfig,
        pricing: PriceTable,
        ledger: Ledger | None = None,
        *,
        clock: Callable[[], float] | None = None,
        alerts: AlertSender | None = None,
    ) -> None:
        self._plans: dict[tuple[str, str | None, int], _Plan] = {}
        self.config = config
        self.pricing = pricing
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self.alerts = alerts
        # the ledger's clock unless told otherwise: a Redis ledger's is the server's (a
        # memory ledger's is its clock function itself, one call fewer per reservation)
        if clock is None:
            clock = self.ledger.clock if isinstance(self.ledger, MemoryLedger) else self.ledger.now
        self._clock = clock
        self._prices: dict[tuple[str, Window], tuple[str, Decimal, Decimal] | None] = {}
        # (UTC minute, its price window): peak hours start and end on whole minutes, so
        # one lookup per minute is enough. One tuple, replaced whole, so a thread never
        # reads one minute's number with another's window.
        self._minute_window: tuple[int, Window] = (-1, "off_peak")

    @property
    def config(self) -> BudgetConfig:
        return self._config

    @config.setter
    def config(self, config: BudgetConfig) -> None:
        # new rules: the cached plans were worked out from the old ones
        self._config = config
        self._plans = {}

    @classmethod
    def from_settings(cls, settings: Settings, pricing: PriceTable) -> BudgetMeter:
        """The meter ``SECURE_DS_BUDGETS`` and ``SECURE_DS_METER_BACKEND`` (with
        ``SECURE_DS_METER_DB`` or ``SECURE_DS_METER_REDIS_URL``) describe. Without a
        budgets file nothing is limited. The alert webhook URL is read from the
        variable the file's ``[alerts]`` names."""
        path = settings.budgets
        config = load_budgets(path) if path is not None else BudgetConfig()
        # before the ledger opens: a missing webhook variable then leaves nothing open
        alerts = AlertSender.from_config(config.alerts, os.environ) if config.alerts else None
        ledger = ledger_from_settings(settings)
        return cls(config, pricing, ledger, alerts=alerts)

    @property
    def blocking(self) -> bool:
        """A SQLite or Redis ledger can wait (on a lock, on the network): the async
        client then calls the meter from a worker thread (see ``Guard.meter_blocks``)."""
        return not isinstance(self.ledger, MemoryLedger)

    def close(self) -> None:
        try:
            if self.alerts is not None:
                self.alerts.close()  # delivers what is queued, within its deadline
        finally:
            self.ledger.close()

    # ------------------------------------------------------------------ the Meter protocol

    def remaining_usd(self, call: Call) -> float | None:
        """The least left (hard limit minus spent and reserved) across the call's
        budgets before this call, or None when no budget applies. Rounded down (to
        1e-6 USD) so a policy never sees more than is left."""
        now = self._clock()
        budgets = self._plan(call, now).budgets
        if not budgets:
            return None
        left = min(self._left(b, now) for b in budgets)
        return _floor_float(left)

    def reserve(self, call: Call) -> Metering:
        now = self._clock()
        plan = self._plan(call, now)
        estimate = self.estimate(call, now) if call.action in _COSTED else None
        limits = plan.limits if estimate is not None else ()
        if not limits and not plan.rate_limits:
            return Metering(self.engine, True, reason=_allowed_reason(0, 0))
        tokens = estimate.prompt_tokens + estimate.max_tokens if estimate is not None else 0
        amount = estimate.usd if estimate is not None else _ZERO
        ledger = self.ledger
        if (
            type(ledger) is MemoryLedger
            and estimate is not None
            and limits
            and not plan.soft
            and not estimate.assumed
        ):
            # the common case in memory (a priced call against budgets without soft
            # limits) without the result objects the general path builds; a call the
            # ledger would refuse takes the general path, which says why
            quick = ledger.admit_quick(
                plan.keys,
                limits,
                amount,
                self._config.reservation_ttl_s,
                plan.rate_limits,
                tokens,
                now,
            )
            if quick is not None:
                reservation, least, window = quick
                call.reservation = _new(_Held, (reservation, plan.rate_keys, window, tokens))
                # the Metering _admitted would build for this call, field for field
                return Metering(
                    self.engine,
                    True,
                    float(amount),
                    plan.reason,
                    None,
                    None,
                    {},  # this call's own: settle adds what the reservation became
                    _floor_float(least),
                )
        admission = ledger.admit(
            limits, amount, self._config.reservation_ttl_s, plan.rate_limits, 1, tokens, now
        )
        metering = self._admitted(call, plan, estimate, admission, tokens, now)
        if admission.fallback is not None:
            metering = _fell_back(metering, admission.fallback)
        return metering

    def _admitted(
        self,
        call: Call,
        plan: _Plan,
        estimate: Estimate | None,
        admission: Admission,
        tokens: int,
        now: float,
    ) -> Metering:
        """The Metering for what the ledger decided (and the call's ``_Held`` if allowed);
        ``tokens`` is what the call was counted for against token rate limits."""
        amount = estimate.usd if estimate is not None else _ZERO
        limits = plan.limits if estimate is not None else ()
        checked, counted = admission.budgets, admission.rates
        if checked is not None and checked.blocked is not None:
            assert estimate is not None
            balance = checked.balances[checked.blocked]
            return self._over_budget(
                plan.budgets[checked.blocked], balance.spent, balance.reserved, estimate
            )
        if counted is not None and counted.retry_after is not None:
            assert counted.blocked is not None
            assert counted.unit is not None
            return _rate_limited(
                plan.rates[counted.blocked], counted.unit, counted.used, tokens, counted.retry_after
            )
        reservation = checked.reservation if checked is not None else None
        details: dict[str, Any] | None = None
        remaining: float | None = None
        if checked is not None:
            balances = checked.balances
            least: Decimal | None = None
            # (limit key, hard limit) and (spent, reserved), unpacked as plain tuples:
            # cheaper than their NamedTuple properties, for every budget of every call
            for (_, hard), (spent, reserved) in zip(limits, balances, strict=True):
                left = hard - spent - reserved
                if least is None or left < least:
                    least = left
            assert least is not None  # checked is set only when the call had budgets
            remaining = _floor_float(least)
            if plan.soft:
                budgets = plan.budgets
                details = _soft_crossing(budgets, balances, amount)
                if details is not None and self.alerts is not None:
                    self._alert(call, budgets, balances, amount, now)
            if reservation is not None and details is None:
                details = {}  # this call's own: settle adds what the reservation became
        window = counted.window if counted is not None else None
        call.reservation = _new(_Held, (reservation, plan.rate_keys, window, tokens))
        reason = plan.reason if limits else plan.reason_unbilled
        if estimate is not None and estimate.assumed and limits:
            reason = f"{reason} (the model has no price: reserved as {estimate.model})"
        return Metering(
            self.engine,
            True,
            float(amount) if reservation is not None else None,
            reason,
            None,
            None,
            details,
            remaining,
        )

    def settle(self, call: Call) -> None:
        held = call.reservation
        if not isinstance(held, _Held):
            return
        call.reservation = None  # a second settle has nothing to act on
        cost = call.cost
        if call.outcome == "failure":
            settled: Decimal | None = None
            used: int | None = 0  # a failed call is refunded its tokens as it is its money
            how = "released: the call failed"
        elif cost is not None:
            settled = cost.usd
            tokens = cost.tokens
            used = tokens["input_cache_hit"] + tokens["input_cache_miss"] + tokens["output"]
            how = "settled at cost"
        else:
            # a success the table cannot price (no usage in the reply, or a model with no
            # price): charge what was reserved, the worst case, rather than nothing, and
            # say so in the record; the cost report shows these calls as unpriced
            settled = held.reservation.amount if held.reservation is not None else Decimal(0)
            used = _tokens_used(call)
            reported = isinstance(call.response.get("usage"), dict)
            why = "the model has no price" if reported else "the response reported no usage"
            how = f"settled at the worst case reserved: {why}"
        delta = 0
        if held.window is not None and held.rate_keys and used is not None:
            delta = used - held.tokens
        if held.reservation is not None or delta:
            self.ledger.finish(held.reservation, settled, held.rate_keys, held.window, delta)
        metering = call.metering
        if metering is not None and held.reservation is not None and metering.details is not None:
            # the record shows what the reservation became (and that $0 means unpriced);
            # the details dict is this call's own (see _admitted), so it is added to in
            # place rather than copied into a new Metering
            details = metering.details
            details["settled_usd"] = None if settled is None else float(settled)
            details["settlement"] = how

    # ------------------------------------------------------------------ estimate

    def estimate(self, call: Call, now: float) -> Estimate:
        """The worst-case cost of ``call`` if it were sent at ``now`` (see the module)."""
        body = call.body or {}
        prompt = estimate_prompt_tokens(body, fim=call.action == "fim")
        max_tokens = body.get("max_tokens")
        if type(max_tokens) is not int or max_tokens <= 0:
            max_tokens = self._config.default_max_tokens
        model = body.get("model")
        if type(model) is not str:  # what call.model gives, without its property's checks
            model = call.model or ""
        if "@" in model:  # a pinned version is priced as its model
            model = model.split("@", 1)[0]
        minute, window = self._minute_window
        if minute != now // 60:
            window = self.pricing.window(now)
            self._minute_window = (int(now // 60), window)
        key = (model, window)
        try:
            per_token = self._prices[key]
        except KeyError:
            per_token = self._prices[key] = self._per_token(model, window)
        if per_token is not None:
            name, miss, output = per_token
            # the same sum PriceTable.cost makes for this usage, exactly: every price
            # divided by a power of ten is an exact Decimal
            usd = prompt * miss + max_tokens * output
            return _new(Estimate, (usd, name, window, prompt, max_tokens, False))
        # fail safe: an unknown model costs as much as the dearest one for this usage
        usage = {
            "prompt_tokens": prompt,
            "prompt_cache_hit_tokens": 0,
            "prompt_cache_miss_tokens": prompt,
            "completion_tokens": max_tokens,
        }
        costs = [self.pricing.cost(name, usage, now) for name in self.pricing.models]
        dearest = max((c for c in costs if c is not None), key=lambda c: c.usd)
        return Estimate(dearest.usd, dearest.model, window, prompt, max_tokens, assumed=True)

    def _per_token(self, model: str, window: Window) -> tuple[str, Decimal, Decimal] | None:
        prices = self.pricing.models.get(model)
        if prices is None:
            return None
        chosen, per = prices[window], self.pricing.per_tokens
        return model, chosen.input_cache_miss / per, chosen.output / per

    # ------------------------------------------------------------------ rules for a caller

    def _plan(self, call: Call, now: float) -> _Plan:
        identity = call.identity
        if identity is None:
            principal, team = _NO_PRINCIPAL, None
        else:
            principal, team = identity.subject or _NO_PRINCIPAL, team_of(identity.attributes)
        key = (principal, team, int(now // _DAY_S))
        plans = self._plans
        plan = plans.get(key)
        if plan is None:
            # threads racing here both build the same plan; either is right
            if len(plans) >= _MAX_PLANS:
                plans.clear()
            plan = plans[key] = self._make_plan(principal, team, now)
        return plan

    def _make_plan(self, principal: str, team: str | None, now: float) -> _Plan:
        day = datetime.fromtimestamp(now, UTC)
        budgets: list[_Budget] = []
        for rule in _chosen(self.config.budgets, principal, team):
            label = {"principal": principal, "team": team, "org": rule.name}[rule.scope]
            assert label is not None  # _chosen drops team rules for a caller without a team
            period_id, resets = _period(rule.period, day)
            key = _key(rule.scope, label, rule.period, period_id)
            budgets.append(_Budget(rule, label, key, resets, period_id))
        rates: list[_Rate] = []
        for rate in _chosen(self.config.rate_limits, principal, team):
            label = principal if rate.scope == "principal" else team
            assert label is not None
            rates.append(_Rate(rate, label, f"rate:{rate.scope}:{_escape(label)}"))
        return _Plan(
            budgets=tuple(budgets),
            limits=tuple(BudgetLimit(b.key, b.rule.hard_usd) for b in budgets),
            keys=tuple(b.key for b in budgets),
            rates=tuple(rates),
            rate_limits=tuple(RateLimit(r.key, r.rule.rpm, r.rule.tpm) for r in rates),
            rate_keys=tuple(r.key for r in rates),
            soft=any(b.rule.soft_usd is not None for b in budgets),
            reason=_allowed_reason(len(budgets), len(rates)),
            reason_unbilled=_allowed_reason(0, len(rates)),
        )

    def _alert(
        self,
        call: Call,
        budgets: Sequence[_Budget],
        balances: Sequence[Any],
        amount: Decimal,
        now: float,
    ) -> None:
        """Hand every budget this call takes to its soft limit to the sender (which
        posts the first per period). Every one, not only the first the details name:
        a team's crossing must not be hidden by a principal budget already past its own."""
        assert self.alerts is not None
        principal, _ = _who(call)
        crossed_at = datetime.fromtimestamp(now, UTC)
        for budget, balance in zip(budgets, balances, strict=True):
            soft = budget.rule.soft_usd
            if soft is None or balance.spent + balance.reserved + amount < soft:
                continue
            self.alerts.notify(
                BudgetAlert(
                    scope=budget.rule.scope,
                    name=budget.label,
                    period=budget.rule.period,
                    period_id=budget.period_id,
                    spent_usd=balance.spent,
                    reserved_usd=balance.reserved + amount,
                    soft_usd=soft,
                    hard_usd=budget.rule.hard_usd,
                    resets_at=budget.resets_at,
                    principal=principal,
                    crossed_at=crossed_at,
                )
            )

    def _left(self, budget: _Budget, now: float) -> Decimal:
        balance = self.ledger.balance(budget.key, now)
        return budget.rule.hard_usd - balance.spent - balance.reserved

    def _over_budget(
        self, budget: _Budget, spent: Decimal, reserved: Decimal, estimate: Estimate
    ) -> Metering:
        rule = budget.rule
        resets = budget.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        what = f"{rule.scope} budget '{budget.label}' for {rule.period}"
        if estimate.usd > rule.hard_usd:
            reason = (
                f"{what}: this call alone could cost up to ${_usd(estimate.usd)} "
                f"({estimate.prompt_tokens} prompt + {estimate.max_tokens} output tokens), more "
                f"than the ${_usd(rule.hard_usd)} limit; lower max_tokens or shorten the prompt"
            )
        else:
            reason = (
                f"{what}: spent ${_usd(spent)} + reserved ${_usd(reserved)} + this call up to "
                f"${_usd(estimate.usd)} would pass the ${_usd(rule.hard_usd)} limit; it resets "
                f"at {resets.replace('T', ' ').removesuffix('Z')} UTC (or lower max_tokens)"
            )
        return Metering(
            engine=self.engine,
            allowed=False,
            reason=reason,
            kind="budget",
            details={
                "scope": rule.scope,
                "name": budget.label,
                "period": rule.period,
                "spent_usd": float(spent),
                "reserved_usd": float(reserved),
                "limit_usd": float(rule.hard_usd),
                "resets_at": resets,
            },
            remaining_usd=_floor_float(rule.hard_usd - spent - reserved),
        )


def estimate_prompt_tokens(body: dict[str, Any], *, fim: bool = False) -> int:
    """A prompt-token count no lower than the real one (see the module docstring)."""
    if fim:
        size = sum(_text_bytes(body.get(part)) for part in ("prompt", "suffix"))
        return math.ceil(size / 3) + MESSAGE_OVERHEAD
    messages = body.get("messages")
    count = len(messages) if isinstance(messages, list) else 0
    size = _text_bytes(messages)
    tools = body.get("tools")
    if tools is not None:  # most calls have none: no call to count nothing
        size += _text_bytes(tools)
    return math.ceil(size / 3) + MESSAGE_OVERHEAD * max(count, 1)


def _text_bytes(value: Any) -> int:
    """UTF-8 bytes of every string in ``value``, keys included (tool schemas' property
    names are prompt text; a message's ``role`` key costs a little extra: safe side)."""
    if type(value) is str:
        # ASCII (most prompts) is one byte a character: no need to encode it to count
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, dict):
        parts: Iterable[Any] = chain.from_iterable(value.items())
    elif isinstance(value, list):
        parts = value
    elif isinstance(value, str):  # a str subclass
        return _text_bytes(str(value))
    else:
        return 0
    total = 0
    for part in parts:
        if type(part) is str:
            # strings counted inline, not by a recursive call: the meter's hot path
            total += len(part) if part.isascii() else len(part.encode("utf-8", "surrogatepass"))
        elif type(part) is dict:
            for key, item in part.items():  # a message: its keys and values in one loop
                if type(key) is str and key.isascii():
                    total += len(key)
                else:
                    total += _text_bytes(key)
                if type(item) is str and item.isascii():
                    total += len(item)
                else:
                    total += _text_bytes(item)
        else:
            total += _text_bytes(part)
    return total


def _who(call: Call) -> tuple[str, str | None]:
    identity = call.identity
    if identity is None:
        return _NO_PRINCIPAL, None
    return identity.subject or _NO_PRINCIPAL, team_of(identity.attributes)


def _chosen(rules: Sequence[_R], principal: str, team: str | None) -> list[_R]:
    """The rules that apply: per scope (and period), the one naming this caller, else
    the ``"*"`` one; every org rule; no team rule for a caller without a team."""
    chosen: dict[tuple[str, ...], _R] = {}
    for rule in rules:
        period = getattr(rule, "period", "")
        if rule.scope == "org":
            chosen[(rule.scope, period, rule.name)] = rule
            continue
        label = principal if rule.scope == "principal" else team
        if label is None:
            continue
        slot = (rule.scope, period)
        if rule.name == label:
            chosen[slot] = rule
        elif rule.name == "*":
            chosen.setdefault(slot, rule)
    return list(chosen.values())


def _period(period: Literal["day", "month"], at: datetime) -> tuple[str, datetime]:
    """The period's id (part of the key) and when the next one starts (UTC)."""
    start = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return start.date().isoformat(), start + timedelta(days=1)
    first = start.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return f"{first.year:04d}-{first.month:02d}", following


def _key(scope: str, label: str, period: str, period_id: str) -> str:
    return f"{scope}:{_escape(label)}:{period}:{period_id}"


def _escape(label: str) -> str:
    # a name containing ':' must not be able to collide with another scope's key
    return label.replace("%", "%25").replace(":", "%3A")


def _soft_crossing(
    budgets: Sequence[_Budget], balances: Sequence[Any], amount: Decimal
) -> dict[str, Any] | None:
    """Details of the first budget whose soft limit this call (at worst) reaches."""
    for budget, balance in zip(budgets, balances, strict=True):
        soft = budget.rule.soft_usd
        if soft is not None and balance.spent + balance.reserved + amount >= soft:
            return {
                "soft_limit_crossed": True,
                "scope": budget.rule.scope,
                "name": budget.label,
                "period": budget.rule.period,
                "spent_usd": float(balance.spent),
                "reserved_usd": float(balance.reserved),
                "soft_usd": float(soft),
                "limit_usd": float(budget.rule.hard_usd),
                "resets_at": budget.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
    return None


def _fell_back(metering: Metering, why: str) -> Metering:
    """``metering`` as decided by a local ledger standing in for the shared one: the
    reason and the details (so the audit record) say so (see :mod:`._fallback`)."""
    return replace(
        metering,
        reason=f"{metering.reason} [{why}]",
        details={**(metering.details or {}), "ledger_fallback": why},
    )


def _rate_limited(
    rate: _Rate, unit: Literal["requests", "tokens"], used: int, tokens: int, retry_after: float
) -> Metering:
    rule = rate.rule
    limit = rule.rpm if unit == "requests" else rule.tpm
    assert limit is not None
    what = f"{rule.scope} rate limit '{rate.label}'"
    retry: float | None = round(retry_after, 3)
    if unit == "tokens" and tokens > limit:
        # waiting cannot help: the call alone needs more than a minute's allowance
        retry = None
        reason = (
            f"{what}: this call may use up to {tokens} tokens, more than the {limit} tokens per "
            "minute allowed; lower max_tokens or shorten the prompt"
        )
    elif unit == "tokens":
        reason = (
            f"{what}: {used} of {limit} tokens per minute used and this call may use up to "
            f"{tokens}; retry after {retry_after:.1f} s"
        )
    else:
        reason = (
            f"{what}: {used} of {limit} requests per minute used; retry after {retry_after:.1f} s"
        )
    return Metering(
        engine="budget",
        allowed=False,
        reason=reason,
        kind="rate_limit",
        retry_after=retry,
        details={
            "scope": rule.scope,
            "name": rate.label,
            "limit": limit,
            "unit": unit,
            "window_s": WINDOW_S,
        },
    )


def _allowed_reason(budgets: int, rates: int) -> str:
    """Why a call was let through. Fixed per caller (kept in the plan): the worst case
    reserved is ``Metering.reserved_usd``, not repeated in the text."""
    if not budgets and not rates:
        return "no budget or rate limit applies to this caller"
    parts = []
    if budgets:
        parts.append(f"worst case reserved against {budgets} budget(s)")
    if rates:
        parts.append(f"within {rates} rate limit(s)")
    return "; ".join(parts)


def _tokens_used(call: Call) -> int | None:
    usage = call.response.get("usage") if isinstance(call.response, dict) else None
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return total if type(total) is int and total >= 0 else None


def _usd(value: Decimal) -> str:
    """Dollars for a message: at least cents, at most six decimals (a small call's
    estimate is a fraction of a cent and must not print as $0.00)."""
    text = f"{value.quantize(_MICRO, rounding=ROUND_HALF_UP):f}"
    if text[-4:] == "0000":  # whole cents: $1.50, not $1.500000
        return text[:-4]
    return text.rstrip("0")


def _floor_float(value: Decimal) -> float:
    # down to 1e-6 USD: a policy comparing against what is left must not see more
    # (math.floor of a Decimal is exact; the division is the float nearest that)
    return math.floor(value * _MILLION) / 1_000_000
