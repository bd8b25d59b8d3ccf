"""Keycloak tokens: a cold fetch against the real Keycloak vs a cached hit, in one run.

Measured in this process against the test Keycloak (``scripts/keycloak.sh``; realm
``secure-ds``), per client authentication method:

* **cold fetch**: a new :class:`KeycloakTokenProvider` (new connection, TLS handshake
  with ``tls_client_auth``) obtaining its ``client_credentials`` token;
* **miss**: the same provider with its cache emptied (``invalidate``): one token request
  on a kept-alive connection;
* **cached hit**: ``provider.token()`` while the token is fresh (what every call pays);
* **exchange** (client_secret only): an RFC 8693 token exchange of a user's token
  (cache emptied each time), and its cached hit;
* the baseline: a :class:`StaticTokenProvider`'s cached ``token()`` (the base class's
  cache, no per-key lookup), for what the per-(subject, audience) cache costs on top.

In the same run, from ``bench_signing``: what the guard's identify stage costs per call
with a warm token cache (the issue's target: <= 20 us p50) and what the RFC 9421
signature adds to each request (1 KiB body, Ed25519 and P-256), so a cold fetch, a
cached hit and the signing cost are reported side by side.

Figures are medians (cold and miss in milliseconds, hits in microseconds) and the
ratios between them. ``--quick`` takes few samples (the smoke test). Keycloak must be
running (``bash scripts/keycloak.sh start``); timings on a shared machine vary, so
nothing is asserted but that every row was measured.

    .venv/bin/python bench/bench_identity.py [--samples 30] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from rich.console import Console
from rich.table import Table

from secure_ds import Secret
from secure_ds.identity import KeycloakTokenProvider, StaticTokenProvider

URL = os.environ.get("SECURE_DS_TEST_KEYCLOAK_URL", "http://127.0.0.1:18180")
MTLS_URL = os.environ.get("SECURE_DS_TEST_KEYCLOAK_MTLS_URL", "https://127.0.0.1:18543")
PKI = Path(
    os.environ.get(
        "SECURE_DS_TEST_KEYCLOAK_PKI",
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "secure-ds"
        / "keycloak"
        / "pki",
    )
)
REALM = "secure-ds"


def new_provider(method: str) -> KeycloakTokenProvider:
    common: dict[str, Any] = {"realm": REALM, "client_auth": method, "audience": "deepseek-gateway"}
    if method == "client_secret":
        return KeycloakTokenProvider(
            server_url=URL,
            client_id="secure-ds-app",
            client_secret=Secret("secure-ds-app-test-secret-not-for-production"),
            **common,
        )
    if method == "private_key_jwt":
        return KeycloakTokenProvider(
            server_url=URL,
            client_id="secure-ds-jwt",
            assertion_key=PKI / "jwt-client.key",
            **common,
        )
    return KeycloakTokenProvider(
        server_url=MTLS_URL,
        client_id="secure-ds-mtls",
        client_cert=PKI / "mtls-client.pem",
        client_key=PKI / "mtls-client.key",
        ca_bundle=PKI / "ca.pem",
        **common,
    )


def user_token() -> str:
    from keycloak import KeycloakOpenID

    portal = KeycloakOpenID(server_url=URL + "/", realm_name=REALM, client_id="secure-ds-portal")
    return str(portal.token("alice", "alice-test-password-not-for-production")["access_token"])


def median_ms(fn: Callable[[], object], samples: int) -> float:
    times = []
    for _ in range(samples):
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1e6


def hit_us(fn: Callable[[], object], iterations: int) -> float:
    for _ in range(min(iterations, 200)):
        fn()
    times = []
    for _ in range(iterations):
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1e3


def measure(samples: int, iterations: int) -> dict[str, Any]:
    rows = []
    baseline_token = new_provider("client_secret").token().value.reveal()
    static = StaticTokenProvider(baseline_token)
    static.token()
    baseline_us = hit_us(static.token, iterations)
    for method in ("client_secret", "private_key_jwt", "tls_client_auth"):
        cold_ms = median_ms(lambda m=method: new_provider(m).token(), samples)  # type: ignore[misc]
        p = new_provider(method)
        p.token()

        def miss(p: KeycloakTokenProvider = p) -> None:
            p.invalidate(p.token())
            p.token()

        # miss() is one hit plus one fetch; the hit is negligible next to the fetch
        miss_ms = median_ms(miss, samples)
        cached = hit_us(p.token, iterations)
        rows.append(
            {
                "method": method,
                "cold_fetch_ms": round(cold_ms, 3),
                "miss_ms": round(miss_ms, 3),
                "cached_hit_us": round(cached, 3),
                "cold_over_hit": round(cold_ms * 1000 / cached, 1),
                "hit_over_baseline": round(cached / baseline_us, 2),
            }
        )
    p = new_provider("client_secret")
    subject = user_token()
    exchanged = p.exchange(subject)

    def exchange_miss() -> None:
        p.invalidate(p.exchange(subject))
        p.exchange(subject)

    exchange_ms = median_ms(exchange_miss, samples)
    exchange_hit = hit_us(lambda: p.exchange(subject), iterations)
    assert jwt.decode(exchanged.value.reveal(), options={"verify_signature": False})["aud"]
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "keycloak": URL,
        "baseline_static_hit_us": round(baseline_us, 3),
        "client_credentials": rows,
        "exchange": {
            "miss_ms": round(exchange_ms, 3),
            "cached_hit_us": round(exchange_hit, 3),
            "miss_over_hit": round(exchange_ms * 1000 / exchange_hit, 1),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=30, help="token requests per row")
    parser.add_argument("--iterations", type=int, default=20000, help="cached hits per row")
    parser.add_argument("--quick", action="store_true", help="few samples (the smoke test)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    samples, iterations = (3, 500) if args.quick else (args.samples, args.iterations)
    try:
        report = measure(samples, iterations)
        # the per-call side, in this run too (bench_signing sits beside this file)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_signing

        signing_iterations = 200 if args.quick else 3000
        report["identify_warm"] = bench_signing.identity_rows(signing_iterations)[0]
        report["signing_1kib"] = [
            row
            for row in bench_signing.signing_rows(signing_iterations)
            if row["body_bytes"] <= 2048
        ]
    except Exception as exc:
        print(
            f"bench_identity: {exc}\n(is Keycloak running? bash scripts/keycloak.sh start)",
            file=sys.stderr,
        )
        return 1
    console = Console()
    table = Table(title="Keycloak tokens: cold fetch vs cached hit (medians)")
    for column in (
        "method",
        "cold fetch ms",
        "miss ms",
        "cached hit us",
        "cold / hit",
        "hit / base",
    ):
        table.add_column(column, justify="right" if column != "method" else "left")
    for row in report["client_credentials"]:
        table.add_row(
            row["method"],
            f"{row['cold_fetch_ms']:.2f}",
            f"{row['miss_ms']:.2f}",
            f"{row['cached_hit_us']:.2f}",
            f"{row['cold_over_hit']:,.0f}x",
            f"{row['hit_over_baseline']:.2f}x",
        )
    console.print(table)
    ex = report["exchange"]
    console.print(
        f"token exchange (client_secret): miss {ex['miss_ms']:.2f} ms, cached hit "
        f"{ex['cached_hit_us']:.2f} us ({ex['miss_over_hit']:,.0f}x); baseline "
        f"StaticTokenProvider hit {report['baseline_static_hit_us']:.2f} us"
    )
    warm = report["identify_warm"]
    console.print(
        f"per call, warm cache: identify stage {warm['identify_us']:.2f} us p50 (token from "
        f"cache {warm['token_from_cache_us']:.2f} us; target <= {warm['target_us']:.0f} us: "
        f"{'met' if warm['meets_target'] else 'MISSED'})"
    )
    for row in report["signing_1kib"]:
        console.print(
            f"RFC 9421 signature, {row['key']}, 1 KiB body: adds {row['signing_adds_us']:.1f} us "
            f"per request ({row['sign_over_floor']:.2f}x the raw signature's "
            f"{row['raw_sign_floor_us']:.1f} us); verified in {row['verify_us']:.1f} us"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
