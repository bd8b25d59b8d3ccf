"""Checks that turn a regex candidate into a finding: checksums, registries, entropy.

A pattern alone flags every 16-digit order number as a card and every ``AB12...``
product code as an IBAN. These functions carry the rules the formats themselves
define (Luhn, ISO 13616 mod-97 with per-country lengths, the SSA's SSN rules, the
IIN ranges of card brands, ITU country calling codes, the JOSE header of a JWT) plus
the one statistical test the generic-secret detector needs (Shannon entropy). They
are pure functions on short strings, called only for candidates, never per character
of the scanned text.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import json
import math
import operator
import re
from collections import Counter

__all__ = [
    "card_brand",
    "char_classes",
    "country_code_split",
    "digit_count",
    "entropy_at_least",
    "iban_length",
    "iban_lengths",
    "iban_valid",
    "ipv4_reportable",
    "ipv6_reportable",
    "jwt_header_valid",
    "jwt_payload_json",
    "luhn_valid",
    "nanp_valid",
    "shannon_entropy",
    "ssn_valid",
]


_LUHN_DOUBLE = str.maketrans("0123456789", "0246813579")  # 2d, minus 9 above 9


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every payment card number carries in its last digit."""
    if digits.isascii() and digits.isdigit():
        # ASCII digits: sum the code points in C (each is 48 + its value)
        kept_b = digits[-1::-2].encode()
        doubled_b = digits[-2::-2].translate(_LUHN_DOUBLE).encode()
        return (sum(kept_b) + sum(doubled_b) - 48 * len(digits)) % 10 == 0
    kept = sum(map(int, digits[-1::-2]))
    doubled = sum(map(int, digits[-2::-2].translate(_LUHN_DOUBLE)))
    return (kept + doubled) % 10 == 0


def card_brand(digits: str) -> str | None:
    """The brand whose IIN range and length fit ``digits``, or None.

    Only issuer ranges in use are accepted: a Luhn-valid number with a prefix no
    network issues (``1...``, ``9...``, most of ``7...``/``8...``) is not a card.
    (Prefixes are compared as strings of equal length, which orders like numbers.)
    """
    n = len(digits)
    if n < 13 or n > 19 or digits[0] not in "23456":
        return None
    p2, p3, p4, p6 = digits[:2], digits[:3], digits[:4], digits[:6]
    if digits[0] == "4":
        return "visa" if n in (13, 16, 19) else None
    if "51" <= p2 <= "55" or "2221" <= p4 <= "2720":
        return "mastercard" if n == 16 else None
    if p2 in ("34", "37"):
        return "amex" if n == 15 else None
    if p4 == "6011" or p2 == "65" or "644" <= p3 <= "649" or "622126" <= p6 <= "622925":
        return "discover" if n >= 16 else None
    if "3528" <= p4 <= "3589":
        return "jcb" if n >= 16 else None
    if "300" <= p3 <= "305" or p2 in ("36", "38", "39") or p4 == "3095":
        return "diners" if n >= 14 else None
    if p2 == "62":
        return "unionpay" if n >= 16 else None
    if p4 in ("5018", "5020", "5038", "5893", "6304", "6759", "6761", "6762", "6763"):
        return "maestro" if n >= 16 else None
    return None


# ISO 13616 registry: IBAN length per country.
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}  # fmt: skip

_LETTER_VALUES = str.maketrans({chr(c): str(c - 55) for c in range(65, 91)})


def iban_length(country: str) -> int | None:
    return _IBAN_LENGTHS.get(country)


def iban_lengths() -> dict[str, int]:
    """The registry: IBAN length per country code."""
    return dict(_IBAN_LENGTHS)


def iban_valid(compact: str) -> bool:
    """ISO 13616: registered country, its exact length, check digits, mod 97 == 1."""
    length = _IBAN_LENGTHS.get(compact[:2])
    if length is None or len(compact) != length or not compact[2:4].isdigit():
        return False
    if not compact[4:].isalnum() or not compact.isascii():
        return False
    rearranged = (compact[4:] + compact[:4]).upper().translate(_LETTER_VALUES)
    return int(rearranged) % 97 == 1


# Numbers the SSA has published or that were famously misused in advertising.
_SSN_NEVER = frozenset({"078051120", "219099999", "457555462", "123456789"})


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """SSA rules: area 001-899 except 666, group 01-99, serial 0001-9999."""
    if area in ("000", "666") or area[0] == "9":
        return False
    if group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_NEVER


def ipv4_reportable(text: str) -> bool:
    """A valid dotted-quad address worth reporting.

    Loopback, ``0.0.0.0``, the broadcast address and netmasks (``255.255.255.0``)
    reveal nothing about a network, so they are not findings.
    """
    m = _IPV4_OCTETS.fullmatch(text)
    if m is None:
        return False
    first = m.group(1)
    if first == "0" or first == "127":
        return False  # this-network, loopback
    if first != "255":
        return True
    return _ipv4_reportable_slow(text)


# four decimal octets 0-255 without leading zeros (what ipaddress accepts)
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4_OCTETS = re.compile(r"\.".join([_OCTET] * 4))


def _ipv4_reportable_slow(text: str) -> bool:
    octets = text.split(".")
    if len(octets) != 4:
        return False
    value = 0
    for octet in octets:
        # decimal 0-255 without leading zeros (as ipaddress requires); checked by
        # hand because ipaddress.IPv4Address costs ~15 us per call
        if not octet.isdigit() or not octet.isascii() or (len(octet) > 1 and octet[0] == "0"):
            return False
        n = int(octet)
        if n > 255:
            return False
        value = value << 8 | n
    if octets[0] in ("0", "127") or value == 0xFFFFFFFF:
        return False  # this-network, loopback, broadcast
    if octets[0] == "255":
        inverted = ~value & 0xFFFFFFFF
        if inverted & (inverted + 1) == 0:  # contiguous ones: a netmask
            return False
    return True


def ipv6_reportable(text: str) -> bool:
    """A valid IPv6 address (not ``::``, not ``::1``) written like one: with digits."""
    if not any(c.isdigit() for c in text):
        return False
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return False
    if address.is_loopback or address.is_unspecified:
        return False
    groups = [g for g in text.split(":") if g]
    return len(groups) >= 3 or (len(groups) >= 2 and len(text) >= 6)


def jwt_header_valid(segment: str) -> bool:
    """The first part of a JWT: base64url of a JSON object with a string ``alg``."""
    return _b64_json_object(segment, require="alg")


def jwt_payload_json(segment: str) -> bool:
    return _b64_json_object(segment, require=None)


def _b64_json_object(segment: str, *, require: str | None) -> bool:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        obj = json.loads(raw)
    except ValueError:  # binascii.Error, UnicodeDecodeError, JSONDecodeError
        return False
    if not isinstance(obj, dict):
        return False
    return require is None or isinstance(obj.get(require), str)


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``'s own character distribution."""
    n = len(value)
    if n < 2:
        return 0.0
    counts = Counter(value).values()
    # added left to right (sum() compensates on Python >= 3.12): the native scanner
    # adds the same way, so both agree to the last bit at a threshold
    if n < len(_C_LOG_C):
        total = functools.reduce(operator.add, map(_C_LOG_C.__getitem__, counts), 0.0)
    else:
        total = functools.reduce(operator.add, (c * math.log2(c) for c in counts), 0.0)
    return math.log2(n) - total / n


# c * log2(c), tabulated: entropy = log2(n) - sum(c log2 c) / n
_C_LOG_C = [0.0] + [c * math.log2(c) for c in range(1, 4097)]
_log2 = math.log2


def entropy_at_least(value: str, bits: float) -> bool:
    """``shannon_entropy(value) >= bits``, mostly decided from the number of distinct
    characters alone: ``k`` distinct characters give at most ``log2(k)`` bits and at
    least the entropy of one character repeated and ``k - 1`` singletons."""
    n = len(value)
    k = len(set(value))
    if k < 2 or _log2(k) < bits:
        return False
    if n < len(_C_LOG_C) and _log2(n) - _C_LOG_C[n - k + 1] / n >= bits:
        return True
    if 128 <= n < len(_C_LOG_C):
        # Long values (JWTs, base64 blobs) repeat characters too often for that bound,
        # but entropy is concave: the whole has at least the length-weighted mean of
        # its halves' entropies, and each half is bounded the same way. (The margin
        # keeps the answer the exact computation's despite rounding.)
        half = n // 2
        first, second = value[:half], value[half:]
        m = n - half
        lower = (
            half * _log2(half)
            - _C_LOG_C[half - len(set(first)) + 1]
            + m * _log2(m)
            - _C_LOG_C[m - len(set(second)) + 1]
        ) / n
        if lower >= bits + 1e-9:
            return True
    return shannon_entropy(value) >= bits


def char_classes(value: str) -> int:
    """How many of lower case, upper case, digits and other characters occur."""
    if value.isascii():
        # ASCII: "other" is anything but [0-9A-Za-z], which str.isalnum() decides
        return (
            (value != value.upper())
            + (value != value.lower())
            + (_DIGIT.search(value) is not None)
            + (not value.isalnum())
        )
    return (
        (value != value.upper())
        + (value != value.lower())
        + (_DIGIT.search(value) is not None)
        + (_OTHER.search(value) is not None)
    )


def digit_count(value: str) -> int:
    return len(_DIGIT.findall(value))


_DIGIT = re.compile(r"[0-9]")
_OTHER = re.compile(r"[^0-9A-Za-z]")


def nanp_valid(area: str, exchange: str) -> bool:
    """North American Numbering Plan: NXX area and exchange, no N11 service codes."""
    return (
        area[0] in "23456789"
        and exchange[0] in "23456789"
        and area[1:] != "11"
        and exchange[1:] != "11"
    )


# ITU-T E.164 country calling codes. One digit: 1 and 7; two digits listed; three
# digits: every code under the listed two-digit prefixes.
_CC2 = frozenset(
    [
        "20",
        "27",
        "30",
        "31",
        "32",
        "33",
        "34",
        "36",
        "39",
        "40",
        "41",
        "43",
        "44",
        "45",
        "46",
        "47",
        "48",
        "49",
        "51",
        "52",
        "53",
        "54",
        "55",
        "56",
        "57",
        "58",
        "60",
        "61",
        "62",
        "63",
        "64",
        "65",
        "66",
        "81",
        "82",
        "84",
        "86",
        "90",
        "91",
        "92",
        "93",
        "94",
        "95",
        "98",
    ]
)
_CC3_PREFIXES = frozenset(
    [
        "21",
        "22",
        "23",
        "24",
        "25",
        "26",
        "29",
        "35",
        "37",
        "38",
        "42",
        "50",
        "59",
        "67",
        "68",
        "69",
        "85",
        "87",
        "88",
        "96",
        "97",
        "99",
    ]
)
# National significant number lengths where they are fixed or narrow.
_NSN_LENGTHS: dict[str, tuple[int, int]] = {
    "1": (10, 10), "7": (10, 10), "33": (9, 9), "34": (9, 9), "31": (9, 9), "44": (9, 10),
    "49": (6, 13), "61": (9, 9), "81": (9, 10), "86": (10, 11), "91": (10, 10),
    "39": (6, 11), "41": (9, 9), "43": (7, 13), "32": (8, 9), "46": (7, 10),
    "353": (7, 9), "55": (10, 11), "52": (10, 10), "65": (8, 8), "64": (8, 10),
}  # fmt: skip


def country_code_split(digits: str) -> tuple[str, tuple[int, int]] | None:
    """Split E.164 digits (no ``+``) into the calling code and the allowed NSN lengths."""
    if not digits or digits[0] == "0":
        return None
    if digits[0] in "17":
        cc = digits[0]
    elif digits[:2] in _CC2:
        cc = digits[:2]
    elif digits[:2] in _CC3_PREFIXES:
        cc = digits[:3]
    else:
        return None
    return cc, _NSN_LENGTHS.get(cc, (6, 12))
