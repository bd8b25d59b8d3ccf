"""Cost control: prices as data and the cost of every call (budgets, rate limits and
routing build on this), and spend reports over the audit log."""

from __future__ import annotations

from ._pricing import DEFAULT_PRICING, Cost, Prices, PriceTable
from ._report import REPORT_SCHEMA, CostReport, Tally, build_report, parse_bound

__all__ = [
    "DEFAULT_PRICING",
    "REPORT_SCHEMA",
    "Cost",
    "CostReport",
    "PriceTable",
    "Prices",
    "Tally",
    "build_report",
    "parse_bound",
]
