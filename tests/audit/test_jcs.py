"""RFC 8785 canonical JSON: the RFC's own examples, and agreement with the ``rfc8785``
package (Trail of Bits) on random values, fast path and slow path alike."""

from __future__ import annotations

import datetime
import enum
import json
import math
import random
import struct
import uuid
from typing import Any

import pytest
import rfc8785

from secure_ds.audit._jcs import canonicalize, es6_number

from .._services import skip_unless_required

# RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "text"), APPENDIX_B)
def test_numbers_of_rfc_8785_appendix_b(bits: str, text: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert es6_number(value) == text
    assert canonicalize(value) == text.encode()
    assert canonicalize([value]) == f"[{text}]".encode()


def test_the_example_of_rfc_8785_section_3_2_2() -> None:
    data = json.loads(
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    assert (
        canonicalize(data)
        == (
            '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
            '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
        ).encode()
    )


def test_the_sorting_example_of_rfc_8785_section_3_2_3() -> None:
    data = {k: i for i, k in enumerate(["€", "\r", "דּ", "1", "😀", "\u0080", "ö"])}
    keys = list(json.loads(canonicalize(data)))
    assert keys == ["\r", "1", "\u0080", "ö", "€", "😀", "דּ"]  # UTF-16 order, not code points


def _random_float(rng: random.Random) -> float:
    kind = rng.randrange(6)
    if kind == 0:
        return float(rng.randrange(-(10**6), 10**6))  # integral
    if kind == 1:
        return rng.uniform(-1e-3, 1e-3) * 10 ** -rng.randrange(12)
    if kind == 2:
        return rng.uniform(-1, 1) * 10 ** rng.randrange(14, 30)
    if kind == 3:
        return round(rng.uniform(0, 1000), rng.randrange(6))
    value = struct.unpack(">d", rng.randbytes(8))[0]
    return value if math.isfinite(value) else 0.5


_ALPHABET = ["a", "Z", "é", "€", "\n", '"', "\\", "\x01", "\x7f", "😀", "דּ", "\u2028", ".0,", "1e+"]


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randrange(-(2**53), 2**53)
    if kind == 2:
        return _random_float(rng)
    if kind in (3, 4):
        return "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(6)))
    if kind == 5:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(1, 4))): _random_value(
            rng, depth + 1
        )
        for _ in range(rng.randrange(5))
    }


def test_agrees_with_the_rfc8785_package_on_random_values() -> None:
    rng = random.Random(8785)
    for _ in range(3000):
        value = _random_value(rng)
        assert canonicalize(value) == rfc8785.dumps(value), value


def test_agrees_with_the_rfc8785_package_on_an_audit_like_record() -> None:
    record = {
        "schema": "secure-ds.audit/1",
        "latency_ms": 12.0,
        "cost": {"usd": 1.5e-05, "tokens": 12},
        "decide": {"context": {"hour_utc": 9, "ratio": 0.25, "note": "a:3.0,b"}},
        "actor": {"subject": "alice", "roles": ["engineer"], "attributes": {}},
    }
    assert canonicalize(record) == rfc8785.dumps(record)


def test_values_json_cannot_hold_are_refused() -> None:
    for bad in (float("nan"), float("inf"), {"k": float("-inf")}):
        with pytest.raises(ValueError, match=r"JSON|Out of range"):
            canonicalize(bad)
    with pytest.raises(UnicodeEncodeError):
        canonicalize("\ud800")
    with pytest.raises(TypeError):
        canonicalize({"k": object()})


@pytest.mark.parametrize(
    "value",
    [
        3.0,
        -2.0,
        [1.0],
        {"a": 7.0},
        [1, 2.0],
        {"b": [0.5, 4.0], "c": 1e-07},
        1e16,
        [1.5e300],
        -1e-300,
        {"x": "9e-5", "y": "1.0,", "z": "a.0]"},
        {"ip": "10.0.0.7", "usd": 0.00042, "v": 10.0},
    ],
)
def test_each_place_python_and_ecmascript_differ_takes_the_exact_path(value: Any) -> None:
    # The fast path's scan looks for "<digits>.0" before a delimiter or at the end of
    # the text, and "<digit>e+"/"<digit>e-": each position is covered here.
    assert canonicalize(value) == rfc8785.dumps(value)


def test_a_cyclic_value_is_refused_with_value_error() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    looped: dict[str, Any] = {}
    looped["self"] = looped
    for bad in (cyclic, {"k": looped}):
        with pytest.raises(ValueError, match="cyclic"):
            canonicalize(bad)


def test_non_finite_floats_beside_nulls_are_refused() -> None:
    # orjson, the fast path, writes NaN and infinities as null; JCS refuses them
    for bad in (
        {"error": None, "cost": float("nan")},
        [None, [1, {"x": float("inf")}]],
        {"t": (None, float("-inf"))},
    ):
        with pytest.raises(ValueError, match="NaN and infinities"):
            canonicalize(bad)
    assert canonicalize({"error": None, "cost": 0.5}) == b'{"cost":0.5,"error":null}'


class _Colour(enum.Enum):
    RED = "red"
    PALE = 0.5


class _Level(enum.IntEnum):
    HIGH = 3


class _Name(str):
    pass


class _Amount(float):
    def __repr__(self) -> str:  # as numpy 2's float64 does: "np.float64(2.5)"
        return f"_Amount({float(self)})"


@pytest.mark.parametrize("exact_path_too", [False, True])
def test_both_paths_accept_the_same_values_and_write_them_alike(exact_path_too: bool) -> None:
    # An integral float sends the whole value down the pure-Python path; what the
    # value holds besides must come out the same either way.
    ident = uuid.UUID("0193a5c4-7e2b-7000-8a1b-000000000001")
    value: dict[str, Any] = {
        "colour": _Colour.RED,
        "pale": _Colour.PALE,
        "level": _Level.HIGH,
        "name": _Name("alice"),
        "amount": _Amount(2.5),
        "id": ident,
        "pair": (1, "a"),
    }
    plain = {
        "colour": "red",
        "pale": 0.5,
        "level": 3,
        "name": "alice",
        "amount": 2.5,
        "id": str(ident),
        "pair": [1, "a"],
    }
    if exact_path_too:
        value["f"] = plain["f"] = 2.0
    assert canonicalize(value) == rfc8785.dumps(plain)
    # beyond 64 bits (orjson refuses, rfc8785 too): still written digit for digit
    assert b',"big":1180591620717411303424,' in canonicalize({**value, "big": 2**70})
    with pytest.raises(TypeError):
        canonicalize({"when": datetime.datetime(2026, 11, 28), "f": 2.0 if exact_path_too else 1})
    with pytest.raises(TypeError):
        canonicalize({1: "non-string key"})


def test_nesting_beyond_the_fast_encoders_limit_is_still_written() -> None:
    deep: Any = "leaf"
    for _ in range(300):  # orjson stops at 255 levels
        deep = [deep]
    assert canonicalize(deep) == rfc8785.dumps(deep)


def test_an_audit_record_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # the point of the module: a typical record never reaches the pure-Python encoder
    from secure_ds.audit import _jcs

    def no_slow_path(value: Any) -> str:
        raise AssertionError("the slow path ran")

    monkeypatch.setattr(_jcs, "_slow", no_slow_path)
    record = {
        "schema": "secure-ds.audit/1",
        "latency_ms": 43.219,
        "cost": {"usd": 0.00016, "tokens": 376},
        "decide": {"eval_us": 71.4, "denied_by": None, "policies": ["p0"]},
        "actor": {"subject": "alice", "note": "café"},
        "error": None,
    }
    assert canonicalize(record) == rfc8785.dumps(record)


def _native_checks() -> tuple[Any, Any]:
    try:
        from secure_ds._native import has_non_finite, orjson_agrees
    except ImportError:
        skip_unless_required("secure_ds._native is not built (no Rust toolchain at install)")
    return has_non_finite, orjson_agrees


def test_the_native_checks_are_the_ones_canonicalize_uses() -> None:
    from secure_ds.audit import _jcs

    has_non_finite, orjson_agrees = _native_checks()
    assert _jcs._non_finite is has_non_finite
    assert _jcs._agree is orjson_agrees


def test_the_native_checks_answer_as_the_python_ones() -> None:
    """secure_ds._native's two checks on orjson's output give the Python functions'
    answers: on random values (with non-finite floats and subclasses mixed in) and on
    byte strings built from the tokens the checks look for."""
    import orjson

    from secure_ds.audit import _jcs

    has_non_finite, orjson_agrees = _native_checks()
    rng = random.Random(2026)
    odd = [float("nan"), float("inf"), -float("inf"), _Amount(float("inf")), (1.0, None)]
    answers: set[tuple[bool, bool]] = set()
    for _ in range(3000):
        value = _random_value(rng)
        if rng.random() < 0.3:
            value = [value, rng.choice(odd)] if rng.random() < 0.5 else {"k": value, "x": odd[0]}
        expected = _jcs._has_non_finite(value)
        assert has_non_finite(value) == expected, value
        try:
            out = orjson.dumps(value, option=_jcs._OPTIONS)
        except TypeError:  # a float subclass: canonicalize takes the exact path
            continue
        agree = _jcs._orjson_and_ecmascript_agree(out)
        assert orjson_agrees(out) == agree, out
        answers.add((expected, agree))
    assert answers == {(False, False), (False, True), (True, False), (True, True)}
    pieces = [b"1", b"0", b".0", b".", b"-", b"e+", b"e-", b"e", b":", b",", b"[", b"]", b"}"]
    pieces += [b'"', b"a", b"\xf0\x9f\x98\x80", b"\xc3\xa9", b" "]
    for _ in range(20_000):
        out = b"".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        assert orjson_agrees(out) == _jcs._orjson_and_ecmascript_agree(out), out
