"""The entry points: :func:`review` (two sides by name: resolve and load them,
replay, diff, run NEW's decision tests) and :func:`review_bundles` (two loaded
bundles: the replay and diff only)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from ...errors import SecureDSError
from .._bundle import PolicyBundle, PolicyError, load_bundle
from ._common import ProgressFn
from ._decision_tests import _run_tests
from ._diff import _findings, policy_changes
from ._replay import _Replay, _Side
from ._report import DEFAULT_MAX_ROWS, ReviewReport
from ._requests import SWEEP_LIMIT, ReplayStats, _audit_requests, _sweep
from ._sides import _load_problem, _resolve, _summary


def review(
    old: str,
    new: str,
    *,
    audit: Sequence[Path | str] = (),
    sweep: bool = True,
    sweep_limit: int = SWEEP_LIMIT,
    max_rows: int = DEFAULT_MAX_ROWS,
    cwd: Path | None = None,
    run_tests: bool = True,
    progress: ProgressFn | None = None,
) -> ReviewReport:
    """Review the change from ``old`` to ``new`` (folders or git revisions).

    Raises :class:`SecureDSError` when a side cannot be found, OLD does not load (a
    review needs a working baseline), or an audit log cannot be read. A NEW that
    does not load is a finding: the report says so and :meth:`ReviewReport.exit_code`
    is 1.
    """
    if max_rows < 1:
        raise SecureDSError(
            f"max_rows must be at least 1 (got {max_rows}).", hint="Pass --max-rows 1 or more."
        )
    started = time.perf_counter()
    here = cwd or Path.cwd()
    with ExitStack() as stack:
        old_kind, old_where, old_dir = _resolve(old, stack, here)
        new_kind, new_where, new_dir = _resolve(new, stack, here)
        try:
            old_bundle = load_bundle(old_dir)
        except PolicyError as exc:
            raise SecureDSError(
                f"OLD ({old}) does not load, so there is nothing to compare with: "
                + _load_problem(exc),
                hint="Review against a revision whose policies load (an earlier commit).",
            ) from None
        old_summary = _summary(old, old_kind, old_where, old_bundle, None)
        try:
            new_bundle = load_bundle(new_dir)
        except PolicyError as exc:
            stats = ReplayStats(audit_files=[str(p) for p in audit])
            stats.seconds = time.perf_counter() - started
            return ReviewReport(
                old=old_summary,
                new=_summary(new, new_kind, new_where, None, _load_problem(exc)),
                replay=stats,
                max_rows=max_rows,
            )
        report = _review_bundles(
            old_bundle,
            new_bundle,
            audit=audit,
            sweep=sweep,
            sweep_limit=sweep_limit,
            progress=progress,
        )
        report.old = old_summary
        report.new = _summary(new, new_kind, new_where, new_bundle, None)
        report.max_rows = max_rows
        if run_tests:
            report.tests = _run_tests(new_bundle)  # the test files live in the temp folder
        report.replay.seconds = time.perf_counter() - started
        return report


def review_bundles(
    old: PolicyBundle,
    new: PolicyBundle,
    *,
    audit: Sequence[Path | str] = (),
    sweep: bool = True,
    sweep_limit: int = SWEEP_LIMIT,
    max_rows: int = DEFAULT_MAX_ROWS,
    progress: ProgressFn | None = None,
) -> ReviewReport:
    """Review two loaded bundles (no git, no decision tests): the replay and diff."""
    started = time.perf_counter()
    report = _review_bundles(
        old, new, audit=audit, sweep=sweep, sweep_limit=sweep_limit, progress=progress
    )
    report.max_rows = max_rows
    report.replay.seconds = time.perf_counter() - started
    return report


def _review_bundles(
    old_bundle: PolicyBundle,
    new_bundle: PolicyBundle,
    *,
    audit: Sequence[Path | str],
    sweep: bool,
    sweep_limit: int,
    progress: ProgressFn | None,
) -> ReviewReport:
    replay = _Replay(_Side(old_bundle), _Side(new_bundle))
    stats = ReplayStats(audit_files=[str(p) for p in audit])
    for path in audit:
        label = Path(path).name
        for request, line in _audit_requests(Path(path), stats, progress):
            replay.add(request, label, line)
    if sweep:
        for request in _sweep(replay, sweep_limit, stats):
            stats.sweep_requests += 1
            replay.add(request, "sweep")
    stats.classes = len(replay.cases)
    replay.evaluate(progress)
    findings = _findings(replay.cases.values())
    return ReviewReport(
        old=_summary("OLD", "folder", str(old_bundle.directory), old_bundle, None),
        new=_summary("NEW", "folder", str(new_bundle.directory), new_bundle, None),
        replay=stats,
        new_access=[f for f in findings if f.kind == "new-access"],
        restrictions=[f for f in findings if f.kind == "restriction"],
        obligation_changes=[f for f in findings if f.kind == "obligations"],
        reattributed=[f for f in findings if f.kind == "reattributed"],
        policy_changes=policy_changes(old_bundle, new_bundle),
    )
