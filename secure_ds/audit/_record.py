"""The audit record of one call, built from the guard chain's :class:`Call`.

Modelled on OPA decision logs (decision id, input summary, result, determining
policies, revision, metrics) with the fields the signing and SIEM work will use. It
never holds the token, the API key, or prompt/completion text: bodies are represented
by their SHA-256 and size; only with a :class:`~._seal.Sealer` (``SECURE_DS_AUDIT_SEAL_TO``)
does it also carry them, in a ``sealed`` member only the auditor's key opens.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from .._ids import rfc3339_millis

if TYPE_CHECKING:
    from ..guard._call import Call
    from ._seal import Sealer

__all__ = ["RECORD_SCHEMA", "build_record"]

RECORD_SCHEMA = "secure-ds.audit/1"


def build_record(call: Call, sealer: Sealer | None = None) -> dict[str, Any]:
    request = call.request
    url = call.url or request.url
    record: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "event_id": call.event_id,
        "time": rfc3339_millis(call.started_at),
        "trace_id": call.trace_id,
        "outcome": call.outcome,
        "action": call.action,
        "actor": call.identity.record if call.identity else None,
        "request": {
            "method": request.method,
            "endpoint": f"{url.scheme}://{url.netloc.decode('ascii')}",
            "path": url.path,
            "model": call.model,
            "model_requested": call.requested_model,
            "model_pin": call.model_pin,
            "stream": call.stream,
            "max_tokens": call.body.get("max_tokens") if call.body else None,
            "body_sha256": hashlib.sha256(call.body_bytes).hexdigest(),
            "body_bytes": len(call.body_bytes),
        },
        "classify": call.classification.record if call.classification else None,
        "decide": call.decision.record if call.decision else None,
        "enforce": {"applied": list(call.enforcement)},
        "meter": _meter_record(call),
        "attempts": call.attempts,
        "response": call.response or None,
        "cost": call.cost.record if call.cost is not None else None,
        "fhe": call.fhe,
        "latency_ms": round(call.elapsed_ms(), 3),
        "error": call.error,
    }
    if sealer is not None:
        # inside the record, so the record's signature covers the sealed bodies too
        record["sealed"] = sealer.seal_record(
            record, call.body_bytes, call.response_body, call.response.get("body_bytes")
        )
    return record


def _meter_record(call: Call) -> dict[str, Any] | None:
    if call.metering is None:
        return None
    if call.settle_error is None:
        return call.metering.record  # shared by the default meter: read-only
    return {**call.metering.record, "settle_error": call.settle_error}
