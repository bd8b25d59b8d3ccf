"""``secure-ds dlp scan FILE|-``: check a text by hand before sending it anywhere.

Thin on purpose: read the bytes, decode them, call :mod:`secure_ds.dlp`, print. The
table shows each finding with a *masked* preview (``jo***@***.com``), never the
value itself, so the command is safe to run where its output is logged.

Exit status: 0 when nothing was found, 1 when something was, 2 on an error (an
unreadable file, a bad ``--config``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import SecureDSError

__all__ = ["mask", "register", "run"]

_EPILOG = (
    "Input is read as bytes and decoded as UTF-8 with errors='replace': invalid "
    "bytes become U+FFFD, and offsets (--json start/end) are character offsets into "
    "that decoded text. Exit status: 0 nothing found, 1 findings, 2 error."
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dlp scan`` to the ``secure-ds`` command."""
    dlp = subparsers.add_parser("dlp", help="data-loss prevention: find sensitive data in text")
    actions = dlp.add_subparsers(dest="dlp_command", required=True)
    scan = actions.add_parser(
        "scan",
        help="scan a file (or - for stdin) and list what was found",
        description="Scan a text for sensitive data (keys, tokens, cards, IBANs, "
        "personal data) with the same detectors the client uses.",
        epilog=_EPILOG,
    )
    scan.add_argument("file", help="file to scan, or - to read standard input")
    scan.add_argument(
        "--json",
        action="store_true",
        help='print {"findings": [{"kind", "start", "end", "confidence"}...], '
        '"classification"} instead of a table',
    )
    scan.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="TOML file with user-defined [[pattern]] and [[dictionary]] rules",
    )
    scan.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``dlp scan``; returns the exit status (0 clean, 1 findings, 2 error)."""
    from ..dlp import Scanner, default_scanner

    try:
        data = _read(args.file)
        scanner = Scanner.from_config(args.config) if args.config else default_scanner()
    except SecureDSError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 2
    text = data.decode("utf-8", errors="replace")
    result = scanner.scan(text)
    if args.json:
        report: dict[str, Any] = {
            "findings": [
                {"kind": f.kind, "start": f.start, "end": f.end, "confidence": f.confidence}
                for f in result.findings
            ],
            "classification": result.classification,
        }
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        _print_table(text, result.findings, result.classification)
    return 1 if result.findings else 0


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise SecureDSError(
            f"Cannot read {name} ({exc.strerror or exc}).",
            hint="Pass a readable file, or - to read standard input.",
        ) from None


def _print_table(text: str, findings: Any, classification: str) -> None:
    console = Console()
    if not findings:
        console.print(f"No sensitive data found (classification: [bold]{classification}[/]).")
        return
    table = Table(title=f"{len(findings)} finding(s); classification: {classification}")
    for column in ("kind", "start", "end", "confidence", "preview"):
        table.add_column(column, overflow="fold")
    for f in findings:
        table.add_row(
            escape(f.kind),
            str(f.start),
            str(f.end),
            f"{f.confidence:.2f}",
            escape(mask(f.kind, text[f.start : f.end])),
        )
    console.print(table)


def mask(kind: str, value: str) -> str:
    """A preview that identifies a finding to its owner without disclosing it.

    E-mail: ``jo***@***.com``; numbers (cards, phones, IBANs, SSNs): the last two
    characters only; keys and secrets: at most the first four characters (a vendor
    prefix such as ``sk-``/``AKIA``), never any of the random part's end.
    """
    value = " ".join(value.split())  # private keys span lines
    if kind == "email" and "@" in value:
        local, _, domain = value.rpartition("@")
        tld = domain.rsplit(".", 1)[-1] if "." in domain else ""
        return f"{local[:2]}***@***.{tld}" if tld else f"{local[:2]}***@***"
    if kind in ("credit_card", "phone", "iban", "us_ssn"):
        return "***" + value[-2:] if len(value) > 6 else "***"
    if kind == "ip_address":
        return value.split(".")[0] + ".***" if "." in value else value.split(":")[0] + ":***"
    if kind == "private_key":
        return "-----BEGIN ***"
    keep = min(4, len(value) // 5)
    return value[:keep] + "***"
