"""A PKCS#11 signer: the audit signing key lives in an HSM (tested with SoftHSM2).

The private key never leaves the token: this process logs in with the user PIN and asks
the token to sign. Two key types are used:

* **Ed25519** (``CKK_EC_EDWARDS``, mechanism ``CKM_EDDSA``): the token signs the
  message itself; the signature is the same 64 bytes a software key makes.
* **ECDSA P-256** (``CKK_EC``, mechanism ``CKM_ECDSA``): SoftHSM2 has no
  ``CKM_ECDSA_SHA256``, so the SHA-256 digest is computed here and the token signs it;
  its raw ``r ‖ s`` is converted to the DER signature the verify path expects.

The key id comes from the public key's DER SubjectPublicKeyInfo exactly as for software
keys (:func:`._signing.key_id_of`), built from the token's public-key object
(``CKA_EC_POINT``), so a verifier needs only the public key and never the HSM.

``python-pkcs11`` is an optional extra (``pip install 'secure-ds[hsm]'``), imported only
when a PKCS#11 signer is built. One session per signer, used under a lock (a PKCS#11
session must not sign for two threads at once); the session does not survive a fork.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .._secret import Secret
from ..errors import AuditError, ConfigError
from ._signing import Signer, _spki, key_id_of

__all__ = ["DEFAULT_PKCS11_MODULE", "Pkcs11Signer"]

DEFAULT_PKCS11_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")

_MODULE_VAR = "SECURE_DS_AUDIT_PKCS11_MODULE"
_TOKEN_VAR = "SECURE_DS_AUDIT_PKCS11_TOKEN_LABEL"
_KEY_VAR = "SECURE_DS_AUDIT_PKCS11_KEY_LABEL"
_PIN_VAR = "SECURE_DS_AUDIT_PKCS11_PIN"

# python-pkcs11 keeps one loaded library per path (the module may be initialised once
# per process); share it between signers.
_LIBS: dict[str, Any] = {}
_LIBS_LOCK = threading.Lock()
# PKCS#11 login is per process, not per session: while one session is logged in to a
# token, another C_Login fails (CKR_USER_ALREADY_LOGGED_IN), and logging out (which
# python-pkcs11 does when it closes a session) logs every session out. So the signers
# of one token share one logged-in session, counted, closed with the last of them; the
# PIN that logged in is remembered (salted SHA-256, never the PIN) and a second
# signer's PIN must equal it, since the token cannot check it again.
_SALT = os.urandom(16)


def _pin_digest(pin: str) -> bytes:
    return hashlib.sha256(_SALT + pin.encode()).digest()


class _Shared:
    def __init__(self, session: Any, digest: bytes) -> None:
        self.session = session
        self.digest = digest
        self.refs = 1
        self.lock = threading.Lock()  # a session signs for one thread at a time


_SESSIONS: dict[tuple[str, str], _Shared] = {}


def _import_pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise ConfigError(
            "SECURE_DS_AUDIT_SIGNER",
            "is pkcs11, but python-pkcs11 is not installed",
            fix="Install it: pip install 'secure-ds[hsm]'.",
        ) from None
    return pkcs11


def _der_octet_string(data: bytes) -> bytes:
    """``CKA_EC_POINT`` is a DER OCTET STRING holding the point (PKCS#11 2.40); some
    modules give the bare point. Return the point."""
    if len(data) >= 2 and data[0] == 0x04:
        length, at = data[1], 2
        if length & 0x80:
            n = length & 0x7F
            length, at = int.from_bytes(data[2 : 2 + n], "big"), 2 + n
        if at + length == len(data):
            return data[at:]
    return data


class Pkcs11Signer(Signer):
    """Signs with a private key in a PKCS#11 token, found by token and key label.

    Raises :class:`~secure_ds.errors.ConfigError` naming the setting at fault when the
    module cannot be loaded, the token or key is not there, or the PIN is wrong.
    """

    def __init__(
        self,
        *,
        token_label: str,
        key_label: str,
        pin: Secret | str,
        module: Path | str = DEFAULT_PKCS11_MODULE,
    ) -> None:
        pkcs11 = _import_pkcs11()
        from pkcs11 import Attribute, KeyType, Mechanism
        from pkcs11 import exceptions as p11e

        self.module = str(module)
        self.token_label = token_label
        self.key_label = key_label
        secret = pin if isinstance(pin, Secret) else Secret(pin)
        if not Path(self.module).is_file():
            raise ConfigError(
                _MODULE_VAR,
                f"{self.module} is not a file",
                fix="Point it at the token's PKCS#11 module (SoftHSM2 from Debian: "
                f"{DEFAULT_PKCS11_MODULE}; `apt-get install softhsm2`).",
            )
        try:
            with _LIBS_LOCK:
                lib = _LIBS.get(self.module)
                if lib is None:
                    lib = _LIBS[self.module] = pkcs11.lib(self.module)
        except Exception as exc:
            raise ConfigError(
                _MODULE_VAR,
                f"{self.module} does not load as a PKCS#11 module ({type(exc).__name__})",
                fix="Point it at the token's PKCS#11 module (a .so file).",
            ) from None
        try:
            token = lib.get_token(token_label=token_label)
        except (p11e.NoSuchToken, p11e.MultipleTokensReturned) as exc:
            many = isinstance(exc, p11e.MultipleTokensReturned)
            raise ConfigError(
                _TOKEN_VAR,
                f"{'several tokens are' if many else 'no token is'} labelled {token_label!r} "
                f"in {self.module}",
                fix="Set it to the label of the token that holds the audit key "
                "(`softhsm2-util --show-slots` lists them).",
            ) from None
        try:
            with _LIBS_LOCK:
                self._shared = self._log_in(token, secret, p11e)
            self._session = self._shared.session
        except (p11e.PinIncorrect, p11e.PinInvalid, p11e.PinLenRange) as exc:
            raise ConfigError(
                _PIN_VAR,
                f"the token {token_label!r} refused the PIN ({type(exc).__name__})",
                fix="Set it to the token's user PIN (it is a secret: not logged).",
            ) from None
        except p11e.PinLocked:
            raise ConfigError(
                _PIN_VAR,
                f"the token {token_label!r} locked its user PIN after wrong tries",
                fix="Unlock it with the SO PIN (softhsm2-util / pkcs11-tool --init-pin).",
            ) from None
        except p11e.PKCS11Error as exc:
            raise ConfigError(
                _TOKEN_VAR,
                f"cannot log in to the token {token_label!r} ({type(exc).__name__})",
                fix="Check the token and its PIN.",
            ) from None
        try:
            private, public = self._find_keys()
            if private.key_type == KeyType.EC_EDWARDS:
                raw = _der_octet_string(public[Attribute.EC_POINT])
                pub_key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey = (
                    ed25519.Ed25519PublicKey.from_public_bytes(raw)
                )
                self.alg = "ed25519"
                self._mechanism = Mechanism.EDDSA
            elif private.key_type == KeyType.EC:
                point = _der_octet_string(public[Attribute.EC_POINT])
                pub_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
                self.alg = "ecdsa-p256"
                self._mechanism = Mechanism.ECDSA
            else:
                raise ConfigError(
                    _KEY_VAR,
                    f"the key {key_label!r} is a {private.key_type.name} key",
                    fix="Use an Ed25519 (CKK_EC_EDWARDS) or EC P-256 (CKK_EC) key pair.",
                )
        except ConfigError:
            with _LIBS_LOCK:
                self._close()
            raise
        except (ValueError, p11e.PKCS11Error) as exc:
            with _LIBS_LOCK:
                self._close()
            raise ConfigError(
                _KEY_VAR,
                f"the public key of {key_label!r} is not an Ed25519 or P-256 key "
                f"({type(exc).__name__})",
                fix="Use an Ed25519 or EC P-256 (secp256r1) key pair.",
            ) from None
        self._private = private
        self._lock = self._shared.lock
        self._closed = False
        self.public_key_der = _spki(pub_key)
        self.key_id = key_id_of(self.public_key_der)

    def _log_in(self, token: Any, pin: Secret, p11e: Any) -> _Shared:
        login = (self.module, self.token_label)
        digest = _pin_digest(pin.reveal())
        shared = _SESSIONS.get(login)
        if shared is not None:
            if not hmac.compare_digest(shared.digest, digest):
                raise ConfigError(
                    _PIN_VAR,
                    f"is not the PIN this process logged in to the token {self.token_label!r} "
                    "with (the token has one login per process, so it cannot check another "
                    "one now)",
                    fix="Set it to the token's user PIN (it is a secret: not logged).",
                )
            shared.refs += 1
            return shared
        try:
            session = token.open(user_pin=pin.reveal())
        except p11e.UserAlreadyLoggedIn:
            raise ConfigError(
                _TOKEN_VAR,
                f"other code in this process is logged in to the token {self.token_label!r}, "
                "so this PIN cannot be checked",
                fix="Let secure-ds open the token's sessions (one Pkcs11Signer per key).",
            ) from None
        shared = _SESSIONS[login] = _Shared(session, digest)
        return shared

    def _find_keys(self) -> tuple[Any, Any]:
        from pkcs11 import ObjectClass
        from pkcs11 import exceptions as p11e

        def one(cls: Any, what: str) -> Any:
            try:
                return self._session.get_key(object_class=cls, label=self.key_label)
            except p11e.NoSuchKey:
                raise ConfigError(
                    _KEY_VAR,
                    f"the token {self.token_label!r} holds no {what} labelled {self.key_label!r}",
                    fix="Set it to the label of the audit key pair (scripts/softhsm.sh makes "
                    "one; `pkcs11-tool --list-objects` lists them).",
                ) from None
            except p11e.MultipleObjectsReturned:
                raise ConfigError(
                    _KEY_VAR,
                    f"the token {self.token_label!r} holds several {what}s labelled "
                    f"{self.key_label!r}",
                    fix="Give the audit key pair a label of its own.",
                ) from None

        return one(ObjectClass.PRIVATE_KEY, "private key"), one(
            ObjectClass.PUBLIC_KEY, "public key"
        )

    def _sign(self, message: bytes) -> bytes:
        with self._lock:
            if self._closed:
                raise RuntimeError("the signer was closed")
            if self.alg == "ed25519":
                return bytes(self._private.sign(message, mechanism=self._mechanism))
            digest = hashlib.sha256(message).digest()
            raw = bytes(self._private.sign(digest, mechanism=self._mechanism))
        half = len(raw) // 2
        r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        return encode_dss_signature(r, s)

    def sign(self, message: bytes) -> bytes:
        try:
            return self._sign(message)
        except Exception as exc:  # a token that stops signing stops calls (fail closed)
            raise AuditError(
                f"The HSM audit signer (token {self.token_label!r}, key {self.key_id}) "
                f"failed: {type(exc).__name__}.",
                hint="Check the token (is it present, is the session still logged in?); "
                "no call is sent while records cannot be signed.",
            ) from None

    def _close(self) -> None:
        """Drop this signer's share of the session; the last one closes it (_LIBS_LOCK
        held by the caller)."""
        shared = self._shared
        shared.refs -= 1
        if shared.refs == 0:
            _SESSIONS.pop((self.module, self.token_label), None)
            # best effort: a session that cannot close is dropped with the process anyway
            with contextlib.suppress(Exception):
                shared.session.close()

    def close(self) -> None:
        """Sign no more; the token's last signer in this process logs out and closes
        the shared session."""
        with _LIBS_LOCK:
            if self._closed:
                return
            self._closed = True
            with self._lock:
                self._close()

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("an HSM audit signer holds a logged-in session and cannot be pickled")

    def __repr__(self) -> str:
        return (
            f"Pkcs11Signer(alg={self.alg!r}, key_id={self.key_id!r}, "
            f"token={self.token_label!r}, key={self.key_label!r})"
        )
