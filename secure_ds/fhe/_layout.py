"""How inputs and weights are laid out in CKKS slots (pure numpy, no encryption).

A linear head ``y = W x + b`` (``C`` outputs, ``F`` features) is evaluated with one
slot-wise plaintext multiply per ciphertext and one *fold*, instead of TenSEAL's
``matmul`` (which rotates the ciphertext once per input feature: 768 rotations for a
768-feature input):

- slots are grouped into ``g`` chunks of ``S`` slots (slot ``t*S + r``). Row ``r < R``
  stands for one (batch item, output unit, part) triple, ``R = B*U*P``, so several
  inputs share one ciphertext and one fold; ``S`` is ``R`` rounded up to a power of
  two (the spare rows hold zeros). That costs no slots (``g = slots/S`` is the largest
  power of two with ``R*g <= slots`` either way) and halves the fold's time: with the
  default Galois keys a rotation by a power of two is one key switch, any other step
  several (measured 6.6 vs 11.9 ms for 64 chunks). Chunk ``t`` of ciphertext ``k`` in
  part ``p`` carries feature ``j = p*K*g + k*g + t``: the client writes ``x[item][j]``
  there (each feature appears once per output unit: the *replicated* layout), the
  server multiplies by the plaintext ``W[unit][j]`` and adds the ``K`` products;
- a fold (log2(g) rotations) sums the chunks, so row ``r`` of the first chunk holds the
  unit's dot product over its part's features; the client adds the ``P`` parts after
  decryption. Parts exist because chunks come in powers of two: 768 features x 10
  classes fit two ciphertexts of 4096 slots as 6 parts of 64 chunks, but need three
  as one part of 256 chunks.

The MLP ``W2 (W1 x + b1)^2 + b2`` uses the same client layout with ``U = C*H`` units
(class, hidden unit) per input and one part: two folds give ``A = h_i`` and
``B = W2[c][i] * h_i`` in row ``(c, i)``, one ciphertext product gives
``W2[c][i] * h_i^2``, and the client adds the ``H`` rows of each class after decryption.
That keeps the MLP at depth 3, which 128-bit security allows at N=8192 with a 40-bit
scale; summing on the server would need a fourth level (a fold costs one in TenSEAL).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["FoldLayout"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class FoldLayout:
    """The slot layout: ``rows`` x ``chunks`` per ciphertext, ``ciphertexts`` of them."""

    features: int  # F
    units: int  # U: output units per input: C (linear head) or C*H (MLP)
    batch: int  # B, inputs per evaluation
    parts: int  # P, feature ranges folded separately and added by the client
    chunks: int  # g, a power of two
    ciphertexts: int  # K = ceil(F / (P * g))
    group: int = 1  # units the client adds up per output (the MLP's hidden width)

    @classmethod
    def for_rows(
        cls, features: int, units: int, batch: int, slots: int, group: int = 1, max_parts: int = 1
    ) -> FoldLayout:
        """The layout with the fewest ciphertexts (then the fewest rotations) for up to
        ``max_parts`` parts; chunks fill the slots as far as a power of two allows."""
        if batch * units > slots:
            raise ValueError(f"{batch} inputs x {units} units exceed {slots} slots")
        best: FoldLayout | None = None
        for parts in range(1, max_parts + 1):
            rows = batch * units * parts
            if rows > slots:
                break
            chunks = 1 << ((slots // rows).bit_length() - 1)
            layout = cls(
                features, units, batch, parts, chunks, -(-features // (parts * chunks)), group
            )
            if best is None or (layout.ciphertexts, layout.rotations) < (
                best.ciphertexts,
                best.rotations,
            ):
                best = layout
        assert best is not None
        return best

    @property
    def rows(self) -> int:
        """R = B * U * P, the rows that hold results."""
        return self.batch * self.units * self.parts

    @property
    def stride(self) -> int:
        """S: the rows rounded up to a power of two; chunk ``t`` starts at slot ``t*S``."""
        return 1 << (self.rows - 1).bit_length()

    @property
    def vector_size(self) -> int:
        """Values encrypted per ciphertext (TenSEAL's fold checks ``size == S * g``)."""
        return self.stride * self.chunks

    @property
    def rotations(self) -> int:
        return self.chunks.bit_length() - 1

    def _gather(self, matrix: Array, by_item: bool) -> list[Array]:
        """``matrix[item or unit of r][feature(k, t, part of r)]`` for every slot, one
        array per ciphertext (features past F read as zero)."""
        span = self.ciphertexts * self.chunks  # features per part
        padded = np.zeros((matrix.shape[0], self.parts * span + 1))
        padded[:, : self.features] = matrix
        r = np.arange(self.rows)
        part = r % self.parts
        index = r // (self.units * self.parts) if by_item else (r // self.parts) % self.units
        k = np.arange(self.ciphertexts)[:, None, None]
        t = np.arange(self.chunks)[None, :, None]
        feature = part[None, None, :] * span + k * self.chunks + t
        values = np.zeros((self.ciphertexts, self.chunks, self.stride))
        values[:, :, : self.rows] = padded[index[None, None, :], feature]
        return [values[i].reshape(-1) for i in range(self.ciphertexts)]

    def pack_inputs(self, inputs: Array) -> list[Array]:
        """Client side: ``inputs`` (B x F) as ``ciphertexts`` vectors of ``vector_size``."""
        if inputs.shape != (self.batch, self.features):
            raise ValueError(f"expected inputs of shape {(self.batch, self.features)}")
        return self._gather(inputs, by_item=True)

    def pack_weights(self, weights: Array) -> list[Array]:
        """Server side: ``W`` (U x F) in the same slots as the inputs."""
        if weights.shape != (self.units, self.features):
            raise ValueError(f"expected weights of shape {(self.units, self.features)}")
        return self._gather(weights, by_item=False)

    def pack_bias(self, bias: Array) -> Array:
        """Server side: each unit's bias on its first part's row (added after the fold),
        zeros on the spare rows."""
        per_input = np.zeros((self.units, self.parts))
        per_input[:, 0] = np.asarray(bias, dtype=np.float64)
        out = np.zeros(self.stride)
        out[: self.rows] = np.tile(per_input.reshape(-1), self.batch)
        return out

    def unpack(self, values: Array) -> Array:
        """Client side: the first ``R`` decrypted slots as (B x outputs) scores, each
        output the sum of its ``group`` units' ``parts`` rows."""
        rows = np.asarray(values[: self.rows], dtype=np.float64)
        per_output = self.group * self.parts
        grouped = rows.reshape(self.batch, self.units // self.group, per_output)
        return np.asarray(grouped.sum(axis=2), dtype=np.float64)
