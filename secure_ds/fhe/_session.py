"""The client-side session: it owns the CKKS secret key and never lets it go.

A session is one secret key under one parameter set. It gives out only the
evaluation context (relinearisation and Galois keys; ``context_id`` is its SHA-256),
encrypts inputs in the layout a model's evaluator expects, and decrypts results.
Encryption is symmetric (with the secret key): faster, and the service is given no
public key, so it holds nothing that can encrypt or decrypt. Invariants:

- the secret key lives only in this object's TenSEAL context: the session does not
  pickle, its repr shows ids only, and :meth:`public_context` is serialised without the
  secret key (checked by reloading it: ``is_private()`` must be false);
- every ciphertext it makes is tagged with its ``context_id``, and :meth:`decrypt_result`
  refuses a result tagged with another one (decrypting it would give noise, silently).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from ..errors import FheContextError, FheInputError
from ._evaluate import layout_for, max_batch
from ._models import Model
from ._params import LINEAR_8192, ParameterSet, parameter_set
from ._tenseal import Context, Vector
from ._wire import KIND_REQUEST, KIND_RESULT, context_id_for, decode, encode

__all__ = ["EncryptedBatch", "FheSession"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class EncryptedBatch:
    """Inputs encrypted for one model and batch: what ``POST /fhe/infer`` carries."""

    context_id: str
    parameter_set: str
    model: str
    batch: int
    ciphertexts: tuple[bytes, ...]

    def to_frame(self) -> bytes:
        header = {
            "context_id": self.context_id,
            "parameter_set": self.parameter_set,
            "model": self.model,
            "batch": self.batch,
        }
        return encode(KIND_REQUEST, header, self.ciphertexts)

    @property
    def nbytes(self) -> int:
        return sum(len(c) for c in self.ciphertexts)


class FheSession:
    """A CKKS key pair under one :class:`ParameterSet`; the secret key stays here."""

    def __init__(self, params: ParameterSet | str = LINEAR_8192) -> None:
        self.params = parameter_set(params) if isinstance(params, str) else params
        p = self.params
        self._context = Context.create(
            poly_modulus_degree=p.poly_modulus_degree,
            coeff_mod_bit_sizes=p.coeff_mod_bit_sizes,
            scale_bits=p.scale_bits,
        )
        self._public: bytes | None = None
        self._context_id: str | None = None

    def __repr__(self) -> str:
        return f"FheSession(parameter_set={self.params.id!r}, context_id={self.context_id!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("an FheSession holds a secret key and cannot be pickled")

    # -------------------------------------------------------------- the public part

    def public_context(self) -> bytes:
        """The evaluation context to upload: no secret key (tens of MB: Galois keys)."""
        if self._public is None:
            public = self._context.public_bytes()
            if Context.load(public).is_private():  # defence in depth: never upload a key
                raise FheContextError(
                    "the serialised evaluation context still holds the secret key",
                    hint="This is a bug in secure-ds; do not upload it.",
                )
            self._public = public
            self._context_id = context_id_for(public)
        return self._public

    @property
    def context_id(self) -> str:
        if self._context_id is None:
            self.public_context()
        assert self._context_id is not None
        return self._context_id

    @property
    def slots(self) -> int:
        return self.params.slots

    # -------------------------------------------------------------- raw vectors

    def encrypt(self, values: Sequence[float]) -> bytes:
        """Encrypt one vector of at most ``slots`` values; the serialised ciphertext."""
        return self._encrypt(np.asarray(values, dtype=np.float64)).serialize()

    def decrypt(self, ciphertext: bytes) -> list[float]:
        return self._context.vector_from(ciphertext).decrypt()

    def _encrypt(self, values: Array) -> Vector:
        if values.ndim != 1 or not 1 <= values.size <= self.slots:
            raise FheInputError(
                f"a vector of {values.size} values does not fit one ciphertext of "
                f"{self.slots} slots (parameter set {self.params.id!r})",
                hint="Split the vector, or use a parameter set with a larger ring.",
            )
        if not np.isfinite(values).all():
            raise FheInputError("the vector holds NaN or infinite values", hint="Clean it.")
        return self._context.encrypt(values.tolist())

    # -------------------------------------------------------------- model inputs

    def encrypt_inputs(self, model: Model, inputs: Any) -> EncryptedBatch:
        """Encrypt ``inputs`` (one vector or a B x F array) in ``model``'s layout."""
        if model.params.id != self.params.id:
            raise FheContextError(
                f"model {model.id!r} runs under parameter set {model.params.id!r}; this "
                f"session uses {self.params.id!r}",
                hint=f"Open an FheSession({model.params.id!r}) for this model.",
            )
        x = _as_batch(inputs, model)
        layout = layout_for(model, x.shape[0])
        vectors = [self._encrypt(v).serialize() for v in layout.pack_inputs(x)]
        return EncryptedBatch(self.context_id, self.params.id, model.id, x.shape[0], tuple(vectors))

    def decrypt_result(self, model: Model, frame: bytes, batch: int) -> Array:
        """The (B x outputs) scores in a result frame, before sigmoid/softmax."""
        result = decode(frame, kind=KIND_RESULT)
        if result.context_id != self.context_id:
            raise FheContextError(
                f"the result was computed under context {result.context_id}, not this "
                f"session's {self.context_id}; it would decrypt to noise",
                hint="Send requests encrypted by this session, with its context id.",
            )
        if result.model != model.id or result.batch != batch or len(result.blobs) != 1:
            raise FheContextError(
                f"the result is for model {result.model!r} with a batch of {result.batch}, "
                f"not {model.id!r} with {batch}",
                hint="Match each result to the request that produced it.",
            )
        layout = layout_for(model, batch)
        return layout.unpack(np.asarray(self.decrypt(result.blobs[0])))


def _as_batch(inputs: Any, model: Model) -> Array:
    x = np.asarray(inputs, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != model.input_dim or x.shape[0] < 1:
        raise FheInputError(
            f"model {model.id!r} takes vectors of {model.input_dim} features; got an array "
            f"of shape {tuple(np.shape(inputs))}",
            hint=f"Pass one vector of {model.input_dim} numbers, or a list of them.",
        )
    if x.shape[0] > max_batch(model):
        raise FheInputError(
            f"{x.shape[0]} inputs exceed one evaluation of model {model.id!r} "
            f"(at most {max_batch(model)})",
            hint="client.fhe.infer splits larger lists for you.",
        )
    return x
