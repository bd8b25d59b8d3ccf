"""Signers of audit records and checkpoints, behind one small interface.

A :class:`Signer` has an algorithm name (``alg``), the DER SubjectPublicKeyInfo of its
public key (``public_key_der``), a key id (``key_id``: the first 8 bytes of the SHA-256
of that SPKI, in hex, which every record and checkpoint carries) and ``sign(message)``.
:class:`PublicKey` is the verifying side, built from a PEM or DER public key.

Implemented here:

* :class:`SoftwareSigner` with **Ed25519** (the default: 64-byte signatures, a
  deterministic scheme) or **ECDSA P-256 with SHA-256** (DER signatures; the algorithm
  FIPS 186-5 approves, for deployments that need one; Ed25519 is not approved in
  OpenSSL's FIPS provider), from a PEM key file that must be private to its owner
  (no group or other permission bits, like ssh keys), or, when none is configured,
  ``$XDG_STATE_HOME/secure-ds/audit-signing-key.pem`` created on first use.

Elsewhere, behind the same interface:

* :class:`._pkcs11.Pkcs11Signer`: the key in a PKCS#11 token (SoftHSM2 via
  ``python-pkcs11``): Ed25519 with ``CKM_EDDSA``, or P-256 with ``CKM_ECDSA`` over a
  SHA-256 digest made here; the key id is computed from the token's public key the same
  way, so verification does not change;
* :class:`._hybrid.HybridSigner`: records signed by its classical key (Ed25519 or
  P-256), checkpoints by that key *and* an ML-DSA-65 key (two signature lines).

:class:`PublicKey` also verifies ML-DSA-65 (``alg="ml-dsa-65"``), for checkpoints only:
a record line's algorithm is never ML-DSA (:mod:`._entry` accepts ed25519 and
ecdsa-p256 only).
"""

from __future__ import annotations

import abc
import base64
import contextlib
import hashlib
import os
import stat
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ..errors import AuditError

try:  # the Rust extension (native/): signs a batch of records without the GIL
    from .._native import RecordSigner as _NativeRecordSigner
except ImportError:  # pragma: no cover - a build without the extension: cryptography signs
    _NativeRecordSigner = None  # type: ignore[assignment,misc]

try:  # a cryptography with ML-DSA (only hybrid checkpoints need it; tested with 50.0)
    from cryptography.hazmat.primitives.asymmetric.mldsa import (
        MLDSA65PrivateKey,
        MLDSA65PublicKey,
    )

    HAVE_MLDSA = True
except ImportError:  # pragma: no cover - a cryptography without ML-DSA-65: none loads
    HAVE_MLDSA = False

    class MLDSA65PublicKey:  # type: ignore[no-redef]
        """Stands in for the missing class, so isinstance checks are False."""

    class MLDSA65PrivateKey:  # type: ignore[no-redef]
        """Stands in for the missing class, so isinstance checks are False."""


__all__ = [
    "DEFAULT_KEY_NAME",
    "Algorithm",
    "KeyAlgorithm",
    "PublicKey",
    "Signer",
    "SoftwareSigner",
    "default_key_path",
    "default_signer",
    "generate_key_file",
    "key_id_of",
    "load_public_key",
    "load_signer",
]

Algorithm = Literal["ed25519", "ecdsa-p256"]  # what signs records (and checkpoints)
KeyAlgorithm = Literal["ed25519", "ecdsa-p256", "ml-dsa-65"]  # ml-dsa-65: checkpoints only
DEFAULT_KEY_NAME = "audit-signing-key.pem"
_ECDSA = ec.ECDSA(hashes.SHA256())


def key_id_of(public_key_der: bytes) -> str:
    """The key id: the first 8 bytes of SHA-256 of the DER SubjectPublicKeyInfo, hex."""
    return hashlib.sha256(public_key_der).digest()[:8].hex()


def _spki(key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | MLDSA65PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class Signer(abc.ABC):
    """Signs audit entries and checkpoints. Subclasses implement :meth:`_sign`; the
    public :meth:`sign` turns any failure into :class:`AuditError` (fail closed)."""

    alg: KeyAlgorithm
    public_key_der: bytes
    key_id: str

    def sign(self, message: bytes) -> bytes:
        try:
            return self._sign(message)
        except AuditError:
            raise
        except Exception as exc:  # a signer that fails must stop calls, not crash them
            raise AuditError(
                f"The audit signer (key {self.key_id}) failed: {type(exc).__name__}.",
                hint="Check the signing key (SECURE_DS_AUDIT_SIGNING_KEY); no call is sent "
                "while records cannot be signed.",
            ) from None

    @abc.abstractmethod
    def _sign(self, message: bytes) -> bytes: ...

    def close(self) -> None:  # noqa: B027 - optional: only signers holding a session close
        """Release what the signer holds (an HSM session); nothing for a software key."""

    def native_records(self) -> _NativeRecordSigner | None:
        """The same key in ``secure_ds._native``, which chains, signs and renders a batch
        of records without the GIL (:meth:`._log.AuditLog._commit`), or None: only a
        software Ed25519 key has one (its signatures are the same bytes: Ed25519 is
        deterministic); other keys sign through :meth:`sign`."""
        return None

    def note_signers(self) -> tuple[Signer, ...]:
        """The signers of a checkpoint note: this one (a hybrid signer adds its
        post-quantum key, :class:`._hybrid.HybridSigner`)."""
        return (self,)

    def public_key(self) -> PublicKey:
        return PublicKey.from_der(self.public_key_der)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alg={self.alg!r}, key_id={self.key_id!r})"


class SoftwareSigner(Signer):
    """A private key held in this process (Ed25519 or ECDSA P-256; ML-DSA-65 for the
    post-quantum half of a :class:`._hybrid.HybridSigner`, which signs checkpoints only)."""

    def __init__(
        self, key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | MLDSA65PrivateKey
    ) -> None:
        if isinstance(key, ed25519.Ed25519PrivateKey):
            self.alg = "ed25519"
        elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            self.alg = "ecdsa-p256"
        elif isinstance(key, MLDSA65PrivateKey):
            self.alg = "ml-dsa-65"
        else:  # pragma: no cover - load_signer refuses other keys first
            raise TypeError("only Ed25519 and ECDSA P-256 keys sign audit logs")
        self._key = key
        self.public_key_der = _spki(key.public_key())
        self.key_id = key_id_of(self.public_key_der)
        self._native: _NativeRecordSigner | None = None

    def native_records(self) -> _NativeRecordSigner | None:
        key = self._key
        if (
            self._native is None
            and _NativeRecordSigner is not None
            and isinstance(key, ed25519.Ed25519PrivateKey)
        ):
            seed = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            native = _NativeRecordSigner(seed)
            raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
            # the same key, or cryptography keeps signing
            if native.public_key() == key.public_key().public_bytes(*raw):
                self._native = native
        return self._native

    def _sign(self, message: bytes) -> bytes:
        if isinstance(self._key, ed25519.Ed25519PrivateKey | MLDSA65PrivateKey):
            return self._key.sign(message)
        return self._key.sign(message, _ECDSA)

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("an audit signer holds a private key and cannot be pickled")


class PublicKey:
    """A key that audit signatures are checked against."""

    def __init__(
        self, key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | MLDSA65PublicKey
    ) -> None:
        if isinstance(key, ed25519.Ed25519PublicKey):
            self.alg: KeyAlgorithm = "ed25519"
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            self.alg = "ecdsa-p256"
        elif isinstance(key, MLDSA65PublicKey):
            self.alg = "ml-dsa-65"
        else:
            raise ValueError(f"{type(key).__name__} keys do not sign audit logs")
        self._key = key
        self.der = _spki(key)
        self.key_id = key_id_of(self.der)

    @classmethod
    def from_der(cls, der: bytes) -> PublicKey:
        key = serialization.load_der_public_key(der)
        if not isinstance(
            key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | MLDSA65PublicKey
        ):
            raise ValueError(f"{type(key).__name__} keys do not sign audit logs")
        return cls(key)

    @classmethod
    def from_b64(cls, text: str) -> PublicKey:
        return cls.from_der(base64.b64decode(text, validate=True))

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            if isinstance(self._key, ed25519.Ed25519PublicKey | MLDSA65PublicKey):
                self._key.verify(signature, message)
            else:
                self._key.verify(signature, message, _ECDSA)
        except (InvalidSignature, ValueError):
            return False
        return True

    @property
    def raw(self) -> bytes:
        """The key as signed-note key hashes use it (raw Ed25519 key; SPKI for P-256 and
        ML-DSA-65)."""
        if isinstance(self._key, ed25519.Ed25519PublicKey):
            raw = serialization.Encoding.Raw
            return self._key.public_bytes(raw, serialization.PublicFormat.Raw)
        return self.der

    def pem(self) -> bytes:
        """The key as PEM (``-----BEGIN PUBLIC KEY-----``), e.g. to pin at verify."""
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def __repr__(self) -> str:
        return f"PublicKey(alg={self.alg!r}, key_id={self.key_id!r})"


# ---------------------------------------------------------------------- key files


def _key_error(path: Path, problem: str, fix: str) -> AuditError:
    return AuditError(f"The audit signing key {path}: {problem}.", hint=fix)


def _check_private(path: Path, fd: int) -> None:
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        raise _key_error(path, "is not a regular file", "Point it at a PEM private key file.")
    if mode & 0o077:
        raise _key_error(
            path,
            f"is readable or writable by other users (mode {stat.S_IMODE(mode):04o})",
            f"Run `chmod 600 {path}`: whoever can read it can sign forged audit records.",
        )


def load_signer(path: Path, password: bytes | None = None) -> SoftwareSigner:
    """The signer of a PEM private key file (Ed25519 or EC P-256), private to its owner."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise _key_error(
            path,
            f"cannot be opened ({exc.strerror or type(exc).__name__})",
            "Point SECURE_DS_AUDIT_SIGNING_KEY at a readable PEM private key (0600), "
            "or unset it to use a key created beside the log.",
        ) from None
    try:
        _check_private(path, fd)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(1 << 16)
    finally:
        os.close(fd)
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError:
        if password is None:
            raise _key_error(
                path, "is encrypted", "Set SECURE_DS_AUDIT_SIGNING_KEY_PASSWORD to its passphrase."
            ) from None
        raise _key_error(
            path, "is not encrypted", "Unset SECURE_DS_AUDIT_SIGNING_KEY_PASSWORD."
        ) from None
    except ValueError:
        raise _key_error(
            path,
            "holds no usable PEM private key (or the passphrase is wrong)",
            "Use a PEM Ed25519 or EC P-256 private key (-----BEGIN PRIVATE KEY-----).",
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey | MLDSA65PrivateKey) and not (
        isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        raise _key_error(
            path,
            f"holds a {type(key).__name__}, which does not sign audit logs",
            "Use an Ed25519 key (the default) or an EC P-256 key (FIPS-approved ECDSA); "
            "ML-DSA-65 keys sign checkpoints beside one of those.",
        )
    return SoftwareSigner(key)


def generate_key_file(path: Path, alg: KeyAlgorithm = "ed25519") -> SoftwareSigner:
    """Create a private key file (0600) and its public key beside it (``.pub``).

    Several processes may race to create the same file: each writes a temporary file
    and links it into place; the losers load the winner's key.
    """
    path = Path(path)
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | MLDSA65PrivateKey
    if alg == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif alg == "ecdsa-p256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = MLDSA65PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return load_signer(path)  # another process won the race
        signer = SoftwareSigner(key)
        pub = path.with_name(path.name.removesuffix(".pem") + ".pub")
        pub_tmp = tmp.with_suffix(".pub")
        pub_tmp.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        os.replace(pub_tmp, pub)
        return signer
    except OSError as exc:
        raise _key_error(
            path,
            f"cannot be created ({exc.strerror or type(exc).__name__})",
            "Make the audit directory writable, or set SECURE_DS_AUDIT_SIGNING_KEY to a key.",
        ) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def default_key_path() -> Path:
    """Where the signing key lives when ``SECURE_DS_AUDIT_SIGNING_KEY`` is unset:
    ``$XDG_STATE_HOME/secure-ds/audit-signing-key.pem`` (``~/.local/state`` without it),
    beside the default audit log."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "secure-ds" / DEFAULT_KEY_NAME


def default_signer(path: Path | None = None) -> SoftwareSigner:
    """The Ed25519 key at ``path`` (default :func:`default_key_path`), created on first
    use; its public key is written beside it (``audit-signing-key.pub``)."""
    path = Path(path) if path is not None else default_key_path()
    if path.exists():
        return load_signer(path)
    return generate_key_file(path)


def load_public_key(path: Path) -> PublicKey:
    """A PEM public key to verify against (``generate_key_file`` writes one beside the
    private key, as ``NAME.pub``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditError(
            f"Cannot read the public key {path} ({exc.strerror or type(exc).__name__}).",
            hint="Pass the signer's public key (e.g. audit-signing-key.pub beside the log).",
        ) from None
    try:
        key = serialization.load_pem_public_key(data)
        if isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | MLDSA65PublicKey):
            return PublicKey(key)
    except ValueError:
        pass
    raise AuditError(
        f"{path} holds no Ed25519, EC P-256 or ML-DSA-65 public key.",
        hint="Pass a PEM public key (-----BEGIN PUBLIC KEY-----).",
    )
