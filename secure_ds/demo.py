"""The end-to-end demo behind ``secure-ds demo``: real calls through the guard chain.

It starts a :class:`~secure_ds.sandbox.Sandbox`, makes calls as different users under
the default Cedar policies (``policies/``): a plain chat, a streamed chat, a FIM
completion, a call that fails twice and is retried, one refused because its token is
bound to another certificate, confidential data redacted for a cleared engineer and
refused for an analyst, a private key refused, a contractor routed and capped (or
refused outside office hours), a caller no policy permits. It then reads the audit
log back and checks that each call left exactly one record saying what happened.
The CLI only renders the :class:`DemoReport`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .audit import read_records
from .client import SecureDeepSeek
from .errors import AuthenticationFailed, PolicyDenied
from .identity import EmbeddedIssuer
from .sandbox import Sandbox

__all__ = ["DemoReport", "DemoStep", "run_demo"]


@dataclass
class DemoStep:
    name: str
    user: str
    expected: str
    observed: str = ""
    ok: bool = False
    event_id: str | None = None
    outcome: str | None = None
    decided_by: str | None = None  # the determining policies, or what a deny is put down to
    attempts: int = 0
    total_tokens: int | None = None
    latency_ms: float | None = None


@dataclass
class DemoReport:
    audit_path: str
    endpoint: str = ""
    steps: list[DemoStep] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "audit_path": self.audit_path,
            "endpoint": self.endpoint,
            "steps": [asdict(step) for step in self.steps],
        }


def run_demo(audit_path: Path, *, on_step: Callable[[DemoStep], None] | None = None) -> DemoReport:
    """Run the demo, appending to ``audit_path``; never raises for a failed step."""
    report = DemoReport(audit_path=str(audit_path))
    policy_dir = demo_policy_dir()
    with Sandbox() as sb:
        report.endpoint = sb.base_url
        records_before = _record_count(audit_path)
        clients: list[SecureDeepSeek] = []

        def client_for(
            user: str, roles: list[str], attributes: dict[str, Any] | None = None, **overrides: Any
        ) -> SecureDeepSeek:
            settings = sb.client_settings(
                user,
                roles=roles,
                attributes=attributes or {},
                audit_path=audit_path,
                backoff_factor=0.05,
                policy_dir=policy_dir,
                **overrides,
            )
            clients.append(SecureDeepSeek(settings=settings))
            return clients[-1]

        steps: list[tuple[DemoStep, Callable[[], str]]] = []
        cleared = {"department": "platform", "clearance": 2, "employment": "employee"}
        alice = client_for("alice", ["engineer"], cleared, model="deepseek-flash@2026-10-17")
        steps.append(
            (
                DemoStep("plain chat", "alice", "permit; model pin recorded"),
                lambda: _chat(alice),
            )
        )
        bob = client_for("bob", ["analyst"], {"department": "finance", "clearance": 1})
        steps.append(
            (
                DemoStep("streamed chat", "bob", "permit; usage from last chunk"),
                lambda: _stream(bob),
            )
        )
        steps.append(
            (
                DemoStep("FIM completion", "alice", "permit; sent to /beta"),
                lambda: _fim(alice),
            )
        )

        def retried() -> str:
            sb.fail_next(503, times=2)
            return _chat(bob)

        steps.append((DemoStep("503 twice, retried", "bob", "permit on attempt 3"), retried))
        mallory = client_for("mallory", ["engineer"])
        steps.append(
            (
                DemoStep("token for another cert", "mallory", "denied: token not bound to cert"),
                lambda: _stolen_token(sb, mallory),
            )
        )
        steps.append(
            (
                DemoStep("email redacted, restored", "alice", "sent as <EMAIL_1>, reply restored"),
                lambda: _redacted(sb, alice),
            )
        )
        steps.append(
            (
                DemoStep("email, no clearance", "bob", "denied: confidential-needs-clearance"),
                lambda: _denied(bob, f"Reply to {_DEMO_EMAIL} about the refund."),
            )
        )
        steps.append(
            (
                DemoStep("private key in prompt", "alice", "denied: no-secrets-in-prompts"),
                lambda: _denied(alice, f"Why is this key rejected?\n{_DEMO_KEY}"),
            )
        )
        carol = client_for("carol", ["contractor"], {"employment": "contractor"})
        steps.append(
            (
                DemoStep(
                    "contractor asks for v4-pro",
                    "carol",
                    "9-5: routed to flash, capped; else denied",
                ),
                lambda: _contractor(carol),
            )
        )
        victor = client_for("victor", ["visitor"])
        steps.append(
            (
                DemoStep("no role that may call", "victor", "denied: no permit matched"),
                lambda: _denied(victor, "Hello?"),
            )
        )

        try:
            for step, action in steps:
                try:
                    step.observed = action()
                except Exception as exc:  # a demo step reports failures, it does not crash
                    step.observed = f"{type(exc).__name__}: {exc}"
                report.steps.append(step)
        finally:
            for client in clients:
                client.close()
        _check_against_audit(report.steps, audit_path, records_before)
        for step in report.steps:
            if on_step is not None:
                on_step(step)
    return report


def _chat(client: SecureDeepSeek) -> str:
    reply = client.chat.completions.create(
        model=client.default_model,
        messages=[{"role": "user", "content": "Summarise zero trust in one line."}],
    )
    return reply.choices[0].message.content or ""


def _stream(client: SecureDeepSeek) -> str:
    parts: list[str] = []
    stream = client.chat.completions.create(
        model=client.default_model,
        messages=[{"role": "user", "content": "Stream a short greeting."}],
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


def _fim(client: SecureDeepSeek) -> str:
    reply = client.completions.create(
        model="deepseek-flash", prompt="def add(a, b):\n", suffix="\n", max_tokens=32
    )
    return reply.choices[0].text


def _stolen_token(sb: Sandbox, client: SecureDeepSeek) -> str:
    """mallory presents her own certificate with a token minted for someone else's."""
    other = sb.client_settings("alice")
    assert other.client_cert is not None
    cert = x509.load_pem_x509_certificates(other.client_cert.read_bytes())[0]
    issuer = client.guard.token_provider
    assert isinstance(issuer, EmbeddedIssuer)
    forged = EmbeddedIssuer(
        signing_key=issuer._key,
        issuer=issuer.issuer,
        audience=issuer.audience,
        subject="mallory",
        client_cert_der=cert.public_bytes(serialization.Encoding.DER),
    )
    client.guard.token_provider = forged
    try:
        _chat(client)
    except PolicyDenied as exc:  # the policy sees the binding does not match: never sent
        return f"PolicyDenied by {exc.policy}"
    except AuthenticationFailed as exc:  # without that policy the endpoint refuses it
        reason = exc.body.get("message") if isinstance(exc.body, dict) else exc.body
        return f"AuthenticationFailed: {reason}"
    return "the call went through (unexpected)"


_DEMO_EMAIL = "jane.doe@example.com"
# A throwaway key made for this demo (never used anywhere): the DLP scanner must see a
# real PEM private-key block to deny the call.
_DEMO_KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2\n"
    "OF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r\n"
    "1RTwjmYSi9R/zpBnuQ4EiMnCqfMPWiZqB4QdbAd0E7oH50VpuZ1P087G\n"
    "-----END PRIVATE KEY-----"
)


def _redacted(sb: Sandbox, client: SecureDeepSeek) -> str:
    reply = client.chat.completions.create(
        model=client.default_model,
        messages=[{"role": "user", "content": f"Reply to {_DEMO_EMAIL} about the refund."}],
    )
    sent = json.dumps(sb.last_request["json"] if sb.last_request else {})
    if _DEMO_EMAIL in sent or "<EMAIL_1>" not in sent:
        return "the address reached the endpoint (unexpected)"
    return reply.choices[0].message.content or ""


def _denied(client: SecureDeepSeek, prompt: str) -> str:
    try:
        client.chat.completions.create(
            model=client.default_model, messages=[{"role": "user", "content": prompt}]
        )
    except PolicyDenied as exc:
        return f"PolicyDenied by {exc.policy}"
    return "the call went through (unexpected)"


def _contractor(client: SecureDeepSeek) -> str:
    try:
        reply = client.chat.completions.create(
            model="deepseek-v4-pro",
            messages=[{"role": "user", "content": "Draft a status update."}],
            max_tokens=4000,
        )
    except PolicyDenied as exc:
        return f"PolicyDenied by {exc.policy} (outside contractor hours)"
    return f"answered by {reply.model}"


def demo_policy_dir() -> Path:
    """The policy folder the demo runs under: ``SECURE_DS_POLICY_DIR`` if set, else the
    repository's ``policies/`` (the demo runs from a source checkout)."""
    configured = os.environ.get("SECURE_DS_POLICY_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1] / "policies"


def _office_hours(record: dict[str, Any]) -> bool:
    context = record["decide"]["context"]
    return bool(context["weekday"] <= 5 and 7 <= context["hour_utc"] < 19)


_EXPECT: dict[str, Callable[[DemoStep, dict[str, Any]], bool]] = {
    "plain chat": lambda s, r: (
        r["outcome"] == "permit"
        and len(r["attempts"]) == 1
        and r["request"]["model_pin"] == "2026-10-17"
        and r["request"]["model"] == "deepseek-flash"
    ),
    "streamed chat": lambda s, r: (
        r["outcome"] == "permit"
        and r["response"]["completed"] is True
        and r["response"].get("usage", {}).get("total_tokens", 0) > 0
    ),
    "FIM completion": lambda s, r: (
        r["outcome"] == "permit" and r["request"]["path"].endswith("/beta/completions")
    ),
    "503 twice, retried": lambda s, r: (
        r["outcome"] == "permit" and [a.get("status") for a in r["attempts"]] == [503, 503, 200]
    ),
    "token for another cert": lambda s, r: (
        r["outcome"] == "deny"
        and r["actor"]["certificate_bound"] is False
        and r["decide"]["policies"] == ["prompts-need-certificate-bound-token"]
        and r["attempts"] == []
    ),
    "email redacted, restored": lambda s, r: (
        r["outcome"] == "permit"
        and r["classify"]["classification"] == "confidential"
        and "confidential-redacted-for-engineers" in r["decide"]["policies"]
        and any(a.startswith("redact:") and "[email=1]" in a for a in r["enforce"]["applied"])
        and _DEMO_EMAIL in s.observed
        and _DEMO_EMAIL not in json.dumps(r)
    ),
    "email, no clearance": lambda s, r: (
        r["outcome"] == "deny"
        and r["decide"]["policies"][0] == "confidential-needs-clearance"
        and r["attempts"] == []
        and _DEMO_EMAIL not in json.dumps(r)
    ),
    "private key in prompt": lambda s, r: (
        r["outcome"] == "deny"
        and r["classify"]["classification"] == "secret"
        and r["decide"]["policies"] == ["no-secrets-in-prompts"]
        and r["attempts"] == []
        and s.observed.startswith("PolicyDenied")
    ),
    "contractor asks for v4-pro": lambda s, r: (
        (
            r["outcome"] == "permit"
            and r["request"]["model"] == "deepseek-flash"
            and r["request"]["max_tokens"] == 1024
            and r["decide"]["obligations"] == ["cap_max_tokens:1024", "route:deepseek-flash"]
        )
        if _office_hours(r)
        else (r["outcome"] == "deny" and r["decide"]["policies"] == ["contractors-office-hours"])
    ),
    "no role that may call": lambda s, r: (
        r["outcome"] == "deny"
        and r["decide"]["policies"] == []
        and r["error"]["policy"] == "no permit matched"
    ),
}


def _check_against_audit(steps: list[DemoStep], audit_path: Path, records_before: int) -> None:
    """Each step must have produced exactly one new record, in order, as expected."""
    records = _records(audit_path)[records_before:]
    for index, step in enumerate(steps):
        if index >= len(records):
            step.ok = False
            step.observed += " [no audit record]"
            continue
        record = records[index]
        step.event_id = record["event_id"]
        step.outcome = record["outcome"]
        decide = record.get("decide") or {}
        step.decided_by = ", ".join(decide.get("policies") or []) or decide.get("denied_by")
        step.attempts = len(record["attempts"])
        step.latency_ms = record["latency_ms"]
        usage = (record.get("response") or {}).get("usage") or {}
        step.total_tokens = usage.get("total_tokens")
        step.ok = _EXPECT[step.name](step, record)
    if len(records) != len(steps):
        for step in steps:
            step.ok = False
        steps[-1].observed += f" [expected {len(steps)} audit records, found {len(records)}]"


def _records(path: Path) -> list[dict[str, Any]]:
    """The log's call records (its checkpoint lines are skipped by read_records)."""
    try:
        return list(read_records(path))
    except FileNotFoundError:
        return []


def _record_count(path: Path) -> int:
    return len(_records(path))


def default_demo_audit_path() -> Path:
    from .config import _default_audit_path

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return _default_audit_path().parent / "demo" / f"audit-{stamp}.jsonl"
