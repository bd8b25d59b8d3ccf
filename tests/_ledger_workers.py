"""Ledger workers for the multi-process tests, the same for every ledger: each opens
its own ledger from a spec (``("sqlite", path)`` or ``("redis", url, namespace)``) in
its own process, waits at the barrier so the workers really contend, and reports."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from secure_ds.cost._ledger import BudgetLimit, Ledger, SQLiteLedger

KEY = "org:acme:day:2026-11-28"
NOW = 1_795_867_200.0  # 2026-11-28 12:00 UTC; one fixed time so nothing expires mid-test
WORKERS = 4
ATTEMPTS = 60


def open_ledger(spec: tuple[str, ...]) -> Ledger:
    kind, *args = spec
    if kind == "sqlite":
        return SQLiteLedger(args[0])
    from secure_ds.cost._ledger_redis import RedisLedger

    return RedisLedger(args[0], namespace=args[1], clock="caller")  # NOW is fixed


def reserve_only(spec: tuple[str, ...], limit: str, amount: str, barrier: Any, out: Any) -> None:
    """Reserve ``amount`` against ``limit`` ATTEMPTS times; report how many won."""
    ledger = open_ledger(spec)
    barrier.wait()
    won = 0
    for _ in range(ATTEMPTS):
        result = ledger.reserve([BudgetLimit(KEY, Decimal(limit))], Decimal(amount), 900, NOW)
        won += result.reservation is not None
    ledger.close()
    out.put(won)


def reserve_and_settle(
    spec: tuple[str, ...], limit: str, worker: int, barrier: Any, out: Any
) -> None:
    """Reserve, then release (a failed call) or settle below the worst case, settling
    twice (a retried settle charges nothing); report the exact total charged."""
    ledger = open_ledger(spec)
    barrier.wait()
    charged = Decimal(0)
    for i in range(ATTEMPTS):
        amount = Decimal("0.0105") + Decimal(worker) / 1000
        result = ledger.reserve([BudgetLimit(KEY, Decimal(limit))], amount, 900, NOW)
        if result.reservation is None:
            continue
        if i % 3 == 0:
            ledger.release(result.reservation)  # a failed call: nothing spent
        else:
            actual = amount * 2 / 5  # the real cost is below the worst case (and exact)
            ledger.settle(result.reservation, actual)
            ledger.settle(result.reservation, actual)
            charged += actual
    ledger.close()
    out.put(str(charged))
