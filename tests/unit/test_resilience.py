"""Retry policy, Retry-After parsing and the circuit breaker's state machine."""

from __future__ import annotations

import email.utils
import time

import httpx2
import pytest

from secure_ds.guard import CircuitBreaker, RetryPolicy
from secure_ds.guard._resilience import RETRY_STATUSES, parse_retry_after


def test_retry_statuses_match_the_contract() -> None:
    assert frozenset({429, 500, 502, 503, 504}) == RETRY_STATUSES
    for status in (400, 401, 402, 403, 422):
        assert status not in RETRY_STATUSES


def test_backoff_is_exponential_with_jitter() -> None:
    policy = RetryPolicy(max_attempts=5, factor=0.3, max_delay=30.0)
    for failures, base in ((1, 0.3), (2, 0.6), (3, 1.2), (4, 2.4)):
        delays = {policy.delay(failures, None) for _ in range(200)}
        assert all(d is not None and base / 2 <= d <= base for d in delays)
        assert len(delays) > 100  # jittered, not a constant
    assert policy.delay(5, None) is None  # five attempts in all


def test_retry_after_wins_and_caps() -> None:
    policy = RetryPolicy(max_attempts=5, factor=0.3, max_delay=10.0)
    assert policy.delay(1, 4.0) == 4.0
    assert policy.delay(1, 0.0) == 0.0
    assert policy.delay(1, 60.0) is None  # longer than we are willing to wait: give up
    assert policy.delay(5, 1.0) is None
    assert RetryPolicy(max_attempts=3, factor=10, max_delay=2.0).delay(2, None) == 2.0


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after(httpx2.Headers({"retry-after": "3"})) == 3.0
    assert parse_retry_after(httpx2.Headers({"retry-after-ms": "250"})) == 0.25
    assert parse_retry_after(httpx2.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    assert parse_retry_after(httpx2.Headers({"retry-after": "-4"})) == 0.0
    assert parse_retry_after(httpx2.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx2.Headers({})) is None
    date = email.utils.formatdate(time.time() + 20, usegmt=True)
    parsed = parse_retry_after(httpx2.Headers({"retry-after": date}))
    assert parsed is not None
    assert 17 <= parsed <= 21


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, cooldown=300, clock=clock)
    for _ in range(2):
        assert breaker.acquire() is None
        breaker.failure()
    assert breaker.state == "closed"
    breaker.success()  # a success resets the count
    for _ in range(2):
        breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open"
    wait = breaker.acquire()
    assert wait == pytest.approx(300)
    clock.now += 100
    assert breaker.acquire() == pytest.approx(200)


def test_half_open_lets_exactly_one_probe() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown=10, clock=clock)
    breaker.failure()
    clock.now += 10
    assert breaker.state == "half-open"
    assert breaker.acquire() is None  # the probe
    assert breaker.acquire() is not None  # everyone else waits for its result
    breaker.failure()  # the probe failed: a full cool-down again
    assert breaker.state == "open"
    assert breaker.acquire() == pytest.approx(10)
    clock.now += 10
    assert breaker.acquire() is None
    breaker.success()
    assert breaker.state == "closed"
    assert breaker.acquire() is None
    assert breaker.acquire() is None


def test_neutral_outcome_releases_the_probe_without_closing() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock)
    breaker.failure()
    clock.now += 5
    assert breaker.acquire() is None
    breaker.neutral()
    assert breaker.state == "half-open"
    assert breaker.acquire() is None  # another probe may go
