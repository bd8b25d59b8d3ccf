"""Data-loss prevention: find structured sensitive data in text before it leaves.

``default_scanner().scan(text)`` returns a :class:`ScanResult`: the findings (kind,
character span, confidence, detector; never the value) and a classification for the
text. Built-in kinds (:data:`KINDS`): ``email``, ``phone``, ``credit_card``,
``iban``, ``us_ssn``, ``ip_address``, ``jwt``, ``private_key``, ``aws_access_key``,
``aws_secret_key``, ``github_token``, ``slack_token``, ``api_key``, ``secret``.
Each detector validates what its pattern found (Luhn, IBAN mod-97 with per-country
lengths, SSA rules for SSNs, ``ipaddress``, the JOSE header of a JWT, vendor key
formats, entropy plus a context word for generic secrets), which is what keeps false
positives down on technical text. ``Scanner.from_config(path)`` adds user-defined
regex patterns and term dictionaries (see :mod:`secure_ds.dlp._config`).

Classification (the level of the most sensitive finding):

* ``secret``: any ``private_key``, ``aws_secret_key``, ``aws_access_key``,
  ``github_token``, ``slack_token``, ``api_key``, ``jwt`` or ``secret``;
* ``confidential``: otherwise any ``credit_card``, ``us_ssn``, ``iban``, ``email``
  or ``phone``;
* ``internal``: only ``ip_address`` findings;
* ``public``: no findings.

A user-defined rule declares its own level in the config file.

Overlaps: when findings overlap, the one with the higher confidence is kept, then the
longer span, then the more sensitive kind; no two findings cover the same character.
Offsets are into the ``str`` that was scanned (code points, not bytes).

``ScanCache(scanner).scan(text)`` answers a text it has seen from memory (a keyed
digest of the text, never the text): the guard chain's classify stage uses one, so
the history a chat resends on every call is scanned once.

What is deliberately *not* reported: loopback, unspecified and netmask addresses
(``127.0.0.1``, ``0.0.0.0``, ``::1``, ``255.255.255.0``), dotted version numbers
written as such (``version 1.2.3.4``), values assigned to secret-looking names that
are placeholders or code (``${DB_PASSWORD}``, ``os.environ["TOKEN"]``, ``<your-key>``).
"""

from __future__ import annotations

from ._cache import ScanCache
from ._config import CustomRule, DLPConfigError
from ._model import KINDS, Classification, Finding, ScanResult
from ._scanner import Scanner, default_scanner

__all__ = [
    "KINDS",
    "Classification",
    "CustomRule",
    "DLPConfigError",
    "Finding",
    "ScanCache",
    "ScanResult",
    "Scanner",
    "default_scanner",
]
