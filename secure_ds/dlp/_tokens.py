"""Credentials with a recognisable shape: JWTs, PEM private keys, vendor API keys.

Each vendor format starts with its own prefix (``eyJ``, ``AKIA``/``ASIA``, ``ghp_``,
``github_pat_``, ``xoxb-``, ``sk-``, ``sk_live_``, ``AIza``, ``glpat-``, ``SG.``,
``npm_``, ``hf_``) and is a run of at least 20 characters from ``[A-Za-z0-9_.-]``.
Instead of one search per prefix, a single pass over the token view of the text
(see :mod:`~secure_ds.dlp._context`) finds every such run, and a table keyed by the
run's first three characters hands it to the format's own pattern and checks:

* JWT: three base64url parts, the first decoding to a JSON object with ``alg``;
* AWS: ``AKIA``/``ASIA`` and 16 upper-case base32 characters; a 40-character
  base64 string right after one is its secret access key;
* GitHub: classic (``ghp_`` and 36 characters) or fine-grained (``github_pat_``);
* Slack: ``xox?-`` with numeric segments, ``xapp-``; webhook URLs separately;
* ``api_key``: ``sk-`` keys (OpenAI, DeepSeek, Anthropic, OpenRouter), Stripe
  secret/restricted keys, Google ``AIza``, GitLab, SendGrid, npm, Hugging Face;
  the random part must look random (digits, entropy, not hyphenated words).

PEM private keys (``-----BEGIN ... PRIVATE KEY-----`` to its ``-----END``) and
Slack webhook URLs are found with ``find`` on their fixed markers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator

from ._context import HEAD_FIRST_CHARS, Context, literal_hits
from ._model import Finding
from ._native import TokenScanner
from ._native import available as native_available
from ._secrets import aws_secret_shape
from ._validators import (
    char_classes,
    digit_count,
    entropy_at_least,
    jwt_header_valid,
    jwt_payload_json,
)

__all__ = ["find_private_keys", "find_slack_webhooks", "find_tokens"]

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")

_JWT = re.compile(
    r"eyJ[A-Za-z0-9_\-]{4,4000}+\.([A-Za-z0-9_\-]{2,10000}+)\.[A-Za-z0-9_\-]{0,4000}+"
    r"(?![A-Za-z0-9_\-])"
)
_AWS_KEY_ID = re.compile(r"A(?:KIA|SIA)[A-Z0-9]{16}(?![A-Za-z0-9])")
_BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
_AWS_SECRET_NEAR = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_GITHUB = re.compile(
    r"(?:gh[pousr]_[A-Za-z0-9]{36,251}+|github_pat_[A-Za-z0-9_]{50,255}+)(?![A-Za-z0-9_])"
)
_SLACK = re.compile(r"(?:xox[abposre]|xapp)-[0-9A-Za-z\-]{10,250}+")
_SK_KEY = re.compile(r"sk-[A-Za-z0-9_\-]{20,250}+")
_SK_PREFIXES = ("proj-", "ant-", "or-", "svcacct-", "admin-")
_STRIPE = re.compile(r"[sr]k_(?:live|test)_[A-Za-z0-9]{20,247}+(?![A-Za-z0-9_])")
_GOOGLE = re.compile(r"AIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])")
_GITLAB = re.compile(r"glpat-[A-Za-z0-9_\-]{20}(?![A-Za-z0-9_\-])")
_SENDGRID = re.compile(r"SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}(?![A-Za-z0-9_\-])")
_NPM = re.compile(r"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])")
_HUGGINGFACE = re.compile(r"hf_[A-Za-z]{34,40}+(?![A-Za-z0-9])")


def _random_body(body: str, *, min_len: int = 20, min_digits: int = 2) -> bool:
    if len(body) < min_len:
        return False
    if min_digits and (
        _TWO_DIGITS.search(body) is None if min_digits == 2 else digit_count(body) < min_digits
    ):
        return False
    if body.isdigit():
        return False
    parts = body.split("-")
    if len(parts) > 1 and all(p.isalpha() and p.islower() for p in parts if p):
        return False  # hyphenated words: sk-learn-...-module
    # 16 symbols give at most 4 bits, and 32 random hex digits often measure ~3.2
    return entropy_at_least(body, 2.9 if _HEX.fullmatch(body) else 3.3)


_HEX = re.compile(r"[0-9a-f]+")
_TWO_DIGITS = re.compile(r"[0-9][^0-9]*+[0-9]")


_JWT_HEADERS: dict[str, bool] = {}


def _jwt(ctx: Context, start: int) -> Iterator[Finding]:
    text = ctx.text
    m = _JWT.match(text, start)
    if m is None:
        return
    header = text[start : m.start(1) - 1]
    valid = _JWT_HEADERS.get(header)
    if valid is None:  # the same few headers come back (alg + typ): decode each once
        valid = jwt_header_valid(header)
        if len(header) <= 512:
            if len(_JWT_HEADERS) >= 1024:
                _JWT_HEADERS.clear()
            _JWT_HEADERS[header] = valid
    if not valid:
        return
    confidence = 0.97 if jwt_payload_json(m.group(1)) else 0.85
    yield Finding("jwt", start, m.end(), confidence, "jwt")


def _aws(ctx: Context, start: int) -> Iterator[Finding]:
    text = ctx.text
    m = _AWS_KEY_ID.match(text, start)
    if m is None:
        return
    confidence = 0.95 if _BASE32.issuperset(m.group()[4:]) else 0.75
    yield Finding("aws_access_key", start, m.end(), confidence, "aws_access_key")
    near = _AWS_SECRET_NEAR.search(text, m.end(), min(len(text), m.end() + 160))
    if near is not None and aws_secret_shape(near.group()):
        yield Finding("aws_secret_key", near.start(), near.end(), 0.85, "aws_secret_key")


def _github(ctx: Context, start: int) -> Iterator[Finding]:
    m = _GITHUB.match(ctx.text, start)
    if m is None:
        return
    value = m.group()
    fine_grained = value.startswith("github_pat_")
    body = value[11:] if fine_grained else value[4:]
    if char_classes(body) >= 2 and entropy_at_least(body, 3.5):
        confidence = 0.97 if fine_grained or len(value) == 40 else 0.9
        yield Finding("github_token", start, m.end(), confidence, "github_token")


def _slack(ctx: Context, start: int) -> Iterator[Finding]:
    m = _SLACK.match(ctx.text, start)
    if m is None:
        return
    parts = m.group().rstrip("-").split("-")
    if len(parts) >= 4 and parts[1].isdigit() and len(m.group()) >= 30:
        yield Finding("slack_token", start, m.end(), 0.97, "slack_token")


def _sk(ctx: Context, start: int) -> Iterator[Finding]:
    m = _SK_KEY.match(ctx.text, start)
    if m is None:
        return
    body = m.group()[3:]
    for prefix in _SK_PREFIXES:
        if body.startswith(prefix):
            body = body[len(prefix) :]
            break
    if _random_body(body):
        yield Finding("api_key", start, m.end(), 0.92, "api_key")


def _vendor(pattern: re.Pattern[str], confidence: float) -> Callable[..., Iterator[Finding]]:
    def find(ctx: Context, start: int) -> Iterator[Finding]:
        m = pattern.match(ctx.text, start)
        if m is not None and _random_body(m.group(), min_len=16, min_digits=0):
            yield Finding("api_key", start, m.end(), confidence, "api_key")

    return find


def _huggingface(ctx: Context, start: int) -> Iterator[Finding]:
    m = _HUGGINGFACE.match(ctx.text, start)
    if m is not None:
        body = m.group()[3:]  # letters only: require mixed case and variety
        if char_classes(body) >= 2 and entropy_at_least(body, 3.5):
            yield Finding("api_key", start, m.end(), 0.85, "api_key")


_Handler = Callable[[Context, int], Iterator[Finding]]
_BY_HEAD: dict[str, _Handler] = {
    "eyJ": _jwt,
    "AKI": _aws,
    "ASI": _aws,
    "ghp": _github,
    "gho": _github,
    "ghu": _github,
    "ghs": _github,
    "ghr": _github,
    "git": _github,
    "xox": _slack,
    "xap": _slack,
    "sk-": _sk,
    "sk_": _vendor(_STRIPE, 0.95),
    "rk_": _vendor(_STRIPE, 0.95),
    "AIz": _vendor(_GOOGLE, 0.9),
    "glp": _vendor(_GITLAB, 0.95),
    "SG.": _vendor(_SENDGRID, 0.95),
    "npm": _vendor(_NPM, 0.9),
    "hf_": _huggingface,
}


# In the heads view (see _context), a run of 20+ token characters that can start with a
# known head is `` b`` and 19 more: a literal prefix the regex engine finds in C, so
# most runs (dotted names, hashes, long identifiers) never reach Python.
if not {head[0] for head in _BY_HEAD} <= set(HEAD_FIRST_CHARS):
    raise AssertionError("_context.HEAD_FIRST_CHARS must cover every head in _BY_HEAD")
_HEAD_RUN = re.compile(rb" b[ab]{19}")


def find_tokens(ctx: Context) -> Iterator[Finding]:
    """Every run of 20+ token characters, dispatched on its first three characters."""
    rows = ctx.native_rows(_native_tokens)
    if rows is None:
        yield from _tokens(ctx)
        return
    # the same findings in the same order; JWT candidates come back for _jwt, whose
    # check decodes the header as JSON
    for kind, start, end, confidence, _ in rows:
        if kind is None:
            yield from _jwt(ctx, start)
        else:
            yield Finding(kind, start, end, confidence, kind)


@functools.cache
def _native_tokens() -> TokenScanner | None:
    """``_tokens`` in Rust, with this module's prefixes; None if not built."""
    if not native_available():
        return None
    return TokenScanner(HEAD_FIRST_CHARS, list(_SK_PREFIXES))


def _tokens(ctx: Context) -> Iterator[Finding]:
    """``find_tokens`` in Python: the reference the native scanner follows."""
    text = ctx.text
    by_head = _BY_HEAD
    for run in _HEAD_RUN.finditer(ctx.heads):
        start = run.start()  # heads[start + 1] describes text[start]
        handler = by_head.get(text[start : start + 3])
        if handler is not None:
            yield from handler(ctx, start)


_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]{1,40}-----")
_PEM_BODY = re.compile(r"[A-Za-z0-9+/=\s\\:,\-]{0,65536}+")
_PEM_MAX = 65536


def find_private_keys(ctx: Context) -> Iterator[Finding]:
    """From ``-----BEGIN ... PRIVATE KEY-----`` to its END line (or the end of the
    base64 body, if the key was cut off)."""
    text = ctx.text
    pos = 0
    end_at = -2  # next "-----END " at or after the current BEGIN; -1: there is none
    while (begin := text.find("-----BEGIN ", pos)) >= 0:
        m = _PEM_BEGIN.match(text, begin)
        if m is None:
            pos = begin + 1
            continue
        # one forward-moving search for END markers over the whole scan (linear even
        # for thousands of BEGIN lines without an END)
        if end_at != -1 and end_at < m.end():
            end_at = text.find("-----END ", m.end())
        end_m = None
        if 0 <= end_at <= m.end() + _PEM_MAX:
            end_m = _PEM_END.match(text, end_at)
        if end_m is not None:
            yield Finding("private_key", begin, end_m.end(), 0.99, "private_key")
            pos = end_m.end()
            continue
        body = _PEM_BODY.match(text, m.end())
        end = body.end() if body else m.end()
        while end > m.end() and text[end - 1].isspace():
            end -= 1
        yield Finding("private_key", begin, end, 0.9, "private_key")
        pos = max(end, m.end())


_SLACK_HOOK = re.compile(
    r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/\-]{20,200}+"
)


def find_slack_webhooks(ctx: Context) -> Iterator[Finding]:
    """``https://hooks.slack.com/services/T.../B.../...``: a URL that is a credential."""
    text = ctx.text
    for m in literal_hits(text, "hooks.slack.com/", _SLACK_HOOK):
        start = m.start()
        if text[max(0, start - 8) : start] == "https://":
            start -= 8
        elif text[max(0, start - 7) : start] == "http://":
            start -= 7
        yield Finding("slack_token", start, m.end(), 0.95, "slack_token")
