"""Spend from the audit log: who spent what, on which model, on which day.

The audit log is the source of truth: each record carries the ``cost`` computed when
the call was made (with the pricing table in force then), so nothing here re-prices a
call. Reading is streaming: records are folded into per-group and per-day tallies as
they are read, so memory grows with the number of groups and days, never with the
number of records. Lines that are not audit records are skipped and counted (the first
few named by ``file:line``) rather than aborting the report: a log with one torn line
after a crash must still be reportable.

USD sums use :class:`~decimal.Decimal` built from each float's ``repr`` (the shortest
text that round-trips), so a total over a million records equals the exact sum of the
recorded figures instead of accumulating binary rounding error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from ..audit import is_checkpoint_line
from ..audit._record import RECORD_SCHEMA
from ..errors import SecureDSError
from ._pricing import tokens_of_usage

__all__ = [
    "GROUPINGS",
    "NO_GROUP",
    "REPORT_SCHEMA",
    "CostReport",
    "Grouping",
    "Tally",
    "build_report",
    "parse_bound",
]

REPORT_SCHEMA = "secure-ds.cost-report/1"
Grouping = Literal["principal", "team", "model", "day"]
GROUPINGS: tuple[Grouping, ...] = get_args(Grouping)
NO_GROUP = "(none)"  # the key of records without a principal, team or model

# enough to locate the damage without flooding a report over a badly broken file
_MAX_EXAMPLES = 5
# report progress in steps this large: a callback per line would cost more than the parse
_PROGRESS_STEP = 1 << 20

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})")
_ZERO = Decimal(0)
_K = TypeVar("_K", str, date)


@dataclass
class Tally:
    """What a set of calls used and cost. Mutable: the report adds to it as it reads."""

    calls: int = 0
    priced: int = 0  # calls whose record carries a cost
    unpriced: int = 0  # calls that reported usage but carry no cost: the model has no price
    denied: int = 0
    failed: int = 0
    input_cache_hit: int = 0
    input_cache_miss: int = 0
    output: int = 0
    usd: Decimal = _ZERO

    def add(self, other: Tally) -> None:
        self.calls += other.calls
        self.priced += other.priced
        self.unpriced += other.unpriced
        self.denied += other.denied
        self.failed += other.failed
        self.input_cache_hit += other.input_cache_hit
        self.input_cache_miss += other.input_cache_miss
        self.output += other.output
        self.usd += other.usd

    @property
    def input_tokens(self) -> int:
        return self.input_cache_hit + self.input_cache_miss

    def as_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "priced": self.priced,
            "unpriced": self.unpriced,
            "denied": self.denied,
            "failed": self.failed,
            "tokens": {
                "input_cache_hit": self.input_cache_hit,
                "input_cache_miss": self.input_cache_miss,
                "output": self.output,
            },
            "usd": float(self.usd),
        }


@dataclass
class CostReport:
    """Spend per group, per day and in total, and what was skipped on the way."""

    files: tuple[str, ...]
    by: Grouping
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # inclusive
    groups: dict[str, Tally] = field(default_factory=dict)
    days: dict[date, Tally] = field(default_factory=dict)
    total: Tally = field(default_factory=Tally)
    records_read: int = 0  # audit records, in range or not
    outside_range: int = 0
    no_cost_field: int = 0  # written before records carried ``cost``: not in USD
    malformed: int = 0
    other_schema: int = 0
    examples: list[str] = field(default_factory=list)  # the first skipped lines, file:line
    unpriced_models: dict[str, int] = field(default_factory=dict)
    pricing_tables: dict[str, int] = field(default_factory=dict)  # table id -> priced calls

    @property
    def skipped(self) -> int:
        return self.malformed + self.other_schema

    def share(self, tally: Tally) -> float:
        """``tally``'s fraction of the total spend (0 when nothing was spent)."""
        return float(tally.usd / self.total.usd) if self.total.usd else 0.0

    def rows(self, top: int | None = None) -> tuple[list[tuple[str, Tally]], Tally | None]:
        """The groups by spend (then calls, then name), and with ``top`` the rest lumped
        into one tally (None when nothing was left out), so the rows still add up to
        the total."""
        ordered = sorted(self.groups.items(), key=lambda kv: (-kv[1].usd, -kv[1].calls, kv[0]))
        if top is None or len(ordered) <= top:
            return ordered, None
        rest = Tally()
        for _, tally in ordered[top:]:
            rest.add(tally)
        return ordered[:top], rest

    def daily(self) -> list[tuple[date, Tally]]:
        """Every day from the first to the last call in range, days without calls
        included (as zero), so a chart's time axis has no silent gaps."""
        if not self.days:
            return []
        first, last = min(self.days), max(self.days)
        out: list[tuple[date, Tally]] = []
        day = first
        while day <= last:
            out.append((day, self.days.get(day) or Tally()))
            day += timedelta(days=1)
        return out

    def to_json(self, top: int | None = None) -> dict[str, Any]:
        shown, rest = self.rows(top)
        return {
            "schema": REPORT_SCHEMA,
            "files": list(self.files),
            "by": self.by,
            "from": _iso(self.since),
            "to": _iso(self.until),
            "currency": "USD",
            "groups": [
                {"key": key, **tally.as_json(), "share": round(self.share(tally), 6)}
                for key, tally in shown
            ],
            "others": None
            if rest is None
            else {
                "groups": len(self.groups) - len(shown),
                **rest.as_json(),
                "share": round(self.share(rest), 6),
            },
            "total": self.total.as_json(),
            "days": [
                {"day": day.isoformat(), "calls": t.calls, "usd": float(t.usd)}
                for day, t in self.daily()
            ],
            "unpriced_models": dict(sorted(self.unpriced_models.items())),
            "pricing_tables": dict(sorted(self.pricing_tables.items())),
            "records": {
                "read": self.records_read,
                "in_range": self.total.calls,
                "outside_range": self.outside_range,
                "no_cost_field": self.no_cost_field,
            },
            "skipped": {
                "malformed": self.malformed,
                "other_schema": self.other_schema,
                "examples": list(self.examples),
            },
        }


def parse_bound(text: str | None, flag: str, *, end: bool) -> datetime | None:
    """``--from``/``--to`` as an inclusive UTC instant: a date ``YYYY-MM-DD`` (UTC)
    means its first microsecond for a start and its last for an end, so ``--to``
    includes the whole day; an RFC 3339 time is taken as given."""
    if text is None:
        return None
    text = text.strip()
    try:
        if _DATE.fullmatch(text):
            day = date.fromisoformat(text)
            return datetime.combine(day, time.max if end else time.min, tzinfo=UTC)
        if _RFC3339.fullmatch(text):
            return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except ValueError:
        pass  # e.g. 2026-02-30: the shape is right, the date does not exist
    raise SecureDSError(
        f"{flag} {text!r} is not a date.",
        hint="Expected YYYY-MM-DD (a UTC day, inclusive) or an RFC 3339 time such as "
        "2026-11-28T09:30:00Z.",
    )


def build_report(
    paths: Iterable[Path],
    *,
    by: Grouping = "principal",
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> CostReport:
    """Read the audit files in order and fold every record into a :class:`CostReport`.

    ``progress`` is called with the number of bytes read since its last call. Raises
    :class:`SecureDSError` when a file is missing or unreadable (checked for all files
    before any is read, so a typo in the last path does not waste a long read) or when
    ``since`` is after ``until``.
    """
    if by not in GROUPINGS:
        raise SecureDSError(f"Cannot group by {by!r}.", hint=f"Use one of {', '.join(GROUPINGS)}.")
    if since is not None and until is not None and since > until:
        raise SecureDSError(
            f"--from ({_iso(since)}) is after --to ({_iso(until)}).",
            hint="Swap them, or widen the range.",
        )
    files = [Path(p) for p in paths]
    for path in files:
        if not path.is_file():
            problem = "is a directory" if path.is_dir() else "does not exist"
            raise SecureDSError(
                f"Audit log {path} {problem}.",
                hint="Pass an audit file (one JSON record per line), or set "
                "SECURE_DS_AUDIT_PATH to the log the client writes.",
            )
    report = CostReport(files=tuple(str(p) for p in files), by=by, since=since, until=until)
    folder = _Folder(report)
    for path in files:
        for lineno, line in _lines(path, progress):
            folder.add(line, path, lineno)
    return report


def _lines(path: Path, progress: Callable[[int], None] | None) -> Iterator[tuple[int, bytes]]:
    pending = 0
    try:
        with path.open("rb") as handle:
            # bytes, not text: a line that is not UTF-8 is one malformed record, not an
            # exception that ends the report
            for lineno, line in enumerate(handle, 1):
                if progress is not None:
                    pending += len(line)
                    if pending >= _PROGRESS_STEP:
                        progress(pending)
                        pending = 0
                yield lineno, line
    except OSError as exc:
        raise SecureDSError(
            f"Cannot read audit log {path} ({exc.strerror or exc}).",
            hint="Check the path and its permissions.",
        ) from None
    if progress is not None and pending:
        progress(pending)


class _Malformed(ValueError):
    pass


class _Folder:
    """Adds one line at a time to a report."""

    def __init__(self, report: CostReport) -> None:
        self.report = report

    def add(self, line: bytes, path: Path, lineno: int) -> None:
        report = self.report
        if not line.strip() or is_checkpoint_line(line):
            return  # a blank line holds no record, a checkpoint is the log's own
        try:
            record = json.loads(line)
        except ValueError:  # includes UnicodeDecodeError
            self._skip(path, lineno, "not JSON")
            return
        if not isinstance(record, dict):
            self._skip(path, lineno, "not a JSON object")
            return
        schema = record.get("schema")
        if schema != RECORD_SCHEMA:
            report.other_schema += 1
            self._example(path, lineno, f"schema {schema!r}, not {RECORD_SCHEMA!r}")
            return
        try:
            when = _time(record.get("time"))
            cost = _cost(record)
        except _Malformed as exc:
            self._skip(path, lineno, str(exc))
            return
        report.records_read += 1
        if (report.since is not None and when < report.since) or (
            report.until is not None and when > report.until
        ):
            report.outside_range += 1
            return
        call = self._tally(record, cost)
        day = when.date()
        key = self._key(record, cost, day)
        for tally in (report.total, _entry(report.groups, key), _entry(report.days, day)):
            tally.add(call)

    def _tally(self, record: Mapping[str, Any], cost: Mapping[str, Any] | None) -> Tally:
        report = self.report
        outcome = record.get("outcome")
        call = Tally(calls=1, denied=int(outcome == "deny"), failed=int(outcome == "failure"))
        if cost is not None:
            # whatever the outcome: a call that failed after the endpoint billed it
            # (a stream cut off after its usage) still cost money
            call.priced = 1
            call.usd = Decimal(repr(cost["usd"]))
            tokens = cost.get("tokens")
            _count_tokens(call, tokens if isinstance(tokens, dict) else {})
            table = cost.get("pricing")
            if isinstance(table, str):
                report.pricing_tables[table] = report.pricing_tables.get(table, 0) + 1
            return call
        response = record.get("response")
        usage = response.get("usage") if isinstance(response, dict) else None
        tokens = tokens_of_usage(usage) if isinstance(usage, dict) else None
        if tokens is None:
            return call  # no usage: a denied, failed or model-less call, which cost nothing
        _count_tokens(call, tokens)
        if "cost" not in record:
            # written before records carried a cost: the model may well have a price,
            # so this is not a pricing gap, only a gap in the figures
            report.no_cost_field += 1
        else:
            call.unpriced = 1
            model = _model(record, None)
            report.unpriced_models[model] = report.unpriced_models.get(model, 0) + 1
        return call

    def _key(self, record: Mapping[str, Any], cost: Mapping[str, Any] | None, day: date) -> str:
        by = self.report.by
        if by == "day":
            return day.isoformat()
        if by == "model":
            return _model(record, cost)
        actor = record.get("actor")
        if not isinstance(actor, dict):
            return NO_GROUP  # a call that failed before the caller was identified
        if by == "principal":
            return _label(actor.get("subject"))
        attributes = actor.get("attributes")
        if not isinstance(attributes, dict):
            return NO_GROUP
        team = attributes.get("team")
        return _label(team if _label(team) != NO_GROUP else attributes.get("department"))

    def _skip(self, path: Path, lineno: int, why: str) -> None:
        self.report.malformed += 1
        self._example(path, lineno, why)

    def _example(self, path: Path, lineno: int, why: str) -> None:
        if len(self.report.examples) < _MAX_EXAMPLES:
            self.report.examples.append(f"{path}:{lineno}: {why}")


def _entry(table: dict[_K, Tally], key: _K) -> Tally:
    tally = table.get(key)
    if tally is None:
        tally = table[key] = Tally()
    return tally


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise _Malformed("no `time`")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _Malformed(f"`time` {value!r} is not RFC 3339") from None
    if when.tzinfo is None:
        # without an offset the instant is unknown, and so are its day and range
        raise _Malformed(f"`time` {value!r} has no UTC offset")
    return when.astimezone(UTC)


def _cost(record: Mapping[str, Any]) -> dict[str, Any] | None:
    cost = record.get("cost")
    if cost is None:
        return None
    usd = cost.get("usd") if isinstance(cost, dict) else None
    if not isinstance(usd, int | float) or isinstance(usd, bool) or not 0 <= usd < float("inf"):
        raise _Malformed("`cost.usd` is not a number >= 0")
    assert isinstance(cost, dict)
    return cost


def _count_tokens(call: Tally, tokens: Mapping[str, Any]) -> None:
    call.input_cache_hit = _count(tokens.get("input_cache_hit"))
    call.input_cache_miss = _count(tokens.get("input_cache_miss"))
    call.output = _count(tokens.get("output"))


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def _model(record: Mapping[str, Any], cost: Mapping[str, Any] | None) -> str:
    if cost is not None and isinstance(cost.get("model"), str):
        return str(cost["model"])
    request = record.get("request")
    model = request.get("model") if isinstance(request, dict) else None
    if not isinstance(model, str) or not model:
        return NO_GROUP  # list_models, balance: calls about no model
    # without the pin, as the pricing table (and so cost.model) names it: a pinned and
    # an unpinned call to one model are one line of spend
    return model.split("@", 1)[0]


def _label(value: Any) -> str:
    if value is None or value == "":
        return NO_GROUP
    return value if isinstance(value, str) else json.dumps(value)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat().replace("+00:00", "Z")
