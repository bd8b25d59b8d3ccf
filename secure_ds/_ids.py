"""Identifiers and timestamps for audit events, cheap enough for every call.

UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, 74 random bits, so ids sort by
time. The random bits come from :mod:`random` (reseeded from the OS at start-up and in
every forked child): event ids must be unique, not unpredictable, and ``os.urandom``
costs a system call per id.
"""

from __future__ import annotations

import random
import time

__all__ = ["rfc3339_millis", "uuid7"]


def uuid7() -> str:
    ms = time.time_ns() // 1_000_000
    rand = random.getrandbits(74)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= (rand >> 62) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_last_second = -1
_last_prefix = ""


def rfc3339_millis(timestamp: float) -> str:
    """``2026-11-28T04:18:13.690Z`` (UTC, millisecond precision)."""
    global _last_second, _last_prefix
    second = int(timestamp)
    if second != _last_second:  # the date part changes once a second: format it then
        _last_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _last_second = second
    millis = int((timestamp - second) * 1000)
    return f"{_last_prefix}.{millis:03d}Z"
