"""The state of one call as it passes through the guard chain.

A :class:`Call` is created from the request the openai SDK built, filled in by each
stage (identify, classify, decide, enforce, meter, send, account) and finally turned
into the audit record. Stages write only their own fields.

Stage results (:class:`Identity`, :class:`Classification`, :class:`Decision`,
:class:`Metering`) are immutable, and their ``record`` dicts are built once per value:
the default stages and the per-token identity hand the same value to every call, so
the record is shared and must be treated as read-only.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import httpx2

from .._ids import uuid7

__all__ = ["Action", "Call", "Classification", "Decision", "Identity", "Metering", "action_for"]

_set_attribute = object.__setattr__  # what a frozen dataclass's own __init__ uses

Action = Literal["chat", "stream", "fim", "fhe_infer", "list_models", "balance", "other"]
Outcome = Literal["permit", "deny", "failure"]


@dataclass(frozen=True)
class Identity:
    """Who is calling: from the token's claims and the client certificate."""

    subject: str | None
    roles: tuple[str, ...]
    attributes: dict[str, Any]
    auth: str  # "jwt" (certificate-bound when bound_thumbprint is set) or "api_key"
    issuer: str | None
    token_id: str | None
    cert_thumbprint: str | None
    bound_thumbprint: str | None

    @cached_property
    def record(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "roles": list(self.roles),
            "attributes": self.attributes,
            "auth": self.auth,
            "issuer": self.issuer,
            "token_jti": self.token_id,
            "cert_sha256": self.cert_thumbprint,
            "certificate_bound": self.bound_thumbprint is not None
            and self.bound_thumbprint == self.cert_thumbprint,
        }


@dataclass(frozen=True)
class Classification:
    engine: str
    level: str
    findings: tuple[tuple[str, int], ...] = ()  # (kind, count): never the values

    @cached_property
    def record(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "classification": self.level,
            "findings": [{"kind": k, "count": n} for k, n in self.findings],
        }


@dataclass(frozen=True)
class Decision:
    """The decide stage's answer. ``policies`` are the determining policies (the
    permits that matched, or the forbids that denied); ``denied_by`` names what a
    deny is attributed to when that is not a policy (``"no permit matched"``, a
    catalogue or claim problem, an evaluation error)."""

    effect: Literal["permit", "deny"]
    engine: str
    policies: tuple[str, ...] = ()
    obligations: tuple[str, ...] = ()
    reason: str = ""
    revision: str | None = None
    eval_us: float = 0.0
    policy_names: tuple[str | None, ...] = ()  # each policy's @id annotation
    advice: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    commit: str | None = None
    denied_by: str = ""
    context: dict[str, Any] | None = None  # the policy engine's input, for replay
    reload_error: str | None = None  # a newer policy version on disk was rejected

    @property
    def deciding_policy(self) -> str:
        """What a deny is attributed to in the error and the record."""
        if self.denied_by:
            return self.denied_by
        return self.policies[0] if self.policies else "no permit matched"

    @cached_property
    def record(self) -> dict[str, Any]:
        return {
            "effect": self.effect,
            "engine": self.engine,
            "policies": list(self.policies),
            "policy_names": list(self.policy_names),
            "obligations": list(self.obligations),
            "advice": list(self.advice),
            "errors": list(self.errors),
            "reason": self.reason,
            "denied_by": self.denied_by or None,
            "revision": self.revision,
            "commit": self.commit,
            "eval_us": round(self.eval_us, 1),
            "context": self.context,
            "reload_error": self.reload_error,
        }


@dataclass(frozen=True, init=False)
class Metering:
    """The meter stage's answer. A refusal says which ``kind`` ("budget" or
    "rate_limit"), with ``details`` (the budget or limit, spent, limit, reset) and, for
    a rate limit, ``retry_after`` seconds.

    Frozen, except that a meter may add to the ``details`` dict of a Metering it made
    for one call (the settlement of that call's reservation) until the call is
    audited; a Metering shared between calls has ``details`` None.
    """

    engine: str
    allowed: bool
    reserved_usd: float | None = None
    reason: str = ""
    kind: str | None = None
    retry_after: float | None = None
    details: dict[str, Any] | None = None
    remaining_usd: float | None = None

    def __init__(
        self,
        engine: str,
        allowed: bool,
        reserved_usd: float | None = None,
        reason: str = "",
        kind: str | None = None,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
        remaining_usd: float | None = None,
    ) -> None:
        # One Metering per call, on the meter's hot path: filling the instance dict
        # at once costs a third less than the eight frozen-field assignments the
        # generated __init__ makes (the instance stays frozen: __setattr__ refuses).
        _set_attribute(
            self,
            "__dict__",
            {
                "engine": engine,
                "allowed": allowed,
                "reserved_usd": reserved_usd,
                "reason": reason,
                "kind": kind,
                "retry_after": retry_after,
                "details": details,
                "remaining_usd": remaining_usd,
            },
        )

    @cached_property
    def record(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "allowed": self.allowed,
            "reserved_usd": self.reserved_usd,
            "reason": self.reason,
            "kind": self.kind,
            "retry_after_s": self.retry_after,
            "details": self.details,
            "remaining_usd": self.remaining_usd,
        }


_FHE_PATHS = ("/fhe/infer", "/fhe/contexts")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def action_for(method: str, path: str, body: dict[str, Any] | None) -> Action:
    """Map an API path to the action name policies and the audit record use."""
    if method == "POST" and path.endswith(_FHE_PATHS):
        return "fhe_infer"  # the context upload belongs to the same encrypted path
    if path.endswith("/chat/completions"):
        return "stream" if body is not None and body.get("stream") is True else "chat"
    if path.endswith("/completions"):
        return "fim"
    if path.endswith("/models") and method == "GET":
        return "list_models"
    if path.endswith("/user/balance"):
        return "balance"
    return "other"


@dataclass
class Call:
    """One call. ``request`` is what the SDK built; ``body`` is its parsed JSON, which
    the enforce stage may change (the sent bytes are then re-encoded from it, and
    ``body_bytes`` becomes those bytes, so the record hashes what was sent)."""

    request: httpx2.Request
    action: Action
    body: dict[str, Any] | None
    body_bytes: bytes
    stream: bool
    event_id: str = field(default_factory=uuid7)
    trace_id: str = ""  # W3C trace id: the caller's (from its traceparent), else ours
    started_at: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    requested_model: str | None = None
    model_pin: str | None = None
    body_changed: bool = False
    url: httpx2.URL | None = None  # set by enforce when the path is rewritten
    wire: httpx2.Request | None = None  # what is sent: ``request`` or a rewritten copy
    identity: Identity | None = None
    token: Any = None  # identity.Token; kept off the record
    classification: Classification | None = None
    decision: Decision | None = None
    enforcement: list[str] = field(default_factory=list)
    metering: Metering | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    response: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome = "permit"
    error: dict[str, str] | None = None
    exception: BaseException | None = None  # raised to the caller once the call is audited
    dlp: list[Any] | None = None  # (TextSlot, ScanResult) per text, set by the DLP classifier
    reidentifier: Any = None  # dlp Reidentifier when a reversible redaction was applied
    cost: Any = None  # cost.Cost once the usage is known and the model has a price
    reservation: Any = None  # the meter's handle on what it reserved for this call
    budget_remaining_usd: float | None = None  # before this call, for the policy context
    settled: bool = False  # the meter settled (or released) this call's reservation
    settle_error: str | None = None
    fhe: dict[str, Any] | None = None  # an FHE frame's summary: ids and digests, no data
    # the response body as received, kept only while bodies are sealed for an auditor
    # (SECURE_DS_AUDIT_SEAL_TO); None otherwise, or when a stream outgrew the record limit
    response_body: bytes | None = None

    @classmethod
    def from_request(cls, request: httpx2.Request) -> Call:
        raw = request.content if request.method != "GET" else b""
        if action_for(request.method, request.url.path, None) == "fhe_infer":
            return cls._fhe(request, raw)
        body: dict[str, Any] | None = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            body = parsed if isinstance(parsed, dict) else None
        action = action_for(request.method, request.url.path, body)
        call = cls(
            request=request,
            action=action,
            body=body,
            body_bytes=raw,
            stream=bool(body and body.get("stream") is True),
        )
        parent = _TRACEPARENT.match(request.headers.get("traceparent", ""))
        call.trace_id = parent.group(1) if parent else call.event_id.replace("-", "")
        if body is not None and isinstance(body.get("model"), str):
            call.requested_model = body["model"]
        return call

    @classmethod
    def _fhe(cls, request: httpx2.Request, raw: bytes) -> Call:
        """An FHE call: a binary frame, never parsed as JSON and never given to DLP
        (there is no text in it; see :mod:`secure_ds.fhe._wire`). The record gets the
        frame's summary: parameter set, model, context id, ciphertext SHA-256s."""
        from ..fhe._wire import audit_summary

        call = cls(request=request, action="fhe_infer", body=None, body_bytes=raw, stream=False)
        parent = _TRACEPARENT.match(request.headers.get("traceparent", ""))
        call.trace_id = parent.group(1) if parent else call.event_id.replace("-", "")
        call.fhe = audit_summary(request.headers.get("content-type", ""), raw) or {
            "frame": "invalid",
            "bytes": len(raw),
            "problem": "not an FHE frame (wrong Content-Type)",
        }
        model = call.fhe.get("model")
        call.requested_model = model if isinstance(model, str) else None
        return call

    @property
    def model(self) -> str | None:
        """The model as it will be (or was) sent."""
        if self.fhe is not None:
            return self.requested_model
        if self.body is not None and isinstance(self.body.get("model"), str):
            return str(self.body["model"])
        return None

    def outgoing_content(self) -> bytes:
        if not self.body_changed or self.body is None:
            return self.body_bytes
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False).encode()

    @property
    def span_id(self) -> str:
        """Our span: the low 64 bits of the event id (random, unique per call)."""
        return self.event_id.replace("-", "")[-16:]

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000.0
