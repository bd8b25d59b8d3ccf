"""A guard-chain Call as the decide stage sees it, built without a network."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2

from secure_ds.guard import Classification, Identity
from secure_ds.guard._call import Call


def monday_at(hour: int) -> float:
    """A Monday (2026-11-23) at ``hour``:30 UTC, as a Unix time."""
    return time.mktime((2026, 11, 23, hour, 30, 0, 0, 0, 0)) - time.timezone


def make_call(
    body: dict[str, Any] | None = None,
    *,
    path: str = "/chat/completions",
    roles: tuple[str, ...] = ("engineer",),
    attributes: dict[str, Any] | None = None,
    level: str = "public",
    findings: tuple[tuple[str, int], ...] = (),
    bound: bool = True,
    started_at: float | None = None,
) -> Call:
    """alice's call with the given roles, claims, DLP result and certificate binding."""
    if body is None:
        body = {"model": "deepseek-flash", "messages": []}
    request = httpx2.Request(
        "POST", f"https://api.example{path}", content=json.dumps(body).encode()
    )
    call = Call.from_request(request)
    if started_at is not None:
        call.started_at = started_at
    call.identity = Identity(
        subject="alice",
        roles=roles,
        attributes=attributes or {},
        auth="jwt",
        issuer="test",
        token_id="jti-1",
        cert_thumbprint="abc",
        bound_thumbprint="abc" if bound else None,
    )
    call.classification = Classification(engine="dlp", level=level, findings=findings)
    return call
