"""Sealed bodies (SECURE_DS_AUDIT_SEAL_TO): the request and response bodies sealed for an
auditor's X25519 + ML-KEM-1024 key inside the signed record; only that key opens them,
only in the record they were sealed for, and only unaltered."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from secure_ds import AsyncSecureDeepSeek, ConfigError, SecureDeepSeek, Settings, StreamInterrupted
from secure_ds.audit import (
    AuditLog,
    AuditorPrivateKey,
    Sealer,
    export_log,
    generate_auditor_key,
    load_auditor_private_key,
    load_auditor_public_key,
    read_records,
    unseal,
    unseal_record,
    verify_log,
)
from secure_ds.audit._jcs import canonicalize
from secure_ds.cli import main
from secure_ds.errors import AuditError, SealError
from secure_ds.sandbox import Sandbox

SCHEMA = json.loads((Path(__file__).parents[2] / "audit" / "record.schema.json").read_text())
MARKER = "zebra-ultramarine-4711"  # a prompt word that must never appear in the log
MESSAGES: list[Any] = [{"role": "user", "content": f"Tell me about the {MARKER} please"}]


@pytest.fixture
def auditor(tmp_path: Path) -> tuple[Path, Path]:
    return generate_auditor_key(tmp_path / "keys" / "auditor.key")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _flip(text: str, at: int = 5) -> str:
    raw = bytearray(_unb64(text))
    raw[at] ^= 0x01
    return _b64(bytes(raw))


# ---------------------------------------------------------------------- the envelope


def test_round_trip() -> None:
    key = AuditorPrivateKey.generate()
    sealer = Sealer(key.public)
    sealed = sealer.seal("ev-1", b'{"prompt":"hi"}', b'{"answer":"hello"}')
    assert sealed["recipient"] == key.public.key_id
    assert len(_unb64(sealed["kem_ct"])) == 1568
    assert len(_unb64(sealed["epk"])) == 32
    out = unseal(key, sealed, "ev-1")
    assert out.request == b'{"prompt":"hi"}'
    assert out.response == b'{"answer":"hello"}'
    # no response (a denied call) and empty bodies survive too
    assert unseal(key, sealer.seal("ev-2", b"req", None), "ev-2").response is None
    empty = unseal(key, sealer.seal("ev-3", b"", b""), "ev-3")
    assert (empty.request, empty.response) == (b"", b"")
    # a fresh key agreement per record: the same bodies never seal alike
    again = sealer.seal("ev-1", b'{"prompt":"hi"}', b'{"answer":"hello"}')
    assert again["epk"] != sealed["epk"]
    assert again["ct"] != sealed["ct"]
    # the size the sealer predicts is the size the member adds to a canonical record
    record = {"event_id": "ev-1", "x": 1}
    with_sealed = canonicalize({**record, "sealed": sealed})
    assert len(with_sealed) - len(canonicalize(record)) == sealer.sealed_size(9 + 15 + 18)


def test_a_sealed_body_moved_to_another_record_does_not_open() -> None:
    key = AuditorPrivateKey.generate()
    sealed = Sealer(key.public).seal("ev-original", b"secret request", b"secret response")
    with pytest.raises(SealError, match="moved from another record"):
        unseal(key, sealed, "ev-other")
    record = {"event_id": "ev-other", "sealed": sealed}
    with pytest.raises(SealError, match="does not open"):
        unseal_record(key, record)


@pytest.mark.parametrize("field", ["ct", "epk", "kem_ct", "nonce"])
def test_a_tampered_envelope_does_not_open(field: str) -> None:
    key = AuditorPrivateKey.generate()
    sealed = Sealer(key.public).seal("ev-1", b"request body", b"response body")
    tampered = {**sealed, field: _flip(sealed[field], at=3)}
    with pytest.raises(SealError):
        unseal(key, tampered, "ev-1")
    truncated = {**sealed, "ct": _b64(_unb64(sealed["ct"])[:-1])}
    with pytest.raises(SealError, match="does not open"):
        unseal(key, truncated, "ev-1")


def test_the_wrong_key_does_not_open() -> None:
    right, wrong = AuditorPrivateKey.generate(), AuditorPrivateKey.generate()
    sealed = Sealer(right.public).seal("ev-1", b"request", b"response")
    with pytest.raises(SealError, match="sealed for auditor key"):
        unseal(wrong, sealed, "ev-1")
    # even when the recipient id is rewritten to the wrong key's: the AEAD refuses
    relabelled = {**sealed, "recipient": wrong.public.key_id}
    with pytest.raises(SealError, match="does not open"):
        unseal(wrong, relabelled, "ev-1")


def test_unseal_record_checks_the_bodies_against_the_record_hashes() -> None:
    key = AuditorPrivateKey.generate()
    request, response = b'{"model":"m"}', b'{"id":"r"}'
    record: dict[str, Any] = {
        "event_id": "ev-1",
        "request": {"body_sha256": hashlib.sha256(request).hexdigest()},
        "response": {"body_sha256": hashlib.sha256(b"something else").hexdigest()},
    }
    record["sealed"] = Sealer(key.public).seal("ev-1", request, response)
    with pytest.raises(SealError, match="does not match the record's SHA-256"):
        unseal_record(key, record)
    record["response"]["body_sha256"] = hashlib.sha256(response).hexdigest()
    assert unseal_record(key, record).response == response


def test_too_large_bodies_are_omitted_and_say_so() -> None:
    key = AuditorPrivateKey.generate()
    sealer = Sealer(key.public, max_record_bytes=8192)
    record = {"event_id": "ev-1", "outcome": "permit"}
    small = sealer.seal_record(record, b"x" * 100, b"y" * 100)
    assert "ct" in small
    member = sealer.seal_record(record, b"x" * 6000, b"y" * 100)
    assert member["omitted"] == "too large"
    assert member["bytes"] == 9 + 6100
    assert member["limit"] == 8192
    assert "ct" not in member
    with pytest.raises(SealError, match="were not sealed"):
        unseal(key, member, "ev-1")
    # a stream whose bytes were dropped (over the limit) is omitted too
    assert sealer.seal_record(record, b"x", None, response_bytes=50_000)["omitted"]
    # the record with whatever was chosen always fits the limit
    for size in (4000, 4500, 5000, 5500, 5800):
        chosen = sealer.seal_record(record, b"x" * size, b"")
        assert len(canonicalize({**record, "sealed": chosen})) <= 8192


# ---------------------------------------------------------------------- key files


def test_key_files(tmp_path: Path, auditor: tuple[Path, Path]) -> None:
    private, public = auditor
    assert private.stat().st_mode & 0o777 == 0o600
    key = load_auditor_private_key(private)
    assert load_auditor_public_key(public) == key.public
    assert "AuditorPrivateKey(key_id=" in repr(key)
    assert json.loads(private.read_text())["x25519"] not in repr(key)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(key)
    with pytest.raises(AuditError, match="never overwritten"):
        generate_auditor_key(private)
    os.chmod(private, 0o640)
    with pytest.raises(AuditError, match="can be read by others"):
        load_auditor_private_key(private)
    edited = json.loads(public.read_text())
    edited["key_id"] = "0" * 16
    (tmp_path / "edited.pub").write_text(json.dumps(edited))
    with pytest.raises(AuditError, match="the file was edited"):
        load_auditor_public_key(tmp_path / "edited.pub")
    with pytest.raises(AuditError, match="is not an auditor public key"):
        load_auditor_public_key(private)
    low_order = json.loads(public.read_text())
    low_order["x25519"] = _b64(bytes(32))  # the all-zero point: no shared secret
    (tmp_path / "low.pub").write_text(json.dumps(low_order))
    with pytest.raises(AuditError, match="malformed X25519"):
        load_auditor_public_key(tmp_path / "low.pub")


def test_a_bad_seal_to_setting_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "not-a-key.json").write_text("{}")
    with pytest.raises(ConfigError, match="SECURE_DS_AUDIT_SEAL_TO") as err:
        Settings(audit_seal_to=tmp_path / "not-a-key.json")
    assert "keygen-auditor" in str(err.value)
    with pytest.raises(ConfigError, match="SECURE_DS_AUDIT_SEAL_TO"):
        Settings(audit_seal_to=tmp_path / "missing.pub")


# ---------------------------------------------------------------------- through the client


def test_off_by_default_no_sealed_member(sb: Sandbox, tmp_path: Path) -> None:
    settings = sb.client_settings("alice", audit_path=tmp_path / "a.jsonl")
    with SecureDeepSeek(settings=settings) as client:
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    (record,) = read_records(settings.audit_path)
    assert "sealed" not in record
    assert MARKER.encode() not in settings.audit_path.read_bytes()


def test_client_seals_bodies_and_no_body_text_is_in_the_log(
    sb: Sandbox, tmp_path: Path, auditor: tuple[Path, Path]
) -> None:
    private, public = auditor
    settings = sb.client_settings("alice", audit_path=tmp_path / "a.jsonl", audit_seal_to=public)
    with SecureDeepSeek(settings=settings) as client:
        reply = client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    completion = reply.choices[0].message.content or ""
    assert completion
    raw = settings.audit_path.read_bytes()
    for text in (MARKER, completion, json.dumps(completion)[1:-1]):
        assert text.encode() not in raw
    (record,) = read_records(settings.audit_path)
    assert set(record["sealed"]) == {"alg", "recipient", "epk", "kem_ct", "nonce", "ct"}
    jsonschema.validate(record, SCHEMA)
    assert verify_log(settings.audit_path).ok  # the record's signature covers the member
    bodies = unseal_record(load_auditor_private_key(private), record)
    assert MARKER in json.loads(bodies.request)["messages"][0]["content"]
    assert bodies.response is not None
    assert json.loads(bodies.response)["choices"][0]["message"]["content"] == completion
    assert hashlib.sha256(bodies.response).hexdigest() == record["response"]["body_sha256"]


def test_streamed_responses_are_sealed_when_the_stream_ends(
    sb: Sandbox, tmp_path: Path, auditor: tuple[Path, Path]
) -> None:
    private, public = auditor
    settings = sb.client_settings("alice", audit_path=tmp_path / "a.jsonl", audit_seal_to=public)
    with SecureDeepSeek(settings=settings) as client:
        chunks = list(
            client.chat.completions.create(model="deepseek-flash", messages=MESSAGES, stream=True)
        )
        sb.drop_next_stream(1)
        with pytest.raises(StreamInterrupted):
            list(
                client.chat.completions.create(
                    model="deepseek-flash", messages=MESSAGES, stream=True
                )
            )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert text.encode() not in settings.audit_path.read_bytes()
    key = load_auditor_private_key(private)
    whole, broken = read_records(settings.audit_path)
    assert whole["response"]["completed"] is True
    assert broken["outcome"] == "failure"
    for record in (whole, broken):
        bodies = unseal_record(key, record)  # checks the SHA-256 the record holds
        assert bodies.response is not None
        assert len(bodies.response) == record["response"]["body_bytes"]
        assert b"\ndata: {" in bodies.response  # the raw SSE bytes, as received
    assert b"[DONE]" in (unseal_record(key, whole).response or b"")
    assert b"[DONE]" not in (unseal_record(key, broken).response or b"")


def test_bodies_too_large_for_the_record_are_omitted_and_the_call_goes_on(
    sb: Sandbox, tmp_path: Path, auditor: tuple[Path, Path]
) -> None:
    _, public = auditor
    settings = sb.client_settings(
        "alice", audit_path=tmp_path / "a.jsonl", audit_seal_to=public, audit_max_record_bytes=8192
    )
    big: list[Any] = [{"role": "user", "content": "word " * 1200}]
    with SecureDeepSeek(settings=settings) as client:
        client.chat.completions.create(model="deepseek-flash", messages=big)
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    large, small = read_records(settings.audit_path)
    assert large["outcome"] == "permit"
    assert large["sealed"]["omitted"] == "too large"
    assert large["sealed"]["limit"] == 8192
    assert "ct" in small["sealed"]
    jsonschema.validate(large, SCHEMA)
    assert verify_log(settings.audit_path).ok
    # the CSV export says which records carry sealed bodies
    out = io.StringIO()
    export_log(settings.audit_path, fmt="csv", out=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert [r["sealed"] for r in rows] == ["omitted", "sealed"]


def test_editing_a_sealed_member_in_the_log_breaks_the_signature(
    sb: Sandbox, tmp_path: Path, auditor: tuple[Path, Path]
) -> None:
    _, public = auditor
    settings = sb.client_settings("alice", audit_path=tmp_path / "a.jsonl", audit_seal_to=public)
    with SecureDeepSeek(settings=settings) as client:
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    raw = settings.audit_path.read_bytes()
    ct = json.loads(raw.splitlines()[1])["sealed"]["ct"]
    settings.audit_path.write_bytes(raw.replace(ct.encode(), _flip(ct).encode()))
    result = verify_log(settings.audit_path)
    assert not result.ok
    assert result.reason == "edited"
    assert result.first_bad_index == 0


# ---------------------------------------------------------------------- the CLI


def test_cli_keygen_and_unseal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "auditor.key"
    assert main(["audit", "keygen-auditor", str(out)]) == 0
    assert "SECURE_DS_AUDIT_SEAL_TO=" in capsys.readouterr().out
    sealer = Sealer.from_file(out.with_name("auditor.key.pub"))
    log = tmp_path / "audit.jsonl"
    bodies = [(b'{"q":"first"}', b'{"a":"one"}'), (b"\xff\xfebinary", None)]
    with AuditLog(log, fsync="never") as writer:
        for i, (request, response) in enumerate(bodies):
            record = {"event_id": f"ev-{i}", "request": {}, "response": {}}
            record["sealed"] = sealer.seal_record(record, request, response)
            writer.append(record)
    assert main(["audit", "unseal", str(log), "--key", str(out), "--json"]) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert (first["request"], first["response"]) == ('{"q":"first"}', '{"a":"one"}')
    assert base64.b64decode(second["request_base64"]) == b"\xff\xfebinary"
    assert second["response"] is None
    assert main(["audit", "unseal", str(log), "--key", str(out), "--index", "0"]) == 0
    text = capsys.readouterr().out
    assert '{"a":"one"}' in text
    assert "ev-1" not in text
    # another auditor's key: each record is reported, exit status 1
    other = tmp_path / "other.key"
    assert main(["audit", "keygen-auditor", str(other)]) == 0
    capsys.readouterr()
    assert main(["audit", "unseal", str(log), "--key", str(other)]) == 1
    assert "sealed for auditor key" in capsys.readouterr().err
    assert main(["audit", "unseal", str(log), "--key", str(out), "--event-id", "nope"]) == 2


def test_a_stream_tracker_drops_bodies_over_the_limit() -> None:
    from secure_ds.guard._chain import SSEUsageTracker

    assert SSEUsageTracker().body is None  # nothing kept unless sealing
    tracker = SSEUsageTracker(keep=16)
    tracker.feed(b"data: 12345\n")
    assert tracker.body == b"data: 12345\n"
    tracker.feed(b"data: 67890\n")
    assert tracker.body is None
    assert tracker.size == 24


async def test_the_async_client_seals_bodies_and_streams_too(
    sb: Sandbox, tmp_path: Path, auditor: tuple[Path, Path]
) -> None:
    private, public = auditor
    settings = sb.client_settings("alice", audit_path=tmp_path / "a.jsonl", audit_seal_to=public)
    async with AsyncSecureDeepSeek(settings=settings) as client:
        await client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
        stream = await client.chat.completions.create(
            model="deepseek-flash", messages=MESSAGES, stream=True
        )
        assert [c async for c in stream]
    assert MARKER.encode() not in settings.audit_path.read_bytes()
    key = load_auditor_private_key(private)
    plain, streamed = read_records(settings.audit_path)
    assert b'"choices"' in (unseal_record(key, plain).response or b"")
    assert b"data: [DONE]" in (unseal_record(key, streamed).response or b"")


def test_the_documented_construction_opens_a_sealed_member() -> None:
    """An independent implementation of the module docstring's construction (HKDF by
    hand with hmac) opens what the sealer wrote: code and documentation agree."""
    import hmac

    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    x_private, seed = os.urandom(32), os.urandom(64)
    key = AuditorPrivateKey(x_private, seed)
    sealed = Sealer(key.public).seal("0190-event", b"the request", b"the response")
    epk, kem_ct = _unb64(sealed["epk"]), _unb64(sealed["kem_ct"])
    ss_x = x25519.X25519PrivateKey.from_private_bytes(x_private).exchange(
        x25519.X25519PublicKey.from_public_bytes(epk)
    )
    ss_k = mlkem.MLKEM1024PrivateKey.from_seed_bytes(seed).decapsulate(kem_ct)
    label = b"secure-ds/audit-seal/v1"
    info = (
        label
        + b"\x00"
        + hashlib.sha256(key.public.x25519).digest()
        + hashlib.sha256(key.public.ml_kem_1024).digest()
        + epk
        + hashlib.sha256(kem_ct).digest()
    )
    prk = hmac.digest(bytes(32), ss_k + ss_x, "sha256")  # HKDF-Extract, empty salt
    okm = hmac.digest(prk, info + b"\x01", "sha256")  # HKDF-Expand, L = 32
    plaintext = AESGCM(okm).decrypt(
        _unb64(sealed["nonce"]), _unb64(sealed["ct"]), label + b"\x00" + b"0190-event"
    )
    n = int.from_bytes(plaintext[1:9], "big")
    assert plaintext[0] == 1
    assert plaintext[9 : 9 + n] == b"the request"
    assert plaintext[9 + n :] == b"the response"
