"""Audit records as the guard chain writes them (valid against audit/record.schema.json),
generated deterministically for the report tests and bench/bench_report.py."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from secure_ds.audit import AuditLog, Signer

PRINCIPALS = [("alice", "research"), ("bob", "research"), ("carol", "legal"), ("dave", None)]
MODELS = ["deepseek-chat", "deepseek-reasoner"]
FINDING_KINDS = ["email", "iban", "api_key", "phone"]
REVISIONS = ["a" * 64, "b" * 64]


def make_record(
    i: int,
    time: dt.datetime,
    *,
    outcome: str = "permit",
    principal: tuple[str, str | None] = ("alice", "research"),
    model: str = "deepseek-chat",
    findings: list[tuple[str, int]] = (),  # type: ignore[assignment]
    revision: str = REVISIONS[0],
    engine: str = "cedar",
    meter_engine: str = "budget",
    auth: str = "jwt",
    bound: bool = True,
) -> dict[str, Any]:
    """One complete record; the keyword arguments vary what reports count."""
    subject, team = principal
    body = f"body {i}".encode()
    usd = 0.000_27 + (i % 7) * 0.000_01 if outcome == "permit" else None
    deny = outcome == "deny"
    return {
        "schema": "secure-ds.audit/1",
        "event_id": str(uuid.UUID(int=(0x0190 << 112) | (0x7 << 76) | (0x8 << 60) | i)),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S.") + f"{time.microsecond // 1000:03d}Z",
        "trace_id": hashlib.md5(body).hexdigest(),  # noqa: S324 (an id, not security)
        "outcome": outcome,
        "action": "chat",
        "actor": {
            "subject": subject,
            "roles": ["engineer"],
            "attributes": {"team": team} if team else {},
            "auth": auth,
            "issuer": "https://issuer.test",
            "token_jti": f"jti-{i}",
            "cert_sha256": "c" * 43 if bound else None,
            "certificate_bound": bound,
        },
        "request": {
            "method": "POST",
            "endpoint": "https://api.test",
            "path": "/chat/completions",
            "model": model,
            "model_requested": model,
            "model_pin": None,
            "stream": False,
            "max_tokens": 256,
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_bytes": len(body),
        },
        "classify": {
            "engine": "presidio",
            "classification": "confidential" if findings else "internal",
            "findings": [{"kind": k, "count": n} for k, n in findings],
        },
        "decide": {
            "effect": "deny" if deny else "permit",
            "engine": engine,
            "policies": ["policy0"],
            "policy_names": ["no-secrets" if deny else "engineers-chat"],
            "obligations": [],
            "advice": [],
            "errors": [],
            "reason": "forbid matched" if deny else "permit matched",
            "denied_by": "no-secrets" if deny else None,
            "revision": revision if engine == "cedar" else None,
            "commit": "0123456789abcdef0123456789abcdef01234567" if engine == "cedar" else None,
            "eval_us": 41.5,
            "context": None,
            "reload_error": None,
        },
        "enforce": {"applied": []},
        "meter": None
        if deny
        else {
            "engine": meter_engine,
            "allowed": True,
            "reserved_usd": 0.001 if meter_engine == "budget" else None,
            "reason": "within budget",
            "kind": None,
            "retry_after_s": None,
            "details": None,
            "remaining_usd": 9.5 if meter_engine == "budget" else None,
        },
        "attempts": [] if deny else [{"ms": 120.5, "status": 200 if outcome == "permit" else 500}],
        "response": {"status": 200, "body_sha256": "d" * 64, "body_bytes": 512}
        if outcome == "permit"
        else None,
        "cost": None
        if usd is None
        else {
            "usd": usd,
            "model": model,
            "window": "peak",
            "pricing": "deepseek-2025-09",
            "tokens": {"input_cache_hit": 10, "input_cache_miss": 90, "output": 40, "reasoning": 0},
            "usd_by_part": {"input_cache_hit": 0.0, "input_cache_miss": usd / 2, "output": usd / 2},
        },
        "fhe": None,
        "latency_ms": 130.25,
        "error": {"type": "ServerError", "message": "upstream 500"}
        if outcome == "failure"
        else None,
    }


def varied_records(
    n: int, start: dt.datetime, step: dt.timedelta, seed: int = 7
) -> Iterator[dict[str, Any]]:
    """``n`` records from ``start``, ``step`` apart: mostly permits, some denials and
    failures, a few DLP findings, two principals' teams, two models, two revisions."""
    rng = random.Random(seed)
    for i in range(n):
        roll = rng.random()
        outcome = "deny" if roll < 0.1 else "failure" if roll < 0.13 else "permit"
        findings = [(rng.choice(FINDING_KINDS), rng.randint(1, 3))] if rng.random() < 0.2 else []
        yield make_record(
            i,
            start + i * step,
            outcome=outcome,
            principal=rng.choice(PRINCIPALS),
            model=rng.choice(MODELS),
            findings=findings,
            revision=REVISIONS[0] if i < n // 2 else REVISIONS[1],
        )


def write_log(
    path: Path,
    records: Iterator[dict[str, Any]] | list[dict[str, Any]],
    *,
    every: int = 1000,
    signer: Signer | None = None,
) -> None:
    """A signed audit log of ``records`` (checkpoints every ``every`` and on close)."""
    with AuditLog(path, fsync="never", checkpoint_every=every, signer=signer) as log:
        for rec in records:
            log.append(rec)
