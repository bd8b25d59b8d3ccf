"""The result of a review, :class:`ReviewReport`: the verdict (:meth:`ReviewReport.exit_code`)
and the report itself, as Markdown for a pull request or as JSON for machines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._decision_tests import TestSummary
from ._diff import Finding, Outcome, PolicyChange
from ._requests import Example, ReplayStats
from ._sides import SideSummary

REVIEW_SCHEMA = "secure-ds.policy-review/1"
DEFAULT_MAX_ROWS = 20


@dataclass
class ReviewReport:
    """The result of a review; :meth:`to_markdown` for a pull request, :meth:`to_json`
    for machines."""

    old: SideSummary
    new: SideSummary
    replay: ReplayStats
    new_access: list[Finding] = field(default_factory=list)
    restrictions: list[Finding] = field(default_factory=list)
    obligation_changes: list[Finding] = field(default_factory=list)
    reattributed: list[Finding] = field(default_factory=list)
    policy_changes: list[PolicyChange] = field(default_factory=list)
    tests: TestSummary | None = None
    max_rows: int = DEFAULT_MAX_ROWS

    @property
    def loosened_obligations(self) -> list[Finding]:
        """Obligation changes that ask less of a permitted call (all but ``stronger``)."""
        return [f for f in self.obligation_changes if f.strength != "stronger"]

    @property
    def grants_new_access(self) -> bool:
        """NEW permits a request OLD denied, or permits one with obligations that ask
        less of it (a higher cap, a dropped redaction, another route)."""
        return bool(self.new_access or self.loosened_obligations)

    @property
    def new_loaded(self) -> bool:
        return self.new.loaded

    @property
    def tests_fail(self) -> bool:
        """NEW's decision tests ran and did not pass: a case failed or was malformed, or
        the runner could not run them."""
        return self.tests is not None and self.tests.status in ("failed", "error")

    def exit_code(self, *, allow_new_access: bool = False) -> int:
        """0 when NEW may be merged as far as the review can tell; 1 when NEW does not
        load, fails its decision tests, or grants new access (unless that is allowed).
        ``allow_new_access`` excuses reviewed new access only, never a failing test:
        a test states what the policies must decide, so a failure is a broken
        expectation however deliberate the change."""
        if not self.new_loaded or self.tests_fail:
            return 1
        return 1 if self.grants_new_access and not allow_new_access else 0

    # ---------------------------------------------------------------- json

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": REVIEW_SCHEMA,
            "old": self.old.to_json(),
            "new": self.new.to_json(),
            "grants_new_access": self.grants_new_access,
            "summary": {
                "new_access": len(self.new_access),
                "new_access_records": sum(f.audit_records for f in self.new_access),
                "restrictions": len(self.restrictions),
                "restriction_records": sum(f.audit_records for f in self.restrictions),
                "obligation_changes": len(self.obligation_changes),
                "loosened_obligations": len(self.loosened_obligations),
                "reattributed": len(self.reattributed),
                "policies_added": sum(1 for c in self.policy_changes if c.change == "added"),
                "policies_removed": sum(1 for c in self.policy_changes if c.change == "removed"),
                "policies_modified": sum(1 for c in self.policy_changes if c.change == "modified"),
            },
            "replay": self.replay.to_json(),
            "new_access": [f.to_json() for f in self.new_access],
            "restrictions": [f.to_json() for f in self.restrictions],
            "obligation_changes": [f.to_json() for f in self.obligation_changes],
            "reattributed": [f.to_json() for f in self.reattributed],
            "policy_changes": [c.to_json() for c in self.policy_changes],
            "tests": self.tests.to_json() if self.tests else None,
        }

    # ------------------------------------------------------------ markdown

    def to_markdown(self) -> str:
        lines = [f"## Policy review: `{_code(self.old.spec)}` → `{_code(self.new.spec)}`", ""]
        lines += [self._headline(), ""]
        if self.tests_fail:
            lines += [self._tests_headline(), ""]
        if self.new.loaded:
            lines += [self._coverage(), ""]
            lines += self._flips(
                "New access (deny → permit)",
                self.new_access,
                "NEW permits these requests; OLD denied them.",
            )
            lines += self._flips(
                "Restrictions (permit → deny)",
                self.restrictions,
                "NEW denies these requests; OLD permitted them.",
            )
            lines += self._obligations()
            lines += self._reattributed()
            lines += self._policies()
        lines += self._validation()
        return "\n".join(lines).rstrip() + "\n"

    def _headline(self) -> str:
        if not self.new.loaded:
            return (
                "**❌ NEW does not load**, so nothing was replayed: a client would refuse "
                "to start with it, and a running one would keep its last good version."
            )
        parts = [
            f"{len(self.new_access)} new-access change(s)",
            f"{len(self.restrictions)} restriction(s)",
            f"{len(self.obligation_changes)} obligation change(s)"
            + (
                f" ({len(self.loosened_obligations)} loosened)" if self.loosened_obligations else ""
            ),
            f"{len(self.policy_changes)} policy change(s)",
        ]
        counts = ", ".join(parts)
        if self.grants_new_access:
            records = sum(f.audit_records for f in self.new_access)
            recorded = f"; {records:,} recorded call(s) newly permitted" if records else ""
            return f"**⚠️ NEW grants new access**: {counts}{recorded}."
        return f"**✅ NEW grants no new access**: {counts}."

    def _tests_headline(self) -> str:
        tests = self.tests
        if tests is None or tests.status == "error":
            return (
                "**❌ NEW's decision tests could not run**, so NEW cannot be merged as is "
                "(see _Validation and tests_)."
            )
        return (
            f"**❌ NEW fails its decision tests**: {len(tests.failed)} failed, "
            f"{len(tests.errors)} malformed (see _Validation and tests_); fix the policies "
            "or the expectations. `--allow-new-access` does not excuse this."
        )

    def _coverage(self) -> str:
        r = self.replay
        bits = []
        if r.audit_files:
            files = ", ".join(f"`{_code(Path(f).name)}`" for f in r.audit_files)
            bits.append(f"Replayed {r.replayed:,} recorded call(s) from {files}")
        if r.sweep_requests:
            sampled = (
                f", a sample (seed {r.sweep_seed}) of {r.sweep_space:,} combinations"
                if r.sweep_sampled
                else f", all {r.sweep_space:,} combinations"
            )
            bits.append(
                f"{'and ' if bits else 'Replayed '}{r.sweep_requests:,} sweep request(s) "
                f"over the values the policies compare with{sampled}"
            )
        if not bits:
            text = "No requests were replayed (no audit log given and the sweep is off)."
        else:
            text = (
                " ".join(bits) + f"; {r.classes:,} request classes evaluated against each "
                f"side in {r.seconds:.1f} s."
            )
        skipped = []
        if r.skipped_no_context:
            skipped.append(
                f"{r.skipped_no_context:,} record(s) made without a policy engine "
                "(no recorded policy context)"
            )
        if r.malformed:
            notes = "; ".join(r.malformed_notes)
            more = (
                f"; and {r.malformed - len(r.malformed_notes)} more"
                if r.malformed > len(r.malformed_notes)
                else ""
            )
            skipped.append(f"{r.malformed:,} malformed line(s) ({_cell(notes)}{more})")
        if skipped:
            text += " Skipped: " + "; ".join(skipped) + "."
        return text

    def _capped(self, rows: Sequence[Any]) -> tuple[Sequence[Any], str]:
        shown = rows[: self.max_rows]
        more = len(rows) - len(shown)
        return shown, (f"_… and {more} more (see `--json`)._" if more > 0 else "")

    def _flips(self, title: str, findings: Sequence[Finding], lead: str) -> list[str]:
        lines = [f"### {title}: {len(findings)}", ""]
        if not findings:
            return [*lines, "None.", ""]
        return [*lines, lead, "", *self._flip_table(findings), ""]

    def _flip_table(self, findings: Sequence[Finding]) -> list[str]:
        """OLD and NEW outcome with an example request, one row per finding (capped)."""
        lines = [
            "| OLD | NEW | example request | roles | actions · models | recorded | sweep |",
            "|---|---|---|---|---|---:|---:|",
        ]
        shown, more = self._capped(findings)
        for f in shown:
            cells = [
                _cell(_outcome_text(f.old)),
                _cell(_outcome_text(f.new)),
                _request_text(f),
                _roles_text(f.roles),
                _scope_text(f),
                f"{f.audit_records:,}",
                f"{f.sweep_requests:,}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if more:
            lines.append(more)
        return lines

    def _obligations(self) -> list[str]:
        rows = self.obligation_changes
        lines = [f"### Obligation changes: {len(rows)}", ""]
        if not rows:
            return [*lines, "None.", ""]
        lines += [
            "Both sides permit these requests, with different obligations.",
            "",
            "| change | OLD obligations | NEW obligations | permitted by (NEW) | example request "
            "| roles | actions · models | recorded | sweep |",
            "|---|---|---|---|---|---|---|---:|---:|",
        ]
        order = {"weaker": 0, "mixed": 1, "changed": 2, "stronger": 3}
        shown, more = self._capped(sorted(rows, key=lambda f: order.get(f.strength or "", 4)))
        for f in shown:
            label = {
                "weaker": "**⚠️ weaker**",
                "mixed": "**⚠️ mixed**",
                "changed": "**⚠️ changed**",
            }.get(f.strength or "", "stronger")
            cells = [
                label,
                _cell(" ".join(f.old.obligations) or "(none)"),
                _cell(" ".join(f.new.obligations) or "(none)"),
                _cell(f.new.decided_by),
                _request_text(f),
                _roles_text(f.roles),
                _scope_text(f),
                f"{f.audit_records:,}",
                f"{f.sweep_requests:,}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if more:
            lines.append(more)
        return [*lines, ""]

    def _reattributed(self) -> list[str]:
        rows = self.reattributed
        if not rows:
            return []
        summary = f"<details><summary>Same decision, other determining policies: {len(rows)}"
        return [summary + "</summary>", "", *self._flip_table(rows), "", "</details>", ""]

    def _policies(self) -> list[str]:
        rows = self.policy_changes
        lines = [f"### Policy changes: {len(rows)}", ""]
        if not rows:
            return [*lines, "None.", ""]
        lines += ["| policy | change | effect | file | details |", "|---|---|---|---|---|"]
        shown, more = self._capped(rows)
        for c in shown:
            lines.append(
                f"| `{_code(c.id)}` | {c.change} | {c.effect} | `{_code(c.file)}` | "
                f"{_cell('; '.join(c.details)) or '—'} |"
            )
        if more:
            lines.append(more)
        return [*lines, ""]

    def _validation(self) -> list[str]:
        lines = ["### Validation and tests", ""]
        for name, side in (("OLD", self.old), ("NEW", self.new)):
            where = f"`{_code(side.spec)}` ({_code(side.location)})"
            if side.loaded:
                models = ", ".join(side.models) or "none"
                revision = (side.revision or "").removeprefix("sha256:")[:12]
                lines.append(
                    f"- {name} {where}: ✅ loads and validates: {side.policies} policies, "
                    f"models {models}, revision `{revision}`."
                )
            else:
                lines.append(f"- {name} {where}: ❌ **does not load**: {_cell(side.error or '')}")
        tests = self.tests
        if tests is None:
            pass
        elif tests.status == "none":
            lines.append(f"- Decision tests (NEW): not run ({tests.message}).")
        elif tests.status == "error":
            lines.append(f"- Decision tests (NEW): ❌ could not run: {_cell(tests.message)}")
        else:
            mark = "✅" if tests.status == "passed" else "❌"
            text = (
                f"- Decision tests (NEW): {mark} {tests.passed} passed, {len(tests.failed)} failed"
            )
            if tests.failed:
                text += " (" + ", ".join(f"`{_code(t)}`" for t in tests.failed[:10]) + ")"
            if tests.errors:
                text += f"; {len(tests.errors)} malformed: " + _cell("; ".join(tests.errors[:5]))
            if tests.uncovered:
                text += "; no test is decided by " + ", ".join(
                    f"`{_code(p)}`" for p in tests.uncovered[:10]
                )
            lines.append(text + ".")
        return [*lines, ""]


def _outcome_text(outcome: Outcome) -> str:
    if outcome.effect == "permit":
        text = "permit by " + outcome.decided_by
        if outcome.obligations:
            text += " [" + " ".join(outcome.obligations) + "]"
        return text
    return "deny by " + outcome.decided_by


def _request_text(finding: Finding) -> str:
    """The example request, in one cell: who, what, on which model, and when."""
    e = finding.example
    subject = _cell(e.subject or "anonymous")
    who = [", ".join(e.roles) or "no roles"]
    claims = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(e.attributes.items()))
    if claims:
        who.append(claims if len(claims) <= 60 else claims[:59] + "…")
    roles = _cell("; ".join(who))
    target = f" on `{_code(e.model)}`" if e.model else ""
    parts = [f"{subject} ({roles}): `{_code(e.action)}`{target}"]
    if e.classification:
        parts.append(_cell(e.classification))
    if e.hour_utc is not None:
        parts.append(_when(e))
    source = "sweep" if e.source == "sweep" else f"`{_code(e.source)}`"
    return ", ".join(parts) + f" ({source})"


def _roles_text(roles: Sequence[tuple[str, ...]], limit: int = 4) -> str:
    shown = ["+".join(r) if r else "(none)" for r in roles[:limit]]
    more = f" and {len(roles) - limit} more" if len(roles) > limit else ""
    return _cell(", ".join(shown) + more)


def _scope_text(finding: Finding) -> str:
    actions = ", ".join(f"`{_code(a)}`" for a in finding.actions)
    models = ", ".join(f"`{_code(m)}`" for m in finding.models)
    return f"{actions} · {models}" if models else actions


def _when(example: Example) -> str:
    if example.hour_utc is None:
        return "—"
    day = (
        ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[example.weekday - 1]
        if example.weekday is not None and 1 <= example.weekday <= 7
        else "?"
    )
    return f"{example.hour_utc:02d}h {day}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _code(text: str) -> str:
    """Text safe inside a `code span` in a table cell."""
    return text.replace("`", "'").replace("|", "\\|").replace("\n", " ")
