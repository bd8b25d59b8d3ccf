"""The decide stage against raw cedarpy, in one run, on the default policies.

Baseline: ``cedarpy.is_authorized`` with everything Cedar can reuse already built —
the parsed ``PolicySet``, the ``Schema`` and the ``Entities`` (catalogue + principal)
— on the exact requests our stage produces. It is what any careful integration pays
per decision. Ours: :meth:`CedarDecider.decide` on a :class:`Call`, which also builds
the context from the call (DLP findings, time, certificate binding), finds the cached
principal, evaluates, turns the diagnostics into a decision with merged obligations,
and fails closed on errors.

The two are timed in alternation over a mix of calls (engineer permit, contractor
with obligations, confidential with redaction, secret denied, no permit, model list),
so drift on a shared machine hits both alike. Target (policy issue): decide p50
<= 1.2x the raw baseline.

    .venv/bin/python bench/bench_policy.py [--rounds 4000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cedarpy
import httpx2
from rich.console import Console
from rich.table import Table

from secure_ds.guard import Classification, Identity
from secure_ds.guard._call import Call
from secure_ds.policy import CedarDecider, load_bundle
from secure_ds.policy._inputs import ACTION, API_RESOURCE, MODEL, MODEL_ACTIONS

POLICIES = Path(__file__).resolve().parent.parent / "policies"
TARGET_RATIO = 1.2

# (roles, attributes, model, path, classification, findings)
MIX: list[tuple[tuple[str, ...], dict[str, Any], str, str, str, tuple[tuple[str, int], ...]]] = [
    (("engineer",), {"clearance": 2}, "deepseek-flash", "/chat/completions", "public", ()),
    (("contractor",), {}, "deepseek-v4-pro", "/chat/completions", "public", ()),
    (("engineer",), {"clearance": 2}, "deepseek-flash", "/chat/completions", "confidential",
     (("email", 2),)),
    (("analyst",), {}, "deepseek-flash", "/chat/completions", "secret", (("api_key", 1),)),
    (("visitor",), {}, "deepseek-flash", "/chat/completions", "public", ()),
    (("analyst",), {}, "", "/models", "unclassified", ()),
]  # fmt: skip


def _call(spec: tuple[Any, ...], index: int) -> Call:
    roles, attributes, model, path, level, findings = spec
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 900}
    method = "GET" if path == "/models" else "POST"
    request = httpx2.Request(
        method,
        f"https://api.deepseek.com{path}",
        content=json.dumps(body).encode() if method == "POST" else b"",
    )
    call = Call.from_request(request)
    # office hours on a Monday, so the contractor's call is a permit with obligations
    call.started_at = time.mktime((2026, 11, 23, 10, 0, 0, 0, 0, 0)) - time.timezone
    call.identity = Identity(
        subject=f"user-{index}",
        roles=roles,
        attributes=attributes,
        auth="jwt",
        issuer="bench",
        token_id="jti",
        cert_thumbprint="t",
        bound_thumbprint="t",
    )
    call.classification = Classification(engine="dlp", level=level, findings=findings)
    return call


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(rounds: int) -> dict[str, Any]:
    bundle = load_bundle(POLICIES)
    calls = [_call(spec, i) for i, spec in enumerate(MIX)]
    deciders = [CedarDecider(bundle) for _ in calls]  # one per identity, as one per client
    # the raw baseline's inputs: exactly what the stage sends to Cedar, prebuilt
    raw: list[tuple[dict[str, Any], cedarpy.Entities]] = []
    for call, decider in zip(calls, deciders, strict=True):
        decision = decider.decide(call)  # warms the principal cache
        identity = call.identity
        assert identity is not None
        assert decision.context is not None
        inputs = decider._state[1].principal(identity.subject, identity.roles, identity.attributes)
        resource = (
            {"type": MODEL, "id": call.model} if call.action in MODEL_ACTIONS else API_RESOURCE
        )
        request = {
            "principal": inputs.uid,
            "action": {"type": ACTION, "id": call.action},
            "resource": resource,
            "context": decision.context,
        }
        raw.append((request, inputs.entities))
    effects = [d.decide(c).effect for d, c in zip(deciders, calls, strict=True)]
    ours: list[float] = []
    base: list[float] = []
    perf = time.perf_counter
    policy_set, schema = bundle.policy_set, bundle.schema
    for _ in range(rounds):
        for call, decider, (request, entities) in zip(calls, deciders, raw, strict=True):
            start = perf()
            cedarpy.is_authorized(request, policy_set, entities, schema)
            middle = perf()
            decider.decide(call)
            end = perf()
            base.append((middle - start) * 1e6)
            ours.append((end - middle) * 1e6)
    raw_p50, raw_p99 = statistics.median(base), _percentile(base, 0.99)
    decide_p50, decide_p99 = statistics.median(ours), _percentile(ours, 0.99)
    return {
        "decisions": len(ours),
        "mix": [
            f"{'+'.join(s[0])} {s[3]} {s[4]} -> {e}" for s, e in zip(MIX, effects, strict=True)
        ],
        "raw_p50_us": raw_p50,
        "raw_p99_us": raw_p99,
        "decide_p50_us": decide_p50,
        "decide_p99_us": decide_p99,
        "ratio_p50": decide_p50 / raw_p50,
        "ratio_p99": decide_p99 / raw_p99,
        "target_ratio": TARGET_RATIO,
        "meets_target": decide_p50 / raw_p50 <= TARGET_RATIO,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4000, help="passes over the call mix")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    result = run(args.rounds)
    console = Console()
    table = Table(title=f"decide vs raw cedarpy, {result['decisions']} decisions each")
    for column in ("", "p50 µs", "p99 µs"):
        table.add_column(column, justify="right")
    table.add_row("raw cedarpy (reused PolicySet)", *_fmt(result, "raw"))
    table.add_row("secure-ds decide stage", *_fmt(result, "decide"))
    table.add_row("ratio", f"{result['ratio_p50']:.2f}x", f"{result['ratio_p99']:.2f}x")
    console.print(table)
    for line in result["mix"]:
        console.print(f"  {line}", highlight=False)
    verdict = "meets" if result["meets_target"] else "MISSES"
    console.print(f"p50 ratio {result['ratio_p50']:.2f}x {verdict} the <= {TARGET_RATIO}x target")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def _fmt(result: dict[str, Any], key: str) -> tuple[str, str]:
    return f"{result[f'{key}_p50_us']:.1f}", f"{result[f'{key}_p99_us']:.1f}"


if __name__ == "__main__":
    sys.exit(main())
