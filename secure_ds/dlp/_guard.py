"""DLP in the guard chain: scan every text of a request (*classify*), and carry out
``block:`` and ``redact:`` obligations (*enforce*).

Texts are found wherever a request can carry them: every message's content (string
or text parts) whatever its role, assistant tool-call arguments, and the FIM prompt
and suffix. The audit record gets kinds and counts only, never values.

Obligation syntax (from a policy, or from ``SECURE_DS_DLP_BLOCK`` /
``SECURE_DS_DLP_REDACT``):

* ``block:<kinds>`` — deny the call if any finding is of one of ``kinds``;
* ``redact:<kinds>`` — replace those findings with typed placeholders;
* ``redact:<kinds>:reversible`` — the same, and put the originals back into the
  response before the caller sees it (the map stays in memory for the call only).

``<kinds>`` is a comma-separated list of kind names, or ``*`` for every kind.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._cache import ScanCache
from ._redact import Redactor, Reidentifier

if TYPE_CHECKING:
    from ..guard._call import Call, Classification
    from . import Scanner, ScanResult

__all__ = ["DLPClassifier", "DLPRefusal", "TextSlot", "apply_dlp_obligation", "text_slots"]

_LEVELS = ("public", "internal", "confidential", "secret")


@dataclass(frozen=True)
class TextSlot:
    """One place in the request body that holds text: ``container[key]``."""

    container: Any
    key: str
    where: str  # e.g. "messages[2].content" (for messages; never the text)

    @property
    def text(self) -> str:
        value = self.container[self.key]
        return value if isinstance(value, str) else ""


def text_slots(action: str, body: dict[str, Any] | None) -> list[TextSlot]:
    if body is None:
        return []
    if action == "fim":
        return [TextSlot(body, k, k) for k in ("prompt", "suffix") if isinstance(body.get(k), str)]
    messages = body.get("messages")
    if action not in ("chat", "stream") or not isinstance(messages, list):
        return []
    return list(_message_slots(messages))


def _message_slots(messages: list[Any]) -> Iterator[TextSlot]:
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield TextSlot(message, "content", f"messages[{i}].content")
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    yield TextSlot(part, "text", f"messages[{i}].content[{j}].text")
        for j, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                yield TextSlot(function, "arguments", f"messages[{i}].tool_calls[{j}].arguments")


class DLPClassifier:
    """The *classify* stage: scans every text slot; keeps the results on the call for
    the enforcer, and returns the classification (highest level found) with counts.

    Results are remembered for ``cache_entries`` texts (:class:`ScanCache`; 0 turns it
    off), so the history a chat resends on every call is not scanned again."""

    def __init__(self, scanner: Scanner, *, cache_entries: int = 4096) -> None:
        self.scanner = scanner
        self.cache = ScanCache(scanner, max_entries=cache_entries)

    def classify(self, call: Call) -> Classification:
        from ..guard._call import Classification

        results: list[tuple[TextSlot, ScanResult]] = []
        counts: dict[str, int] = {}
        level = 0
        for slot in text_slots(call.action, call.body):
            result = self.cache.scan(slot.text)
            results.append((slot, result))
            for kind, n in result.counts().items():
                counts[kind] = counts.get(kind, 0) + n
            level = max(level, _LEVELS.index(result.classification))
        call.dlp = results
        return Classification(
            engine="dlp", level=_LEVELS[level], findings=tuple(sorted(counts.items()))
        )


class DLPRefusal(Exception):
    """A DLP obligation denies the call (block) or cannot be carried out."""


def apply_dlp_obligation(call: Call, obligation: str) -> None:
    """Carry out ``block:``/``redact:`` on the call's body, or raise :class:`DLPRefusal`."""
    verb, _, rest = obligation.partition(":")
    kinds_text, _, flag = rest.partition(":")
    if not kinds_text or flag not in ("", "reversible") or (flag and verb != "redact"):
        raise DLPRefusal(f"obligation {obligation!r} is malformed")
    kinds = None if kinds_text == "*" else frozenset(k.strip() for k in kinds_text.split(","))
    if call.dlp is None:
        raise DLPRefusal(
            f"obligation {obligation!r} needs the DLP classifier, which is not enabled "
            "(set SECURE_DS_DLP=detect)"
        )
    if verb == "block":
        found = _found(call, kinds)
        if found:
            listed = ", ".join(f"{k} ({n})" for k, n in sorted(found.items()))
            raise DLPRefusal(f"the request contains {listed}, which {obligation} forbids")
        return
    redactor = Redactor(slot.text for slot, _ in call.dlp)
    for slot, result in call.dlp:
        if result.findings:
            new = redactor.redact(slot.text, result.findings, kinds)
            if new != slot.text:
                slot.container[slot.key] = new
                call.body_changed = True
    if redactor.counts:
        listed = ",".join(f"{k}={n}" for k, n in sorted(redactor.counts.items()))
        call.enforcement.append(f"{obligation} [{listed}]")
    else:
        call.enforcement.append(obligation)
    if flag == "reversible" and redactor.mapping:
        previous = call.reidentifier.mapping if call.reidentifier else {}
        call.reidentifier = Reidentifier({**previous, **redactor.mapping})


def _found(call: Call, kinds: frozenset[str] | None) -> dict[str, int]:
    found: dict[str, int] = {}
    for _, result in call.dlp or ():
        for finding in result.findings:
            if kinds is None or finding.kind in kinds:
                found[finding.kind] = found.get(finding.kind, 0) + 1
    return found
