"""A wrapper that keeps secret strings out of reprs, logs and exception texts."""

from __future__ import annotations

import hmac

__all__ = ["Secret"]


class Secret:
    """Holds a secret string; only :meth:`reveal` gives it back.

    ``repr``/``str``/``format`` print a fixed mask, never a prefix or a length, so a
    secret cannot leak through logging, tracebacks (``repr`` of locals) or f-strings.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __reduce__(self) -> tuple[object, ...]:
        # Refuse pickling: a pickle would carry the secret to wherever it is written.
        raise TypeError("Secret values cannot be pickled")
