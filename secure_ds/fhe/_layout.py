"""How inputs and weights are laid out in CKKS slots (pure numpy, no encryption).

A linear head ``y = W x + b`` (``C`` outputs, ``F`` features) is evaluated with one
slot-wise plaintext multiply per ciphertext and one *fold*, instead of TenSEAL's
``matmul`` (which rotates the ciphertext once per input feature: 768 rotations for a
768-feature input):

- slots are grouped into ``g`` chunks of ``R`` rows (slot ``t*R + r``). Row ``r`` stands
  for class ``r % C`` of batch item ``r // C`` (``R = B*C``), so several inputs share one
  ciphertext and one fold. Chunk ``t`` of ciphertext ``k`` carries feature
  ``j = k*g + t``: the client writes ``x[item][j]`` there (each feature appears once per
  class: the *replicated* layout), the server multiplies by the plaintext
  ``W[class][j]`` and adds the ``ceil(F/g)`` products;
- a fold (log2(g) rotations) sums the chunks, so row ``r`` of the first chunk holds
  ``sum_j W[class][j] * x[item][j]``; the bias is added to those ``R`` slots.

The MLP ``W2 (W1 x + b1)^2 + b2`` uses the same client layout with ``C*H`` rows
(class, hidden unit) per input: two folds give ``A = h_i`` and ``B = W2[c][i] * h_i`` in
row ``(c, i)``, one ciphertext product gives ``W2[c][i] * h_i^2``, and the client adds the
``H`` rows of each class after decryption (``group``). That keeps the MLP at depth 3,
which 128-bit security allows at N=8192 with a 40-bit scale; summing on the server
would need a fourth level (a fold costs one in TenSEAL).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["FoldLayout"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class FoldLayout:
    """The slot layout: ``rows`` x ``chunks`` per ciphertext."""

    features: int  # F
    units: int  # rows per input: C (linear head) or C*H (MLP)
    batch: int  # B, inputs per evaluation
    rows: int  # R = B * C
    chunks: int  # g, a power of two
    ciphertexts: int  # ceil(F / g)
    group: int = 1  # rows the client adds up per output (the MLP's hidden width)

    @classmethod
    def for_rows(
        cls, features: int, units: int, batch: int, slots: int, group: int = 1
    ) -> FoldLayout:
        """Chunks fill the slots as far as a power of two allows."""
        rows = batch * units
        if rows > slots:
            raise ValueError(f"{batch} inputs x {units} rows exceed {slots} slots")
        chunks = 1 << ((slots // rows).bit_length() - 1)
        return cls(features, units, batch, rows, chunks, -(-features // chunks), group)

    @property
    def vector_size(self) -> int:
        """Values encrypted per ciphertext (TenSEAL's fold checks ``size == R * g``)."""
        return self.rows * self.chunks

    @property
    def rotations(self) -> int:
        return self.chunks.bit_length() - 1

    def _gather(self, matrix: Array, by_item: bool) -> list[Array]:
        """``matrix[row_index(r)][feature(k, t)]`` for every slot, one array per ciphertext."""
        padding = self.ciphertexts * self.chunks - self.features
        padded = np.concatenate([matrix, np.zeros((matrix.shape[0], padding))], axis=1)
        r = np.arange(self.rows)
        index = r // self.units if by_item else r % self.units
        j = np.arange(self.ciphertexts * self.chunks).reshape(self.ciphertexts, self.chunks)
        values = padded[index[None, None, :], j[:, :, None]]
        return [values[k].reshape(-1) for k in range(self.ciphertexts)]

    def pack_inputs(self, inputs: Array) -> list[Array]:
        """Client side: ``inputs`` (B x F) as ``ciphertexts`` vectors of ``vector_size``."""
        if inputs.shape != (self.batch, self.features):
            raise ValueError(f"expected inputs of shape {(self.batch, self.features)}")
        return self._gather(inputs, by_item=True)

    def pack_weights(self, weights: Array) -> list[Array]:
        """Server side: ``W`` (C x F) in the same slots as the inputs."""
        if weights.shape != (self.units, self.features):
            raise ValueError(f"expected weights of shape {(self.units, self.features)}")
        return self._gather(weights, by_item=False)

    def pack_bias(self, bias: Array) -> Array:
        """Server side: the bias of each row, added after the fold."""
        return np.tile(np.asarray(bias, dtype=np.float64), self.batch)

    def unpack(self, values: Array) -> Array:
        """Client side: the first ``R`` decrypted slots as (B x outputs) scores, each
        output the sum of its ``group`` rows."""
        rows = np.asarray(values[: self.rows], dtype=np.float64)
        grouped = rows.reshape(self.batch, self.units // self.group, self.group)
        return np.asarray(grouped.sum(axis=2), dtype=np.float64)
