"""``secure-ds doctor``: check a configuration end to end and say how to fix what is wrong.

:func:`diagnose` reads the same environment a client reads and runs each check in
turn, without stopping at the first problem: the settings parse, the files are
readable (private keys not readable by others), the client certificate chains to the
CA bundle and does not expire within ``days``, the key matches the certificate, the
endpoint answers over mutual TLS, a token can be obtained, the server's clock agrees
with ours, the audit directory is writable and the policy folder loads.

Each :class:`Check` has a status: ``pass``, ``warn`` (works, but look at it),
``fail`` (a client would not work, or not safely) or ``skip`` (an earlier failure, or
nothing configured, leaves nothing to check). Messages name files and variables,
never secret values.
"""

from __future__ import annotations

import email.utils
import os
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from .config import ENV_VARS, Settings
from .errors import ConfigError, SecureDSError

if TYPE_CHECKING:
    from .identity import TokenProvider

__all__ = ["Check", "DoctorReport", "Status", "diagnose"]

Status = Literal["pass", "warn", "fail", "skip"]

DEFAULT_DAYS = 14
DEFAULT_SKEW = 30.0  # seconds; tokens carry a small leeway, certificates none


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        """No check failed (warnings allowed)."""
        return all(check.status != "fail" for check in self.checks)

    def status_of(self, name: str) -> Status:
        return next(check.status for check in self.checks if check.name == name)

    def get(self, name: str) -> Check:
        return next(check for check in self.checks if check.name == name)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [check.as_json() for check in self.checks]}


@dataclass
class _State:
    """What earlier checks learned, for the later ones."""

    env: Mapping[str, str]
    now: Callable[[], datetime]
    days: int
    skew: float
    timeout: float
    checks: list[Check] = field(default_factory=list)
    settings: Settings | None = None
    cert: x509.Certificate | None = None
    chain: list[x509.Certificate] = field(default_factory=list)
    key: Any = None
    token: Any = None
    provider: TokenProvider | None = None
    server_date: datetime | None = None
    local_time_at_answer: datetime | None = None

    def add(self, name: str, status: Status, detail: str, fix: str = "") -> None:
        self.checks.append(Check(name, status, detail, fix))

    def path(self, field_name: str) -> Path | None:
        raw = self.env.get(ENV_VARS[field_name], "").strip()
        return Path(raw).expanduser() if raw else None


def diagnose(
    env: Mapping[str, str] | None = None,
    *,
    days: int = DEFAULT_DAYS,
    skew_threshold: float = DEFAULT_SKEW,
    timeout: float = 5.0,
    now: Callable[[], datetime] | None = None,
    token_provider: TokenProvider | None = None,
) -> DoctorReport:
    """Run every check against ``env`` (``os.environ`` by default).

    ``now`` is the local clock (an aware UTC datetime); tests inject a skewed one.
    ``token_provider`` replaces the one the settings name (for a provider built in
    code, as given to ``SecureDeepSeek(token_provider=...)``).
    """
    state = _State(
        env=os.environ if env is None else env,
        now=now or (lambda: datetime.now(UTC)),
        days=days,
        skew=skew_threshold,
        timeout=timeout,
        provider=token_provider,
    )
    for check in (
        _check_settings,
        _check_files,
        _check_certificate,
        _check_key,
        _check_chain,
        _check_token,
        _check_endpoint,
        _check_clock,
        _check_audit,
        _check_policy,
        _check_dlp,
    ):
        check(state)
    return DoctorReport(tuple(state.checks))


# ---------------------------------------------------------------------- the checks


def _check_settings(state: _State) -> None:
    try:
        state.settings = Settings.from_env(state.env)
    except ConfigError as exc:
        state.add("settings", "fail", str(exc).removesuffix(exc.hint).strip(), exc.hint)
        return
    s = state.settings
    state.add("settings", "pass", f"endpoint {s.endpoint}, token provider {s.token_provider}")


_KEY_FIELDS = (
    "client_key",
    "issuer_key",
    "audit_signing_key",
    "keycloak_client_assertion_key",
)
_FILE_FIELDS = (
    "client_cert",
    "client_key",
    "ca_bundle",
    "issuer_key",
    "audit_signing_key",
    "keycloak_ca_bundle",
    "keycloak_client_assertion_key",
)


def _check_files(state: _State) -> None:
    problems: list[tuple[Status, str, str]] = []
    seen = 0
    for name in _FILE_FIELDS:
        if name not in ENV_VARS:
            continue
        path = state.path(name)
        if path is None:
            continue
        seen += 1
        var = ENV_VARS[name]
        try:
            with open(path, "rb") as handle:
                handle.read(1)
            mode = path.stat().st_mode
        except OSError as exc:
            problems.append(
                (
                    "fail",
                    f"{var}: cannot read {path} ({exc.strerror or type(exc).__name__})",
                    f"Make {path} readable by this user, or point {var} at the right file.",
                )
            )
            continue
        if name in _KEY_FIELDS and mode & (stat.S_IRWXG | stat.S_IRWXO):
            others = bool(mode & stat.S_IRWXO)
            problems.append(
                (
                    "fail" if others else "warn",
                    f"{var}: the private key {path} is readable by "
                    f"{'other users' if others else 'its group'} (mode {stat.S_IMODE(mode):04o})",
                    f"chmod 600 {path}",
                )
            )
    if not seen:
        state.add("files", "skip", "no certificate or key files configured")
        return
    if not problems:
        state.add("files", "pass", f"{seen} files readable; private keys are mode 0600 or stricter")
        return
    worst: Status = "fail" if any(p[0] == "fail" for p in problems) else "warn"
    state.add("files", worst, "; ".join(p[1] for p in problems), " ".join(p[2] for p in problems))


def _check_certificate(state: _State) -> None:
    cert_path = state.path("client_cert")
    if cert_path is None:
        state.add("certificate", "skip", "no client certificate (SECURE_DS_CLIENT_CERT) set")
        return
    try:
        state.chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
    except (OSError, ValueError):
        state.add(
            "certificate",
            "fail",
            f"cannot read a PEM certificate from {cert_path}",
            "Point SECURE_DS_CLIENT_CERT at a PEM certificate (-----BEGIN CERTIFICATE-----).",
        )
        return
    cert = state.cert = state.chain[0]
    now = state.now()
    after = cert.not_valid_after_utc
    left = after - now
    if cert.not_valid_before_utc > now:
        state.add(
            "certificate",
            "fail",
            f"{cert_path} is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            "Check this machine's clock, or use a certificate that is valid now.",
        )
    elif left <= timedelta(0):
        state.add(
            "certificate",
            "fail",
            f"{cert_path} expired on {after:%Y-%m-%d %H:%M} UTC",
            "Renew the client certificate (rotated files are picked up without a restart).",
        )
    elif left < timedelta(days=state.days):
        state.add(
            "certificate",
            "fail",
            f"{cert_path} expires in {_span(left)} ({after:%Y-%m-%d %H:%M} UTC), "
            f"within {state.days} days",
            "Renew it now; running clients pick up the new files without a restart.",
        )
    else:
        state.add(
            "certificate", "pass", f"{_subject(cert)}, valid until {after:%Y-%m-%d} ({_span(left)})"
        )


def _check_key(state: _State) -> None:
    key_path = state.path("client_key")
    if state.cert is None or key_path is None:
        state.add("key", "skip", "no client certificate and key to compare")
        return
    raw_password = state.env.get(ENV_VARS["client_key_password"], "")
    try:
        state.key = serialization.load_pem_private_key(
            key_path.read_bytes(), raw_password.encode() if raw_password else None
        )
    except (OSError, ValueError, TypeError):
        state.add(
            "key",
            "fail",
            f"cannot load the private key {key_path} (unreadable, not PEM, or wrong passphrase)",
            "Point SECURE_DS_CLIENT_KEY at the PEM key (SECURE_DS_CLIENT_KEY_PASSWORD if "
            "it is encrypted).",
        )
        return
    if _spki(state.key.public_key()) != _spki(state.cert.public_key()):
        state.add(
            "key",
            "fail",
            f"the key in {key_path} does not belong to the certificate in "
            f"{state.path('client_cert')}",
            "Point SECURE_DS_CLIENT_KEY at the key the certificate was issued for.",
        )
        return
    state.add("key", "pass", f"{key_path} matches the certificate")


def _check_chain(state: _State) -> None:
    ca_path = state.path("ca_bundle")
    if state.cert is None:
        state.add("chain", "skip", "no client certificate to check")
        return
    if ca_path is None:
        state.add(
            "chain",
            "skip",
            "SECURE_DS_CA_BUNDLE is not set (the system store verifies the server)",
        )
        return
    try:
        roots = x509.load_pem_x509_certificates(ca_path.read_bytes())
    except (OSError, ValueError):
        state.add(
            "chain",
            "fail",
            f"cannot read PEM certificates from {ca_path}",
            "Point SECURE_DS_CA_BUNDLE at a PEM CA bundle.",
        )
        return
    problem = _chain_problem(state.cert, state.chain[1:], roots, state.now())
    if problem is not None:
        state.add(
            "chain",
            "warn",
            f"the client certificate does not chain to {ca_path} ({problem})",
            "Include intermediates in SECURE_DS_CLIENT_CERT; ignore this if the endpoint "
            "trusts a client CA other than the server's.",
        )
        return
    state.add("chain", "pass", f"the client certificate chains to {ca_path}")


def _check_token(state: _State) -> None:
    if state.settings is None:
        state.add("token", "skip", "the settings did not load")
        return
    from .identity import token_provider_from_settings

    try:
        provider = state.provider or token_provider_from_settings(state.settings)
        token = state.token = provider.token()
    except SecureDSError as exc:
        state.add("token", "fail", str(exc).removesuffix(exc.hint).strip(), exc.hint)
        return
    except Exception as exc:  # a provider's own error: the type only, it may quote input
        state.add(
            "token",
            "fail",
            f"the token provider failed ({type(exc).__name__})",
            "Check SECURE_DS_TOKEN_PROVIDER and its settings.",
        )
        return
    parts = [f"{token.kind} token"]
    if token.subject:
        parts.append(f"for {token.subject}")
    if token.expires_at is not None:
        parts.append(f"expires in {_span(timedelta(seconds=token.expires_at - time.time()))}")
    if token.bound_thumbprint:
        parts.append("bound to the client certificate")
    state.add("token", "pass", ", ".join(parts))


def _check_endpoint(state: _State) -> None:
    settings = state.settings
    if settings is None:
        state.add("endpoint", "skip", "the settings did not load")
        return
    from .identity import build_ssl_context

    try:
        context = build_ssl_context(settings)
    except (OSError, ValueError) as exc:
        state.add(
            "endpoint",
            "fail",
            f"cannot build the TLS context ({type(exc).__name__})",
            "Fix the certificate, key and CA bundle checks above.",
        )
        return
    url = f"{settings.base_url}/models"
    headers = {"accept": "application/json"}
    if state.token is not None:
        headers["authorization"] = state.token.authorization
    auth: httpx2.Auth | None = None
    try:
        if settings.signs_requests and state.key is not None and state.cert is not None:
            from .identity import RequestSigner, SigningAuth

            # signed like the client's own calls (RFC 9421), or a verifier refuses it
            auth = SigningAuth(RequestSigner.for_certificate(state.key, state.cert))
    except SecureDSError:
        auth = None  # the key check above already failed and says why
    try:
        with httpx2.Client(
            verify=context, timeout=state.timeout, trust_env=False, follow_redirects=False
        ) as client:
            response = client.get(url, headers=headers, auth=auth)
            protocol = _protocol(response)  # while the connection is still open
    except httpx2.HTTPError as exc:
        state.add(
            "endpoint",
            "fail",
            f"GET {url} failed: {type(exc).__name__}: {_short(exc)}",
            "Check DEEPSEEK_ENDPOINT, the network path, SECURE_DS_CA_BUNDLE and that the "
            "server accepts this client certificate.",
        )
        return
    state.local_time_at_answer = state.now()
    date = response.headers.get("date")
    if date:
        try:
            state.server_date = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError):
            state.server_date = None
    if response.is_success:
        state.add("endpoint", "pass", f"GET {url}: HTTP {response.status_code} over {protocol}")
    elif response.status_code in (401, 403):
        state.add(
            "endpoint",
            "fail",
            f"GET {url}: the TLS handshake succeeded ({protocol}) but the server answered "
            f"HTTP {response.status_code}",
            "The server refused the token: check SECURE_DS_ISSUER/AUDIENCE and that the "
            "token is bound to the certificate the server sees.",
        )
    else:
        state.add(
            "endpoint",
            "warn",
            f"GET {url}: handshake succeeded ({protocol}), HTTP {response.status_code}",
            "Check that DEEPSEEK_ENDPOINT points at an OpenAI-compatible API (GET /models).",
        )


def _check_clock(state: _State) -> None:
    if state.server_date is None or state.local_time_at_answer is None:
        state.add("clock", "skip", "no Date header from the endpoint to compare with")
        return
    skew = (state.local_time_at_answer - state.server_date).total_seconds()
    # the Date header has whole seconds: up to 1 s of difference is resolution, not skew
    if abs(skew) <= state.skew + 1.0:
        state.add("clock", "pass", f"within {abs(skew):.0f} s of the server's clock")
        return
    ahead = "ahead of" if skew > 0 else "behind"
    state.add(
        "clock",
        "warn",
        f"this machine's clock is {abs(skew):.0f} s {ahead} the server's (threshold "
        f"{state.skew:.0f} s): tokens may be refused as not yet valid or expired",
        "Synchronise the clock (NTP, e.g. systemd-timesyncd or chrony).",
    )


def _check_audit(state: _State) -> None:
    if state.settings is None:
        state.add("audit", "skip", "the settings did not load")
        return
    path = state.settings.audit_path
    directory = path.parent
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the client creates missing directories
    try:
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is not writable")
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".secure-ds-doctor-"):
            pass
    except OSError as exc:
        state.add(
            "audit",
            "fail",
            f"cannot write the audit log {path} ({exc.strerror or exc})",
            "Point SECURE_DS_AUDIT_PATH at a writable location; no call is sent while "
            "the audit log cannot be written.",
        )
        return
    state.add("audit", "pass", f"{directory} is writable")


def _check_policy(state: _State) -> None:
    settings = state.settings
    if settings is None or settings.policy_dir is None:
        state.add("policy", "skip", "no policy folder (SECURE_DS_POLICY_DIR) set")
        return
    from .policy import load_bundle

    try:
        bundle = load_bundle(settings.policy_dir)
    except ConfigError as exc:
        state.add("policy", "fail", str(exc).removesuffix(exc.hint).strip(), exc.hint)
        return
    state.add(
        "policy",
        "pass",
        f"{len(bundle.policies)} policies from {settings.policy_dir} ({bundle.revision[:19]})",
    )


def _check_dlp(state: _State) -> None:
    settings = state.settings
    if settings is None or settings.dlp == "off":
        state.add("dlp", "skip", "DLP scanning is off (SECURE_DS_DLP=off)")
        return
    from .dlp._native import available

    if available():
        state.add("dlp", "pass", "the scanner's native fast paths are built (secure_ds._native)")
        return
    state.add(
        "dlp",
        "warn",
        "secure_ds._native was not built, so the DLP scanner runs its Python detectors "
        "only (the same findings, about 3x slower) and audit records take the Python "
        "append path (the same lines, about 60 % of the durable rate with 8 writers)",
        "Install a Rust toolchain (https://rustup.rs) and reinstall secure-ds (make install).",
    )


# ---------------------------------------------------------------------- helpers

_MAX_DEPTH = 5


def _chain_problem(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    roots: list[x509.Certificate],
    now: datetime,
) -> str | None:
    """Why ``leaf`` does not chain to one of ``roots`` (through ``intermediates``), or None.

    Signatures and validity periods only: cryptography's own verifier applies the Web
    PKI profile (a subjectAltName on every leaf, ...), which many client certificates
    (CN only) do not follow although TLS servers accept them.
    """
    current = leaf
    for _ in range(_MAX_DEPTH):
        for root in roots:
            if root.subject == current.issuer and _signed_by(current, root):
                if not root.not_valid_before_utc <= now < root.not_valid_after_utc:
                    return f"the CA {root.subject.rfc4514_string()} is not valid now"
                return None
        parent = next(
            (c for c in intermediates if c.subject == current.issuer and _signed_by(current, c)),
            None,
        )
        if parent is None:
            return f"no certificate for its issuer {current.issuer.rfc4514_string()}"
        if not parent.not_valid_before_utc <= now < parent.not_valid_after_utc:
            return f"the intermediate {parent.subject.rfc4514_string()} is not valid now"
        current = parent
    return f"more than {_MAX_DEPTH} intermediates"


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _spki(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if abs(seconds) >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if abs(seconds) >= 7200:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds:.0f} s"


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _protocol(response: httpx2.Response) -> str:
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    version = ssl_object.version() if ssl_object is not None else None
    return f"mTLS {version}" if version else "TLS"
