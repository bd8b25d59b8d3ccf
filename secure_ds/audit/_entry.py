"""The byte layout of a signed audit line, shared by the writer and the verifier.

A record line is the record's RFC 8785 canonical JSON (``body``) with one member added
at the end, ``"integrity"``, itself canonical JSON::

    {<the record's members, canonical>,"integrity":{"alg":"ed25519","hash":"<hex>",
     "index":7,"key":"<key id>","prev":"<hex>","sig":"<base64>"}}

* ``index``: the record's leaf index in the log's Merkle tree (0, 1, 2, ...);
* ``prev``: the leaf hash of the record before it (64 zeros for the first): the chain;
* ``key``: the signer's key id, ``alg`` its algorithm;
* ``sig``: the signature over the *leaf data*, the canonical JSON of
  ``{"alg", "index", "key", "prev", "record": <the record>}``, that is
  ``{"alg":...,"index":...,"key":...,"prev":...,"record":`` + body + ``}``;
* ``hash``: the RFC 9162 leaf hash of that leaf data, SHA-256(0x00 ‖ leaf data). It is
  what the next record's ``prev`` holds and what enters the Merkle tree.

Any JSON reader sees the record's fields at the top level, unchanged, plus
``integrity``. A verifier needs no JSON canonicaliser: the body is the line's bytes
before ``,"integrity":`` (a record never holds a top-level ``integrity`` member).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json

__all__ = ["GENESIS", "Entry", "EntryError", "leaf_data", "parse_line", "render_line"]

GENESIS = bytes(32)
_MARK = b'"integrity":{'
_FIELDS = ("alg", "hash", "index", "key", "prev", "sig")
_ALGS = ("ed25519", "ecdsa-p256")


class EntryError(ValueError):
    """A line that is not a well-formed signed record."""


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    body: bytes  # the record's canonical JSON
    alg: str
    hash: bytes
    index: int
    key: str
    prev: bytes
    sig: bytes

    def leaf_data(self) -> bytes:
        return leaf_data(self.alg, self.index, self.key, self.prev, self.body)


def leaf_data(alg: str, index: int, key: str, prev: bytes, body: bytes) -> bytes:
    head = f'{{"alg":"{alg}","index":{index},"key":"{key}","prev":"{prev.hex()}","record":'
    return head.encode("ascii") + body + b"}"


def leaf_hash_of(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _integrity(alg: str, h: bytes, index: int, key: str, prev: bytes, sig: bytes) -> bytes:
    return (
        f'{{"alg":"{alg}","hash":"{h.hex()}","index":{index},"key":"{key}",'
        f'"prev":"{prev.hex()}","sig":"{base64.b64encode(sig).decode("ascii")}"}}'
    ).encode("ascii")


def render_line(
    body: bytes, *, alg: str, leaf_hash: bytes, index: int, key: str, prev: bytes, sig: bytes
) -> bytes:
    """The record line (with its newline)."""
    sep = b"," if len(body) > 2 else b""
    return (
        body[:-1]
        + sep
        + b'"integrity":'
        + _integrity(alg, leaf_hash, index, key, prev, sig)
        + b"}\n"
    )


def parse_line(line: bytes) -> Entry:
    """Split a record line (without its newline) into body and integrity fields.

    Raises :class:`EntryError` unless the ``integrity`` member is the last one and is
    exactly in the form :func:`render_line` writes (so no bytes go unsigned but the
    integrity data itself).
    """
    at = line.rfind(_MARK)
    if at < 1 or not line.endswith(b"}}"):
        raise EntryError("the line has no integrity member at its end")
    before = line[at - 1 : at]
    if before == b",":
        body = line[: at - 1] + b"}"
    elif before == b"{" and at == 1:
        body = b"{}"
    else:
        raise EntryError("the integrity member is not a top-level member")
    raw = line[at + len(_MARK) - 1 : -1]
    try:
        fields = json.loads(raw)
    except ValueError:
        raise EntryError("the integrity member is not JSON") from None
    if not isinstance(fields, dict) or tuple(fields) != _FIELDS:
        raise EntryError(f"the integrity member must hold exactly {', '.join(_FIELDS)}")
    alg, index, key = fields["alg"], fields["index"], fields["key"]
    if alg not in _ALGS or type(index) is not int or index < 0 or not isinstance(key, str):
        raise EntryError("the integrity member's alg, index or key is malformed")
    try:
        h = bytes.fromhex(fields["hash"])
        prev = bytes.fromhex(fields["prev"])
        sig = base64.b64decode(fields["sig"], validate=True)
    except (TypeError, ValueError, binascii.Error):
        raise EntryError("the integrity member's hash, prev or sig is malformed") from None
    if len(h) != 32 or len(prev) != 32:
        raise EntryError("the integrity member's hashes are not 32 bytes")
    if _integrity(alg, h, index, key, prev, sig) != raw:
        raise EntryError("the integrity member is not in canonical form")
    return Entry(body, alg, h, index, key, prev, sig)
