"""The audit log's settings: SECURE_DS_AUDIT_SIGNING_KEY and the checkpoint cadence are
validated like every other setting, and AuditLog.from_settings uses them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from secure_ds import ConfigError, Secret, Settings
from secure_ds.audit import (
    AuditLog,
    default_key_path,
    generate_key_file,
    load_public_key,
    verify_log,
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "SECURE_DS_TOKEN_PROVIDER": "api-key",
        "DEEPSEEK_API_KEY": "sk-test",
        "SECURE_DS_AUDIT_PATH": str(tmp_path / "logs" / "audit.jsonl"),
        **extra,
    }


def test_the_signing_key_and_cadence_come_from_the_environment(tmp_path: Path) -> None:
    signer = generate_key_file(tmp_path / "keys" / "audit.pem", alg="ecdsa-p256")
    settings = Settings.from_env(
        _env(
            tmp_path,
            SECURE_DS_AUDIT_SIGNING_KEY=str(tmp_path / "keys" / "audit.pem"),
            SECURE_DS_AUDIT_CHECKPOINT_EVERY="3",
            SECURE_DS_AUDIT_CHECKPOINT_INTERVAL="2.5",
            SECURE_DS_AUDIT_MAX_RECORD_BYTES="8192",
        )
    )
    assert settings.audit_checkpoint_every == 3
    assert settings.audit_checkpoint_interval == 2.5
    with AuditLog.from_settings(settings) as log:
        assert log.signer.key_id == signer.key_id
        assert log.max_record_bytes == 8192
        for i in range(7):
            log.append({"event_id": str(i)})
    result = verify_log(
        settings.audit_path, keys=[load_public_key(tmp_path / "keys" / "audit.pub")]
    )
    assert result.ok
    assert result.checkpoints == 4  # created, 3, 6, close
    assert not default_key_path().exists()  # the configured key was used, none created


def test_an_encrypted_signing_key_needs_its_password(tmp_path: Path) -> None:
    key = tmp_path / "enc.pem"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"correct horse"),
    )
    key.write_bytes(pem)
    os.chmod(key, 0o600)
    with pytest.raises(ConfigError) as info:
        Settings.from_env(_env(tmp_path, SECURE_DS_AUDIT_SIGNING_KEY=str(key)))
    assert info.value.variable == "SECURE_DS_AUDIT_SIGNING_KEY"
    assert "SECURE_DS_AUDIT_SIGNING_KEY_PASSWORD" in str(info.value)
    settings = Settings.from_env(
        _env(
            tmp_path,
            SECURE_DS_AUDIT_SIGNING_KEY=str(key),
            SECURE_DS_AUDIT_SIGNING_KEY_PASSWORD="correct horse",
        )
    )
    assert isinstance(settings.audit_signing_key_password, Secret)
    assert "correct horse" not in repr(settings)
    AuditLog.from_settings(settings).close()


@pytest.mark.parametrize(
    ("extra", "variable", "text"),
    [
        ({"SECURE_DS_AUDIT_CHECKPOINT_EVERY": "0"}, "SECURE_DS_AUDIT_CHECKPOINT_EVERY", "outside"),
        ({"SECURE_DS_AUDIT_CHECKPOINT_EVERY": "x"}, "SECURE_DS_AUDIT_CHECKPOINT_EVERY", "integer"),
        (
            {"SECURE_DS_AUDIT_CHECKPOINT_INTERVAL": "0"},
            "SECURE_DS_AUDIT_CHECKPOINT_INTERVAL",
            "outside",
        ),
        ({"SECURE_DS_AUDIT_MAX_RECORD_BYTES": "10"}, "SECURE_DS_AUDIT_MAX_RECORD_BYTES", "outside"),
        (
            {"SECURE_DS_AUDIT_SIGNING_KEY_PASSWORD": "pw"},
            "SECURE_DS_AUDIT_SIGNING_KEY_PASSWORD",
            "is not",
        ),
    ],
)
def test_bad_values_name_the_variable(
    tmp_path: Path, extra: dict[str, str], variable: str, text: str
) -> None:
    with pytest.raises(ConfigError, match=text) as info:
        Settings.from_env(_env(tmp_path, **extra))
    assert info.value.variable == variable


def test_a_signing_key_others_can_read_is_refused(tmp_path: Path) -> None:
    generate_key_file(tmp_path / "k.pem")
    os.chmod(tmp_path / "k.pem", 0o640)
    with pytest.raises(ConfigError, match="chmod 600") as info:
        Settings.from_env(_env(tmp_path, SECURE_DS_AUDIT_SIGNING_KEY=str(tmp_path / "k.pem")))
    assert info.value.variable == "SECURE_DS_AUDIT_SIGNING_KEY"
    with pytest.raises(ConfigError, match="cannot be opened"):
        Settings.from_env(_env(tmp_path, SECURE_DS_AUDIT_SIGNING_KEY=str(tmp_path / "none.pem")))


def test_durable_appends_are_the_default(tmp_path: Path) -> None:
    settings = Settings.from_env(_env(tmp_path))
    assert settings.audit_fsync == "always"  # issue 5: durable before the call returns
    with AuditLog.from_settings(settings) as log:
        assert log.fsync == "always"
    assert AuditLog(tmp_path / "direct.jsonl").fsync == "always"
