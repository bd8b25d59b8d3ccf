"""Scan results of texts seen before: a chat resends its whole history on every call.

A conversation of N turns sends turn 1 N times, turn 2 N - 1 times, and so on, so
without a cache the DLP stage scans O(N²) text over a conversation, and an agent
whose context holds 200 KB of tool output pays ~15 ms of scanning on each call here
even when only its last message is new. :class:`ScanCache` keeps the
:class:`~secure_ds.dlp.ScanResult` of each text it scanned, so a text the client sent
before costs one hash instead of a scan.

What it holds, and why that is safe to keep in memory:

* the key is a 128-bit BLAKE2b digest of the text, keyed with a random key made for
  this cache (a memory dump yields no digest anyone can test guesses against
  elsewhere), never the text;
* the value is the scan result: kinds, offsets, confidences and the classification,
  never the values found (a :class:`~secure_ds.dlp.Finding` does not hold one);
* it is bound to one scanner: a cache answers only for the scanner it was built with
  (a changed rule set is a new scanner, so a new cache), and results are the
  scanner's own (:class:`ScanResult` is immutable, so sharing it is safe).

A hit returns the result the scanner gave for an identical text (identical up to a
BLAKE2b collision); the tests hold the cached and the uncached stage to the same
records and the same redactions. A lookup costs ~3 µs here, a scan ~30 µs for a few
words and ~80 µs for 1 KB of dense text (with the native fast paths); texts under
``min_chars`` (a word or two: "ok", "thanks") are scanned every time rather than fill
the cache. The cache keeps the
most recently used ``max_entries`` results (LRU), and at most ``max_findings`` findings
in all (~80 bytes each: 200,000 are ~16 MB), so pasted logs full of addresses cannot
grow it without bound; a result with more findings than that is not kept.
``max_entries=0`` turns the cache off.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections import OrderedDict

from ._model import ScanResult
from ._scanner import Scanner

__all__ = ["ScanCache"]


class ScanCache:
    """``scan(text)`` as ``scanner.scan(text)`` gives it, remembered by text digest."""

    def __init__(
        self,
        scanner: Scanner,
        *,
        max_entries: int = 4096,
        min_chars: int = 32,
        max_findings: int = 200_000,
    ) -> None:
        if max_entries < 0 or min_chars < 0 or max_findings < 0:
            raise ValueError("max_entries, min_chars and max_findings are zero or more")
        self.scanner = scanner
        self.max_entries = max_entries
        self.min_chars = min_chars
        self.max_findings = max_findings
        self._held = 0  # findings in the kept results
        self.hits = 0
        self.misses = 0
        self._key = secrets.token_bytes(32)
        self._results: OrderedDict[bytes, ScanResult] = OrderedDict()
        self._lock = threading.Lock()

    def scan(self, text: str) -> ScanResult:
        if self.max_entries == 0 or len(text) < self.min_chars:
            return self.scanner.scan(text)
        # "surrogatepass": a text with lone surrogates still has a digest (the scanner
        # takes such text too); equal digests still mean equal code points
        digest = hashlib.blake2b(
            text.encode("utf-8", "surrogatepass"), digest_size=16, key=self._key
        ).digest()
        with self._lock:
            result = self._results.get(digest)
            if result is not None:
                self._results.move_to_end(digest)
                self.hits += 1
                return result
        # Scanned outside the lock: two threads may both scan a new text, and the
        # second result replaces the first (they are equal).
        result = self.scanner.scan(text)
        size = len(result.findings)
        with self._lock:
            self.misses += 1
            if size > self.max_findings:
                return result
            replaced = self._results.pop(digest, None)
            if replaced is not None:
                self._held -= len(replaced.findings)
            self._results[digest] = result
            self._held += size
            while len(self._results) > self.max_entries or self._held > self.max_findings:
                _, dropped = self._results.popitem(last=False)
                self._held -= len(dropped.findings)
        return result

    def __len__(self) -> int:
        return len(self._results)
