"""Typed placeholders for findings, and putting the originals back into responses.

:class:`Redactor` replaces findings with placeholders such as ``<EMAIL_1>``, one per
distinct value within a call (the same address twice becomes the same placeholder, so
the model can still tell the people in a ticket apart). Numbers the caller's own text
already uses (a prompt may contain ``<EMAIL_1>`` literally) are skipped, so a
placeholder never collides with user text.

When redaction is *reversible*, the placeholder map stays in this process, in memory,
for the life of the call; :class:`Reidentifier` puts the originals back into the
response before the caller sees it, and :class:`StreamReidentifier` does the same for
text that arrives in pieces, holding back a tail that may be the start of a placeholder
split across chunks (``"<EMA"`` + ``"IL_1>"``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol

__all__ = ["PLACEHOLDER", "Redactor", "Reidentifier", "StreamReidentifier", "label_for"]

PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]{0,47})_([1-9][0-9]{0,6})>")
_LABEL_UNSAFE = re.compile(r"[^A-Z0-9_]")


class _Span(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


def label_for(kind: str) -> str:
    """``credit_card`` → ``CREDIT_CARD``; user kinds are upper-cased and made safe."""
    label = _LABEL_UNSAFE.sub("_", kind.upper()).strip("_") or "DATA"
    return label if label[0].isalpha() else f"K_{label}"


class Redactor:
    """Placeholders for one call. Not thread-safe: one instance per call."""

    def __init__(self, texts: Iterable[str] = ()) -> None:
        self._next: dict[str, int] = {}
        for text in texts:  # reserve the numbers the caller's text already uses
            for match in PLACEHOLDER.finditer(text):
                label, number = match.group(1), int(match.group(2))
                self._next[label] = max(self._next.get(label, 1), number + 1)
        self._by_value: dict[tuple[str, str], str] = {}
        self.mapping: dict[str, str] = {}  # placeholder -> original
        self.counts: dict[str, int] = {}  # kind -> findings replaced

    def redact(self, text: str, findings: Sequence[_Span], kinds: frozenset[str] | None) -> str:
        """``text`` with the findings of ``kinds`` (all when ``None``) replaced.

        ``findings`` must be sorted and non-overlapping (as a scan returns them).
        """
        out: list[str] = []
        pos = 0
        for finding in findings:
            if kinds is not None and finding.kind not in kinds:
                continue
            out.append(text[pos : finding.start])
            out.append(self._placeholder(finding.kind, text[finding.start : finding.end]))
            self.counts[finding.kind] = self.counts.get(finding.kind, 0) + 1
            pos = finding.end
        if pos == 0:
            return text
        out.append(text[pos:])
        return "".join(out)

    def _placeholder(self, kind: str, value: str) -> str:
        label = label_for(kind)
        key = (label, value)
        existing = self._by_value.get(key)
        if existing is not None:
            return existing
        number = self._next.get(label, 1)
        self._next[label] = number + 1
        placeholder = f"<{label}_{number}>"
        self._by_value[key] = placeholder
        self.mapping[placeholder] = value
        return placeholder


class Reidentifier:
    """Puts the originals back for the placeholders this call introduced (only those)."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = dict(mapping)
        self._longest = max((len(p) for p in self.mapping), default=0)

    def apply(self, text: str) -> str:
        if "<" not in text:
            return text
        return PLACEHOLDER.sub(lambda m: self.mapping.get(m.group(0), m.group(0)), text)

    def could_continue(self, tail: str) -> bool:
        """Whether ``tail`` (starting with ``<``) may be the start of a placeholder."""
        return len(tail) < self._longest and any(p.startswith(tail) for p in self.mapping)


class StreamReidentifier:
    """Re-identifies text that arrives in pieces (one instance per choice of a stream)."""

    def __init__(self, reidentifier: Reidentifier) -> None:
        self._re = reidentifier
        self._pending = ""

    def feed(self, piece: str) -> str:
        text = self._pending + piece
        self._pending = ""
        cut = text.rfind("<")
        if cut != -1 and ">" not in text[cut:] and self._re.could_continue(text[cut:]):
            self._pending = text[cut:]
            text = text[:cut]
        return self._re.apply(text)

    def flush(self) -> str:
        """What is held back, when the stream (or the choice) ends."""
        text, self._pending = self._pending, ""
        return self._re.apply(text)
