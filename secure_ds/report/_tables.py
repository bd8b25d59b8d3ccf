"""The tables the HTML and PDF reports both show, as headers and rows, so the two
renderings cannot drift apart in what they say (each only formats them)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "TALLY_LIMIT",
    "Table",
    "exceptions_table",
    "rotations_table",
    "signing_keys_table",
    "summary_table",
    "tally_more",
    "tally_table",
    "verification_table",
]

Table = tuple[list[str], list[list[Any]]]

TALLY_LIMIT = 50  # rows of a by-principal/team/model table; the JSON form has them all


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


def tally_table(rows: list[dict[str, Any]]) -> Table:
    """Calls, outcomes, cost and tokens per principal, team or model: the first
    ``TALLY_LIMIT`` rows (the model sorts them, busiest first)."""
    headers = ["name", "calls", "permits", "denials", "failures", "USD", "tokens in", "tokens out"]
    body = [
        [
            r["name"],
            r["calls"],
            r["permits"],
            r["denials"],
            r["failures"],
            r["usd"],
            r["tokens_input"],
            r["tokens_output"],
        ]
        for r in rows[:TALLY_LIMIT]
    ]
    return headers, body


def tally_more(rows: list[dict[str, Any]]) -> str | None:
    """What a tally table leaves out, said under it (None when it shows every row)."""
    more = len(rows) - TALLY_LIMIT
    return f"{more} more in the JSON form." if more > 0 else None


def verification_table(model: dict[str, Any]) -> Table:
    """What verifying the log found (its root is printed beside: too wide for a cell)."""
    v = model["integrity"]["verify"]
    headers = ["ok", "records", "checkpoints", "first bad index", "reason", "keys pinned"]
    row = [
        v["ok"],
        v["records"],
        v["checkpoints"],
        v["first_bad_index"],
        v["reason"],
        v["keys_pinned"],
    ]
    return headers, [row]


def signing_keys_table(model: dict[str, Any]) -> Table:
    """The keys that signed the log, with when each was first and last seen."""
    rows = [
        [k["key"], k["alg"], k["first_seen"], k.get("last_seen")]
        for k in model["integrity"]["keys"]
    ]
    return ["key id", "alg", "first seen", "last seen"], rows


def rotations_table(model: dict[str, Any]) -> Table:
    """The key rotations (new epochs) in the log."""
    rows = [
        [r["time"], r["tree_size"], r["new_key"], r["previous_key"]]
        for r in model["integrity"]["rotations"]
    ]
    return ["time", "tree size", "new key", "previous key"], rows
