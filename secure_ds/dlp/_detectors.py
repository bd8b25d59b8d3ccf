"""The built-in detectors: e-mail, phone, card, SSN, IBAN, IP; and the registry of all.

Why it is written this way: the scanner sits in front of every API call, so it has to
be fast in pure Python and stay linear on hostile input.

* Every search starts where a match can start, found in C: a literal regex prefix
  (``@``, ``+``, ``(``, ``::``), or a two-byte literal in the byte skeleton of
  :mod:`~secure_ds.dlp._context` (``" 1"`` where a number starts, ``AA11`` where an
  IBAN can), so the regex engine does not start an attempt at every digit or
  capital letter.
* Right after the first character a fixed-width look-behind rejects positions inside
  a word, and repetitions are bounded and possessive (``{1,64}+``), so no pattern
  backtracks more than a constant amount per position.
* What a pattern cannot decide (checksums, registries, context words, entropy) is
  checked in Python, for the few candidates the patterns let through.

Vendor tokens and keys are in :mod:`secure_ds.dlp._tokens`, context-dependent
secrets (``password = ...``) in :mod:`secure_ds.dlp._secrets`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ._context import Context
from ._model import Finding
from ._native import EmailScanner, IbanScanner, Ipv6Scanner, NumberScanner
from ._native import available as native_available
from ._secrets import find_secrets
from ._tokens import find_private_keys, find_slack_webhooks, find_tokens
from ._validators import (
    card_brand,
    country_code_split,
    iban_length,
    iban_lengths,
    iban_valid,
    ipv4_reportable,
    ipv6_reportable,
    luhn_valid,
    nanp_valid,
    ssn_valid,
)

__all__ = ["BUILTIN_DETECTORS", "Detector"]

_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@dataclass(frozen=True, slots=True)
class Detector:
    """One family of detectors: ``find`` runs only if a trigger occurs in the text."""

    name: str
    find: Callable[[Context], Iterator[Finding]]
    triggers: tuple[str, ...] = ()  # substrings of the text; () means always run


def _has_any(words: tuple[str, ...], window: str) -> bool:
    return any(w in window for w in words)


# ---------------------------------------------------------------- email ---

_EMAIL_DOMAIN = re.compile(r"@([A-Za-z0-9\-]{1,63}+(?:\.[A-Za-z0-9\-]{1,63}+){1,8}+)")
_LOCAL_REVERSED = re.compile(r"[A-Za-z0-9._%+\-]{1,65}+")
_WHITESPACE = re.compile(r"\s")  # str.isspace(), character by character, in C
_NOT_TLDS = frozenset(
    [
        "png",
        "jpg",
        "jpeg",
        "gif",
        "svg",
        "webp",
        "ico",
        "bmp",
        "tif",
        "tiff",
        "js",
        "mjs",
        "cjs",
        "ts",
        "tsx",
        "jsx",
        "css",
        "scss",
        "map",
        "json",
        "lock",
        "yaml",
        "yml",
        "toml",
        "ini",
        "cfg",
        "conf",
        "txt",
        "log",
        "md",
        "rst",
        "py",
        "pyc",
        "rs",
        "go",
        "java",
        "kt",
        "class",
        "jar",
        "c",
        "h",
        "cc",
        "cpp",
        "hpp",
        "sh",
        "bash",
        "zsh",
        "ps1",
        "bat",
        "exe",
        "dll",
        "so",
        "dylib",
        "o",
        "a",
        "whl",
        "egg",
        "tar",
        "gz",
        "tgz",
        "bz2",
        "xz",
        "zip",
        "rar",
        "pdf",
        "doc",
        "docx",
        "xls",
        "xlsx",
        "csv",
        "tsv",
        "html",
        "htm",
        "xml",
        "sql",
        "db",
        "sqlite",
        "bin",
        "dat",
        "tmp",
        "bak",
        "old",
        "swp",
        "pem",
        "crt",
        "key",
        "der",
        "p12",
        "pfx",
        "mp3",
        "mp4",
        "wav",
        "mov",
        "avi",
        "woff",
        "woff2",
        "ttf",
        "otf",
        "eot",
    ]
)


def find_emails(ctx: Context) -> Iterator[Finding]:
    text = ctx.text
    rows = ctx.native_rows(_native_email)
    if rows is None:
        for m in _EMAIL_DOMAIN.finditer(text):
            found = _email(text, m)
            if found is not None:
                yield found
        return
    for kind, start, end, confidence, _ in rows:
        if kind is not None:
            yield Finding(kind, start, end, confidence, kind)
            continue
        # handed back: a URL scheme before it, with non-ASCII text in between
        again = _EMAIL_DOMAIN.match(text, start)
        found = None if again is None else _email(text, again)
        if found is not None:
            yield found


def _email(text: str, m: re.Match[str]) -> Finding | None:
    """The checks for one domain match: the local part before the ``@``, not a URL's
    credentials, a real top-level domain, not a path or a longer word."""
    at = m.start()
    lm = _LOCAL_REVERSED.match(text[max(0, at - 65) : at][::-1])
    if lm is None or lm.end() > 64:
        return None
    start = at - lm.end()
    while start < at and text[start] in ".-+":
        start += 1
    local = text[start:at]
    if not local or local[-1] == "." or ".." in local:
        return None
    # user:password@host inside a URL is a credential, not an address
    scheme = text.rfind("://", max(0, start - 256), start)
    if scheme >= 0 and _WHITESPACE.search(text, scheme, start) is None:
        return None
    domain = m.group(1)
    tld = domain.rpartition(".")[2]
    if not (2 <= len(tld) <= 24 and (tld.isalpha() or tld.startswith("xn--"))):
        return None
    # a label that is empty or starts or ends with "-", on the whole domain at once
    if tld.lower() in _NOT_TLDS or (
        domain[0] in ".-"
        or domain[-1] in ".-"
        or ".." in domain
        or ".-" in domain
        or "-." in domain
    ):
        return None
    end = m.end()
    if end < len(text) and text[end] == ":" and text[end + 1 : end + 2] not in ("", " "):
        return None  # git@host:org/repo, user@host:/path
    if end < len(text) and text[end] in _WORD:
        return None
    return Finding("email", start, end, 0.95, "email")


# ------------------------------------------------------- numeric formats ---

# Every format that starts with a digit, in one pattern. ``\d``, ``[1-9]``, ``W``
# (word character) and ``S`` (space, inside a class) are filled in twice: for the
# real text, and for the skeleton (see _context), where every digit is ``1`` and the
# pattern starts with the literal ``" 1"`` and a quick look-ahead that drops short
# numbers. The skeleton pattern accepts a superset; the real one then decides.
_NUMERIC_BODY = r"""
    (?:
        (?P<card>
            \d{3}(?P<cs>[S\-])\d{4}(?P=cs)\d{4}(?P=cs)\d{4}(?:(?P=cs)\d{1,3})?
          | \d{3}(?P<xs>[S\-])\d{6}(?P=xs)\d{4,5}
          | \d{12,18}
        )
      | (?P<ssn>\d{2}-\d{2}-\d{4})
      | (?P<nanp>
            \d{2}(?P<ns>[\-.])\d{3}(?P=ns)\d{4}
          | (?<=1)(?P<n1>[\-.S])\d{3}(?P=n1)\d{3}(?P=n1)\d{4}
        )
      | (?P<ipv4>\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3})
      | (?P<ctx>\d{2}[S]\d{3}[S]\d{4}|\d{2}[S]\d{2}[S]\d{4}|\d{8}\d?)
      | (?P<nat0>(?<=0)[1-9]\d{0,3}(?:[S/\-]\d{2,8}){1,4})
    )
    (?!W|[.\-]\d)
"""
if _NUMERIC_BODY.rindex("(?P<") != _NUMERIC_BODY.index("(?P<nat0>"):
    raise AssertionError("find_numbers relies on nat0 being the last branch")
_NUMERIC = re.compile(
    r"[0-9](?<![0-9A-Za-z_.,+\-][0-9])"
    + _NUMERIC_BODY.replace(r"\d", "[0-9]").replace("W", "[0-9A-Za-z_]").replace("S", r"\ "),
    re.VERBOSE,
)
_NUMERIC_SKELETON = re.compile(
    (
        # the look-ahead: the first characters some format needs, so that years,
        # times, dates and small counts fail at once. It is the alternation
        #   1{7} | 11[-. /]1 | 1{0,2}\.1{1,3}\. | 111[ -/]111 | 1111[ -/]11
        #   | [-. ]111[-. ] | 1 11 11 11
        # factored by leading characters, so that a short number (most of the
        # thousands of numbers per MB) fails after a branch or two, not seven
        r"\ 1(?=1(?:1(?:1{5}|\.1{1,3}\.|[\-.\ /]1|1[\ \-/]111|11[\ \-/]11)"
        r"|\.1{1,3}\.|\ 11\ 11\ 11)|\.1{1,3}\.|[\-.\ ]111[\-.\ ])"
        + _NUMERIC_BODY.replace(r"\d", "1")
        .replace("[1-9]", "1")
        .replace("(?<=0)", "(?<=1)")
        .replace("W", "[1aA]")
        .replace("S", r"\ ")
    ).encode(),
    re.VERBOSE,
)
# card alternatives with separators, and the NANP alternative with a "-"/"." separator
_SK_CS, _SK_XS, _SK_NS = (_NUMERIC_SKELETON.groupindex[g] for g in ("cs", "xs", "ns"))
_INTL_PHONE = re.compile(
    r"\+(?<![0-9A-Za-z_+]\+)[1-9]"
    r"(?:[0-9]|[\ .\-]?\(0\)\ ?|[\ .\-/]?\(?[0-9]{1,5}\)?){2,20}+"
    r"(?![0-9A-Za-z_]|[.\-][0-9])"
)
_PAREN_PHONE = re.compile(
    r"\((?<![0-9A-Za-z_]\()[2-9][0-9]{2}\)\ ?[2-9][0-9]{2}[\-.\ ][0-9]{4}"
    r"(?![0-9A-Za-z_]|[.\-][0-9])"
)
_NON_DIGITS = re.compile(r"[^0-9]+")
_SEPARATOR = re.compile(r"[ /\-]")
_HEX_PAIR_AFTER = re.compile(r" [0-9A-Fa-f]{2}(?![0-9A-Za-z])")
_HEX_PAIR_BEFORE = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f]{2} \Z")

_PHONE_WORDS = (
    "phone", "tel", "mobile", "cell", "call", "fax", "contact", "whatsapp", "sms",
    "reach", "mob", "landline", "dial", "hotline", "ph:", "ph.",
)  # fmt: skip
_SSN_WORDS = ("ssn", "social security", "ss#", "ss #", "social sec", "taxpayer", "tin:")
_CARD_WORDS = (
    "card", "visa", "mastercard", "amex", "american express", "discover", "credit",
    "debit", "cc", "pan", "payment", "jcb", "diners", "cvv", "expir",
)  # fmt: skip
_ID_WORDS = (
    "order", "invoice", "tracking", "trace", "txn", "transaction", "id", "ref",
    "request", "ticket", "#", "no.", "serial", "sku", "build",
)  # fmt: skip
_VERSION_BEFORE = re.compile(r"(?:version|release|build|firmware|\bver|agent|rev)[\s:=#v.]*$")
if _VERSION_BEFORE.pattern.count("\\s") != _VERSION_BEFORE.pattern.count("[\\s"):
    raise AssertionError("_native_numbers spells out \\s inside a class only")


def find_numbers(ctx: Context) -> Iterator[Finding]:
    """Cards, SSNs, national phone formats and IPv4 addresses: one pass."""
    rows = ctx.native_rows(_native_numbers)
    if rows is None:
        yield from _numbers(ctx)
        return
    # the same findings in the same order; the native scanner hands back the
    # candidates whose context window is not ASCII (Python lower-cases it by Unicode
    # rules), decided here
    text = ctx.text
    for kind, start, end, confidence, branch in rows:
        if kind is not None:
            yield Finding(kind, start, end, confidence, kind)
        else:
            found = _validate(ctx, _BRANCHES[branch], start, end, text[start:end])
            if found is not None:
                yield found


# the pattern's branches, in the order secure_ds._native numbers them
_BRANCHES = ("card", "ssn", "nanp", "ipv4", "ctx", "nat0")


@functools.cache
def _native_numbers() -> NumberScanner | None:
    """``_numbers`` in Rust, with this module's word lists; None if not built."""
    if not native_available():
        return None
    return NumberScanner(
        list(_PHONE_WORDS),
        list(_SSN_WORDS),
        list(_CARD_WORDS),
        list(_ID_WORDS),
        # str.isspace() counts \x1c-\x1f, Unicode's White_Space (the regex crate's
        # \s) does not; the native side sees ASCII windows only
        _VERSION_BEFORE.pattern.replace(r"\s", r"\t\n\x0b\x0c\r\x1c-\x1f "),
    )


def _numbers(ctx: Context) -> Iterator[Finding]:
    """``find_numbers`` in Python: the reference the native scanner follows."""
    text = ctx.text
    resume = 0
    for candidate in _NUMERIC_SKELETON.finditer(ctx.skeleton):
        start = candidate.start()
        if start < resume:
            continue
        # Each branch of the skeleton pattern accepts a superset of the same branch
        # of the real one, so when only the last branch (``nat0``) matched the
        # skeleton, only it can match the text, and it needs a leading 0: a run of
        # numbers such as "401 716" is dropped without the real pattern.
        kind = candidate.lastgroup
        if kind == "nat0" and text[start] != "0":
            continue
        # Where the skeleton matched through an alternative written only with digits,
        # "-" and "." (which the skeleton keeps as they are), the text matches the same
        # alternative with the same span, and the real pattern need not run.
        if (
            kind == "ipv4"
            or kind == "ssn"
            or (kind == "card" and candidate.start(_SK_CS) < 0 and candidate.start(_SK_XS) < 0)
            or (kind == "nanp" and candidate.start(_SK_NS) >= 0)
        ):
            end = resume = candidate.end() - 1  # skeleton[i + 1] describes text[i]
            value = text[start:end]
        else:
            m = _NUMERIC.match(text, start)
            if m is None:
                continue
            end = resume = m.end()
            value = m.group()
            kind = m.lastgroup
        found = _validate(ctx, kind, start, end, value)
        if found is not None:
            yield found


def _validate(ctx: Context, kind: str | None, start: int, end: int, value: str) -> Finding | None:
    """The checks for the pattern branch ``kind`` that matched ``value``."""
    if kind == "card":
        return _card(ctx, start, end, value)
    if kind == "ssn":
        return _ssn(ctx, start, end, value, dashed=True)
    if kind == "nanp":
        return _nanp(ctx, start, end, value)
    if kind == "ipv4":
        return _ipv4(ctx, start, end, value)
    if kind == "ctx":
        return _needs_context(ctx, start, end, value)
    return _national_phone(ctx, start, end, value)


def _card(ctx: Context, start: int, end: int, value: str) -> Finding | None:
    plain = value.isdigit()
    digits = value if plain else _NON_DIGITS.sub("", value)
    if card_brand(digits) is None or not luhn_valid(digits):
        return None
    if not plain:
        return Finding("credit_card", start, end, 0.97, "credit_card")
    # no separators: could be any long identifier, so look at the words before it
    window = ctx.before(start, 32)
    has_card_word = _has_any(_CARD_WORDS, window)
    if not has_card_word and _has_any(_ID_WORDS, window):
        return None
    return Finding("credit_card", start, end, 0.95 if has_card_word else 0.85, "credit_card")


def _ssn(ctx: Context, start: int, end: int, value: str, *, dashed: bool) -> Finding | None:
    digits = _NON_DIGITS.sub("", value)
    if len(digits) != 9 or not ssn_valid(digits[:3], digits[3:5], digits[5:]):
        return None
    context = _has_any(_SSN_WORDS, ctx.before(start, 40))
    if not dashed and not context:
        return None
    return Finding("us_ssn", start, end, 0.95 if context else 0.85, "us_ssn")


def _nanp(ctx: Context, start: int, end: int, value: str) -> Finding | None:
    digits = _NON_DIGITS.sub("", value)
    if len(digits) == 11:
        digits = digits[1:]
    if not nanp_valid(digits[:3], digits[3:6]):
        return None
    if " " in value and not _has_any(_PHONE_WORDS, ctx.before(start, 40)):
        return None
    return Finding("phone", start, end, 0.85, "phone")


def _ipv4(ctx: Context, start: int, end: int, value: str) -> Finding | None:
    if not ipv4_reportable(value):
        return None
    window = ctx.before(start, 24)
    # every word _VERSION_BEFORE knows contains one of these (firmware, release, rev: "re")
    if ("ver" in window or "re" in window or "build" in window or "agent" in window) and (
        _VERSION_BEFORE.search(window)
    ):
        return None
    return Finding("ip_address", start, end, 0.9, "ip_address")


def _national_phone(ctx: Context, start: int, end: int, value: str) -> Finding | None:
    """UK (0xx xxxx xxxx, 07xxx xxxxxx), French (0x xx xx xx xx), German (0xxx xxxxxxx)."""
    groups = _SEPARATOR.split(value)
    if len(set(_SEPARATOR.findall(value, len(groups[0]) + 1))) > 1:
        return None
    sizes = [len(g) for g in groups]
    total = sum(sizes)
    fr = sizes == [2, 2, 2, 2, 2]
    uk = total == 11 and 3 <= sizes[0] <= 5 and len(sizes) in (2, 3) and min(sizes[1:]) >= 3
    de = len(sizes) == 2 and 3 <= sizes[0] <= 5 and 10 <= total <= 12 and sizes[1] >= 5
    if not (fr or uk or de):
        return None
    text = ctx.text
    if _HEX_PAIR_AFTER.match(text, end) or _HEX_PAIR_BEFORE.search(text, max(0, start - 3), start):
        return None  # a run of byte values in a hex dump
    context = _has_any(_PHONE_WORDS, ctx.before(start, 40))
    return Finding("phone", start, end, 0.9 if context else 0.75, "phone")


def _needs_context(ctx: Context, start: int, end: int, value: str) -> Finding | None:
    """Formats too common in other data to report without a context word."""
    digits = value.replace(" ", "")
    if len(digits) == 9 and (len(value) == 9 or (value[3] == " " and value[6] == " ")):
        return _ssn(ctx, start, end, value, dashed=False)
    if (
        len(digits) == 10
        and nanp_valid(digits[:3], digits[3:6])
        and _has_any(_PHONE_WORDS, ctx.before(start, 40))
    ):
        return Finding("phone", start, end, 0.8, "phone")
    return None


def find_intl_phones(ctx: Context) -> Iterator[Finding]:
    """E.164-style numbers: ``+`` country code, national number, common separators."""
    text = ctx.text
    for m in _INTL_PHONE.finditer(text):
        found = _intl(m.start(), m.group())
        if found is not None:
            yield found


def _intl(start: int, raw: str) -> Finding | None:
    if raw.count("(") != raw.count(")"):
        return None
    # Try the whole run, then shorter prefixes ending at a group boundary (the run
    # may have swallowed a following number).
    for cut in range(len(raw), 1, -1):
        if not raw[cut - 1].isdigit() or (cut < len(raw) and raw[cut].isdigit()):
            continue
        candidate = raw[:cut]
        digits = _NON_DIGITS.sub("", candidate.replace("(0)", ""))
        split = country_code_split(digits)
        if split is None:
            return None
        cc, (lo, hi) = split
        nsn = digits[len(cc) :]
        if len(digits) > 15 or not lo <= len(nsn) <= hi:
            continue
        if cc == "1" and not nanp_valid(nsn[:3], nsn[3:6]):
            continue
        if candidate.count("(") != candidate.count(")"):
            continue
        return Finding("phone", start, start + cut, 0.9, "phone")
    return None


def find_paren_phones(ctx: Context) -> Iterator[Finding]:
    """``(415) 555-0132``: the parenthesised NANP area code."""
    for m in _PAREN_PHONE.finditer(ctx.text):
        digits = _NON_DIGITS.sub("", m.group())
        if nanp_valid(digits[:3], digits[3:6]):
            yield Finding("phone", m.start(), m.end(), 0.9, "phone")


# ----------------------------------------------------------------- IBAN ---

_IBAN = re.compile(
    r"[A-Z](?<![A-Za-z0-9_][A-Z])[A-Z][0-9]{2}(?:\ ?[A-Z0-9]{4}){2,7}+(?:\ ?[A-Z0-9]{1,3})?"
)
_IBAN_SKELETON = re.compile(rb"AA11(?<![1aA]AA11)")
# the first ``n`` characters that are not spaces (the IBAN pattern has single spaces)
_IBAN_OF_LENGTH: dict[int, re.Pattern[str]] = {
    n: re.compile(rf"[A-Z0-9](?:\ ?[A-Z0-9]){{{n - 1}}}") for n in range(2, 40)
}


def find_ibans(ctx: Context) -> Iterator[Finding]:
    rows = ctx.native_rows(_native_iban)
    if rows is None:
        yield from _ibans(ctx)
        return
    for _, start, end, confidence, _ in rows:  # all decided natively
        yield Finding("iban", start, end, confidence, "iban")


def _ibans(ctx: Context) -> Iterator[Finding]:
    """``find_ibans`` in Python: the reference the native scanner follows."""
    text = ctx.text
    for candidate in _IBAN_SKELETON.finditer(ctx.skeleton):
        m = _IBAN.match(text, candidate.start() - 1)
        if m is None:
            continue
        value = m.group()
        length = iban_length(value[:2])
        if length is None:
            continue
        # take exactly the country's length; the pattern may run into a next word
        exact = _IBAN_OF_LENGTH[length].match(value)
        if exact is None:
            continue  # fewer characters than the country's length
        end = m.start() + exact.end()
        if end < len(text) and text[end] in _WORD:
            continue
        if iban_valid(text[m.start() : end].replace(" ", "")):
            yield Finding("iban", m.start(), end, 0.97, "iban")


# ----------------------------------------------------------------- IPv6 ---

_V6_TRIGGER = re.compile(r"::|:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:")
_V6_BACK = re.compile(r"[0-9A-Fa-f:]{0,39}+")
_V6_FORWARD = re.compile(r"[0-9A-Fa-f:.]{0,45}+")
_V6_BEFORE = _WORD | {".", ":"}


def find_ipv6(ctx: Context) -> Iterator[Finding]:
    rows = ctx.native_rows(_native_ipv6)
    if rows is None:
        yield from _ipv6(ctx)
        return
    text = ctx.text
    for _, start, end, _, _ in rows:  # candidates: the ipaddress module decides
        if ipv6_reportable(text[start:end]):
            yield Finding("ip_address", start, end, 0.9, "ip_address")


def _ipv6(ctx: Context) -> Iterator[Finding]:
    """``find_ipv6`` in Python: the reference the native scanner follows."""
    text = ctx.text
    pos = 0
    while True:
        m = _V6_TRIGGER.search(text, pos)
        if m is None:
            return
        at = m.start()
        back = _V6_BACK.match(text[max(0, at - 39) : at][::-1])
        start = at - (back.end() if back else 0)
        forward = _V6_FORWARD.match(text, at)
        end = forward.end() if forward else m.end()
        pos = max(end, m.end())
        while end > start and text[end - 1] in ".:" and not text[start:end].endswith("::"):
            end -= 1
        if start > 0 and text[start - 1] in _V6_BEFORE:
            continue
        if end < len(text) and text[end] in _WORD:
            continue
        candidate = text[start:end]
        if "::" not in candidate and all(len(g) == 2 for g in candidate.split(":")):
            continue  # MAC-style octets
        if ipv6_reportable(candidate):
            yield Finding("ip_address", start, end, 0.9, "ip_address")


@functools.cache
def _native_email() -> EmailScanner | None:
    """``find_emails`` in Rust, with ``_NOT_TLDS``; None if not built."""
    return EmailScanner(sorted(_NOT_TLDS)) if native_available() else None


@functools.cache
def _native_iban() -> IbanScanner | None:
    """``_ibans`` in Rust, with the registry's lengths; None if not built."""
    return IbanScanner(iban_lengths()) if native_available() else None


@functools.cache
def _native_ipv6() -> Ipv6Scanner | None:
    """``_ipv6``'s candidate search in Rust; None if not built."""
    return Ipv6Scanner() if native_available() else None


BUILTIN_DETECTORS: tuple[Detector, ...] = (
    Detector("email", find_emails, ("@",)),
    Detector("numbers", find_numbers),
    Detector("intl_phone", find_intl_phones, ("+",)),
    Detector("paren_phone", find_paren_phones, ("(",)),
    Detector("iban", find_ibans),
    Detector("ipv6", find_ipv6, (":",)),
    Detector("tokens", find_tokens),
    Detector("private_key", find_private_keys, ("-----BEGIN ",)),
    Detector("slack_webhook", find_slack_webhooks, ("hooks.slack.com/",)),
    Detector("secret", find_secrets),
)
