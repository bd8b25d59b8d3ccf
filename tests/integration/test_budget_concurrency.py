"""The SQLite ledger under real concurrency: several OS processes (spawned, so each
has its own interpreter and connection) reserving and settling against one file must
never together pass a hard limit, never lose an update, and leave spend that a new
ledger on the same file (a restart) still sees."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from secure_ds.cost._ledger import BudgetLimit, SQLiteLedger
from tests._ledger_workers import KEY, NOW, WORKERS, reserve_and_settle, reserve_only
from tests._processes import SPAWN, run_workers

pytestmark = pytest.mark.integration


def _crash_holding(path: str, limit: str) -> None:
    ledger = SQLiteLedger(path)
    ledger.reserve([BudgetLimit(KEY, Decimal(limit))], Decimal("0.25"), 30, NOW)
    os._exit(1)  # die without settling or closing, as a killed caller would


def test_processes_never_reserve_past_the_limit(tmp_path: Path) -> None:
    path = str(tmp_path / "meter.db")
    # 240 attempts of $0.007 against $1.00: exactly 142 fit (142 * 0.007 = 0.994)
    won = run_workers(reserve_only, [(("sqlite", path), "1.00", "0.007")] * WORKERS)
    assert sum(won) == 142
    balance = SQLiteLedger(path).balance(KEY, NOW)
    assert balance.reserved == Decimal("0.007") * 142 <= Decimal("1.00")


def test_concurrent_settlements_lose_nothing_and_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "meter.db")
    charged = run_workers(
        reserve_and_settle, [(("sqlite", path), "0.5", w) for w in range(WORKERS)]
    )
    restarted = SQLiteLedger(path)  # a new process's view of the same file
    balance = restarted.balance(KEY, NOW)
    # every settlement landed exactly once (no lost update), nothing is left reserved
    assert balance.spent == sum((Decimal(c) for c in charged), Decimal(0))
    assert balance.reserved == Decimal(0)
    assert Decimal(0) < balance.spent <= Decimal("0.5")
    restarted.close()


def test_a_crashed_callers_reservation_expires(tmp_path: Path) -> None:
    path = str(tmp_path / "meter.db")
    proc = SPAWN.Process(target=_crash_holding, args=(path, "1.00"))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 1
    ledger = SQLiteLedger(path)
    assert ledger.balance(KEY, NOW + 29).reserved == Decimal("0.25")  # committed before it died
    assert ledger.balance(KEY, NOW + 30).reserved == Decimal(0)  # its ttl has passed
    limits = [BudgetLimit(KEY, Decimal("1.00"))]
    assert ledger.reserve(limits, Decimal("1.00"), 30, NOW + 31).reservation is not None
    ledger.close()
