"""Re-identification of API responses: put the originals of this call's placeholders
back into a JSON body or an SSE stream before the caller sees them.

Only generated text is touched: ``message.content``/``reasoning_content`` and tool-call
arguments of chat completions, ``text`` of FIM completions, and the same fields of
their streamed deltas. A placeholder split across SSE events is held back until it is
complete (see :class:`~secure_ds.dlp._redact.StreamReidentifier`), and released, at
the latest, with the choice's ``finish_reason``.
"""

from __future__ import annotations

import json
from typing import Any

from ._redact import Reidentifier, StreamReidentifier

__all__ = ["SSEReidentifier", "reidentify_body"]

_DELTA_FIELDS = ("content", "reasoning_content")


def reidentify_body(body: bytes, reidentifier: Reidentifier) -> bytes:
    """The JSON body with placeholders replaced; unchanged if it is not such a body."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    choices = parsed.get("choices") if isinstance(parsed, dict) else None
    if not isinstance(choices, list):
        return body
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            choice["text"] = reidentifier.apply(choice["text"])
        message = choice.get("message")
        if isinstance(message, dict):
            _apply_fields(message, reidentifier)
    return json.dumps(parsed, ensure_ascii=False, separators=(",", ":")).encode()


def _apply_fields(message: dict[str, Any], reidentifier: Reidentifier) -> None:
    for field in _DELTA_FIELDS:
        if isinstance(message.get(field), str):
            message[field] = reidentifier.apply(message[field])
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            function["arguments"] = reidentifier.apply(function["arguments"])


class SSEReidentifier:
    """Rewrites an SSE byte stream event by event (one instance per response)."""

    def __init__(self, reidentifier: Reidentifier) -> None:
        self._reidentifier = reidentifier
        self._buffer = b""
        self._texts: dict[tuple[int, str], StreamReidentifier] = {}

    def feed(self, data: bytes) -> bytes:
        """Complete events in ``data`` (plus what was buffered), rewritten."""
        self._buffer += data.replace(b"\r\n", b"\n")
        out: list[bytes] = []
        while (end := self._buffer.find(b"\n\n")) >= 0:
            event, self._buffer = self._buffer[: end + 2], self._buffer[end + 2 :]
            out.append(self._event(event))
        return b"".join(out)

    def flush(self) -> bytes:
        """An unfinished last event, as received (the stream broke off)."""
        rest, self._buffer = self._buffer, b""
        return rest

    def _event(self, event: bytes) -> bytes:
        if not event.startswith(b"data:"):
            return event  # comments (": keep-alive"), blank lines
        payload = event[5:].strip()
        if payload == b"[DONE]":
            return event
        try:
            parsed = json.loads(payload)
        except ValueError:
            return event
        choices = parsed.get("choices") if isinstance(parsed, dict) else None
        if not isinstance(choices, list) or not choices:
            return event
        for choice in choices:
            if isinstance(choice, dict):
                self._choice(choice)
        return b"data: " + json.dumps(parsed, ensure_ascii=False).encode() + b"\n\n"

    def _choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        index = index if isinstance(index, int) else 0
        finished = choice.get("finish_reason") is not None
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for field in _DELTA_FIELDS:
                self._field(delta, field, index, finished)
        elif "text" in choice:
            self._field(choice, "text", index, finished)

    def _field(self, holder: dict[str, Any], field: str, index: int, finished: bool) -> None:
        value = holder.get(field)
        key = (index, field)
        stream = self._texts.get(key)
        if isinstance(value, str):
            if stream is None:
                stream = self._texts[key] = StreamReidentifier(self._reidentifier)
            value = stream.feed(value)
        if finished and stream is not None:
            value = (value or "") + stream.flush()
        if isinstance(value, str):
            holder[field] = value
