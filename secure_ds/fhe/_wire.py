"""The FHE wire format (version 1): binary frames with a small JSON header.

::

    frame   = magic "SDFH" | version u8 (=1) | kind u8 | header_len u32 (big endian)
              | header (UTF-8 JSON object, <= 16 KiB) | blobs
    kind    = 1 context upload | 2 inference request | 3 inference result
    header  = {"parameter_set", "model", ["context_id", "batch"], "blobs": [len, ...]}

Content type ``application/vnd.secure-ds.fhe.v1``. Every length is checked against
the limits below and against the frame's real size *before* anything is handed to
TenSEAL: a truncated or padded frame, a blob over the parameter set's ciphertext bound,
or more blobs than the model takes is refused while it is still bytes.

Why binary and not JSON with base64: the request never becomes a JSON body, so the
guard's *classify* stage (DLP, which scans the text fields of chat and FIM bodies) has
nothing to scan, by design rather than by luck: a base64 ciphertext is exactly the
high-entropy text its ``secret`` detector is built to flag, and scanning megabytes of
it would cost time and raise false findings. An FHE call's plaintext never leaves the
client, so there is nothing for DLP to find; the audit record instead describes the
frame (:func:`audit_summary`: parameter set, model, context id, SHA-256 and size of
every ciphertext), never its contents. It is also a third smaller than base64.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any, Final

from ..errors import FheWireError
from ._params import parameter_set

__all__ = [
    "CONTENT_TYPE",
    "KIND_CONTEXT",
    "KIND_REQUEST",
    "KIND_RESULT",
    "MAX_BLOBS",
    "MAX_CONTEXT_BYTES",
    "Frame",
    "audit_summary",
    "context_id_for",
    "decode",
    "encode",
]

CONTENT_TYPE: Final = "application/vnd.secure-ds.fhe.v1"
MAGIC: Final = b"SDFH"
VERSION: Final = 1
KIND_CONTEXT: Final = 1
KIND_REQUEST: Final = 2
KIND_RESULT: Final = 3
_KIND_NAMES: Final = {KIND_CONTEXT: "context", KIND_REQUEST: "request", KIND_RESULT: "result"}
_PREFIX: Final = struct.Struct(">4sBBI")
MAX_HEADER_BYTES: Final = 16 * 1024
MAX_BLOBS: Final = 256  # ciphertexts per frame
MAX_CONTEXT_BYTES: Final = 96 * 1024 * 1024  # a public context with Galois keys: 35-60 MB


@dataclass(frozen=True)
class Frame:
    kind: int
    header: dict[str, Any]
    blobs: tuple[bytes, ...]

    @property
    def parameter_set(self) -> str:
        return _text(self.header, "parameter_set")

    @property
    def model(self) -> str:
        return _text(self.header, "model")

    @property
    def context_id(self) -> str:
        return _text(self.header, "context_id")

    @property
    def batch(self) -> int:
        value = self.header.get("batch")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise FheWireError(
                "the frame header's 'batch' is missing or not a positive integer",
                hint="Build frames with secure_ds.fhe (FheSession).",
            )
        return value


def context_id_for(context_bytes: bytes) -> str:
    """A context's id: content-addressed, so client and service compute the same one."""
    return "ctx-" + hashlib.sha256(context_bytes).hexdigest()[:32]


def encode(kind: int, header: dict[str, Any], blobs: list[bytes] | tuple[bytes, ...]) -> bytes:
    head = json.dumps({**header, "blobs": [len(b) for b in blobs]}, separators=(",", ":"))
    raw = head.encode()
    if len(raw) > MAX_HEADER_BYTES:
        raise FheWireError("the frame header is too large", hint="Shorten the ids.")
    return b"".join([_PREFIX.pack(MAGIC, VERSION, kind, len(raw)), raw, *blobs])


def decode(data: bytes, *, kind: int, max_frame: int | None = None) -> Frame:
    """Parse and bound-check a frame; raises :class:`FheWireError` naming the problem.

    Checks, in order: the fixed prefix (magic, version, kind), the header length and
    JSON, the blob count, each blob against the parameter set's ciphertext bound (or
    the context limit), and that the blob lengths add up to exactly the rest of the
    frame (so truncation and trailing bytes are both caught). No blob is parsed here.
    """
    limit = max_frame if max_frame is not None else _frame_limit(kind)
    if len(data) > limit:
        raise FheWireError(
            f"the FHE {_KIND_NAMES.get(kind, kind)} frame is {len(data)} bytes, over the "
            f"{limit}-byte limit",
            hint="Send fewer inputs per request, or check the frame was built by secure_ds.",
        )
    if len(data) < _PREFIX.size:
        raise FheWireError(
            f"the FHE frame is truncated: {len(data)} bytes, shorter than its "
            f"{_PREFIX.size}-byte prefix",
            hint="Resend the whole frame.",
        )
    magic, version, got_kind, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise FheWireError(
            "the body is not an FHE frame (bad magic)",
            hint=f"Send frames built by secure_ds.fhe with Content-Type {CONTENT_TYPE}.",
        )
    if version != VERSION:
        raise FheWireError(
            f"FHE frame version {version} is not supported (this side speaks {VERSION})",
            hint="Use the same secure-ds version on both sides.",
        )
    if got_kind != kind:
        raise FheWireError(
            f"expected an FHE {_KIND_NAMES.get(kind)} frame, got a "
            f"{_KIND_NAMES.get(got_kind, got_kind)} frame",
            hint="Send contexts to POST /fhe/contexts and requests to POST /fhe/infer.",
        )
    if header_len > MAX_HEADER_BYTES or _PREFIX.size + header_len > len(data):
        raise FheWireError(
            f"the FHE frame header length {header_len} is invalid (frame of {len(data)} bytes)",
            hint="The frame is truncated or corrupted; resend it.",
        )
    start = _PREFIX.size + header_len
    try:
        header = json.loads(data[_PREFIX.size : start])
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise FheWireError("the FHE frame header is not a JSON object", hint="Resend it.")
    lengths = header.pop("blobs", None)
    if not isinstance(lengths, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in lengths
    ):
        raise FheWireError(
            "the FHE frame header has no valid 'blobs' list of lengths", hint="Resend it."
        )
    if not 1 <= len(lengths) <= MAX_BLOBS:
        raise FheWireError(
            f"the FHE frame carries {len(lengths)} blobs; 1 to {MAX_BLOBS} are allowed",
            hint="Split the inputs over several requests.",
        )
    bound = MAX_CONTEXT_BYTES if kind == KIND_CONTEXT else _ciphertext_bound(header)
    for index, n in enumerate(lengths):
        if n > bound:
            raise FheWireError(
                f"blob {index} of the FHE frame is {n} bytes, over the {bound}-byte bound "
                f"for {'a context' if kind == KIND_CONTEXT else 'one ciphertext'}",
                hint="Check the parameter set: a ciphertext this large was not made with it.",
            )
    body = len(data) - start
    if sum(lengths) != body:
        state = "truncated" if sum(lengths) > body else "followed by extra bytes"
        raise FheWireError(
            f"the FHE frame is {state}: its header announces {sum(lengths)} bytes of "
            f"ciphertext, the frame holds {body}",
            hint="Resend the whole frame unchanged.",
        )
    blobs = []
    offset = start
    for n in lengths:
        blobs.append(data[offset : offset + n])
        offset += n
    return Frame(kind, header, tuple(blobs))


def audit_summary(content_type: str, data: bytes) -> dict[str, Any] | None:
    """What the audit record says about an FHE request: never plaintext, never a key.

    ``None`` when the body is not an FHE frame (the record then says nothing more).
    A frame that does not decode is summarised by its size and error, so a refused
    request is still described.
    """
    if not content_type.startswith(CONTENT_TYPE):
        return None
    kind = data[5] if len(data) > 5 and data[:4] == MAGIC else 0
    try:
        frame = decode(data, kind=kind)
    except FheWireError as exc:
        return {"frame": "invalid", "bytes": len(data), "problem": str(exc)[:200]}
    header = frame.header
    summary: dict[str, Any] = {
        "frame": _KIND_NAMES[frame.kind],
        "parameter_set": header.get("parameter_set"),
        "model": header.get("model"),
    }
    if frame.kind == KIND_CONTEXT:
        summary["context_id"] = context_id_for(frame.blobs[0])
        summary["context_bytes"] = len(frame.blobs[0])
    else:
        summary["context_id"] = header.get("context_id")
        summary["batch"] = header.get("batch")
        summary["ciphertexts"] = [
            {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for b in frame.blobs
        ]
    return summary


def _frame_limit(kind: int) -> int:
    if kind == KIND_CONTEXT:
        return MAX_CONTEXT_BYTES + MAX_HEADER_BYTES + _PREFIX.size
    return MAX_BLOBS * _largest_ciphertext() + MAX_HEADER_BYTES + _PREFIX.size


def _largest_ciphertext() -> int:
    from ._params import PARAMETER_SETS

    return max(p.max_ciphertext_bytes for p in PARAMETER_SETS.values())


def _ciphertext_bound(header: dict[str, Any]) -> int:
    name = header.get("parameter_set")
    if not isinstance(name, str):
        raise FheWireError("the FHE frame header names no 'parameter_set'", hint="Resend it.")
    try:
        return parameter_set(name).max_ciphertext_bytes
    except Exception as exc:  # FheParameterError: re-raised as a wire problem
        raise FheWireError(str(exc)) from None


def _text(header: dict[str, Any], name: str) -> str:
    value = header.get(name)
    if not isinstance(value, str) or not value or len(value) > 200:
        raise FheWireError(
            f"the FHE frame header's {name!r} is missing or not a short string",
            hint="Build frames with secure_ds.fhe (FheSession).",
        )
    return value
