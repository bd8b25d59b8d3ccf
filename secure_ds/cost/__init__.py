"""Cost control: prices as data and the cost of every call (budgets, rate limits and
routing build on this)."""

from __future__ import annotations

from ._pricing import DEFAULT_PRICING, Cost, Prices, PriceTable

__all__ = ["DEFAULT_PRICING", "Cost", "PriceTable", "Prices"]
