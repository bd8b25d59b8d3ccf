"""``secure-ds cost report [AUDIT ...]``: spend from the audit log, as a table and charts.

Thin on purpose: the reading and summing is :mod:`secure_ds.cost._report`; this module
parses arguments and draws. The charts are plain rich text (block characters scaled
to the console width), so they work over ssh, in CI logs and in the ``--svg`` export
alike, with no plotting dependency.

Exit status: 0 reported (an empty date range included); 2 the report could not be
made (a missing or empty log, a malformed date).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ..cost._report import GROUPINGS, CostReport, Grouping, Tally, build_report, parse_bound
from ..errors import SecureDSError

__all__ = ["register", "run"]

# below this a log reads in under a second (about 25 MB/s): a bar would only flicker
_PROGRESS_MIN_BYTES = 16 << 20
# past this many days one bar per day no longer fits a screen: bars become weeks
_MAX_DAY_BARS = 62
_EIGHTHS = " ▏▎▍▌▋▊▉"  # partial blocks: a bar's end is drawn to 1/8 of a character
_PRICING_HINT = "SECURE_DS_PRICING (default: secure_ds/cost/pricing.toml)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cost report`` to the ``secure-ds`` command."""
    cost = subparsers.add_parser("cost", help="cost control: what the calls in the audit log cost")
    actions = cost.add_subparsers(dest="cost_command", required=True)
    report = actions.add_parser(
        "report",
        help="spend by principal, team, model or day, with charts",
        description="Sum the cost recorded in audit logs (the figure computed when each "
        "call was made; nothing is re-priced) by principal, team, model or day, and "
        "chart it.",
        epilog="A team is the caller's `team` attribute, else its `department`. Dates "
        "are UTC. Exit status: 0 reported, 2 error (missing or empty log, bad date).",
    )
    report.add_argument(
        "audit",
        nargs="*",
        type=Path,
        metavar="AUDIT",
        help="audit log(s) to read (default: $SECURE_DS_AUDIT_PATH, else the client's "
        "default audit path)",
    )
    report.add_argument(
        "--by", choices=GROUPINGS, default="principal", help="how to group (default principal)"
    )
    report.add_argument(
        "--from",
        dest="since",
        metavar="DATE",
        help="first day (YYYY-MM-DD, UTC, inclusive) or RFC 3339 time",
    )
    report.add_argument(
        "--to",
        dest="until",
        metavar="DATE",
        help="last day (YYYY-MM-DD, UTC, inclusive) or RFC 3339 time",
    )
    report.add_argument(
        "--top",
        type=_positive,
        metavar="N",
        help="show the N biggest groups and lump the rest into one row",
    )
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument(
        "--svg", type=Path, metavar="FILE", help="also save the rendered report as an SVG image"
    )
    cost.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``cost report``; returns the exit status. Errors are raised as
    :class:`SecureDSError` for ``main`` to print."""
    since = parse_bound(args.since, "--from", end=False)
    until = parse_bound(args.until, "--to", end=True)
    paths: list[Path] = list(args.audit) or [_default_audit_path()]
    report = _read(paths, args.by, since, until)
    if report.records_read == 0:
        raise SecureDSError(
            f"No audit records in {', '.join(report.files)}{_skipped(report)}.",
            hint="Pass the log the client writes (SECURE_DS_AUDIT_PATH), or make calls "
            "through the secure client first.",
        )
    if args.json:
        sys.stdout.write(json.dumps(report.to_json(args.top), indent=2) + "\n")
    if args.svg is not None or not args.json:
        # with --json, stdout is the JSON: the rendering goes only to the SVG
        console = Console(
            record=args.svg is not None,
            file=io.StringIO() if args.json else None,
            highlight=False,
        )
        _render(console, report, args.top)
        if args.svg is not None:
            try:
                console.save_svg(str(args.svg), title="secure-ds cost report")
            except OSError as exc:
                raise SecureDSError(
                    f"Cannot write {args.svg} ({exc.strerror or exc}).",
                    hint="Pass a writable --svg path.",
                ) from None
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def _default_audit_path() -> Path:
    from ..config import ENV_VARS, _default_audit_path

    configured = os.environ.get(ENV_VARS["audit_path"])
    return Path(configured).expanduser() if configured else _default_audit_path()


def _read(
    paths: list[Path], by: Grouping, since: datetime | None, until: datetime | None
) -> CostReport:
    def build(progress: Callable[[int], None] | None = None) -> CostReport:
        return build_report(paths, by=by, since=since, until=until, progress=progress)

    size = sum(p.stat().st_size for p in paths if p.is_file())
    if size < _PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        return build()
    # on stderr, and transient: stdout stays the report alone, fit for a pipe
    with Progress(
        TextColumn("reading audit log"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("read", total=size)
        return build(lambda n: bar.advance(task, n))


def _skipped(report: CostReport) -> str:
    if not report.skipped:
        return ""
    first = "; ".join(report.examples)
    return (
        f" ({report.malformed} malformed line(s) and {report.other_schema} record(s) of "
        f"other schemas skipped; first: {first})"
    )


# -------------------------------------------------------------------------- render


def _render(console: Console, report: CostReport, top: int | None) -> None:
    total = report.total
    console.print(Text(_heading(report), style="bold"))
    if total.calls == 0:
        console.print(f"No calls in this range ({report.outside_range} record(s) outside it).")
    else:
        shown, rest = report.rows(top)
        console.print(_table(console, report, shown, rest))
        console.print(
            _bar_chart(
                f"USD by {report.by}",
                [(key, t.usd) for key, t in shown]
                + (
                    [(f"({len(report.groups) - len(shown)} others)", rest.usd)]
                    if rest is not None
                    else []
                ),
                console.width,
                total.usd,
            )
        )
        console.print(_time_chart(report, console.width))
    for note in _footnotes(report):
        console.print(Text(note, style="dim"))


def _heading(report: CostReport) -> str:
    days = sorted(report.days)
    first = _bound(report.since, time.min) or (days[0].isoformat() if days else "-")
    last = _bound(report.until, time.max) or (days[-1].isoformat() if days else "-")
    parts = [
        f"Spend by {report.by}",
        f"{report.total.calls:,} call(s)",
        _usd(report.total.usd),
        f"{first} .. {last} UTC",
    ]
    if report.pricing_tables:
        parts.append("pricing " + ", ".join(report.pricing_tables))
    return " · ".join(parts)


def _bound(when: datetime | None, whole_day: time) -> str | None:
    """A --from/--to as the user likely wrote it: a day when it covers the whole day."""
    if when is None:
        return None
    if when.time() == whole_day:
        return when.date().isoformat()
    return when.isoformat().replace("+00:00", "Z")


def _table(
    console: Console, report: CostReport, shown: list[tuple[str, Tally]], rest: Tally | None
) -> Table:
    total = report.total
    share = (lambda t: f"{report.share(t):.1%}") if total.usd else (lambda t: "-")
    columns: list[tuple[str, Callable[[Tally], str]]] = [
        ("calls", lambda t: f"{t.calls:,}"),
        ("deny/fail", lambda t: f"{t.denied:,}/{t.failed:,}"),
        ("input", lambda t: _tokens(t.input_tokens)),
        ("cached", _cached),
        ("output", lambda t: _tokens(t.output)),
        ("USD", lambda t: _usd(t.usd, marked=t.unpriced > 0)),
        ("share", share),
    ]
    rows = list(shown)
    if rest is not None:
        rows.append((f"({len(report.groups) - len(shown)} others)", rest))
    # Too narrow for every column: drop the secondary ones, rather than fold the group
    # names or cut figures to "$0.000…", which would be worse than leaving them out.
    unbounded = console.options.update_width(1 << 16)  # to measure the natural width
    for dropped in ((), ("cached",), ("cached", "deny/fail")):
        kept = [c for c in columns if c[0] not in dropped]
        table = _build_table(report.by, total, rows, kept, rest)
        if Measurement.get(console, unbounded, table).maximum <= console.width:
            break
    note = "input, output: tokens"
    if "cached" not in dropped:
        note += "; cached: share of input billed at the cache-hit price"
    table.caption = note
    return table


def _build_table(
    by: str,
    total: Tally,
    rows: list[tuple[str, Tally]],
    columns: list[tuple[str, Callable[[Tally], str]]],
    rest: Tally | None,
) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        show_footer=True,
        footer_style="bold",
        pad_edge=False,
        caption_justify="left",
    )
    table.add_column(by, "total", overflow="fold")
    for header, cell in columns:
        table.add_column(header, cell(total), justify="right", no_wrap=True)
    for key, tally in rows:
        table.add_row(
            escape(key),
            *(cell(tally) for _, cell in columns),
            style="dim" if rest is tally else None,
        )
    return table


def _tokens(count: int) -> str:
    # 3-4 significant digits: token totals run to billions; --json has them exactly
    for scale, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if count >= 10 * scale:
            return f"{count / scale:,.1f}{suffix}"
    return f"{count:,}"


def _cached(tally: Tally) -> str:
    # the share of input billed at the cache-hit price: the lever on input cost
    inputs = tally.input_tokens
    return f"{tally.input_cache_hit / inputs:.0%}" if inputs else "-"


def _time_chart(report: CostReport, width: int) -> RenderableType:
    series = report.daily()
    if len(series) <= _MAX_DAY_BARS:
        return _bar_chart(
            "Costs over time (USD per day, UTC)",
            [(day.isoformat(), t.usd) for day, t in series],
            width,
            report.total.usd,
        )
    weeks: dict[date, Decimal] = {}
    for day, tally in series:
        monday = day - timedelta(days=day.weekday())
        weeks[monday] = weeks.get(monday, Decimal(0)) + tally.usd
    return _bar_chart(
        "Costs over time (USD per week from Monday, UTC)",
        [(f"wk {monday.isoformat()}", usd) for monday, usd in weeks.items()],
        width,
        report.total.usd,
    )


def _bar_chart(
    title: str, items: Sequence[tuple[str, Decimal]], width: int, total: Decimal
) -> RenderableType:
    """One row per item: label, a bar as long as its share of the largest, the figure."""
    peak = max((usd for _, usd in items), default=Decimal(0))
    values = [f"{_usd(usd)} {float(usd / total):>6.1%}" if total else _usd(usd) for _, usd in items]
    label_width = min(max((len(label) for label, _ in items), default=1), max(width // 3, 8))
    value_width = max((len(v) for v in values), default=1)
    bar_width = max(width - label_width - value_width - 2, 10)  # 2: the grid's padding
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=label_width, no_wrap=True, overflow="ellipsis")
    grid.add_column(width=bar_width, no_wrap=True)
    grid.add_column(justify="right", no_wrap=True)
    for (label, usd), value in zip(items, values, strict=True):
        grid.add_row(Text(label), Text(_bar(usd, peak, bar_width), style="cyan"), value)
    heading = Text(title, style="bold")
    if not peak:
        return Group(heading, Text("nothing was spent", style="dim"))
    return Group(Text(""), heading, grid)


def _bar(value: Decimal, peak: Decimal, width: int) -> str:
    if not peak or value <= 0:
        return ""
    eighths = int(value / peak * width * 8)
    full, part = divmod(eighths, 8)
    # a thin sliver rather than nothing: any spend at all should be visible
    return "█" * full + (_EIGHTHS[part] if part else "") or _EIGHTHS[1]


def _usd(usd: Decimal, *, marked: bool = False) -> str:
    """Dollars with at least three significant digits: sandbox-sized calls cost
    millionths of a dollar, and ``$0.00`` would hide them."""
    mark = " *" if marked else ""
    if not usd:
        return "$0" + mark
    places = 2 if usd >= 1 else min(max(4, 2 - usd.adjusted()), 12)
    return f"${usd:,.{places}f}{mark}"


def _footnotes(report: CostReport) -> list[str]:
    notes: list[str] = []
    if report.unpriced_models:
        models = ", ".join(f"{m} ({n} call(s))" for m, n in sorted(report.unpriced_models.items()))
        notes.append(
            f"* Not in USD: calls that reported usage for a model with no price in the "
            f"pricing table: {models}. Add the model to the table in {_PRICING_HINT}."
        )
    if report.no_cost_field:
        notes.append(
            f"{report.no_cost_field} call(s) with usage were recorded before audit records "
            "carried a cost; their tokens are counted, their cost is not."
        )
    if report.skipped:
        notes.append(
            f"Skipped {report.malformed} malformed line(s) and {report.other_schema} "
            f"record(s) of other schemas; first: {'; '.join(report.examples)}."
        )
    return notes
