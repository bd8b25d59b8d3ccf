"""The report as one self-contained HTML page: inline CSS, charts as inline SVG.

No script, no external font, image or stylesheet: the page renders the same offline
and years later, and a browser's content policy has nothing to fetch. Every value from
the log is HTML-escaped (a principal name comes from a token and could hold markup).
"""

from __future__ import annotations

from html import escape
from typing import Any

from ._tables import (
    exceptions_table,
    rotations_table,
    signing_keys_table,
    summary_table,
    tally_more,
    tally_table,
    verification_table,
)

__all__ = ["bar_chart_svg", "render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:68rem;
color:#1d2430;line-height:1.4;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{border-bottom:2px solid #dde3ea;padding-bottom:.2rem;
margin-top:2rem}table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #dde3ea;padding:.3rem .5rem;text-align:left;vertical-align:top;
overflow-wrap:anywhere}
th{background:#f3f6f9;overflow-wrap:normal}td.n{text-align:right;font-variant-numeric:tabular-nums}
.alert{background:#fdecea;border:2px solid #c62828;color:#7f1010;padding:.8rem 1rem;
font-weight:600;margin:1rem 0}.note{background:#fff8e1;border:1px solid #f0c36d;padding:.6rem 1rem;
margin:1rem 0}.ok{background:#e8f5e9;border:1px solid #81c784;padding:.6rem 1rem;margin:1rem 0}
.met{color:#1b5e20;font-weight:600}.not_met{color:#b71c1c;font-weight:600}
.cannot_attest{color:#8d6e00;font-weight:600}.charts{display:flex;flex-wrap:wrap;gap:1rem}
.charts figure{margin:0}.charts figcaption{font-size:.85rem;color:#52606d}
code{font-size:.85em;word-break:break-all}.id{white-space:nowrap;overflow-wrap:normal}
"""
_STATUS = {"met": "met", "not_met": "not met", "cannot_attest": "cannot attest"}


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def bar_chart_svg(
    items: list[tuple[str, float]], *, width: int = 520, height: int = 200, color: str = "#3f6fb5"
) -> str:
    """A vertical bar chart of ``(label, value)`` as an inline SVG element."""
    left, bottom, top = 48, 34, 12
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = max((v for _, v in items), default=0.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-size="10" font-family="sans-serif">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#888"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{_fmt(peak)}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    if not items:
        parts.append(f'<text x="{left + 10}" y="{top + plot_h / 2}">no data</text>')
    n = max(len(items), 1)
    slot = plot_w / n
    every = max(1, n // 12)  # at most ~12 labels, so they never overlap
    for i, (label, value) in enumerate(items):
        h = plot_h * value / peak
        x = left + i * slot
        parts.append(
            f'<rect x="{x + slot * 0.1:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{max(slot * 0.8, 0.5):.1f}" height="{h:.1f}" fill="{color}">'
            f"<title>{_e(label)}: {_fmt(value)}</title></rect>"
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{top + plot_h + 14}" '
                f'text-anchor="middle">{_e(_short(label))}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _short(label: str) -> str:
    return label[5:] if len(label) == 10 and label[4] == "-" else label[:14]


def _fmt(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.4f}" if value < 1 else f"{value:,.2f}"


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:  # type: ignore[assignment]
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    if not rows:
        body = f'<tr><td colspan="{len(headers)}">none</td></tr>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tally_rows(rows: list[dict[str, Any]]) -> str:
    table = _table(*tally_table(rows), numeric={1, 2, 3, 4, 5, 6, 7})
    more = tally_more(rows)
    return table + (f"<p>{_e(more)}</p>" if more else "")


def render_html(model: dict[str, Any]) -> str:
    """The whole page for a report model (:func:`secure_ds.report.build_report`)."""
    period, totals, att = model["period"], model["totals"], model["attestation"]
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Compliance report {_e(period['from'])} to {_e(period['to'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>LLM usage compliance report: {_e(period['from'])} to {_e(period['to'])}</h1>",
        f"<p>Generated {_e(model['generated_at'])} by {_e(model['generator'])} from "
        f"<code>{_e(model['log']['path'])}</code>; schema {_e(model['schema_version'])}.</p>",
    ]
    # first thing on the page: whether the log is intact, and what cannot be attested
    if not att["log_intact"]:
        out.append(f'<div class="alert" id="tampered">{_e(att["statements"][0])}</div>')
        rest = att["statements"][1:]
    else:
        v = model["integrity"]["verify"]
        out.append(
            f'<div class="ok">Audit log verified: {_e(v["records"])} records, '
            f"{_e(v['checkpoints'])} checkpoints, root <code>{_e(v['root'])}</code>.</div>"
        )
        rest = att["statements"]
    if rest:
        out.append('<div class="note"><strong>This report cannot attest:</strong><ul>')
        out.extend(f"<li>{_e(s)}</li>" for s in rest)
        out.append("</ul></div>")

    out.append("<h2>Summary</h2>")
    out.append(_table(*summary_table(model), numeric=set(range(8))))
    out.append("<h2>Controls</h2>")
    for fw in model["controls"]:
        out.append(f"<h3>{_e(fw['name'])} ({_e(fw['version'])})</h3>")
        rows = []
        for c in fw["controls"]:
            evidence = "<br>".join(
                f'<span class="{_e(ev["status"])}">{_e(_STATUS[ev["status"]])}</span> '
                f"<code>{_e(ev['query'])}</code>: {_e(ev['statement'])}"
                for ev in c["evidence"]
            )
            rows.append(
                f'<tr><td class="id">{_e(c["id"])}</td><td>{_e(c["title"])}</td>'
                f'<td class="{_e(c["status"])}">{_e(_STATUS[c["status"]])}</td>'
                f"<td>{evidence}</td></tr>"
            )
        out.append(
            "<table><thead><tr><th>control</th><th>title</th><th>status</th>"
            f"<th>evidence</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )

    day = model["timeline"]["day"]
    denials = list(totals["denials_by"].items())[:20]
    findings = list(model["dlp"]["findings_by_kind"].items())[:20]
    out.append('<h2>Activity</h2><div class="charts">')
    for caption, items, color in (
        ("Calls per day", [(d["day"], float(d["calls"])) for d in day], "#3f6fb5"),
        ("Cost per day (USD)", [(d["day"], float(d["usd"])) for d in day], "#2e7d32"),
        ("Denials by policy", [(k, float(v)) for k, v in denials], "#c62828"),
        ("DLP findings by kind", [(k, float(v)) for k, v in findings], "#8d6e00"),
    ):
        out.append(
            f"<figure>{bar_chart_svg(items, color=color)}<figcaption>{_e(caption)}"
            "</figcaption></figure>"
        )
    out.append("</div>")
    if period["days_without_records"]:
        out.append(
            "<p>Days without records: " + _e(", ".join(period["days_without_records"])) + "</p>"
        )
    out.append("<h3>Failures by reason</h3>")
    out.append(
        _table(["reason", "count"], list(map(list, totals["failures_by_reason"].items())), {1})
    )
    out.append("<h3>Denials by what denied them</h3>")
    out.append(_table(["denied by", "count"], list(map(list, totals["denials_by"].items())), {1}))
    out.append("<h2>By principal</h2>" + _tally_rows(model["by_principal"]))
    out.append("<h2>By team</h2>" + _tally_rows(model["by_team"]))
    out.append("<h2>By model</h2>" + _tally_rows(model["by_model"]))
    cost = model["cost"]
    out.append("<h2>Cost and tokens</h2>")
    out.append(
        _table(
            [
                "USD",
                "priced calls",
                "input (cache hit)",
                "input (cache miss)",
                "output",
                "reasoning",
            ],
            [[cost["usd"], cost["priced_calls"], *cost["tokens"].values()]],
            set(range(6)),
        )
    )
    out.append("<h2>Data loss prevention</h2>")
    out.append(_table(["finding kind", "count"], list(map(list, findings)), {1}))
    out.append(
        _table(
            ["classification", "calls"],
            list(map(list, model["dlp"]["classifications"].items())),
            {1},
        )
    )
    out.append("<h2>Policy revisions in force</h2>")
    out.append(
        _table(
            ["revision", "commit", "first seen", "last seen", "calls in period"],
            [
                [r["revision"], r["commit"], r["first_seen"], r["last_seen"], r["calls_in_period"]]
                for r in model["policy_revisions"]
            ],
            {4},
        )
    )
    out.append("<h2>Exceptions (unsafe settings used)</h2>")
    out.append(_table(*exceptions_table(model), {2}))
    integ = model["integrity"]
    out.append("<h2>Appendix: log integrity</h2>")
    out.append(_table(*verification_table(model)))
    out.append(f"<p>Root of the whole log: {_e(integ['verify']['root'])}</p>")
    out.append("<h3>Signing keys</h3>")
    out.append(_table(*signing_keys_table(model)))
    out.append("<h3>Key rotations</h3>")
    out.append(_table(*rotations_table(model)))
    out.append("<h3>Checkpoint roots (the last of each day)</h3>")
    out.append(
        _table(
            ["day", "tree size", "root", "time", "key"],
            [
                [c["day"], c["size"], c["root"], c["time"], c["key"]]
                for c in integ["checkpoints_by_day"]
            ],
            {1},
        )
    )
    out.append("</body></html>\n")
    return "\n".join(out)
