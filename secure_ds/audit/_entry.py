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
import dataclasses
import hashlib
import re

__all__ = [
    "GENESIS",
    "Entry",
    "EntryError",
    "leaf_data",
    "leaf_data_of",
    "leaf_hash_in_place",
    "parse_line",
    "render_line",
    "split_line",
]

GENESIS = bytes(32)
_MARK = b'"integrity":{'


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
    sig_b64: bytes  # decoded only when a signature is checked

    def leaf_data(self) -> bytes:
        return leaf_data(self.alg, self.index, self.key, self.prev, self.body)

    @property
    def sig(self) -> bytes:
        return base64.b64decode(self.sig_b64)


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


_INTEGRITY = re.compile(
    rb'"integrity":\{"alg":"(ed25519|ecdsa-p256)","hash":"([0-9a-f]{64})",'
    rb'"index":(0|[1-9][0-9]{0,17}),"key":"([0-9a-f]{16})","prev":"([0-9a-f]{64})",'
    rb'"sig":"((?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?)"\}\}'
)


def split_line(line: bytes) -> tuple[int, re.Match[bytes]]:
    """Where the record's own members end in ``line`` (0 for an empty record) and the
    match of its integrity member; raises :class:`EntryError` like :func:`parse_line`.
    The verifier's fast path: it hashes the line in place instead of copying the body."""
    at = line.rfind(_MARK)
    if at < 1:
        raise EntryError("the line has no integrity member at its end")
    before = line[at - 1 : at]
    if before == b",":
        end = at - 1
    elif before == b"{" and at == 1:
        end = 0
    else:
        raise EntryError("the integrity member is not a top-level member")
    m = _INTEGRITY.fullmatch(line, at)
    if m is None:
        raise EntryError(
            "the integrity member is not exactly alg, hash, index, key, prev, sig in canonical form"
        )
    return end, m


def parse_line(line: bytes) -> Entry:
    """Split a record line (without its newline) into body and integrity fields.

    Raises :class:`EntryError` unless the ``integrity`` member is the last one and is
    exactly in the form :func:`render_line` writes (so no bytes go unsigned but the
    integrity data itself).
    """
    end, m = split_line(line)
    body = line[:end] + b"}" if end else b"{}"
    alg, h, index, key, prev, sig = m.groups()
    return Entry(
        body,
        alg.decode(),
        bytes.fromhex(h.decode()),
        int(index),
        key.decode(),
        bytes.fromhex(prev.decode()),
        sig,
    )


def leaf_data_of(line: bytes, end: int, m: re.Match[bytes]) -> bytes:
    """The leaf data of a record line (``end`` and ``m`` from :func:`split_line`), built
    from the line's bytes; equal to ``parse_line(line).leaf_data()``."""
    alg, _, index, key, prev, _ = m.groups()
    head = (
        b'{"alg":"'
        + alg
        + b'","index":'
        + index
        + b',"key":"'
        + key
        + b'","prev":"'
        + prev
        + b'","record":'
    )
    return head + line[:end] + b"}}" if end else head + b"{}}"


def leaf_hash_in_place(line: bytes, end: int, m: re.Match[bytes]) -> bytes:
    """The leaf hash of a record line's leaf data, hashed from the line without copying
    its body (``end`` and ``m`` from :func:`split_line`). Equal to
    ``leaf_hash_of(parse_line(line).leaf_data())``."""
    alg, _, index, key, prev, _ = m.groups()
    sha = hashlib.sha256(
        b'\x00{"alg":"'
        + alg
        + b'","index":'
        + index
        + b',"key":"'
        + key
        + b'","prev":"'
        + prev
        + b'","record":'
    )
    if end:
        sha.update(memoryview(line)[:end])
        sha.update(b"}}")
    else:
        sha.update(b"{}}")
    return sha.digest()
