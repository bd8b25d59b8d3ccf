"""Budget and rate-limit configuration (``SECURE_DS_BUDGETS``, a TOML file).

::

    [meter]                    # optional
    reservation_ttl_s = 900    # an unsettled reservation (a crashed caller) expires after this
    default_max_tokens = 8192  # the worst case of a call that sends no max_tokens

    [[budget]]
    scope = "principal"        # principal | team | org
    name = "*"                 # "*": each principal (team) separately; or one by name
    period = "day"             # day | month, UTC calendar
    hard_usd = 5.0             # a call that could pass it is refused
    soft_usd = 4.0             # optional: crossing it is flagged for an alert

    [[rate_limit]]
    scope = "principal"        # principal | team
    name = "*"                 # optional, as for budgets
    tier = "developer"         # developer 1,000 RPM | enterprise 50,000 | government 250,000
    rpm = 1000                 # optional: overrides the tier's RPM
    tpm = 1000000              # optional: tokens per minute (no tier sets one)

    [alerts]                   # optional: post a soft-limit crossing to a webhook
    webhook_url_env = "SECURE_DS_ALERT_WEBHOOK"  # the variable holding the webhook URL
    timeout_s = 5              # per connect/read/write of one attempt
    max_attempts = 4           # tries per alert (connection errors, timeouts, 429, 5xx)
    backoff_s = 0.5            # wait before the 2nd try, doubling each time after

A principal is the token's subject. A team is the token's ``attributes.team``, else
``attributes.department`` (the same rule as ``secure-ds cost report --by team``); a
caller with neither has no team budget or team rate limit. An ``org`` budget is one
pot for everyone; its ``name`` is only a label for messages.

A rule for a specific name replaces the ``"*"`` rule of the same scope and period
(``alice`` gets her own daily limit instead of everyone's, not both), so a default
with exceptions is written as one ``"*"`` rule plus one rule per exception.

The webhook URL is a credential (a Slack incoming-webhook URL embeds its token), so
the file never holds it: ``webhook_url_env`` names the environment variable that does,
and the variable is read when the meter is built (see :mod:`._alerts`).
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeGuard

from ..errors import ConfigError

__all__ = [
    "TIERS",
    "AlertConfig",
    "BudgetConfig",
    "BudgetRule",
    "RateRule",
    "load_budgets",
    "team_of",
]

Scope = Literal["principal", "team", "org"]
Period = Literal["day", "month"]

# The seed's rate tiers (requests per minute). They set no token rate: DeepSeek's
# published tiers are request counts, so TPM is only limited when a rule says so.
TIERS: dict[str, int] = {"developer": 1_000, "enterprise": 50_000, "government": 250_000}

_VAR = "SECURE_DS_BUDGETS"
_FIX = "Fix the budgets file; the format is in the docstring of secure_ds/cost/_budgets.py."
_BUDGET_KEYS = {"scope", "name", "period", "hard_usd", "soft_usd"}
_RATE_KEYS = {"scope", "name", "tier", "rpm", "tpm"}
_METER_KEYS = {"reservation_ttl_s", "default_max_tokens"}
_ALERT_KEYS = {"webhook_url_env", "timeout_s", "max_attempts", "backoff_s"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class BudgetRule:
    scope: Scope
    name: str  # "*" or a principal/team name; for org a label
    period: Period
    hard_usd: Decimal
    soft_usd: Decimal | None = None


@dataclass(frozen=True)
class RateRule:
    scope: Literal["principal", "team"]
    name: str
    rpm: int | None
    tpm: int | None
    tier: str | None = None


@dataclass(frozen=True)
class AlertConfig:
    """The ``[alerts]`` table: where and how soft-limit alerts are posted."""

    webhook_url_env: str  # the name of the variable holding the URL, never the URL
    timeout_s: float = 5.0
    max_attempts: int = 4
    backoff_s: float = 0.5


@dataclass(frozen=True)
class BudgetConfig:
    budgets: tuple[BudgetRule, ...] = ()
    rate_limits: tuple[RateRule, ...] = ()
    reservation_ttl_s: float = 900.0  # longer than a call may take (600 s read timeout)
    default_max_tokens: int = 8192
    source: str = "(built in)"
    alerts: AlertConfig | None = None  # None: soft-limit crossings are only flagged


def team_of(attributes: Any) -> str | None:
    """The caller's team: ``team``, else ``department``, else none (no team rules apply)."""
    if not isinstance(attributes, dict):
        return None
    for claim in ("team", "department"):
        value = attributes.get(claim)
        if isinstance(value, str) and value:
            return value
    return None


def load_budgets(path: Path) -> BudgetConfig:
    """Read and check a budgets file; every problem is a :class:`ConfigError` naming it."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise _bad(path, f"cannot be read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _bad(path, f"is not valid TOML ({exc})") from None
    return parse_budgets(data, str(path))


def parse_budgets(data: dict[str, Any], source: str = "(inline)") -> BudgetConfig:
    unknown = set(data) - {"meter", "budget", "rate_limit", "alerts"}
    if unknown:
        raise _bad(
            source,
            f"unknown table {sorted(unknown)[0]!r} (expected meter, budget, rate_limit, alerts)",
        )
    meter = data.get("meter", {})
    if not isinstance(meter, dict):
        raise _bad(source, "`meter` must be a table")
    _no_unknown(source, "[meter]", meter, _METER_KEYS)
    ttl = meter.get("reservation_ttl_s", 900.0)
    if not _is_number(ttl) or ttl <= 0:
        raise _bad(source, "[meter] reservation_ttl_s must be a number of seconds > 0")
    default_max = meter.get("default_max_tokens", 8192)
    if type(default_max) is not int or default_max <= 0:
        raise _bad(source, "[meter] default_max_tokens must be an integer > 0")
    budgets = tuple(
        _budget(source, i, entry) for i, entry in enumerate(_entries(source, data, "budget"))
    )
    rates = tuple(
        _rate(source, i, entry) for i, entry in enumerate(_entries(source, data, "rate_limit"))
    )
    _no_duplicates(source, "budget", [(b.scope, b.name, b.period) for b in budgets])
    _no_duplicates(source, "rate_limit", [(r.scope, r.name) for r in rates])
    alerts = _alerts(source, data["alerts"]) if "alerts" in data else None
    return BudgetConfig(budgets, rates, float(ttl), default_max, source, alerts)


def _alerts(source: str, table: Any) -> AlertConfig:
    if not isinstance(table, dict):
        raise _bad(source, "`alerts` must be a table, written [alerts]")
    if "webhook_url" in table or "url" in table:
        # the value is not echoed: it is most likely the webhook URL itself, a credential
        raise _bad(
            source,
            "[alerts] must not hold the webhook URL (it embeds a token); put the URL in an "
            "environment variable and name that variable, e.g. "
            'webhook_url_env = "SECURE_DS_ALERT_WEBHOOK"',
        )
    _no_unknown(source, "[alerts]", table, _ALERT_KEYS)
    env = table.get("webhook_url_env")
    if not isinstance(env, str) or not _ENV_NAME.fullmatch(env):
        # not echoed either: a URL pasted here by mistake must not reach a log
        raise _bad(
            source,
            "[alerts] webhook_url_env must be the name of the environment variable holding the "
            'webhook URL (letters, digits and _), e.g. "SECURE_DS_ALERT_WEBHOOK", not the URL',
        )
    timeout = table.get("timeout_s", 5.0)
    if not _is_number(timeout) or timeout <= 0:
        raise _bad(source, "[alerts] timeout_s must be a number of seconds > 0")
    attempts = table.get("max_attempts", 4)
    if type(attempts) is not int or attempts < 1:
        raise _bad(source, "[alerts] max_attempts must be an integer >= 1 (1: no retries)")
    backoff = table.get("backoff_s", 0.5)
    if not _is_number(backoff) or backoff < 0:
        raise _bad(source, "[alerts] backoff_s must be a number of seconds >= 0")
    return AlertConfig(env, float(timeout), attempts, float(backoff))


def _budget(source: str, index: int, entry: dict[str, Any]) -> BudgetRule:
    where = f"budget #{index + 1}"
    _no_unknown(source, where, entry, _BUDGET_KEYS)
    scope = entry.get("scope")
    if scope not in ("principal", "team", "org"):
        raise _bad(source, f"{where}: scope must be principal, team or org, not {scope!r}")
    name = _name(source, where, entry)
    period = entry.get("period")
    if period not in ("day", "month"):
        raise _bad(source, f"{where}: period must be day or month, not {period!r}")
    hard = entry.get("hard_usd")
    if not _is_number(hard) or hard <= 0:
        raise _bad(source, f"{where}: hard_usd must be a number of dollars > 0")
    soft = entry.get("soft_usd")
    if soft is not None and (not _is_number(soft) or not 0 < soft < hard):
        raise _bad(source, f"{where}: soft_usd must be a number of dollars > 0 and below hard_usd")
    # str(): 0.1 in the file is the decimal 0.1, not the nearest binary double
    return BudgetRule(
        scope, name, period, Decimal(str(hard)), None if soft is None else Decimal(str(soft))
    )


def _rate(source: str, index: int, entry: dict[str, Any]) -> RateRule:
    where = f"rate_limit #{index + 1}"
    _no_unknown(source, where, entry, _RATE_KEYS)
    scope = entry.get("scope")
    if scope not in ("principal", "team"):
        raise _bad(source, f"{where}: scope must be principal or team, not {scope!r}")
    name = _name(source, where, entry)
    tier = entry.get("tier")
    if tier is not None and tier not in TIERS:
        raise _bad(source, f"{where}: tier must be one of {', '.join(TIERS)}, not {tier!r}")
    limits: dict[str, int | None] = {}
    for unit in ("rpm", "tpm"):
        value = entry.get(unit)
        if value is not None and (type(value) is not int or value <= 0):
            raise _bad(source, f"{where}: {unit} must be an integer > 0")
        limits[unit] = value
    rpm = limits["rpm"] if limits["rpm"] is not None else TIERS.get(tier) if tier else None
    if rpm is None and limits["tpm"] is None:
        raise _bad(source, f"{where}: give a tier, rpm or tpm (it limits nothing as written)")
    return RateRule(scope, name, rpm, limits["tpm"], tier)


def _entries(source: str, data: dict[str, Any], table: str) -> list[dict[str, Any]]:
    entries = data.get(table, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise _bad(source, f"`{table}` must be an array of tables, written [[{table}]]")
    return entries


def _name(source: str, where: str, entry: dict[str, Any]) -> str:
    name = entry.get("name", "*")
    if not isinstance(name, str) or not name.strip():
        raise _bad(source, f'{where}: name must be a non-empty string ("*" for each separately)')
    return name


def _no_unknown(source: str, where: str, entry: dict[str, Any], known: set[str]) -> None:
    unknown = set(entry) - known
    if unknown:
        # a typo such as hard_usb would otherwise silently leave a budget without a limit
        raise _bad(
            source,
            f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(known))})",
        )


def _no_duplicates(source: str, table: str, keys: list[tuple[str, ...]]) -> None:
    seen: set[tuple[str, ...]] = set()
    for key in keys:
        if key in seen:
            raise _bad(source, f"two [[{table}]] rules for {' '.join(key)}; keep one")
        seen.add(key)


def _is_number(value: Any) -> TypeGuard[int | float]:
    # TOML allows inf and nan; neither is a limit anyone means
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _bad(source: str | Path, problem: str) -> ConfigError:
    return ConfigError(_VAR, f"{source}: {problem}", fix=_FIX)
