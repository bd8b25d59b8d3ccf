"""Cost-aware routing: the ``route:auto`` obligation.

A policy that says ``@obligation("route:auto")`` lets secure-ds pick the model: a
prompt-complexity estimate chooses between the cheapest model of the pricing table
and the strongest (the dearest output price); the remaining budget (when a budget
meter is configured) can overrule the choice, and ``max_tokens`` is capped so the
call's worst case fits what is left. The choice and its reasons go into the record
(``enforce.applied``).

The complexity estimate is deliberately simple and explainable, a score in [0, 1]:

* length: up to 0.4, growing with the estimated prompt tokens (full at 4,000);
* reasoning cues: up to 0.35, for words that ask for analysis, proof, design or
  debugging ("step by step", "prove", "trade-off", ...);
* code: 0.15 when the prompt carries code (a fence, ``def``, ``class``, braces);
* conversation depth: up to 0.1, growing with the number of messages (full at 10).

At or above the threshold (0.5) the strong model is chosen. It is a heuristic, not a
classifier: policies that must pin a model should say ``route:<model>``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ._pricing import PriceTable

__all__ = ["Route", "Router"]

_CUES = re.compile(
    r"\b(?:prove|proof|derive|step[- ]by[- ]step|analy[sz]e|analysis|design|architect\w*|"
    r"optimi[sz]e|trade-?offs?|debug|refactor|algorithm|complexity|why|explain|compare|"
    r"evaluate|plan)\b",
    re.IGNORECASE,
)
_CODE = re.compile(r"```|^\s*(?:def|class|fn|func|function|public|import)\s|[{};]\s*$", re.M)


@dataclass(frozen=True)
class Route:
    model: str
    max_tokens: int | None  # a new cap when the call had to be made to fit the budget
    complexity: float
    note: str  # why, for the audit record


class Router:
    """Chooses the model for ``route:auto``. Immutable; share it."""

    def __init__(
        self,
        pricing: PriceTable,
        *,
        cheap: str | None = None,
        strong: str | None = None,
        threshold: float = 0.5,
        default_max_tokens: int = 8192,
    ) -> None:
        by_output = sorted(pricing.models, key=lambda m: (pricing.models[m]["off_peak"].output, m))
        self.pricing = pricing
        self.cheap = cheap or by_output[0]
        self.strong = strong or by_output[-1]
        self.threshold = threshold
        self.default_max_tokens = default_max_tokens

    def complexity(self, body: dict[str, Any]) -> float:
        text = _prompt_text(body)
        tokens = len(text.encode("utf-8", "surrogatepass")) / 3
        messages = body.get("messages")
        depth = len(messages) if isinstance(messages, list) else 1
        score = 0.4 * min(tokens / 4000, 1.0)
        score += 0.35 * min(len(_CUES.findall(text)) / 3, 1.0)
        score += 0.15 if _CODE.search(text) else 0.0
        score += 0.1 * min(depth / 10, 1.0)
        return round(min(score, 1.0), 3)

    def choose(
        self, body: dict[str, Any], remaining_usd: float | None, at: float, *, fim: bool = False
    ) -> Route:
        from ._meter import estimate_prompt_tokens  # the meter's own (conservative) estimate

        score = self.complexity(body)
        wanted = self.strong if score >= self.threshold else self.cheap
        kind = "strong" if wanted == self.strong else "cheap"
        requested = body.get("max_tokens")
        max_tokens = (
            requested if type(requested) is int and requested > 0 else self.default_max_tokens
        )
        prompt = estimate_prompt_tokens(body, fim=fim)
        if remaining_usd is None:
            return Route(wanted, None, score, f"complexity {score} -> {kind}")
        left = Decimal(str(remaining_usd))
        candidates = [wanted] if wanted == self.cheap else [wanted, self.cheap]
        for model in candidates:
            if self._worst(model, prompt, max_tokens, at) <= left:
                why = kind if model == wanted else "cheap: the strong model would not fit"
                return Route(model, None, score, f"complexity {score} -> {why}")
        # even the cheap model's worst case is over: cap its output so the call fits
        per_token = self._worst(self.cheap, 0, 1, at)
        prompt_cost = self._worst(self.cheap, prompt, 0, at)
        cap = math.floor((left - prompt_cost) / per_token) if per_token > 0 else 0
        if cap >= 1:
            return Route(
                self.cheap,
                min(cap, max_tokens),
                score,
                f"complexity {score}; capped to fit ${left} left",
            )
        return Route(self.cheap, None, score, "does not fit the budget; the meter decides")

    def _worst(self, model: str, prompt: int, output: int, at: float) -> Decimal:
        usage = {
            "prompt_tokens": prompt,
            "prompt_cache_hit_tokens": 0,
            "prompt_cache_miss_tokens": prompt,
            "completion_tokens": output,
        }
        cost = self.pricing.cost(model, usage, at)
        assert cost is not None  # both models come from the table
        return cost.usd


def _prompt_text(body: dict[str, Any]) -> str:
    parts: list[str] = []
    for key in ("prompt", "suffix"):
        if isinstance(body.get(key), str):
            parts.append(body[key])
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(
                    p["text"]
                    for p in content
                    if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
    return "\n".join(parts)
