"""``secure-ds fhe demo``: the encrypted-inference round trip, with sizes and timings.

Thin on purpose: :func:`secure_ds.fhe._demo.run_fhe_demo` does the work (a local
sandbox, ``client.fhe.infer`` on held-out data of each shipped model, a check against
the plaintext scores); this prints it. Exit status 0 only if every encrypted
prediction matched the plaintext model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from ..fhe._demo import FheDemoReport, FheDemoStep

__all__ = ["register", "render", "run"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fhe demo`` to the ``secure-ds`` command."""
    fhe = subparsers.add_parser(
        "fhe", help="encrypted inference on small models (TenSEAL CKKS; not an LLM)"
    )
    actions = fhe.add_subparsers(dest="fhe_command", required=True)
    demo = actions.add_parser(
        "demo", help="encrypt held-out inputs, score them on the sandbox, decrypt, compare"
    )
    demo.add_argument("--inputs", type=int, default=20, help="inputs per model (default 20)")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.add_argument("--audit-path", type=Path, help="audit file to append to")


def run(args: argparse.Namespace) -> int:
    from ..fhe._demo import run_fhe_demo

    audit_path = args.audit_path or Path(tempfile.mkdtemp(prefix="secure-ds-fhe-")) / "audit.jsonl"
    if args.json:
        report = run_fhe_demo(audit_path, args.inputs)
        print(json.dumps(report.as_json(), indent=2))
        return 0 if report.ok else 1
    console = Console()
    with console.status("Starting the sandbox, generating keys, scoring ciphertexts..."):
        report = run_fhe_demo(audit_path, args.inputs)
    render(console, report)
    return 0 if report.ok else 1


def render(console: Console, report: FheDemoReport) -> None:
    """Print a demo report: one column per model, one row per measure."""
    console.print(f"Sandbox endpoint [bold]{report.endpoint}[/] (mTLS + certificate-bound JWT)")
    table = Table(title="secure-ds fhe demo: the service sees ciphertexts only")
    table.add_column("")
    for step in report.steps:
        table.add_column(f"{step.model}\n({step.kind})", overflow="fold")
    rows: list[tuple[str, Callable[[FheDemoStep], str]]] = [
        ("parameter set", lambda s: s.parameter_set),
        ("inputs", lambda s: str(s.inputs)),
        ("same class as plaintext", lambda s: f"{s.agree}/{s.inputs}"),
        ("correct (held-out label)", lambda s: f"{s.correct}/{s.inputs}"),
        ("max |score error|", lambda s: f"{s.max_error:.1e}"),
        ("key generation", lambda s: _keygen(s)),
        ("public context upload", lambda s: _upload(s)),
        ("encrypt", lambda s: f"{s.timings_ms['encrypt']:.0f} ms"),
        ("POST /fhe/infer", lambda s: f"{s.timings_ms['infer']:.0f} ms ({s.sizes['requests']})"),
        ("decrypt", lambda s: f"{s.timings_ms['decrypt']:.1f} ms"),
        ("ciphertext sent", lambda s: _mb(s.sizes["request_bytes"])),
        ("ciphertext received", lambda s: _mb(s.sizes["result_bytes"])),
        ("first input", lambda s: s.example),
        ("audit records", lambda s: str(s.records)),
        ("check", lambda s: "[green]ok[/]" if s.ok else "[red]FAILED[/]"),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(step) for step in report.steps))
    console.print(table)
    console.print(
        "agree: encrypted and plaintext predictions of the same class; correct: matches the "
        "held-out label. The secret key never left this process; the audit log holds "
        "ciphertext SHA-256s, never inputs.",
        highlight=False,
    )
    console.print(f"Audit log: [bold]{report.audit_path}[/]")
    console.print(
        "[green]Encrypted and plaintext predictions agree.[/]"
        if report.ok
        else "[red]Some steps failed.[/]"
    )


def _mb(n: int) -> str:
    return "-" if n == 0 else f"{n / 1e6:.2f} MB"


def _keygen(step: FheDemoStep) -> str:
    if step.sizes["context_bytes"] == 0:
        return "reused session"
    return f"{step.timings_ms['keygen']:.0f} ms"


def _upload(step: FheDemoStep) -> str:
    if step.sizes["context_bytes"] == 0:
        return "cached (same key)"
    return f"{_mb(step.sizes['context_bytes'])}, {step.timings_ms['context_upload']:.0f} ms"
