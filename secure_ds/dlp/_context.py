"""The text being scanned, plus the cheap byte views the detectors search instead.

Python's regex engine spends roughly a tenth of a microsecond every time it *starts*
a match attempt, so a pattern that may start at any digit (or any upper-case letter)
costs that much per digit of the text: on log-like text, more than everything else
the scan does. The views here move that work into single C calls:

* ``raw``: the text as Latin-1 bytes, one byte per code point (anything outside
  Latin-1 becomes ``?``), so byte offsets *are* character offsets;
* ``low``: ``raw`` lower-cased (ASCII only), for case-insensitive keyword search
  with ``bytes.find``, which skips through text far faster than a regex scan;
* ``tokens``: ``raw`` with token characters (``[A-Za-z0-9_.-]``) mapped to ``a``
  and the rest to a space, so that long tokens are long runs of one byte;
* ``heads``: a space followed by ``tokens``, but with the first characters of vendor
  token prefixes (``e`` of ``eyJ``, ``g`` of ``ghp_`` ...) mapped to ``b``;
* ``skeleton``: a space followed by ``raw`` with every digit mapped to ``1``,
  ASCII letters and ``_`` to ``a``/``A``, ``.,+-`` kept and every other byte to a
  space. A number that starts after a word boundary is then the two-byte literal
  ``" 1"``, and a pattern that begins with a literal of two bytes or more is
  searched for in C without starting a match attempt at every digit.

All views are built lazily, once per scan (the skeleton and heads views together, from
one copy of the text with its leading space), with C-speed ``bytes`` methods.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, AnyStr, Protocol

from ._native import ScanText

#: a native scanner's row: (kind, or None for a candidate handed back; start; end;
#: confidence; which keyword or pattern branch a handed-back candidate came from)
NativeRow = tuple[str | None, int, int, float, int]


class NativeScanner(Protocol):
    def scan(self, text: ScanText) -> list[Any]:
        """The rows, flattened: five items each (see ``native/src/lib.rs``, ``flat``)."""
        ...


__all__ = ["Context", "literal_hits"]


def _skeleton_table() -> bytes:
    table = bytearray(b" " * 256)
    for b in range(256):
        c = chr(b)
        if "0" <= c <= "9":
            table[b] = ord("1")
        elif "a" <= c <= "z" or c == "_":
            table[b] = ord("a")
        elif "A" <= c <= "Z":
            table[b] = ord("A")
        elif c in ".,+-":
            table[b] = b
    return bytes(table)


_SKELETON = _skeleton_table()
_TOKENS = bytes(
    ord("a") if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "_.-") else ord(" ")
    for b in range(256)
)

#: The first characters of the vendor-token heads in :mod:`~secure_ds.dlp._tokens`
#: (which checks that it covers them all).
HEAD_FIRST_CHARS = "AGSeghnrsx"
_HEADS = bytes(ord("b") if chr(b) in HEAD_FIRST_CHARS else _TOKENS[b] for b in range(256))


class Context:
    """One scan's text and its lazily built byte views (see the module docstring)."""

    __slots__ = (
        "_heads",
        "_low",
        "_native_text",
        "_raw",
        "_skeleton",
        "_tokens",
        "native",
        "text",
    )

    def __init__(self, text: str, *, native: bool = True) -> None:
        self.text = text
        #: whether detectors with a native fast path (``secure_ds._native``) may use it
        self.native = native
        self._native_text: ScanText | None = None
        self._raw: bytes | None = None
        self._low: bytes | None = None
        self._skeleton: bytes | None = None
        self._tokens: bytes | None = None
        self._heads: bytes | None = None

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self.text.encode("latin-1", "replace")
        return self._raw

    @property
    def low(self) -> bytes:
        if self._low is None:
            self._low = self.raw.lower()
        return self._low

    @property
    def skeleton(self) -> bytes:
        """``skeleton[i + 1]`` describes ``text[i]``; so a match of ``b" 1..."`` at
        ``i`` is a number starting at ``text[i]``."""
        if self._skeleton is None:
            self._skeleton, self._heads = self._spaced_views()
        return self._skeleton

    @property
    def tokens(self) -> bytes:
        """``raw`` with ``[A-Za-z0-9_.-]`` mapped to ``a`` and every other byte to a
        space: a run of ``a`` is a token, and ``tokens[i]`` describes ``text[i]``."""
        if self._tokens is None:
            self._tokens = self.raw.translate(_TOKENS)
        return self._tokens

    @property
    def heads(self) -> bytes:
        """A space, then ``tokens`` with the characters of ``HEAD_FIRST_CHARS`` mapped
        to ``b``: ``heads[i + 1]`` describes ``text[i]``, and a run of 20+ token
        characters that may start a vendor token is the literal `` b`` and 19 more."""
        if self._heads is None:
            self._skeleton, self._heads = self._spaced_views()
        return self._heads

    def _spaced_views(self) -> tuple[bytes, bytes]:
        """The skeleton and the heads view, built together: every scan uses both
        (numbers and IBANs the one, tokens and secrets the other), and one copy of the
        text with its leading space then serves the two."""
        spaced = b" " + self.raw
        return spaced.translate(_SKELETON), spaced.translate(_HEADS)

    def native_rows(
        self, scanner_of: Callable[[], NativeScanner | None]
    ) -> Iterator[NativeRow] | None:
        """The rows of the native scanner ``scanner_of()`` gives, or None where the
        detector's Python code must run: when ``native`` is off, the extension is not
        built (``scanner_of()`` is None), or the text is not valid Unicode (a lone
        surrogate cannot cross into Rust as UTF-8; such broken input is scanned in
        Python).

        The text crosses once per scan: every native detector reads the same
        ``ScanText`` (its Latin-1 view, built in Rust)."""
        if not self.native:
            return None
        scanner = scanner_of()
        if scanner is None:
            return None
        if self._native_text is None:
            try:
                self._native_text = ScanText(self.text)
            except UnicodeEncodeError:
                self.native = False  # the other detectors need not try again
                return None
        flat = iter(scanner.scan(self._native_text))
        return zip(flat, flat, flat, flat, flat, strict=True)  # five items per row

    def before(self, pos: int, width: int) -> str:
        """The ``width`` characters before ``pos``, lower-cased (for context words)."""
        return self.text[max(0, pos - width) : pos].lower()


def literal_hits(
    haystack: AnyStr, needle: AnyStr, pattern: re.Pattern[AnyStr]
) -> Iterator[re.Match[AnyStr]]:
    """``pattern.match`` at each occurrence of ``needle`` (where the pattern starts).

    ``bytes.find``/``str.find`` skip through text much faster than the regex engine
    scans for a literal prefix, and the pattern runs only where it can match.
    """
    i = haystack.find(needle)
    while i >= 0:
        m = pattern.match(haystack, i)
        if m is not None and m.end() > i:
            yield m
            i = haystack.find(needle, m.end())
        else:
            i = haystack.find(needle, i + 1)
