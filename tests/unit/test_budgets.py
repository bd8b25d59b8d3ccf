"""Budgets and rate limits: configuration, the worst-case estimate, the ledger
arithmetic (exact, in Decimal), period boundaries, expiry, and the meter's answers."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest

from secure_ds._secret import Secret
from secure_ds.config import Settings
from secure_ds.cost import PriceTable
from secure_ds.cost._budgets import BudgetConfig, load_budgets, parse_budgets, team_of
from secure_ds.cost._ledger import (
    BudgetLimit,
    Ledger,
    MemoryLedger,
    RateLimit,
    SQLiteLedger,
)
from secure_ds.cost._meter import MESSAGE_OVERHEAD, BudgetMeter, estimate_prompt_tokens
from secure_ds.errors import ConfigError
from secure_ds.guard._call import Call, Identity
from tests._budget_files import assert_budgets_file_refused
from tests._services import redis_ledger

PRICING = PriceTable.load()
MILLION = Decimal(1_000_000)
# 2026-11-28 is a Saturday: off-peak all day. 2026-11-30 07:00 is a Monday peak hour.
SAT_NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()
MON_PEAK = datetime(2026, 11, 30, 7, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _call(
    subject: str = "alice",
    attributes: dict[str, Any] | None = None,
    *,
    content: str = "hello",
    max_tokens: int | None = 1000,
    model: str = "deepseek-flash",
    path: str = "/chat/completions",
) -> Call:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    request = httpx2.Request(
        "POST", f"https://api.example{path}", content=json.dumps(body).encode()
    )
    call = Call.from_request(request)
    call.identity = Identity(
        subject=subject,
        roles=(),
        attributes=attributes or {},
        auth="jwt",
        issuer="test",
        token_id=None,
        cert_thumbprint=None,
        bound_thumbprint=None,
    )
    return call


def _config(text: str) -> BudgetConfig:
    import tomllib

    return parse_budgets(tomllib.loads(text))


def _flash_cost(prompt: int, output: int, *, peak: bool = False) -> Decimal:
    miss, out = (Decimal("0.30"), Decimal("1.20")) if peak else (Decimal("0.15"), Decimal("0.60"))
    return Decimal(prompt) * miss / MILLION + Decimal(output) * out / MILLION


def _succeed(call: Call, prompt: int, output: int, at: float) -> None:
    """What the guard does after a successful call: price it, then settle."""
    usage = {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}
    call.response = {"usage": usage}
    call.cost = PRICING.cost(call.model, usage, at)


# The same checks on every backend; Redis needs the server scripts/start-services.sh
# starts (skipped without it, failed when SECURE_DS_REQUIRE_SERVICES=1).
@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "redis":
        with redis_ledger() as shared:
            yield shared
        return
    led: Ledger = MemoryLedger() if request.param == "memory" else SQLiteLedger(tmp_path / "l.db")
    yield led
    led.close()


def _meter(text: str, ledger: Ledger, clock: Clock) -> BudgetMeter:
    return BudgetMeter(_config(text), PRICING, ledger, clock=clock)


DAY5 = """
[[budget]]
scope = "principal"
name = "*"
period = "day"
hard_usd = 0.01
soft_usd = 0.008
"""

# ---------------------------------------------------------------------- configuration


def test_config_parses_exact_decimals_and_tiers(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(
        """
[meter]
reservation_ttl_s = 120
default_max_tokens = 4096
[[budget]]
scope = "team"
period = "month"
hard_usd = 0.1
soft_usd = 0.07
[[rate_limit]]
scope = "principal"
tier = "enterprise"
[[rate_limit]]
scope = "team"
tier = "government"
rpm = 7
tpm = 900
"""
    )
    config = load_budgets(path)
    rule = config.budgets[0]
    # 0.1 from the file is the decimal 0.1, not 0.1000000000000000055...
    assert (rule.hard_usd, rule.soft_usd, rule.name) == (Decimal("0.1"), Decimal("0.07"), "*")
    assert config.rate_limits[0].rpm == 50_000
    assert config.rate_limits[0].tpm is None  # no tier sets a token rate
    assert (config.rate_limits[1].rpm, config.rate_limits[1].tpm) == (7, 900)  # explicit wins
    assert (config.reservation_ttl_s, config.default_max_tokens) == (120.0, 4096)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[budget]]\nscope='user'\nperiod='day'\nhard_usd=1", "scope must be principal, team"),
        ("[[budget]]\nscope='org'\nperiod='week'\nhard_usd=1", "period must be day or month"),
        ("[[budget]]\nscope='org'\nperiod='day'\nhard_usd=0", "hard_usd must be a number"),
        ("[[budget]]\nscope='org'\nperiod='day'\nhard_usd='5'", "hard_usd must be a number"),
        ("[[budget]]\nscope='org'\nperiod='day'\nhard_usd=true", "hard_usd must be a number"),
        ("[[budget]]\nscope='org'\nperiod='day'\nhard_usd=nan", "hard_usd must be a number"),
        ("[[budget]]\nscope='org'\nperiod='day'\nhard_usd=inf", "hard_usd must be a number"),
        ("[[budget]]\nscope='org'\nperiod='day'\nhard_usd=1\nsoft_usd=1", "below hard_usd"),
        ("[[budget]]\nscope='org'\nperiod='day'\nhard_usb=1", "unknown key 'hard_usb'"),
        ("[[budget]]\nscope='team'\nname=''\nperiod='day'\nhard_usd=1", "name must be"),
        ("budget = 5", "must be an array of tables"),
        ("[budgets]\nx=1", "unknown table 'budgets'"),
        (
            "[[budget]]\nscope='org'\nperiod='day'\nhard_usd=1\n"
            "[[budget]]\nscope='org'\nperiod='day'\nhard_usd=2",
            "two [[budget]] rules for org * day",
        ),
        ("[[rate_limit]]\nscope='org'\nrpm=5", "scope must be principal or team"),
        ("[[rate_limit]]\nscope='team'\ntier='gold'", "tier must be one of developer"),
        ("[[rate_limit]]\nscope='team'\nrpm=1.5", "rpm must be an integer > 0"),
        ("[[rate_limit]]\nscope='team'\ntpm=0", "tpm must be an integer > 0"),
        ("[[rate_limit]]\nscope='team'", "give a tier, rpm or tpm"),
        ("[meter]\nreservation_ttl_s=0", "reservation_ttl_s must be"),
        ("[meter]\ndefault_max_tokens=-1", "default_max_tokens must be"),
        ("[meter]\nttl=5", "unknown key 'ttl'"),
    ],
)
def test_config_errors_name_the_problem_and_the_fix(
    tmp_path: Path, text: str, problem: str
) -> None:
    assert_budgets_file_refused(tmp_path, text, problem)


def test_config_errors_for_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_budgets(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[budget]\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_budgets(bad)


def test_from_settings_builds_the_configured_backend(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text(DAY5)
    settings = Settings(
        token_provider="api-key",
        api_key=Secret("sk-test"),
        budgets=path,
        meter_backend="sqlite",
        meter_db=tmp_path / "meter.db",
    )
    meter = BudgetMeter.from_settings(settings, PRICING)
    try:
        assert isinstance(meter.ledger, SQLiteLedger)
        assert meter.config.budgets[0].hard_usd == Decimal("0.01")
    finally:
        meter.close()
    memory = BudgetMeter.from_settings(
        Settings(token_provider="api-key", api_key=Secret("sk-test")), PRICING
    )
    assert isinstance(memory.ledger, MemoryLedger)
    assert memory.config.budgets == ()  # no file: nothing limited
    assert memory.reserve(_call()).allowed


# ---------------------------------------------------------------------- the estimate


def test_prompt_estimate_counts_bytes_over_three_plus_overhead() -> None:
    body = {"messages": [{"role": "user", "content": "a" * 300}]}
    # role/user/content/300 a's = 315 bytes -> 105 tokens, + one message's overhead
    assert estimate_prompt_tokens(body) == 105 + MESSAGE_OVERHEAD
    # CJK: 3 UTF-8 bytes per character, so at least one token per character
    cjk = {"messages": [{"role": "user", "content": "字" * 100}]}
    assert estimate_prompt_tokens(cjk) >= 100
    # multimodal-style parts and tools are prompt text too
    parts = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "b" * 90}]}],
        "tools": [{"type": "function", "function": {"name": "f" * 30}}],
    }
    assert estimate_prompt_tokens(parts) > estimate_prompt_tokens(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "b" * 90}]}]}
    )
    assert estimate_prompt_tokens({"prompt": "x" * 30, "suffix": "y" * 30}, fim=True) == (
        20 + MESSAGE_OVERHEAD
    )


def test_estimate_prices_prompt_at_cache_miss_and_max_tokens_at_output() -> None:
    meter = BudgetMeter(BudgetConfig(default_max_tokens=4096), PRICING)
    call = _call(content="a" * 300, max_tokens=1000)
    prompt = estimate_prompt_tokens(call.body or {})
    off = meter.estimate(call, SAT_NOON)
    assert (off.usd, off.window, off.assumed) == (_flash_cost(prompt, 1000), "off_peak", False)
    peak = meter.estimate(call, MON_PEAK)
    assert (peak.usd, peak.window) == (_flash_cost(prompt, 1000, peak=True), "peak")
    # no max_tokens: the configured default is the worst case
    bare = meter.estimate(_call(content="a" * 300, max_tokens=None), SAT_NOON)
    assert bare.max_tokens == 4096
    assert bare.usd == _flash_cost(prompt, 4096)


def test_unknown_model_is_priced_as_the_dearest() -> None:
    meter = BudgetMeter(BudgetConfig(), PRICING)
    call = _call(model="deepseek-mystery", max_tokens=1000)
    estimate = meter.estimate(call, SAT_NOON)
    prompt = estimate.prompt_tokens
    pro = Decimal(prompt) * Decimal("0.66") / MILLION + Decimal(1000) * Decimal("1.98") / MILLION
    assert (estimate.usd, estimate.model, estimate.assumed) == (pro, "deepseek-v4-pro", True)
    assert estimate.usd > meter.estimate(_call(max_tokens=1000), SAT_NOON).usd


# ---------------------------------------------------------------------- ledger arithmetic


def test_ledger_reserve_settle_release_are_exact(ledger: Ledger) -> None:
    limits = [BudgetLimit("principal:alice:day:2026-11-28", Decimal("0.01"))]
    a = ledger.reserve(limits, Decimal("0.003"), 900, SAT_NOON)
    b = ledger.reserve(limits, Decimal("0.004"), 900, SAT_NOON)
    assert a.reservation is not None
    assert b.reservation is not None
    assert b.balances[0].reserved == Decimal("0.003")  # balances are before this call
    # 0.003 + 0.004 + 0.0031 > 0.01: refused, and the refusal reserves nothing
    refused = ledger.reserve(limits, Decimal("0.0031"), 900, SAT_NOON)
    assert (refused.reservation, refused.blocked) == (None, 0)
    assert ledger.balance(limits[0].key, SAT_NOON).reserved == Decimal("0.007")
    # exactly at the limit is allowed (the limit is inclusive)
    c = ledger.reserve(limits, Decimal("0.003"), 900, SAT_NOON)
    assert c.reservation is not None
    ledger.settle(a.reservation, Decimal("0.000000123"))
    ledger.release(b.reservation)
    ledger.settle(c.reservation, Decimal("0.0025"))
    balance = ledger.balance(limits[0].key, SAT_NOON)
    assert (balance.spent, balance.reserved) == (Decimal("0.002500123"), Decimal(0))
    # settle and release are idempotent: repeating them charges nothing more
    ledger.settle(a.reservation, Decimal("0.000000123"))
    ledger.settle(b.reservation, Decimal("1"))
    assert ledger.balance(limits[0].key, SAT_NOON).spent == Decimal("0.002500123")


def test_ledger_reserve_is_all_or_nothing(ledger: Ledger) -> None:
    person = BudgetLimit("principal:alice:day:2026-11-28", Decimal("1"))
    team = BudgetLimit("team:ml:day:2026-11-28", Decimal("0.001"))
    result = ledger.reserve([person, team], Decimal("0.002"), 900, SAT_NOON)
    assert (result.reservation, result.blocked) == (None, 1)
    # the principal's budget, which had room, was not touched
    assert ledger.balance(person.key, SAT_NOON).reserved == Decimal(0)


def test_unsettled_reservation_expires_but_a_late_settle_still_charges(ledger: Ledger) -> None:
    limits = [BudgetLimit("org:acme:day:2026-11-28", Decimal("0.01"))]
    held = ledger.reserve(limits, Decimal("0.01"), 60, SAT_NOON)
    assert held.reservation is not None
    assert ledger.reserve(limits, Decimal("0.001"), 60, SAT_NOON + 59).reservation is None
    # the caller crashed: after the ttl its hold no longer counts
    assert ledger.balance(limits[0].key, SAT_NOON + 60).reserved == Decimal(0)
    later = ledger.reserve(limits, Decimal("0.004"), 60, SAT_NOON + 61)
    assert later.reservation is not None
    # ...but a call that did finish late is still charged what it cost
    ledger.settle(held.reservation, Decimal("0.005"))
    assert ledger.balance(limits[0].key, SAT_NOON + 62).spent == Decimal("0.005")


def test_rate_window_counts_and_retry_after(ledger: Ledger) -> None:
    limits = [RateLimit("rate:principal:alice", rpm=3, tpm=None)]
    start = datetime(2026, 11, 28, 12, 0, 15, tzinfo=UTC).timestamp()
    for i in range(3):
        assert ledger.hit(limits, 1, 0, start + i).retry_after is None
    refused = ledger.hit(limits, 1, 0, start + 5)  # 12:00:20
    assert refused.retry_after == pytest.approx(40.0)  # until 12:01:00
    assert (refused.unit, refused.used, refused.blocked) == ("requests", 3, 0)
    assert ledger.hit(limits, 1, 0, start + 45).retry_after is None  # a new minute


def test_rate_tokens_and_adjustment(ledger: Ledger) -> None:
    limits = [RateLimit("rate:team:ml", rpm=None, tpm=1000)]
    first = ledger.hit(limits, 1, 800, SAT_NOON)
    assert first.retry_after is None
    assert ledger.hit(limits, 1, 300, SAT_NOON + 1).unit == "tokens"
    # the call used 100 tokens, not 800: the window is corrected and room comes back
    ledger.adjust_tokens(["rate:team:ml"], first.window, -700)
    assert ledger.hit(limits, 1, 300, SAT_NOON + 2).retry_after is None


def test_rate_hit_is_all_or_nothing(ledger: Ledger) -> None:
    person = RateLimit("rate:principal:bob", rpm=10, tpm=None)
    team = RateLimit("rate:team:ml", rpm=1, tpm=None)
    assert ledger.hit([team], 1, 0, SAT_NOON).retry_after is None
    assert ledger.hit([person, team], 1, 0, SAT_NOON).blocked == 1
    # the refused hit did not count against bob: ten more requests fit
    for _ in range(10):
        assert ledger.hit([person], 1, 0, SAT_NOON).retry_after is None
    assert ledger.hit([person], 1, 0, SAT_NOON).retry_after is not None


def test_admit_is_all_or_nothing_across_budgets_and_rates(ledger: Ledger) -> None:
    # invariant 9: a call refused by a rate limit holds no budget, and one refused by a
    # budget counts against no rate limit
    budget = BudgetLimit("principal:alice:day:2026-11-28", Decimal("1"))
    rate = RateLimit("rate:principal:alice", rpm=1, tpm=None)
    first = ledger.admit([budget], Decimal("0.4"), 900, [rate], 1, 10, SAT_NOON)
    assert first.budgets is not None
    assert first.budgets.reservation is not None
    assert first.rates is not None
    assert first.rates.retry_after is None
    assert first.fallback is None
    by_rate = ledger.admit([budget], Decimal("0.4"), 900, [rate], 1, 10, SAT_NOON + 1)
    assert by_rate.rates is not None
    assert by_rate.rates.unit == "requests"
    assert by_rate.budgets is not None
    assert by_rate.budgets.reservation is None
    assert ledger.balance(budget.key, SAT_NOON + 1).reserved == Decimal("0.4")  # only the first
    other = RateLimit("rate:principal:bob", rpm=1, tpm=None)
    by_budget = ledger.admit([budget], Decimal("0.7"), 900, [other], 1, 10, SAT_NOON + 2)
    assert by_budget.budgets is not None
    assert by_budget.budgets.blocked == 0
    assert by_budget.rates is None
    # bob's one request a minute is still free: the refused call was not counted
    assert ledger.hit([other], 1, 0, SAT_NOON + 3).retry_after is None


def test_admit_quick_decides_and_holds_as_admit_does() -> None:
    # MemoryLedger.admit_quick (the meter's hot path) must admit exactly the calls admit
    # admits, leaving the same holds and counts, and refuse the rest changing nothing.
    # Two ledgers take the same random calls (budgets near their limits, rate limits by
    # requests and tokens, time moving past hold expiries and minute windows), one by
    # admit, one by admit_quick; after every step their states must agree.
    import random

    rng = random.Random(20261128)
    general, quick = MemoryLedger(), MemoryLedger()
    hard = [Decimal(limit) for limit in ("1", "0.5", "2")]
    rates = [
        RateLimit("r0", rpm=5, tpm=None),
        RateLimit("r1", rpm=None, tpm=900),
        RateLimit("r2", rpm=3, tpm=400),
    ]
    now = SAT_NOON
    held: list[tuple[Any, Any, tuple[str, ...], int | None, int]] = []
    decisions = {"admitted": 0, "refused": 0}
    for step in range(3000):
        now += rng.choice((0.0, 0.5, 3.0, 20.0, 400.0))
        # a new period every 100 steps, as a new day's keys would start, so that
        # spend does not pile up until every call is refused
        budgets = [BudgetLimit(f"b{i}:{step // 100}", h) for i, h in enumerate(hard)]
        if held and rng.random() < 0.4:  # settle or release one held call on both
            one, other, keys, window, tokens = held.pop(rng.randrange(len(held)))
            actual = rng.choice((None, Decimal("0.01"), Decimal("0.3")))
            delta = rng.randint(-tokens, 50) if window is not None else 0
            general.finish(one, actual, keys, window, delta)
            quick.finish(other, actual, keys, window, delta)
            continue
        chosen = rng.sample(budgets, rng.randint(1, 3))
        limits_of_call = rng.sample(rates, rng.randint(0, 3))
        amount = Decimal(rng.choice(("0.05", "0.2", "0.45", "0.9", "1.5")))
        tokens = rng.choice((10, 150, 500, 1000))
        keys = tuple(limit.key for limit in chosen)
        admission = general.admit(chosen, amount, 600, limits_of_call, 1, tokens, now)
        fast = quick.admit_quick(keys, chosen, amount, 600, limits_of_call, tokens, now)
        assert admission.budgets is not None
        refused = admission.budgets.reservation is None
        assert (fast is None) == refused
        decisions["refused" if refused else "admitted"] += 1
        if fast is not None:
            reservation, least, window = fast
            assert admission.budgets.reservation is not None
            assert reservation.keys == keys
            assert reservation.amount == amount
            assert reservation.expires_at == admission.budgets.reservation.expires_at
            left = [
                b.limit - x.spent - x.reserved
                for b, x in zip(chosen, admission.budgets.balances, strict=True)
            ]
            assert least == min(left)
            expected_window = admission.rates.window if admission.rates is not None else None
            assert window == expected_window
            rate_keys = tuple(r.key for r in limits_of_call)
            held.append((admission.budgets.reservation, reservation, rate_keys, window, tokens))
        for budget in budgets:
            assert general.balance(budget.key, now) == quick.balance(budget.key, now)
        assert general._rates == quick._rates
    # the walk met both kinds of decision, many times
    assert min(decisions.values()) > 300


def test_the_meters_quick_path_answers_as_the_general_one() -> None:
    # the meter takes MemoryLedger.admit_quick only for a MemoryLedger itself; a
    # subclass goes the general way. The same calls through both must get the same
    # Metering (allowed or refused, amount, reason, details, remaining), the same
    # settlement and the same balances.
    class GeneralOnly(MemoryLedger):
        pass

    rules = """
[[budget]]
scope = "principal"
name = "*"
period = "day"
hard_usd = 0.02
[[budget]]
scope = "org"
name = "acme"
period = "month"
hard_usd = 0.05
[[rate_limit]]
scope = "principal"
name = "*"
rpm = 3
tpm = 40000
"""
    clock = Clock(SAT_NOON)
    quick_meter = _meter(rules, MemoryLedger(), clock)
    general_meter = _meter(rules, GeneralOnly(), clock)
    answers = []
    for step in range(40):
        clock.now += 7
        who = ("alice", "bob")[step % 2]
        model = "no-such-model" if step % 9 == 4 else "deepseek-flash"
        # every seventh call alone could pass the $0.02 budget; three a minute pass rpm
        max_tokens = 40_000 if step % 7 == 3 else 1000 + 500 * (step % 5)
        made = [_call(who, max_tokens=max_tokens, model=model) for _ in range(2)]
        quick_answer, general_answer = (
            meter.reserve(call)
            for meter, call in zip((quick_meter, general_meter), made, strict=True)
        )
        assert quick_answer == general_answer
        answers.append(quick_answer.allowed)
        for meter, call in zip((quick_meter, general_meter), made, strict=True):
            if call.metering is None:
                call.metering = quick_answer if meter is quick_meter else general_answer
            _succeed(call, 12, 300, clock.now)
            meter.settle(call)
        assert made[0].metering == made[1].metering
    assert answers.count(True) > 10
    assert answers.count(False) > 5
    for key in {*quick_meter.ledger._spent, *general_meter.ledger._spent}:  # type: ignore[attr-defined]
        assert quick_meter.ledger.balance(key, clock.now) == general_meter.ledger.balance(
            key, clock.now
        )


def test_finish_settles_and_corrects_tokens_in_one_step(ledger: Ledger) -> None:
    budget = BudgetLimit("team:ml:day:2026-11-28", Decimal("1"))
    rate = RateLimit("rate:team:ml", rpm=None, tpm=1000)
    admitted = ledger.admit([budget], Decimal("0.5"), 900, [rate], 1, 900, SAT_NOON)
    assert admitted.budgets is not None
    assert admitted.rates is not None
    held = admitted.budgets.reservation
    assert held is not None
    assert ledger.hit([rate], 1, 200, SAT_NOON + 1).unit == "tokens"  # 900 + 200 > 1000
    ledger.finish(held, Decimal("0.125"), ["rate:team:ml"], admitted.rates.window, -800)
    balance = ledger.balance(budget.key, SAT_NOON + 2)
    assert (balance.spent, balance.reserved) == (Decimal("0.125"), Decimal(0))
    assert ledger.hit([rate], 1, 200, SAT_NOON + 2).retry_after is None  # 100 + 200 fit
    ledger.finish(held, Decimal("0.125"), (), None, 0)  # a repeat charges nothing
    assert ledger.balance(budget.key, SAT_NOON + 3).spent == Decimal("0.125")
    # releasing (actual None) frees the hold and charges nothing
    second = ledger.admit([budget], Decimal("0.5"), 900, (), 0, 0, SAT_NOON + 4).budgets
    assert second is not None
    assert second.reservation is not None
    ledger.finish(second.reservation, None, (), None, 0)
    balance = ledger.balance(budget.key, SAT_NOON + 5)
    assert (balance.spent, balance.reserved) == (Decimal("0.125"), Decimal(0))


def test_memory_balances_match_a_full_recount_through_random_operations(tmp_path: Path) -> None:
    # MemoryLedger keeps a running total per budget instead of summing its holds on
    # every read; SQLiteLedger sums them in SQL. Driven through the same random mix
    # of reserves, settles, releases, expiries and late settles, both must agree.
    import random

    rng = random.Random(20261128)
    memory, sqlite = MemoryLedger(), SQLiteLedger(tmp_path / "reference.db")
    keys = ["principal:a:day:2026-11-28", "team:t:day:2026-11-28", "org:o:day:2026-11-28"]
    now = SAT_NOON
    open_holds: list[tuple[Any, Any]] = []
    for _ in range(400):
        now += rng.choice([0.0, 0.5, 7.0, 31.0])
        op = rng.random()
        if op < 0.5 or not open_holds:
            chosen = rng.sample(keys, rng.randint(1, 3))
            limits = [BudgetLimit(k, Decimal("3")) for k in chosen]
            amount = Decimal(rng.randint(1, 400)) / 1000
            ttl = rng.choice([10.0, 45.0, 900.0])
            a = memory.reserve(limits, amount, ttl, now)
            b = sqlite.reserve(limits, amount, ttl, now)
            assert (a.blocked, a.balances) == (b.blocked, b.balances)
            if a.reservation is not None:
                assert b.reservation is not None
                open_holds.append((a.reservation, b.reservation))
        else:
            mine, theirs = open_holds.pop(rng.randrange(len(open_holds)))
            if op < 0.8:
                actual = Decimal(rng.randint(0, 500)) / 1000  # may exceed the estimate
                memory.settle(mine, actual)
                sqlite.settle(theirs, actual)
            else:
                memory.release(mine)
                sqlite.release(theirs)
        for key in keys:
            assert memory.balance(key, now) == sqlite.balance(key, now), (key, now)
    sqlite.close()


# ---------------------------------------------------------------------- the meter


def test_meter_settles_success_at_cost_and_releases_failure(ledger: Ledger) -> None:
    clock = Clock(SAT_NOON)
    meter = _meter(DAY5, ledger, clock)
    call = _call(max_tokens=1000)
    metering = call.metering = meter.reserve(call)
    estimate = meter.estimate(call, SAT_NOON)
    assert (metering.allowed, metering.engine) == (True, "budget")
    assert metering.reserved_usd == float(estimate.usd)
    assert metering.remaining_usd == 0.01  # before this call
    key = "principal:alice:day:2026-11-28"
    assert ledger.balance(key, SAT_NOON).reserved == estimate.usd
    _succeed(call, 40, 250, SAT_NOON)
    meter.settle(call)
    assert call.cost is not None
    assert ledger.balance(key, SAT_NOON).spent == _flash_cost(40, 250) == call.cost.usd
    assert ledger.balance(key, SAT_NOON).reserved == Decimal(0)
    assert call.metering.details is not None
    assert call.metering.details["settled_usd"] == float(call.cost.usd)

    failed = _call(max_tokens=1000)
    failed.metering = meter.reserve(failed)
    failed.outcome = "failure"
    meter.settle(failed)
    assert ledger.balance(key, SAT_NOON) == ledger.balance(key, SAT_NOON + 1)
    assert ledger.balance(key, SAT_NOON).spent == _flash_cost(40, 250)  # nothing added
    assert failed.metering.details is not None
    assert failed.metering.details["settlement"].startswith("released")


def test_meter_charges_the_worst_case_when_a_success_reports_no_usage(ledger: Ledger) -> None:
    # fail safe: a reply without usage cannot be priced, so what was reserved is spent
    meter = _meter(DAY5, ledger, Clock(SAT_NOON))
    call = _call()
    call.metering = meter.reserve(call)
    reserved = Decimal(str(call.metering.reserved_usd))
    call.response = {"status": 200}  # no usage
    call.cost = None
    meter.settle(call)
    balance = ledger.balance("principal:alice:day:2026-11-28", SAT_NOON)
    assert balance.reserved == Decimal(0)
    assert balance.spent == pytest.approx(reserved)
    assert call.metering.details is not None
    assert call.metering.details["settled_usd"] == pytest.approx(float(reserved))
    assert "the response reported no usage" in call.metering.details["settlement"]


def test_meter_charges_the_worst_case_for_a_model_without_a_price(ledger: Ledger) -> None:
    meter = _meter(DAY5, ledger, Clock(SAT_NOON))
    call = _call()
    call.metering = meter.reserve(call)
    call.response = {"status": 200, "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    call.cost = None  # usage, but the table has no price for the model
    meter.settle(call)
    assert call.metering.details is not None
    assert call.metering.details["settled_usd"] > 0
    assert "the model has no price" in call.metering.details["settlement"]


def test_meter_refuses_over_budget_with_which_budget_spent_limit_and_reset(
    ledger: Ledger,
) -> None:
    meter = _meter(DAY5, ledger, Clock(SAT_NOON))
    spent = _call(max_tokens=10_000)  # up to $0.006 off-peak
    assert meter.reserve(spent).allowed
    _succeed(spent, 10, 10_000, SAT_NOON)
    meter.settle(spent)
    call = _call(max_tokens=10_000)
    metering = meter.reserve(call)
    assert (metering.allowed, metering.kind) == (False, "budget")
    assert metering.details == {
        "scope": "principal",
        "name": "alice",
        "period": "day",
        "spent_usd": float(_flash_cost(10, 10_000)),
        "reserved_usd": 0.0,
        "limit_usd": 0.01,
        "resets_at": "2026-11-29T00:00:00Z",
    }
    assert metering.reason.startswith("principal budget 'alice' for day: spent $0.0060")
    assert "would pass the $0.01 limit; it resets at 2026-11-29 00:00:00 UTC" in metering.reason
    assert call.reservation is None  # nothing to settle for a refused call
    # a call that alone could pass the limit says so, and what to change
    huge = meter.reserve(_call("bob", max_tokens=100_000))
    assert "this call alone could cost up to $0.06" in huge.reason
    assert "lower max_tokens" in huge.reason


def test_budget_periods_reset_at_utc_day_and_month_boundaries(ledger: Ledger) -> None:
    config = DAY5 + '[[budget]]\nscope = "org"\nname = "acme"\nperiod = "month"\nhard_usd = 0.015\n'
    clock = Clock(datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC).timestamp())
    meter = _meter(config, ledger, clock)
    call = _call(max_tokens=10_000)
    assert meter.reserve(call).allowed
    _succeed(call, 10, 10_000, clock.now)
    meter.settle(call)
    # one second later it is December: a new day and a new month for both budgets
    clock.now += 1
    assert meter.remaining_usd(_call()) == 0.01
    # within November both budgets still see the spend
    clock.now -= 2
    assert _flash_cost(10, 10_000) == Decimal("0.0060015")
    assert meter.remaining_usd(_call()) == 0.003998  # 0.0039985 rounded down
    # the month budget's refusal names the first of next month, across a year end
    clock.now = datetime(2026, 12, 31, 23, 0, tzinfo=UTC).timestamp()
    for who in ("a1", "a2"):  # two principals, so only the org budget adds up
        first = _call(who, max_tokens=10_000)
        assert meter.reserve(first).allowed
        _succeed(first, 10, 10_000, clock.now)
        meter.settle(first)
    refused = meter.reserve(_call("carol", max_tokens=10_000))
    assert refused.details is not None
    assert (refused.details["scope"], refused.details["resets_at"]) == (
        "org",
        "2027-01-01T00:00:00Z",
    )


def test_soft_limit_crossing_is_flagged_and_allowed(ledger: Ledger) -> None:
    meter = _meter(DAY5, ledger, Clock(SAT_NOON))
    below = meter.reserve(_call(max_tokens=5000))  # up to ~$0.003: below $0.008
    assert below.allowed
    assert not below.details  # nothing flagged (settle adds the settlement later)
    crossing = meter.reserve(_call(max_tokens=9000))  # $0.003 + $0.0054 >= $0.008
    assert crossing.allowed
    assert crossing.details is not None
    assert crossing.details["soft_limit_crossed"] is True
    assert (crossing.details["soft_usd"], crossing.details["limit_usd"]) == (0.008, 0.01)


TEAMS = """
[[budget]]
scope = "team"
period = "day"
hard_usd = 1.0
[[budget]]
scope = "principal"
period = "day"
hard_usd = 0.5
[[budget]]
scope = "principal"
name = "boss"
period = "day"
hard_usd = 2.0
[[budget]]
scope = "org"
name = "acme"
period = "month"
hard_usd = 100.0
"""


def test_team_resolution_and_specific_rules_override_the_default() -> None:
    assert team_of({"team": "ml", "department": "research"}) == "ml"
    assert team_of({"department": "research"}) == "research"
    assert team_of({"team": ""}) is None
    assert team_of(None) is None
    ledger = MemoryLedger()
    meter = _meter(TEAMS, ledger, Clock(SAT_NOON))
    call = _call("alice", {"department": "research"}, max_tokens=1000)
    assert meter.reserve(call).allowed
    amount = meter.estimate(call, SAT_NOON).usd
    for key in ("team:research:day:2026-11-28", "principal:alice:day:2026-11-28"):
        assert ledger.balance(key, SAT_NOON).reserved == amount
    assert ledger.balance("org:acme:month:2026-11", SAT_NOON).reserved == amount
    # no team claim: no team budget; the smallest remaining is the principal's
    loner = _call("dave")
    assert meter.remaining_usd(loner) == 0.5
    # boss's own rule replaces the "*" one (2.0, not min(0.5, 2.0))
    assert meter.remaining_usd(_call("boss")) == 2.0
    # a name with ':' cannot reach another scope's key
    odd = _call("team:research", max_tokens=1000)
    assert meter.reserve(odd).allowed
    assert ledger.balance("principal:team%3Aresearch:day:2026-11-28", SAT_NOON).reserved == amount


RATES = """
[[rate_limit]]
scope = "principal"
rpm = 2
[[rate_limit]]
scope = "team"
tpm = 5000
[[budget]]
scope = "principal"
period = "day"
hard_usd = 1.0
"""


def test_rate_limit_refusal_has_retry_after_and_releases_the_budget() -> None:
    ledger = MemoryLedger()
    clock = Clock(datetime(2026, 11, 28, 12, 0, 50, tzinfo=UTC).timestamp())
    meter = _meter(RATES, ledger, clock)
    for _ in range(2):
        assert meter.reserve(_call("erin", max_tokens=10)).allowed
    refused = meter.reserve(_call("erin", max_tokens=10))
    assert (refused.allowed, refused.kind, refused.retry_after) == (False, "rate_limit", 10.0)
    assert refused.details == {
        "scope": "principal",
        "name": "erin",
        "limit": 2,
        "unit": "requests",
        "window_s": 60,
    }
    assert "2 of 2 requests per minute used; retry after 10.0 s" in refused.reason
    # the refused call's budget reservation was released: only two calls are held
    held = ledger.balance("principal:erin:day:2026-11-28", clock.now).reserved
    assert held == 2 * meter.estimate(_call("erin", max_tokens=10), clock.now).usd
    clock.now += 10  # the next minute
    assert meter.reserve(_call("erin", max_tokens=10)).allowed


def test_token_rate_counts_worst_case_then_settles_to_actual() -> None:
    ledger = MemoryLedger()
    clock = Clock(SAT_NOON)
    meter = _meter(RATES, ledger, clock)
    team = {"team": "ml"}
    first = _call("u1", team, max_tokens=4000)
    first.metering = meter.reserve(first)
    assert first.metering.allowed
    # 4000+ tokens held of 5000: a second big call must wait...
    second = meter.reserve(_call("u2", team, max_tokens=4000))
    assert (second.kind, second.details and second.details["unit"]) == ("rate_limit", "tokens")
    assert second.retry_after is not None
    # ...until the first settles having used 300 tokens
    _succeed(first, 100, 200, clock.now)
    meter.settle(first)
    assert meter.reserve(_call("u2", team, max_tokens=4000)).allowed
    # a call larger than a whole minute's allowance cannot succeed by waiting
    alone = meter.reserve(_call("u3", team, max_tokens=6000))
    assert alone.retry_after is None
    assert "lower max_tokens" in alone.reason


def test_non_billable_actions_are_rate_limited_but_not_reserved() -> None:
    ledger = MemoryLedger()
    meter = _meter(RATES, ledger, Clock(SAT_NOON))
    request = httpx2.Request("GET", "https://api.example/models")
    call = Call.from_request(request)
    call.identity = _call("frank").identity
    metering = meter.reserve(call)
    assert (metering.allowed, metering.reserved_usd) == (True, None)
    assert ledger.balance("principal:frank:day:2026-11-28", SAT_NOON).reserved == Decimal(0)
    assert meter.reserve(call).allowed
    assert meter.reserve(call).kind == "rate_limit"  # the third request this minute


def test_sqlite_ledger_keeps_spend_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "meter.db"
    first = SQLiteLedger(path)
    limits = [BudgetLimit("principal:alice:month:2026-11", Decimal("10"))]
    held = first.reserve(limits, Decimal("1.5"), 900, SAT_NOON)
    open_hold = first.reserve(limits, Decimal("2"), 900, SAT_NOON)
    assert held.reservation is not None
    first.settle(held.reservation, Decimal("1.25"))
    first.close()
    second = SQLiteLedger(path)  # a new process would see the same
    balance = second.balance(limits[0].key, SAT_NOON + 1)
    assert (balance.spent, balance.reserved) == (Decimal("1.25"), Decimal("2"))
    assert open_hold.reservation is not None
    second.settle(open_hold.reservation, Decimal("0.5"))  # settled by the restarted process
    assert second.balance(limits[0].key, SAT_NOON + 2).spent == Decimal("1.75")
    second.close()


def test_remaining_is_none_without_budgets_and_floors() -> None:
    meter = _meter("[[rate_limit]]\nscope='principal'\ntier='developer'", MemoryLedger(), Clock(0))
    assert meter.remaining_usd(_call()) is None
    assert meter.config.rate_limits[0].rpm == 1000
    # remaining is rounded down: a policy must never see more than is left
    tight = _meter(DAY5, MemoryLedger(), Clock(SAT_NOON))
    call = _call(max_tokens=7)
    assert tight.reserve(call).allowed
    left = tight.remaining_usd(_call())
    assert left is not None
    exact = Decimal("0.01") - tight.estimate(call, SAT_NOON).usd
    assert Decimal(str(left)) <= exact
    assert math.isclose(left, float(exact), abs_tol=1e-6)


def test_a_budget_lowered_while_calls_are_in_flight(ledger: Ledger) -> None:
    # a new configuration (a restart with a lower limit) shares the ledger with calls
    # still in flight under the old one: their holds count against the new limit at
    # once, and they still settle normally afterwards
    rule = '[[budget]]\nscope = "principal"\nperiod = "day"\nhard_usd = {}\n'
    old = _meter(rule.format(5.0), ledger, Clock(SAT_NOON))
    in_flight = _call(max_tokens=200_000)  # a worst case of about $0.12 off-peak
    in_flight.metering = old.reserve(in_flight)
    assert in_flight.metering.allowed
    held = in_flight.metering.reserved_usd
    assert held is not None
    new = _meter(rule.format(held + 0.0001), ledger, Clock(SAT_NOON))
    refused = new.reserve(_call(max_tokens=1_000))
    assert not refused.allowed  # the old call's hold leaves no room under the new limit
    assert refused.kind == "budget"
    _succeed(in_flight, 10, 50, SAT_NOON)
    old.settle(in_flight)  # the old call settles at its real (small) cost...
    assert new.reserve(_call(max_tokens=1_000)).allowed  # ...and the room comes back


def test_a_new_configuration_on_a_live_meter_applies_to_the_next_call() -> None:
    # the meter caches each caller's rules per day; new rules must not be hidden by it
    clock = Clock(SAT_NOON)
    meter = _meter(DAY5, MemoryLedger(), clock)
    assert meter.reserve(_call(max_tokens=10)).allowed
    lowered = DAY5.replace("hard_usd = 0.01", "hard_usd = 0.000001").replace(
        "soft_usd = 0.008\n", ""
    )
    meter.config = _config(lowered)
    refused = meter.reserve(_call(max_tokens=10))
    assert (refused.allowed, refused.kind) == (False, "budget")
    assert refused.details is not None
    assert refused.details["limit_usd"] == 0.000001


def test_a_clock_stepped_back_keeps_holds_live_and_charges_the_reserved_day(
    ledger: Ledger,
) -> None:
    # an NTP step backwards (or a host behind the others) must neither drop a hold nor
    # lose a settlement; the call stays charged to the day its reservation named
    clock = Clock(datetime(2026, 11, 29, 0, 0, 30, tzinfo=UTC).timestamp())
    meter = _meter(DAY5, ledger, clock)
    call = _call(max_tokens=1000)
    call.metering = meter.reserve(call)
    assert call.metering.allowed
    clock.now -= 3600  # back to 23:00:30 the day before
    today = "principal:alice:day:2026-11-29"
    assert ledger.balance(today, clock.now).reserved > 0  # still held
    _succeed(call, 10, 20, clock.now)
    meter.settle(call)
    assert ledger.balance(today, clock.now).spent == _flash_cost(10, 20)
    assert ledger.balance(today, clock.now).reserved == 0
    # calls made while the clock reads the 28th count against the 28th
    assert meter.reserve(_call(max_tokens=10)).allowed
    yesterday = "principal:alice:day:2026-11-28"
    assert ledger.balance(yesterday, clock.now).reserved > 0
