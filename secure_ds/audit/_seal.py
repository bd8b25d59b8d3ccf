"""Sealed bodies: a call's request and response bodies, encrypted for an auditor.

Off by default (records hold only the bodies' SHA-256 and size). With
``SECURE_DS_AUDIT_SEAL_TO`` set to an auditor's public key file, each record gets a
``sealed`` member, inside the signed record (so the record signature covers it), that
only the holder of the auditor's private key can open (``secure-ds audit unseal``).

The envelope, per record (``alg`` = :data:`SEAL_ALG`), is a hybrid of a classical and a
post-quantum key agreement, in the spirit of X-Wing and the HPKE hybrid KEMs: an
attacker must break *both* X25519 and ML-KEM-1024 to read a body.

1. ``e`` ← fresh X25519 key; ``epk`` = its public key (32 bytes);
   ``ss_x`` = X25519(``e``, ``pk_x``), ``pk_x`` the auditor's X25519 public key.
2. (``ss_k``, ``kem_ct``) ← ML-KEM-1024.Encaps(``pk_k``) (FIPS 203; ``kem_ct`` 1568
   bytes), ``pk_k`` the auditor's ML-KEM-1024 encapsulation key.
3. ``key`` = HKDF-SHA256(salt = empty, IKM = ``ss_k`` ‖ ``ss_x``, info = ``LABEL`` ‖
   0x00 ‖ SHA-256(``pk_x``) ‖ SHA-256(``pk_k``) ‖ ``epk`` ‖ SHA-256(``kem_ct``),
   L = 32), ``LABEL`` = ``b"secure-ds/audit-seal/v1"``. Every field after the label
   has a fixed length, so the concatenation is unambiguous. Binding ``epk`` and both
   recipient keys (as in X-Wing's combiner, which hashes ``ct_X`` and ``pk_X``) keeps
   the X25519 half from being re-targeted; binding ``kem_ct`` as well costs one hash
   and does not lean on ML-KEM's own ciphertext binding.
4. ``ct`` = AES-256-GCM(``key``, ``nonce`` (12 random bytes), plaintext, AAD =
   ``LABEL`` ‖ 0x00 ‖ the record's ``event_id`` (ASCII)). A sealed member copied into
   another record does not open there (its event id differs), and any change to
   ``epk``, ``kem_ct``, ``nonce`` or ``ct`` fails the GCM tag (ML-KEM's implicit
   rejection turns a changed ``kem_ct`` into an unrelated key).

The plaintext is a flags byte (bit 0: a response was received), the request body's
length as 8 bytes big-endian, the request body, then the response body: the bytes as
sent and received (the request after enforcement, e.g. DLP redaction; a stream's raw
SSE bytes), whose SHA-256 the record already holds, so :func:`unseal_record` checks
them against it. Nothing is compressed (compression before encryption leaks content
through the ciphertext length).

The member, base64url without padding::

    "sealed": {"alg": "X25519+ML-KEM-1024/HKDF-SHA256/AES-256-GCM", "recipient":
               "<key id>", "epk": "...", "kem_ct": "...", "nonce": "...", "ct": "..."}

A body too large to fit: the sealed member counts against
``SECURE_DS_AUDIT_MAX_RECORD_BYTES``. When the record with its sealed member would be
larger, the bodies are not sealed and the member says so instead:
``{"alg", "recipient", "omitted": "too large", "bytes": <plaintext size>, "limit":
<max record bytes>}``; the call itself goes on (it may already have been answered and
paid for; refusing it would lose its record). The record's SHA-256 of each body still
identifies a body produced later.

Key files (JSON): the public file holds ``x25519`` and ``ml_kem_1024`` (raw public
keys, base64url) and their ``key_id`` (the first 8 bytes of SHA-256 over a label and
both keys, hex); the private file (mode 0600, refused otherwise) holds the X25519
private key and the ML-KEM-1024 64-byte seed. ``secure-ds audit keygen-auditor OUT``
writes ``OUT`` (private) and ``OUT.pub``.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import AuditError, SealError
from ._jcs import canonicalize

__all__ = [
    "SEAL_ALG",
    "AuditorPrivateKey",
    "AuditorPublicKey",
    "Sealer",
    "Unsealed",
    "generate_auditor_key",
    "load_auditor_private_key",
    "load_auditor_public_key",
    "unseal",
    "unseal_record",
]

SEAL_ALG = "X25519+ML-KEM-1024/HKDF-SHA256/AES-256-GCM"
LABEL = b"secure-ds/audit-seal/v1"
_PUBLIC_KIND = "secure-ds/audit-seal-public-key"
_PRIVATE_KIND = "secure-ds/audit-seal-private-key"
_KEY_ID_LABEL = b"secure-ds/audit-seal-key-id/v1\x00"
_KEM_CT_BYTES = 1568
_TAG_BYTES = 16
_HEADER_BYTES = 9  # flags byte + request length


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise SealError(f"The sealed member's {what} is missing or not a string.")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise SealError(f"The sealed member's {what} is not base64url.") from None


def _b64_len(n: int) -> int:
    return (4 * n + 2) // 3


def _key_id(x_pub: bytes, k_pub: bytes) -> str:
    return hashlib.sha256(_KEY_ID_LABEL + x_pub + k_pub).digest()[:8].hex()


@dataclasses.dataclass(frozen=True)
class AuditorPublicKey:
    """The auditor's two public keys; what the client seals to."""

    x25519: bytes  # raw, 32 bytes
    ml_kem_1024: bytes  # raw encapsulation key, 1568 bytes

    @property
    def key_id(self) -> str:
        return _key_id(self.x25519, self.ml_kem_1024)

    @functools.cached_property
    def info_prefix(self) -> bytes:
        """The start of the HKDF info: the label and both recipient key hashes (fixed
        per key, so hashed once, not per record)."""
        return (
            LABEL
            + b"\x00"
            + hashlib.sha256(self.x25519).digest()
            + hashlib.sha256(self.ml_kem_1024).digest()
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": _PUBLIC_KIND,
                "alg": SEAL_ALG,
                "key_id": self.key_id,
                "x25519": _b64(self.x25519),
                "ml_kem_1024": _b64(self.ml_kem_1024),
            },
            indent=2,
        )


class AuditorPrivateKey:
    """The auditor's private keys (kept off the writing host). Never shown in a repr."""

    __slots__ = ("_k", "_x", "public")

    def __init__(self, x_private: bytes, kem_seed: bytes) -> None:
        self._x = x25519.X25519PrivateKey.from_private_bytes(x_private)
        self._k = mlkem.MLKEM1024PrivateKey.from_seed_bytes(kem_seed)
        self.public = AuditorPublicKey(
            self._x.public_key().public_bytes_raw(), self._k.public_key().public_bytes_raw()
        )

    @classmethod
    def generate(cls) -> AuditorPrivateKey:
        return cls(
            x25519.X25519PrivateKey.generate().private_bytes_raw(),
            mlkem.MLKEM1024PrivateKey.generate().private_bytes_raw(),
        )

    def __repr__(self) -> str:
        return f"AuditorPrivateKey(key_id={self.public.key_id!r})"

    def __reduce__(self) -> Any:
        raise TypeError("an auditor's private key is not pickled")

    def _to_json(self) -> str:
        return json.dumps(
            {
                "kind": _PRIVATE_KIND,
                "alg": SEAL_ALG,
                "key_id": self.public.key_id,
                "x25519": _b64(self._x.private_bytes_raw()),
                "ml_kem_1024_seed": _b64(self._k.private_bytes_raw()),
            },
            indent=2,
        )

    def _shared_key(self, epk: bytes, kem_ct: bytes) -> bytes:
        try:
            ss_x = self._x.exchange(x25519.X25519PublicKey.from_public_bytes(epk))
            ss_k = self._k.decapsulate(kem_ct)
        except ValueError:
            raise SealError(
                "The sealed member's epk or kem_ct is malformed (wrong length or a "
                "low-order point)."
            ) from None
        return _combine(ss_k, ss_x, self.public, epk, kem_ct)


def _combine(ss_k: bytes, ss_x: bytes, to: AuditorPublicKey, epk: bytes, kem_ct: bytes) -> bytes:
    """The construction of the module docstring, step 3."""
    info = to.info_prefix + epk + hashlib.sha256(kem_ct).digest()
    return HKDF(hashes.SHA256(), 32, None, info).derive(ss_k + ss_x)


def _aad(event_id: str) -> bytes:
    return LABEL + b"\x00" + event_id.encode("utf-8")


@dataclasses.dataclass(frozen=True)
class Unsealed:
    """What a sealed member held. ``response`` is None when no response was received."""

    request: bytes
    response: bytes | None


class Sealer:
    """Seals records' bodies for one auditor key, within the record size limit."""

    def __init__(self, to: AuditorPublicKey, *, max_record_bytes: int = 1 << 20) -> None:
        self.to = to
        self.recipient = to.key_id
        self.max_record_bytes = max_record_bytes
        self._x = x25519.X25519PublicKey.from_public_bytes(to.x25519)
        self._k = mlkem.MLKEM1024PublicKey.from_public_bytes(to.ml_kem_1024)
        # the member's canonical size without its ct; the ct's base64 length is added
        self._fixed = len(
            canonicalize(
                {
                    "alg": SEAL_ALG,
                    "recipient": self.recipient,
                    "epk": "x" * _b64_len(32),
                    "kem_ct": "x" * _b64_len(_KEM_CT_BYTES),
                    "nonce": "x" * _b64_len(12),
                    "ct": "",
                }
            )
        ) + len(b',"sealed":')

    @classmethod
    def from_file(cls, path: Path, *, max_record_bytes: int = 1 << 20) -> Sealer:
        return cls(load_auditor_public_key(path), max_record_bytes=max_record_bytes)

    def sealed_size(self, plaintext_bytes: int) -> int:
        """How many bytes the sealed member adds to a canonical record."""
        return self._fixed + _b64_len(plaintext_bytes + _TAG_BYTES)

    def seal(self, event_id: str, request: bytes, response: bytes | None) -> dict[str, str]:
        """The sealed member for one record (no size check)."""
        plaintext = b"".join(
            (
                b"\x01" if response is not None else b"\x00",
                len(request).to_bytes(8, "big"),
                request,
                response or b"",
            )
        )
        e = x25519.X25519PrivateKey.generate()
        epk = e.public_key().public_bytes_raw()
        ss_x = e.exchange(self._x)
        ss_k, kem_ct = self._k.encapsulate()
        key = _combine(ss_k, ss_x, self.to, epk, kem_ct)
        nonce = os.urandom(12)
        ct = AESGCM(key).encrypt(nonce, plaintext, _aad(event_id))
        return {
            "alg": SEAL_ALG,
            "recipient": self.recipient,
            "epk": _b64(epk),
            "kem_ct": _b64(kem_ct),
            "nonce": _b64(nonce),
            "ct": _b64(ct),
        }

    def seal_record(
        self,
        record: Mapping[str, Any],
        request: bytes,
        response: bytes | None,
        response_bytes: int | None = None,
    ) -> dict[str, Any]:
        """The ``sealed`` member for ``record`` (not yet holding one): the bodies sealed,
        or an ``omitted`` note when the record would then exceed the size limit.
        ``response_bytes`` is the response's size when its bytes were not kept (a stream
        larger than the limit): such a record is always ``omitted``."""
        size = len(request) + _HEADER_BYTES
        size += len(response) if response is not None else (response_bytes or 0)
        dropped = response is None and bool(response_bytes)
        if dropped or self.sealed_size(size) > self.max_record_bytes - 2:
            return self._omitted(size)
        try:
            plain = len(canonicalize(dict(record)))
        except (TypeError, ValueError):
            plain = 0  # the log refuses such a record itself, with its own error
        if plain + self.sealed_size(size) > self.max_record_bytes:
            return self._omitted(size)
        return self.seal(str(record["event_id"]), request, response)

    def _omitted(self, size: int) -> dict[str, Any]:
        return {
            "alg": SEAL_ALG,
            "recipient": self.recipient,
            "omitted": "too large",
            "bytes": size,
            "limit": self.max_record_bytes,
        }


def unseal(key: AuditorPrivateKey, sealed: Mapping[str, Any], event_id: str) -> Unsealed:
    """Open a sealed member of the record with ``event_id``; :class:`SealError` if it
    is not for this key, was omitted, was moved from another record, or was altered."""
    if sealed.get("alg") != SEAL_ALG:
        raise SealError(
            f"The sealed member's algorithm {sealed.get('alg')!r} is not {SEAL_ALG!r}.",
            hint="Use the secure-ds version that wrote the log.",
        )
    if "omitted" in sealed:
        raise SealError(
            f"The bodies of record {event_id} were not sealed ({sealed.get('omitted')}: "
            f"{sealed.get('bytes')} bytes, over the {sealed.get('limit')}-byte record limit).",
            hint="Raise SECURE_DS_AUDIT_MAX_RECORD_BYTES to seal larger bodies.",
        )
    if sealed.get("recipient") != key.public.key_id:
        raise SealError(
            f"Record {event_id} is sealed for auditor key {sealed.get('recipient')}, "
            f"not for {key.public.key_id}.",
            hint="Pass the auditor private key whose key_id the record names.",
        )
    epk = _unb64(sealed.get("epk"), "epk")
    kem_ct = _unb64(sealed.get("kem_ct"), "kem_ct")
    nonce = _unb64(sealed.get("nonce"), "nonce")
    ct = _unb64(sealed.get("ct"), "ct")
    if len(epk) != 32 or len(kem_ct) != _KEM_CT_BYTES or len(nonce) != 12:
        raise SealError(f"The sealed member of record {event_id} has fields of the wrong size.")
    try:
        plaintext = AESGCM(key._shared_key(epk, kem_ct)).decrypt(nonce, ct, _aad(event_id))
    except InvalidTag:
        raise SealError(
            f"The sealed member of record {event_id} does not open: it was altered, moved "
            "from another record, or sealed for another key.",
            hint=f"Run `secure-ds audit verify` on the log; record {event_id} is suspect.",
        ) from None
    if len(plaintext) < _HEADER_BYTES or plaintext[0] not in (0, 1):
        raise SealError(f"The sealed bodies of record {event_id} are not in a known layout.")
    n = int.from_bytes(plaintext[1:_HEADER_BYTES], "big")
    request = plaintext[_HEADER_BYTES : _HEADER_BYTES + n]
    if len(request) != n:
        raise SealError(f"The sealed bodies of record {event_id} are cut short.")
    response = plaintext[_HEADER_BYTES + n :] if plaintext[0] == 1 else None
    return Unsealed(request, response)


def unseal_record(key: AuditorPrivateKey, record: Mapping[str, Any]) -> Unsealed:
    """Open ``record``'s sealed member and check the bodies against the SHA-256 the
    record holds for each."""
    sealed = record.get("sealed")
    event_id = str(record.get("event_id"))
    if not isinstance(sealed, Mapping):
        raise SealError(
            f"Record {event_id} has no sealed bodies.",
            hint="Bodies are sealed only while SECURE_DS_AUDIT_SEAL_TO is set.",
        )
    out = unseal(key, sealed, event_id)
    for part, body in (("request", out.request), ("response", out.response)):
        member = record.get(part)
        want = member.get("body_sha256") if isinstance(member, Mapping) else None
        if body is not None and want is not None and hashlib.sha256(body).hexdigest() != want:
            raise SealError(
                f"The sealed {part} body of record {event_id} does not match the record's "
                "SHA-256 of it.",
                hint=f"Run `secure-ds audit verify` on the log; record {event_id} is suspect.",
            )
    return out


# ---------------------------------------------------------------------- key files


def generate_auditor_key(out: Path) -> tuple[Path, Path]:
    """Write a new auditor key pair: ``out`` (private, 0600, never overwritten) and
    ``out.pub`` (public). Returns both paths."""
    out = Path(out)
    pub = out.with_name(out.name + ".pub")
    key = AuditorPrivateKey.generate()
    try:
        out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise AuditError(
            f"Cannot create the folder {out.parent} ({exc.strerror}).",
            hint="Pass a path in a writable folder.",
        ) from None
    for path in (out, pub):
        if path.exists():
            raise AuditError(
                f"{path} already exists; an auditor key is never overwritten.",
                hint="Choose another path, or move the old key aside first.",
            )
    _write_new(out, key._to_json().encode(), 0o600)
    try:
        _write_new(pub, key.public.to_json().encode(), 0o644)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out, pub


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise AuditError(
            f"Cannot create {path} ({exc.strerror}).",
            hint="Pass a path in a writable folder that does not exist yet.",
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data + b"\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise AuditError(f"Cannot write {path} ({exc.strerror}).", hint="Check the disk.") from None


def _read_json(path: Path, kind: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuditError(
            f"Cannot read the {what} {path} ({exc.strerror or type(exc).__name__}).",
            hint="Pass the file `secure-ds audit keygen-auditor` wrote.",
        ) from None
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("kind") != kind or data.get("alg") != SEAL_ALG:
        raise AuditError(
            f"{path} is not an {what} file (JSON with kind {kind!r} and alg {SEAL_ALG!r}).",
            hint="Pass the file `secure-ds audit keygen-auditor` wrote.",
        )
    return data


def load_auditor_public_key(path: Path) -> AuditorPublicKey:
    data = _read_json(path, _PUBLIC_KIND, "auditor public key")
    try:
        x_pub = _unb64(data.get("x25519"), "x25519")
        k_pub = _unb64(data.get("ml_kem_1024"), "ml_kem_1024")
        # one trial agreement: a low-order X25519 point (all-zero secret) raises here,
        # at configuration time, instead of failing every call's record later
        x25519.X25519PrivateKey.generate().exchange(x25519.X25519PublicKey.from_public_bytes(x_pub))
        mlkem.MLKEM1024PublicKey.from_public_bytes(k_pub)
    except (SealError, ValueError):
        raise AuditError(
            f"The auditor public key {path} holds a malformed X25519 or ML-KEM-1024 key.",
            hint="Export the public key again with `secure-ds audit keygen-auditor`.",
        ) from None
    key = AuditorPublicKey(x_pub, k_pub)
    if data.get("key_id") != key.key_id:
        raise AuditError(
            f"The auditor public key {path} says key_id {data.get('key_id')!r}, but its "
            f"keys give {key.key_id!r}: the file was edited.",
            hint="Get the auditor's public key file again.",
        )
    return key


def load_auditor_private_key(path: Path) -> AuditorPrivateKey:
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise AuditError(
            f"Cannot read the auditor private key {path} ({exc.strerror}).",
            hint="Pass the private file `secure-ds audit keygen-auditor` wrote.",
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuditError(
            f"The auditor private key {path} can be read by others (mode {mode & 0o777:o}).",
            hint=f"Run `chmod 600 {path}`.",
        )
    data = _read_json(path, _PRIVATE_KIND, "auditor private key")
    try:
        key = AuditorPrivateKey(
            _unb64(data.get("x25519"), "x25519"),
            _unb64(data.get("ml_kem_1024_seed"), "ml_kem_1024_seed"),
        )
    except (SealError, ValueError):
        raise AuditError(
            f"The auditor private key {path} holds a malformed key.",
            hint="Pass the private file `secure-ds audit keygen-auditor` wrote.",
        ) from None
    return key
