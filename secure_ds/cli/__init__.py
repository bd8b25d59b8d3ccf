"""The ``secure-ds`` command: parses arguments, calls the library, prints results.

It catches only :class:`~secure_ds.errors.SecureDSError` (printing its message, which
says what to do) and exits 2 for it; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import __version__
from ..errors import SecureDSError
from . import _audit, _cost, _dlp, _doctor, _fhe, _policy, _report
from . import _ship as _siem_ship

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secure-ds", description="Zero-trust security layer for the DeepSeek API."
    )
    parser.add_argument("--version", action="version", version=f"secure-ds {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run real calls against a local sandbox endpoint")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.add_argument("--audit-path", type=Path, help="audit file to append to")

    pin = sub.add_parser("pin", help="print the SPKI pin (SECURE_DS_SPKI_PIN) of a certificate")
    pin.add_argument("certificate", type=Path, help="PEM certificate file")

    _dlp.register(sub)
    _policy.register(sub)
    _cost.register(sub)
    _fhe.register(sub)
    _audit.register(sub)
    _doctor.register(sub)
    _report.register(sub)
    _siem_ship.register(sub)  # last: joins an `audit` group registered above
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if getattr(args, "siem_ship", False):
            return _siem_ship.run(args)
        if args.command == "demo":
            return _demo(args)
        if args.command == "pin":
            return _pin(args.certificate)
        if args.command == "dlp":
            return _dlp.run(args)
        if args.command == "policy":
            return _policy.run(args)
        if args.command == "cost":
            return _cost.run(args)
        if args.command == "fhe":
            return _fhe.run(args)
        if args.command == "audit":
            return _audit.run(args)
        if args.command == "doctor":
            return _doctor.run(args)
        if args.command == "report":
            return _report.run(args)
    except SecureDSError as exc:
        # escaped: a message may quote text with [brackets], which rich reads as markup
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 2
    return 1  # pragma: no cover - argparse rejects unknown commands


def _demo(args: argparse.Namespace) -> int:
    from ..demo import default_demo_audit_path, run_demo

    audit_path = args.audit_path or default_demo_audit_path()
    if args.json:
        report = run_demo(audit_path)
        print(json.dumps(report.as_json(), indent=2))
        return 0 if report.ok else 1
    console = Console()
    with console.status("Starting the sandbox and making calls..."):
        report = run_demo(audit_path)
    console.print(f"Sandbox endpoint [bold]{report.endpoint}[/] (mTLS + certificate-bound JWT)")
    table = Table(title="secure-ds demo: every call through the guard chain")
    for column in ("step", "user", "expected", "outcome", "decided by", "tries", "ms", "check"):
        table.add_column(column, overflow="fold")
    for step in report.steps:
        table.add_row(
            step.name,
            step.user,
            step.expected,
            step.outcome or "-",
            step.decided_by or "-",
            str(step.attempts),
            "-" if step.latency_ms is None else f"{step.latency_ms:.1f}",
            "[green]ok[/]" if step.ok else "[red]FAILED[/]",
        )
    console.print(table)
    for step in report.steps:
        style = "dim" if step.ok else "red"
        console.print(f"[{style}]{step.name}: {escape(step.observed)}[/]", highlight=False)
    console.print(f"Audit log: [bold]{report.audit_path}[/] (one JSON record per call)")
    console.print(
        "[green]All steps behaved as expected.[/]" if report.ok else "[red]Some steps failed.[/]"
    )
    return 0 if report.ok else 1


def _pin(certificate: Path) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from ..identity import spki_pin_of

    try:
        cert = x509.load_pem_x509_certificates(certificate.read_bytes())[0]
    except (OSError, ValueError, IndexError) as exc:
        raise SecureDSError(
            f"Cannot read a PEM certificate from {certificate} ({exc}).",
            hint="Pass the server's certificate in PEM form.",
        ) from None
    print(spki_pin_of(cert.public_bytes(serialization.Encoding.DER)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
