"""Soft-limit alerts posted to a real local HTTP receiver: once per budget and period,
a Slack-compatible payload without secrets or prompt text, retries on 5xx, 429 (with
Retry-After) and connection errors, a logged give-up that never shows the URL, a full
queue that drops the oldest and says so, and one end-to-end crossing through a client."""

from __future__ import annotations

import collections
import json
import logging
import socket
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest

from secure_ds import SecureDeepSeek
from secure_ds._secret import Secret
from secure_ds.cost import PriceTable
from secure_ds.cost._alerts import AlertSender, BudgetAlert
from secure_ds.cost._budgets import parse_budgets
from secure_ds.cost._ledger import MemoryLedger
from secure_ds.cost._meter import BudgetMeter
from secure_ds.guard._call import Call, Identity
from secure_ds.sandbox import Sandbox
from tests.conftest import read_audit

pytestmark = pytest.mark.integration

PRICING = PriceTable.load()
SAT_NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()  # off-peak
# what a Slack webhook URL's path looks like: the last part is the credential
TOKEN = "XyZsecretWebhookToken0123456789"
PROMPT = "PROMPT-CANARY the quarterly numbers are confidential"
WAIT_S = 10.0  # an upper bound for a delivery to finish, never a timing assertion

SOFT = """
[[budget]]
scope = "principal"
period = "day"
hard_usd = 0.01
soft_usd = 0.004
[[budget]]
scope = "team"
period = "day"
hard_usd = 1.0
soft_usd = 0.004
"""


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    content_type: str


class Receiver:
    """An incoming-webhook endpoint on 127.0.0.1: records each POST and answers from a
    script (status, headers), then 200 "ok". ``gate``, when set, holds every request
    until it is opened."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: collections.deque[tuple[int, dict[str, str]]] = collections.deque()
        self.gate: threading.Event | None = None
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.arrived:
                    receiver.received.append(
                        Received(self.path, json.loads(body), self.headers["Content-Type"])
                    )
                    status, headers = receiver.script.popleft() if receiver.script else (200, {})
                    receiver.arrived.notify_all()
                if receiver.gate is not None:
                    receiver.gate.wait(WAIT_S)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output to the assertions

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/services/T01/B02/{TOKEN}"

    def wait_for(self, count: int) -> list[Received]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.received) >= count, WAIT_S)
            return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    rx.thread.start()
    yield rx
    if rx.gate is not None:
        rx.gate.set()
    rx.server.shutdown()
    rx.server.server_close()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _sender(url: str, **options: Any) -> AlertSender:
    options.setdefault("backoff_s", 0.01)
    return AlertSender(Secret(url), source="SECURE_DS_ALERT_WEBHOOK", **options)


def _meter(sender: AlertSender, clock: Clock, text: str = SOFT) -> BudgetMeter:
    config = parse_budgets(tomllib.loads(text))
    return BudgetMeter(config, PRICING, MemoryLedger(), clock=clock, alerts=sender)


def _call(subject: str = "alice", team: str | None = "ml", max_tokens: int = 4000) -> Call:
    body = {
        "model": "deepseek-flash",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
    }
    request = httpx2.Request(
        "POST", "https://api.example/chat/completions", content=json.dumps(body).encode()
    )
    call = Call.from_request(request)
    call.identity = Identity(
        subject=subject,
        roles=(),
        attributes={"team": team} if team else {},
        auth="jwt",
        issuer="test",
        token_id=None,
        cert_thumbprint=None,
        bound_thumbprint=None,
    )
    return call


def _alert(name: str) -> BudgetAlert:
    return BudgetAlert(
        scope="principal",
        name=name,
        period="day",
        period_id="2026-11-28",
        spent_usd=Decimal("4"),
        reserved_usd=Decimal("0.5"),
        soft_usd=Decimal("4"),
        hard_usd=Decimal("5"),
        resets_at=datetime(2026, 11, 29, tzinfo=UTC),
        principal=name,
        crossed_at=datetime(2026, 11, 28, 12, tzinfo=UTC),
    )


def _fields(body: dict[str, Any]) -> dict[str, str]:
    """The payload's fields block as {title: value}."""
    (section,) = [b for b in body["blocks"] if "fields" in b]
    pairs = (f["text"].split("\n", 1) for f in section["fields"])
    return {title.strip("*"): value for title, value in pairs}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------------- once per period


def test_one_alert_per_budget_and_period(receiver: Receiver) -> None:
    clock = Clock(SAT_NOON)
    sender = _sender(receiver.url)
    meter = _meter(sender, clock)
    try:
        # ~$0.0024 worst case each: the second call reaches the $0.004 soft limits of both
        # alice's and team ml's budgets; the calls after it are past them already
        flagged = [meter.reserve(_call()).details for _ in range(4)]
        assert flagged[0] is not None
        assert "soft_limit_crossed" not in flagged[0]
        # every call past the soft limit is flagged in its record...
        assert all(d is not None and d["soft_limit_crossed"] for d in flagged[1:])
        assert sender.flush(WAIT_S)
        # ...but only the first crossing of each budget is posted: one per budget
        assert sorted(_fields(r.body)["Budget"] for r in receiver.received) == [
            "principal budget alice",
            "team budget ml",
        ]
        # bob is in team ml, already alerted; his own budget is new and alerts once
        meter.reserve(_call("bob", max_tokens=8000))
        meter.reserve(_call("bob", max_tokens=100))
        assert sender.flush(WAIT_S)
        assert len(receiver.received) == 3
        assert _fields(receiver.received[2].body)["Budget"] == "principal budget bob"
        # the next UTC day is a new period: alice's crossing alerts again
        clock.now += 86_400
        meter.reserve(_call(max_tokens=4000))
        meter.reserve(_call(max_tokens=4000))
        assert sender.flush(WAIT_S)
        days = [_fields(r.body)["Period"] for r in receiver.received]
        assert days.count("day 2026-11-29") == 2  # alice and team ml again
    finally:
        meter.close()
    assert sender.delivered == 5


def test_payload_is_slack_shaped_with_the_budget_and_no_secrets(receiver: Receiver) -> None:
    sender = _sender(receiver.url)
    meter = _meter(sender, Clock(SAT_NOON))
    try:
        meter.reserve(_call(max_tokens=4000))
        meter.reserve(_call(max_tokens=4000))
        assert sender.flush(WAIT_S)
    finally:
        meter.close()
    alice = next(r for r in receiver.received if "alice" in _fields(r.body)["Budget"])
    assert alice.content_type == "application/json"
    assert alice.path.endswith(TOKEN)  # it did go to the webhook URL...
    raw = json.dumps(alice.body)
    # ...and nothing of the URL, nor any prompt text, is in what it posted
    for secret in (TOKEN, "/services/", "127.0.0.1", "PROMPT-CANARY", "confidential"):
        assert secret not in raw
    body = alice.body
    assert body["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Budget soft limit reached"},
    }
    estimate = meter.estimate(_call(max_tokens=4000), SAT_NOON).usd
    fields = _fields(body)
    assert fields["Period"] == "day 2026-11-28"
    assert fields["Spent"] == "$0.00"  # nothing settled yet: both calls are in flight
    held = Decimal(fields["Held for calls in flight"].removeprefix("$"))
    assert held == (estimate * 2).quantize(Decimal("0.000001"))  # both calls' worst case
    assert (fields["Soft limit"], fields["Hard limit"]) == ("$0.004", "$0.01")
    share = Decimal(fields["Share of hard limit"].removesuffix("%"))
    assert abs(share - estimate * 2 / Decimal("0.01") * 100) <= Decimal("0.5")
    assert fields["Resets"] == "2026-11-29 00:00 UTC"
    assert fields["Crossed by"] == "alice"
    assert "principal budget alice (day 2026-11-28) reached its soft limit" in body["text"]


# ---------------------------------------------------------------------- retries


def test_retries_after_a_500_and_a_429_honouring_retry_after(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="secure_ds.cost.alerts")
    receiver.script.extend([(500, {}), (429, {"Retry-After": "1"})])
    sender = _sender(receiver.url, max_attempts=4)
    try:
        assert sender.notify(_alert("alice"))
        assert sender.flush(WAIT_S)
    finally:
        sender.close()
    # three tries of the same alert: 500, 429, then 200
    assert len(receiver.received) == 3
    assert all(r.body == receiver.received[0].body for r in receiver.received)
    assert (sender.delivered, sender.failed) == (1, 0)
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    # the first wait is the backoff (0.01 s); after the 429, its Retry-After of 1 s
    assert retries == [
        "budget alert attempt 1 failed (HTTP 500); retrying in 0.01 s",
        "budget alert attempt 2 failed (HTTP 429); retrying in 1.00 s",
    ]


def test_gives_up_after_max_attempts_and_logs_without_the_url(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx2's included
    receiver.script.extend([(503, {})] * 5)
    sender = _sender(receiver.url, max_attempts=3)
    try:
        sender.notify(_alert("alice"))
        assert sender.flush(WAIT_S)
    finally:
        sender.close()
    assert len(receiver.received) == 3  # max_attempts, no more
    assert (sender.delivered, sender.failed) == (0, 1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.name for r in warnings] == ["secure_ds.cost.alerts"]
    message = warnings[0].getMessage()
    assert "not delivered after 3 attempt(s): HTTP 503" in message
    assert "SECURE_DS_ALERT_WEBHOOK" in message  # where to look, by name
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in logged
    assert "/services/" not in logged


def test_other_4xx_is_not_retried(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.script.append((404, {}))
    sender = _sender(receiver.url, max_attempts=4)
    try:
        sender.notify(_alert("alice"))
        assert sender.flush(WAIT_S)
    finally:
        sender.close()
    assert len(receiver.received) == 1  # a wrong URL stays wrong: one try
    assert sender.failed == 1
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "HTTP 404; not retried" in warning.getMessage()
    assert TOKEN not in warning.getMessage()


def test_connection_errors_are_retried_then_logged_by_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="secure_ds.cost.alerts")
    url = f"http://127.0.0.1:{_free_port()}/services/T01/B02/{TOKEN}"  # nothing listens
    sender = _sender(url, max_attempts=2)
    try:
        sender.notify(_alert("alice"))
        assert sender.flush(WAIT_S)
    finally:
        sender.close()
    assert sender.failed == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("attempt 1 failed (ConnectError)" in m for m in messages)
    assert any("after 2 attempt(s): ConnectError" in m for m in messages)
    assert not any(TOKEN in m or str(url) in m for m in messages)


# ---------------------------------------------------------------------- queue and close


def test_a_full_queue_drops_the_oldest_and_the_next_alert_says_so(receiver: Receiver) -> None:
    receiver.gate = threading.Event()  # hold every POST until the queue has overflowed
    sender = _sender(receiver.url, queue_size=2)
    try:
        sender.notify(_alert("p1"))
        receiver.wait_for(1)  # p1 is in flight: the queue is empty again
        for name in ("p2", "p3", "p4", "p5"):
            assert sender.notify(_alert(name))  # p4 drops p2, p5 drops p3
        assert sender.dropped == 2
        receiver.gate.set()
        assert sender.flush(WAIT_S)
    finally:
        sender.close()
    crossed = [_fields(r.body)["Crossed by"] for r in receiver.received]
    assert crossed == ["p1", "p4", "p5"]  # the newest kept, the oldest dropped
    first_after, second_after = receiver.received[1].body, receiver.received[2].body
    note = "2 earlier alert(s) were dropped because the alert queue was full"
    assert note in first_after["text"]
    assert first_after["blocks"][-1]["type"] == "context"
    assert note in first_after["blocks"][-1]["elements"][0]["text"]
    assert "dropped" not in second_after["text"]  # reported once


def test_close_delivers_what_is_queued(receiver: Receiver) -> None:
    sender = _sender(receiver.url)
    for name in ("a", "b", "c"):
        sender.notify(_alert(name))
    sender.close()  # no flush first: close itself delivers
    assert [_fields(r.body)["Crossed by"] for r in receiver.received] == ["a", "b", "c"]
    assert not sender.notify(_alert("d"))  # closed: refused, not queued
    assert len(receiver.received) == 3


def test_close_stops_at_its_deadline_and_logs_what_was_left(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.gate = threading.Event()  # the webhook never answers while the test runs
    sender = _sender(receiver.url, timeout_s=WAIT_S)
    sender.notify(_alert("a"))
    receiver.wait_for(1)
    sender.notify(_alert("b"))
    sender.close(timeout_s=0.2)  # returns although the first POST is still waiting
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "with 2 alert(s) not delivered" in warning.getMessage()
    receiver.gate.set()
    assert sender.flush(WAIT_S)
    # the in-flight attempt finished, but b was never started once the deadline passed
    assert len(receiver.received) == 1
    assert (sender.delivered, sender.failed) == (1, 1)


# ---------------------------------------------------------------------- end to end


def test_a_soft_limit_crossing_through_the_client_posts_once(
    sb: Sandbox, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    budgets = tmp_path / "budgets.toml"
    # any real call's worst case passes a one-micro-dollar soft limit; $1 is never reached
    budgets.write_text(
        '[[budget]]\nscope = "principal"\nperiod = "day"\nhard_usd = 1.0\nsoft_usd = 0.000001\n'
        '[alerts]\nwebhook_url_env = "SECURE_DS_ALERT_WEBHOOK"\nbackoff_s = 0.01\n'
    )
    monkeypatch.setenv("SECURE_DS_ALERT_WEBHOOK", receiver.url)
    audit = tmp_path / "audit.jsonl"
    settings = sb.client_settings(
        "alice", attributes={"team": "ml"}, audit_path=audit, budgets=budgets
    )
    messages: list[Any] = [{"role": "user", "content": PROMPT}]
    with SecureDeepSeek(settings=settings) as client:
        for _ in range(3):
            client.chat.completions.create(
                model="deepseek-flash", messages=messages, max_tokens=200
            )
    # closing the client closed the meter, which delivered the queued alert
    assert len(receiver.received) == 1
    body = receiver.received[0].body
    fields = _fields(body)
    assert (fields["Budget"], fields["Crossed by"]) == ("principal budget alice", "alice")
    assert fields["Soft limit"] == "$0.000001"
    raw = json.dumps(body)
    assert TOKEN not in raw
    assert "PROMPT-CANARY" not in raw
    records = read_audit(audit)
    # every call was flagged in the audit log; only the first crossing was posted
    assert len(records) == 3
    assert all(r["meter"]["details"]["soft_limit_crossed"] for r in records)
