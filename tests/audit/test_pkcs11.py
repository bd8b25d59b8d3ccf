"""The PKCS#11 signer against a real SoftHSM2 token (scripts/softhsm.sh): records and
checkpoints signed inside the token verify with the exported public key alone; a wrong
PIN, token or key label fails at construction naming the setting; the PIN never shows."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path

import pytest

from secure_ds import AuditError, ConfigError, SecureDeepSeek
from secure_ds.audit import AuditLog, load_public_key, read_records, verify_log
from secure_ds.audit._pkcs11 import Pkcs11Signer
from secure_ds.config import Settings
from secure_ds.sandbox import Sandbox
from tests._services import SOFTHSM_MODULE, SOFTHSM_PIN, SOFTHSM_TOKEN, require_softhsm

from ._logs import CHECKPOINT_PREFIX, lines

pytestmark = pytest.mark.integration

LABELS = {"ed25519": "audit-ed25519", "ecdsa-p256": "audit-p256"}


def hsm_signer(label: str = "audit-ed25519", pin: str = SOFTHSM_PIN, **kw: str) -> Pkcs11Signer:
    require_softhsm()
    args = {"module": str(SOFTHSM_MODULE), "token_label": SOFTHSM_TOKEN, "key_label": label}
    args.update(kw)
    return Pkcs11Signer(pin=pin, **args)


@pytest.mark.parametrize("alg", ["ed25519", "ecdsa-p256"])
def test_the_log_signs_records_and_checkpoints_in_the_hsm(tmp_path: Path, alg: str) -> None:
    state = require_softhsm()
    signer = hsm_signer(LABELS[alg])
    assert signer.alg == alg
    exported = load_public_key(state / f"{LABELS[alg]}.pub")
    assert exported.key_id == signer.key_id  # the key id is the SPKI's, as for software keys
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync="never", signer=signer, checkpoint_every=4) as log:
        for i in range(10):
            log.append({"event_id": f"e{i}", "i": i})
    signer.close()
    records = list(read_records(path))
    assert {r["integrity"]["key"] for r in records} == {signer.key_id}
    assert {r["integrity"]["alg"] for r in records} == {alg}
    checkpoints = [
        json.loads(x)["checkpoint"] for x in lines(path) if x.startswith(CHECKPOINT_PREFIX)
    ]
    assert len(checkpoints) >= 3
    assert {c["key"] for c in checkpoints} == {signer.key_id}
    pinned = verify_log(path, keys=[exported])  # the public key alone: no HSM needed
    assert (pinned.ok, pinned.records, pinned.checkpoints) == (True, 10, len(checkpoints))
    assert verify_log(path).ok


def test_an_hsm_records_signature_verifies_with_the_exported_public_key(tmp_path: Path) -> None:
    state = require_softhsm()
    signer = hsm_signer("audit-p256")
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync="never", signer=signer) as log:
        log.append({"event_id": "e0", "outcome": "permit"})
    signer.close()
    line = next(x for x in lines(path) if not x.startswith(CHECKPOINT_PREFIX))
    from secure_ds.audit._entry import parse_line

    entry = parse_line(line[:-1])
    exported = load_public_key(state / "audit-p256.pub")
    assert exported.verify(entry.sig, entry.leaf_data())
    assert not exported.verify(entry.sig, entry.leaf_data().replace(b"permit", b"deny!!"))
    # the DER signature the token's raw r||s became is what software P-256 verifiers read
    assert base64.b64decode(entry.sig_b64)[0] == 0x30


def test_the_client_signs_its_log_with_the_hsm_key(sb: Sandbox, tmp_path: Path) -> None:
    state = require_softhsm()
    log = tmp_path / "audit.jsonl"
    settings = sb.client_settings(
        "alice",
        audit_path=log,
        audit_signer="pkcs11",
        audit_pkcs11_module=SOFTHSM_MODULE,
        audit_pkcs11_token_label=SOFTHSM_TOKEN,
        audit_pkcs11_key_label="audit-ed25519",
        audit_pkcs11_pin=SOFTHSM_PIN,
    )
    with SecureDeepSeek(settings=settings) as client:
        for _ in range(2):
            client.chat.completions.create(
                model="deepseek-flash", messages=[{"role": "user", "content": "hi"}]
            )
    exported = load_public_key(state / "audit-ed25519.pub")
    assert {r["integrity"]["key"] for r in read_records(log)} == {exported.key_id}
    result = verify_log(log, keys=[exported])
    assert (result.ok, result.records) == (True, 2), result.detail


def test_a_wrong_pin_fails_at_construction_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as err:
        hsm_signer(pin="not-the-pin")
    assert err.value.variable == "SECURE_DS_AUDIT_PKCS11_PIN"
    assert "refused the PIN" in str(err.value)
    assert "not-the-pin" not in str(err.value)


def test_signers_share_the_login_and_a_wrong_pin_is_still_refused() -> None:
    # PKCS#11 login is per process: a second signer on the same token shares it
    first, second = hsm_signer("audit-ed25519"), hsm_signer("audit-p256")
    try:
        assert first.sign(b"x")
        assert second.sign(b"x")
        with pytest.raises(ConfigError) as err:
            hsm_signer(pin="not-the-pin")  # not checked by the token now: refused here
        assert err.value.variable == "SECURE_DS_AUDIT_PKCS11_PIN"
        assert "not-the-pin" not in str(err.value)
        first.close()  # the shared login stays while another signer uses it
        assert second.sign(b"x")
        with pytest.raises(AuditError):
            first.sign(b"x")  # a closed signer signs no more
    finally:
        first.close()
        second.close()
    with pytest.raises(ConfigError) as err:
        hsm_signer(pin="not-the-pin")  # every session closed: the token checks it again
    assert "refused the PIN" in str(err.value)


def test_a_missing_key_label_fails_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as err:
        hsm_signer("no-such-key")
    assert err.value.variable == "SECURE_DS_AUDIT_PKCS11_KEY_LABEL"
    assert "no private key labelled 'no-such-key'" in str(err.value)


def test_a_missing_token_fails_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as err:
        hsm_signer(token_label="no-such-token")
    assert err.value.variable == "SECURE_DS_AUDIT_PKCS11_TOKEN_LABEL"


def test_a_missing_module_fails_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        hsm_signer(module=str(tmp_path / "nope.so"))
    assert err.value.variable == "SECURE_DS_AUDIT_PKCS11_MODULE"


def test_settings_name_what_the_pkcs11_signer_lacks(tmp_path: Path) -> None:
    base = {"SECURE_DS_AUDIT_SIGNER": "pkcs11", "SECURE_DS_AUDIT_PATH": str(tmp_path / "a")}
    with pytest.raises(ConfigError) as err:
        Settings.from_env(
            {
                **base,
                "SECURE_DS_AUDIT_PKCS11_TOKEN_LABEL": "t",
                "SECURE_DS_AUDIT_PKCS11_KEY_LABEL": "k",
            }
        )
    assert err.value.variable == "SECURE_DS_AUDIT_PKCS11_PIN"
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"SECURE_DS_AUDIT_SIGNER": "hsm"})
    assert err.value.variable == "SECURE_DS_AUDIT_SIGNER"
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"SECURE_DS_AUDIT_PKCS11_PIN": "1234"})  # but the signer is software
    assert err.value.variable == "SECURE_DS_AUDIT_PKCS11_PIN"
    assert "1234" not in str(err.value)


def test_the_signer_shows_and_pickles_no_pin() -> None:
    signer = hsm_signer()
    try:
        assert SOFTHSM_PIN not in repr(signer)
        assert "audit-ed25519" in repr(signer)
        assert signer.key_id in repr(signer)
        with pytest.raises(TypeError):
            pickle.dumps(signer)
        assert SOFTHSM_PIN not in repr(vars(signer))
    finally:
        signer.close()
