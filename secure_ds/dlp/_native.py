"""The native fast paths of the DLP scanner (``secure_ds._native``, written in Rust).

``pip install`` compiles the extension when a Rust toolchain is present (setuptools-rust,
``native/``); without one the package installs without it and every detector runs
its Python code, which finds exactly the same: each native function follows a Python
reference in this package step by step, and the tests run both over the evaluation
corpus and fuzzed text and require identical findings. ``Scanner(native=False)``
uses the Python code even when the extension is there (the benchmark compares both).
"""

from __future__ import annotations

from types import ModuleType

__all__ = [
    "EmailScanner",
    "IbanScanner",
    "Ipv6Scanner",
    "NumberScanner",
    "ScanText",
    "SecretScanner",
    "TokenScanner",
    "available",
    "native_module",
]

native_module: ModuleType | None
try:
    from secure_ds import _native as native_module
    from secure_ds._native import (
        EmailScanner,
        IbanScanner,
        Ipv6Scanner,
        NumberScanner,
        ScanText,
        SecretScanner,
        TokenScanner,
    )
except ImportError:  # built without a Rust toolchain: the Python detectors run
    native_module = None
    NumberScanner = SecretScanner = TokenScanner = ScanText = None  # type: ignore[assignment,misc]
    EmailScanner = IbanScanner = Ipv6Scanner = None  # type: ignore[assignment,misc]


def available() -> bool:
    """Whether the native extension was built and imports."""
    return native_module is not None
