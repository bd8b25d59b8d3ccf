"""Small pieces the review's stages share: the request tuple they pass on, the
progress callback, the missing-value marker, and the base context of a generated
request (the sweep varies it; the replay probes each side's schema with it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .._inputs import call_context

_SWEEP_SUBJECT = "sweep"
# a Wednesday, 12:30 UTC: the base the sweep varies hour and weekday from
_SWEEP_BASE_TIME = 1_763_555_400.0

ProgressFn = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: called now and then during a long review."""


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


class _Request(NamedTuple):  # a tuple: made once per record, so cheap to build
    subject: str | None
    roles: tuple[str, ...]
    attributes: Mapping[str, Any]
    action: str
    model: str | None  # None: the Api resource (actions that are not about one model)
    context: Mapping[str, Any]


def _base_context(level: str = "public") -> dict[str, Any]:
    return call_context(
        level=level,
        findings=(),
        max_tokens=0,
        stream=False,
        started_at=_SWEEP_BASE_TIME,
        auth="jwt",
        certificate_bound=True,
        cert_sha256=None,
        source_ip="127.0.0.1",
    )
