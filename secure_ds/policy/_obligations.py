"""Combine the obligations of the permits that determined a decision.

Several permits can match one call; each may carry obligations. They combine so that
the result is never weaker than any single policy asked for:

* ``cap_max_tokens:N`` — the smallest cap wins (the stricter one);
* ``redact:<kinds>[:reversible]`` — one redaction of the union of the kinds
  (``*`` absorbs the rest); reversible only if every redact obligation says so;
* ``block:<kinds>`` — one block of the union of the kinds;
* ``route:MODEL`` — two different targets cannot both be honoured: that is a
  :class:`ObligationConflict`, and the decider denies the call;
* anything else is passed on unchanged (once) for the enforce stage, which refuses
  what it does not know, turning the permit into a deny.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ObligationConflict", "merge_obligations"]


class ObligationConflict(ValueError):
    """Two obligations ask for things that cannot both be done."""


def merge_obligations(obligations: Iterable[str]) -> tuple[str, ...]:
    caps: list[int] = []
    routes: list[str] = []
    redact: set[str] = set()
    redact_reversible = True
    redact_seen = False
    block: set[str] = set()
    others: list[str] = []
    for obligation in obligations:
        verb, _, arg = obligation.partition(":")
        if verb == "cap_max_tokens" and arg.isdigit():
            caps.append(int(arg))
        elif verb == "route" and arg:
            if arg not in routes:
                routes.append(arg)
        elif verb == "redact" and arg:
            kinds, _, flag = arg.partition(":")
            if flag not in ("", "reversible"):
                others.append(obligation)
                continue
            redact_seen = True
            redact.update(k.strip() for k in kinds.split(",") if k.strip())
            redact_reversible = redact_reversible and flag == "reversible"
        elif verb == "block" and arg and ":" not in arg:
            block.update(k.strip() for k in arg.split(",") if k.strip())
        elif obligation not in others:
            others.append(obligation)
    if len(routes) > 1:
        raise ObligationConflict(
            "the matching policies route the call to different models: " + ", ".join(routes)
        )
    merged: list[str] = []
    if block:
        merged.append("block:" + _kinds(block))
    if redact_seen:
        merged.append("redact:" + _kinds(redact) + (":reversible" if redact_reversible else ""))
    if caps:
        merged.append(f"cap_max_tokens:{min(caps)}")
    merged.extend(f"route:{r}" for r in routes)
    merged.extend(others)
    return tuple(merged)


def _kinds(kinds: set[str]) -> str:
    return "*" if "*" in kinds else ",".join(sorted(kinds))
