"""RFC 8785 JSON Canonicalization Scheme (JCS), fast enough for every audit record.

``canonicalize(value) -> bytes`` gives the JCS form of a JSON value: object members
sorted by the UTF-16 code units of their names, no whitespace, strings with only the
required escapes (``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``, other control characters as
``\\u00xx``), UTF-8, and numbers written as ECMAScript writes them
(``Number.prototype.toString``: ``1`` not ``1.0``, ``1e+21``, ``1e-7``).

Why not only the ``rfc8785`` package: it is exact (and the tests hold this module to
it on the RFC's examples and on random values) but spends ~400 µs on a 2 KB audit
record here, more than signing it. This module hands the common case to orjson (a
compiled encoder, ~10x faster than the standard library's, which this module used
before) and keeps a pure-Python encoder for values where the two could differ:

* fast path: orjson with sorted keys, then two conservative checks. orjson and
  ECMAScript print floats alike (shortest round-trip digits) except for integral
  floats (``3.0`` vs ``3``) and exponent forms (``1e-5`` vs ``0.00001``); key order
  differs only when keys hold characters beyond U+FFFF. If the output holds anything
  that *could* be one of those (``\\d.0`` followed by a delimiter, ``\\de[+-]``, a
  non-BMP character), even inside a string, the slow path runs instead. And orjson
  writes NaN and infinities as ``null`` where JCS refuses them, so a value whose
  output holds ``null`` is searched for a non-finite float (~12 µs for an audit record
  in Python, ~1 µs in Rust: both checks run in ``secure_ds._native`` when it is built);
* slow path: a recursive encoder that formats numbers with ECMAScript's algorithm.

What the two paths accept is the same: JSON values built from dict, list, tuple, str,
int, float, bool and None, subclasses of str, int and float (written as their base
type), and the two types orjson writes natively beyond those, enum members (as their
value) and ``uuid.UUID`` (as its string). Anything else raises :class:`TypeError`.

Integers are written exactly (JCS expects I-JSON, whose integers fit a double; a larger
one is still written digit for digit rather than refused, so a record never fails to
canonicalise because a caller sent a huge number). NaN and infinities, non-string keys,
lone surrogates and non-JSON types raise :class:`ValueError`/:class:`TypeError`.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import re
import uuid
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["canonicalize", "es6_number"]

# Subclasses of str/int/dict/list go to the slow path (orjson raises TypeError for
# them with these options); so do datetimes and dataclasses, which the slow path refuses.
_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)
_dumps = orjson.dumps
_NUMBER_BYTES = frozenset(b"0123456789.-")
_DIGIT_BYTES = frozenset(b"0123456789")
_NUMBER_START = frozenset(b":,[")
# An integral float as orjson writes it: "<digits>.0" and then one of these or the end.
_DELIMITERS = frozenset((b",", b"}", b"]"))
_NON_BMP = re.compile(rb"[\xf0-\xff]")  # the lead byte of a 4-byte UTF-8 sequence
_encode_string = json.encoder.encode_basestring


def canonicalize(value: Any) -> bytes:
    """The RFC 8785 canonical form of ``value`` (built from dict, list, str, int,
    float, bool and None), as UTF-8 bytes."""
    try:
        out: bytes = _dumps(value, option=_OPTIONS)
    except TypeError:  # a subclass, an integer beyond 64 bits, or no JSON value at all
        return _slow_bytes(value)
    except RecursionError:
        raise ValueError("the value is cyclic or nested too deeply for JSON") from None
    if b"null" in out and _non_finite(value):
        raise ValueError("NaN and infinities are not JSON numbers")
    if _agree(out):
        return out
    return _slow_bytes(value)


def _slow_bytes(value: Any) -> bytes:
    try:
        return _slow(value).encode("utf-8")
    except RecursionError:
        raise ValueError("the value is cyclic or nested too deeply for JSON") from None


def _has_non_finite(value: Any) -> bool:
    """Whether a NaN or an infinity is among ``value``'s floats (which orjson writes as
    ``null``). Only plain dicts, lists and floats need a look: orjson hands anything
    else (subclasses included) to the slow path, which refuses such floats itself."""
    stack = [value]
    pop, push = stack.pop, stack.extend
    while stack:
        v = pop()
        t = type(v)
        if t is dict:
            push(v.values())
        elif t is list or t is tuple:
            push(v)
        elif t is float and v - v != 0:  # inf - inf and nan - nan are nan
            return True
    return False


def _orjson_and_ecmascript_agree(out: bytes) -> bool:
    """False if ``out`` might hold a float orjson writes differently from ECMAScript
    (an integral float ``<digits>.0``, or an exponent ``<digits>e+``/``<digits>e-``) or a
    key whose UTF-16 order differs from its code-point order (a character past U+FFFF).

    Substring searches first (C speed; most records hold none of these needles), then
    a look at each candidate: a number in the encoder's output starts after ``:``,
    ``,`` or ``[``, so ``1e-`` inside ``"8a1e-"`` is no float. A candidate inside a
    string only costs the slow path, never a wrong result. (A regular expression costs
    ~20x more on a 2 KB record.)"""
    find = out.find
    at = find(b".0")  # one search for all three delimiters: ".0" is rare in a record
    while at != -1:
        after = out[at + 2 : at + 3]
        if (after == b"" or after in _DELIMITERS) and _number_before(out, at):
            return False
        at = find(b".0", at + 1)
    for needle in (b"e+", b"e-"):
        at = find(needle)
        while at != -1:
            # quick reject: a float's exponent follows a digit ("1e-7", "1.5e+16")
            if at and out[at - 1] in _DIGIT_BYTES and _number_before(out, at):
                return False
            at = find(needle, at + 1)
    return out.isascii() or _NON_BMP.search(out) is None


# The two checks above in Rust (secure_ds._native, when built): the same answers
# (tests/audit/test_jcs.py compares them), in ~1 us each instead of ~12 us on a 2 KB
# record, which was most of what canonicalising one cost.
_non_finite: Callable[[Any], bool] = _has_non_finite
_agree: Callable[[bytes], bool] = _orjson_and_ecmascript_agree
with contextlib.suppress(ImportError):  # not built: the Python checks run
    from secure_ds._native import has_non_finite as _non_finite
    from secure_ds._native import orjson_agrees as _agree


def _number_before(out: bytes, at: int) -> bool:
    """Whether ``out[:at]`` ends in a JSON number token (digits, ``.``, ``-``)."""
    start = at
    while start and out[start - 1] in _NUMBER_BYTES:
        start -= 1
    return (
        start < at
        and out[start:at].strip(b"-.") != b""
        and (start == 0 or out[start - 1] in _NUMBER_START)
    )


def _slow(value: Any) -> str:
    if isinstance(value, str):
        return str(_encode_string(value))
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(int(value))  # an IntEnum member too: its value, as orjson writes it
    if isinstance(value, float):
        return es6_number(value)
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(f"{_encode_string(k)}:{_slow(value[k])}" for k in keys) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_slow(v) for v in value) + "]"
    # the two types orjson writes natively beyond JSON's (so both paths agree)
    if isinstance(value, enum.Enum):
        return _slow(value.value)
    if isinstance(value, uuid.UUID):
        return f'"{value}"'
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def es6_number(x: float) -> str:
    """``x`` as ECMAScript's ``Number.prototype.toString`` writes it (RFC 8785 §3.2.2.3)."""
    x = float(x)  # a subclass's repr may be anything (numpy 2: "np.float64(2.5)")
    if not math.isfinite(x):
        raise ValueError(f"{x!r} is not a JSON number")
    if x == 0:
        return "0"
    if x < 0:
        return "-" + es6_number(-x)
    # repr gives the shortest digits that round-trip, as ECMAScript requires.
    mantissa, _, exp = repr(x).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    # n: position of the decimal point relative to the first significant digit
    n = len(whole) + (int(exp) if exp else 0)
    if whole == "0":
        n -= len(frac) - len(frac.lstrip("0"))
        n -= 1
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    e = n - 1
    sign = "+" if e >= 0 else "-"
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{head}e{sign}{abs(e)}"
