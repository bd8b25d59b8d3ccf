"""route:auto: complexity picks cheap or strong, the remaining budget can overrule it,
and max_tokens is capped so the worst case fits."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import pytest

from secure_ds.cost import PriceTable
from secure_ds.cost._meter import estimate_prompt_tokens
from secure_ds.cost._router import Router
from secure_ds.guard import Decision, Enforcer
from secure_ds.guard._call import Call
from secure_ds.guard._stages import ObligationRefused
from secure_ds.sandbox import Sandbox

SATURDAY_NOON = time.mktime((2026, 11, 28, 12, 0, 0, 0, 0, 0)) - time.timezone
SIMPLE: dict[str, Any] = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 100}
HARD: dict[str, Any] = {
    "messages": [
        {
            "role": "user",
            "content": "Analyze this algorithm step by step, prove it terminates and compare "
            "the design trade-offs:\n```python\ndef f(xs):\n    return sorted(xs)\n```\n"
            + "context line\n"
            * 400,
        }
    ],
    "max_tokens": 2000,
}


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(PriceTable.load())


def test_the_table_gives_the_cheap_and_strong_models(router: Router) -> None:
    assert (router.cheap, router.strong) == ("deepseek-flash", "deepseek-v4-pro")


def test_complexity_separates_a_greeting_from_an_analysis(router: Router) -> None:
    assert router.complexity(SIMPLE) < 0.2
    assert router.complexity(HARD) >= 0.5


def test_without_a_budget_complexity_decides(router: Router) -> None:
    assert router.choose(SIMPLE, None, SATURDAY_NOON).model == "deepseek-flash"
    hard = router.choose(HARD, None, SATURDAY_NOON)
    assert hard.model == "deepseek-v4-pro"
    assert hard.max_tokens is None
    assert "strong" in hard.note


PROMPT = estimate_prompt_tokens(HARD)


def test_a_tight_budget_falls_back_to_the_cheap_model(router: Router) -> None:
    cheap = router._worst("deepseek-flash", PROMPT, 2000, SATURDAY_NOON)
    strong = router._worst("deepseek-v4-pro", PROMPT, 2000, SATURDAY_NOON)
    assert cheap < strong
    route = router.choose(HARD, float(cheap), SATURDAY_NOON)  # the cheap one just fits
    assert route.model == "deepseek-flash"
    assert route.max_tokens is None
    assert "would not fit" in route.note


def test_a_budget_smaller_than_the_worst_case_caps_max_tokens(router: Router) -> None:
    # what is left covers the prompt and about 100 output tokens, not 2,000
    left = router._worst("deepseek-flash", PROMPT, 100, SATURDAY_NOON)
    route = router.choose(HARD, float(left), SATURDAY_NOON)
    assert route.model == "deepseek-flash"
    assert route.max_tokens == 100
    assert router._worst("deepseek-flash", PROMPT, 100, SATURDAY_NOON) <= left
    assert router._worst("deepseek-flash", PROMPT, 101, SATURDAY_NOON) > left


def test_nothing_fits_leaves_the_call_to_the_meter(router: Router) -> None:
    route = router.choose(HARD, 0.0, SATURDAY_NOON)  # not even the prompt fits
    assert route.max_tokens is None
    assert "meter decides" in route.note


def _call(body: dict[str, Any], path: str = "/chat/completions") -> Call:
    request = httpx2.Request(
        "POST", f"https://api.example{path}", content=json.dumps(body).encode()
    )
    call = Call.from_request(request)
    call.started_at = SATURDAY_NOON
    return call


@pytest.fixture(scope="module")
def enforcer(tmp_path_factory: pytest.TempPathFactory) -> Enforcer:
    with Sandbox() as sb:
        settings = sb.client_settings("alice", audit_path=tmp_path_factory.mktemp("a") / "a.jsonl")
    return Enforcer(settings, Router(PriceTable.load()))


def test_the_enforcer_routes_and_records_why(enforcer: Enforcer) -> None:
    call = _call({**HARD, "model": "deepseek-flash"})
    left = Router(PriceTable.load())._worst("deepseek-flash", PROMPT, 100, SATURDAY_NOON)
    call.budget_remaining_usd = float(left)
    enforcer.enforce(call, Decision(effect="permit", engine="t", obligations=("route:auto",)))
    assert call.body is not None
    assert call.body["model"] == "deepseek-flash"
    assert call.body["max_tokens"] == 100
    assert call.enforcement[0].startswith("route:auto -> deepseek-flash (complexity")
    assert call.enforcement[1].endswith("(budget)")


def test_route_auto_without_a_router_is_refused(tmp_path: Any) -> None:
    with Sandbox() as sb:
        settings = sb.client_settings("alice", audit_path=tmp_path / "a.jsonl")
    call = _call({**SIMPLE, "model": "deepseek-flash"})
    with pytest.raises(ObligationRefused, match="route:auto needs a pricing table"):
        Enforcer(settings).enforce(
            call, Decision(effect="permit", engine="t", obligations=("route:auto",))
        )
