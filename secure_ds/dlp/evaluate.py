"""Measure a scanner against labelled text: precision, recall and F1 per kind.

Used by the evaluation test (``tests/dlp/test_evaluation.py``) and the benchmark
(``bench/bench_dlp.py``), so both report the same numbers. A finding is a true
positive when a label of the same kind overlaps it; a label is found when a finding
of its kind overlaps it. Precision counts findings, recall counts labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._model import KINDS, Finding
from ._scanner import Scanner

__all__ = ["evaluate", "false_positives_per_100kb", "mismatches"]


def _spans(labels: Iterable[Mapping[str, Any]]) -> list[tuple[str, int, int]]:
    return [(str(label["kind"]), int(label["start"]), int(label["end"])) for label in labels]


def _overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start < b_end and b_start < a_end


def evaluate(scanner: Scanner, docs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per kind: ``tp`` (labels found), ``fp`` (findings matching no label), ``fn``
    (labels missed), ``precision``, ``recall``, ``f1``. Every built-in kind is present,
    plus any other kind that occurs in the labels or the findings."""
    found_labels: dict[str, int] = {}
    missed: dict[str, int] = {}
    correct: dict[str, int] = {}
    wrong: dict[str, int] = {}
    for doc in docs:
        labels = _spans(doc.get("labels", ()))
        findings = scanner.scan(str(doc["text"])).findings
        for kind, start, end in labels:
            hit = any(f.kind == kind and _overlaps(f.start, f.end, start, end) for f in findings)
            bucket = found_labels if hit else missed
            bucket[kind] = bucket.get(kind, 0) + 1
        for f in findings:
            ok = any(k == f.kind and _overlaps(f.start, f.end, s, e) for k, s, e in labels)
            bucket = correct if ok else wrong
            bucket[f.kind] = bucket.get(f.kind, 0) + 1
    kinds = list(KINDS) + sorted(
        (set(found_labels) | set(missed) | set(correct) | set(wrong)) - set(KINDS)
    )
    report: dict[str, dict[str, float]] = {}
    for kind in kinds:
        tp, fn = found_labels.get(kind, 0), missed.get(kind, 0)
        good, fp = correct.get(kind, 0), wrong.get(kind, 0)
        precision = good / (good + fp) if good + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        report[kind] = {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
    return report


def false_positives_per_100kb(scanner: Scanner, text: str) -> float:
    """Findings per 100 KB (100,000 bytes of UTF-8) of ``text``, which is assumed to
    hold nothing sensitive: every finding is a false positive."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if not size:
        return 0.0
    return len(scanner.scan(text).findings) * 100_000 / size


def mismatches(
    scanner: Scanner, doc: Mapping[str, Any]
) -> tuple[list[Finding], list[tuple[str, int, int]]]:
    """The false positives and the missed labels of one document (for debugging)."""
    labels = _spans(doc.get("labels", ()))
    findings = scanner.scan(str(doc["text"])).findings
    fps = [
        f
        for f in findings
        if not any(k == f.kind and _overlaps(f.start, f.end, s, e) for k, s, e in labels)
    ]
    fns = [
        (k, s, e)
        for k, s, e in labels
        if not any(f.kind == k and _overlaps(f.start, f.end, s, e) for f in findings)
    ]
    return fps, fns
