"""Signed checkpoints of the audit log's Merkle tree, in the C2SP tlog-checkpoint format.

A checkpoint is a signed note (C2SP ``signed-note``) whose text is::

    <origin>\\n
    <tree size, decimal>\\n
    <root hash, base64>\\n
    time <RFC 3339 UTC>\\n                  (an extension line)

and, only in a key rotation's checkpoint (:meth:`._log.AuditLog.rotate_key`), more
extension lines that start the new key's epoch::

    epoch <new key id> previous <old key id>\\n
    key <alg> <key id> <base64 DER SPKI>\\n   (one per new key: classical, ML-DSA-65)

followed by an empty line and one signature line per signer::

    — <key name> <base64(4-byte key hash ‖ signature)>\\n

The signature covers the text up to and including its last newline. The key name is the
origin. For Ed25519 the key hash is signed-note's: the first 4 bytes of
SHA-256(name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key), so standard note verifiers accept
these checkpoints. signed-note defines no ECDSA P-256 key type this log could use, so for
P-256 and ML-DSA-65 (hybrid checkpoints, :mod:`._hybrid`) the key hash is secure-ds's
own: SHA-256(name ‖ 0x0A ‖ DER SPKI), first 4 bytes.

In the log a checkpoint is one JSON line with a single top-level key ``"checkpoint"``
(never an ``event_id``)::

    {"checkpoint": {"note": "...", "origin": ..., "size": n, "root": "<base64>",
                    "time": ..., "alg": ..., "key": "<key id>",
                    "public_key": "<base64 DER SPKI>", "last": "<hex>",
                    "range": ["<base64>", ...],
                    "pq": {"alg": "ml-dsa-65", "key": ..., "public_key": ...},  (hybrid)
                    "rotate": {"from": "<old key id>", "keys": [{"alg", "key",
                               "public_key"}, ...]}}}                          (rotation)

``alg``, ``key`` and ``public_key`` name the (classical) key that signed the checkpoint;
in a rotation that is the old key, and the new keys sign it too (proof of possession).

``note`` is what is signed; ``origin``, ``size``, ``root`` and ``time`` repeat it for
readers and must agree with it. ``last`` (the leaf hash of the newest record, which the
next record chains to) and ``range`` (the compact range of the tree) let a writer resume
without reading the whole log; a verifier recomputes both.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

from ._signing import PublicKey, Signer

__all__ = [
    "Checkpoint",
    "NoteError",
    "checkpoint_line",
    "key_entry",
    "open_note",
    "rotation_lines",
    "sign_note",
]

_DASH = "\u2014"


class NoteError(ValueError):
    """A checkpoint note that does not parse, or whose signatures do not verify."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    time: str
    extra: tuple[str, ...] = ()  # extension lines after the time line (key rotation)

    def text(self) -> str:
        root = base64.b64encode(self.root).decode("ascii")
        extra = "".join(f"{line}\n" for line in self.extra)
        return f"{self.origin}\n{self.size}\n{root}\ntime {self.time}\n{extra}"


def _key_hash(name: str, alg: str, raw: bytes) -> bytes:
    prefix = b"\x01" if alg == "ed25519" else b""
    return hashlib.sha256(name.encode() + b"\n" + prefix + raw).digest()[:4]


def rotation_lines(old: Signer, new: Signer) -> tuple[str, ...]:
    """The extension lines of a rotation from ``old`` to ``new`` (module docstring)."""
    lines = [f"epoch {new.key_id} previous {old.key_id}"]
    for signer in new.note_signers():
        spki = base64.b64encode(signer.public_key_der).decode("ascii")
        lines.append(f"key {signer.alg} {signer.key_id} {spki}")
    return tuple(lines)


def key_entry(signer: Signer) -> dict[str, str]:
    return {
        "alg": signer.alg,
        "key": signer.key_id,
        "public_key": base64.b64encode(signer.public_key_der).decode("ascii"),
    }


def sign_note(checkpoint: Checkpoint, signers: Sequence[Signer]) -> str:
    """The signed note of ``checkpoint``, one signature line per signer."""
    text = checkpoint.text()
    message = text.encode()
    lines = []
    for signer in signers:
        raw = signer.public_key().raw
        blob = _key_hash(checkpoint.origin, signer.alg, raw) + signer.sign(message)
        lines.append(f"{_DASH} {checkpoint.origin} {base64.b64encode(blob).decode('ascii')}\n")
    return text + "\n" + "".join(lines)


def open_note(note: str, keys: Sequence[PublicKey]) -> tuple[Checkpoint, list[PublicKey]]:
    """Parse a signed note and check its signatures against ``keys``.

    Returns the checkpoint and the keys whose signatures verified; raises
    :class:`NoteError` if it does not parse or no key in ``keys`` signed it.
    """
    text, sep, sigs = note.partition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise NoteError("a signed note needs its text, an empty line and signature lines")
    text += "\n"
    parts = text.split("\n")
    if len(parts) < 5 or not parts[3].startswith("time "):
        raise NoteError("a checkpoint's text is origin, size, root and a time line")
    if not all(parts[4:-1]):
        raise NoteError("a checkpoint's extension lines are not empty")
    origin, size_text, root_text, time_line = parts[0], parts[1], parts[2], parts[3]
    if not origin or not size_text.isdigit() or (size_text != "0" and size_text[0] == "0"):
        raise NoteError("a checkpoint needs an origin and a decimal tree size")
    try:
        root = base64.b64decode(root_text, validate=True)
    except ValueError:
        raise NoteError("the root hash is not base64") from None
    if len(root) != 32:
        raise NoteError("the root hash is not 32 bytes")
    checkpoint = Checkpoint(origin, int(size_text), root, time_line[5:], tuple(parts[4:-1]))
    if checkpoint.text() != text:
        raise NoteError("the note's text is not in canonical form")
    verified: list[PublicKey] = []
    message = text.encode()
    for line in sigs[:-1].split("\n"):
        dash, _, rest = line.partition(" ")
        name, _, blob_text = rest.partition(" ")
        if dash != _DASH or not name or not blob_text:
            raise NoteError("a signature line is '— <name> <base64>'")
        try:
            blob = base64.b64decode(blob_text, validate=True)
        except ValueError:
            raise NoteError("a signature is not base64") from None
        for key in keys:
            if (
                name == origin
                and blob[:4] == _key_hash(name, key.alg, key.raw)
                and key.verify(blob[4:], message)
            ):
                verified.append(key)
    if not verified:
        raise NoteError("no trusted key signed this checkpoint")
    return checkpoint, verified


def checkpoint_line(
    checkpoint: Checkpoint,
    signer: Signer,
    *,
    last: bytes,
    compact_range: Sequence[bytes],
    rotate_to: Signer | None = None,
) -> dict[str, Any]:
    """The JSON object of a checkpoint line (see the module docstring); with
    ``rotate_to``, the rotation from ``signer`` to it (``checkpoint`` must carry
    :func:`rotation_lines`), signed by both."""
    signers = list(signer.note_signers())
    if rotate_to is not None:
        signers += rotate_to.note_signers()
    cp: dict[str, Any] = {
        "alg": signer.alg,
        "key": signer.key_id,
        "last": last.hex(),
        "note": sign_note(checkpoint, signers),
        "origin": checkpoint.origin,
        "public_key": base64.b64encode(signer.public_key_der).decode("ascii"),
        "range": [base64.b64encode(h).decode("ascii") for h in compact_range],
        "root": base64.b64encode(checkpoint.root).decode("ascii"),
        "size": checkpoint.size,
        "time": checkpoint.time,
    }
    pq = [s for s in signer.note_signers() if s.alg == "ml-dsa-65"]
    if pq:
        cp["pq"] = key_entry(pq[0])
    if rotate_to is not None:
        cp["rotate"] = {
            "from": signer.key_id,
            "keys": [key_entry(s) for s in rotate_to.note_signers()],
        }
    return {"checkpoint": cp}
