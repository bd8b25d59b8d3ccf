"""Streaming aggregation of an audit log into the report's numbers.

One pass over the log's lines; every structure is a counter or is bounded (by the
period's length, by a fixed set of names, or by a cap with an ``(other)`` overflow), so
memory stays flat however many records the log holds. Record lines are told from
checkpoint lines with the public :func:`secure_ds.audit.is_checkpoint_line` (the
checkpoints carry the roots, key ids and rotations the report shows, which
``read_records`` skips). A line that is not JSON (a tampered or torn log) is counted,
never fatal: the verification result already says what is wrong with it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..audit import is_checkpoint_line

__all__ = ["Aggregate", "Period", "Tally", "aggregate_log", "iter_lines"]

MAX_KEYS = 10_000  # distinct principals / teams / models / reasons kept before "(other)"
MAX_REVISIONS = 1_000
MAX_ROTATIONS = 1_000
OTHER = "(other)"
CONTENT_ACTIONS = frozenset({"chat", "stream", "fim"})
REQUIRED = (
    "schema", "event_id", "time", "trace_id", "outcome", "action", "actor", "request",
    "classify", "decide", "enforce", "meter", "attempts", "response", "cost", "latency_ms",
    "error",
)  # fmt: skip
# unsafe settings a report lists as exceptions, and what each means
EXCEPTIONS = {
    "decide.engine=allow-all": "no policy folder configured: calls were permitted without policy",
    "meter.engine=unmetered": "no budgets configured: calls were not metered",
    "meter.details.ledger_fallback": "the budget ledger was unreachable; a local fallback decided",
    "decide.reload_error": "a newer policy version was rejected; an older revision stayed in force",
    "meter.settle_error": "the meter failed to settle a call's cost",
    "actor.auth=api_key": "a call authenticated with a bare API key, not a certificate-bound token",
    "classify=none": "a content call was not scanned for sensitive data",
}


@dataclasses.dataclass(frozen=True)
class Period:
    """Whole UTC days ``start`` .. ``end`` inclusive."""

    start: dt.date
    end: dt.date

    @property
    def lo(self) -> str:  # record times are fixed-width RFC 3339: compare as strings
        return f"{self.start.isoformat()}T00:00:00.000Z"

    @property
    def hi(self) -> str:
        return f"{(self.end + dt.timedelta(days=1)).isoformat()}T00:00:00.000Z"

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def each_day(self) -> Iterator[str]:
        for n in range(self.days):
            yield (self.start + dt.timedelta(days=n)).isoformat()


class Tally:
    __slots__ = ("calls", "denials", "failures", "permits", "tokens_in", "tokens_out", "usd")

    def __init__(self) -> None:
        self.calls = self.permits = self.denials = self.failures = 0
        self.tokens_in = self.tokens_out = 0
        self.usd = 0.0

    def add(self, outcome: str, usd: float, tokens_in: int, tokens_out: int) -> None:
        self.calls += 1
        if outcome == "permit":
            self.permits += 1
        elif outcome == "deny":
            self.denials += 1
        else:
            self.failures += 1
        self.usd += usd
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out

    def as_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "permits": self.permits,
            "denials": self.denials,
            "failures": self.failures,
            "usd": round(self.usd, 6),
            "tokens_input": self.tokens_in,
            "tokens_output": self.tokens_out,
        }


class _Capped:
    """A dict of tallies with at most MAX_KEYS names; later names share ``(other)``."""

    def __init__(self) -> None:
        self.tallies: dict[str, Tally] = {}

    def get(self, name: str) -> Tally:
        tally = self.tallies.get(name)
        if tally is None:
            if len(self.tallies) >= MAX_KEYS:
                name = OTHER
                tally = self.tallies.get(name)
            if tally is None:
                tally = self.tallies[name] = Tally()
        return tally

    def as_json(self) -> list[dict[str, Any]]:
        rows = sorted(self.tallies.items(), key=lambda kv: (-kv[1].calls, kv[0]))
        return [{"name": name, **t.as_json()} for name, t in rows]


def _bump(counter: Counter[str], key: str, n: int = 1) -> None:
    if key not in counter and len(counter) >= MAX_KEYS:
        key = OTHER
    counter[key] += n


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def team_of(attributes: Any) -> str | None:
    """The caller's team: ``team``, else ``department`` (the cost report's rule)."""
    for claim in ("team", "department"):
        value = _dict(attributes).get(claim)
        if isinstance(value, str) and value:
            return value
    return None


class Aggregate:
    """Everything the report counts, fed one line at a time."""

    def __init__(self, period: Period, *, hourly: bool | None = None) -> None:
        self.period = period
        self.hourly = period.days <= 31 if hourly is None else hourly
        # the log as a whole
        self.records_total = self.records_before = self.records_after = 0
        self.unreadable_lines = 0
        self.torn_tail = False
        self.log_first_time: str | None = None
        self.log_last_time: str | None = None
        # checkpoints
        self.checkpoints = 0
        self.checkpoint_max_size = 0
        self.newest_checkpoint: dict[str, Any] | None = None
        self.checkpoint_by_day: dict[str, dict[str, Any]] = {}  # days of the period only
        self.keys: dict[str, dict[str, Any]] = {}  # key id -> alg, first/last checkpoint
        self.rotations: list[dict[str, Any]] = []
        # the period
        self.total = Tally()
        self.first_index: int | None = None
        self.last_index: int | None = None
        self.first_time: str | None = None
        self.last_time: str | None = None
        self.by_principal, self.by_team, self.by_model = _Capped(), _Capped(), _Capped()
        self.actions: Counter[str] = Counter()
        self.failures_by_reason: Counter[str] = Counter()
        self.denials_by: Counter[str] = Counter()
        self.findings_by_kind: Counter[str] = Counter()
        self.classifications: Counter[str] = Counter()
        self.dlp_engines: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()
        self.priced_calls = 0
        self.days: dict[str, Tally] = {day: Tally() for day in period.each_day()}
        self.hours: dict[str, Tally] = {}
        self.revisions: dict[str, dict[str, Any]] = {}
        self.exceptions: dict[str, dict[str, Any]] = {}
        # evidence facts: counts of calls that break a query's rule, first example each
        self.facts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    # ----------------------------------------------------------------- feeding

    def line(self, raw: bytes, on_record: Callable[[dict[str, Any]], None] | None) -> None:
        if not raw.endswith(b"\n"):
            self.torn_tail = True  # verify names it; read_records skips it too
            return
        try:
            obj = json.loads(raw)
        except ValueError:
            self.unreadable_lines += 1
            return
        if not isinstance(obj, dict):
            self.unreadable_lines += 1
        elif is_checkpoint_line(raw):
            self._checkpoint(_dict(obj.get("checkpoint")))
        elif self._record(obj) and on_record is not None:
            on_record(obj)

    def _checkpoint(self, cp: dict[str, Any]) -> None:
        self.checkpoints += 1
        size, time, key = _int(cp.get("size")), str(cp.get("time", "")), str(cp.get("key", ""))
        summary = {
            "size": size,
            "root": cp.get("root"),
            "time": time,
            "key": key,
            "alg": cp.get("alg"),
            "origin": cp.get("origin"),
        }
        self.checkpoint_max_size = max(self.checkpoint_max_size, size)
        self.newest_checkpoint = summary
        day = time[:10]
        if day in self.days:
            self.checkpoint_by_day[day] = summary  # the day's last one
        if key and key not in self.keys and len(self.keys) < MAX_KEYS:
            self.keys[key] = {"key": key, "alg": cp.get("alg"), "first_seen": time}
        if key in self.keys:
            self.keys[key]["last_seen"] = time
        for note_line in str(cp.get("note", "")).split("\n"):
            if note_line.startswith("epoch ") and len(self.rotations) < MAX_ROTATIONS:
                parts = note_line.split()
                self.rotations.append(
                    {
                        "time": time,
                        "tree_size": size,
                        "new_key": parts[1] if len(parts) > 1 else None,
                        "previous_key": parts[3] if len(parts) > 3 else None,
                    }
                )

    def _record(self, rec: dict[str, Any]) -> bool:
        """Count a record; True when it falls in the period."""
        self.records_total += 1
        time = rec.get("time")
        if not isinstance(time, str):  # cannot be placed in any period: counted apart
            self._fact("records_without_time", rec)
            return False
        if self.log_first_time is None or time < self.log_first_time:
            self.log_first_time = time
        if self.log_last_time is None or time > self.log_last_time:
            self.log_last_time = time
        decide = _dict(rec.get("decide"))
        revision = decide.get("revision")
        if isinstance(revision, str):
            self._revision(revision, decide.get("commit"), time, in_period=False)
        if time < self.period.lo:
            self.records_before += 1
            return False
        if time >= self.period.hi:
            self.records_after += 1
            return False
        self._in_period(rec, time, decide)
        return True

    def _revision(self, revision: str, commit: Any, time: str, *, in_period: bool) -> None:
        info = self.revisions.get(revision)
        if info is None:
            if len(self.revisions) >= MAX_REVISIONS:
                return
            info = self.revisions[revision] = {
                "revision": revision,
                "commit": commit if isinstance(commit, str) else None,
                "first_seen": time,
                "last_seen": time,
                "calls_in_period": 0,
            }
        info["first_seen"] = min(info["first_seen"], time)
        info["last_seen"] = max(info["last_seen"], time)
        if in_period:
            info["calls_in_period"] += 1

    def _fact(self, name: str, rec: dict[str, Any]) -> None:
        self.facts[name] += 1
        if name not in self.examples:
            self.examples[name] = str(rec.get("event_id"))

    def _exception(self, name: str, rec: dict[str, Any], time: str) -> None:
        info = self.exceptions.get(name)
        if info is None:
            info = self.exceptions[name] = {
                "setting": name,
                "meaning": EXCEPTIONS[name],
                "count": 0,
                "first_time": time,
                "first_event_id": rec.get("event_id"),
            }
        info["count"] += 1

    def _in_period(self, rec: dict[str, Any], time: str, decide: dict[str, Any]) -> None:
        outcome = str(rec.get("outcome"))
        action = str(rec.get("action"))
        actor = _dict(rec.get("actor"))
        meter = _dict(rec.get("meter"))
        classify = rec.get("classify")
        cost = _dict(rec.get("cost"))
        error = _dict(rec.get("error"))
        request = _dict(rec.get("request"))
        integrity = _dict(rec.get("integrity"))
        index = integrity.get("index")
        if isinstance(index, int):
            if self.first_index is None:
                self.first_index = index
            self.last_index = index
        if self.first_time is None:
            self.first_time = time
        self.last_time = time

        tokens = _dict(cost.get("tokens"))
        t_in = _int(tokens.get("input_cache_hit")) + _int(tokens.get("input_cache_miss"))
        t_out = _int(tokens.get("output"))
        usd = _num(cost.get("usd"))
        if cost:
            self.priced_calls += 1
            for part in ("input_cache_hit", "input_cache_miss", "output", "reasoning"):
                self.tokens[part] += _int(tokens.get(part))

        principal = actor.get("subject") if actor else None
        self.total.add(outcome, usd, t_in, t_out)
        self.by_principal.get(str(principal) if principal else "(unidentified)").add(
            outcome, usd, t_in, t_out
        )
        self.by_team.get(team_of(actor.get("attributes")) or "(no team)").add(
            outcome, usd, t_in, t_out
        )
        model = request.get("model") or cost.get("model")
        self.by_model.get(str(model) if model else "(none)").add(outcome, usd, t_in, t_out)
        _bump(self.actions, action)
        day = self.days.get(time[:10])
        if day is not None:
            day.add(outcome, usd, t_in, t_out)
        if self.hourly:
            hour = time[:13]
            tally = self.hours.get(hour)
            if tally is None:
                tally = self.hours[hour] = Tally()  # bounded: at most 24 x 31 keys
            tally.add(outcome, usd, t_in, t_out)

        if any(k not in rec for k in REQUIRED):
            self._fact("incomplete_records", rec)
        revision = decide.get("revision")
        if isinstance(revision, str):
            self._revision(revision, decide.get("commit"), time, in_period=True)

        # outcome-specific evidence
        if outcome == "permit":
            if not actor:
                self._fact("permits_without_actor", rec)
            if actor.get("auth") != "jwt" or actor.get("certificate_bound") is not True:
                self._fact("permits_not_bound", rec)
            if not decide or decide.get("engine") == "allow-all":
                self._fact("permits_without_policy", rec)
            if not meter or meter.get("engine") == "unmetered":
                self._fact("permits_unmetered", rec)
        elif outcome == "deny":
            by = decide.get("denied_by") if decide.get("effect") == "deny" else None
            if not by and meter.get("allowed") is False:
                by = f"meter:{meter.get('kind') or 'refused'}"
            if not by and error.get("type"):
                by = f"error:{error['type']}"
            if by:
                _bump(self.denials_by, str(by))
            else:
                _bump(self.denials_by, "(unattributed)")
                self._fact("denials_unattributed", rec)
        else:
            reason = error.get("type")
            _bump(self.failures_by_reason, str(reason) if reason else "(no error recorded)")
            if not reason:
                self._fact("failures_without_error", rec)

        if decide and decide.get("engine") != "allow-all":
            self.facts["decisions"] += 1
            if not isinstance(revision, str):
                self._fact("decisions_without_revision", rec)

        # DLP
        if action in CONTENT_ACTIONS:
            self.facts["content_calls"] += 1
            if not isinstance(classify, dict):
                self._fact("content_unclassified", rec)
                self._exception("classify=none", rec, time)
        if isinstance(classify, dict):
            self.facts["classified"] += 1
            _bump(self.dlp_engines, str(classify.get("engine")))
            _bump(self.classifications, str(classify.get("classification")))
            findings = classify.get("findings")
            if not isinstance(findings, list):
                self._fact("classified_without_findings", rec)
            else:
                for finding in findings:
                    f = _dict(finding)
                    _bump(self.findings_by_kind, str(f.get("kind")), _int(f.get("count")))

        # exceptions: unsafe settings in use
        if decide.get("engine") == "allow-all":
            self._exception("decide.engine=allow-all", rec, time)
        if decide.get("reload_error"):
            self._exception("decide.reload_error", rec, time)
        if meter.get("engine") == "unmetered":
            self._exception("meter.engine=unmetered", rec, time)
        if _dict(meter.get("details")).get("ledger_fallback"):
            self._exception("meter.details.ledger_fallback", rec, time)
            if outcome == "permit":
                self._fact("permits_unmetered", rec)
        if meter.get("settle_error"):
            self._exception("meter.settle_error", rec, time)
        if actor.get("auth") == "api_key":
            self._exception("actor.auth=api_key", rec, time)


def iter_lines(
    path: Path, progress: Callable[[int], None] | None = None, *, limit: int | None = None
) -> Iterator[bytes]:
    """The log's lines up to byte ``limit`` (a line crossing it ends there, so reads as
    torn), calling ``progress(bytes_read)`` every ~4 MB."""
    done = reported = 0
    with Path(path).open("rb") as f:
        for raw in f:
            if limit is not None and done + len(raw) > limit:
                raw = raw[: limit - done]
                if not raw:
                    break
            done += len(raw)
            if progress is not None and done - reported >= 4 << 20:
                progress(done)
                reported = done
            yield raw
    if progress is not None:
        progress(done)


def aggregate_log(
    path: Path,
    period: Period,
    *,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[int], None] | None = None,
    limit: int | None = None,
) -> Aggregate:
    """One pass over the log at ``path`` (its first ``limit`` bytes when given);
    ``on_record`` sees each record of the period."""
    agg = Aggregate(period)
    for raw in iter_lines(path, progress, limit=limit):
        agg.line(raw, on_record)
    return agg
