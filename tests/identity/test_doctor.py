"""``secure-ds doctor`` against real peers: the in-process sandbox and a private nginx.

Each check is shown passing and failing. The configuration is handed over as an
environment mapping, exactly as the command reads it.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from secure_ds.cli import main
from secure_ds.doctor import DoctorReport, diagnose
from secure_ds.errors import IdentityError
from secure_ds.identity import Token, TokenProvider
from secure_ds.sandbox import LocalCA, Sandbox
from secure_ds.sandbox.pki import generate_issuer_key, private_key_pem
from tests._services import require_nginx
from tests.identity._nginx import NginxPeer, Upstream
from tests.identity._rotation_support import Pair, PairFiles, issue

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _long_lived(ca: LocalCA, subject: str = "doc") -> Pair:
    now = datetime.now(UTC)
    return issue(ca, subject, not_before=now - timedelta(hours=1), not_after=now + timedelta(90))


def _env(
    endpoint: str, files: PairFiles, ca_path: Path, issuer_key: Path, tmp_path: Path
) -> dict[str, str]:
    return {
        "DEEPSEEK_ENDPOINT": endpoint,
        "SECURE_DS_CLIENT_CERT": str(files.cert),
        "SECURE_DS_CLIENT_KEY": str(files.key),
        "SECURE_DS_CA_BUNDLE": str(ca_path),
        "SECURE_DS_TOKEN_PROVIDER": "embedded",
        "SECURE_DS_ISSUER_KEY": str(issuer_key),
        "SECURE_DS_AUDIT_PATH": str(tmp_path / "audit" / "audit.jsonl"),
        "SECURE_DS_SUBJECT": "doc",
    }


@pytest.fixture
def sandbox_env(sb: Sandbox, tmp_path: Path) -> dict[str, str]:
    files = PairFiles(tmp_path / "certs", _long_lived(sb.ca))
    issuer_key = tmp_path / "issuer-key.pem"
    shutil.copyfile(sb.issuer_key_path, issuer_key)
    issuer_key.chmod(0o600)
    env = _env(sb.base_url, files, sb.ca_path, issuer_key, tmp_path)
    env["SECURE_DS_ISSUER"] = sb.issuer
    return env


def statuses(report: DoctorReport) -> dict[str, str]:
    return {check.name: check.status for check in report.checks}


# ---------------------------------------------------------------------- all well


def test_a_good_configuration_passes(sandbox_env: dict[str, str]) -> None:
    report = diagnose(sandbox_env)
    assert statuses(report) == {
        "settings": "pass",
        "files": "pass",
        "certificate": "pass",
        "key": "pass",
        "chain": "pass",
        "token": "pass",
        "endpoint": "pass",
        "clock": "pass",
        "audit": "pass",
        "policy": "skip",
        "dlp": "pass",
    }, report.checks
    assert report.ok
    assert "bound to the client certificate" in report.get("token").detail
    assert "TLSv1.3" in report.get("endpoint").detail


def test_a_scanner_without_its_native_part_warns(
    sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from secure_ds.dlp import _native

    monkeypatch.setattr(_native, "native_module", None)  # as if built without Rust
    report = diagnose(sandbox_env)
    assert report.status_of("dlp") == "warn"
    assert "rustup.rs" in report.get("dlp").fix
    assert report.ok  # a warning: the Python detectors find the same
    assert diagnose({**sandbox_env, "SECURE_DS_DLP": "off"}).status_of("dlp") == "skip"


def test_the_policy_folder_is_loaded(sandbox_env: dict[str, str]) -> None:
    report = diagnose({**sandbox_env, "SECURE_DS_POLICY_DIR": str(REPO / "policies")})
    assert report.status_of("policy") == "pass"


def test_a_broken_policy_folder_fails(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "policies"
    shutil.copytree(REPO / "policies", broken)
    (broken / "access.cedar").write_text("permit(principal, action, resource) when { nope")
    report = diagnose({**sandbox_env, "SECURE_DS_POLICY_DIR": str(broken)})
    assert report.status_of("policy") == "fail"
    assert not report.ok


# ---------------------------------------------------------------------- files and certificate


def test_a_private_key_readable_by_others_fails(sandbox_env: dict[str, str]) -> None:
    key = Path(sandbox_env["SECURE_DS_CLIENT_KEY"])
    key.chmod(0o644)
    report = diagnose(sandbox_env)
    check = report.get("files")
    assert check.status == "fail"
    assert str(key) in check.detail
    assert f"chmod 600 {key}" in check.fix


def test_a_private_key_readable_by_its_group_warns(sandbox_env: dict[str, str]) -> None:
    Path(sandbox_env["SECURE_DS_CLIENT_KEY"]).chmod(0o640)
    report = diagnose(sandbox_env)
    assert report.status_of("files") == "warn"
    assert report.ok  # a warning is not a failure


def test_a_missing_file_fails(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    report = diagnose({**sandbox_env, "SECURE_DS_CA_BUNDLE": str(tmp_path / "nope.pem")})
    assert report.status_of("files") == "fail"
    assert report.status_of("settings") == "fail"


def test_a_certificate_expiring_soon_fails(sb: Sandbox, sandbox_env: dict[str, str]) -> None:
    # the sandbox's usual client certificate lives for one day
    soon = issue(sb.ca, "doc")
    Path(sandbox_env["SECURE_DS_CLIENT_CERT"]).write_bytes(soon.cert_pem)
    Path(sandbox_env["SECURE_DS_CLIENT_KEY"]).write_bytes(soon.key_pem)
    report = diagnose(sandbox_env, days=14)
    check = report.get("certificate")
    assert check.status == "fail"
    assert "within 14 days" in check.detail
    assert diagnose(sandbox_env, days=0).status_of("certificate") == "pass"


def test_an_expired_certificate_fails(sb: Sandbox, sandbox_env: dict[str, str]) -> None:
    now = datetime.now(UTC)
    old = issue(sb.ca, "doc", not_before=now - timedelta(days=3), not_after=now - timedelta(1))
    Path(sandbox_env["SECURE_DS_CLIENT_CERT"]).write_bytes(old.cert_pem)
    Path(sandbox_env["SECURE_DS_CLIENT_KEY"]).write_bytes(old.key_pem)
    report = diagnose(sandbox_env)
    assert "expired" in report.get("certificate").detail
    assert report.status_of("certificate") == "fail"


def test_a_key_that_does_not_match_fails(sb: Sandbox, sandbox_env: dict[str, str]) -> None:
    other = _long_lived(sb.ca)
    Path(sandbox_env["SECURE_DS_CLIENT_KEY"]).write_bytes(other.key_pem)
    report = diagnose(sandbox_env)
    check = report.get("key")
    assert check.status == "fail"
    assert "does not belong" in check.detail
    assert sandbox_env["SECURE_DS_CLIENT_CERT"] in check.detail


def test_a_certificate_from_another_ca_warns_on_the_chain_and_fails_the_endpoint(
    sandbox_env: dict[str, str],
) -> None:
    foreign = _long_lived(LocalCA.create("someone else's CA"))
    Path(sandbox_env["SECURE_DS_CLIENT_CERT"]).write_bytes(foreign.cert_pem)
    Path(sandbox_env["SECURE_DS_CLIENT_KEY"]).write_bytes(foreign.key_pem)
    report = diagnose(sandbox_env)
    assert report.status_of("chain") == "warn"
    assert report.status_of("endpoint") == "fail"  # the sandbox refuses the handshake


# ---------------------------------------------------------------------- endpoint, token, audit


def test_an_unreachable_endpoint_fails(sandbox_env: dict[str, str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    report = diagnose({**sandbox_env, "DEEPSEEK_ENDPOINT": f"https://127.0.0.1:{port}"})
    check = report.get("endpoint")
    assert check.status == "fail"
    assert "ConnectError" in check.detail
    assert report.status_of("clock") == "skip"


def test_a_token_the_endpoint_refuses_fails(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    stranger = tmp_path / "stranger-key.pem"
    stranger.write_bytes(private_key_pem(generate_issuer_key()))
    stranger.chmod(0o600)
    report = diagnose({**sandbox_env, "SECURE_DS_ISSUER_KEY": str(stranger)})
    assert report.status_of("token") == "pass"  # minted, but by an issuer nobody trusts
    check = report.get("endpoint")
    assert check.status == "fail"
    assert "HTTP 401" in check.detail


def test_an_unwritable_audit_location_fails(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    report = diagnose({**sandbox_env, "SECURE_DS_AUDIT_PATH": str(blocker / "audit.jsonl")})
    assert report.status_of("audit") == "fail"


# ---------------------------------------------------------------------- clock skew, via nginx


@pytest.fixture
def nginx_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    ca = LocalCA.create("doctor nginx CA")
    upstream = Upstream()
    peer = NginxPeer(require_nginx(), tmp_path / "nginx", ca, upstream)
    files = PairFiles(tmp_path / "certs", _long_lived(ca))
    issuer_key = tmp_path / "issuer-key.pem"
    issuer_key.write_bytes(private_key_pem(generate_issuer_key()))
    issuer_key.chmod(0o600)
    try:
        yield _env(peer.base_url, files, peer.ca_path, issuer_key, tmp_path)
    finally:
        peer.stop()
        upstream.close()


def test_clock_in_step_with_nginx_passes(nginx_env: dict[str, str]) -> None:
    report = diagnose(nginx_env)
    assert report.status_of("endpoint") == "pass"  # nginx verified the certificate
    assert report.status_of("clock") == "pass"


@pytest.mark.parametrize("offset", [timedelta(minutes=10), timedelta(minutes=-10)])
def test_clock_skew_against_nginx_warns(nginx_env: dict[str, str], offset: timedelta) -> None:
    report = diagnose(nginx_env, now=lambda: datetime.now(UTC) + offset)
    check = report.get("clock")
    assert check.status == "warn"
    assert ("ahead of" if offset > timedelta(0) else "behind") in check.detail
    assert "NTP" in check.fix


# ---------------------------------------------------------------------- the command


def test_cli_json_and_exit_status(
    sandbox_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in sandbox_env.items():
        monkeypatch.setenv(name, value)
    assert main(["doctor", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True
    assert {c["check"] for c in out["checks"]} >= {"endpoint", "token", "clock"}
    Path(sandbox_env["SECURE_DS_CLIENT_KEY"]).chmod(0o604)
    assert main(["doctor"]) == 1
    printed = capsys.readouterr().out
    assert "fail" in printed
    assert "chmod 600" in printed


class _FailingProvider(TokenProvider):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def _fetch(self) -> Token:
        raise self.error


def test_a_token_that_cannot_be_obtained_fails(sandbox_env: dict[str, str]) -> None:
    down = _FailingProvider(
        IdentityError("Keycloak did not answer.", hint="Check SECURE_DS_KEYCLOAK_URL.")
    )
    report = diagnose(sandbox_env, token_provider=down)
    check = report.get("token")
    assert check.status == "fail"
    assert check.detail == "Keycloak did not answer."
    assert check.fix == "Check SECURE_DS_KEYCLOAK_URL."
    assert report.status_of("endpoint") == "fail"  # no token: the sandbox answers 401
    assert not report.ok


def test_a_provider_bug_is_reported_by_type_only(sandbox_env: dict[str, str]) -> None:
    broken = _FailingProvider(RuntimeError("secret-looking detail sk-123"))
    check = diagnose(sandbox_env, token_provider=broken).get("token")
    assert check.status == "fail"
    assert "RuntimeError" in check.detail
    assert "sk-123" not in check.detail


# ---------------------------------------------------------------------- the chain, in detail


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
) -> x509.Certificate:
    """A CN-only certificate (no subjectAltName), as many private PKIs issue them."""
    now = datetime.now(UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def test_a_cn_only_certificate_through_an_intermediate_chains(
    sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _cert("test root", root_key, None, ca=True)
    mid = _cert("test intermediate", mid_key, ("test root", root_key), ca=True)
    leaf = _cert("doc", leaf_key, ("test intermediate", mid_key), ca=False)
    pem = serialization.Encoding.PEM
    roots = tmp_path / "roots.pem"
    roots.write_bytes(root.public_bytes(pem))
    cert = Path(sandbox_env["SECURE_DS_CLIENT_CERT"])
    Path(sandbox_env["SECURE_DS_CLIENT_KEY"]).write_bytes(private_key_pem(leaf_key))
    cert.write_bytes(leaf.public_bytes(pem) + mid.public_bytes(pem))
    env = {**sandbox_env, "SECURE_DS_CA_BUNDLE": str(roots)}
    assert diagnose(env).status_of("chain") == "pass"
    cert.write_bytes(leaf.public_bytes(pem))  # the intermediate left out
    check = diagnose(env).get("chain")
    assert check.status == "warn"
    assert "test intermediate" in check.detail
