"""The values the DLP scanner hands out: findings, scan results, classification levels.

Kept apart from the detectors and the scanner so that everything that only *consumes*
findings (the guard chain, the redactor, the CLI, the evaluation) depends on these few
frozen types and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "CLASSIFICATION_OF_KIND",
    "KINDS",
    "LEVELS",
    "Classification",
    "Finding",
    "ScanResult",
    "level_rank",
]

Classification = Literal["public", "internal", "confidential", "secret"]

#: The classification levels, lowest to highest.
LEVELS: tuple[Classification, ...] = get_args(Classification)

#: The built-in kinds, in the order the issue lists them.
KINDS: tuple[str, ...] = (
    "email",
    "phone",
    "credit_card",
    "iban",
    "us_ssn",
    "ip_address",
    "jwt",
    "private_key",
    "aws_access_key",
    "aws_secret_key",
    "github_token",
    "slack_token",
    "api_key",
    "secret",
)

#: The level a finding of each built-in kind raises a scan to.
CLASSIFICATION_OF_KIND: dict[str, Classification] = {
    "private_key": "secret",
    "aws_secret_key": "secret",
    "aws_access_key": "secret",
    "github_token": "secret",
    "slack_token": "secret",
    "api_key": "secret",
    "jwt": "secret",
    "secret": "secret",
    "credit_card": "confidential",
    "us_ssn": "confidential",
    "iban": "confidential",
    "email": "confidential",
    "phone": "confidential",
    "ip_address": "internal",
}


def level_rank(level: Classification) -> int:
    """0 for ``public`` up to 3 for ``secret``."""
    return LEVELS.index(level)


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of sensitive data: where it is, what it is, how sure we are.

    ``start``/``end`` are character offsets into the ``str`` that was scanned
    (``text[start:end]`` is the value). A finding never carries the value itself, so
    it can be logged, counted and audited without leaking what it points at.
    """

    kind: str
    start: int
    end: int
    confidence: float
    detector: str

    # Written out (dataclass keeps an __init__ the class defines) because the generated
    # one of a frozen class goes through object.__setattr__ per field, which costs
    # more than twice as much, and scans create thousands of findings. The slot
    # descriptors' __set__ bypasses the frozen __setattr__ just the same.
    def __init__(self, kind: str, start: int, end: int, confidence: float, detector: str) -> None:
        _SET_KIND(self, kind)
        _SET_START(self, start)
        _SET_END(self, end)
        _SET_CONFIDENCE(self, confidence)
        _SET_DETECTOR(self, detector)


_SET_KIND: Callable[[Finding, str], None] = Finding.__dict__["kind"].__set__
_SET_START: Callable[[Finding, int], None] = Finding.__dict__["start"].__set__
_SET_END: Callable[[Finding, int], None] = Finding.__dict__["end"].__set__
_SET_CONFIDENCE: Callable[[Finding, float], None] = Finding.__dict__["confidence"].__set__
_SET_DETECTOR: Callable[[Finding, str], None] = Finding.__dict__["detector"].__set__


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The findings of one scan (sorted by start, non-overlapping) and the level."""

    findings: tuple[Finding, ...]
    classification: Classification

    def counts(self) -> dict[str, int]:
        """Kind -> number of findings: what the audit record may hold (never values)."""
        counts: dict[str, int] = {}
        for finding in self.findings:
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
        return counts
