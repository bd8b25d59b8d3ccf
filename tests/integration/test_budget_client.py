"""The budget meter in a real client against the sandbox: calls are reserved, settled
at their recorded cost, refused with BudgetExceeded once the hard limit would be
passed, and answered like a DeepSeek 429 when a rate limit is reached."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest

from secure_ds import SecureDeepSeek
from secure_ds.cost import PriceTable
from secure_ds.cost._budgets import BudgetConfig, parse_budgets
from secure_ds.cost._ledger import SQLiteLedger
from secure_ds.cost._meter import BudgetMeter
from secure_ds.errors import BudgetExceeded, RateLimited
from secure_ds.guard._call import Call
from secure_ds.sandbox import Sandbox
from tests.conftest import read_audit

pytestmark = pytest.mark.integration

MESSAGES: list[Any] = [{"role": "user", "content": "what does this cost?"}]
SAT_NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()  # off-peak


def _meter(text: str, db: Path, clock: Any = None) -> BudgetMeter:
    config = parse_budgets(tomllib.loads(text))
    if clock is None:
        return BudgetMeter(config, PriceTable.load(), SQLiteLedger(db))
    return BudgetMeter(config, PriceTable.load(), SQLiteLedger(db), clock=clock)


def _estimate(max_tokens: int) -> Decimal:
    """The meter's worst case for the chat call these tests make."""
    body = {"model": "deepseek-flash", "messages": MESSAGES, "max_tokens": max_tokens}
    request = httpx2.Request(
        "POST", "https://sandbox/chat/completions", content=json.dumps(body).encode()
    )
    meter = BudgetMeter(BudgetConfig(), PriceTable.load())
    return meter.estimate(Call.from_request(request), SAT_NOON).usd


def test_calls_settle_at_cost_until_the_budget_refuses(sb: Sandbox, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    settings = sb.client_settings("alice", attributes={"team": "platform"}, audit_path=audit)
    # the limit fits one call's worst case exactly: the first call is allowed, and once
    # it has cost anything the second one's worst case no longer fits
    limit = _estimate(2000)
    meter = _meter(
        f'[[budget]]\nscope = "team"\nperiod = "day"\nhard_usd = {limit}\n',
        tmp_path / "m.db",
        clock=lambda: SAT_NOON,  # reserve in a fixed off-peak hour, so the estimate is known
    )
    with SecureDeepSeek(settings=settings, meter=meter) as client:
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=2000)
        with pytest.raises(BudgetExceeded) as info:
            client.chat.completions.create(
                model="deepseek-flash", messages=MESSAGES, max_tokens=2000
            )
    details = info.value.details
    assert (details["scope"], details["name"], details["period"]) == ("team", "platform", "day")
    assert details["limit_usd"] == float(limit)
    assert details["resets_at"] == "2026-11-29T00:00:00Z"
    first, refused = read_audit(audit)
    assert (first["outcome"], refused["outcome"]) == ("permit", "deny")
    metering = first["meter"]
    assert metering["engine"] == "budget"
    assert metering["reserved_usd"] == float(limit)
    assert 0 < first["cost"]["usd"] <= metering["reserved_usd"]  # the worst case held
    assert metering["details"]["settled_usd"] == first["cost"]["usd"]
    # the refusal reports exactly what the first call was charged, nothing still held
    assert (details["spent_usd"], details["reserved_usd"]) == (first["cost"]["usd"], 0.0)
    assert refused["meter"]["kind"] == "budget"
    meter.close()


def test_rate_limit_is_a_429_with_retry_after(sb: Sandbox, tmp_path: Path) -> None:
    settings = sb.client_settings("bob", audit_path=tmp_path / "audit.jsonl")
    meter = _meter('[[rate_limit]]\nscope = "principal"\nrpm = 2\n', tmp_path / "m.db")
    with SecureDeepSeek(settings=settings, meter=meter) as client:
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=5)
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=5)
        with pytest.raises(RateLimited) as info:
            client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert info.value.status_code == 429
    assert 0 < int(info.value.response.headers["retry-after"]) <= 60
    meter.close()


async def test_settings_wire_a_shared_sqlite_budget_into_sync_and_async_clients(
    sb: Sandbox, tmp_path: Path
) -> None:
    # two clients (one async) on one SQLite ledger, configured only through Settings:
    # the spend of one counts against the other
    from secure_ds import AsyncSecureDeepSeek

    budgets = tmp_path / "budgets.toml"
    budgets.write_text('[[budget]]\nscope = "org"\nperiod = "month"\nhard_usd = 0.01\n')
    settings = sb.client_settings(
        "alice",
        audit_path=tmp_path / "audit.jsonl",
        budgets=budgets,
        meter_backend="sqlite",
        meter_db=tmp_path / "ledger.db",
    )
    with SecureDeepSeek(settings=settings) as client:
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES, max_tokens=100)
    async with AsyncSecureDeepSeek(settings=settings) as aclient:
        assert aclient.guard.meter_blocks  # SQLite: reserve and settle run off the loop
        await aclient.chat.completions.create(
            model="deepseek-flash", messages=MESSAGES, max_tokens=100
        )
        with pytest.raises(BudgetExceeded) as info:
            # a worst case of 20,000 output tokens at $1.20/M cannot fit in $0.01
            await aclient.chat.completions.create(
                model="deepseek-flash", messages=MESSAGES, max_tokens=20_000
            )
    assert info.value.details["scope"] == "org"
    assert info.value.details["limit_usd"] == 0.01
    records = read_audit(tmp_path / "audit.jsonl")
    assert [r["outcome"] for r in records] == ["permit", "permit", "deny"]
    spent = sum(r["cost"]["usd"] for r in records[:2])
    assert info.value.details["spent_usd"] == pytest.approx(spent)
    assert records[0]["meter"]["engine"] == "budget"
