"""The guard chain: identify → classify → decide → enforce → meter → send → account → audit.

:class:`Guard` holds the stages and runs the ones that do no I/O (everything before
*send*, plus *account*); the sync and async transports in ``_transport`` run *send*
and *audit* with their own I/O primitives and call back here, so both clients share
one implementation of every decision.

Invariants:

1. Every call that reaches :meth:`Guard.begin` yields exactly one audit record,
   whether it is permitted, denied or fails (``Call.outcome``).
2. Nothing is sent unless the audit log is healthy (:meth:`AuditLog.check` passes),
   the decision is *permit* and every obligation was carried out.
3. The request that goes out carries the bearer token of the identity that was
   decided on, never the placeholder the SDK was given.
4. With a client certificate (and ``SECURE_DS_REQUEST_SIGNING`` not ``off``) every
   attempt is signed (RFC 9421) as the last step before it is sent, after every body
   and URL rewrite, with a fresh ``created``/``nonce`` per attempt.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx2

from ..audit._log import AuditLog
from ..audit._record import build_record
from ..audit._seal import Sealer
from ..config import Settings
from ..cost import PriceTable
from ..cost._router import Router
from ..errors import BudgetExceeded, IdentityError, PolicyDenied, RateLimited, SecureDSError
from ..identity import Token, TokenProvider
from ..identity._httpsig import RequestSigner
from ._call import Call, Identity, Metering
from ._resilience import BreakerRegistry, RetryPolicy
from ._stages import (
    AllowAll,
    Classifier,
    Enforcer,
    Meter,
    NoClassification,
    ObligationRefused,
    PolicyDecider,
    Unmetered,
    WithObligations,
    configured_obligations,
)

__all__ = ["Guard", "SSEUsageTracker"]


@dataclass
class Guard:
    settings: Settings
    token_provider: TokenProvider
    audit_log: AuditLog
    cert_thumbprint: str | None
    classifier: Classifier
    decider: PolicyDecider
    meter: Meter
    enforcer: Enforcer
    retry: RetryPolicy
    breakers: BreakerRegistry
    _identity_cache: tuple[Token, Identity] | None = None
    # what the client built for this guard (e.g. the policy store and its watcher)
    # and must release with it; stages passed in by the caller stay the caller's
    owned: list[Any] = field(default_factory=list)
    pricing: PriceTable | None = None
    # signs every attempt with the mTLS client key (None: unsigned); whoever rotates the
    # client certificate replaces it, so the keyid keeps naming the certificate in use
    signer: RequestSigner | None = None
    # SECURE_DS_AUDIT_SEAL_TO: records carry the bodies sealed for the auditor's key
    sealer: Sealer | None = None

    @property
    def _budget_for_decide(self) -> Callable[[Call], float | None] | None:
        remaining: Callable[[Call], float | None] | None = getattr(
            self.meter, "remaining_usd", None
        )
        if remaining is None or not getattr(self.decider, "reads_budget", False):
            return None
        return remaining

    @property
    def meter_blocks(self) -> bool:
        """The meter may block on I/O (a SQLite or Redis ledger): the async transport
        then runs the stages that touch it in a worker thread."""
        return bool(getattr(self.meter, "blocking", False))

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        token_provider: TokenProvider,
        audit_log: AuditLog,
        cert_thumbprint: str | None,
        classifier: Classifier | None = None,
        decider: PolicyDecider | None = None,
        meter: Meter | None = None,
        signer: RequestSigner | None = None,
    ) -> Guard:
        """``signer``: the RFC 9421 signer for the client pair already loaded (the
        client's); without one it is built from the settings' key files."""
        if classifier is None:
            classifier = _default_classifier(settings)
        decider = decider or AllowAll()
        obligations = configured_obligations(settings)
        if obligations:
            decider = WithObligations(decider, obligations)
        pricing = PriceTable.load(settings.pricing)
        return cls(
            signer=signer if signer is not None else _signer_for(settings),
            pricing=pricing,
            settings=settings,
            token_provider=token_provider,
            audit_log=audit_log,
            cert_thumbprint=cert_thumbprint,
            classifier=classifier,
            decider=decider,
            meter=meter or Unmetered(),
            enforcer=Enforcer(settings, Router(pricing), getattr(meter, "remaining_usd", None)),
            retry=RetryPolicy.from_settings(settings),
            breakers=BreakerRegistry(settings.breaker_threshold, settings.breaker_cooldown),
            sealer=Sealer.from_file(
                settings.audit_seal_to, max_record_bytes=settings.audit_max_record_bytes
            )
            if settings.audit_seal_to is not None
            else None,
        )

    def close(self) -> None:
        """Release what the guard owns, then close the audit log."""
        try:
            for resource in self.owned:
                resource.close()
        finally:
            self.audit_log.close()

    # ------------------------------------------------------------------ before send

    def begin(self, request: httpx2.Request) -> Call:
        """Run identify → meter. A refused call comes back with ``outcome == "deny"``
        and ``exception`` set; the transport audits it, then raises that exception.

        A stage that raises fails closed: an identity failure is a *failure*, a
        classifier, decider or meter that raises turns the call into a *deny*.
        """
        self.audit_log.check()
        call = Call.from_request(request)
        try:
            self._identify(call)
        except Exception as exc:
            if not isinstance(exc, SecureDSError):
                # only the type: a provider's message might quote what it was given
                exc = IdentityError(
                    f"The token provider failed ({type(exc).__name__}).",
                    hint="Check the token provider's configuration; no call was sent.",
                )
            self.fail(call, exc)
            return call
        stage = "classify"
        try:
            call.classification = self.classifier.classify(call)
            stage = "meter"
            if self._budget_for_decide is not None:
                # policies read context.budget_remaining_usd: one ledger read, only then
                call.budget_remaining_usd = self._budget_for_decide(call)
            stage = "decide"
            decision = call.decision = self.decider.decide(call)
        except Exception as exc:
            return self._deny(call, f"{stage}:error", _stage_failed(stage, exc))
        if decision.effect != "permit":
            return self._deny(
                call, decision.deciding_policy, decision.reason or "the policy denied the call"
            )
        self._rewrite_fim(call)
        try:
            self.enforcer.enforce(call, decision)
        except ObligationRefused as exc:
            return self._deny(
                call, decision.policies[0] if decision.policies else "enforce", str(exc)
            )
        try:
            call.metering = self.meter.reserve(call)
        except Exception as exc:
            return self._deny(call, "meter:error", _stage_failed("meter", exc))
        if not call.metering.allowed:
            return self._refuse_metered(call, call.metering)
        return call

    def _refuse_metered(self, call: Call, metering: Metering) -> Call:
        """A budget refusal is a :class:`BudgetExceeded`; a rate limit is answered the
        way DeepSeek answers one: a :class:`RateLimited` 429 with ``Retry-After``."""
        policy = f"meter:{metering.engine}"
        if metering.kind == "budget":
            exc: SecureDSError = BudgetExceeded(
                f"Call denied by the {metering.engine} meter: {metering.reason}.",
                request=call.request,
                policy=policy,
                details=metering.details or {},
                hint=f"Wait for the reset or ask for a higher budget (audit event "
                f"{call.event_id}).",
                event_id=call.event_id,
            )
            return self._refused(call, exc, policy, metering.reason)
        if metering.kind != "rate_limit":
            return self._deny(call, policy, metering.reason)
        body = {
            "error": {
                "message": metering.reason,
                "type": "rate_limit_error",
                "code": "rate_limit_exceeded",
            }
        }
        headers: dict[str, str] = {}
        if metering.retry_after is not None:
            retry_after = max(0.0, metering.retry_after)
            headers["retry-after"] = str(math.ceil(retry_after))
            hint = f"Retry after {retry_after:.0f} s (audit event {call.event_id})."
        else:  # waiting cannot help: the call alone is larger than the limit
            hint = f"Lower max_tokens or split the request (audit event {call.event_id})."
        response = httpx2.Response(429, headers=headers, json=body, request=call.request)
        exc = RateLimited(
            f"Rate limit reached before sending: {metering.reason}.",
            response=response,
            body=body,
            hint=hint,
            event_id=call.event_id,
        )
        return self._refused(call, exc, policy, metering.reason)

    def _identify(self, call: Call) -> None:
        token = self.token_provider.token()
        call.token = token
        cached = self._identity_cache
        if cached is not None and cached[0] is token:
            call.identity = cached[1]  # same token, same identity: built once per token
            return
        identity = Identity(
            subject=token.subject,
            roles=token.roles,
            attributes=dict(token.attributes),
            auth=token.kind,
            issuer=token.issuer,
            token_id=token.jti,
            cert_thumbprint=self.cert_thumbprint,
            bound_thumbprint=token.bound_thumbprint,
        )
        self._identity_cache = (token, identity)
        call.identity = identity

    def _rewrite_fim(self, call: Call) -> None:
        """DeepSeek serves FIM only on the beta base URL: send ``/completions`` there."""
        if call.action != "fim" or "/beta/" in call.request.url.path:
            return
        endpoint_path = httpx2.URL(self.settings.endpoint).path.rstrip("/")
        call.url = call.request.url.copy_with(path=f"{endpoint_path}/beta/completions")
        call.enforcement.append("fim_beta_base_url")

    def _deny(self, call: Call, policy: str, reason: str) -> Call:
        exc = PolicyDenied(
            f"Call denied by {policy}: {reason}.",
            request=call.request,
            policy=policy,
            hint="Ask the policy owner for access, or change the request "
            f"(audit event {call.event_id}).",
            event_id=call.event_id,
        )
        return self._refused(call, exc, policy, reason)

    @staticmethod
    def _refused(call: Call, exc: SecureDSError, policy: str, reason: str) -> Call:
        """A call refused before sending: audited as a deny, then ``exc`` is raised."""
        call.outcome = "deny"
        call.error = {"type": type(exc).__name__, "policy": policy, "message": reason}
        call.exception = exc
        return call

    # ------------------------------------------------------------------ send helpers

    def outgoing(self, call: Call, token: Token) -> httpx2.Request:
        """The request as it goes on the wire for one attempt.

        The SDK builds a fresh request per call, so it is updated in place when only
        headers change (the common case: rebuilding costs more than the rest of the
        chain); a changed body or URL gets a new request.
        """
        request = call.wire
        if request is None:
            request = call.wire = self._wire_request(call)
        headers = request.headers
        headers["authorization"] = token.authorization
        if "traceparent" not in headers:  # a caller's own trace context is kept as it is
            headers["traceparent"] = f"00-{call.trace_id}-{call.span_id}-01"
        signer = self.signer
        if signer is not None:
            # (after a certificate rotation the client's listener has already swapped in
            # a signer with the new pair's key, before it changed cert_thumbprint)
            # last: covers the final authorization header and exactly the bytes sent
            # (``body_bytes`` follows every rewrite); each attempt gets a new nonce
            signer.sign(request, call.body_bytes)
        return request

    @staticmethod
    def _wire_request(call: Call) -> httpx2.Request:
        original = call.request
        if not call.body_changed and call.url is None:
            return original
        content = call.outgoing_content()
        call.body_bytes = content
        headers = [
            (k, v) for k, v in original.headers.multi_items() if k.lower() != "content-length"
        ]
        return httpx2.Request(
            original.method,
            call.url or original.url,
            headers=headers,
            content=content,
            extensions=original.extensions,
        )

    def refresh_token(self, call: Call) -> Token | None:
        """After a 401: drop the token and fetch another, once. ``None`` if unchanged."""
        old: Token = call.token
        self.token_provider.invalidate(old)
        fresh = self.token_provider.token()
        if fresh is old or fresh.value == old.value:
            return None  # nothing new to offer (static token, API key)
        call.token = fresh
        if call.identity is not None:
            # the record names the token that was finally presented
            call.identity = replace(call.identity, token_id=fresh.jti)
        return fresh

    @staticmethod
    def note_attempt(
        call: Call,
        started: float,
        *,
        status: int | None = None,
        error: str | None = None,
        retry_in: float | None = None,
    ) -> None:
        entry: dict[str, Any] = {"ms": round((time.perf_counter() - started) * 1000.0, 3)}
        if status is not None:
            entry["status"] = status
        if error is not None:
            entry["error"] = error
        if retry_in is not None:
            entry["retry_in_s"] = round(retry_in, 3)
        call.attempts.append(entry)

    # ------------------------------------------------------------------ after send

    def complete(self, call: Call, status: int, body: bytes) -> None:
        """account: a non-streamed success; usage from the JSON body."""
        parsed: Any = None
        try:
            parsed = json.loads(body) if body.strip() else None
        except ValueError:
            parsed = None
        info: dict[str, Any] = {
            "status": status,
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_bytes": len(body),
        }
        if isinstance(parsed, dict):
            _copy_response_fields(parsed, info)
        call.response = info
        if self.sealer is not None:
            call.response_body = body
        self._account(call)

    def complete_stream(self, call: Call, status: int, tracker: SSEUsageTracker) -> None:
        """account: a streamed response that ended (normally or not)."""
        info: dict[str, Any] = {
            "status": status,
            "body_sha256": tracker.sha256.hexdigest(),
            "body_bytes": tracker.size,
            "chunks": tracker.chunks,
            "completed": tracker.done,
        }
        info.update(tracker.fields)
        call.response = info
        if tracker.body is not None:
            call.response_body = bytes(tracker.body)
        self._account(call)

    def stream_tracker(self) -> SSEUsageTracker:
        """A tracker for a streamed response; it keeps the bytes (up to the record
        limit) only while bodies are sealed."""
        if self.sealer is None:
            return SSEUsageTracker()
        return SSEUsageTracker(keep=self.sealer.max_record_bytes)

    def _account(self, call: Call) -> None:
        """Price the call from its usage (the model billed, else the model sent)."""
        if self.pricing is not None:
            response = call.response
            model = response.get("model") or call.model
            if model not in self.pricing.models:
                model = call.model  # a dated model name in the reply: price what was sent
            call.cost = self.pricing.cost(model, response.get("usage"), call.started_at)

    def _settle(self, call: Call) -> None:
        """Settle (success) or release (failure) what the meter reserved: exactly once
        per call it allowed, whatever happened after. A meter that fails here cannot
        take the call back; the failure is recorded, never raised over the audit."""
        if call.settled or call.metering is None or not call.metering.allowed:
            return
        call.settled = True
        try:
            self.meter.settle(call)
        except Exception as exc:
            call.settle_error = f"the meter failed to settle ({type(exc).__name__})"

    def fail(self, call: Call, exc: BaseException) -> None:
        call.outcome = "failure"
        call.error = {"type": type(exc).__name__, "message": str(exc)[:1000]}
        call.exception = exc

    def record(self, call: Call) -> dict[str, Any]:
        """The audit record; settles the meter first so the record shows the outcome."""
        self._settle(call)
        return build_record(call, self.sealer)


def _signer_for(settings: Settings) -> RequestSigner | None:
    """The RFC 9421 signer for the configured client certificate, if signing is on."""
    if not settings.signs_requests:
        return None
    assert settings.client_cert is not None
    assert settings.client_key is not None
    password = settings.client_key_password
    return RequestSigner.from_files(
        settings.client_cert,
        settings.client_key,
        password.reveal().encode() if password is not None else None,
    )


def _default_classifier(settings: Settings) -> Classifier:
    if settings.dlp == "off":
        return NoClassification()
    from ..dlp import Scanner, default_scanner
    from ..dlp._guard import DLPClassifier

    scanner = Scanner.from_config(settings.dlp_config) if settings.dlp_config else default_scanner()
    return DLPClassifier(scanner, cache_entries=settings.dlp_cache)


def _stage_failed(stage: str, exc: Exception) -> str:
    if isinstance(exc, SecureDSError):
        # our own errors are written to be shown (no secrets) and say what to do
        return f"the {stage} stage failed, so the call is refused: {exc}"
    # anything else only by type: a third-party message might quote what it was given
    return f"the {stage} stage failed ({type(exc).__name__}), so the call is refused"


def _copy_response_fields(parsed: dict[str, Any], info: dict[str, Any]) -> None:
    for key in ("id", "model", "system_fingerprint"):
        if isinstance(parsed.get(key), str):
            info[key] = parsed[key]
    usage = parsed.get("usage")
    if isinstance(usage, dict):
        info["usage"] = usage
    choices = parsed.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        if isinstance(reason, str):
            info["finish_reason"] = reason


class SSEUsageTracker:
    """Follows an SSE byte stream to learn what the audit record needs: id, model,
    usage (DeepSeek sends it in a final chunk), finish reason, whether ``[DONE]`` came.

    Only lines that can carry those fields are JSON-decoded, to keep the per-chunk
    cost low; keep-alive comments and blank lines are skipped.
    """

    def __init__(self, keep: int = 0) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        # the raw bytes, for sealed bodies: kept while they stay within ``keep`` bytes
        # (a larger body could not be sealed into a record anyway), else dropped
        self.body: bytearray | None = bytearray() if keep else None
        self._keep = keep
        self.chunks = 0
        self.done = False
        self.fields: dict[str, Any] = {}
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        self.sha256.update(data)
        self.size += len(data)
        if self.body is not None:
            self.body += data
            if self.size > self._keep:
                self.body = None
        self._buffer += data
        if b"\n" not in data:
            return
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                self._data(line[5:].strip())

    def _data(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            self.done = True
            return
        self.chunks += 1
        first = "id" not in self.fields
        if not (first or b'"usage"' in payload or b'"finish_reason":"' in payload):
            return
        try:
            parsed = json.loads(payload)
        except ValueError:
            return
        if isinstance(parsed, dict):
            usage = parsed.get("usage")
            if usage is None:
                parsed.pop("usage", None)
            _copy_response_fields(parsed, self.fields)
