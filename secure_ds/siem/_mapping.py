"""Audit record → SIEM vocabularies: OCSF API Activity (6003) and OTel GenAI semconv.

Pure functions over one record as the log holds it (``audit/record.schema.json``), so
they are unit-tested without a collector. Values are flat ``{dotted.key: value}``
dicts of OTLP attribute types (str, bool, int, float, or a list of one of those);
``None`` values are left out, never sent as empty strings.

OCSF: class ``API Activity`` (class_uid 6003, category 6 Application Activity), with
the required ``actor``, ``api`` and ``src_endpoint`` objects, ``metadata.uid`` = the
record's ``event_id`` (stable: a SIEM drops duplicates on it), the security-control
profile's ``action_id``/``disposition_id`` for permit/deny, and secure-ds's own fields
(decision, DLP kinds and counts, cost) under ``unmapped.secure_ds.*``. Never prompt
or completion text: the record has none, and nothing is added here.

GenAI: the span attributes of the OpenTelemetry GenAI client semantic conventions
(``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model``, ``gen_ai.response.id``, ``gen_ai.usage.input_tokens``, ...).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "OCSF_VERSION",
    "AttrValue",
    "event_time_ns",
    "genai_attributes",
    "genai_operation",
    "ocsf_attributes",
    "span_id_for",
    "trace_id_for",
]

AttrValue = str | bool | int | float | list[str] | list[int] | list[float] | list[bool]

OCSF_VERSION = "1.3.0"
PRODUCT = "secure-ds"
PROVIDER = "deepseek"  # gen_ai.provider.name well-known value

# secure-ds action -> (OCSF activity_id, activity_name, api.operation)
_ACTIVITY: dict[str, tuple[int, str, str]] = {
    "chat": (1, "Create", "chat.completions.create"),
    "stream": (1, "Create", "chat.completions.create"),
    "fim": (1, "Create", "completions.create"),
    "fhe_infer": (1, "Create", "fhe.infer"),
    "list_models": (2, "Read", "models.list"),
    "balance": (2, "Read", "user.balance"),
}
_OTHER = (99, "Other", "other")

# secure-ds action -> gen_ai.operation.name (well-known values where one fits)
_GENAI_OPERATION = {
    "chat": "chat",
    "stream": "chat",
    "fim": "text_completion",
}

# outcome -> (severity_id, severity, status_id, status, action_id, action, disposition_id,
# disposition)
_OUTCOME: dict[str, tuple[int, str, int, str, int, str, int, str]] = {
    "permit": (1, "Informational", 1, "Success", 1, "Allowed", 1, "Allowed"),
    "deny": (3, "Medium", 2, "Failure", 2, "Denied", 2, "Blocked"),
    "failure": (2, "Low", 2, "Failure", 1, "Allowed", 1, "Allowed"),
}


def event_time_ns(record: Mapping[str, Any]) -> int:
    """The record's ``time`` (RFC 3339, UTC) in Unix nanoseconds."""
    text = str(record["time"])
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(moment.timestamp() * 1000) * 1_000_000


def trace_id_for(record: Mapping[str, Any]) -> bytes:
    """The record's W3C trace id (16 bytes); derived from the event id if it has none."""
    raw = record.get("trace_id")
    if isinstance(raw, str) and len(raw) == 32:
        try:
            value = bytes.fromhex(raw)
        except ValueError:
            value = b""
        if value and any(value):
            return value
    return hashlib.sha256(b"trace:" + str(record["event_id"]).encode()).digest()[:16]


def span_id_for(record: Mapping[str, Any]) -> bytes:
    """A span id (8 bytes) derived from the event id: a re-sent span keeps its id."""
    digest = hashlib.sha256(b"span:" + str(record["event_id"]).encode()).digest()
    return digest[:8] if any(digest[:8]) else digest[8:16]


def genai_operation(record: Mapping[str, Any]) -> str:
    action = str(record.get("action") or "other")
    return _GENAI_OPERATION.get(action, action)


def ocsf_attributes(record: Mapping[str, Any], *, host: str | None = None) -> dict[str, AttrValue]:
    """OCSF API Activity (6003) fields of one record, flattened to dotted keys."""
    action = str(record.get("action") or "other")
    outcome = str(record.get("outcome") or "failure")
    activity_id, activity_name, operation = _ACTIVITY.get(action, _OTHER)
    sev_id, sev, status_id, status, action_id, action_name, disp_id, disp = _OUTCOME.get(
        outcome, _OUTCOME["failure"]
    )
    actor = _mapping(record.get("actor"))
    request = _mapping(record.get("request"))
    response = _mapping(record.get("response"))
    decide = _mapping(record.get("decide"))
    error = _mapping(record.get("error"))
    classify = _mapping(record.get("classify"))
    cost = _mapping(record.get("cost"))
    meter = _mapping(record.get("meter"))
    usage = _mapping(response.get("usage"))
    endpoint = urlsplit(str(request.get("endpoint") or ""))
    http_status = _http_status(record)
    event_id = str(record["event_id"])

    out: dict[str, Any] = {
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": 6003 * 100 + activity_id,
        "type_name": f"API Activity: {activity_name}",
        "time": event_time_ns(record) // 1_000_000,
        "duration": _int(record.get("latency_ms")),
        "severity_id": sev_id,
        "severity": sev,
        "status_id": status_id,
        "status": status,
        "status_code": str(http_status) if http_status is not None else None,
        "status_detail": _status_detail(record, decide, error),
        "action_id": action_id,
        "action": action_name,
        "disposition_id": disp_id,
        "disposition": disp,
        "metadata.uid": event_id,
        "metadata.version": OCSF_VERSION,
        "metadata.product.name": PRODUCT,
        "metadata.product.vendor_name": PRODUCT,
        "metadata.log_name": str(record.get("schema") or ""),
        "metadata.correlation_uid": record.get("trace_id"),
        "metadata.profiles": ["security_control"],
        "actor.user.name": actor.get("subject"),
        "actor.user.uid": actor.get("subject"),
        "actor.user.groups.name": _strings(actor.get("roles")),
        "actor.user.credential_uid": actor.get("cert_sha256"),
        "actor.session.uid": actor.get("token_jti"),
        "actor.session.issuer": actor.get("issuer"),
        "actor.authorizations.decision": decide.get("effect"),
        "actor.authorizations.policy.uid": _first(decide.get("policies")),
        "api.operation": operation,
        "api.service.name": PROVIDER,
        "api.request.uid": event_id,
        "api.response.code": http_status,
        "api.response.error": error.get("type"),
        "api.response.error_message": error.get("message"),
        "api.response.uid": response.get("id"),
        "src_endpoint.ip": _source_ip(decide),
        "src_endpoint.hostname": host,
        "dst_endpoint.hostname": endpoint.hostname,
        "dst_endpoint.port": endpoint.port,
        "http_request.http_method": request.get("method"),
        "http_request.url.hostname": endpoint.hostname,
        "http_request.url.path": request.get("path"),
        "http_request.url.scheme": endpoint.scheme or None,
        "unmapped.secure_ds.outcome": outcome,
        "unmapped.secure_ds.action": action,
        "unmapped.secure_ds.model": request.get("model"),
        "unmapped.secure_ds.model_requested": request.get("model_requested"),
        "unmapped.secure_ds.model_pin": request.get("model_pin"),
        "unmapped.secure_ds.request.body_sha256": request.get("body_sha256"),
        "unmapped.secure_ds.response.body_sha256": response.get("body_sha256"),
        "unmapped.secure_ds.decide.engine": decide.get("engine"),
        "unmapped.secure_ds.decide.policies": _strings(decide.get("policies")),
        "unmapped.secure_ds.decide.denied_by": decide.get("denied_by"),
        "unmapped.secure_ds.decide.revision": decide.get("revision"),
        "unmapped.secure_ds.enforce.applied": _strings(
            _mapping(record.get("enforce")).get("applied")
        ),
        "unmapped.secure_ds.dlp.classification": classify.get("classification"),
        "unmapped.secure_ds.dlp.kinds": [
            str(f.get("kind")) for f in _mappings(classify.get("findings"))
        ],
        "unmapped.secure_ds.dlp.counts": [
            _int(f.get("count")) or 0 for f in _mappings(classify.get("findings"))
        ],
        "unmapped.secure_ds.meter.engine": meter.get("engine"),
        "unmapped.secure_ds.meter.allowed": meter.get("allowed"),
        "unmapped.secure_ds.cost.usd": _float(cost.get("usd")),
        "unmapped.secure_ds.cost.pricing": cost.get("pricing"),
        "unmapped.secure_ds.usage.input_tokens": _int(usage.get("prompt_tokens")),
        "unmapped.secure_ds.usage.output_tokens": _int(usage.get("completion_tokens")),
        "unmapped.secure_ds.attempts": len(_mappings(record.get("attempts"))),
        "unmapped.secure_ds.latency_ms": _float(record.get("latency_ms")),
    }
    integrity = _mapping(record.get("integrity"))
    # the signed log's fields that let a SIEM ask for a proof: key id, index, leaf hash
    key_id = integrity.get("key_id") or integrity.get("kid") or integrity.get("key")
    out["unmapped.secure_ds.integrity.key_id"] = key_id if isinstance(key_id, str) else None
    index = integrity.get("index")
    out["unmapped.secure_ds.integrity.index"] = _int(index)
    leaf = integrity.get("hash")
    out["unmapped.secure_ds.integrity.hash"] = leaf if isinstance(leaf, str) else None
    return _clean(out)


def genai_attributes(record: Mapping[str, Any]) -> dict[str, AttrValue]:
    """The GenAI client span attributes of one record (semconv names)."""
    request = _mapping(record.get("request"))
    response = _mapping(record.get("response"))
    usage = _mapping(response.get("usage"))
    error = _mapping(record.get("error"))
    endpoint = urlsplit(str(request.get("endpoint") or ""))
    finish = response.get("finish_reason")
    out: dict[str, Any] = {
        "gen_ai.operation.name": genai_operation(record),
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": request.get("model"),
        "gen_ai.request.max_tokens": _int(request.get("max_tokens")),
        "gen_ai.response.model": response.get("model"),
        "gen_ai.response.id": response.get("id"),
        "gen_ai.response.finish_reasons": [str(finish)] if finish else None,
        "gen_ai.usage.input_tokens": _int(usage.get("prompt_tokens")),
        "gen_ai.usage.output_tokens": _int(usage.get("completion_tokens")),
        "server.address": endpoint.hostname,
        "server.port": endpoint.port,
        "http.request.method": request.get("method"),
        "http.response.status_code": _http_status(record),
        "error.type": error.get("type") if record.get("outcome") != "permit" else None,
        "secure_ds.event_id": str(record["event_id"]),
        "secure_ds.outcome": record.get("outcome"),
        "secure_ds.action": record.get("action"),
        "secure_ds.stream": request.get("stream"),
        "secure_ds.model_pin": request.get("model_pin"),
        "secure_ds.decide.policies": _strings(_mapping(record.get("decide")).get("policies")),
        "secure_ds.cost.usd": _float(_mapping(record.get("cost")).get("usd")),
        "secure_ds.attempts": len(_mappings(record.get("attempts"))),
    }
    if out["error.type"] is None and record.get("outcome") != "permit":
        out["error.type"] = str(record.get("outcome"))
    return _clean(out)


# ---------------------------------------------------------------------- helpers


def _http_status(record: Mapping[str, Any]) -> int | None:
    status = _mapping(record.get("response")).get("status")
    if isinstance(status, int) and not isinstance(status, bool):
        return status
    for attempt in reversed(_mappings(record.get("attempts"))):
        value = attempt.get("status")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _status_detail(
    record: Mapping[str, Any], decide: Mapping[str, Any], error: Mapping[str, Any]
) -> str | None:
    if record.get("outcome") == "deny":
        by = decide.get("denied_by") or error.get("policy")
        message = error.get("message") or decide.get("reason")
        return f"denied by {by}: {message}" if by else (str(message) if message else "denied")
    message = error.get("message")
    return str(message) if message else None


def _source_ip(decide: Mapping[str, Any]) -> str | None:
    ip = _mapping(decide.get("context")).get("source_ip")
    if isinstance(ip, str):
        return ip
    arg = _mapping(_mapping(ip).get("__extn")).get("arg")
    return arg if isinstance(arg, str) else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _mappings(value: object) -> list[Mapping[str, Any]]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        return []
    return [v for v in value if isinstance(v, Mapping)]


def _strings(value: object) -> list[str] | None:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        return None
    return [str(v) for v in value if v is not None]


def _first(value: object) -> str | None:
    strings = _strings(value)
    return strings[0] if strings else None


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _clean(values: Mapping[str, Any]) -> dict[str, AttrValue]:
    """Drop ``None`` and empty strings; keep empty lists out too (OTLP has no type)."""
    out: dict[str, AttrValue] = {}
    for key, value in values.items():
        if value is None or value == "" or (isinstance(value, list) and not value):
            continue
        out[key] = value
    return out
