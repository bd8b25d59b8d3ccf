"""Secrets recognised by where they stand: ``password = ...``, ``Bearer ...``, URLs.

A random 32-character string is not a secret by itself (it may be a request id or a
content hash), but after ``client_secret:`` it is. This detector looks for key names
that hold credentials (password, passwd, pwd, passphrase, secret, token, credential,
``api_key`` and other ``*_key`` names, Authorization/Bearer headers, the password in
``scheme://user:password@host``) and reports the value assigned to them when:

* the name is not *about* a secret (``password_hash``, ``max_tokens``,
  ``secret_name``, ``token_url``, ``key_id`` ...);
* the value is not a placeholder or code (``${DB_PASSWORD}``, ``<your-key>``,
  ``os.environ["TOKEN"]``, ``null``, ``********``, ``changeme``);
* it looks like a credential: for password names at least 6 characters of two
  character classes; for the others at least 16 characters with digits, two classes
  and a Shannon entropy of at least 3 bits per character.

A value of exactly 40 base64 characters under an AWS name is an ``aws_secret_key``;
everything else is ``secret``. Confidence stays at 0.7-0.8, below the specific
detectors, so a recognisable token (JWT, GitHub, ``sk-``) assigned to ``token=``
keeps its own kind when overlaps are resolved.

Key names are found in the lower-cased byte view of the text, one keyword at a time
(each pattern starts with its keyword, a literal the regex engine skips to in C),
which is much faster than a case-insensitive regex scan.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator

from ._context import Context, NativeRow, literal_hits
from ._model import Finding
from ._native import SecretScanner
from ._native import available as native_available
from ._validators import char_classes, entropy_at_least

__all__ = ["aws_secret_shape", "find_secrets"]

# after the key name: the rest of the identifier, closing quotes, the operator, and a
# look-ahead that drops values shorter than any reported one (null, true, 1024)
# without leaving the regex engine
_TAIL = (
    rb"(?P<rest>[a-z0-9_.\-]{0,40}+)[\\\"'\]]{0,3}+[ \t]{0,3}+(?P<op>=>|:=|=|:|is[ \t])[ \t]{0,3}+"
    rb"(?=[\"'`]?[^\s\"'`]{6})"
)
_KEYWORDS: tuple[tuple[bytes, re.Pattern[bytes]], ...] = (
    (b"pass", re.compile(rb"pass(?:word|wd|phrase|code)?(?![a-z])" + _TAIL)),
    (b"pwd", re.compile(rb"pwd(?![a-z])" + _TAIL)),
    (b"secret", re.compile(rb"secret" + _TAIL)),
    (b"token", re.compile(rb"token(?!iz|s(?![a-z]))" + _TAIL)),
    (b"key", re.compile(rb"key" + _TAIL)),
    (b"credential", re.compile(rb"credentials?" + _TAIL)),
    (b"authorization", re.compile(rb"authorization" + _TAIL)),
    (b"bearer", re.compile(rb"bearer(?P<rest>)(?P<op>[ \t]{1,3}+)")),
)
if any(
    not pattern.pattern.startswith(keyword) or pattern.groupindex["rest"] != 1
    for keyword, pattern in _KEYWORDS
):  # find_secrets relies on the literal prefix, _assignment on the group number
    raise AssertionError("every keyword pattern starts with its keyword; rest is group 1")
_VALUE = re.compile(
    r"\"(?P<dq>[^\"\n]{1,256}+)\"|'(?P<sq>[^'\n]{1,256}+)'|`(?P<bq>[^`\n]{1,256}+)`"
    r"|(?P<bare>[^\s\"'`,;]{1,256}+)"
)
if _VALUE.groupindex["bare"] != 4:
    raise AssertionError("_assignment reads a bare value as group 4")


def _alternation(words: str) -> str:
    """A regex alternation of ``words`` grouped by first letter, so the engine
    rejects most positions after one character comparison."""
    groups: dict[str, list[str]] = {}
    for word in sorted(set(words.split()), key=len, reverse=True):
        groups.setdefault(word[0], []).append(re.escape(word[1:]))
    return "|".join(f"{re.escape(c)}(?:{'|'.join(rest)})" for c, rest in sorted(groups.items()))


# words that make a key name *about* a secret rather than holding one
_NAME_BLOCK = re.compile(
    _alternation(
        "hash length count size type name file path endpoint expir timeout field policy "
        "prompt header limit version format pattern regex mode enable required reset hint "
        "label usage tokeniz provider manager source location rotation prefix suffix "
        "question strength store vault request forgot change valid placeholder template "
        "salt keyboard keyword keystroke keyspace keychain passenger compass bypass "
        "passthrough public monkey turkey whiskey hockey jockey donkey cache partition "
        "sort primary foreign hotkey keymap keycode keyframe budget bucket"
    )
)
_NAME_BLOCK_SHORT = re.compile(
    r"(?:^|[_.\-])(?:"
    + _alternation(
        "id ids len min max ttl ref dir arn env uri url tokens keys kid fingerprint "
        "algorithm alg bits ssh pub cert crt csr"
    )
    + r")(?:$|[_.\-])"
)
_KEY_QUALIFIERS = re.compile(
    _alternation(
        "api access private secret signing encryption auth master client app service "
        "license session account bot webhook deploy admin aes hmac jwt shared"
    )
)
_GLUED_PREFIXES = (
    "_", "db", "api", "access", "auth", "client", "user", "private", "secret", "signing",
    "app", "master", "admin", "root", "service", "bot", "github", "slack", "npm",
    "session", "csrf", "refresh", "id", "mysql", "redis", "smtp", "mail", "ldap", "keystore",
)  # fmt: skip
# Compiled by the regex crate too (secure_ds._native): hence ``\#`` in the class, which
# Python reads as "#" and the regex crate's verbose mode would otherwise take for a
# comment.
_PLACEHOLDER = re.compile(
    r"""(?ix)
    \$\{?[A-Za-z_][A-Za-z0-9_.\-]*\}?
    | \$\(.*\) | %\(.*\)s? | %[A-Za-z_]+% | \{\{.*\}\} | \{[A-Za-z_]+\} | <[^<>]*> | \[[^\[\]]*\]
    | [*xX.\-_\#?•]+ | [0-9]+
    | (?:none|null|nil|true|false|yes|no|undefined|empty|unset|required|optional|string
        |changeme|change[_\-]?me|password|passwd|secret|token|redacted|removed|hidden|masked
        |dummy|test|testing|placeholder|todo|tbd|n/a|na|default|example|sample|foo|bar|baz
        |qwerty|letmein|admin|root|guest|user|secret123|password123)
    | (?:your|my|the|some|insert|enter|replace|put)[_\-\ ]?[A-Za-z_\-\ ]*
    | [A-Za-z_\-]*(?:example|placeholder|dummy|sample|redacted|changeme)[A-Za-z_\-0-9]*
    """
)
_CODE_REFERENCE = re.compile(
    r"(?:[A-Za-z_][A-Za-z0-9_]*\.)+[A-Za-z_][A-Za-z0-9_]*|[A-Za-z_]+"
)  # settings.TOKEN, os.environ, password_input
_AUTH_SCHEMES = ("bearer", "basic", "token", "digest", "bot")
_PASSWORD_KEYWORDS = (b"pass", b"pwd", b"credential")
# a value can only be a placeholder if it is short or has one of these characters
_PLACEHOLDER_HINT = re.compile(
    r"^.{0,24}$|[$%{<\[*xX•]|example|placeholder|dummy|sample|redacted|changeme", re.I
)
_AWS_NAME_HINTS = re.compile(rb"aws|secret_?access|secret-access")  # in ``low``


def _long_hint(value: str) -> bool:
    """``_PLACEHOLDER_HINT`` without its length test and its ``x``/``*`` (for ASCII).

    A placeholder longer than any of _PLACEHOLDER's fixed words has one of these, or
    is made of letters, ``_-*x#?.`` and spaces only (no digit). Plain ``in`` tests:
    several times faster than a regex search for the alternation.
    """
    if "$" in value or "%" in value or "{" in value or "<" in value or "[" in value:
        return True
    low = value.lower()
    return (
        "example" in low
        or "placeholder" in low
        or "dummy" in low
        or "sample" in low
        or "redacted" in low
        or "changeme" in low
    )


_TWO_DIGITS = re.compile(r"[0-9][^0-9]*+[0-9]")
# (keyword, identifier bytes of ``low``) -> whether the name rules it out; names
# repeat a lot
_IDENT_CACHE: dict[tuple[bytes, bytes], bool] = {}
_IDENT_CACHE_MAX = 4096


def _placeholder(value: str) -> bool:
    """``_PLACEHOLDER_HINT.search(value) and _PLACEHOLDER.fullmatch(value)``, with the
    common case (a long random ASCII value) decided without the two big patterns."""
    if not value.isascii():  # case folding of non-ASCII letters: leave it to re
        return bool(_PLACEHOLDER_HINT.search(value) and _PLACEHOLDER.fullmatch(value))
    if len(value) > 24 and not _long_hint(value):
        if "x" not in value and "X" not in value and "*" not in value:
            return False  # the hint fails
        if _DIGIT_RE.search(value) is not None:
            return False  # no alternative of _PLACEHOLDER takes a digit and an x
    return _PLACEHOLDER.fullmatch(value) is not None


_DIGIT_RE = re.compile(r"[0-9]")


def _name_rules_out(keyword: bytes, ident: str) -> bool:
    """Whether the identifier (lower-cased) is *about* a secret rather than holding one."""
    return bool(
        _NAME_BLOCK.search(ident)
        or _NAME_BLOCK_SHORT.search(ident)
        or (keyword == b"key" and not _KEY_QUALIFIERS.search(ident))
    )


_DIGIT_SLASH_PLUS = re.compile(r"[0-9/+]")


def aws_secret_shape(value: str) -> bool:
    """40 base64 characters that look random (git SHAs are lower-case hex only)."""
    if len(value) != 40:
        return False
    if value.isascii():  # the same tests, in C: upper and lower case, a digit or / +
        return (
            value != value.lower()
            and value != value.upper()
            and _DIGIT_SLASH_PLUS.search(value) is not None
            and entropy_at_least(value, 4.0)
        )
    return (
        len(value) == 40
        and any(c.isupper() for c in value)
        and any(c.islower() for c in value)
        and any(c.isdigit() or c in "/+" for c in value)
        and entropy_at_least(value, 4.0)
    )


def find_secrets(ctx: Context) -> Iterator[Finding]:
    """Values assigned to password/secret/token/key names, and URL passwords."""
    rows = ctx.native_rows(_native_secrets)
    yield from _secrets(ctx) if rows is None else _secrets_native(ctx, rows)


def _secrets(ctx: Context) -> list[Finding]:
    """``find_secrets`` in Python: the reference the native scanner follows."""
    found = _key_names(ctx)
    if "://" in ctx.text:
        found.extend(_url_credentials(ctx))
    return found


def _key_names(ctx: Context) -> list[Finding]:
    """The values assigned to key names: the reference the native scanner follows."""
    low = ctx.low
    heads = ctx.heads
    text = ctx.text
    found: list[Finding] = []
    for keyword, pattern in _KEYWORDS:
        # Every pattern starts with its keyword: a literal prefix the regex engine
        # finds in C, so finditer is the find-then-match loop without a round trip
        # through Python for each of the thousands of occurrences per MB that fail.
        for m in pattern.finditer(low):
            finding = _assignment(text, low, heads, keyword, m)
            if finding is not None:
                found.append(finding)
    return found


@functools.cache
def _native_secrets() -> SecretScanner | None:
    """``_key_names`` in Rust, with this module's word lists; None if not built."""
    if not native_available():
        return None
    return SecretScanner(
        _NAME_BLOCK.pattern,
        _NAME_BLOCK_SHORT.pattern,
        _KEY_QUALIFIERS.pattern,
        _PLACEHOLDER.pattern,
        list(_GLUED_PREFIXES),
    )


def _secrets_native(ctx: Context, rows: Iterable[NativeRow]) -> list[Finding]:
    """``_secrets``, the same findings in the same order, from the native scanner.

    It decides every candidate whose decision reads only ASCII characters and hands
    back the rest (a non-ASCII character near the key name, in the value or in a URL's
    password, whose case or whitespace-ness Python decides by Unicode rules), decided
    here with the Python code.
    """
    text = ctx.text
    found: list[Finding] = []
    for kind, start, end, confidence, tag in rows:
        if kind is not None:
            found.append(Finding(kind, start, end, confidence, kind))
            continue
        if tag == len(_KEYWORDS):  # a URL's credentials
            url = _URL_CREDENTIAL.match(text, start)
            finding = None if url is None else _url_credential(url)
        else:
            keyword, pattern = _KEYWORDS[tag]
            m = pattern.match(ctx.low, start)
            if m is None:  # cannot happen unless the two disagree: the reference decides
                return _secrets(ctx)
            finding = _assignment(text, ctx.low, ctx.heads, keyword, m)
        if finding is not None:
            found.append(finding)
    return found


def _assignment(
    text: str, low: bytes, heads: bytes, keyword: bytes, m: re.Match[bytes]
) -> Finding | None:
    kw_start = m.start()
    # a keyword glued to the end of a lower-case word (bypass, compass) is not one
    if (
        kw_start
        and text[kw_start - 1].islower()
        and text[kw_start].islower()
        and not text[max(0, kw_start - 8) : kw_start].lower().endswith(_GLUED_PREFIXES)
    ):
        return None
    # the identifier before the keyword: up to 40 token characters (the heads view has
    # a space for exactly the bytes outside [A-Za-z0-9_.-], which is [a-z0-9_.-] in
    # ``low``; heads[i + 1] describes text[i])
    floor = kw_start - 40 if kw_start > 40 else 0
    ident_start = heads.rfind(b" ", floor + 1, kw_start + 1)
    if ident_start < 0:
        ident_start = floor
    ident = low[ident_start : m.end(1)]  # group 1: the rest of the identifier
    key = (keyword, ident)
    ruled_out = _IDENT_CACHE.get(key)
    if ruled_out is None:
        ruled_out = _name_rules_out(keyword, ident.decode("latin-1"))
        if len(_IDENT_CACHE) >= _IDENT_CACHE_MAX:
            _IDENT_CACHE.clear()
        _IDENT_CACHE[key] = ruled_out
    if ruled_out:
        return None
    value_m = _VALUE.match(text, m.end())
    if value_m is None:
        return None
    group = value_m.lastindex or 4  # 1-3: quoted, 4: bare (each alternative is a group)
    v_start, v_end = value_m.span(group)
    value = text[v_start:v_end]
    bare = group == 4
    if bare and value[-1] in ".)]}>":
        stripped = value.rstrip(".)]}>")
        v_end -= len(value) - len(stripped)
        value = stripped
        if not value:
            return None
    # "Authorization: Bearer abc" -> the credential is what follows the scheme
    if (
        value[0] in "bBdDtT"
        and keyword != b"bearer"
        and value[:6].lower().startswith(_AUTH_SCHEMES)
    ):
        first, space, rest = value.partition(" ")
        if first.lower() in _AUTH_SCHEMES:
            if bare:  # the scheme alone was the bare value; the token follows
                nxt = _VALUE.match(text, v_end + 1) if text[v_end : v_end + 1] == " " else None
                if nxt is None or nxt.lastindex != 4:
                    return None
                v_start, v_end = nxt.span(4)
                value = text[v_start:v_end]
            elif space:
                v_start += len(first) + 1
                value = rest
            if not value:
                return None
    if bare and ("(" in value or "[" in value or "{" in value or _CODE_REFERENCE.fullmatch(value)):
        return None  # code: os.environ["X"], get_secret(), settings.TOKEN, password_input
    if _placeholder(value):
        return None
    n = len(value)
    if n == 40 and _AWS_NAME_HINTS.search(ident) and aws_secret_shape(value):
        return Finding("aws_secret_key", v_start, v_end, 0.9, "aws_secret_key")
    if keyword in _PASSWORD_KEYWORDS and _password_value(value):
        return Finding("secret", v_start, v_end, 0.7, "secret")
    if _high_entropy_value(value):
        return Finding("secret", v_start, v_end, 0.75, "secret")
    return None


def _password_value(value: str) -> bool:
    if not 6 <= len(value) <= 128 or " " in value:
        return False
    if len(set(value)) < 4:
        return False
    return char_classes(value) >= 2 or len(value) >= 12


def _high_entropy_value(value: str) -> bool:
    if not 16 <= len(value) <= 512 or " " in value:
        return False
    if value.startswith(("http://", "https://", "/", "./", "file:")):
        return False
    # char_classes(value) >= 2, given the digits: anything but an ASCII digit is a
    # letter of some case or an "other" character
    if _TWO_DIGITS.search(value) is None or (value.isascii() and value.isdigit()):
        return False
    return entropy_at_least(value, 3.0)


_URL_CREDENTIAL = re.compile(
    r"://(?P<user>[A-Za-z0-9._%~!$&*+=\-]{0,64}+):(?P<pw>[^\s:/@\"'<>]{1,128}+)@"
)


def _url_credentials(ctx: Context) -> Iterator[Finding]:
    for m in literal_hits(ctx.text, "://", _URL_CREDENTIAL):
        finding = _url_credential(m)
        if finding is not None:
            yield finding


def _url_credential(m: re.Match[str]) -> Finding | None:
    value = m.group("pw")
    if _PLACEHOLDER.fullmatch(value) or not _password_value(value):
        return None
    return Finding("secret", m.start("pw"), m.end("pw"), 0.8, "secret")
