"""Service-side evaluation on ciphertexts (never sees a secret key or a plaintext input).

``compile_model`` turns a :class:`~._models.Model` and a batch size into a
:class:`Compiled` evaluator whose plaintext weights are laid out once (see
:mod:`._layout`) and reused for every request:

- linear head: ``K`` slot-wise plaintext multiplies, ``K-1`` additions, one fold
  (log2(g) rotations), one plaintext bias addition. ``B`` inputs share the fold.
- MLP: the same twice over the client's ciphertexts (``A = h`` and ``B = W2 * h`` in
  rows (class, hidden unit)), one relinearised ciphertext product ``A * B``, one
  plaintext addition of ``b2 / H`` per row; the client adds each class's ``H`` rows.

Measured alternatives (``bench/bench_fhe.py``): TenSEAL ``matmul`` per input (one
rotation per input feature, the naive formulation) and ``dot`` per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import FheInputError, FheModelError
from ._layout import FoldLayout
from ._models import Model
from ._tenseal import Vector

__all__ = ["Compiled", "compile_model", "layout_for", "max_batch"]


MAX_PARTS = 8  # a linear head may split its features into up to 8 parts (see _layout)


def rows_per_input(model: Model) -> int:
    return model.outputs * (model.hidden or 1)


def max_batch(model: Model) -> int:
    """Largest batch one evaluation takes: ``B * rows_per_input`` must fit the slots."""
    return model.params.slots // rows_per_input(model)


def layout_for(model: Model, batch: int) -> FoldLayout:
    """The slot layout a client must use for ``batch`` inputs to ``model``."""
    capacity = max_batch(model)
    if not 1 <= batch <= capacity:
        raise FheInputError(
            f"model {model.id!r}: a batch of {batch} inputs does not fit one evaluation "
            f"(at most {capacity} with {model.params.slots} slots)",
            hint=f"Split the inputs into batches of at most {capacity}.",
        )
    slots = model.params.slots
    if model.hidden is not None:  # the square needs whole sums: one part
        return FoldLayout.for_rows(
            model.input_dim, rows_per_input(model), batch, slots, model.hidden
        )
    return FoldLayout.for_rows(model.input_dim, model.outputs, batch, slots, max_parts=MAX_PARTS)


@dataclass(frozen=True, eq=False)
class _Fold:
    """One folded linear map: packed weights per ciphertext, bias per row."""

    weights: tuple[list[float], ...]
    bias: list[float]
    used: tuple[int, ...]  # ciphertexts whose weights are not all zero

    def apply(self, inputs: Sequence[Vector], layout: FoldLayout) -> Vector:
        first, *rest = self.used
        acc = inputs[first].mul_plain(self.weights[first])
        for k in rest:
            acc.add_(inputs[k].mul_plain(self.weights[k]))
        return acc.fold(layout.chunks, layout.stride).add_plain(self.bias)

    @classmethod
    def pack(cls, layout: FoldLayout, weights: np.ndarray, bias: np.ndarray) -> _Fold:
        """Ciphertexts that only meet zero weights are skipped: they add nothing, and
        TenSEAL would answer a product with an all-zero plaintext by encrypting a zero,
        which an evaluation context without a public key cannot do."""
        packed = layout.pack_weights(weights)
        used = tuple(k for k, w in enumerate(packed) if np.any(w))
        if not used:
            raise FheModelError(
                "the model's first layer has only zero weights", hint="Retrain the model."
            )
        return cls(tuple(w.tolist() for w in packed), layout.pack_bias(bias).tolist(), used)


@dataclass(frozen=True, eq=False)
class Compiled:
    """A model laid out for one batch size: call :meth:`evaluate` per request."""

    model: Model
    layout: FoldLayout
    folds: tuple[_Fold, ...]  # linear: (head,); MLP: (h, W2*h)
    output_bias: list[float] | None  # MLP: b2 / H per row, after the product

    def evaluate(self, inputs: Sequence[Vector]) -> Vector:
        layout = self.layout
        if len(inputs) != layout.ciphertexts:
            raise FheInputError(
                f"model {self.model.id!r} with a batch of {layout.batch} takes "
                f"{layout.ciphertexts} ciphertexts, got {len(inputs)}",
                hint="Encrypt with FheSession.encrypt_inputs for this model and batch.",
            )
        for vector in inputs:
            if vector.size != layout.vector_size:
                raise FheInputError(
                    f"a ciphertext holds {vector.size} values; model {self.model.id!r} "
                    f"with a batch of {layout.batch} needs {layout.vector_size}",
                    hint="Encrypt with FheSession.encrypt_inputs for this model and batch.",
                )
        if self.output_bias is None:
            return self.folds[0].apply(inputs, layout)
        hidden = self.folds[0].apply(inputs, layout)
        weighted = self.folds[1].apply(inputs, layout)
        return hidden.mul(weighted).add_plain(self.output_bias)


def compile_model(model: Model, batch: int = 1) -> Compiled:
    layout = layout_for(model, batch)
    first = model.first
    if model.second is None:
        return Compiled(model, layout, (_Fold.pack(layout, first.weights, first.bias),), None)
    hidden = int(first.weights.shape[0])
    w2 = model.second.weights  # (C x H)
    # rows (c, i) -> c*H + i: A = h_i, B = W2[c][i] * h_i
    a_weights = np.tile(first.weights, (model.outputs, 1))
    a_bias = np.tile(first.bias, model.outputs)
    scale = w2.reshape(-1)
    b_weights = a_weights * scale[:, None]
    b_bias = a_bias * scale
    folds = (_Fold.pack(layout, a_weights, a_bias), _Fold.pack(layout, b_weights, b_bias))
    output_bias = layout.pack_bias(np.repeat(model.second.bias / hidden, hidden)).tolist()
    return Compiled(model, layout, folds, output_bias)
