# Type stubs for the Rust extension built from native/ (see secure_ds/dlp/_native.py).

from typing import Any

class SecretScanner:
    def __init__(
        self,
        name_block: str,
        name_block_short: str,
        key_qualifiers: str,
        placeholder: str,
        glued_prefixes: list[str],
    ) -> None: ...
    def scan(self, text: str) -> list[Any]: ...
    def placeholder(self, value: str) -> bool: ...

class NumberScanner:
    def __init__(
        self,
        phone_words: list[str],
        ssn_words: list[str],
        card_words: list[str],
        id_words: list[str],
        version_before: str,
    ) -> None: ...
    def scan(self, text: str) -> list[Any]: ...

class TokenScanner:
    def __init__(self, head_first_chars: str, sk_prefixes: list[str]) -> None: ...
    def scan(self, text: str) -> list[Any]: ...
