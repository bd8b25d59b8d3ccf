"""The tables the HTML and PDF reports both show, as headers and rows, so the two
renderings cannot drift apart in what they say (each only formats them)."""

from __future__ import annotations

from typing import Any

__all__ = ["Table", "exceptions_table", "summary_table"]

Table = tuple[list[str], list[list[Any]]]


def summary_table(model: dict[str, Any]) -> Table:
    """The first page's totals: calls by outcome, cost, and control status counts."""
    totals, summary = model["totals"], model["summary"]
    headers = [
        "calls",
        "permits",
        "denials",
        "failures",
        "USD",
        "controls met",
        "not met",
        "cannot attest",
    ]
    row = [
        totals["calls"],
        totals["permits"],
        totals["denials"],
        totals["failures"],
        totals["usd"],
        summary["met"],
        summary["not_met"],
        summary["cannot_attest"],
    ]
    return headers, [row]


def exceptions_table(model: dict[str, Any]) -> Table:
    """Unsafe settings the log shows in use, with how often and where first."""
    headers = ["setting", "meaning", "calls", "first time", "first event"]
    rows = [
        [x["setting"], x["meaning"], x["count"], x["first_time"], x["first_event_id"]]
        for x in model["exceptions"]
    ]
    return headers, rows
