"""The Redis ledger against a real redis-server (scripts/start-services.sh starts one on
127.0.0.1:6390). The semantic checks every backend shares run in
tests/unit/test_budgets.py; these are Redis's own: processes on a shared server never
together pass a limit, exact money beyond a double's reach, keys that expire, scripts
reloaded after a server restart, hosts with skewed clocks kept consistent by the
server's clock, the unsafe local fallback through a real outage, and errors that name
the server but never its password."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import tomllib
from collections.abc import Iterator
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from secure_ds._secret import Secret
from secure_ds.config import Settings
from secure_ds.cost import PriceTable
from secure_ds.cost._budgets import parse_budgets
from secure_ds.cost._fallback import FallbackLedger
from secure_ds.cost._ledger import GRACE_S, Balance, BudgetLimit, RateLimit
from secure_ds.cost._ledger_redis import (
    RETAIN_S,
    LedgerUnavailable,
    RedisLedger,
    from_units,
    to_units,
)
from secure_ds.cost._ledgers import ledger_from_settings
from secure_ds.cost._meter import BudgetMeter
from secure_ds.errors import ConfigError, SecureDSError
from secure_ds.sandbox import Sandbox
from tests._ledger_workers import KEY, NOW, WORKERS, reserve_and_settle, reserve_only
from tests._processes import run_workers
from tests._services import redis_ledger, require_redis
from tests.conftest import read_audit
from tests.unit.test_budgets import _call

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger() -> Iterator[RedisLedger]:
    with redis_ledger() as led:
        yield led


# ---------------------------------------------------------------------- many processes


def test_processes_never_reserve_past_the_limit(ledger: RedisLedger) -> None:
    url = require_redis()
    # 240 attempts of $0.007 against $1.00: exactly 142 fit (142 * 0.007 = 0.994)
    won = run_workers(reserve_only, [(("redis", url, ledger.namespace), "1.00", "0.007")] * WORKERS)
    assert sum(won) == 142
    balance = ledger.balance(KEY, NOW)
    assert balance.reserved == Decimal("0.007") * 142 <= Decimal("1.00")


def test_concurrent_settlements_lose_nothing(ledger: RedisLedger) -> None:
    url = require_redis()
    jobs = [(("redis", url, ledger.namespace), "0.5", w) for w in range(WORKERS)]
    charged = run_workers(reserve_and_settle, jobs)
    # a new client (another host's view) sees every settlement exactly once
    other = RedisLedger(url, namespace=ledger.namespace, clock="caller")
    balance = other.balance(KEY, NOW)
    other.close()
    assert balance.spent == sum((Decimal(c) for c in charged), Decimal(0))
    assert balance.reserved == Decimal(0)
    assert Decimal(0) < balance.spent <= Decimal("0.5")


# ---------------------------------------------------------------------- exact money


def test_amounts_beyond_a_doubles_precision_stay_exact(ledger: RedisLedger) -> None:
    # 2**53 units would be 0.009 USD: these sums pass it by far, digit for digit
    limit = BudgetLimit(KEY, Decimal("123456789012.000000000000000001"))
    amounts = [Decimal("123456789011.999999999999999999"), Decimal("0.000000000000000002")]
    first = ledger.reserve([limit], amounts[0], 900, NOW)
    assert first.reservation is not None
    # one unit (10**-18 USD) over the limit: refused
    assert ledger.reserve([limit], Decimal("0.000000000000000003"), 900, NOW).blocked == 0
    second = ledger.reserve([limit], amounts[1], 900, NOW)
    assert second.reservation is not None  # exactly at the limit
    assert ledger.balance(KEY, NOW).reserved == limit.limit
    ledger.settle(first.reservation, amounts[0])
    ledger.settle(second.reservation, amounts[1])
    assert ledger.balance(KEY, NOW) == Balance(limit.limit, Decimal(0))


def test_unit_conversion_rounds_up_and_round_trips() -> None:
    assert to_units(Decimal("0.0025")) == "2500000000000000"
    assert from_units(to_units(Decimal("0.0025"))) == Decimal("0.0025")
    assert str(from_units(to_units(Decimal(100)))) == "100"  # not 1E+2
    # finer than 10**-18 USD: rounded up, so a hold or charge is never smaller
    assert to_units(Decimal("1e-19")) == "1"
    with localcontext() as ctx:
        ctx.prec = 60
        big = Decimal(10) ** 30 + Decimal("0.000000000000000001")
        assert from_units(to_units(big)) == big
    with pytest.raises(ValueError, match=">= 0"):
        to_units(Decimal("-0.01"))


# ---------------------------------------------------------------------- keys and scripts


def test_keys_live_in_the_namespace_and_expire(ledger: RedisLedger) -> None:
    held = ledger.reserve([BudgetLimit(KEY, Decimal(1))], Decimal("0.1"), 900, NOW)
    assert held.reservation is not None
    ledger.settle(held.reservation, Decimal("0.05"))
    ledger.reserve([BudgetLimit(KEY, Decimal(1))], Decimal("0.1"), 900, NOW)
    ledger.hit([RateLimit("rate:team:ml", rpm=5, tpm=None)], 1, 10, NOW)
    client = ledger._client
    keys = sorted(client.scan_iter(match="secure-ds:*"))
    mine = [k for k in keys if k.startswith(f"secure-ds:{{{ledger.namespace}}}:")]
    assert {k.split(":", 2)[2].split(":", 1)[0] for k in mine} == {"spent", "holds", "rate"}
    for key in mine:
        ttl = client.ttl(key)
        # budget keys outlive any period they count; rate windows last a few minutes
        limit = 3 * 60 if ":rate:" in key else RETAIN_S
        assert 0 < ttl <= limit, (key, ttl)
    assert RETAIN_S > 31 * 86_400 + GRACE_S


def test_namespaces_do_not_share_budgets(ledger: RedisLedger) -> None:
    with redis_ledger() as other:
        assert ledger.reserve([BudgetLimit(KEY, Decimal(1))], Decimal(1), 900, NOW).reservation
        assert other.reserve([BudgetLimit(KEY, Decimal(1))], Decimal(1), 900, NOW).reservation


def test_scripts_are_reloaded_after_a_server_loses_them(ledger: RedisLedger) -> None:
    limits = [BudgetLimit(KEY, Decimal(1))]
    assert ledger.reserve(limits, Decimal("0.1"), 900, NOW).reservation is not None
    ledger._client.script_flush()  # what a restarted server looks like to EVALSHA
    assert ledger.reserve(limits, Decimal("0.1"), 900, NOW).reservation is not None
    assert ledger.balance(KEY, NOW).reserved == Decimal("0.2")


def test_a_settle_after_the_grace_period_is_ignored(ledger: RedisLedger) -> None:
    limits = [BudgetLimit(KEY, Decimal(1))]
    held = ledger.reserve(limits, Decimal("0.5"), 60, NOW)
    assert held.reservation is not None
    # the next reserve after expiry + grace deletes the hold...
    ledger.reserve(limits, Decimal("0.1"), 60, NOW + 60 + GRACE_S)
    ledger.settle(held.reservation, Decimal("0.5"))
    # ...so its settle finds nothing to charge, as on the other backends
    assert ledger.balance(KEY, NOW + 60 + GRACE_S).spent == Decimal(0)


# ---------------------------------------------------------------------- skewed clocks

DAY_BUDGET = """
[meter]
reservation_ttl_s = 60
[[budget]]
scope = "principal"
period = "day"
hard_usd = 0.01
[[rate_limit]]
scope = "principal"
rpm = 1
"""
SKEW_S = 26 * 3600.0  # more than a day: the two hosts disagree even on the date


def _host(url: str, namespace: str, skew: float, clock: str) -> tuple[RedisLedger, BudgetMeter]:
    """A host whose own clock is ``skew`` seconds off, with a meter as the client builds
    it (the meter's clock is the ledger's)."""
    ledger = RedisLedger(
        url,
        namespace=namespace,
        clock=clock,  # type: ignore[arg-type]
        local_clock=lambda: time.time() + skew,
    )
    config = parse_budgets(tomllib.loads(DAY_BUDGET))
    return ledger, BudgetMeter(config, PriceTable.load(), ledger)


@pytest.mark.parametrize("clock", ["server", "caller"])
def test_hosts_with_skewed_clocks_share_one_budget_and_rate_window(
    ledger: RedisLedger, clock: str
) -> None:
    url = require_redis()
    ahead, meter_ahead = _host(url, ledger.namespace, +SKEW_S, clock)
    behind, meter_behind = _host(url, ledger.namespace, -SKEW_S, clock)
    try:
        big = _call(max_tokens=14_000)  # a worst case of about $0.0084 off-peak, $0.017 peak
        first = meter_behind.reserve(big)
        if not first.allowed:  # a peak hour on the server: the same call costs double
            big = _call(max_tokens=7_000)
            first = meter_behind.reserve(big)
        assert first.allowed, first.reason
        second = meter_ahead.reserve(_call(max_tokens=14_000))
        if clock == "server":
            # one clock: the same day's budget, the hold still live, the same minute
            assert abs(ahead.now() - behind.now()) < 5.0
            assert not second.allowed
            assert second.kind == "budget"
            small = meter_ahead.reserve(_call(max_tokens=10))
            assert (small.allowed, small.kind) == (False, "rate_limit")
        else:
            # each host's own clock: a day apart, so two budgets, and two rate windows.
            # This is what the server clock prevents: together they pass the $0.01 limit.
            assert second.allowed
    finally:
        ahead.close()
        behind.close()


def test_now_follows_the_server_clock_not_this_hosts(ledger: RedisLedger) -> None:
    url = require_redis()
    skewed = RedisLedger(
        url, namespace=ledger.namespace, local_clock=lambda: time.time() - 3 * 3600
    )
    try:
        server_seconds, _ = skewed._client.time()
        assert abs(skewed.now() - server_seconds) < 5.0
        # a hold written by a caller-clock ledger at "3 hours ago" has expired by the
        # server's clock, which is the one the server-clock ledger compares with
        limits = [BudgetLimit(KEY, Decimal(1))]
        assert ledger.reserve(limits, Decimal("0.6"), 60, time.time() - 3 * 3600).reservation
        assert skewed.balance(KEY, 0.0).reserved == Decimal(0)
        assert skewed.reserve(limits, Decimal("0.6"), 60, 0.0).reservation is not None
    finally:
        skewed.close()


# ---------------------------------------------------------------------- the unsafe fallback


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _OwnRedis:
    """A redis-server of the test's own, so it can be stopped and started (a real
    outage of a real server; the shared one on 6390 stays up for the other tests)."""

    def __init__(self) -> None:
        require_redis()  # the binary comes with the server scripts/start-services.sh runs
        binary = shutil.which("redis-server")
        assert binary is not None
        self.binary = binary
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 (a fixed command line)
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise AssertionError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


class _Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fallback_meters_locally_through_an_outage_and_goes_back() -> None:
    server = _OwnRedis()
    server.start()
    monotonic = _Monotonic()
    ledger = FallbackLedger(RedisLedger(server.url, timeout=1), retry_s=30, monotonic=monotonic)
    limits = [BudgetLimit(KEY, Decimal(1))]
    try:
        before = ledger.admit(limits, Decimal("0.25"), 900, (), 0, 0, NOW)
        assert before.fallback is None
        assert not ledger.down
        assert before.budgets is not None
        assert before.budgets.reservation is not None
        server.stop()
        during = ledger.admit(limits, Decimal("0.25"), 900, (), 0, 0, NOW)
        assert ledger.down
        assert during.fallback is not None
        assert "UNSAFE local ledger" in during.fallback
        held = during.budgets.reservation if during.budgets is not None else None
        assert held is not None
        # the local ledger starts empty: it knows nothing of the 0.25 held in Redis; a
        # balance (what a policy's remaining budget is read from) falls back too
        assert ledger.balance(KEY, NOW).reserved == Decimal("0.25")
        # within retry_s Redis is not tried again: no connect timeout per call
        with patch.object(ledger.primary, "admit", wraps=ledger.primary.admit) as primary:
            again = ledger.admit(limits, Decimal("0.5"), 900, (), 0, 0, NOW)
        primary.assert_not_called()
        assert again.fallback is not None
        # a local reservation settles locally, whatever Redis does meanwhile
        ledger.finish(held, Decimal("0.1"), (), None, 0)
        assert ledger.local.balance(KEY, NOW).spent == Decimal("0.1")
        # a Redis reservation cannot settle while Redis is down: the meter records that
        assert before.budgets.reservation is not None
        with pytest.raises(LedgerUnavailable):
            ledger.finish(before.budgets.reservation, Decimal("0.1"), (), None, 0)
        server.start()  # back (empty: it persisted nothing)
        monotonic.now += 31
        after = ledger.admit(limits, Decimal("0.25"), 900, (), 0, 0, NOW)
        assert after.fallback is None
        assert not ledger.down
        assert ledger.primary.balance(KEY, NOW).reserved == Decimal("0.25")
    finally:
        ledger.close()
        server.stop()


def _settings_with_redis_down(sb: Sandbox, tmp_path: Path, **extra: Any) -> Settings:
    """A client's settings with an org budget kept in a Redis nobody listens on (port 1),
    behind a password that must never show up anywhere."""
    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budget]]\nscope = "org"\nperiod = "day"\nhard_usd = 5\n')
    return sb.client_settings(
        "alice",
        audit_path=tmp_path / "audit.jsonl",
        budgets=budgets,
        meter_backend="redis",
        meter_redis_url=Secret("redis://:hunter2-secret@127.0.0.1:1/0"),
        **extra,
    )


def test_a_client_with_the_unsafe_fallback_keeps_working_and_audits_it(
    sb: Sandbox, tmp_path: Path
) -> None:
    from secure_ds import SecureDeepSeek

    settings = _settings_with_redis_down(sb, tmp_path, meter_fallback="local-unsafe")
    with SecureDeepSeek(settings=settings) as client:
        reply = client.chat.completions.create(
            model="deepseek-flash", messages=[{"role": "user", "content": "hi"}]
        )
    assert reply.choices[0].message.content
    record = read_audit(tmp_path / "audit.jsonl")[-1]
    assert record["outcome"] == "permit"
    fallback = record["meter"]["details"]["ledger_fallback"]
    assert "UNSAFE local ledger" in fallback
    assert "redis://127.0.0.1:1/0" in fallback
    assert "UNSAFE local ledger" in record["meter"]["reason"]
    assert "hunter2" not in json.dumps(record)


def test_the_unsafe_fallback_is_only_for_the_redis_backend() -> None:
    with pytest.raises(ConfigError, match="SECURE_DS_METER_FALLBACK") as info:
        Settings(token_provider="api-key", api_key=Secret("sk-x"), meter_fallback="local-unsafe")
    assert "has no shared ledger to fall back from" in str(info.value)
    with pytest.raises(ConfigError, match="not a meter fallback"):
        Settings(token_provider="api-key", api_key=Secret("sk-x"), meter_fallback="yes")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- failures and settings


def test_an_unreachable_server_fails_closed_without_showing_the_password() -> None:
    # port 1 on loopback: nothing listens there, so the connection is refused at once
    ledger = RedisLedger("redis://:hunter2-secret@127.0.0.1:1/0", timeout=2)
    try:
        with pytest.raises(LedgerUnavailable) as info:
            ledger.reserve([BudgetLimit(KEY, Decimal(1))], Decimal("0.1"), 900, NOW)
        with pytest.raises(LedgerUnavailable):
            ledger.hit([RateLimit("rate:team:ml", rpm=5, tpm=None)], 1, 0, NOW)
        with pytest.raises(LedgerUnavailable):
            ledger.balance(KEY, NOW)
    finally:
        ledger.close()
    text = str(info.value)
    assert isinstance(info.value, SecureDSError)
    assert "redis://127.0.0.1:1/0" in text
    assert "hunter2" not in text
    assert "scripts/start-services.sh" in info.value.hint


def test_a_wrong_password_says_to_check_it() -> None:
    url = require_redis()
    # the test server has no password: AUTH with one fails as a wrong password would
    ledger = RedisLedger(url.replace("redis://", "redis://nobody:wrong-pw@", 1), timeout=2)
    try:
        with pytest.raises(LedgerUnavailable) as info:
            ledger.balance(KEY, NOW)
    finally:
        ledger.close()
    assert "wrong-pw" not in str(info.value)
    assert "password in SECURE_DS_METER_REDIS_URL" in info.value.hint


def test_bad_urls_and_namespaces_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not a Redis URL") as info:
        RedisLedger("http://:pw@host:6379/0")
    assert "pw" not in str(info.value).replace("SECURE_DS", "")
    with pytest.raises(ConfigError, match="not a ledger namespace"):
        RedisLedger("redis://127.0.0.1:6390/0", namespace="a b")


def test_ledger_from_settings_builds_a_redis_ledger() -> None:
    url = require_redis()
    settings = Settings(
        token_provider="api-key",
        api_key=Secret("sk-test"),
        meter_backend="redis",
        meter_redis_url=Secret(url),
    )
    ledger = ledger_from_settings(settings)
    try:
        assert isinstance(ledger, RedisLedger)
        assert ledger.namespace == "default"
        assert ledger.balance("nobody:day:1970-01-01", NOW).spent == Decimal(0)
    finally:
        ledger.close()


def test_a_client_whose_redis_is_down_refuses_calls_and_says_why(
    sb: Sandbox, tmp_path: Path
) -> None:
    from secure_ds import PolicyDenied, SecureDeepSeek

    settings = _settings_with_redis_down(sb, tmp_path)
    before = sb.stats.requests
    with (
        SecureDeepSeek(settings=settings) as client,
        pytest.raises(PolicyDenied, match="meter stage failed") as info,
    ):
        client.chat.completions.create(
            model="deepseek-flash", messages=[{"role": "user", "content": "hi"}]
        )
    assert sb.stats.requests == before  # fail closed: nothing was sent
    assert "redis://127.0.0.1:1/0" in str(info.value)
    assert "hunter2" not in str(info.value)
    record = read_audit(tmp_path / "audit.jsonl")[-1]
    assert record["outcome"] == "deny"
    assert "hunter2" not in json.dumps(record)
