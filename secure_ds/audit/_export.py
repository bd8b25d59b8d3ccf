"""``secure-ds audit export``: the log's records as JSON lines, CSV or ArcSight CEF.

What is exported: the call records (checkpoint lines skipped; a torn last line is not a
record), optionally only those whose ``time`` lies in [``since``, ``until``).

Verification first: the log is verified before anything is written (every signature
by default, or ``"chain"``: the chain, leaf hashes and signed checkpoints only), and a
log that does not verify is refused (:class:`~secure_ds.errors.LogNotVerified`) unless
verification is turned off (``"none"``). Only the records that verified are exported,
so records appended while the export runs are left for the next one.

Output to a file is atomic: it is written to a temporary file beside it, fsynced and
renamed over the target, so a failed or interrupted export leaves the previous file (or
none), never half of one.

Formats:

* ``jsonl``: one record per line, exactly the bytes of its canonical JSON in the log
  (RFC 8785); with ``integrity=True`` the whole log line, ``integrity`` member included
  (the signature can then be checked from the export).
* ``csv``: RFC 4180 (a header row, CRLF, every cell quoted) with the fixed columns of
  :data:`CSV_COLUMNS`; list values joined with ``;``, DLP findings as ``kind:count``.
  Against formula injection (OWASP "CSV Injection"), a text cell starting with ``=``,
  ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``.
* ``cef``: ArcSight CEF, one line per record:
  ``CEF:0|secure-ds|secure-ds|<version>|<OCSF type_uid>|<OCSF type_name>|<severity>|<ext>``
  (the signature id and name are those of the OCSF mapping the SIEM export uses;
  severity 1 for a permit, 3 for a failure, 5 for a deny). Header fields escape ``\\``
  and ``|``; extension values escape ``\\``, ``=`` and line breaks (``\\n``, ``\\r``),
  per the CEF specification. The extension keys are listed in :data:`CEF_FIELDS`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from ..errors import AuditError, LogNotVerified
from ._entry import EntryError, split_line
from ._signing import PublicKey
from ._verify import is_checkpoint_line, verify_log

__all__ = [
    "CEF_FIELDS",
    "CSV_COLUMNS",
    "ExportFormat",
    "ExportResult",
    "Verify",
    "cef_line",
    "csv_row",
    "export_log",
    "parse_time",
]

ExportFormat = Literal["jsonl", "csv", "cef"]
Verify = Literal["full", "chain", "none"]

CSV_COLUMNS: tuple[str, ...] = (
    "index",
    "event_id",
    "time",
    "outcome",
    "action",
    "subject",
    "auth",
    "token_jti",
    "cert_sha256",
    "model",
    "model_requested",
    "decision",
    "policies",
    "denied_by",
    "policy_revision",
    "obligations",
    "classification",
    "dlp_findings",
    "status",
    "error_type",
    "error_message",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "attempts",
    "request_sha256",
    "request_bytes",
    "response_sha256",
    "response_bytes",
    "trace_id",
    "key_id",
    "sealed",
)

# CEF extension keys (ArcSight dictionary names; custom ones with their labels)
CEF_FIELDS: tuple[str, ...] = (
    "rt",
    "externalId",
    "suser",
    "act",
    "outcome",
    "requestMethod",
    "request",
    "dhost",
    "reason",
    "cs1 (policies)",
    "cs2 (model)",
    "cs3 (traceId)",
    "cs4 (requestSha256)",
    "cs5 (responseSha256)",
    "cs6 (dlpFindings)",
    "cn1 (inputTokens)",
    "cn2 (outputTokens)",
    "cn3 (httpStatus)",
    "cfp1 (costUsd)",
    "cfp2 (latencyMs)",
    "flexString1 (auditKeyId)",
    "flexNumber1 (auditIndex)",
)

_CSV_DANGEROUS = ("=", "+", "-", "@", "\t", "\r")
_CEF_SEVERITY = {"permit": 1, "failure": 3, "deny": 5}


@dataclasses.dataclass
class ExportResult:
    """What :func:`export_log` wrote."""

    records: int  # records written
    scanned: int  # records read (before the time filter)
    verified: Verify
    output: str | None  # the file written; None for a stream


def parse_time(text: str) -> datetime:
    """An ISO 8601 date or date-time (``2026-11-28``, ``2026-11-28T11:00:00Z``); one
    without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise AuditError(
            f"{text!r} is not an ISO 8601 date or time.",
            hint="Use e.g. 2026-11-28 or 2026-11-28T11:00:00Z.",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def export_log(
    path: Path,
    *,
    fmt: ExportFormat,
    out: Path | IO[str],
    since: datetime | None = None,
    until: datetime | None = None,
    verify: Verify = "full",
    keys: Sequence[PublicKey] = (),
    jobs: int = 1,
    integrity: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Export the records of the log at ``path`` (see the module docstring) to ``out``:
    a file path (written atomically) or an open text stream. ``progress`` is called
    with the number of bytes of the log read so far."""
    path = Path(path)
    if fmt not in ("jsonl", "csv", "cef"):
        raise AuditError(f"Unknown export format {fmt!r}.", hint="Use jsonl, csv or cef.")
    limit: int | None = None
    if verify != "none":
        result = verify_log(path, keys=keys, signatures=verify == "full", jobs=jobs)
        if not result.ok:
            raise LogNotVerified(
                f"The audit log {path} does not verify ({result.reason} at record "
                f"{result.first_bad_index}, line {result.line}: {result.detail}); nothing "
                "was exported.",
                hint=f"Run `secure-ds audit verify {path}` to see why; export with "
                "--no-verify only to look at a log known to be damaged.",
            )
        limit = result.records
    if isinstance(out, Path):
        with _atomic(out) as sink:
            counts = _write(path, fmt, sink, since, until, limit, integrity, progress)
        return ExportResult(counts[0], counts[1], verify, str(out))
    counts = _write(path, fmt, out, since, until, limit, integrity, progress)
    return ExportResult(counts[0], counts[1], verify, None)


@contextlib.contextmanager
def _atomic(target: Path) -> Iterator[IO[str]]:
    """A text stream whose content replaces ``target`` only if the block completes."""
    folder = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise AuditError(
            f"Cannot write the export to {target} ({exc.strerror}).",
            hint="Pass -o with a path in a writable folder.",
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise AuditError(
                f"Writing the export to {target} failed ({exc.strerror}); nothing was "
                "written there.",
                hint="Free disk space or fix permissions, then export again.",
            ) from None
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _write(
    path: Path,
    fmt: ExportFormat,
    sink: IO[str],
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
    integrity: bool,
    progress: Callable[[int], None] | None,
) -> tuple[int, int]:
    written = scanned = 0
    writer = None
    if fmt == "csv":
        writer = csv.writer(sink, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise AuditError(
            f"Cannot read the audit log {path} ({exc.strerror or type(exc).__name__}).",
            hint="Pass the path of an audit log file.",
        ) from None
    with f:
        done = lines = 0
        for raw in f:
            done += len(raw)
            lines += 1
            if progress is not None and lines % 1024 == 0:
                progress(done)
            if not raw.endswith(b"\n") or is_checkpoint_line(raw) or not raw.strip():
                continue
            if limit is not None and scanned >= limit:
                break
            scanned += 1
            line = raw[:-1]
            try:
                record = json.loads(line)
            except ValueError:
                if limit is not None:  # verified a moment ago: the file changed since
                    raise AuditError(
                        f"The audit log {path} changed while it was exported (line "
                        f"{lines} is not JSON any more); the export was abandoned.",
                        hint=f"Run `secure-ds audit verify {path}`.",
                    ) from None
                continue  # --no-verify: a line that is not JSON is not a record
            if not isinstance(record, dict):
                continue
            if (since is not None or until is not None) and not _in_window(record, since, until):
                continue
            if fmt == "jsonl":
                sink.write(_jsonl(line, record, integrity))
            elif fmt == "csv":
                assert writer is not None
                writer.writerow(csv_row(record))
            else:
                sink.write(cef_line(record) + "\n")
            written += 1
        if progress is not None:
            progress(done)
    return written, scanned


def _in_window(record: Mapping[str, Any], since: datetime | None, until: datetime | None) -> bool:
    try:
        moment = parse_time(str(record.get("time")))
    except AuditError:
        return False
    return (since is None or moment >= since) and (until is None or moment < until)


def _jsonl(line: bytes, record: Mapping[str, Any], integrity: bool) -> str:
    if integrity:
        return line.decode("utf-8") + "\n"
    try:
        end, _ = split_line(line)
    except EntryError:  # --no-verify on a damaged line: re-encode what parsed
        rest = {k: v for k, v in record.items() if k != "integrity"}
        return json.dumps(rest, separators=(",", ":"), ensure_ascii=False) + "\n"
    body = line[:end] + b"}" if end else b"{}"
    return body.decode("utf-8") + "\n"


# ---------------------------------------------------------------------- fields


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """The export's flat view of a record (the CSV columns, in order)."""
    actor = _map(record.get("actor"))
    request = _map(record.get("request"))
    response = _map(record.get("response"))
    decide = _map(record.get("decide"))
    error = _map(record.get("error"))
    classify = _map(record.get("classify"))
    usage = _map(response.get("usage"))
    cost = _map(record.get("cost"))
    integ = _map(record.get("integrity"))
    sealed = record.get("sealed")
    status = response.get("status")
    if status is None:
        for attempt in reversed(_list(record.get("attempts"))):
            if isinstance(attempt, Mapping) and attempt.get("status") is not None:
                status = attempt.get("status")
                break
    findings = [
        f"{f.get('kind')}:{f.get('count')}"
        for f in _list(classify.get("findings"))
        if isinstance(f, Mapping)
    ]
    return {
        "index": integ.get("index"),
        "event_id": record.get("event_id"),
        "time": record.get("time"),
        "outcome": record.get("outcome"),
        "action": record.get("action"),
        "subject": actor.get("subject"),
        "auth": actor.get("auth"),
        "token_jti": actor.get("token_jti"),
        "cert_sha256": actor.get("cert_sha256"),
        "model": request.get("model"),
        "model_requested": request.get("model_requested"),
        "decision": decide.get("effect"),
        "policies": _list(decide.get("policies")),
        "denied_by": decide.get("denied_by") or error.get("policy"),
        "policy_revision": decide.get("revision"),
        "obligations": _list(decide.get("obligations")),
        "classification": classify.get("classification"),
        "dlp_findings": findings,
        "status": status,
        "error_type": error.get("type"),
        "error_message": error.get("message"),
        "input_tokens": usage.get("prompt_tokens"),
        "output_tokens": usage.get("completion_tokens"),
        "cost_usd": cost.get("usd"),
        "latency_ms": record.get("latency_ms"),
        "attempts": len(_list(record.get("attempts"))),
        "request_sha256": request.get("body_sha256"),
        "request_bytes": request.get("body_bytes"),
        "response_sha256": response.get("body_sha256"),
        "response_bytes": response.get("body_bytes"),
        "trace_id": record.get("trace_id"),
        "key_id": integ.get("key"),
        "sealed": ("omitted" if "omitted" in sealed else "sealed")
        if isinstance(sealed, Mapping)
        else None,
    }


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(_text(v) for v in value)
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def csv_row(record: Mapping[str, Any]) -> list[str]:
    """One CSV row (the cells of :data:`CSV_COLUMNS`), formula injection guarded."""
    row = []
    for value in _fields(record).values():
        cell = _text(value)
        # numbers we format ourselves are safe (a negative one is still a number);
        # any text from the record that a spreadsheet would run as a formula is not
        if not isinstance(value, int | float) and cell.startswith(_CSV_DANGEROUS):
            cell = "'" + cell
        row.append(cell)
    return row


def _cef_header(value: object) -> str:
    text = _text(value).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def _cef_value(value: object) -> str:
    return (
        _text(value)
        .replace("\\", "\\\\")
        .replace("=", "\\=")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
    )


def cef_line(record: Mapping[str, Any]) -> str:
    """One ArcSight CEF line for ``record`` (no newline)."""
    from .. import __version__
    from ..siem._mapping import ocsf_attributes

    ocsf = ocsf_attributes(record)
    f = _fields(record)
    request = _map(record.get("request"))
    decide = _map(record.get("decide"))
    error = _map(record.get("error"))
    outcome = str(record.get("outcome") or "failure")
    header = [
        "CEF:0",
        "secure-ds",
        "secure-ds",
        _cef_header(__version__),
        _cef_header(ocsf.get("type_uid")),
        _cef_header(ocsf.get("type_name")),
        str(_CEF_SEVERITY.get(outcome, 3)),
    ]
    endpoint = str(request.get("endpoint") or "")
    url = endpoint + str(request.get("path") or "") if endpoint else None
    reason = error.get("message") or (decide.get("reason") if outcome == "deny" else None)
    ext: list[tuple[str, object]] = [
        ("rt", ocsf.get("time")),
        ("externalId", f["event_id"]),
        ("suser", f["subject"]),
        ("act", ocsf.get("action")),
        ("outcome", outcome),
        ("requestMethod", request.get("method")),
        ("request", url),
        ("dhost", ocsf.get("dst_endpoint.hostname")),
        ("reason", reason),
        ("cs1Label", "policies"),
        ("cs1", f["policies"]),
        ("cs2Label", "model"),
        ("cs2", f["model"]),
        ("cs3Label", "traceId"),
        ("cs3", f["trace_id"]),
        ("cs4Label", "requestSha256"),
        ("cs4", f["request_sha256"]),
        ("cs5Label", "responseSha256"),
        ("cs5", f["response_sha256"]),
        ("cs6Label", "dlpFindings"),
        ("cs6", f["dlp_findings"]),
        ("cn1Label", "inputTokens"),
        ("cn1", f["input_tokens"]),
        ("cn2Label", "outputTokens"),
        ("cn2", f["output_tokens"]),
        ("cn3Label", "httpStatus"),
        ("cn3", f["status"]),
        ("cfp1Label", "costUsd"),
        ("cfp1", f["cost_usd"]),
        ("cfp2Label", "latencyMs"),
        ("cfp2", f["latency_ms"]),
        ("flexString1Label", "auditKeyId"),
        ("flexString1", f["key_id"]),
        ("flexNumber1Label", "auditIndex"),
        ("flexNumber1", f["index"]),
    ]
    parts = []
    for i, (key, value) in enumerate(ext):
        if key.endswith("Label"):
            # a label only when its value is present
            if ext[i + 1][1] in (None, "", []):
                continue
        elif value in (None, "", []):
            continue
        parts.append(f"{key}={_cef_value(value)}")
    return "|".join(header) + "|" + " ".join(parts)
