"""The fixed set of evidence queries a control mapping may name.

Each query looks at the aggregate of one pass over the log (:mod:`._aggregate`) and the
verification result, and answers ``met``, ``not_met`` or ``cannot_attest`` with a
statement in plain words. A query never answers ``met`` for lack of data: no calls in
the period, for instance, is ``cannot_attest`` (there is nothing to show). The table in
``audit/controls/README.md`` documents them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ._aggregate import Aggregate

__all__ = ["EVIDENCE_QUERIES", "Evidence", "EvidenceInput", "Status", "combine"]

Status = Literal["met", "not_met", "cannot_attest"]


@dataclasses.dataclass(frozen=True)
class Evidence:
    query: str
    status: Status
    statement: str
    numbers: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EvidenceInput:
    agg: Aggregate
    integrity: dict[str, Any]  # secure_ds.audit.VerifyResult.as_json()
    gaps: list[str]  # days of the period without a record


def combine(statuses: list[Status]) -> Status:
    """A control's status: not met if any query is not met; met only if all are met."""
    if "not_met" in statuses:
        return "not_met"
    if all(s == "met" for s in statuses):
        return "met"
    return "cannot_attest"


def _count_rule(
    x: EvidenceInput,
    *,
    query: str,
    population: int,
    population_name: str,
    fact: str,
    ok: str,
    bad: str,
) -> Evidence:
    broken = x.agg.facts[fact]
    numbers: dict[str, Any] = {population_name: population, fact: broken}
    if population == 0:
        return Evidence(query, "cannot_attest", f"No {population_name} in the period.", numbers)
    if broken:
        example = x.agg.examples.get(fact)
        numbers["example_event_id"] = example
        return Evidence(
            query, "not_met", f"{broken} of {population} {bad} (e.g. event {example}).", numbers
        )
    return Evidence(query, "met", f"All {population} {ok}.", numbers)


def log_integrity_verified(x: EvidenceInput) -> Evidence:
    v = x.integrity
    numbers = {k: v.get(k) for k in ("ok", "records", "checkpoints", "first_bad_index", "reason")}
    if v.get("ok"):
        sig = "signatures, chain and checkpoints" if v.get("signatures") else "chain only"
        return Evidence(
            "log_integrity_verified",
            "met",
            f"The whole log verified ({v.get('records')} records, {sig}).",
            numbers,
        )
    return Evidence(
        "log_integrity_verified",
        "not_met",
        f"LOG INTEGRITY NOT VERIFIED: {v.get('reason')} at record {v.get('first_bad_index')} "
        f"(line {v.get('line')}): {v.get('detail')}",
        numbers,
    )


def log_signing_keys_pinned(x: EvidenceInput) -> Evidence:
    keys = x.integrity.get("keys") or []
    if x.integrity.get("keys_pinned"):
        return Evidence(
            "log_signing_keys_pinned",
            "met",
            f"Verified against pinned key(s) {', '.join(keys)}.",
            {"keys": keys},
        )
    return Evidence(
        "log_signing_keys_pinned",
        "cannot_attest",
        "Signing keys were trusted on first use from the log's own checkpoints; a log "
        "rewritten wholesale with another key would also pass (pass --key).",
        {"keys": keys},
    )


def checkpoints_cover_period(x: EvidenceInput) -> Evidence:
    last, covered = x.agg.last_index, x.agg.checkpoint_max_size
    numbers = {"last_record_index": last, "largest_checkpoint_size": covered}
    if last is None:
        return Evidence(
            "checkpoints_cover_period", "cannot_attest", "No calls in the period.", numbers
        )
    if covered > last:
        return Evidence(
            "checkpoints_cover_period",
            "met",
            f"A signed checkpoint of size {covered} covers the period's last record ({last}).",
            numbers,
        )
    return Evidence(
        "checkpoints_cover_period",
        "not_met",
        f"The period's records from index {covered} to {last} are after the newest signed "
        "checkpoint: their removal could not be detected.",
        numbers,
    )


def retention_covers_period(x: EvidenceInput) -> Evidence:
    first, lo = x.agg.log_first_time, x.agg.period.lo
    numbers = {"log_first_record": first, "period_start": lo}
    if x.agg.total.calls == 0:  # a log that ends before the period shows nothing of it
        return Evidence(
            "retention_covers_period", "cannot_attest", "No calls in the period.", numbers
        )
    if first is not None and first <= lo:
        return Evidence(
            "retention_covers_period",
            "met",
            f"The log holds records from {first}, before the period's start.",
            numbers,
        )
    return Evidence(
        "retention_covers_period",
        "cannot_attest",
        f"The log's oldest record is {first or 'absent'}, after the period's start {lo}: "
        "records before it were not retained, or there were none.",
        numbers,
    )


def records_present_every_day(x: EvidenceInput) -> Evidence:
    days = x.agg.period.days
    numbers: dict[str, Any] = {"days": days, "days_without_records": len(x.gaps)}
    if not x.gaps:
        return Evidence(
            "records_present_every_day", "met", f"Each of the {days} days has records.", numbers
        )
    shown = ", ".join(x.gaps[:10]) + (" ..." if len(x.gaps) > 10 else "")
    return Evidence(
        "records_present_every_day",
        "cannot_attest",
        f"{len(x.gaps)} of {days} days have no records ({shown}): no use, or records missing.",
        numbers,
    )


def records_content_complete(x: EvidenceInput) -> Evidence:
    return _count_rule(
        x,
        query="records_content_complete",
        population=x.agg.total.calls,
        population_name="calls",
        fact="incomplete_records",
        ok="call records hold every member the record schema requires",
        bad="call records lack members the record schema requires",
    )


def all_calls_authenticated(x: EvidenceInput) -> Evidence:
    return _count_rule(
        x,
        query="all_calls_authenticated",
        population=x.agg.total.permits,
        population_name="permitted calls",
        fact="permits_without_actor",
        ok="permitted calls have an identified actor",
        bad="permitted calls have no identified actor",
    )


def all_calls_mtls_bound_token(x: EvidenceInput) -> Evidence:
    return _count_rule(
        x,
        query="all_calls_mtls_bound_token",
        population=x.agg.total.permits,
        population_name="permitted calls",
        fact="permits_not_bound",
        ok="permitted calls used a JWT bound to the mTLS client certificate",
        bad="permitted calls did not use a certificate-bound JWT",
    )


def policy_enforced_all_calls(x: EvidenceInput) -> Evidence:
    return _count_rule(
        x,
        query="policy_enforced_all_calls",
        population=x.agg.total.permits,
        population_name="permitted calls",
        fact="permits_without_policy",
        ok="permitted calls were decided by a policy engine",
        bad="permitted calls were not decided by policy (allow-all or none)",
    )


def policy_revisions_recorded(x: EvidenceInput) -> Evidence:
    return _count_rule(
        x,
        query="policy_revisions_recorded",
        population=x.agg.facts["decisions"],
        population_name="policy decisions",
        fact="decisions_without_revision",
        ok="policy decisions record the policy revision in force",
        bad="policy decisions record no policy revision",
    )


def denials_recorded(x: EvidenceInput) -> Evidence:
    return _count_rule(
        x,
        query="denials_recorded",
        population=x.agg.total.denials,
        population_name="denials",
        fact="denials_unattributed",
        ok="denials name what denied them",
        bad="denials do not name what denied them",
    )


def failures_recorded(x: EvidenceInput) -> Evidence:
    n = x.agg.total.failures
    if n == 0:
        return Evidence(
            "failures_recorded",
            "cannot_attest" if x.agg.total.calls == 0 else "met",
            "No calls in the period." if x.agg.total.calls == 0 else "No failures in the period.",
            {"failures": 0},
        )
    return _count_rule(
        x,
        query="failures_recorded",
        population=n,
        population_name="failures",
        fact="failures_without_error",
        ok="failures record their error type",
        bad="failures record no error type",
    )


def dlp_scanning_applied(x: EvidenceInput) -> Evidence:
    return _count_rule(
        x,
        query="dlp_scanning_applied",
        population=x.agg.facts["content_calls"],
        population_name="content calls",
        fact="content_unclassified",
        ok="content calls (chat, stream, fim) were scanned for sensitive data",
        bad="content calls were not scanned for sensitive data",
    )


def dlp_findings_recorded(x: EvidenceInput) -> Evidence:
    ev = _count_rule(
        x,
        query="dlp_findings_recorded",
        population=x.agg.facts["classified"],
        population_name="classified calls",
        fact="classified_without_findings",
        ok="classified calls record their findings by kind",
        bad="classified calls lack a findings list",
    )
    ev.numbers["findings"] = sum(x.agg.findings_by_kind.values())
    return ev


def cost_metered(x: EvidenceInput) -> Evidence:
    return _count_rule(
        x,
        query="cost_metered",
        population=x.agg.total.permits,
        population_name="permitted calls",
        fact="permits_unmetered",
        ok="permitted calls went through the budget meter",
        bad="permitted calls were unmetered or metered by the ledger fallback",
    )


def no_unsafe_settings(x: EvidenceInput) -> Evidence:
    used = {name: info["count"] for name, info in x.agg.exceptions.items()}
    if x.agg.total.calls == 0:
        return Evidence("no_unsafe_settings", "cannot_attest", "No calls in the period.", used)
    if used:
        listed = ", ".join(f"{k} ({v})" for k, v in sorted(used.items()))
        return Evidence("no_unsafe_settings", "not_met", f"Unsafe settings in use: {listed}.", used)
    return Evidence("no_unsafe_settings", "met", "No unsafe setting was in use for any call.", used)


EVIDENCE_QUERIES: dict[str, Callable[[EvidenceInput], Evidence]] = {
    f.__name__: f
    for f in (
        log_integrity_verified,
        log_signing_keys_pinned,
        checkpoints_cover_period,
        retention_covers_period,
        records_present_every_day,
        records_content_complete,
        all_calls_authenticated,
        all_calls_mtls_bound_token,
        policy_enforced_all_calls,
        policy_revisions_recorded,
        denials_recorded,
        failures_recorded,
        dlp_scanning_applied,
        dlp_findings_recorded,
        cost_metered,
        no_unsafe_settings,
    )
}
