"""The wire format refuses malformed frames while they are still bytes."""

from __future__ import annotations

import hashlib
import struct

import pytest

from secure_ds.fhe import FheWireError
from secure_ds.fhe._wire import (
    KIND_CONTEXT,
    KIND_REQUEST,
    MAX_BLOBS,
    audit_summary,
    decode,
    encode,
)

HEADER = {"context_id": "ctx-1", "parameter_set": "ckks-8192-d2/1", "model": "m", "batch": 1}


def test_a_frame_round_trips() -> None:
    frame = decode(encode(KIND_REQUEST, HEADER, [b"abc", b"de"]), kind=KIND_REQUEST)
    assert frame.blobs == (b"abc", b"de")
    assert (frame.context_id, frame.model, frame.batch) == ("ctx-1", "m", 1)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda f: f[:-1], "truncated: its header announces 5 bytes of ciphertext, the frame"),
        (lambda f: f + b"x", "followed by extra bytes"),
        (lambda f: f[:7], "shorter than its 10-byte prefix"),
        (lambda f: b"XXXX" + f[4:], "bad magic"),
        (lambda f: f[:4] + b"\x02" + f[5:], "version 2 is not supported"),
        (lambda f: f[:5] + bytes([KIND_CONTEXT]) + f[6:], "expected an FHE request frame"),
        (lambda f: f[:6] + struct.pack(">I", 10**6) + f[10:], "header length 1000000 is invalid"),
    ],
)
def test_malformed_frames_are_refused_naming_the_problem(mangle, message) -> None:  # type: ignore[no-untyped-def]
    frame = encode(KIND_REQUEST, HEADER, [b"abc", b"de"])
    with pytest.raises(FheWireError, match=message):
        decode(mangle(frame), kind=KIND_REQUEST)


def test_an_oversized_ciphertext_is_refused_before_parsing() -> None:
    big = b"\0" * (2 * 8192 * 3 * 8 + 4097)  # over the ckks-8192-d2/1 bound
    with pytest.raises(FheWireError, match="over the 397312-byte bound for one ciphertext"):
        decode(encode(KIND_REQUEST, HEADER, [big]), kind=KIND_REQUEST)


def test_too_many_ciphertexts_and_oversized_frames_are_refused() -> None:
    with pytest.raises(FheWireError, match=f"1 to {MAX_BLOBS} are allowed"):
        decode(encode(KIND_REQUEST, HEADER, [b"x"] * (MAX_BLOBS + 1)), kind=KIND_REQUEST)
    with pytest.raises(FheWireError, match="over the 100-byte limit"):
        decode(encode(KIND_REQUEST, HEADER, [b"x" * 200]), kind=KIND_REQUEST, max_frame=100)


def test_the_audit_summary_holds_digests_never_contents() -> None:
    secret = b"plaintext-would-be-here"
    summary = audit_summary(
        "application/vnd.secure-ds.fhe.v1", encode(KIND_REQUEST, HEADER, [secret])
    )
    assert summary is not None
    assert summary["ciphertexts"] == [
        {"sha256": hashlib.sha256(secret).hexdigest(), "bytes": len(secret)}
    ]
    assert secret.decode() not in repr(summary)
    assert audit_summary("application/json", b"{}") is None
    assert audit_summary("application/vnd.secure-ds.fhe.v1", b"junk")["frame"] == "invalid"  # type: ignore[index]
