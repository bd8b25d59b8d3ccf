"""The scanner: runs every detector over a text, resolves overlaps, classifies.

Detectors report freely, and several may claim the same characters (a JWT assigned to
``token=`` is both a ``jwt`` and a generic ``secret``; an IPv4 address embedded in an
IPv6 one is both). The scanner keeps one finding per stretch of text: the more
confident one, then the longer, then the more sensitive kind. The result is sorted by
position, never has two findings covering the same character, and carries the level
of the most sensitive kind found.
"""

from __future__ import annotations

import bisect
import functools
import operator
from collections.abc import Iterable, Sequence
from pathlib import Path

from ._config import CompiledRule, CustomRule, DLPConfigError, compile_rule, load_rules
from ._context import Context
from ._detectors import BUILTIN_DETECTORS
from ._model import (
    CLASSIFICATION_OF_KIND,
    LEVELS,
    Classification,
    Finding,
    ScanResult,
    level_rank,
)

__all__ = ["Scanner", "default_scanner", "resolve_overlaps"]

#: texts shorter than this are scanned by the Python detectors (measured crossover:
#: ~100 characters; a few words cost ~35 us either way)
NATIVE_MIN_CHARS = 128

_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class Scanner:
    """Finds sensitive data in text with the built-in detectors plus ``custom`` rules.

    Findings below ``min_confidence`` are dropped before overlaps are resolved.
    A scanner holds only compiled patterns: build it once and share it across threads.
    ``native=False`` runs every detector's Python code even where the native
    extension is built (it finds the same; see :mod:`secure_ds.dlp._native`).
    """

    def __init__(
        self,
        *,
        custom: Sequence[CustomRule] = (),
        min_confidence: float = 0.5,
        native: bool = True,
    ) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise DLPConfigError(
                "min_confidence",
                f"{min_confidence} is outside 0..1",
                fix="Use a number between 0 and 1 (default 0.5).",
            )
        names: set[str] = set()
        compiled: list[CompiledRule] = []
        for rule in custom:
            if rule.name in names:
                raise DLPConfigError(
                    rule.what,
                    "is defined twice",
                    fix="Give every rule its own name.",
                    rule=rule.name,
                )
            names.add(rule.name)
            compiled.append(compile_rule(rule))
        self.min_confidence = min_confidence
        self.native = native
        self.custom: tuple[CustomRule, ...] = tuple(custom)
        self._custom = tuple(compiled)
        self._levels: dict[str, Classification] = dict(CLASSIFICATION_OF_KIND)
        for rule in self.custom:
            self._levels[rule.name] = rule.classification

    @classmethod
    def from_config(cls, path: Path) -> Scanner:
        """The built-in detectors plus the patterns and dictionaries in ``path``."""
        return cls(custom=load_rules(Path(path)))

    def scan(self, text: str) -> ScanResult:
        """Every finding in ``text`` (offsets are into this ``str``) and its level."""
        found: list[Finding] = []
        if text:
            # below a few hundred bytes the native detectors' fixed cost (the text's
            # crossing, six calls) outweighs what they save; both find the same
            ctx = Context(text, native=self.native and len(text) >= NATIVE_MIN_CHARS)
            for detector in BUILTIN_DETECTORS:
                if detector.triggers and not any(t in text for t in detector.triggers):
                    continue
                found.extend(detector.find(ctx))
            for compiled in self._custom:
                found.extend(_custom_findings(compiled, text))
        kept = [f for f in found if f.confidence >= self.min_confidence]
        findings = resolve_overlaps(kept, self._levels)
        return ScanResult(findings, self.classify(findings))

    def classify(self, findings: Sequence[Finding]) -> Classification:
        """The highest level among the findings' kinds; ``public`` when there are none.

        A kind this scanner does not know counts as ``confidential``.
        """
        rank = 0
        levels = self._levels
        for kind in {finding.kind for finding in findings}:
            rank = max(rank, level_rank(levels.get(kind, "confidential")))
        return LEVELS[rank]


def _custom_findings(compiled: CompiledRule, text: str) -> Iterable[Finding]:
    rule = compiled.rule
    detector = f"user:{rule.name}"
    confidence = float(rule.confidence)
    n = len(text)
    for m in compiled.pattern.finditer(text):
        start, end = m.span()
        if start == end:
            continue
        if compiled.word_edges and (
            (start > 0 and text[start] in _WORD_CHARS and text[start - 1] in _WORD_CHARS)
            or (end < n and text[end - 1] in _WORD_CHARS and text[end] in _WORD_CHARS)
        ):
            continue
        yield Finding(rule.name, start, end, confidence, detector)


def resolve_overlaps(
    findings: Iterable[Finding], levels: dict[str, Classification] | None = None
) -> tuple[Finding, ...]:
    """Keep, for every stretch of text, one finding: higher confidence first, then the
    longer span, then the more sensitive kind (then the earlier start, for ties).

    Findings are sorted by start and cut into clusters of mutually overlapping ones;
    only a cluster of two or more needs the priority order (most findings overlap
    nothing, so this stays close to one sort).
    """
    levels = levels if levels is not None else CLASSIFICATION_OF_KIND
    ordered = sorted((f for f in findings if f.end > f.start), key=_START)
    out: list[Finding] = []
    cluster: list[Finding] = []
    cluster_end = -1
    for f in ordered:
        start = f.start
        if start >= cluster_end and cluster:
            if len(cluster) == 1:
                out.append(cluster[0])
            else:
                _keep_best(cluster, levels, out)
            cluster = [f]
            cluster_end = f.end
            continue
        cluster.append(f)
        end = f.end
        if len(cluster) == 1 or end > cluster_end:
            cluster_end = end
    if cluster:
        _keep_best(cluster, levels, out)
    return tuple(out)


_START = operator.attrgetter("start")
_RANK: dict[Classification, int] = {level: level_rank(level) for level in LEVELS}


def _keep_best(
    cluster: list[Finding], levels: dict[str, Classification], out: list[Finding]
) -> None:
    if len(cluster) == 1:
        out.append(cluster[0])
        return

    def priority(f: Finding) -> tuple[float, int, int, int]:
        sensitivity = _RANK[levels.get(f.kind, "confidential")]
        return (-f.confidence, -(f.end - f.start), -sensitivity, f.start)

    if len(cluster) == 2:  # the usual case (a token assigned to a secret's name): the
        # two overlap, so the better one stays (the first of equals, as sorted keeps)
        first, second = cluster
        out.append(first if priority(first) <= priority(second) else second)
        return

    starts: list[int] = []
    chosen: list[Finding] = []
    for f in sorted(cluster, key=priority):
        i = bisect.bisect_right(starts, f.start)
        if i > 0 and chosen[i - 1].end > f.start:
            continue
        if i < len(starts) and starts[i] < f.end:
            continue
        starts.insert(i, f.start)
        chosen.insert(i, f)
    out.extend(chosen)


@functools.cache
def default_scanner() -> Scanner:
    """The built-in detectors with the default confidence threshold (shared)."""
    return Scanner()
