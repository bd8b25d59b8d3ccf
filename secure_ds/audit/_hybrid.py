"""A hybrid Ed25519 + ML-DSA-65 signer: post-quantum signatures on checkpoints.

:class:`HybridSigner` pairs a classical signer (Ed25519 by default, or ECDSA P-256; a
software key or an HSM key) with an ML-DSA-65 key (FIPS 204, from ``cryptography``'s
``mldsa`` module). Records are signed by the classical key alone; every checkpoint note
carries two signature lines (C2SP signed-note: one per key, each with the key name and
its 4-byte key hash), and a checkpoint line names both keys (``key`` and ``pq``).

Why checkpoints only: an ML-DSA-65 signature is 3,309 bytes against Ed25519's 64, and
signing is about 20x slower here (measured in ``bench/bench_audit.py``), so signing
every record with it would cost the log its durable-append rate and grow every line by
4.4 KB of base64. The records are still covered: each checkpoint signs the Merkle root
of every record before it, so a record edited after its checkpoint fails against that
root, whatever happened to Ed25519. What the post-quantum signature does not cover is
the records after the newest checkpoint (at most ``checkpoint_every`` records or
``checkpoint_interval`` seconds): they rest on the classical signature alone.

Verification (:mod:`._verify`) requires BOTH signatures of a hybrid checkpoint; once a
log has a hybrid checkpoint (or an ML-DSA-65 key is pinned), every later checkpoint must
be hybrid too, so an attacker who can forge Ed25519 cannot strip the ML-DSA line.

The ML-DSA-65 key hash of a signature line is secure-ds's own (signed-note defines no
ML-DSA type): the first 4 bytes of SHA-256(name ‖ 0x0A ‖ DER SPKI), as for P-256 (the
SPKI's algorithm identifier keeps the two apart).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import AuditError
from ._signing import HAVE_MLDSA, Signer, generate_key_file, load_signer

if TYPE_CHECKING:
    from .._native import RecordSigner

__all__ = ["HybridSigner", "load_pq_signer"]


class HybridSigner(Signer):
    """Records: ``classical``'s signature. Checkpoints: ``classical`` and ``pq``."""

    def __init__(self, classical: Signer, pq: Signer) -> None:
        if classical.alg not in ("ed25519", "ecdsa-p256"):
            raise ValueError("the classical half of a hybrid signer is Ed25519 or ECDSA P-256")
        if pq.alg != "ml-dsa-65":
            raise ValueError("the post-quantum half of a hybrid signer is an ML-DSA-65 key")
        self.classical = classical
        self.pq = pq
        self.alg = classical.alg
        self.public_key_der = classical.public_key_der
        self.key_id = classical.key_id

    def sign(self, message: bytes) -> bytes:
        return self.classical.sign(message)

    def _sign(self, message: bytes) -> bytes:  # pragma: no cover - sign() delegates
        return self.classical.sign(message)

    def native_records(self) -> RecordSigner | None:
        return self.classical.native_records()

    def note_signers(self) -> tuple[Signer, ...]:
        return (self.classical, self.pq)

    def close(self) -> None:
        self.classical.close()
        self.pq.close()

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("an audit signer holds a private key and cannot be pickled")

    def __repr__(self) -> str:
        return f"HybridSigner(classical={self.classical!r}, pq={self.pq!r})"


def load_pq_signer(path: Path, *, create: bool = False) -> Signer:
    """The ML-DSA-65 key in the PEM file ``path`` (0600); with ``create``, made (and its
    ``.pub`` written beside it) when the file does not exist."""
    path = Path(path)
    if not HAVE_MLDSA:  # pragma: no cover - the installed cryptography has ML-DSA
        raise AuditError(
            "The installed cryptography has no ML-DSA-65 (hybrid checkpoints need it).",
            hint="Upgrade it (secure-ds is tested with cryptography 50), or unset "
            "SECURE_DS_AUDIT_PQ_KEY.",
        )
    if create and not path.exists():
        signer: Signer = generate_key_file(path, "ml-dsa-65")
    else:
        signer = load_signer(path)
    if signer.alg != "ml-dsa-65":
        raise AuditError(
            f"The post-quantum checkpoint key {path} is an {signer.alg} key, not ML-DSA-65.",
            hint="Point SECURE_DS_AUDIT_PQ_KEY at an ML-DSA-65 private key "
            "(secure-ds creates one there when the file does not exist).",
        )
    return signer
