"""Writing a report to a file, atomically, in one of its formats.

Every format is written to a temporary file beside the output, synced, then renamed
over it (and the folder synced), so a failure at any point (a bad log, a full disk, an
interrupt) leaves the output path as it was: never half a report an auditor might take
for a whole one. The temporary file is created before the log is read, so an
unwritable output fails at once rather than after a long pass.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal

from ..audit import PublicKey
from ..errors import ReportError
from ._aggregate import Period
from ._controls import Framework
from ._model import build_report
from ._pdf import PdfSigning

__all__ = ["CSV_COLUMNS", "FORMATS", "Format", "atomic_output", "csv_row", "export_report"]

Format = Literal["json", "csv", "html", "pdf", "oscal"]
FORMATS: tuple[Format, ...] = ("json", "csv", "html", "pdf", "oscal")

CSV_COLUMNS = (
    "time", "event_id", "trace_id", "index", "outcome", "action", "principal", "team",
    "auth", "certificate_bound", "model", "policy_engine", "effect", "denied_by",
    "policy_revision", "classification", "findings", "meter_engine", "cost_usd",
    "tokens_input", "tokens_output", "status", "error_type", "latency_ms", "key",
)  # fmt: skip
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@contextlib.contextmanager
def atomic_output(out: Path, mode: Literal["w", "wb"] = "w") -> Iterator[IO[Any]]:
    """A file that becomes ``out`` only when the block ends without an exception."""
    out = Path(out)
    folder = out.parent if str(out.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise ReportError(
            f"Cannot write the report to {out} ({exc.strerror or type(exc).__name__}).",
            hint="Pass --out a path in a folder that exists and that you can write to.",
        ) from None
    tmp = Path(tmp_name)
    try:
        kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        if out.is_dir():
            raise ReportError(f"The output path {out} is a folder.", hint="Pass --out a file path.")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems cannot sync a folder
        pass


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # a principal name or model from a token could be a spreadsheet formula: defuse it
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_row(rec: dict[str, Any]) -> list[str]:
    """One call record as a CSV row (``CSV_COLUMNS``)."""
    from ._aggregate import team_of

    def d(key: str) -> dict[str, Any]:
        v = rec.get(key)
        return v if isinstance(v, dict) else {}

    actor, decide, classify, meter = d("actor"), d("decide"), d("classify"), d("meter")
    cost, response, error, integrity, request = (
        d("cost"), d("response"), d("error"), d("integrity"), d("request"),
    )  # fmt: skip
    raw_tokens, raw_findings = cost.get("tokens"), classify.get("findings")
    tokens: dict[str, Any] = raw_tokens if isinstance(raw_tokens, dict) else {}
    findings: list[Any] = raw_findings if isinstance(raw_findings, list) else []
    row = [
        rec.get("time"),
        rec.get("event_id"),
        rec.get("trace_id"),
        integrity.get("index"),
        rec.get("outcome"),
        rec.get("action"),
        actor.get("subject"),
        team_of(actor.get("attributes")),
        actor.get("auth"),
        actor.get("certificate_bound"),
        request.get("model"),
        decide.get("engine"),
        decide.get("effect"),
        decide.get("denied_by"),
        decide.get("revision"),
        classify.get("classification"),
        ";".join(f"{f.get('kind')}:{f.get('count')}" for f in findings if isinstance(f, dict)),
        meter.get("engine"),
        cost.get("usd"),
        (tokens.get("input_cache_hit") or 0) + (tokens.get("input_cache_miss") or 0)
        if cost
        else None,
        tokens.get("output") if cost else None,
        response.get("status"),
        error.get("type"),
        rec.get("latency_ms"),
        integrity.get("key"),
    ]
    return [_cell(v) for v in row]


def export_report(
    log: Path,
    period: Period,
    frameworks: Sequence[Framework],
    fmt: Format,
    out: Path,
    *,
    keys: Sequence[PublicKey] = (),
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
    signing: PdfSigning | None = None,
) -> dict[str, Any]:
    """Build the report and write it to ``out`` in ``fmt``; returns the model. A PDF
    is always signed (``signing`` is required for it)."""
    if fmt not in FORMATS:
        raise ReportError(
            f"Unknown report format {fmt!r}.", hint=f"Pass --format one of {', '.join(FORMATS)}."
        )
    if fmt == "pdf":
        if signing is None:
            raise ReportError(
                "A PDF report is signed, and no signing key and certificate were given.",
                hint="Pass --sign-key KEY.pem and --sign-cert CERT.pem (or another --format).",
            )
        from ._pdf import check_key_matches_cert, render_pdf, sign_pdf

        check_key_matches_cert(signing)  # before the long pass: a wrong key fails at once
        with atomic_output(out, "wb") as fb:
            model = build_report(log, period, frameworks, keys=keys, jobs=jobs, progress=progress)
            fb.write(sign_pdf(render_pdf(model), signing))
        return model
    if fmt == "csv":
        with atomic_output(out) as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            return build_report(
                log,
                period,
                frameworks,
                keys=keys,
                jobs=jobs,
                on_record=lambda rec: writer.writerow(csv_row(rec)),
                progress=progress,
            )
    with atomic_output(out) as f:
        model = build_report(log, period, frameworks, keys=keys, jobs=jobs, progress=progress)
        if fmt == "json":
            json.dump(model, f, indent=2, ensure_ascii=False)
            f.write("\n")
        elif fmt == "oscal":
            from ._oscal import render_oscal

            f.write(render_oscal(model))
        else:
            from ._html import render_html

            f.write(render_html(model))
    return model
