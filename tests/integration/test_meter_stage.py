"""The meter stage's contract with the guard chain: refusals are typed (a budget is a
BudgetExceeded, a rate limit a 429 RateLimited with Retry-After), every reservation is
settled exactly once whatever happens, and policies see the remaining budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from secure_ds import BudgetExceeded, PolicyDenied, RateLimited, SecureDeepSeek
from secure_ds.errors import ServerError
from secure_ds.guard import Call, Metering
from secure_ds.sandbox import Sandbox
from tests.conftest import read_audit

pytestmark = pytest.mark.integration

MESSAGES: list[Any] = [{"role": "user", "content": "meter check"}]
POLICIES = Path(__file__).parents[2] / "policies"


class Recording:
    """A meter that allows everything and records what the chain asks of it."""

    def __init__(self, remaining: float | None = None) -> None:
        self.remaining = remaining
        self.asked = 0  # remaining_usd calls: a ledger read each with a real meter
        self.settled: list[tuple[str, str, object]] = []

    def remaining_usd(self, call: Call) -> float | None:
        self.asked += 1
        return self.remaining

    def reserve(self, call: Call) -> Metering:
        call.reservation = f"r-{call.event_id}"
        return Metering(engine="recording", allowed=True, reserved_usd=0.01)

    def settle(self, call: Call) -> None:
        cost = call.cost.usd if call.cost is not None else None
        self.settled.append((call.reservation, call.outcome, cost))


class Refusing:
    def __init__(self, metering: Metering) -> None:
        self.metering = metering

    def reserve(self, call: Call) -> Metering:
        return self.metering

    def settle(self, call: Call) -> None:
        raise AssertionError("a refused call is never settled")


def test_a_rate_limit_is_a_local_429_with_retry_after(sb: Sandbox, tmp_path: Path) -> None:
    settings = sb.client_settings("alice", audit_path=tmp_path / "a.jsonl")
    meter = Refusing(
        Metering(
            engine="budget",
            allowed=False,
            kind="rate_limit",
            retry_after=12.3,
            reason="principal 'alice' sent 1,000 requests this minute (limit 1,000)",
            details={"scope": "principal", "name": "alice", "limit": 1000},
        )
    )
    before = sb.stats.requests
    with (
        SecureDeepSeek(settings=settings, meter=meter) as c,
        pytest.raises(RateLimited) as info,
    ):
        c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert sb.stats.requests == before  # refused before sending
    error = info.value
    assert isinstance(error, openai.RateLimitError)  # what openai-based code catches
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "13"  # rounded up, never early
    assert error.code == "rate_limit_exceeded"
    assert "1,000 requests this minute" in str(error)
    record = read_audit(settings.audit_path)[0]
    assert record["outcome"] == "deny"
    assert record["error"]["type"] == "RateLimited"
    assert record["meter"]["kind"] == "rate_limit"
    assert record["meter"]["retry_after_s"] == 12.3


def test_a_budget_refusal_names_the_budget(sb: Sandbox, tmp_path: Path) -> None:
    settings = sb.client_settings("alice", audit_path=tmp_path / "a.jsonl")
    details = {
        "scope": "team",
        "name": "ml",
        "period": "day",
        "spent_usd": 4.99,
        "reserved_usd": 0.0,
        "limit_usd": 5.0,
        "resets_at": "2026-11-29T00:00:00Z",
    }
    meter = Refusing(
        Metering(
            engine="budget",
            allowed=False,
            kind="budget",
            details=details,
            reason="team budget 'ml' for day: spent $4.99 would pass the $5.00 limit",
        )
    )
    with (
        SecureDeepSeek(settings=settings, meter=meter) as c,
        pytest.raises(BudgetExceeded) as info,
    ):
        c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert isinstance(info.value, PolicyDenied)
    assert info.value.details == details
    assert "team budget 'ml'" in str(info.value)
    record = read_audit(settings.audit_path)[0]
    assert record["meter"]["details"] == details
    assert record["error"]["type"] == "BudgetExceeded"  # the record names what was raised


def test_every_reservation_is_settled_once_whatever_happens(sb: Sandbox, tmp_path: Path) -> None:
    settings = sb.client_settings(
        "alice", audit_path=tmp_path / "a.jsonl", max_attempts=2, backoff_factor=0.001
    )
    meter = Recording()
    with SecureDeepSeek(settings=settings, meter=meter) as c:
        c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
        list(c.chat.completions.create(model="deepseek-flash", messages=MESSAGES, stream=True))
        sb.fail_next(500, times=2)
        with pytest.raises(ServerError):
            c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    records = read_audit(settings.audit_path)
    assert [r["outcome"] for r in records] == ["permit", "permit", "failure"]
    assert [s[0] for s in meter.settled] == [f"r-{r['event_id']}" for r in records]
    # a success settles with its real cost; a failure releases (no cost)
    assert [s[1] for s in meter.settled] == ["permit", "permit", "failure"]
    assert meter.settled[0][2] is not None
    assert meter.settled[2][2] is None


def test_a_meter_that_fails_to_settle_is_recorded_not_raised(sb: Sandbox, tmp_path: Path) -> None:
    class Broken(Recording):
        def settle(self, call: Call) -> None:
            raise OSError("ledger unreachable")

    settings = sb.client_settings("alice", audit_path=tmp_path / "a.jsonl")
    with SecureDeepSeek(settings=settings, meter=Broken()) as c:
        reply = c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert reply.choices  # the caller got the answer the endpoint gave
    record = read_audit(settings.audit_path)[0]
    assert record["meter"]["settle_error"] == "the meter failed to settle (OSError)"


def test_policies_see_the_remaining_budget(sb: Sandbox, tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    for name in ("secure-ds.cedarschema", "entities.json"):
        (folder / name).write_text((POLICIES / name).read_text())
    (folder / "main.cedar").write_text(
        '@id("all")\npermit (principal, action, resource);\n'
        '@id("premium-needs-budget")\n@reason("less than $1 left: use deepseek-flash")\n'
        "forbid (principal, action, resource is SecureDS::Model)\n"
        'when { resource.cost_tier == "premium" && context has budget_remaining_usd &&\n'
        '  context.budget_remaining_usd.lessThan(decimal("1.0")) };\n'
    )
    settings = sb.client_settings(
        "alice", audit_path=tmp_path / "a.jsonl", policy_dir=folder, policy_reload=0
    )
    with SecureDeepSeek(settings=settings, meter=Recording(remaining=0.5)) as c:
        c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
        with pytest.raises(PolicyDenied, match=r"less than \$1 left"):
            c.chat.completions.create(model="deepseek-v4-pro", messages=MESSAGES)
    with SecureDeepSeek(settings=settings, meter=Recording(remaining=25.0)) as c:
        c.chat.completions.create(model="deepseek-v4-pro", messages=MESSAGES)
    records = read_audit(settings.audit_path)
    assert [r["outcome"] for r in records] == ["permit", "deny", "permit"]
    assert records[1]["decide"]["context"]["budget_remaining_usd"] == {
        "__extn": {"fn": "decimal", "arg": "0.5000"}
    }


def test_the_remaining_budget_is_read_only_when_something_uses_it(
    sb: Sandbox, tmp_path: Path
) -> None:
    # without a policy that reads it, nothing asks the meter before deciding (a ledger
    # round trip per call saved); route:auto asks for it once, when it routes
    folder = tmp_path / "policies"
    folder.mkdir()
    for name in ("secure-ds.cedarschema", "entities.json"):
        (folder / name).write_text((POLICIES / name).read_text())
    (folder / "main.cedar").write_text('@id("all")\npermit (principal, action, resource);\n')
    settings = sb.client_settings("alice", audit_path=tmp_path / "a.jsonl")
    plain = Recording(remaining=5.0)
    with SecureDeepSeek(settings=settings, meter=plain) as c:
        c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert plain.asked == 0
    with_policy = Recording(remaining=5.0)
    policy_settings = settings.replace(policy_dir=folder, policy_reload=0)
    with SecureDeepSeek(settings=policy_settings, meter=with_policy) as c:
        c.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    assert with_policy.asked == 0  # the policies never mention budget_remaining_usd
    (folder / "main.cedar").write_text(
        '@id("all")\n@obligation("route:auto")\npermit (principal, action, resource);\n'
    )
    routed = Recording(remaining=5.0)
    with SecureDeepSeek(settings=policy_settings, meter=routed) as c:
        c.chat.completions.create(model="deepseek-v4-pro", messages=MESSAGES)
    assert routed.asked == 1  # the router needed it
