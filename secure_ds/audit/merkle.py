"""RFC 9162 (Certificate Transparency 2.0) Merkle trees, exactly as §2.1 defines them.

Plain functions over a list of leaf byte strings (the leaves' *data*; they are hashed
here), for interoperability checks and for ``secure-ds audit prove``:

* :func:`root` is MTH (§2.1.1): SHA-256, ``0x00`` before a leaf, ``0x01`` before a pair of
  children, split at the largest power of two smaller than the size, and the empty tree
  hashing to ``SHA-256("")``.
* :func:`inclusion_proof` / :func:`verify_inclusion`: §2.1.3.1 and the verification
  algorithm of §2.1.3.2.
* :func:`consistency_proof` / :func:`verify_consistency`: §2.1.4.1 and the verification
  algorithm of §2.1.4.2. The RFC defines proofs for ``0 < old_size < new_size``; like
  the reference implementations, equal sizes take an empty proof and equal roots, and an
  empty old tree is consistent with any tree (empty proof, old root ``SHA-256("")``).

:class:`CompactTree` is the incremental form the audit log uses: the roots of the
perfect subtrees that make up the tree (a *compact range*), so that appending a leaf is
O(log n) and the root is available at any size.

Verification functions never raise on malformed input (wrong lengths, indexes out of
range, hashes of the wrong size): they return ``False``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "CompactTree",
    "consistency_proof",
    "consistency_proof_from_hashes",
    "hash_children",
    "hash_leaf",
    "inclusion_proof",
    "inclusion_proof_from_hashes",
    "root",
    "root_from_hashes",
    "verify_consistency",
    "verify_inclusion",
    "verify_inclusion_hash",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()
_HASH_SIZE = 32


def hash_leaf(data: bytes) -> bytes:
    """The hash of a leaf: SHA-256(0x00 ‖ data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """The hash of an inner node: SHA-256(0x01 ‖ left ‖ right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n`` >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(hashes: Sequence[bytes]) -> bytes:
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = _split(n)
    return hash_children(_mth(hashes[:k]), _mth(hashes[k:]))


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of ``leaves`` (RFC 9162 §2.1.1)."""
    return _mth([hash_leaf(leaf) for leaf in leaves])


def _path(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    n = len(hashes)
    if n <= 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(m, hashes[:k]), _mth(hashes[k:])]
    return [*_path(m - k, hashes[k:]), _mth(hashes[:k])]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``leaves`` (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf index {index} is outside a tree of {len(leaves)} leaves")
    return _path(index, [hash_leaf(leaf) for leaf in leaves])


def _subproof(m: int, hashes: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if complete else [_mth(hashes)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, hashes[:k], complete), _mth(hashes[k:])]
    return [*_subproof(m - k, hashes[k:], False), _mth(hashes[:k])]


def root_from_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """:func:`root` of leaves given by their hashes."""
    return _mth(leaf_hashes)


def inclusion_proof_from_hashes(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """:func:`inclusion_proof` of leaves given by their hashes."""
    if not 0 <= index < len(leaf_hashes):
        raise ValueError(f"leaf index {index} is outside a tree of {len(leaf_hashes)} leaves")
    return _path(index, leaf_hashes)


def consistency_proof_from_hashes(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """:func:`consistency_proof` of leaves given by their hashes."""
    if not 0 <= old_size <= len(leaf_hashes):
        raise ValueError(f"old size {old_size} is outside 0..{len(leaf_hashes)}")
    if old_size in (0, len(leaf_hashes)):
        return []
    return _subproof(old_size, leaf_hashes, True)


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """The proof that the first ``old_size`` leaves are a prefix of ``leaves``
    (RFC 9162 §2.1.4.1; empty for ``old_size`` 0 or ``len(leaves)``)."""
    if not 0 <= old_size <= len(leaves):
        raise ValueError(f"old size {old_size} is outside 0..{len(leaves)}")
    if old_size in (0, len(leaves)):
        return []
    return _subproof(old_size, [hash_leaf(leaf) for leaf in leaves], True)


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == _HASH_SIZE


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: is ``leaf`` (its data) at ``index`` of the tree of ``size``
    leaves whose root is ``root``?"""
    return verify_inclusion_hash(hash_leaf(leaf), index, size, proof, root)


def verify_inclusion_hash(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """:func:`verify_inclusion` for a leaf given by its hash."""
    if not 0 <= index < size or not _is_hash(root) or not all(_is_hash(p) for p in proof):
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree of ``old_size`` leaves with ``old_root`` a prefix of
    the tree of ``new_size`` leaves with ``new_root``?"""
    if not _is_hash(old_root) or not _is_hash(new_root) or not all(_is_hash(p) for p in proof):
        return False
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    # 1. An empty path cannot prove anything between different sizes.
    if not proof:
        return False
    path = list(proof)
    # 2. A power-of-two old tree is a complete subtree: its root starts the path.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3.-4.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.-6.
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    # 7.
    return fr == old_root and sr == new_root and sn == 0


class CompactTree:
    """A Merkle tree kept as the roots of its perfect subtrees, largest first.

    ``append`` is O(log n) amortised and ``root`` O(log n); the state is
    :attr:`range` (at most ``log2(size) + 1`` hashes), which is what a checkpoint line
    stores so that a writer can resume without reading the whole log.
    """

    __slots__ = ("_hashes", "_sizes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        sizes = [1 << bit for bit in reversed(range(size.bit_length())) if size >> bit & 1]
        if size < 0 or len(sizes) != len(hashes) or not all(_is_hash(h) for h in hashes):
            raise ValueError(
                f"a compact range of a {size}-leaf tree has {len(sizes)} hashes of "
                f"{_HASH_SIZE} bytes, not {len(hashes)}"
            )
        self.size = size
        self._sizes = sizes
        self._hashes = list(hashes)

    @property
    def range(self) -> list[bytes]:
        """The subtree roots, largest (leftmost) first."""
        return list(self._hashes)

    def append_hash(self, leaf_hash: bytes) -> None:
        """Add a leaf given by its hash (:func:`hash_leaf` of its data)."""
        sizes, hashes = self._sizes, self._hashes
        h, s = leaf_hash, 1
        while sizes and sizes[-1] == s:
            sizes.pop()
            h = hash_children(hashes.pop(), h)
            s <<= 1
        sizes.append(s)
        hashes.append(h)
        self.size += 1

    def append(self, leaf: bytes) -> None:
        """Add a leaf given by its data."""
        self.append_hash(hash_leaf(leaf))

    def root(self) -> bytes:
        """The Merkle Tree Hash of the leaves so far."""
        if not self._hashes:
            return EMPTY_ROOT
        r = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            r = hash_children(h, r)
        return r

    def copy(self) -> CompactTree:
        twin = CompactTree.__new__(CompactTree)
        twin.size, twin._sizes, twin._hashes = self.size, list(self._sizes), list(self._hashes)
        return twin
