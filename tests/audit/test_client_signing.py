"""The client signs its audit log with the key SECURE_DS_AUDIT_SIGNING_KEY names (and
keeps the checkpoint cadence the settings give), not with the default key."""

from __future__ import annotations

from pathlib import Path

from secure_ds import SecureDeepSeek
from secure_ds.audit import generate_key_file, load_public_key, verify_log
from secure_ds.sandbox import Sandbox
from tests.conftest import read_audit


def test_the_client_signs_with_the_configured_key(sb: Sandbox, tmp_path: Path) -> None:
    key = tmp_path / "keys" / "audit.pem"
    key.parent.mkdir()
    signer = generate_key_file(key, "ecdsa-p256")
    log = tmp_path / "audit.jsonl"
    settings = sb.client_settings(
        "alice", audit_path=log, audit_signing_key=key, audit_checkpoint_every=2
    )
    with SecureDeepSeek(settings=settings) as client:
        for _ in range(3):
            client.chat.completions.create(
                model="deepseek-flash", messages=[{"role": "user", "content": "hi"}]
            )
    records = read_audit(log)
    assert len(records) == 3
    assert {r["integrity"]["key"] for r in records} == {signer.key_id}
    checkpoints = [
        line for line in log.read_text().splitlines() if line.startswith('{"checkpoint"')
    ]
    assert len(checkpoints) >= 3  # created, after 2 records, on close
    pinned = verify_log(log, keys=[load_public_key(key.with_name("audit.pub"))])
    assert pinned.ok, pinned.detail
    assert pinned.records == 3
