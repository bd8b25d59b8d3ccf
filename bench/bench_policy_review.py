"""Policy review replay throughput: `secure-ds policy review` against a naive replay loop.

Generates an audit log of realistic recorded calls (JSON lines in the shape of
``secure_ds.audit._record.build_record``: a few hundred principals with their roles
and attribute claims, mostly office hours, a handful of models, DLP classifications
with findings, varied ``max_tokens``, some API-key calls, some calls made without a
policy engine and a few malformed lines), then replays it against two policy sets:
this repository's ``policies/`` (OLD) and a copy that lets analysts use premium
models and raises the contractor token cap (NEW, so there is something to report).

Measured in one run, on the same machine and file:

* ``review``: :func:`secure_ds.policy._review.review_bundles` over the whole log,
  both sides, reading and parsing the file included (median of ``--repeat``);
* ``naive``: per record, parse it and call ``cedarpy.is_authorized`` against each
  side (principals built once per identity, no grouping of requests) on a
  ``--naive``-record slice, the floor any replay without grouping pays.

Target (policy issue): replay >= 10,000 recorded requests/s against both sides.

    .venv/bin/python bench/bench_policy_review.py [--records 100000] [--naive 5000]
        [--repeat 3] [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cedarpy
from rich.console import Console
from rich.table import Table

from secure_ds.policy import ClaimError, InputBuilder, PolicyOutcomes, interpret, load_bundle
from secure_ds.policy._bundle import PolicyBundle
from secure_ds.policy._decider import prepare_request
from secure_ds.policy._inputs import MODEL_ACTIONS, PrincipalInputs
from secure_ds.policy._review import review_bundles

POLICIES = Path(__file__).resolve().parent.parent / "policies"
TARGET_RECORDS_S = 10_000.0
LEVELS = {"unclassified": -1, "public": 0, "internal": 1, "confidential": 2, "secret": 3}
DEPARTMENTS = ["eng", "data", "finance", "legal", "sales", "support", "research", "ops"]
FINDING_KINDS = {
    "internal": ["hostname", "internal_url"],
    "confidential": ["email", "phone", "credit_card", "iban", "us_ssn"],
    "secret": ["aws_access_key", "private_key", "jwt"],
}
HOSTS = ["10.1.4.17", "10.1.4.18", "10.2.0.9", "192.168.7.21"]


def make_principals(rng: random.Random, count: int) -> list[dict[str, Any]]:
    roles_mix = [
        (("engineer",), 45),
        (("analyst",), 25),
        (("contractor",), 12),
        (("finance",), 5),
        (("engineer", "finance"), 5),
        (("contractor", "engineer"), 3),
        ((), 5),
    ]
    role_sets = [r for r, _ in roles_mix]
    weights = [w for _, w in roles_mix]
    principals = []
    for index in range(count):
        roles = rng.choices(role_sets, weights)[0]
        contractor = "contractor" in roles
        attributes: dict[str, Any] = {
            "department": rng.choice(DEPARTMENTS),
            "employment": "contractor" if contractor else "employee",
            "tenant": "acme",
        }
        if rng.random() < 0.9:  # some tokens carry no clearance claim
            attributes["clearance"] = rng.choices([0, 1, 2, 3], [10, 40, 40, 10])[0]
        if rng.random() < 0.3:
            attributes["location"] = rng.choice(["DE", "FR", "US"])  # not in the schema
        principals.append(
            {
                "subject": f"user{index:04d}@corp.example",
                "roles": list(roles),
                "attributes": attributes,
                "cert": uuid.UUID(int=rng.getrandbits(128)).hex,
                "model": rng.choices(["deepseek-flash", "deepseek-v4-pro"], [75, 25])[0],
                "tz": rng.choice([-5, 0, 0, 1, 1, 2, 8]),  # the office's UTC offset
                "host": rng.choice(HOSTS),
                "api_key": rng.random() < 0.03,
            }
        )
    return principals


def make_record(rng: random.Random, who: dict[str, Any], at: float) -> dict[str, Any]:
    action = rng.choices(["chat", "stream", "fim", "list_models", "balance"], [55, 25, 12, 6, 2])[0]
    model: str | None = None
    if action in MODEL_ACTIONS:
        model = (
            who["model"]
            if rng.random() < 0.8
            else rng.choice(["deepseek-flash", "deepseek-v4-pro"])
        )
        if rng.random() < 0.02:
            model = "deepseek-v3-legacy"  # not in the catalogue: a catalogue deny
        elif rng.random() < 0.05:
            model += "@2026-10-17"
    level = rng.choices(list(LEVELS), [5, 50, 30, 12, 3])[0]
    kinds = FINDING_KINDS.get(level, [])
    findings = sorted(set(rng.sample(kinds, rng.randint(1, min(2, len(kinds)))))) if kinds else []
    api_key = who["api_key"]
    moment = time.gmtime(at)
    context = {
        "classification": level,
        "classification_level": LEVELS[level],
        "findings": findings,
        "finding_count": sum(rng.randint(1, 3) for _ in findings),
        "max_tokens": rng.choice([0, 0, 256, 512, 1024, 2048, 4096]),
        "stream": action == "stream",
        "hour_utc": moment.tm_hour,
        "weekday": moment.tm_wday + 1,
        "source_ip": {"__extn": {"fn": "ip", "arg": who["host"]}},
        "auth": "api_key" if api_key else "jwt",
        "certificate_bound": not api_key and rng.random() < 0.97,
    }
    if not api_key:
        context["client_cert_sha256"] = who["cert"]
    event = str(uuid.UUID(int=rng.getrandbits(128)))
    no_engine = rng.random() < 0.01  # made before the policy engine was configured
    return {
        "schema": "secure-ds.audit/1",
        "event_id": event,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", moment),
        "trace_id": event.replace("-", ""),
        "outcome": "permit",
        "action": action,
        "actor": {
            "subject": who["subject"],
            "roles": who["roles"],
            "attributes": who["attributes"],
            "auth": "api_key" if api_key else "jwt",
            "issuer": "https://idp.corp.example",
            "token_jti": str(uuid.UUID(int=rng.getrandbits(128))),
            "cert_sha256": who["cert"],
            "certificate_bound": context["certificate_bound"],
        },
        "request": {
            "method": "GET" if action in ("list_models", "balance") else "POST",
            "endpoint": "https://api.deepseek.example",
            "path": {
                "list_models": "/models",
                "balance": "/user/balance",
                "fim": "/completions",
            }.get(action, "/chat/completions"),
            "model": model.split("@")[0] if model else None,
            "model_requested": model,
            "model_pin": model.split("@")[1] if model and "@" in model else None,
            "stream": action == "stream",
            "max_tokens": context["max_tokens"] or None,
            "body_sha256": uuid.UUID(int=rng.getrandbits(128)).hex * 2,
            "body_bytes": rng.randint(60, 9000),
        },
        "classify": {
            "engine": "dlp",
            "classification": level,
            "findings": [{"kind": k, "count": 1} for k in findings],
        },
        "decide": None
        if no_engine
        else {
            "effect": "permit",
            "engine": "cedar",
            "policies": ["engineers-use-code-models"],
            "policy_names": ["engineers-use-code-models"],
            "obligations": [],
            "advice": [],
            "errors": [],
            "reason": "",
            "denied_by": None,
            "revision": "sha256:" + "0" * 64,
            "commit": None,
            "eval_us": round(rng.uniform(80, 400), 1),
            "context": context,
            "reload_error": None,
        },
        "enforce": {"applied": []},
        "meter": {"engine": "unmetered", "allowed": True, "reserved_usd": None, "reason": ""},
        "attempts": [{"ms": round(rng.uniform(40, 900), 3), "status": 200}],
        "response": {"status": 200, "body_bytes": rng.randint(200, 20000)},
        "latency_ms": round(rng.uniform(40, 900), 3),
        "error": None,
    }


def write_log(path: Path, records: int, seed: int) -> None:
    """``records`` lines over 30 days, office hours in each principal's time zone."""
    rng = random.Random(seed)
    principals = make_principals(rng, 300)
    start = 1_761_955_200.0  # 2025-11-01T00:00Z
    with path.open("w", encoding="utf-8") as out:
        for index in range(records):
            who = rng.choice(principals)
            day = rng.randrange(30)
            local_hour = min(max(rng.gauss(13.0, 3.0), 0.0), 23.99)
            at = start + day * 86400 + (local_hour - who["tz"]) * 3600 + rng.uniform(0, 59)
            if index % 10_000 == 9_999:
                out.write('{"schema": "secure-ds.audit/1", "event_id": \n')  # torn write
                continue
            out.write(json.dumps(make_record(rng, who, at), separators=(",", ":")) + "\n")


def new_policies(target: Path) -> Path:
    shutil.copytree(POLICIES, target)
    access = target / "access.cedar"
    text = access.read_text(encoding="utf-8")
    text = text.replace('when { resource.cost_tier == "standard" };', ";")
    text = text.replace("cap_max_tokens:1024", "cap_max_tokens:4096")
    access.write_text(text, encoding="utf-8")
    return target


def replayable(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The records of the first ``limit`` lines that carry a policy context."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle):
            if limit is not None and number >= limit:
                return
            try:
                record = json.loads(line)
            except ValueError:
                continue
            decide = record.get("decide")
            if decide and decide.get("context") is not None:
                yield record


def distinct_requests(path: Path) -> int:
    """Distinct (principal, action, model, context) in the log, for the table: how much
    an exact de-duplication alone would save (not timed)."""
    seen: set[str] = set()
    for record in replayable(path):
        actor = record["actor"] or {}
        key = [
            actor.get("subject"),
            actor.get("roles"),
            actor.get("attributes"),
            record["action"],
            record["request"]["model_requested"],
            record["decide"]["context"],
        ]
        seen.add(json.dumps(key, sort_keys=True))
    return len(seen)


def naive_replay(path: Path, limit: int, bundles: list[PolicyBundle]) -> tuple[int, float]:
    """Per record and side: ``cedarpy.is_authorized``; no grouping of requests."""
    sides = [(b, InputBuilder(b), PolicyOutcomes(b)) for b in bundles]
    replayed = 0
    started = time.perf_counter()
    for record in replayable(path, limit):
        actor = record["actor"] or {}
        for bundle, builder, outcomes in sides:
            try:
                principal: PrincipalInputs | ClaimError = builder.principal(
                    actor.get("subject"), actor.get("roles", ()), actor.get("attributes", {})
                )
            except ClaimError as exc:
                principal = exc
            prepared = prepare_request(
                bundle,
                record["action"],
                record["request"]["model_requested"],
                principal,
                record["decide"]["context"],
            )
            if isinstance(prepared, tuple):  # else refused before Cedar, as the decider does
                request, entities = prepared
                result = cedarpy.is_authorized(request, bundle.policy_set, entities, bundle.schema)
                interpret(outcomes, result)
        replayed += 1
    return replayed, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="records in the log")
    parser.add_argument("--naive", type=int, default=5_000, help="records for the naive loop")
    parser.add_argument("--repeat", type=int, default=3, help="timed review runs (median)")
    parser.add_argument("--seed", type=int, default=20251101, help="seed of the generated log")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results")
    parser.add_argument(
        "--quick", action="store_true", help="5,000 records, 1,000 naive, 1 run (a smoke test)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.naive, args.repeat = 5_000, 1_000, 1

    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench-policy-review-") as tmp:
        folder = Path(tmp)
        log = folder / "audit.jsonl"
        with console.status(f"Generating {args.records:,} audit records..."):
            write_log(log, args.records, args.seed)
        old = load_bundle(POLICIES)
        new = load_bundle(new_policies(folder / "new"))

        runs: list[float] = []
        report = None
        for _ in range(args.repeat):
            started = time.perf_counter()
            report = review_bundles(old, new, audit=[log], sweep=False)
            runs.append(time.perf_counter() - started)
        assert report is not None
        replay = report.replay
        seconds = statistics.median(runs)
        ours = replay.records / seconds

        distinct = distinct_requests(log)
        naive_records, naive_seconds = naive_replay(log, args.naive, [old, new])
        naive = naive_records / naive_seconds

        started = time.perf_counter()
        swept = review_bundles(old, new, sweep=True)
        sweep_seconds = time.perf_counter() - started

    table = Table(title="Policy review replay, OLD and NEW each (records/s include reading)")
    for column in ("method", "records", "distinct", "evaluated/side", "seconds", "records/s"):
        table.add_column(column, justify="left" if column == "method" else "right")
    table.add_row(
        "review (grouped, batched)",
        f"{replay.records:,}",
        f"{distinct:,}",
        f"{replay.classes:,}",
        f"{seconds:.2f}",
        f"[{'green' if ours >= TARGET_RECORDS_S else 'red'}]{ours:,.0f}[/]",
    )
    table.add_row(
        "naive (is_authorized per record)",
        f"{naive_records:,}",
        "-",
        f"{naive_records:,}",
        f"{naive_seconds:.2f}",
        f"{naive:,.0f}",
    )
    console.print(table)
    console.print(
        f"review/naive: {ours / naive:.1f}x. Skipped: {replay.skipped_no_context:,} records "
        f"without a policy context, {replay.malformed} malformed. Findings: "
        f"{len(report.new_access)} new-access, {len(report.restrictions)} restriction, "
        f"{len(report.obligation_changes)} obligation change(s). Target: >= "
        f"{TARGET_RECORDS_S:,.0f} records/s."
    )
    console.print(
        f"Sweep alone (no log): {swept.replay.sweep_requests:,} requests of "
        f"{swept.replay.sweep_space:,} combinations, {swept.replay.classes:,} evaluated per "
        f"side, {sweep_seconds:.2f} s."
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "records": replay.records,
                    "replayed": replay.replayed,
                    "distinct_requests": distinct,
                    "evaluated_per_side": replay.classes,
                    "skipped_no_context": replay.skipped_no_context,
                    "malformed": replay.malformed,
                    "seconds": seconds,
                    "runs": runs,
                    "records_per_s": ours,
                    "naive_records": naive_records,
                    "naive_seconds": naive_seconds,
                    "naive_records_per_s": naive,
                    "ratio": ours / naive,
                    "target_records_per_s": TARGET_RECORDS_S,
                    "new_access": len(report.new_access),
                    "sweep_requests": swept.replay.sweep_requests,
                    "sweep_seconds": sweep_seconds,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
