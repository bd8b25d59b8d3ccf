"""Guard-chain overhead: SecureDeepSeek against the bare openai SDK, same sandbox, same run.

Both clients talk to one in-process sandbox over the same mutual-TLS set-up; the bare
SDK gets the same ``ssl.SSLContext`` and a static, correctly bound token, so the only
difference is the guard chain (identify, classify, decide, enforce, meter, retries and
breaker bookkeeping, accounting, and the durable audit write with fsync).

Runs, for each scenario, alternating blocks of bare and secure calls (so drift in the
shared machine's load hits both alike) and prints p50/p99 latency and throughput with
the ratio secure/bare. Scenarios: sync sequential, async with 1 caller, async with 32
concurrent callers. Targets (issue 2): p50 ratio <= 1.15, throughput ratio >= 0.85 at 32.

    .venv/bin/python bench/bench_client.py [--calls 600] [--rounds 6] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import openai
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from rich.console import Console
from rich.table import Table

from secure_ds import AsyncSecureDeepSeek, SecureDeepSeek, Settings
from secure_ds.identity import EmbeddedIssuer, build_ssl_context
from secure_ds.sandbox import Sandbox

MESSAGES: list[Any] = [{"role": "user", "content": "Benchmark the guard chain, please."}]
MODEL = "deepseek-flash"


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)  # seconds per call
    wall: float = 0.0  # seconds for all calls of the blocks
    calls: int = 0

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000.0

    @property
    def throughput(self) -> float:
        return self.calls / self.wall if self.wall else 0.0


def static_token(settings: Settings) -> str:
    assert settings.issuer_key is not None
    assert settings.client_cert is not None
    key = serialization.load_pem_private_key(settings.issuer_key.read_bytes(), None)
    cert = x509.load_pem_x509_certificates(settings.client_cert.read_bytes())[0]
    issuer = EmbeddedIssuer(
        signing_key=key,  # type: ignore[arg-type]
        issuer=settings.issuer,
        audience=settings.effective_audience,
        subject="bench",
        client_cert_der=cert.public_bytes(serialization.Encoding.DER),
        ttl=3600,
    )
    return issuer.token().value.reveal()


def run_sync_block(client: openai.OpenAI, calls: int, sample: Sample) -> None:
    start = time.perf_counter()
    for _ in range(calls):
        t = time.perf_counter()
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
        sample.latencies.append(time.perf_counter() - t)
    sample.wall += time.perf_counter() - start
    sample.calls += calls


async def run_async_block(
    client: openai.AsyncOpenAI, calls: int, concurrency: int, sample: Sample
) -> None:
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t = time.perf_counter()
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
            sample.latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sample.wall += time.perf_counter() - start
    sample.calls += calls


def alternate(
    rounds: int, bare: Callable[[Sample], None], ours: Callable[[Sample], None]
) -> tuple[Sample, Sample]:
    b, o = Sample(), Sample()
    for i in range(rounds):
        # swap the order each round so neither side always runs first
        if i % 2 == 0:
            bare(b)
            ours(o)
        else:
            ours(o)
            bare(b)
    return b, o


async def alternate_async(
    rounds: int,
    bare: Callable[[Sample], Awaitable[None]],
    ours: Callable[[Sample], Awaitable[None]],
) -> tuple[Sample, Sample]:
    b, o = Sample(), Sample()
    for i in range(rounds):
        first, second = ((bare, b), (ours, o)) if i % 2 == 0 else ((ours, o), (bare, b))
        await first[0](first[1])
        await second[0](second[1])
    return b, o


def measure(settings: Settings, base_url: str, calls: int, rounds: int) -> list[dict[str, Any]]:
    """Run every scenario in this process against the endpoint in ``settings``."""
    per_block = max(calls // rounds, 1)
    results: list[dict[str, Any]] = []
    token = static_token(settings)
    ssl_ctx = build_ssl_context(settings)
    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)

    secure = SecureDeepSeek(settings=settings)
    bare = openai.OpenAI(
        api_key=token, base_url=base_url, http_client=httpx2.Client(verify=ssl_ctx, limits=limits)
    )
    for c in (bare, secure):  # warm up connections, token cache, code paths
        run_sync_block(c, 50, Sample())
    b, o = alternate(
        rounds,
        lambda s: run_sync_block(bare, per_block, s),
        lambda s: run_sync_block(secure, per_block, s),
    )
    results.append(_row("sync, 1 caller", b, o))
    secure.close()
    bare.close()

    async def async_scenarios() -> None:
        asecure = AsyncSecureDeepSeek(settings=settings)
        abare = openai.AsyncOpenAI(
            api_key=token,
            base_url=base_url,
            http_client=httpx2.AsyncClient(verify=ssl_ctx, limits=limits),
        )
        for concurrency in (1, 32):
            for c in (abare, asecure):
                await run_async_block(c, 64, concurrency, Sample())
            n = per_block if concurrency == 1 else per_block * 2

            async def run_bare(s: Sample, n: int = n, k: int = concurrency) -> None:
                await run_async_block(abare, n, k, s)

            async def run_ours(s: Sample, n: int = n, k: int = concurrency) -> None:
                await run_async_block(asecure, n, k, s)

            b, o = await alternate_async(rounds, run_bare, run_ours)
            label = f"async, {concurrency} caller{'s' if concurrency > 1 else ''}"
            results.append(_row(label, b, o))
        await asecure.close()
        await abare.close()

    asyncio.run(async_scenarios())
    return results


def _row(scenario: str, b: Sample, o: Sample) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "calls_each": o.calls,
        "bare_p50_ms": round(b.p(0.5), 3),
        "secure_p50_ms": round(o.p(0.5), 3),
        "p50_ratio": round(o.p(0.5) / b.p(0.5), 3),
        "bare_p99_ms": round(b.p(0.99), 3),
        "secure_p99_ms": round(o.p(0.99), 3),
        "p99_ratio": round(o.p(0.99) / b.p(0.99), 3),
        "bare_rps": round(b.throughput, 1),
        "secure_rps": round(o.throughput, 1),
        "throughput_ratio": round(o.throughput / b.throughput, 3),
    }


def _settings_env(settings: Settings) -> dict[str, str]:
    """The settings as the environment variables a user would set."""
    env = {
        "DEEPSEEK_ENDPOINT": settings.endpoint,
        "SECURE_DS_CLIENT_CERT": str(settings.client_cert),
        "SECURE_DS_CLIENT_KEY": str(settings.client_key),
        "SECURE_DS_CA_BUNDLE": str(settings.ca_bundle),
        "SECURE_DS_ISSUER_KEY": str(settings.issuer_key),
        "SECURE_DS_ISSUER": settings.issuer,
        "SECURE_DS_AUDIENCE": settings.effective_audience,
        "SECURE_DS_AUDIT_PATH": str(settings.audit_path),
        "SECURE_DS_AUDIT_FSYNC": settings.audit_fsync,
    }
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=600, help="calls per client per scenario")
    parser.add_argument("--rounds", type=int, default=6, help="alternating blocks per client")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--audit-fsync",
        choices=("always", "background", "never"),
        default="background",
        help="SECURE_DS_AUDIT_FSYNC for the secure client (default: the default)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:  # the measuring process: both clients, settings from the environment
        settings = Settings.from_env()
        print(json.dumps(measure(settings, settings.endpoint, args.calls, args.rounds)))
        return 0

    console = Console()
    # The audit log lives on the real disk (not tmpfs), so fsync costs what it costs.
    workdir = Path(tempfile.mkdtemp(prefix="bench-", dir=Path(__file__).parent))
    try:
        # The bare SDK sends no RFC 9421 signature (signing is part of the guard chain
        # measured here), so the sandbox accepts unsigned requests and, to do the same
        # work for both clients, does not verify the secure client's signatures
        # (verification is measured in bench/bench_signing.py).
        with Sandbox(require_signatures=False, check_signatures=False) as sb:
            settings = sb.client_settings(
                "bench", audit_path=workdir / "audit.jsonl", audit_fsync=args.audit_fsync
            )
            # The clients run in one child process, the sandbox here: like a real remote
            # endpoint, the server does not compete with the clients for the GIL.
            command = [
                sys.executable,
                __file__,
                "--worker",
                "--calls",
                str(args.calls),
                "--rounds",
                str(args.rounds),
            ]
            # (no spinner: its refresh thread would compete with the sandbox for the GIL)
            console.print("measuring: sync 1 caller, async 1 caller, async 32 callers...")
            done = subprocess.run(  # noqa: S603 (this script, fixed arguments)
                command,
                env={**os.environ, **_settings_env(settings)},
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                console.print(done.stderr)
                return 1
            report = json.loads(done.stdout)
            audit_lines = len((workdir / "audit.jsonl").read_text().splitlines())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    table = Table(title="SecureDeepSeek vs bare openai SDK: same sandbox, same TLS, same run")
    for col in (
        "scenario",
        "calls",
        "p50 ms bare/ours",
        "p50 ratio",
        "p99 ms bare/ours",
        "p99 ratio",
        "calls/s bare/ours",
        "thru ratio",
    ):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for e in report:
        table.add_row(
            e["scenario"],
            str(e["calls_each"]),
            f"{e['bare_p50_ms']:.2f}/{e['secure_p50_ms']:.2f}",
            f"{e['p50_ratio']:.3f}",
            f"{e['bare_p99_ms']:.2f}/{e['secure_p99_ms']:.2f}",
            f"{e['p99_ratio']:.3f}",
            f"{e['bare_rps']:.0f}/{e['secure_rps']:.0f}",
            f"{e['throughput_ratio']:.3f}",
        )
    console.print(table)
    console.print(
        f"secure client: audit fsync={args.audit_fsync}, {audit_lines} audit records written; "
        "targets: p50 ratio <= 1.15, throughput ratio at 32 callers >= 0.85"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
