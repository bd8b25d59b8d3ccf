"""``secure-ds doctor``: run :func:`secure_ds.doctor.diagnose` and print what it found.

Exit status: 0 when no check failed (warnings allowed), 1 when one did.
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..doctor import DEFAULT_DAYS, DEFAULT_SKEW, diagnose

__all__ = ["register", "run"]

_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``doctor`` to the ``secure-ds`` command."""
    doctor = subparsers.add_parser(
        "doctor",
        help="check the configuration (files, certificate, key, endpoint, token, clock)",
        description="Check the configuration in the environment end to end and print each "
        "check with pass/warn/fail and how to fix it. Exit status 1 when a check fails.",
    )
    doctor.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        help=f"fail when the client certificate expires within this many days "
        f"(default {DEFAULT_DAYS})",
    )
    doctor.add_argument(
        "--skew",
        type=float,
        default=DEFAULT_SKEW,
        help=f"warn when the clock differs from the server's by more seconds than this "
        f"(default {DEFAULT_SKEW:g})",
    )
    doctor.add_argument(
        "--timeout", type=float, default=5.0, help="seconds for the endpoint check (default 5)"
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    report = diagnose(days=args.days, skew_threshold=args.skew, timeout=args.timeout)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
        return 0 if report.ok else 1
    table = Table(title="secure-ds doctor")
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        style = _STYLE[check.status]
        table.add_row(
            check.name,
            f"[{style}]{check.status}[/]",
            escape(check.detail),
            escape(check.fix),
        )
    console = Console()
    console.print(table)
    console.print("[green]No check failed.[/]" if report.ok else "[bold red]Some checks failed.[/]")
    return 0 if report.ok else 1
