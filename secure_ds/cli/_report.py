"""``secure-ds report export``: a compliance report from the audit log.

Thin on purpose: the work is :mod:`secure_ds.report`; this module parses arguments,
shows progress (on stderr, only on a terminal and for logs large enough to need it) and
prints a one-line summary. Exit status: 0 written (whatever the controls' status, which
the report carries); 1 written, but the log did not verify (the report says so on its
first page); 2 nothing written (bad dates, unknown control mapping reference, unreadable
log, unwritable output).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from ..report import PdfSigning

__all__ = ["register", "run"]

_PROGRESS_MIN_BYTES = 16 << 20  # below this a pass takes about a second: no bar


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``report export`` to the ``secure-ds`` command."""
    from ..report import FORMATS

    report = subparsers.add_parser("report", help="compliance reports from the audit log")
    actions = report.add_subparsers(dest="report_command", required=True)
    export = actions.add_parser(
        "export",
        help="verify the audit log and write a compliance report for a period",
        description="Verify the audit log, aggregate the period's calls in one pass, "
        "evaluate the control mappings (audit/controls/*.toml plus --controls) and "
        "write the report atomically.",
        epilog="Dates are whole UTC days, both included. Exit status: 0 written; 1 "
        "written, but the log did not verify (stated on the report's first page); 2 "
        "nothing written.",
    )
    export.add_argument("--from", dest="start", required=True, help="first day, YYYY-MM-DD")
    export.add_argument("--to", dest="end", required=True, help="last day, YYYY-MM-DD")
    export.add_argument("--format", choices=FORMATS, default="json", help="output format")
    export.add_argument("--out", type=Path, required=True, help="file to write")
    export.add_argument(
        "--log",
        type=Path,
        help="audit log (default: $SECURE_DS_AUDIT_PATH, else the client's default path)",
    )
    export.add_argument(
        "--controls",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of extra control mapping files (*.toml); may be repeated",
    )
    export.add_argument(
        "--key",
        type=Path,
        action="append",
        default=[],
        metavar="PUB.pem",
        help="pin the log's signing key(s) for verification (else trust on first use)",
    )
    export.add_argument("--jobs", type=int, default=1, help="processes verifying signatures")
    export.add_argument("--sign-key", type=Path, help="pdf: the signer's private key (PEM)")
    export.add_argument("--sign-cert", type=Path, help="pdf: the signer's certificate (PEM)")
    export.add_argument(
        "--sign-chain", type=Path, action="append", default=[], help="pdf: an intermediate CA"
    )
    export.add_argument(
        "--sign-key-password-env",
        metavar="VAR",
        help="pdf: the environment variable holding the signing key's password",
    )
    export.add_argument("--tsa-url", help="pdf: RFC 3161 timestamp authority (PAdES B-T; else B-B)")
    export.add_argument(
        "--sign-pkcs11-key", metavar="LABEL", help="pdf: sign with this key pair in an HSM"
    )
    export.add_argument("--sign-pkcs11-module", type=Path, help="pdf: the PKCS#11 module (.so)")
    export.add_argument("--sign-pkcs11-token", metavar="LABEL", help="pdf: the token's label")
    export.add_argument(
        "--sign-pkcs11-pin-env", metavar="VAR", help="pdf: the variable holding the token's PIN"
    )
    export.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from ..audit import load_public_key
    from ..report import Period, export_report, load_controls, parse_date

    period = Period(parse_date(args.start, "--from"), parse_date(args.end, "--to"))
    frameworks = load_controls(args.controls)  # before any work: a typo fails at once
    keys = [load_public_key(k) for k in args.key]
    log: Path = args.log or _default_audit_path()
    signing = _signing(args)

    def export(progress: Callable[[int], None] | None) -> dict[str, Any]:
        return export_report(
            log,
            period,
            frameworks,
            args.format,
            args.out,
            keys=keys,
            jobs=args.jobs,
            progress=progress,
            signing=signing,
        )

    model = _with_progress(log, export)
    summary = {
        "out": str(args.out),
        "format": args.format,
        "log_intact": model["attestation"]["log_intact"],
        "calls": model["totals"]["calls"],
        **model["summary"],
        "cannot_attest_statements": model["attestation"]["statements"],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        console = Console()
        s = model["summary"]
        console.print(
            f"Wrote [bold]{escape(str(args.out))}[/] ({args.format}): "
            f"{model['totals']['calls']} calls; controls: {s['met']} met, "
            f"{s['not_met']} not met, {s['cannot_attest']} cannot attest.",
            highlight=False,
        )
        for statement in model["attestation"]["statements"]:
            console.print(f"[yellow]cannot attest:[/] {escape(statement)}", highlight=False)
    return 0 if model["attestation"]["log_intact"] else 1


def _signing(args: argparse.Namespace) -> PdfSigning | None:
    from ..errors import ReportError
    from ..report import PdfSigning, Pkcs11Key

    if args.format != "pdf":
        return None
    if not args.sign_cert or not (args.sign_key or args.sign_pkcs11_key):
        raise ReportError(
            "--format pdf writes a signed PDF: --sign-cert and --sign-key (or "
            "--sign-pkcs11-key) are required.",
            hint="Pass the signer's certificate and its private key (PEM) or HSM key label.",
        )
    hsm: Pkcs11Key | None = None
    if args.sign_pkcs11_key:
        missing = [
            flag
            for flag, value in (
                ("--sign-pkcs11-module", args.sign_pkcs11_module),
                ("--sign-pkcs11-token", args.sign_pkcs11_token),
                ("--sign-pkcs11-pin-env", args.sign_pkcs11_pin_env),
            )
            if not value
        ]
        pin = os.environ.get(args.sign_pkcs11_pin_env or "")
        if missing or pin is None:
            raise ReportError(
                "--sign-pkcs11-key needs "
                + (", ".join(missing) if missing else f"{args.sign_pkcs11_pin_env} to be set")
                + ".",
                hint="Name the PKCS#11 module, the token label and the variable holding the PIN.",
            )
        hsm = Pkcs11Key(args.sign_pkcs11_module, args.sign_pkcs11_token, args.sign_pkcs11_key, pin)
    password: bytes | None = None
    if args.sign_key_password_env:
        value = os.environ.get(args.sign_key_password_env)
        if value is None:
            raise ReportError(
                f"--sign-key-password-env names {args.sign_key_password_env}, which is not set.",
                hint="Export the variable with the key's password, or drop the flag.",
            )
        password = value.encode()
    return PdfSigning(
        pkcs11=hsm,
        key=args.sign_key,
        cert=args.sign_cert,
        chain=tuple(args.sign_chain),
        password=password,
        tsa_url=args.tsa_url,
    )


def _with_progress(
    log: Path, export: Callable[[Callable[[int], None] | None], dict[str, Any]]
) -> dict[str, Any]:
    try:
        size = log.stat().st_size
    except OSError:
        size = 0  # export_report names the problem
    if size < _PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        return export(None)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        # verification reports no progress: the bar pulses until the reading pass starts
        task = bar.add_task("verifying the audit log", total=None)

        def reading(done: int) -> None:
            bar.update(task, description="reading the audit log", total=size, completed=done)

        return export(reading)


def _default_audit_path() -> Path:
    from ..config import ENV_VARS, _default_audit_path

    configured = os.environ.get(ENV_VARS["audit_path"])
    return Path(configured).expanduser() if configured else _default_audit_path()
