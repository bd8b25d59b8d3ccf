"""The evaluating side: caches uploaded public contexts and scores ciphertexts.

Used by the sandbox's ``POST /fhe/contexts`` and ``POST /fhe/infer``; usable by any
server. Invariants:

- a context holding a secret key is refused (``is_private()`` must be false once
  loaded), so the service can never decrypt what it evaluates;
- frames are bound-checked by :mod:`._wire` before TenSEAL parses any byte; a
  ciphertext that does not parse under the named context is refused by name;
- contexts are content-addressed (``context_id`` = SHA-256 of the bytes) and kept in a
  small LRU cache (they are tens of MB each).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Final

from ..errors import FheContextError, FheError, FheModelError, FheWireError
from ._evaluate import Compiled, compile_model
from ._models import Model, shipped_model
from ._params import ParameterSet, parameter_set
from ._tenseal import Context
from ._wire import KIND_CONTEXT, KIND_REQUEST, KIND_RESULT, context_id_for, decode, encode

__all__ = ["FheService"]

DEFAULT_MAX_CONTEXTS: Final = 4


class _Entry:
    __slots__ = ("context", "params")

    def __init__(self, context: Context, params: ParameterSet) -> None:
        self.context = context
        self.params = params


class FheService:
    """Context cache + evaluators. Thread-safe; evaluation runs outside the lock."""

    def __init__(
        self, *, models: dict[str, Model] | None = None, max_contexts: int = DEFAULT_MAX_CONTEXTS
    ) -> None:
        self._models = dict(models) if models is not None else None
        self._max_contexts = max_contexts
        self._contexts: OrderedDict[str, _Entry] = OrderedDict()
        self._compiled: dict[tuple[str, int], Compiled] = {}
        self._lock = threading.Lock()

    # -------------------------------------------------------------- contexts

    def upload_context(self, frame_bytes: bytes) -> str:
        """Load, check and cache a public context; returns its id (idempotent)."""
        frame = decode(frame_bytes, kind=KIND_CONTEXT)
        params = _params(frame.parameter_set)
        if len(frame.blobs) != 1:
            raise FheWireError("a context frame carries exactly one blob", hint="Resend it.")
        blob = frame.blobs[0]
        context_id = context_id_for(blob)
        with self._lock:
            if context_id in self._contexts:
                self._contexts.move_to_end(context_id)
                return context_id
        try:
            context = Context.load(blob)
        except Exception:  # TenSEAL raises ValueError/RuntimeError with C++ texts
            raise FheContextError(
                "the uploaded evaluation context does not parse",
                hint="Upload FheSession.public_context() unchanged.",
            ) from None
        if context.is_private():
            raise FheContextError(
                "the uploaded context contains a secret key; the service refuses it and "
                "keeps nothing, since holding the key would let it decrypt your inputs",
                hint="Upload FheSession.public_context(), which leaves the secret key out; "
                "treat the key you sent as exposed and start a new session.",
            )
        found = (context.slot_count * 2, context.modulus_bits, context.scale)
        wanted = (params.poly_modulus_degree, params.coeff_mod_bit_sizes, 2.0**params.scale_bits)
        if found != wanted:
            raise FheContextError(
                f"the uploaded context (N={found[0]}, moduli {list(found[1])} bits, scale "
                f"2^{_log2(found[2])}) is not the parameter set "
                f"{params.id!r} it claims (N={wanted[0]}, moduli {list(wanted[1])}, scale "
                f"2^{params.scale_bits})",
                hint="Upload the context of an FheSession opened with that parameter set.",
            )
        with self._lock:
            self._contexts[context_id] = _Entry(context, params)
            while len(self._contexts) > self._max_contexts:
                self._contexts.popitem(last=False)
        return context_id

    def has_context(self, context_id: str) -> bool:
        with self._lock:
            return context_id in self._contexts

    # -------------------------------------------------------------- inference

    def infer(self, frame_bytes: bytes) -> bytes:
        """Score one request frame; returns the result frame."""
        frame = decode(frame_bytes, kind=KIND_REQUEST)
        context_id = frame.context_id
        with self._lock:
            entry = self._contexts.get(context_id)
            if entry is not None:
                self._contexts.move_to_end(context_id)
        if entry is None:
            raise FheContextError(
                f"unknown evaluation context {context_id} (never uploaded, or evicted)",
                hint="Upload it with POST /fhe/contexts, then retry; client.fhe does this.",
                status=404,
                param="context_id",
            )
        if frame.parameter_set != entry.params.id:
            raise FheContextError(
                f"context {context_id} uses parameter set {entry.params.id!r}, the request "
                f"names {frame.parameter_set!r}",
                hint="Encrypt with the session that uploaded the context.",
            )
        model = self._model(frame.model)
        if model.params.id != entry.params.id:
            raise FheModelError(
                f"model {model.id!r} runs under parameter set {model.params.id!r}, not "
                f"{entry.params.id!r}",
                hint=f"Open an FheSession({model.params.id!r}) for this model.",
            )
        compiled = self._compiled_for(model, frame.batch)
        if len(frame.blobs) != compiled.layout.ciphertexts:
            raise FheWireError(
                f"model {model.id!r} with a batch of {frame.batch} takes "
                f"{compiled.layout.ciphertexts} ciphertexts, the frame carries {len(frame.blobs)}",
                hint="Encrypt with FheSession.encrypt_inputs for this model and batch.",
            )
        vectors = []
        for index, blob in enumerate(frame.blobs):
            try:
                vectors.append(entry.context.vector_from(blob))
            except Exception:
                raise FheContextError(
                    f"ciphertext {index} does not parse under context {context_id}: it is "
                    "truncated or corrupted, or was made under another context's parameters",
                    hint="Encrypt with the session whose context you uploaded.",
                ) from None
        try:
            result = compiled.evaluate(vectors)
        except FheError:
            raise
        except Exception:  # SEAL: scale out of bounds, end of modulus chain, ...
            raise FheContextError(
                f"evaluating model {model.id!r} under context {context_id} failed: the "
                "ciphertexts do not fit its parameters (level or scale)",
                hint="Encrypt fresh inputs with FheSession.encrypt_inputs for this model.",
                status=422,
            ) from None
        header = {
            "context_id": context_id,
            "parameter_set": entry.params.id,
            "model": model.id,
            "batch": frame.batch,
        }
        return encode(KIND_RESULT, header, [result.serialize()])

    def _model(self, model_id: str) -> Model:
        if self._models is not None:
            model = self._models.get(model_id)
            if model is None:
                raise FheModelError(
                    f"the service has no FHE model {model_id!r}",
                    hint=f"Use one of {sorted(self._models)}.",
                    status=404,
                    param="model",
                )
            return model
        return shipped_model(model_id)

    def _compiled_for(self, model: Model, batch: int) -> Compiled:
        key = (model.id, batch)
        with self._lock:
            compiled = self._compiled.get(key)
        if compiled is None:
            compiled = compile_model(model, batch)
            with self._lock:
                if len(self._compiled) > 64:
                    self._compiled.clear()
                self._compiled[key] = compiled
        return compiled


def _log2(value: float) -> str:
    return f"{math.log2(value):g}" if value > 0 else "?"


def _params(set_id: str) -> ParameterSet:
    try:
        return parameter_set(set_id)
    except Exception as exc:
        raise FheWireError(str(exc)) from None
