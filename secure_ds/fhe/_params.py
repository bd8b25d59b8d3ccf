"""CKKS parameter sets that meet 128-bit security, and the check that refuses others.

The HomomorphicEncryption.org security standard (Albrecht et al., 2018, table for
classical 128-bit security, ternary secret) bounds the total bit length of the
coefficient modulus ``Q`` for each ring size ``N``. SEAL (and so TenSEAL) uses the same
table. The *special* (last) prime is part of ``Q`` for this bound.

A parameter set fixes:

- ``N`` (``poly_modulus_degree``): the ring size; ``N/2`` complex slots per ciphertext.
- the modulus chain (``coeff_mod_bit_sizes``): ``[q0, q1 .. qL, special]``. ``q0`` holds
  the final result (its bits above the scale are the integer headroom), each middle
  prime is consumed by one rescale (so ``L`` = the multiplicative depth), the special
  prime is only used for key switching (relinearisation, rotations).
- the scale ``2**scale_bits``: the fixed-point precision; the middle primes match it so
  the scale stays stable after every rescale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..errors import FheParameterError

__all__ = ["MAX_MODULUS_BITS_128", "PARAMETER_SETS", "ParameterSet", "parameter_set"]

# HomomorphicEncryption.org standard, 128-bit classical security, max log2(Q) per N.
MAX_MODULUS_BITS_128: Final = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


@dataclass(frozen=True)
class ParameterSet:
    """One named, versioned CKKS parameter set. Construction checks 128-bit security."""

    id: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int

    def __post_init__(self) -> None:
        check_security(self.id, self.poly_modulus_degree, self.coeff_mod_bit_sizes)
        if len(self.coeff_mod_bit_sizes) < 3:
            raise FheParameterError(
                f"parameter set {self.id!r} has {len(self.coeff_mod_bit_sizes)} primes; CKKS "
                "needs at least three (data, one level, special)",
                hint="Add a middle prime of scale_bits bits.",
            )
        middle = self.coeff_mod_bit_sizes[1:-1]
        if any(bits != self.scale_bits for bits in middle):
            raise FheParameterError(
                f"parameter set {self.id!r}: middle primes {list(middle)} must all equal "
                f"scale_bits={self.scale_bits}, or the scale drifts after each rescale",
                hint="Use middle primes of exactly scale_bits bits.",
            )

    @property
    def depth(self) -> int:
        """Multiplicative depth: the number of rescales a fresh ciphertext allows."""
        return len(self.coeff_mod_bit_sizes) - 2

    @property
    def modulus_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def max_ciphertext_bytes(self) -> int:
        """An upper bound of one serialised fresh ciphertext (two polynomials, every
        data prime in a 64-bit word, plus TenSEAL's framing): checked before parsing."""
        data_primes = len(self.coeff_mod_bit_sizes) - 1
        return 2 * self.poly_modulus_degree * data_primes * 8 + 4096

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "modulus_bits": self.modulus_bits,
            "max_bits_for_128": MAX_MODULUS_BITS_128[self.poly_modulus_degree],
            "scale_bits": self.scale_bits,
            "depth": self.depth,
            "slots": self.slots,
        }


def check_security(name: str, n: int, bit_sizes: tuple[int, ...]) -> None:
    """Raise :class:`FheParameterError` unless (N, Q) meets the 128-bit bound."""
    bound = MAX_MODULUS_BITS_128.get(n)
    if bound is None:
        raise FheParameterError(
            f"parameter set {name!r}: poly_modulus_degree {n} is not one of "
            f"{sorted(MAX_MODULUS_BITS_128)}",
            hint="Pick a power of two from 1024 to 32768.",
        )
    total = sum(bit_sizes)
    if total > bound:
        raise FheParameterError(
            f"parameter set {name!r} is below 128-bit security: its coefficient modulus has "
            f"{total} bits, and N={n} allows at most {bound} (HomomorphicEncryption.org "
            "standard)",
            hint=f"Remove primes or shrink them to at most {bound} bits in total, or double N.",
        )


# Depth 2 (one plaintext multiply + one fold), 200 of 218 bits: the linear heads.
LINEAR_8192: Final = ParameterSet("ckks-8192-d2/1", 8192, (60, 40, 40, 60), 40)
# Depth 3 (matmul, square, matmul), 218 of 218 bits: the MLP. A 30-bit scale would buy
# a fourth level but measured ~2e-2 error on the digits MLP's scores (1e-3 is the bar);
# at 40 bits the error is ~2e-5. q0 = 49 bits leaves 9 bits (|score| < 256) of headroom.
MLP_8192: Final = ParameterSet("ckks-8192-d3/1", 8192, (49, 40, 40, 40, 49), 40)

PARAMETER_SETS: Final = {p.id: p for p in (LINEAR_8192, MLP_8192)}


def parameter_set(set_id: str) -> ParameterSet:
    try:
        return PARAMETER_SETS[set_id]
    except KeyError:
        raise FheParameterError(
            f"unknown FHE parameter set {set_id!r}",
            hint=f"Use one of {sorted(PARAMETER_SETS)}.",
        ) from None
