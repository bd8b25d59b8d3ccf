"""Settings, read from the environment the way DeepSeek users write it, and validated.

``Settings.from_env()`` reads ``DEEPSEEK_*``, ``AI_PROVIDER`` and ``SECURE_DS_*``;
``Settings(...)`` takes the same values as keywords. Either way every value is checked
when the object is built: a malformed or out-of-range value, an unreadable file, a key
that does not match its certificate or a certificate outside its validity period raises
:class:`~secure_ds.errors.ConfigError`, whose message names the variable and says what
to put there. Secrets are held in :class:`~secure_ds.Secret` and never printed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ._secret import Secret
from .errors import ConfigError

__all__ = ["ENV_VARS", "Settings", "TokenProviderName", "check_endpoint"]

TokenProviderName = Literal["embedded", "api-key", "keycloak"]

# field name -> environment variable
ENV_VARS: dict[str, str] = {
    "provider": "AI_PROVIDER",
    "api_key": "DEEPSEEK_API_KEY",
    "endpoint": "DEEPSEEK_ENDPOINT",
    "api_version": "DEEPSEEK_API_VERSION",
    "model": "DEEPSEEK_MODEL",
    "max_tokens": "DEEPSEEK_MAX_TOKENS",
    "temperature": "DEEPSEEK_TEMPERATURE",
    "top_p": "DEEPSEEK_TOP_P",
    "frequency_penalty": "DEEPSEEK_FREQUENCY_PENALTY",
    "client_cert": "SECURE_DS_CLIENT_CERT",
    "client_key": "SECURE_DS_CLIENT_KEY",
    "client_key_password": "SECURE_DS_CLIENT_KEY_PASSWORD",
    "ca_bundle": "SECURE_DS_CA_BUNDLE",
    "spki_pin": "SECURE_DS_SPKI_PIN",
    "tls_min_version": "SECURE_DS_TLS_MIN_VERSION",
    "cert_check_interval": "SECURE_DS_CERT_CHECK_INTERVAL",
    # RFC 9421 request signing with the mTLS client key (secure_ds.identity._httpsig)
    "request_signing": "SECURE_DS_REQUEST_SIGNING",
    "token_provider": "SECURE_DS_TOKEN_PROVIDER",
    "issuer_key": "SECURE_DS_ISSUER_KEY",
    "issuer": "SECURE_DS_ISSUER",
    "audience": "SECURE_DS_AUDIENCE",
    "token_ttl": "SECURE_DS_TOKEN_TTL",
    "subject": "SECURE_DS_SUBJECT",
    "roles": "SECURE_DS_ROLES",
    "attributes": "SECURE_DS_ATTRIBUTES",
    # Keycloak (SECURE_DS_TOKEN_PROVIDER=keycloak; secure_ds.identity._keycloak)
    "keycloak_url": "SECURE_DS_KEYCLOAK_URL",
    "keycloak_realm": "SECURE_DS_KEYCLOAK_REALM",
    "keycloak_client_id": "SECURE_DS_KEYCLOAK_CLIENT_ID",
    "keycloak_client_secret": "SECURE_DS_KEYCLOAK_CLIENT_SECRET",
    "keycloak_client_auth": "SECURE_DS_KEYCLOAK_CLIENT_AUTH",
    "keycloak_client_assertion_key": "SECURE_DS_KEYCLOAK_CLIENT_ASSERTION_KEY",
    "keycloak_ca_bundle": "SECURE_DS_KEYCLOAK_CA_BUNDLE",
    "keycloak_scope": "SECURE_DS_KEYCLOAK_SCOPE",
    "keycloak_timeout": "SECURE_DS_KEYCLOAK_TIMEOUT",
    "policy_dir": "SECURE_DS_POLICY_DIR",
    "policy_reload": "SECURE_DS_POLICY_RELOAD",
    "pricing": "SECURE_DS_PRICING",
    "budgets": "SECURE_DS_BUDGETS",
    "meter_backend": "SECURE_DS_METER_BACKEND",
    "meter_db": "SECURE_DS_METER_DB",
    "meter_redis_url": "SECURE_DS_METER_REDIS_URL",
    "meter_fallback": "SECURE_DS_METER_FALLBACK",
    "dlp": "SECURE_DS_DLP",
    "dlp_config": "SECURE_DS_DLP_CONFIG",
    "dlp_block": "SECURE_DS_DLP_BLOCK",
    "dlp_redact": "SECURE_DS_DLP_REDACT",
    "dlp_reversible": "SECURE_DS_DLP_REVERSIBLE",
    "dlp_cache": "SECURE_DS_DLP_CACHE",
    "audit_path": "SECURE_DS_AUDIT_PATH",
    "audit_fsync": "SECURE_DS_AUDIT_FSYNC",
    "audit_fsync_interval": "SECURE_DS_AUDIT_FSYNC_INTERVAL",
    "audit_signing_key": "SECURE_DS_AUDIT_SIGNING_KEY",
    "audit_signing_key_password": "SECURE_DS_AUDIT_SIGNING_KEY_PASSWORD",
    "audit_checkpoint_every": "SECURE_DS_AUDIT_CHECKPOINT_EVERY",
    "audit_checkpoint_interval": "SECURE_DS_AUDIT_CHECKPOINT_INTERVAL",
    "audit_max_record_bytes": "SECURE_DS_AUDIT_MAX_RECORD_BYTES",
    # audit signers (issue 5): a PKCS#11 HSM key, hybrid ML-DSA-65 checkpoints
    "audit_signer": "SECURE_DS_AUDIT_SIGNER",
    "audit_pkcs11_module": "SECURE_DS_AUDIT_PKCS11_MODULE",
    "audit_pkcs11_token_label": "SECURE_DS_AUDIT_PKCS11_TOKEN_LABEL",
    "audit_pkcs11_key_label": "SECURE_DS_AUDIT_PKCS11_KEY_LABEL",
    "audit_pkcs11_pin": "SECURE_DS_AUDIT_PKCS11_PIN",
    "audit_pq_key": "SECURE_DS_AUDIT_PQ_KEY",
    "audit_seal_to": "SECURE_DS_AUDIT_SEAL_TO",
    "max_attempts": "SECURE_DS_MAX_ATTEMPTS",
    "backoff_factor": "SECURE_DS_BACKOFF_FACTOR",
    "backoff_max": "SECURE_DS_BACKOFF_MAX",
    "breaker_threshold": "SECURE_DS_BREAKER_THRESHOLD",
    "breaker_cooldown": "SECURE_DS_BREAKER_COOLDOWN",
    "connect_timeout": "SECURE_DS_CONNECT_TIMEOUT",
    "read_timeout": "SECURE_DS_READ_TIMEOUT",
    "otlp_endpoint": "SECURE_DS_OTLP_ENDPOINT",
    "otlp_headers": "SECURE_DS_OTLP_HEADERS",
    "otlp_ca_bundle": "SECURE_DS_OTLP_CA_BUNDLE",
    "otlp_shipper": "SECURE_DS_OTLP_SHIPPER",
    "otlp_interval": "SECURE_DS_OTLP_INTERVAL",
    "otlp_batch": "SECURE_DS_OTLP_BATCH",
    "otlp_backoff_max": "SECURE_DS_OTLP_BACKOFF_MAX",
    "otlp_timeout": "SECURE_DS_OTLP_TIMEOUT",
}

_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}(@[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$")
_API_VERSION_RE = re.compile(r"^v[0-9]{1,3}$")
_SPKI_PIN_RE = re.compile(r"^sha256/[A-Za-z0-9+/]{43}=$")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def _default_audit_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "secure-ds" / "audit.jsonl"


def _err(field: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(ENV_VARS.get(field, field), problem, fix=fix)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a secure client needs, validated on construction.

    Paths are kept as given; files are read and checked here (readable, parseable,
    within their validity period, key matching certificate) and read again by the
    identity layer when it builds TLS contexts, so a rotated file is picked up.
    """

    provider: str = "deepseek"
    api_key: Secret | None = None
    endpoint: str = "https://api.deepseek.com"
    api_version: str | None = None
    model: str = "deepseek-flash"
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None

    client_cert: Path | None = None
    client_key: Path | None = None
    client_key_password: Secret | None = None
    ca_bundle: Path | None = None
    spki_pin: str | None = None
    tls_min_version: Literal["1.2", "1.3"] = "1.3"
    # certificate rotation (secure_ds.identity._rotation): at most this often (seconds)
    # the client stats SECURE_DS_CLIENT_CERT/KEY and, when they changed, loads the new
    # pair for new connections; 0 checks before every call
    cert_check_interval: float = 1.0
    # RFC 9421 signatures (secure_ds.identity._httpsig) on every request, made with the
    # mTLS client key (keyid = the certificate's x5t#S256): "auto" signs whenever a client
    # certificate is configured, "on" requires one, "off" sends requests unsigned
    request_signing: Literal["auto", "on", "off"] = "auto"

    token_provider: TokenProviderName = "embedded"
    issuer_key: Path | None = None
    issuer: str = "secure-ds-embedded"
    audience: str | None = None
    token_ttl: int = 300
    subject: str | None = None
    roles: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    # Keycloak (SECURE_DS_TOKEN_PROVIDER=keycloak): tokens come from the realm's token
    # endpoint, for client keycloak_client_id, authenticated by keycloak_client_auth:
    # "client_secret" (keycloak_client_secret), "private_key_jwt" (an RFC 7523 assertion
    # signed with keycloak_client_assertion_key) or "tls_client_auth" (the mTLS client
    # certificate, SECURE_DS_CLIENT_CERT/KEY; tokens are bound to it). SECURE_DS_AUDIENCE
    # names the gateway's client id for token exchange. keycloak_ca_bundle: Keycloak's CA
    # (default: the system store); keycloak_timeout: the read timeout of each request to
    # Keycloak (the connect timeout is SECURE_DS_CONNECT_TIMEOUT).
    keycloak_url: str | None = None
    keycloak_realm: str | None = None
    keycloak_client_id: str | None = None
    keycloak_client_secret: Secret | None = None
    keycloak_client_auth: Literal["client_secret", "private_key_jwt", "tls_client_auth"] = (
        "client_secret"
    )
    keycloak_client_assertion_key: Path | None = None
    keycloak_ca_bundle: Path | None = None
    keycloak_scope: str | None = None
    keycloak_timeout: float = 10.0

    policy_dir: Path | None = None
    policy_reload: float = 2.0
    pricing: Path | None = None  # None: the table shipped in secure_ds/cost/pricing.toml
    budgets: Path | None = None  # TOML budgets and rate limits; None: unmetered
    meter_backend: Literal["memory", "sqlite", "redis"] = "memory"
    meter_db: Path | None = None  # the SQLite ledger (meter_backend="sqlite")
    # the Redis ledger (meter_backend="redis"); a Secret: the URL may carry a password
    meter_redis_url: Secret | None = None
    # while Redis is unreachable: "none" refuses metered calls (fail closed);
    # "local-unsafe" meters them against a per-process ledger, audited as such
    meter_fallback: Literal["none", "local-unsafe"] = "none"
    dlp: Literal["off", "detect"] = "detect"
    dlp_config: Path | None = None
    dlp_block: tuple[str, ...] = ()
    dlp_redact: tuple[str, ...] = ()
    dlp_reversible: bool = False
    # scan results kept for this many texts (by keyed digest; never the text), so a
    # chat's resent history is not scanned again; 0 scans every text on every call
    dlp_cache: int = 4096
    audit_path: Path = dataclasses.field(default_factory=_default_audit_path)
    # "always" since issue 5: a call's record is on stable storage before the call returns
    # (group-committed); "background" is the explicit opt-out (synced within 20 ms)
    audit_fsync: Literal["always", "background", "never"] = "always"
    audit_fsync_interval: float = 0.02
    # the key that signs audit records and checkpoints (PEM Ed25519 or EC P-256, 0600);
    # None: audit-signing-key.pem beside the log, created on first use
    audit_signing_key: Path | None = None
    audit_signing_key_password: Secret | None = None
    audit_checkpoint_every: int = 1000  # a signed checkpoint every N records...
    audit_checkpoint_interval: float = 10.0  # ...or this many seconds after an unsealed one
    audit_max_record_bytes: int = 1 << 20  # a larger record is refused (that call fails)
    # audit signers (secure_ds.audit._pkcs11, ._hybrid): "software" signs with
    # audit_signing_key (or the default key file); "pkcs11" with a key in an HSM token,
    # found by token and key label, logged in with the PIN (python-pkcs11, extra "hsm")
    audit_signer: Literal["software", "pkcs11"] = "software"
    audit_pkcs11_module: Path = Path("/usr/lib/softhsm/libsofthsm2.so")
    audit_pkcs11_token_label: str | None = None
    audit_pkcs11_key_label: str | None = None
    audit_pkcs11_pin: Secret | None = None
    # an ML-DSA-65 key (PEM, 0600; created there on first use): checkpoints are signed by
    # the record key and by it (hybrid, post-quantum); None: classical checkpoints
    audit_pq_key: Path | None = None
    # sealed bodies (secure_ds.audit._seal): the auditor's public key file (JSON, from
    # `secure-ds audit keygen-auditor`); set, every record carries the request and
    # response bodies sealed for it (X25519 + ML-KEM-1024, AES-256-GCM). None: no bodies
    audit_seal_to: Path | None = None

    max_attempts: int = 5
    backoff_factor: float = 0.3
    backoff_max: float = 30.0
    breaker_threshold: int = 3
    breaker_cooldown: float = 300.0
    connect_timeout: float = 3.05
    read_timeout: float = 30.0

    # SIEM export (secure_ds.siem): the collector's OTLP/HTTP base URL; None = no export
    otlp_endpoint: str | None = None
    otlp_headers: Secret | None = None  # "k=v,k2=v2" sent with every request (auth)
    otlp_ca_bundle: Path | None = None  # CA of an https collector (default: system store)
    # "thread": the client ships in a background thread; "sidecar": `secure-ds audit ship`
    otlp_shipper: Literal["thread", "sidecar"] = "thread"
    otlp_interval: float = 1.0  # seconds between looks at the log once caught up
    otlp_batch: int = 512  # records per OTLP request
    otlp_backoff_max: float = 30.0  # longest wait between retries while the collector is down
    otlp_timeout: float = 10.0  # per request

    def __post_init__(self) -> None:
        self._validate_scalars()
        self._validate_endpoint()
        self._validate_tls_files()
        self._validate_request_signing()
        self._validate_identity()
        self._validate_otlp()

    # ------------------------------------------------------------------ derived values

    @property
    def model_name(self) -> str:
        """The model as sent: a pin like ``deepseek-flash@2026-10-17`` loses its ``@...``."""
        return self.model.split("@", 1)[0]

    @property
    def model_pin(self) -> str | None:
        """The pinned version of :attr:`model`, if any (kept in the audit record)."""
        return self.model.split("@", 1)[1] if "@" in self.model else None

    @property
    def otlp_header_map(self) -> dict[str, str]:
        """:attr:`otlp_headers` parsed (``k=v,k2=v2``); values are secrets: never print."""
        return _parse_otlp_headers(self.otlp_headers)

    @property
    def base_url(self) -> str:
        """The URL the openai SDK is pointed at (endpoint plus the API version, if set)."""
        base = self.endpoint.rstrip("/")
        return f"{base}/{self.api_version}" if self.api_version else base

    @property
    def effective_audience(self) -> str:
        """Token audience: SECURE_DS_AUDIENCE, else the endpoint's origin (RFC 8707 style)."""
        if self.audience:
            return self.audience
        parts = urlsplit(self.endpoint)
        return f"{parts.scheme}://{parts.netloc}"

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from environment variables (``os.environ`` by default).

        Keyword ``overrides`` win over the environment. Empty variables count as unset.
        """
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            var = ENV_VARS[field.name]
            raw = source.get(var, "").strip()
            if raw:
                values[field.name] = _parse(field.name, raw)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ validation

    def _validate_scalars(self) -> None:
        if self.provider != "deepseek":
            raise _err(
                "provider",
                f"unsupported provider {self.provider!r}",
                "Set AI_PROVIDER=deepseek (the only provider this version supports), or unset it.",
            )
        if not _MODEL_RE.match(self.model):
            raise _err(
                "model",
                f"{self.model!r} is not a model name",
                "Use a name like deepseek-flash, optionally pinned: deepseek-flash@2026-10-17.",
            )
        if self.api_version is not None and not _API_VERSION_RE.match(self.api_version):
            raise _err(
                "api_version",
                f"{self.api_version!r} is not an API version",
                "Use a path version such as v1, or unset it.",
            )
        _check_range("max_tokens", self.max_tokens, 1, 1_000_000, "an integer such as 4096")
        _check_range("temperature", self.temperature, 0.0, 2.0, "a number from 0 to 2, e.g. 0.7")
        _check_range("top_p", self.top_p, 0.0, 1.0, "a number from 0 to 1, e.g. 0.95")
        if self.top_p is not None and self.top_p == 0:
            raise _err("top_p", "must be greater than 0", "Use a number in (0, 1], e.g. 0.95.")
        _check_range(
            "frequency_penalty", self.frequency_penalty, -2.0, 2.0, "a number from -2 to 2"
        )
        _check_range("token_ttl", self.token_ttl, 30, 3600, "seconds between 30 and 3600")
        _check_range(
            "policy_reload", self.policy_reload, 0.0, 3600.0, "seconds, e.g. 2 (0: no reload)"
        )
        _check_range(
            "audit_fsync_interval", self.audit_fsync_interval, 0.0, 10.0, "seconds, e.g. 0.02"
        )
        _check_range("max_attempts", self.max_attempts, 1, 10, "an integer from 1 to 10")
        _check_range("backoff_factor", self.backoff_factor, 0.0, 10.0, "seconds, e.g. 0.3")
        _check_range("backoff_max", self.backoff_max, 0.0, 600.0, "seconds, e.g. 30")
        _check_range("breaker_threshold", self.breaker_threshold, 1, 1000, "an integer, e.g. 3")
        _check_range("breaker_cooldown", self.breaker_cooldown, 0.0, 86400.0, "seconds, e.g. 300")
        _check_range("connect_timeout", self.connect_timeout, 0.01, 600.0, "seconds, e.g. 3.05")
        _check_range("read_timeout", self.read_timeout, 0.01, 3600.0, "seconds, e.g. 30")
        _check_range(
            "cert_check_interval", self.cert_check_interval, 0.0, 3600.0, "seconds, e.g. 1"
        )
        if self.tls_min_version not in ("1.2", "1.3"):
            raise _err(
                "tls_min_version",
                f"{self.tls_min_version!r} is not allowed",
                "Use 1.3 (the default) or 1.2; older versions are refused.",
            )
        if self.meter_backend not in ("memory", "sqlite", "redis"):
            raise _err(
                "meter_backend",
                f"{self.meter_backend!r} is not a meter backend",
                "Use memory (one process, the default), sqlite (several processes on one "
                "host; set SECURE_DS_METER_DB too) or redis (many hosts; set "
                "SECURE_DS_METER_REDIS_URL too).",
            )
        if self.meter_backend == "redis" and self.meter_redis_url is None:
            raise _err(
                "meter_redis_url",
                "is not set, but SECURE_DS_METER_BACKEND=redis keeps the ledger there",
                "Set SECURE_DS_METER_REDIS_URL to the Redis shared by every host, e.g. "
                "redis://:PASSWORD@redis.internal:6379/0 (rediss:// for TLS).",
            )
        if self.meter_redis_url is not None:
            # only the scheme is shown: the rest may hold a password
            scheme = self.meter_redis_url.reveal().partition("://")[0].lower()
            if scheme not in ("redis", "rediss"):
                raise _err(
                    "meter_redis_url",
                    "is not a redis:// or rediss:// URL",
                    "Use redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], or rediss://... for TLS.",
                )
        if self.meter_fallback not in ("none", "local-unsafe"):
            raise _err(
                "meter_fallback",
                f"{self.meter_fallback!r} is not a meter fallback",
                "Use none (the default: while the Redis ledger is down, metered calls are "
                "refused) or local-unsafe (they are metered by this process alone, audited).",
            )
        if self.meter_fallback == "local-unsafe" and self.meter_backend != "redis":
            raise _err(
                "meter_fallback",
                f"is local-unsafe, but the {self.meter_backend} meter backend has no shared "
                "ledger to fall back from",
                "Unset SECURE_DS_METER_FALLBACK, or use it with SECURE_DS_METER_BACKEND=redis.",
            )
        if self.meter_backend == "sqlite" and self.meter_db is None:
            raise _err(
                "meter_db",
                "is not set, but SECURE_DS_METER_BACKEND=sqlite keeps the ledger in it",
                "Set SECURE_DS_METER_DB to a file path shared by the processes on this host.",
            )
        if self.audit_fsync not in ("always", "background", "never"):
            raise _err(
                "audit_fsync",
                f"{self.audit_fsync!r} is not an fsync policy",
                "Use always (the default: each call waits for its record to reach the disk, "
                "concurrent calls sharing one fsync), background (synced by a background "
                "thread within SECURE_DS_AUDIT_FSYNC_INTERVAL) or never.",
            )
        self._validate_audit()
        if self.dlp not in ("off", "detect"):
            raise _err(
                "dlp",
                f"{self.dlp!r} is not a DLP mode",
                "Use detect (scan every request; the default) or off.",
            )
        if (self.dlp_block or self.dlp_redact) and self.dlp == "off":
            raise _err(
                "dlp",
                "is off, but SECURE_DS_DLP_BLOCK or SECURE_DS_DLP_REDACT asks for DLP",
                "Set SECURE_DS_DLP=detect, or unset the block/redact lists.",
            )
        _check_range("dlp_cache", self.dlp_cache, 0, 10_000_000, "texts, e.g. 4096; 0 is off")
        if self.dlp_config is not None and not Path(self.dlp_config).is_file():
            raise _err(
                "dlp_config",
                f"{self.dlp_config} is not a readable file",
                "Point it at a TOML file of [[pattern]] and [[dictionary]] rules.",
            )
        if self.token_provider not in ("embedded", "api-key", "keycloak"):
            raise _err(
                "token_provider",
                f"unknown token provider {self.token_provider!r}",
                "Use embedded (certificate-bound JWTs signed with SECURE_DS_ISSUER_KEY), "
                "api-key (send DEEPSEEK_API_KEY as the bearer token) or keycloak (tokens "
                "from SECURE_DS_KEYCLOAK_URL).",
            )
        if self.spki_pin is not None and not _SPKI_PIN_RE.match(self.spki_pin):
            raise _err(
                "spki_pin",
                "is not a SHA-256 SPKI pin",
                "Use sha256/<base64 of the SHA-256 of the server's SubjectPublicKeyInfo> "
                "(secure-ds prints it for a certificate with `secure-ds pin CERT.pem`).",
            )
        for role in self.roles:
            if not role or "," in role or role != role.strip():
                raise _err(
                    "roles", f"{role!r} is not a role name", "Use a comma-separated list: a,b."
                )
        if not isinstance(self.attributes, Mapping):
            raise _err("attributes", "must be a JSON object", 'Use e.g. {"department": "eng"}.')
        if self.subject is not None and not self.subject.strip():
            raise _err("subject", "is empty", "Set a subject such as alice@example.com.")

    def _validate_audit_signer(self) -> None:
        if self.audit_signer not in ("software", "pkcs11"):
            raise _err(
                "audit_signer",
                f"{self.audit_signer!r} is not an audit signer",
                "Use software (a PEM key file, SECURE_DS_AUDIT_SIGNING_KEY) or pkcs11 "
                "(a key in an HSM token, SECURE_DS_AUDIT_PKCS11_*).",
            )
        pkcs11 = self.audit_signer == "pkcs11"
        for field in ("audit_pkcs11_token_label", "audit_pkcs11_key_label", "audit_pkcs11_pin"):
            value = getattr(self, field)
            if pkcs11 and (value is None or (isinstance(value, str) and not value.strip())):
                raise _err(
                    field,
                    "is needed when SECURE_DS_AUDIT_SIGNER=pkcs11",
                    "Set it (scripts/softhsm.sh prints the test token's settings).",
                )
            if not pkcs11 and value is not None:
                raise _err(
                    field,
                    "is set, but SECURE_DS_AUDIT_SIGNER is not pkcs11",
                    "Set SECURE_DS_AUDIT_SIGNER=pkcs11 to sign with the HSM, or unset it.",
                )
        if pkcs11 and self.audit_signing_key is not None:
            raise _err(
                "audit_signing_key",
                "is set, but SECURE_DS_AUDIT_SIGNER=pkcs11 signs with the HSM's key",
                "Unset one of them.",
            )
        if pkcs11 and not Path(self.audit_pkcs11_module).is_file():
            raise _err(
                "audit_pkcs11_module",
                f"{self.audit_pkcs11_module} is not a file",
                "Point it at the token's PKCS#11 module (SoftHSM2: "
                "/usr/lib/softhsm/libsofthsm2.so, `apt-get install softhsm2`).",
            )
        if self.audit_pq_key is not None and Path(self.audit_pq_key).exists():
            from .audit._hybrid import load_pq_signer
            from .errors import AuditError

            try:
                load_pq_signer(self.audit_pq_key)
            except AuditError as exc:
                raise _err(
                    "audit_pq_key",
                    str(exc).removesuffix(exc.hint).strip().removesuffix("."),
                    exc.hint or "Point it at an ML-DSA-65 private key (0600).",
                ) from None

    def _validate_audit(self) -> None:
        self._validate_audit_signer()
        _check_range(
            "audit_checkpoint_every",
            self.audit_checkpoint_every,
            1,
            10_000_000,
            "records, e.g. 1000",
        )
        _check_range(
            "audit_checkpoint_interval",
            self.audit_checkpoint_interval,
            0.01,
            86400.0,
            "seconds, e.g. 10",
        )
        _check_range(
            "audit_max_record_bytes",
            self.audit_max_record_bytes,
            4096,
            1 << 30,
            "bytes, e.g. 1048576",
        )
        if self.audit_signing_key_password is not None and self.audit_signing_key is None:
            raise _err(
                "audit_signing_key_password",
                "is set, but SECURE_DS_AUDIT_SIGNING_KEY is not",
                "Set SECURE_DS_AUDIT_SIGNING_KEY to the encrypted key, or unset the password.",
            )
        if self.audit_signing_key is not None:
            from .audit import load_signer
            from .errors import AuditError

            password = self.audit_signing_key_password
            try:
                load_signer(
                    self.audit_signing_key, password.reveal().encode() if password else None
                )
            except AuditError as exc:
                raise _err(
                    "audit_signing_key",
                    str(exc).removesuffix(exc.hint).strip().removesuffix("."),
                    exc.hint or "Point it at a PEM Ed25519 or EC P-256 private key (0600).",
                ) from None
        if self.audit_seal_to is not None:
            from .audit._seal import load_auditor_public_key
            from .errors import AuditError

            try:
                load_auditor_public_key(self.audit_seal_to)
            except AuditError as exc:
                raise _err(
                    "audit_seal_to",
                    str(exc).removesuffix(exc.hint).strip().removesuffix("."),
                    "Point it at the .pub file `secure-ds audit keygen-auditor OUT` wrote "
                    "(the auditor keeps OUT, the private half), or unset it.",
                ) from None

    def _validate_endpoint(self) -> None:
        check_endpoint(self.endpoint, variable=ENV_VARS["endpoint"])

    def _validate_tls_files(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            missing = "client_key" if self.client_key is None else "client_cert"
            raise _err(
                missing,
                "is not set, but its partner is",
                "Set both SECURE_DS_CLIENT_CERT and SECURE_DS_CLIENT_KEY (PEM files), or neither.",
            )
        if self.client_cert is not None and self.client_key is not None:
            certs = _load_cert_chain("client_cert", self.client_cert)
            _check_validity("client_cert", certs[0])
            key = _load_private_key("client_key", self.client_key, self.client_key_password)
            if key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ) != certs[0].public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ):
                raise _err(
                    "client_key",
                    f"the key in {self.client_key} does not belong to the certificate in "
                    f"{self.client_cert}",
                    "Point SECURE_DS_CLIENT_KEY at the private key the certificate was issued for.",
                )
        if self.ca_bundle is not None:
            _load_cert_chain("ca_bundle", self.ca_bundle)

    def _validate_request_signing(self) -> None:
        if self.request_signing not in ("auto", "on", "off"):
            raise _err(
                "request_signing",
                f"{self.request_signing!r} is not a signing mode",
                "Use auto (sign when a client certificate is set, the default), on or off.",
            )
        if self.request_signing == "on" and self.client_cert is None:
            raise _err(
                "request_signing",
                "is on, but requests are signed with the mTLS client key and none is set",
                "Set SECURE_DS_CLIENT_CERT and SECURE_DS_CLIENT_KEY, or use auto/off.",
            )

    @property
    def signs_requests(self) -> bool:
        """Whether every request carries an RFC 9421 signature made with the client key."""
        return self.request_signing != "off" and self.client_cert is not None

    def _validate_identity(self) -> None:
        if self.token_provider == "api-key":
            if self.api_key is None or not self.api_key.reveal():
                raise _err(
                    "api_key",
                    "is not set, but SECURE_DS_TOKEN_PROVIDER=api-key sends it as the bearer token",
                    "Set DEEPSEEK_API_KEY, or use SECURE_DS_TOKEN_PROVIDER=embedded.",
                )
            return
        if self.token_provider == "keycloak":
            self._validate_keycloak()
            return
        if self.client_cert is None:
            raise _err(
                "client_cert",
                "is not set, but the embedded issuer binds every token to a client certificate",
                "Set SECURE_DS_CLIENT_CERT and SECURE_DS_CLIENT_KEY (try `secure-ds demo` to see "
                "a working set-up), or use SECURE_DS_TOKEN_PROVIDER=api-key with DEEPSEEK_API_KEY.",
            )
        if self.issuer_key is None:
            raise _err(
                "issuer_key",
                "is not set, but the embedded issuer needs a signing key",
                "Set SECURE_DS_ISSUER_KEY to a PEM EC P-256 (ES256) or Ed25519 (EdDSA) "
                "private key.",
            )
        key = _load_private_key("issuer_key", self.issuer_key, None)
        if not isinstance(key, ed25519.Ed25519PrivateKey) and not (
            isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
        ):
            raise _err(
                "issuer_key",
                f"{type(key).__name__} keys are not supported for tokens",
                "Use an EC P-256 key (ES256) or an Ed25519 key (EdDSA).",
            )

    def _validate_keycloak(self) -> None:
        """SECURE_DS_TOKEN_PROVIDER=keycloak: where the realm is and how the client
        authenticates (only the chosen method's inputs are required)."""
        _check_range("keycloak_timeout", self.keycloak_timeout, 0.1, 600.0, "seconds, e.g. 10")
        if not self.keycloak_url:
            raise _err(
                "keycloak_url",
                "is not set, but SECURE_DS_TOKEN_PROVIDER=keycloak fetches tokens there",
                "Set it to Keycloak's base URL, e.g. https://sso.example.com (no /realms/...).",
            )
        check_endpoint(self.keycloak_url, variable=ENV_VARS["keycloak_url"])
        if "/realms/" in self.keycloak_url.rstrip("/") + "/":
            raise _err(
                "keycloak_url",
                "contains /realms/; it is Keycloak's base URL",
                "Drop /realms/... and put the realm's name in SECURE_DS_KEYCLOAK_REALM.",
            )
        for field, example in (("keycloak_realm", "secure-ds"), ("keycloak_client_id", "my-app")):
            value = getattr(self, field)
            if not value or not re.fullmatch(r"[A-Za-z0-9._~-]{1,255}", value):
                raise _err(
                    field,
                    "is not set" if not value else f"{value!r} is not a realm or client name",
                    f"Set it as Keycloak shows it (letters, digits, . _ ~ -), e.g. {example}.",
                )
        method = self.keycloak_client_auth
        if method not in ("client_secret", "private_key_jwt", "tls_client_auth"):
            raise _err(
                "keycloak_client_auth",
                f"{method!r} is not a client authentication method",
                "Use client_secret, private_key_jwt (RFC 7523, with "
                "SECURE_DS_KEYCLOAK_CLIENT_ASSERTION_KEY) or tls_client_auth (the mTLS "
                "certificate in SECURE_DS_CLIENT_CERT/KEY).",
            )
        if method == "client_secret" and (
            self.keycloak_client_secret is None or not self.keycloak_client_secret.reveal()
        ):
            raise _err(
                "keycloak_client_secret",
                "is not set, but SECURE_DS_KEYCLOAK_CLIENT_AUTH=client_secret sends it",
                "Set it to the client's secret (Keycloak: Clients > the client > Credentials).",
            )
        if method == "private_key_jwt":
            if self.keycloak_client_assertion_key is None:
                raise _err(
                    "keycloak_client_assertion_key",
                    "is not set, but SECURE_DS_KEYCLOAK_CLIENT_AUTH=private_key_jwt signs with it",
                    "Point it at the PEM private key (EC P-256, RSA or Ed25519) whose "
                    "certificate is registered for the client in Keycloak.",
                )
            key = _load_private_key(
                "keycloak_client_assertion_key", self.keycloak_client_assertion_key, None
            )
            if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) and (
                getattr(key, "key_size", 0) < 2048
            ):
                raise _err(
                    "keycloak_client_assertion_key",
                    f"{type(key).__name__} keys cannot sign the client assertion",
                    "Use an EC P-256, RSA (>= 2048 bits) or Ed25519 key.",
                )
        if method == "tls_client_auth":
            if self.client_cert is None:
                raise _err(
                    "client_cert",
                    "is not set, but SECURE_DS_KEYCLOAK_CLIENT_AUTH=tls_client_auth "
                    "authenticates with the client certificate",
                    "Set SECURE_DS_CLIENT_CERT and SECURE_DS_CLIENT_KEY to the pair Keycloak "
                    "maps to the client.",
                )
            if self.client_key_password is not None:
                raise _err(
                    "client_key_password",
                    "is set, but the Keycloak client (requests) cannot use an encrypted key",
                    "Use an unencrypted client key (mode 0600) with tls_client_auth, or "
                    "another SECURE_DS_KEYCLOAK_CLIENT_AUTH.",
                )
            if not self.keycloak_url.startswith("https://"):
                raise _err(
                    "keycloak_url",
                    "is not https, but tls_client_auth presents the certificate in TLS",
                    "Use Keycloak's https listener (started with --https-client-auth=request).",
                )
        if self.keycloak_ca_bundle is not None:
            _load_cert_chain("keycloak_ca_bundle", self.keycloak_ca_bundle)

    def _validate_otlp(self) -> None:
        _check_range("otlp_interval", self.otlp_interval, 0.01, 3600.0, "seconds, e.g. 1")
        _check_range("otlp_batch", self.otlp_batch, 1, 100_000, "an integer, e.g. 512")
        _check_range("otlp_backoff_max", self.otlp_backoff_max, 0.1, 3600.0, "seconds, e.g. 30")
        _check_range("otlp_timeout", self.otlp_timeout, 0.1, 600.0, "seconds, e.g. 10")
        if self.otlp_shipper not in ("thread", "sidecar"):
            raise _err(
                "otlp_shipper",
                f"{self.otlp_shipper!r} is not a shipper mode",
                "Use thread (the client ships the audit log in a background thread; the "
                "default) or sidecar (run `secure-ds audit ship` beside the application).",
            )
        if self.otlp_endpoint is not None:
            _check_otlp_endpoint(self.otlp_endpoint)
        if self.otlp_ca_bundle is not None:
            _load_cert_chain("otlp_ca_bundle", self.otlp_ca_bundle)
        _parse_otlp_headers(self.otlp_headers)

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"Settings({shown})"


def check_endpoint(url: str, *, variable: str) -> None:
    """Refuse anything but a plain https URL (http only to loopback).

    The URL is never echoed: it may carry a key in its user-info or query.
    """
    try:
        parts = urlsplit(url)
        has_userinfo = "@" in parts.netloc
    except ValueError:
        parts, has_userinfo = None, False
    if parts is None or has_userinfo or parts.query or parts.fragment:
        raise ConfigError(
            variable,
            "must be a plain URL without credentials, a query or a fragment",
            fix="Use a base URL such as https://api.deepseek.com.",
        )
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(
            variable,
            f"a URL with scheme {parts.scheme or '(none)'!r} is not an http(s) URL",
            fix="Use https://api.deepseek.com or your gateway's https URL.",
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            variable,
            f"plain http to {parts.hostname} would send tokens unencrypted",
            fix="Use an https:// URL (plain http is allowed only for loopback addresses).",
        )


# ---------------------------------------------------------------------- helpers


def _check_otlp_endpoint(url: str) -> None:
    """The collector's OTLP/HTTP base URL: https, or http to loopback only."""
    var = ENV_VARS["otlp_endpoint"]
    try:
        parts = urlsplit(url)
        bad = "@" in parts.netloc or bool(parts.query or parts.fragment)
    except ValueError:
        parts, bad = None, True
    if parts is None or bad or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            var,
            "is not a plain http(s) URL without credentials, a query or a fragment",
            fix="Use the collector's OTLP/HTTP base URL, e.g. http://127.0.0.1:4318 "
            "(/v1/logs, /v1/traces and /v1/metrics are appended); put credentials in "
            "SECURE_DS_OTLP_HEADERS.",
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            var,
            f"plain http to {parts.hostname} would send audit records unencrypted",
            fix="Use https:// for a collector on another host (plain http is allowed only "
            "for loopback, e.g. a sidecar collector).",
        )


def _parse_otlp_headers(headers: Secret | None) -> dict[str, str]:
    if headers is None:
        return {}
    out: dict[str, str] = {}
    for part in headers.reveal().split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", key):
            # the value is never echoed: it is usually a credential
            raise ConfigError(
                ENV_VARS["otlp_headers"],
                f"has an entry that is not name=value (name {key[:40]!r})",
                fix="Use comma-separated name=value pairs, e.g. "
                "Authorization=Bearer%20TOKEN (values may be percent-encoded).",
            )
        out[key] = _unquote(value.strip())
    return out


def _unquote(value: str) -> str:
    from urllib.parse import unquote

    return unquote(value)


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_range(field: str, value: float | None, low: float, high: float, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _err(field, f"{value!r} is outside [{low:g}, {high:g}]", f"Use {what}.")


_INT_FIELDS = {"max_tokens", "token_ttl", "max_attempts", "breaker_threshold", "otlp_batch"}
_FLOAT_FIELDS = {
    "policy_reload",
    "audit_fsync_interval",
    "audit_checkpoint_interval",
    "temperature",
    "top_p",
    "frequency_penalty",
    "backoff_factor",
    "backoff_max",
    "breaker_cooldown",
    "connect_timeout",
    "read_timeout",
    "otlp_interval",
    "otlp_backoff_max",
    "otlp_timeout",
}
_FLOAT_FIELDS |= {"cert_check_interval"}
_PATH_FIELDS = {
    "client_cert",
    "client_key",
    "ca_bundle",
    "issuer_key",
    "policy_dir",
    "pricing",
    "budgets",
    "meter_db",
    "audit_path",
    "audit_signing_key",
    "dlp_config",
    "otlp_ca_bundle",
}
_LIST_FIELDS = {"roles", "dlp_block", "dlp_redact"}
_SECRET_FIELDS = {"api_key", "client_key_password", "meter_redis_url", "otlp_headers"}
_INT_FIELDS |= {"audit_checkpoint_every", "audit_max_record_bytes", "dlp_cache"}
_SECRET_FIELDS |= {"audit_signing_key_password"}
_PATH_FIELDS |= {"audit_pkcs11_module", "audit_pq_key"}
_SECRET_FIELDS |= {"audit_pkcs11_pin"}
_PATH_FIELDS |= {"audit_seal_to"}
_PATH_FIELDS |= {"keycloak_client_assertion_key", "keycloak_ca_bundle"}
_SECRET_FIELDS |= {"keycloak_client_secret"}
_FLOAT_FIELDS |= {"keycloak_timeout"}


def _parse(field: str, raw: str) -> Any:
    var = ENV_VARS[field]
    if field in _INT_FIELDS:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(
                var, f"{raw!r} is not an integer", fix=f"Set {var} to a whole number."
            ) from None
    if field in _FLOAT_FIELDS:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(
                var, f"{raw!r} is not a number", fix=f"Set {var} to a number."
            ) from None
    if field in _PATH_FIELDS:
        return Path(raw).expanduser()
    if field in _SECRET_FIELDS:
        return Secret(raw)
    if field in _LIST_FIELDS:
        return tuple(r.strip() for r in raw.split(",") if r.strip())
    if field == "dlp_reversible":
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(var, f"{raw!r} is not a boolean", fix=f"Set {var} to true or false.")
    if field == "attributes":
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                var, f"is not valid JSON ({exc.msg})", fix='Use a JSON object, e.g. {"team": "ml"}.'
            ) from None
        if not isinstance(value, dict):
            raise ConfigError(var, "must be a JSON object", fix='Use e.g. {"team": "ml"}.')
        return value
    return raw


def _read_file(field: str, path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _err(
            field,
            f"cannot read {path} ({exc.strerror or exc.__class__.__name__})",
            f"Point {ENV_VARS.get(field, field)} at a readable {what}.",
        ) from None


def _load_cert_chain(field: str, path: Path) -> list[x509.Certificate]:
    data = _read_file(field, path, "PEM certificate file")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise _err(
            field,
            f"{path} holds no PEM certificate",
            "Use a PEM file that starts with -----BEGIN CERTIFICATE-----.",
        )
    return certs


def _check_validity(field: str, cert: x509.Certificate) -> None:
    now = datetime.now(UTC)
    if cert.not_valid_after_utc <= now:
        raise _err(
            field,
            f"the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
            "Renew the client certificate and point the variable at the new file.",
        )
    if cert.not_valid_before_utc > now:
        raise _err(
            field,
            f"the certificate is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            "Check the machine's clock, or use a certificate that is valid now.",
        )


def _load_private_key(field: str, path: Path, password: Secret | None) -> Any:
    data = _read_file(field, path, "PEM private key file")
    try:
        return serialization.load_pem_private_key(
            data, password.reveal().encode() if password else None
        )
    except TypeError:
        if password is None:
            raise _err(
                field,
                f"the key in {path} is encrypted",
                "Set SECURE_DS_CLIENT_KEY_PASSWORD to its passphrase.",
            ) from None
        raise _err(
            field, f"the key in {path} is not encrypted", "Unset SECURE_DS_CLIENT_KEY_PASSWORD."
        ) from None
    except ValueError:
        hint = "Check SECURE_DS_CLIENT_KEY_PASSWORD, or " if password else ""
        raise _err(
            field,
            f"{path} holds no usable PEM private key (or the passphrase is wrong)",
            f"{hint}Use a PEM private key (-----BEGIN PRIVATE KEY-----).",
        ) from None
