"""The report model: verification + one streaming pass + per-control evidence.

The model is a JSON object with ``schema_version`` (``audit/report.schema.json``).
What the report cannot attest is stated, never omitted: ``attestation.statements``
opens the model (and the first page of the HTML/PDF forms), and says first of all
whether the log is intact.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..audit import PublicKey, verify_log
from ..errors import ReportError
from ._aggregate import Aggregate, Period, aggregate_log
from ._controls import Framework
from ._evidence import EVIDENCE_QUERIES, EvidenceInput, Status, combine

__all__ = ["REPORT_SCHEMA_VERSION", "build_report", "parse_date"]

REPORT_SCHEMA_VERSION = "secure-ds.report/1"


def parse_date(text: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ReportError(
            f"{flag} {text!r} is not a date.", hint=f"Pass {flag} as YYYY-MM-DD (UTC)."
        ) from None


def build_report(
    log: Path,
    period: Period,
    frameworks: Sequence[Framework],
    *,
    keys: Sequence[PublicKey] = (),
    jobs: int = 1,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The report for ``period`` over the log at ``log`` (verified first, whole)."""
    if period.end < period.start:
        raise ReportError(
            f"The period ends ({period.end}) before it starts ({period.start}).",
            hint="Pass --from no later than --to.",
        )
    log = Path(log)
    if not log.is_file():
        raise ReportError(
            f"The audit log {log} does not exist or is not a file.",
            hint="Pass --log the path of the audit log (SECURE_DS_AUDIT_PATH).",
        )
    # a live log grows while we work: count only what was there before verification
    # began, all of which the verification covered
    size = log.stat().st_size
    integrity = verify_log(log, keys=keys, jobs=jobs).as_json()
    try:
        agg = aggregate_log(log, period, on_record=on_record, progress=progress, limit=size)
    except OSError as exc:
        raise ReportError(
            f"Cannot read the audit log {log} ({exc.strerror or type(exc).__name__}).",
            hint="Check the path and its permissions.",
        ) from None
    return _model(log, period, frameworks, integrity, agg)


def _model(
    log: Path,
    period: Period,
    frameworks: Sequence[Framework],
    integrity: dict[str, Any],
    agg: Aggregate,
) -> dict[str, Any]:
    gaps = [day for day, tally in agg.days.items() if tally.calls == 0]
    x = EvidenceInput(agg, integrity, gaps)
    cache = {name: q(x) for name, q in EVIDENCE_QUERIES.items()}
    controls: list[dict[str, Any]] = []
    counts: dict[Status, int] = {"met": 0, "not_met": 0, "cannot_attest": 0}
    for fw in frameworks:
        rows = []
        for c in fw.controls:
            evidence = [cache[q] for q in c.evidence]
            status = combine([e.status for e in evidence])
            counts[status] += 1
            rows.append(
                {
                    "id": c.id,
                    "title": c.title,
                    "description": c.description,
                    "status": status,
                    "evidence": [e.as_json() for e in evidence],
                }
            )
        controls.append(
            {
                "framework": fw.id,
                "name": fw.name,
                "version": fw.version,
                "file": fw.file,
                "controls": rows,
            }
        )

    statements = _statements(integrity, agg, gaps, cache)
    revisions = sorted(agg.revisions.values(), key=lambda r: r["first_seen"])
    in_force = [r for r in revisions if r["calls_in_period"] or r["last_seen"] < period.lo]
    if in_force:  # of those only used before the period, the newest was in force at its start
        before = [r for r in in_force if not r["calls_in_period"]]
        in_force = [r for r in in_force if r["calls_in_period"]] + before[-1:]
        in_force.sort(key=lambda r: r["first_seen"])
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "generator": f"secure-ds {__version__}",
        "attestation": {
            "log_intact": bool(integrity.get("ok")),
            "statements": statements,
        },
        "period": {
            "from": period.start.isoformat(),
            "to": period.end.isoformat(),
            "start": period.lo,
            "end": period.hi,
            "days": period.days,
            "days_without_records": gaps,
            "first_call": agg.first_time,
            "last_call": agg.last_time,
        },
        "log": {
            "path": str(log),
            "records_total": agg.records_total,
            "records_before_period": agg.records_before,
            "records_after_period": agg.records_after,
            "first_record_time": agg.log_first_time,
            "last_record_time": agg.log_last_time,
            "unreadable_lines": agg.unreadable_lines,
            "torn_tail": agg.torn_tail,
            "first_index_in_period": agg.first_index,
            "last_index_in_period": agg.last_index,
        },
        "integrity": {
            "verify": integrity,
            "checkpoints": agg.checkpoints,
            "largest_checkpoint_size": agg.checkpoint_max_size,
            "newest_checkpoint": agg.newest_checkpoint,
            "checkpoints_by_day": [
                agg.checkpoint_by_day[d] | {"day": d} for d in sorted(agg.checkpoint_by_day)
            ],
            "keys": list(agg.keys.values()),
            "rotations": agg.rotations,
        },
        "totals": {
            **agg.total.as_json(),
            "actions": dict(agg.actions.most_common()),
            "failures_by_reason": dict(agg.failures_by_reason.most_common()),
            "denials_by": dict(agg.denials_by.most_common()),
        },
        "by_principal": agg.by_principal.as_json(),
        "by_team": agg.by_team.as_json(),
        "by_model": agg.by_model.as_json(),
        "cost": {
            "usd": round(agg.total.usd, 6),
            "priced_calls": agg.priced_calls,
            "tokens": {
                k: agg.tokens[k]
                for k in ("input_cache_hit", "input_cache_miss", "output", "reasoning")
            },
        },
        "dlp": {
            "findings_by_kind": dict(agg.findings_by_kind.most_common()),
            "classifications": dict(agg.classifications.most_common()),
            "engines": dict(agg.dlp_engines.most_common()),
        },
        "policy_revisions": in_force,
        "exceptions": sorted(agg.exceptions.values(), key=lambda e: e["setting"]),
        "timeline": {
            "day": [{"day": d, **t.as_json()} for d, t in agg.days.items()],
            "hour": [{"hour": h, **agg.hours[h].as_json()} for h in sorted(agg.hours)]
            if agg.hourly
            else None,
        },
        "controls": controls,
        "summary": {"controls": sum(counts.values()), **counts},
    }


def _statements(
    integrity: dict[str, Any], agg: Aggregate, gaps: list[str], cache: dict[str, Any]
) -> list[str]:
    """What the report cannot attest, in plain words, most serious first."""
    out: list[str] = []
    if not integrity.get("ok"):
        out.append(
            "THE AUDIT LOG IS NOT INTACT: log integrity not verified: "
            f"{integrity.get('reason')} at record {integrity.get('first_bad_index')} "
            f"(line {integrity.get('line')}): {integrity.get('detail')}. Figures from "
            "this log cannot be relied on."
        )
    if agg.unreadable_lines:
        out.append(f"{agg.unreadable_lines} line(s) of the log are not JSON and were not counted.")
    if agg.total.calls == 0:
        out.append("No calls were recorded in the period: there is nothing to attest.")
    if gaps and agg.total.calls:
        shown = ", ".join(gaps[:10]) + (" ..." if len(gaps) > 10 else "")
        out.append(f"No records on {len(gaps)} day(s) of the period: {shown}.")
    for name in ("log_signing_keys_pinned", "checkpoints_cover_period", "retention_covers_period"):
        ev = cache[name]
        if ev.status != "met" and agg.total.calls:
            out.append(ev.statement)
    return out
