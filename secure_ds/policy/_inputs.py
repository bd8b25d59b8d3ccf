"""Turn a call (or a recorded call) into a Cedar request: principal, action, resource,
context, and the entities the request needs.

The principal is ``SecureDS::User::"<sub>"``, a member of ``SecureDS::Role::"<r>"``
for each role in the token, with the token's ``attrs`` claims as attributes. Claims
the schema does not declare for ``User`` are left out (tokens carry more than
policies use); a declared claim of the wrong type is a :class:`ClaimError`, which
the decider turns into a deny naming the claim.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cedarpy

from ._bundle import NAMESPACE, PolicyBundle

__all__ = [
    "API_RESOURCE",
    "MODEL_ACTIONS",
    "ClaimError",
    "InputBuilder",
    "PrincipalInputs",
    "call_context",
    "local_address",
    "principal_json",
]

USER = f"{NAMESPACE}::User"
ROLE = f"{NAMESPACE}::Role"
MODEL = f"{NAMESPACE}::Model"
ACTION = f"{NAMESPACE}::Action"
API_RESOURCE = {"type": f"{NAMESPACE}::Api", "id": "deepseek"}
MODEL_ACTIONS = frozenset({"chat", "stream", "fim", "fhe_infer"})
_LEVELS = {"public": 0, "internal": 1, "confidential": 2, "secret": 3}
ANONYMOUS = "anonymous"


class ClaimError(ValueError):
    """A token claim does not fit the schema (``claim`` names it)."""

    def __init__(self, claim: str, problem: str) -> None:
        self.claim = claim
        super().__init__(problem)


@dataclass(frozen=True)
class PrincipalInputs:
    """The per-identity part of every request: built once per token and reused."""

    uid: dict[str, str]
    entities: cedarpy.Entities  # the catalogue plus this principal
    ignored_claims: tuple[str, ...]  # claims the schema does not declare


def principal_json(
    subject: str | None, roles: Sequence[str], attributes: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "uid": {"type": USER, "id": subject or ANONYMOUS},
        "attrs": dict(attributes),
        "parents": [{"type": ROLE, "id": role} for role in roles],
    }


@lru_cache(maxsize=1)
def local_address() -> str:
    """This host's address as policies see it (``context.source_ip``). Resolved once;
    a host whose name does not resolve reports the loopback address."""
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
    return address


def call_context(
    *,
    level: str,
    findings: Sequence[tuple[str, int]],
    max_tokens: object,
    stream: bool,
    started_at: float,
    auth: str,
    certificate_bound: bool,
    cert_sha256: str | None,
    source_ip: str,
    budget_remaining_usd: float | None = None,
) -> dict[str, Any]:
    """The context record the schema's ``CallContext`` declares, in Cedar's JSON."""
    seconds = int(started_at)
    days = seconds // 86400  # day 0, 1970-01-01, was a Thursday (ISO weekday 4)
    context: dict[str, Any] = {
        "classification": level,
        "classification_level": _LEVELS.get(level, -1),
        "findings": [kind for kind, _ in findings],
        "finding_count": sum(count for _, count in findings),
        "max_tokens": max_tokens if type(max_tokens) is int and max_tokens >= 0 else 0,
        "stream": stream,
        "hour_utc": seconds // 3600 % 24,
        "weekday": (days + 3) % 7 + 1,
        "source_ip": {"__extn": {"fn": "ip", "arg": source_ip}},
        "auth": auth,
        "certificate_bound": certificate_bound,
    }
    if cert_sha256:
        context["client_cert_sha256"] = cert_sha256
    if budget_remaining_usd is not None:
        # Cedar decimals carry at most four decimal places; round down, never up
        cents = math.floor(budget_remaining_usd * 10_000) / 10_000
        context["budget_remaining_usd"] = {"__extn": {"fn": "decimal", "arg": f"{cents:.4f}"}}
    return context


class InputBuilder:
    """Builds principal inputs for one bundle, caching them per identity."""

    _CACHE_SIZE = 256

    def __init__(self, bundle: PolicyBundle) -> None:
        self.bundle = bundle
        self._cache: OrderedDict[str, PrincipalInputs] = OrderedDict()
        self._lock = threading.Lock()

    def principal(
        self, subject: str | None, roles: Sequence[str], attributes: Mapping[str, Any]
    ) -> PrincipalInputs:
        key = json.dumps([subject, list(roles), attributes], sort_keys=True, default=str)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        inputs = self._build(principal_json(subject, roles, attributes))
        with self._lock:
            self._cache[key] = inputs
            if len(self._cache) > self._CACHE_SIZE:
                self._cache.popitem(last=False)
        return inputs

    def _build(self, entity: dict[str, Any]) -> PrincipalInputs:
        schema = self.bundle.schema
        ignored: list[str] = []
        try:
            entities = self.bundle.catalogue.with_added_json_str(json.dumps([entity]), schema)
        except ValueError:
            # Cedar's entity parser only says "does not conform"; find the claims at
            # fault one by one (this runs once per new identity, never per call).
            kept: dict[str, Any] = {}
            for claim, value in entity["attrs"].items():
                problem = self._claim_problem(entity, claim, value)
                if problem is None:
                    kept[claim] = value
                elif "should not exist" in problem:
                    ignored.append(claim)
                else:
                    raise ClaimError(claim, problem) from None
            entity = {**entity, "attrs": kept}
            try:
                entities = self.bundle.catalogue.with_added_json_str(json.dumps([entity]), schema)
            except ValueError:
                problem = self._entity_problem(entity) or "does not conform to the schema"
                raise ClaimError("", problem) from None
        return PrincipalInputs(
            uid=entity["uid"], entities=entities, ignored_claims=tuple(sorted(ignored))
        )

    def _claim_problem(self, entity: dict[str, Any], claim: str, value: Any) -> str | None:
        if isinstance(value, float):
            return f"claim {claim!r} is a decimal number; Cedar attributes take integers"
        probe = {**entity, "attrs": {claim: value}}
        problem = self._entity_problem(probe)
        if problem is None or "should not exist" in problem:
            return problem
        if "type mismatch" in problem or "expected" in problem:
            return f"claim {claim!r} has the wrong type for the schema: " + problem
        if "missing" in problem or "required" in problem:
            return None  # another required attribute is absent: judged on the whole entity
        return f"claim {claim!r}: {problem}"

    def _entity_problem(self, entity: dict[str, Any]) -> str | None:
        probe = {
            "principal": entity["uid"],
            "action": {"type": ACTION, "id": "list_models"},
            "resource": API_RESOURCE,
        }
        result = cedarpy.is_authorized(probe, "", [entity], self.bundle.schema)
        for error in result.diagnostics.errors:
            if "entit" in error or "attribute" in error:
                # drop the echo of the entity JSON Cedar puts before the reason
                return error.rsplit("]: ", 1)[-1]
        return None
