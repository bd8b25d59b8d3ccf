"""Prices as data, and the cost of one call from the usage DeepSeek reports.

The table (``pricing.toml`` beside this module, or ``SECURE_DS_PRICING``) gives USD
per million tokens for cache-hit input, cache-miss input and output, off-peak and
peak, with the peak windows. Cost is computed in :class:`~decimal.Decimal` from the
response's ``usage``: ``prompt_cache_hit_tokens``, ``prompt_cache_miss_tokens``
(``prompt_tokens`` minus the hits when the split is missing) and
``completion_tokens``, which already include the reasoning tokens DeepSeek bills as
output (``completion_tokens_details.reasoning_tokens`` is recorded, never added
again). The window is the one in force when the call started.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError

__all__ = ["DEFAULT_PRICING", "Cost", "PriceTable", "Prices", "tokens_of_usage"]

DEFAULT_PRICING = Path(__file__).with_name("pricing.toml")
Window = Literal["peak", "off_peak"]
_PARTS = ("input_cache_hit", "input_cache_miss", "output")


def _bad(path: Path, problem: str) -> ConfigError:
    return ConfigError(
        "SECURE_DS_PRICING",
        f"{path}: {problem}",
        fix="Fix the pricing table (see secure_ds/cost/pricing.toml for the format).",
    )


@dataclass(frozen=True)
class Prices:
    """USD per ``per_tokens`` tokens for one model in one window."""

    input_cache_hit: Decimal
    input_cache_miss: Decimal
    output: Decimal


@dataclass(frozen=True)
class Cost:
    """The cost of one call, and how it was reached (for the audit record)."""

    usd: Decimal
    model: str
    window: Window
    table: str
    tokens: Mapping[str, int]  # input_cache_hit, input_cache_miss, output, reasoning
    usd_by_part: Mapping[str, Decimal]

    @property
    def record(self) -> dict[str, Any]:
        return {
            "usd": _number(self.usd),
            "model": self.model,
            "window": self.window,
            "pricing": self.table,
            "tokens": dict(self.tokens),
            "usd_by_part": {part: _number(usd) for part, usd in self.usd_by_part.items()},
        }


def _number(usd: Decimal) -> float:
    # JSON numbers: 12 decimal places keep a one-token cost (3e-9 USD) exact
    return float(round(usd, 12))


class PriceTable:
    """A loaded pricing table. Immutable; share it across threads."""

    def __init__(
        self,
        table_id: str,
        models: Mapping[str, Mapping[Window, Prices]],
        peak_weekdays: frozenset[int],
        peak_minutes: tuple[tuple[int, int], ...],
        per_tokens: int,
    ) -> None:
        self.id = table_id
        self.models = dict(models)
        self.peak_weekdays = peak_weekdays
        self.peak_minutes = peak_minutes
        self.per_tokens = Decimal(per_tokens)  # prices are USD per this many tokens

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        source = Path(path) if path is not None else DEFAULT_PRICING
        try:
            data = tomllib.loads(source.read_text(encoding="utf-8"))
        except OSError as exc:
            raise _bad(source, f"cannot be read ({exc.strerror})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise _bad(source, f"is not valid TOML ({exc})") from None
        return cls._from(source, data)

    @classmethod
    def _from(cls, source: Path, data: dict[str, Any]) -> PriceTable:
        table_id = data.get("id")
        if not isinstance(table_id, str) or not table_id:
            raise _bad(source, "needs an `id` naming the table (it goes into every record)")
        if data.get("currency", "USD") != "USD":
            raise _bad(source, "only USD prices are supported")
        per_tokens = data.get("per_tokens", 1_000_000)
        if type(per_tokens) is not int or per_tokens <= 0:
            raise _bad(source, "`per_tokens` must be a positive integer")
        peak = data.get("peak", {})
        weekdays = peak.get("weekdays", [])
        if not isinstance(weekdays, list) or not all(
            type(d) is int and 1 <= d <= 7 for d in weekdays
        ):
            raise _bad(source, "`peak.weekdays` must list ISO weekdays 1 (Monday) .. 7")
        windows = tuple(_window(source, w) for w in peak.get("hours_utc", []))
        models: dict[str, dict[Window, Prices]] = {}
        for name, entry in (data.get("models") or {}).items():
            if not isinstance(entry, dict):
                raise _bad(source, f"model {name!r} must be a table")
            models[name] = {
                "off_peak": _prices(source, name, entry, "off_peak"),
                "peak": _prices(source, name, entry, "peak"),
            }
        if not models:
            raise _bad(source, "lists no models")
        return cls(table_id, models, frozenset(weekdays), windows, per_tokens)

    def window(self, at: float) -> Window:
        """Peak or off-peak at Unix time ``at`` (UTC)."""
        seconds = int(at)
        weekday = (seconds // 86400 + 3) % 7 + 1  # 1970-01-01 was a Thursday (ISO 4)
        minute = seconds % 86400 // 60
        if weekday in self.peak_weekdays and any(a <= minute < b for a, b in self.peak_minutes):
            return "peak"
        return "off_peak"

    def cost(self, model: str | None, usage: Any, at: float) -> Cost | None:
        """The cost of a call to ``model`` (a pin ``@...`` is ignored) that reported
        ``usage`` and started at ``at``; None when the model has no price or the
        usage is missing or malformed."""
        if not model or not isinstance(usage, dict):
            return None
        name = model.split("@", 1)[0]
        prices = self.models.get(name)
        if prices is None:
            return None
        tokens = tokens_of_usage(usage)
        if tokens is None:
            return None
        window = self.window(at)
        chosen = prices[window]
        by_part = {
            part: Decimal(tokens[part]) * getattr(chosen, part) / self.per_tokens for part in _PARTS
        }
        return Cost(
            usd=sum(by_part.values(), Decimal(0)),
            model=name,
            window=window,
            table=self.id,
            tokens=tokens,
            usd_by_part=by_part,
        )


def tokens_of_usage(usage: dict[str, Any]) -> dict[str, int] | None:
    """The billed token counts of a ``usage`` object (cache hits, misses, output with
    reasoning inside it), or None when it is malformed. Shared with the report so both
    split tokens the same way."""

    def count(value: Any) -> int | None:
        return value if type(value) is int and value >= 0 else None

    prompt = count(usage.get("prompt_tokens"))
    output = count(usage.get("completion_tokens"))
    hit = count(usage.get("prompt_cache_hit_tokens"))
    miss = count(usage.get("prompt_cache_miss_tokens"))
    if output is None or (prompt is None and miss is None):
        return None
    if hit is None:
        hit = 0
    if miss is None:
        assert prompt is not None
        miss = max(prompt - hit, 0)
    details = usage.get("completion_tokens_details")
    reasoning = count(details.get("reasoning_tokens")) if isinstance(details, dict) else None
    return {
        "input_cache_hit": hit,
        "input_cache_miss": miss,
        "output": output,
        "reasoning": reasoning or 0,
    }


def _window(source: Path, text: Any) -> tuple[int, int]:
    try:
        start, end = str(text).split("-")
        minutes = [int(h) * 60 + int(m) for h, m in (p.split(":") for p in (start, end))]
    except ValueError:
        raise _bad(source, f"peak window {text!r} must look like 06:00-10:00") from None
    if not 0 <= minutes[0] < minutes[1] <= 24 * 60:
        raise _bad(source, f"peak window {text!r} must start before it ends, within a day")
    return minutes[0], minutes[1]


def _prices(source: Path, model: str, entry: Any, window: Window) -> Prices:
    values = entry.get(window) if isinstance(entry, dict) else None
    if not isinstance(values, dict):
        raise _bad(source, f"model {model!r} needs a `{window}` table of prices")
    parts: dict[str, Decimal] = {}
    for part in _PARTS:
        value = values.get(part)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise _bad(source, f"model {model!r} {window}.{part} must be a price >= 0")
        parts[part] = Decimal(str(value))  # str: 0.15 stays 0.15, not its binary double
    return Prices(**parts)
