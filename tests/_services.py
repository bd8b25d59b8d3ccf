"""Real services for the tests: find them, or skip (fail when they are required).

``scripts/start-services.sh`` starts them. A test that needs one calls the helper
here: when the service does not answer, the test is skipped, unless
``SECURE_DS_REQUIRE_SERVICES=1`` (CI), where it fails, so a CI run can never pass by
skipping what it was meant to test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from secure_ds.cost._ledger_redis import RedisLedger, safe_url

REDIS_URL = os.environ.get("SECURE_DS_TEST_REDIS_URL", "redis://127.0.0.1:6390/0")
_redis_problem: list[str] = []  # [] untested, [""] reachable, [message] not


def skip_unless_required(message: str) -> None:
    """Skip with ``message``; fail instead when the services are required."""
    if os.environ.get("SECURE_DS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (SECURE_DS_REQUIRE_SERVICES=1: a missing service fails the run)")
    pytest.skip(message)


def require_redis() -> str:
    """The test Redis's URL, once it has answered a PING (checked once per session)."""
    if not _redis_problem:
        try:
            import redis

            client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
            client.ping()
            client.close()
            _redis_problem.append("")
        except Exception as exc:  # ImportError too: redis-py is an optional extra
            _redis_problem.append(
                f"Redis is not reachable at {safe_url(REDIS_URL)} ({type(exc).__name__}); "
                "run bash scripts/start-services.sh (or set SECURE_DS_TEST_REDIS_URL)"
            )
    if _redis_problem[0]:
        skip_unless_required(_redis_problem[0])
    return REDIS_URL


def delete_namespace(ledger: RedisLedger) -> None:
    """Remove every key of ``ledger``'s namespace (and nothing else)."""
    client = ledger._client
    keys = list(client.scan_iter(match=f"{ledger.prefix}*", count=1000))
    if keys:
        client.delete(*keys)


@contextmanager
def redis_ledger(**kwargs: object) -> Iterator[RedisLedger]:
    """A RedisLedger in a namespace of its own, deleted afterwards, so tests neither
    see each other's keys nor leave any behind."""
    url = require_redis()
    # the caller's clock: these tests move time (the server clock has its own tests)
    kwargs.setdefault("clock", "caller")
    ledger = RedisLedger(url, namespace=f"test-{uuid.uuid4().hex}", **kwargs)  # type: ignore[arg-type]
    try:
        yield ledger
    finally:
        delete_namespace(ledger)
        ledger.close()


# ---------------------------------------------------------------------- OpenTelemetry Collector

OTLP_URL = os.environ.get("SECURE_DS_TEST_OTLP_URL", "http://127.0.0.1:14318")
OTELCOL_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "otelcol.sh"
_otelcol_problem: list[str] = []  # [] untested, [""] reachable, [message] not


def require_otelcol() -> str:
    """The test collector's OTLP/HTTP URL, once it accepted an empty OTLP request.

    ``scripts/otelcol.sh`` (run by ``scripts/start-services.sh``) builds the collector
    from its Go modules and starts it; once it answers, its cached binary is there for
    tests that start instances of their own (:class:`tests.siem.conftest.Collector`).
    """
    if not _otelcol_problem:
        try:
            answer = httpx2.post(
                f"{OTLP_URL}/v1/logs",
                content=b"{}",
                headers={"Content-Type": "application/json"},
                timeout=2,
                trust_env=False,
            )
            if answer.status_code != 200:
                raise RuntimeError(f"HTTP {answer.status_code}")
            _otelcol_problem.append("")
        except Exception as exc:
            _otelcol_problem.append(
                f"The OpenTelemetry Collector is not answering at {OTLP_URL} "
                f"({type(exc).__name__}); run bash scripts/start-services.sh (or "
                "bash scripts/otelcol.sh), or set SECURE_DS_TEST_OTLP_URL"
            )
    if _otelcol_problem[0]:
        skip_unless_required(_otelcol_problem[0])
    return OTLP_URL


# ---------------------------------------------------------------------- nginx

NGINX_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "nginx.sh"
_nginx_found: list[str] = []  # [] untested, [path] usable, [""] not


def require_nginx() -> str:
    """The nginx binary (with its TLS module), for tests that start instances of their own.

    ``scripts/nginx.sh`` (run by ``scripts/start-services.sh``) installs it from Debian's
    packages; each test then writes its own config (its own CA, certificates and port)
    into a temporary directory (:mod:`tests.identity._nginx`).
    """
    if not _nginx_found:
        import shutil
        import subprocess

        found = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else ""
        )
        usable = ""
        if found:
            try:
                built = subprocess.run(  # noqa: S603 (our own nginx path)
                    [found, "-V"], capture_output=True, text=True, timeout=10, check=False
                )
                if "http_ssl_module" in built.stderr + built.stdout:
                    usable = found
            except (OSError, subprocess.SubprocessError):
                usable = ""
        _nginx_found.append(usable)
    if not _nginx_found[0]:
        skip_unless_required(
            "nginx with its TLS module is not installed; run bash scripts/start-services.sh "
            "(or bash scripts/nginx.sh start, which installs it from Debian's packages)"
        )
    return _nginx_found[0]


# ---------------------------------------------------------------------- SoftHSM2 (PKCS#11)

SOFTHSM_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "secure-ds" / "softhsm"
)
SOFTHSM_MODULE = Path(
    os.environ.get("SECURE_DS_AUDIT_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
)
SOFTHSM_TOKEN = "secure-ds-test"
SOFTHSM_PIN = "secure-ds-test-pin"  # test token only (scripts/softhsm.sh)
_softhsm_problem: list[str] = []  # [] untested, [""] usable, [message] not


def require_softhsm() -> Path:
    """The test token's state directory (``softhsm2.conf``, the keys' ``.pub`` files),
    once the token answered a login. Sets ``SOFTHSM2_CONF`` (read when the module
    loads) so every PKCS#11 signer in this process finds the test token."""
    if not _softhsm_problem:
        conf = SOFTHSM_DIR / "softhsm2.conf"
        try:
            if not conf.is_file() or not SOFTHSM_MODULE.is_file():
                raise FileNotFoundError(conf if not conf.is_file() else SOFTHSM_MODULE)
            os.environ["SOFTHSM2_CONF"] = str(conf)
            from secure_ds.audit._pkcs11 import Pkcs11Signer

            Pkcs11Signer(
                module=SOFTHSM_MODULE,
                token_label=SOFTHSM_TOKEN,
                key_label="audit-ed25519",
                pin=SOFTHSM_PIN,
            ).close()
            _softhsm_problem.append("")
        except Exception as exc:  # ImportError too: python-pkcs11 is an optional extra
            _softhsm_problem.append(
                f"The SoftHSM2 test token is not usable ({type(exc).__name__}: {exc}); "
                "run bash scripts/start-services.sh (or bash scripts/softhsm.sh)"
            )
    if _softhsm_problem[0]:
        skip_unless_required(_softhsm_problem[0])
    return SOFTHSM_DIR


# ---------------------------------------------------------------------- Keycloak

KEYCLOAK_URL = os.environ.get("SECURE_DS_TEST_KEYCLOAK_URL", "http://127.0.0.1:18180")
KEYCLOAK_MTLS_URL = os.environ.get("SECURE_DS_TEST_KEYCLOAK_MTLS_URL", "https://127.0.0.1:18543")
KEYCLOAK_PKI = Path(
    os.environ.get(
        "SECURE_DS_TEST_KEYCLOAK_PKI",
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "secure-ds"
        / "keycloak"
        / "pki",
    )
)
KEYCLOAK_REALM = "secure-ds"
_keycloak_problem: list[str] = []  # [] untested, [""] reachable, [message] not


def require_keycloak() -> str:
    """The test Keycloak's base URL, once realm ``secure-ds`` answered its discovery
    request and the test PKI that ``scripts/keycloak.sh`` made is there (checked once)."""
    if not _keycloak_problem:
        try:
            answer = httpx2.get(
                f"{KEYCLOAK_URL}/realms/{KEYCLOAK_REALM}/.well-known/openid-configuration",
                timeout=3,
                trust_env=False,
            )
            if answer.status_code != 200:
                raise RuntimeError(f"HTTP {answer.status_code}")
            for name in ("ca.pem", "mtls-client.pem", "mtls-client.key", "jwt-client.key"):
                if not (KEYCLOAK_PKI / name).is_file():
                    raise FileNotFoundError(KEYCLOAK_PKI / name)
            import keycloak  # noqa: F401  (python-keycloak: the optional extra)

            _keycloak_problem.append("")
        except Exception as exc:
            _keycloak_problem.append(
                f"Keycloak realm {KEYCLOAK_REALM} is not answering at {KEYCLOAK_URL} or its "
                f"test PKI is missing ({type(exc).__name__}); run bash scripts/start-services.sh "
                "(or bash scripts/keycloak.sh), or set SECURE_DS_TEST_KEYCLOAK_URL"
            )
    if _keycloak_problem[0]:
        skip_unless_required(_keycloak_problem[0])
    return KEYCLOAK_URL
