"""``secure-ds policy review OLD NEW``: what a policy change does, as a pull-request comment.

Thin on purpose: the work is in :mod:`secure_ds.policy._review`; this module parses
arguments, shows progress and prints. The Markdown (or ``--json``) report goes to
standard output, and with ``--out`` to a file as well; progress and the one-line
verdict go to standard error, so ``> comment.md`` captures only the report.

Exit status: 0 NEW may be merged as far as the review can tell; 1 NEW grants new
access (a deny that becomes a permit, or a permit whose obligations ask less) and
``--allow-new-access`` was not given, or NEW fails its decision tests (which
``--allow-new-access`` does not excuse), or NEW does not load; 2 the review could not
run (a side that is neither a folder nor a git revision, an OLD that does not load,
an unreadable audit log).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from ..errors import SecureDSError
from ..policy._review import DEFAULT_MAX_ROWS, SWEEP_LIMIT, ReviewReport, review
from ..policy._review._common import ProgressFn

__all__ = ["add_review_parser", "run_review"]

_EPILOG = (
    "OLD and NEW are policy folders or git revisions of one: REV or REV:path, the path "
    "from the repository root (default: policies), e.g. `review origin/main HEAD` or "
    "`review HEAD~1:policies ./policies`. Exit status: 0 no new access; 1 NEW grants "
    "new access (without --allow-new-access), fails its decision tests or does not load; "
    "2 the review could not run."
)


def add_review_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``review`` to the ``secure-ds policy`` subcommands."""
    review_parser = subparsers.add_parser(
        "review",
        help="replay recorded and generated requests against OLD and NEW policies and "
        "report what changes",
        description="Replay every recorded call of the audit logs given, and a sweep over "
        "the values the policies compare attributes with, against OLD and NEW; report "
        "decisions that flip (new access first), obligation changes, policy changes and "
        "NEW's validation and decision tests, as Markdown for a pull request.",
        epilog=_EPILOG,
    )
    review_parser.add_argument("old", metavar="OLD", help="the policies in force")
    review_parser.add_argument("new", metavar="NEW", help="the proposed policies")
    review_parser.add_argument(
        "--audit",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="an audit log (JSON lines, SECURE_DS_AUDIT_PATH) whose calls are replayed; "
        "repeat for several (default: none, the sweep only)",
    )
    review_parser.add_argument(
        "--no-sweep", action="store_true", help="replay the audit logs only, no generated sweep"
    )
    review_parser.add_argument(
        "--sweep-limit",
        type=int,
        default=SWEEP_LIMIT,
        metavar="N",
        help=f"sweep at most N combinations, a fixed-seed sample beyond (default {SWEEP_LIMIT})",
    )
    review_parser.add_argument(
        "--json", action="store_true", help="print the report as JSON (secure-ds.policy-review/1)"
    )
    review_parser.add_argument(
        "--allow-new-access",
        action="store_true",
        help="exit 0 even when NEW grants new access (once a reviewer has accepted it)",
    )
    review_parser.add_argument(
        "--max-rows",
        type=int,
        default=DEFAULT_MAX_ROWS,
        metavar="N",
        help=f"rows per Markdown table; the rest are counted (default {DEFAULT_MAX_ROWS})",
    )
    review_parser.add_argument(
        "--out", type=Path, metavar="FILE", help="also write the report (Markdown or JSON) here"
    )
    return review_parser


def run_review(args: argparse.Namespace) -> int:
    """Run ``policy review``; returns the exit status (0, 1 or 2, see the module)."""
    errors = Console(stderr=True)
    try:
        for name in ("max_rows", "sweep_limit"):
            if getattr(args, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise SecureDSError(
                    f"{flag} must be at least 1 (got {getattr(args, name)}).",
                    hint=f"Pass {flag} 1 or more"
                    + (", or --no-sweep to skip the sweep." if name == "sweep_limit" else "."),
                )
        with _progress(errors) as progress:
            report = review(
                args.old,
                args.new,
                audit=args.audit,
                sweep=not args.no_sweep,
                sweep_limit=args.sweep_limit,
                max_rows=args.max_rows,
                progress=progress,
            )
        text = (
            json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n"
            if args.json
            else report.to_markdown()
        )
        if args.out is not None:
            _write(args.out, text)
    except SecureDSError as exc:
        errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 2
    sys.stdout.write(text)
    sys.stdout.flush()
    status = report.exit_code(allow_new_access=args.allow_new_access)
    errors.print(_verdict(report, status, args.allow_new_access), highlight=False)
    return status


def _verdict(report: ReviewReport, status: int, allowed: bool) -> str:
    if not report.new_loaded:
        return "[bold red]NEW does not load[/]: fix it (see the report) before it can be merged."
    said: list[str] = []
    if report.tests_fail:
        said.append(
            "[bold red]NEW fails its decision tests[/] (see the report): fix the policies or "
            "the expectations; --allow-new-access does not excuse failing tests."
        )
    if report.grants_new_access:
        what = (
            f"{len(report.new_access)} deny→permit change(s), "
            f"{len(report.loosened_obligations)} loosened obligation set(s)"
        )
        if allowed:
            said.append(
                f"[yellow]NEW grants new access[/] ({what}); allowed by --allow-new-access."
            )
        else:
            said.append(
                f"[bold red]NEW grants new access[/] ({what}). Have it reviewed, then re-run "
                "with --allow-new-access."
            )
    elif status == 0:
        said.append("[green]NEW grants no new access.[/]")
    return "\n".join(said)


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SecureDSError(
            f"Cannot write the report to {path} ({exc.strerror}).",
            hint="Pass an --out path in a writable folder.",
        ) from None


@contextmanager
def _progress(console: Console) -> Iterator[ProgressFn | None]:
    """A progress bar on standard error when it is a terminal (so CI logs and tests
    stay clean), else no progress reporting at all."""
    if not sys.stderr.isatty():
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def update(phase: str, done: int, total: int) -> None:
        task = tasks.get(phase)
        if task is None:
            task = tasks[phase] = bar.add_task(phase, total=total)
        bar.update(task, completed=done, total=total)

    with bar:
        yield update
