"""secure_ds.audit.merkle against published RFC 6962/9162 vectors, and by exhaustion.

The vectors are the Certificate Transparency reference vectors as published in
transparency-dev/merkle (the successor of Trillian's merkle package):
``testonly/constants.go`` (leaf inputs, the root of every tree size 0..8) and
``proof/verify_test.go`` (inclusion and consistency proofs; that file numbers leaves
from 1, they are numbered from 0 here). RFC 9162 keeps RFC 6962's tree hashing.
"""

from __future__ import annotations

import hashlib

import pytest

from secure_ds.audit import merkle
from secure_ds.audit.merkle import (
    CompactTree,
    consistency_proof,
    inclusion_proof,
    root,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]


def _hx(*hashes: str) -> list[bytes]:
    return [bytes.fromhex(h) for h in hashes]


# (index, size, proof)
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        _hx(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        5,
        8,
        _hx(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (2, 3, _hx("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        1,
        5,
        _hx(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]

# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        _hx(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        _hx(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        _hx(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
    (
        6,
        7,
        _hx(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
]


def test_roots_match_the_published_vectors() -> None:
    assert merkle.EMPTY_ROOT == hashlib.sha256(b"").digest() == ROOTS[0]
    for size, want in enumerate(ROOTS):
        assert root(LEAVES[:size]) == want, size


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_published_vectors(
    index: int, size: int, proof: list[bytes]
) -> None:
    assert inclusion_proof(LEAVES[:size], index) == proof
    assert verify_inclusion(LEAVES[index], index, size, proof, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_published_vectors(
    old: int, new: int, proof: list[bytes]
) -> None:
    assert consistency_proof(LEAVES[:new], old) == proof
    assert verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def _naive_root(hashes: list[bytes]) -> bytes:
    """MTH written straight from the RFC's recursive definition, for cross-checks."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return hashlib.sha256(b"\x01" + _naive_root(hashes[:k]) + _naive_root(hashes[k:])).digest()


def _leaves(n: int) -> list[bytes]:
    return [f"leaf {i}".encode() for i in range(n)]


def _tampered(proof: list[bytes]) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([proof[i][0] ^ 1]) + proof[i][1:]
        out.append(flipped)
    if proof:
        out.append(proof[:-1])  # one hash short
        out.append([*proof, proof[-1]])  # one too many
        out.append(list(reversed(proof)) if len(proof) > 1 else [proof[0][:31]])
    return out


def test_every_inclusion_proof_up_to_64_leaves_verifies_and_tampering_fails() -> None:
    for size in range(1, 65):
        leaves = _leaves(size)
        r = root(leaves)
        assert r == _naive_root([merkle.hash_leaf(x) for x in leaves])
        for index in range(size):
            proof = inclusion_proof(leaves, index)
            assert verify_inclusion(leaves[index], index, size, proof, r)
            assert not verify_inclusion(leaves[index] + b"x", index, size, proof, r)
            assert not verify_inclusion(leaves[index], index, size, proof, ROOTS[1])
            if size > 1:
                assert not verify_inclusion(leaves[index], (index + 1) % size, size, proof, r)
            for bad in _tampered(proof):
                assert not verify_inclusion(leaves[index], index, size, bad, r)


def test_every_consistency_proof_up_to_64_leaves_verifies_and_tampering_fails() -> None:
    leaves = _leaves(64)
    roots = [root(leaves[:n]) for n in range(65)]
    for new in range(65):
        for old in range(new + 1):
            proof = consistency_proof(leaves[:new], old)
            assert verify_consistency(old, new, roots[old], roots[new], proof), (old, new)
            if old in (0, new):
                continue  # nothing to prove: an empty proof, whatever the new tree
            assert not verify_consistency(old, new, roots[old], roots[new - 1], proof)
            assert not verify_consistency(old, new, roots[old - 1], roots[new], proof)
            assert not verify_consistency(old - 1, new, roots[old], roots[new], proof)
            for bad in _tampered(proof):
                assert not verify_consistency(old, new, roots[old], roots[new], bad)


def test_malformed_arguments_return_false_or_raise_value_error() -> None:
    r = root(LEAVES)
    assert not verify_inclusion(LEAVES[0], 8, 8, [], r)
    assert not verify_inclusion(LEAVES[0], -1, 8, [], r)
    assert not verify_inclusion(LEAVES[0], 0, 0, [], r)
    assert not verify_inclusion(LEAVES[0], 0, 1, [], r[:31])
    assert not verify_consistency(8, 7, r, r, [])
    assert not verify_consistency(0, 8, r, r, [])  # the empty tree's root is SHA-256("")
    assert verify_consistency(0, 8, ROOTS[0], r, [])
    assert not verify_consistency(3, 8, ROOTS[3], r, [])
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(LEAVES, 8)
    with pytest.raises(ValueError, match="outside"):
        consistency_proof(LEAVES, 9)


def test_the_compact_tree_matches_root_at_every_size() -> None:
    leaves = _leaves(300)
    tree = CompactTree()
    assert tree.root() == ROOTS[0]
    for n, leaf in enumerate(leaves, start=1):
        tree.append(leaf)
        assert tree.size == n
        assert len(tree.range) == bin(n).count("1")
        if n <= 70 or n % 37 == 0:
            assert tree.root() == root(leaves[:n]), n
    resumed = CompactTree(tree.size, tree.range)
    resumed.append(b"next")
    assert resumed.root() == root([*leaves, b"next"])
    vectors = CompactTree()
    for size, leaf in enumerate(LEAVES, start=1):
        vectors.append(leaf)
        assert vectors.root() == ROOTS[size]


def test_a_compact_range_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="compact range"):
        CompactTree(3, [ROOTS[1]])
    with pytest.raises(ValueError, match="compact range"):
        CompactTree(1, [b"short"])
