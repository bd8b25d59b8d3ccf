"""Soft-limit alerts: a Slack-compatible incoming-webhook POST, sent off the call path.

When a reservation takes a budget to its soft limit (``soft_usd``, counting calls in
flight at their worst case), the meter hands a :class:`BudgetAlert` to the
:class:`AlertSender`. ``notify`` only queues it: a daemon thread posts it, so a slow or
dead webhook never delays a call.

**Once per budget and period.** Every call past the soft limit is flagged in its audit
record, but only the first crossing per ``(scope, name, period, period id)`` is posted.
What has been posted is remembered in this process only: several processes sharing a
ledger (SQLite, or a shared ledger such as Redis) each post once. A ledger-side "alerted"
mark would make it once overall; until then expect one alert per process.

**Delivery.** Connection errors, timeouts, 429 (waiting at least its ``Retry-After``,
capped at :data:`MAX_RETRY_AFTER_S`) and 5xx are retried with exponential backoff, up
to ``max_attempts`` tries; any other 4xx is not retried (the URL or payload is wrong and
repeating will not fix it). An alert that still fails is logged at WARNING on
``secure_ds.cost.alerts`` with the status, never the URL, and is not retried later.

**The queue** is bounded: when it is full the oldest waiting alert is dropped (the
newest says more about where spend is now), and the next alert delivered says how many
were dropped.

**No secrets.** The payload carries the budget, amounts, reset time and the principal
whose call crossed the limit; never the webhook URL, a token, an API key or any prompt
text. The URL is posted to through an :class:`httpx2.HTTPTransport` directly: the
``httpx2.Client`` logs every request's full URL at INFO, and this URL is a credential.
TLS is verified, and ``trust_env=False``: no proxy or CA bundle from the environment.
"""

from __future__ import annotations

import collections
import email.utils
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx2

from .._secret import Secret
from ..errors import ConfigError
from ._budgets import AlertConfig

__all__ = ["MAX_RETRY_AFTER_S", "AlertSender", "BudgetAlert", "alert_payload"]

_log = logging.getLogger("secure_ds.cost.alerts")

MAX_RETRY_AFTER_S = 60.0  # a Retry-After beyond this would stall every alert behind it
_MAX_BACKOFF_S = 30.0
_MAX_LABEL = 120  # Slack caps a header at 150 characters and a field at 2,000
_PRUNE_AT = 1024  # remembered crossings before expired periods are forgotten


@dataclass(frozen=True)
class BudgetAlert:
    """One budget reaching its soft limit (amounts as the ledger saw them at the call)."""

    scope: str  # principal | team | org
    name: str  # the principal or team, or the org budget's label
    period: str  # day | month
    period_id: str  # 2026-11-28 | 2026-11
    spent_usd: Decimal  # settled spend before this call
    reserved_usd: Decimal  # held for calls in flight, this call's worst case included
    soft_usd: Decimal
    hard_usd: Decimal
    resets_at: datetime
    principal: str  # whose call crossed it (the token's subject)
    crossed_at: datetime

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What de-duplicates alerts: one per budget and period."""
        return (self.scope, self.name, self.period, self.period_id)

    @property
    def committed_usd(self) -> Decimal:
        return self.spent_usd + self.reserved_usd

    @property
    def share(self) -> Decimal:
        """Spent and held as a fraction of the hard limit."""
        return self.committed_usd / self.hard_usd


def alert_payload(alert: BudgetAlert, dropped: int = 0) -> dict[str, Any]:
    """The incoming-webhook JSON for ``alert``: ``text`` (the notification and the
    fallback for clients without blocks) and ``blocks`` (a header and the fields).
    ``dropped`` is how many alerts were dropped from a full queue since the last one."""
    budget = f"{alert.scope} budget {_label(alert.name)}"
    share = f"{(alert.share * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)}%"
    text = (
        f"secure-ds: {budget} ({alert.period} {alert.period_id}) reached its soft limit "
        f"of ${_usd(alert.soft_usd)}: ${_usd(alert.committed_usd)} spent or held, {share} "
        f"of the ${_usd(alert.hard_usd)} hard limit"
    )
    resets = alert.resets_at.strftime("%Y-%m-%d %H:%M UTC")
    fields = [
        ("Budget", budget),
        ("Period", f"{alert.period} {alert.period_id}"),
        ("Spent", f"${_usd(alert.spent_usd)}"),
        ("Held for calls in flight", f"${_usd(alert.reserved_usd)}"),
        ("Soft limit", f"${_usd(alert.soft_usd)}"),
        ("Hard limit", f"${_usd(alert.hard_usd)}"),
        ("Share of hard limit", share),
        ("Resets", resets),
        ("Crossed by", _label(alert.principal)),
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": "Budget soft limit reached"},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": _escape(text)}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{title}*\n{_escape(value)}"}
                for title, value in fields
            ],
        },
    ]
    if dropped:
        note = (
            f"{dropped} earlier alert(s) were dropped because the alert queue was full; "
            "check the audit log for soft_limit_crossed"
        )
        text = f"{text}. {note}"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
    return {"text": _escape(text), "blocks": blocks}


def check_webhook_url(url: str, variable: str) -> None:
    """Raise :class:`ConfigError` unless ``url`` is https, or http to a loopback host
    (a local test receiver). The message never contains the URL: it is a credential."""
    fix = (
        f"Set {variable} to the incoming-webhook URL, https://... (http:// only to "
        "127.0.0.1, ::1 or localhost, for a local test receiver)"
    )
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number)
    except ValueError:
        raise ConfigError(variable, "is not a valid URL", fix=fix) from None
    if not host:
        raise ConfigError(variable, "is not a valid URL (no host)", fix=fix)
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and _is_loopback(host):
        return
    # the scheme alone is safe to show (the rest may hold the token), and is what is wrong
    raise ConfigError(
        variable,
        f"must be an https URL, not {parts.scheme or 'schemeless'} (http is allowed only "
        "to a loopback address)",
        fix=fix,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AlertSender:
    """Posts :class:`BudgetAlert` s to a webhook from a daemon thread (see the module).

    ``notify`` never blocks on the network. ``close`` delivers what is queued, waiting
    at most ``close_timeout_s``; after that, retries stop and what is left is logged
    as undelivered. ``source`` names where the URL came from, for messages.
    """

    def __init__(
        self,
        url: Secret,
        *,
        timeout_s: float = 5.0,
        max_attempts: int = 4,
        backoff_s: float = 0.5,
        queue_size: int = 100,
        close_timeout_s: float = 10.0,
        source: str = "the webhook URL",
    ) -> None:
        if max_attempts < 1 or queue_size < 1 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError(
                "AlertSender needs max_attempts >= 1, queue_size >= 1, timeout_s > 0 "
                "and backoff_s >= 0"
            )
        check_webhook_url(url.reveal(), source)
        self._url = url
        self._timeout = httpx2.Timeout(timeout_s)
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._queue_size = queue_size
        self._close_timeout_s = close_timeout_s
        self._source = source
        self._cond = threading.Condition()
        self._queue: collections.deque[BudgetAlert] = collections.deque()
        self._alerted: dict[tuple[str, str, str, str], datetime] = {}
        self._unreported_drops = 0
        self._busy = False  # the worker holds an alert it has taken off the queue
        self._closed = False
        self._abort = threading.Event()  # the close deadline passed: stop retrying
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0  # from a full queue, over the sender's life

    @classmethod
    def from_config(
        cls, config: AlertConfig, environ: Mapping[str, str], **options: Any
    ) -> AlertSender:
        """The sender an ``[alerts]`` table describes, its URL read from ``environ``."""
        variable = config.webhook_url_env
        url = environ.get(variable, "").strip()
        if not url:
            raise ConfigError(
                variable,
                "is not set, but the budgets file's [alerts] table names it as the variable "
                "holding the alert webhook URL",
                fix=(
                    f"Set {variable} to the incoming-webhook URL (https://...), or remove "
                    "[alerts] from the budgets file to only flag soft-limit crossings."
                ),
            )
        return cls(
            Secret(url),
            timeout_s=config.timeout_s,
            max_attempts=config.max_attempts,
            backoff_s=config.backoff_s,
            source=variable,
            **options,
        )

    def __repr__(self) -> str:
        return f"AlertSender(source={self._source!r})"  # never the URL

    # ------------------------------------------------------------------ the call path

    def notify(self, alert: BudgetAlert) -> bool:
        """Queue ``alert`` unless this budget already alerted this period, or the
        sender is closed. True when queued. Never waits for the network."""
        with self._cond:
            if self._closed or alert.key in self._alerted:
                return False
            self._alerted[alert.key] = alert.resets_at
            if len(self._alerted) > _PRUNE_AT:
                self._forget_before(alert.crossed_at)
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self._unreported_drops += 1
                self.dropped += 1
            self._queue.append(alert)
            if self._thread is None:
                # started on the first alert: a meter that never alerts holds no thread
                self._thread = threading.Thread(
                    target=self._run, name="secure-ds-alerts", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()
        return True

    def _forget_before(self, now: datetime) -> None:
        # a period that has reset cannot alert again under the same key; forget it so the
        # memory stays bounded by the budgets live now
        for key, resets_at in list(self._alerted.items()):
            if resets_at <= now:
                del self._alerted[key]

    # ------------------------------------------------------------------ flush and close

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued alert has been delivered or given up on; False if
        ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout_s: float | None = None) -> None:
        """Stop taking alerts and deliver those queued, for at most ``timeout_s``
        (default ``close_timeout_s``); then stop retrying and log what was left."""
        limit = self._close_timeout_s if timeout_s is None else timeout_s
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is None:
            return
        thread.join(limit)
        if thread.is_alive():
            # an attempt in flight still ends within the timeout; the daemon thread
            # then exits without starting another
            self._abort.set()
            with self._cond:
                left = len(self._queue) + self._busy
            _log.warning(
                "closing the budget alert sender after %.1f s with %d alert(s) not delivered",
                limit,
                left,
            )

    # ------------------------------------------------------------------ the worker

    def _run(self) -> None:
        transport = httpx2.HTTPTransport(verify=True, trust_env=False)
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closed:
                        self._cond.wait()
                    if self._abort.is_set():
                        # past the close deadline: what is left will not be sent
                        self.failed += len(self._queue)
                        self._queue.clear()
                        self._cond.notify_all()
                        return
                    if not self._queue:
                        return  # closed and all delivered
                    alert = self._queue.popleft()
                    dropped, self._unreported_drops = self._unreported_drops, 0
                    self._busy = True
                try:
                    ok = self._deliver(transport, alert_payload(alert, dropped))
                except Exception:  # a bug here must not end the thread and stall all alerts
                    _log.exception("budget alert delivery failed unexpectedly")
                    ok = False
                with self._cond:
                    self._busy = False
                    if ok:
                        self.delivered += 1
                    else:
                        self.failed += 1
                        self._unreported_drops += dropped  # the next alert reports them
                    self._cond.notify_all()
        finally:
            transport.close()

    def _deliver(self, transport: httpx2.HTTPTransport, payload: dict[str, Any]) -> bool:
        outcome = ""
        for attempt in range(1, self._max_attempts + 1):
            delay = min(self._backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S)
            request = httpx2.Request(
                "POST",
                self._url.reveal(),
                json=payload,
                extensions={"timeout": self._timeout.as_dict()},
            )
            try:
                response = transport.handle_request(request)
            except (httpx2.TimeoutException, httpx2.TransportError) as exc:
                # the type only: an exception's text can carry the request URL
                outcome = type(exc).__name__
            else:
                status = response.status_code
                response.close()  # the body is not needed (Slack answers "ok")
                if 200 <= status < 300:
                    return True
                outcome = f"HTTP {status}"
                if status == 429:
                    wait = _retry_after(response.headers.get("Retry-After"))
                    if wait is not None:
                        delay = max(delay, wait)  # wait is capped at MAX_RETRY_AFTER_S
                elif not 500 <= status < 600:
                    _log.warning(
                        "budget alert refused by the webhook with %s; not retried "
                        "(check the URL in %s)",
                        outcome,
                        self._source,
                    )
                    return False
            if attempt == self._max_attempts:
                break
            _log.debug(
                "budget alert attempt %d failed (%s); retrying in %.2f s", attempt, outcome, delay
            )
            if self._abort.wait(delay):
                _log.warning("budget alert not delivered (%s): the sender was closed", outcome)
                return False
        _log.warning(
            "budget alert not delivered after %d attempt(s): %s (check that %s reaches the "
            "webhook)",
            self._max_attempts,
            outcome,
            self._source,
        )
        return False


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number of seconds or an HTTP date)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _label(name: str) -> str:
    return name if len(name) <= _MAX_LABEL else name[: _MAX_LABEL - 1] + "…"


def _escape(text: str) -> str:
    # Slack mrkdwn: a name such as "<!channel>" would otherwise notify a whole channel
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _usd(value: Decimal) -> str:
    """Dollars with at least cents and at most six decimals (as the meter's messages)."""
    text = format(value.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP), "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"
