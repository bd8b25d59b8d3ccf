"""The explicit, audited, unsafe fallback to a local ledger while Redis is down.

By default a meter whose Redis ledger cannot be reached refuses every metered call
(fail closed: a budget that cannot be checked is not enforced by letting calls
through). Some teams would rather keep working through a Redis outage and accept the
risk; ``SECURE_DS_METER_FALLBACK=local-unsafe`` says so, and :class:`FallbackLedger`
does it.

**Why it is unsafe.** While Redis is unreachable each process meters against its own
empty in-memory ledger: every process gets a full budget of its own, spend from before
the outage is not seen, and spend during it never reaches Redis. N processes can
together spend N times a limit. This is the price of availability, so it is never the
default, and every call metered this way says so in its audit record
(``metering.details.ledger_fallback``) and its metering reason.

Invariants:

1. **Redis first.** A call is metered locally only after Redis failed (for this call,
   or for one less than ``retry_s`` seconds ago: an outage must not cost every call a
   connect timeout). After ``retry_s`` the next call tries Redis again.
2. **A call ends where it began.** A reservation made locally is settled or released
   locally, one made in Redis in Redis, whichever is up when the call finishes.
3. **Never silent.** Each admission made locally carries the reason Redis was not used
   (:attr:`~._ledger.Admission.fallback`); the meter puts it in the record. Going down
   and coming back are logged as warnings.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal

from ._ledger import (
    Admission,
    Balance,
    BudgetLimit,
    Ledger,
    MemoryLedger,
    RateLimit,
    RateResult,
    Reservation,
    ReserveResult,
)
from ._ledger_redis import LedgerUnavailable

__all__ = ["FallbackLedger"]

_log = logging.getLogger("secure_ds.cost")


class FallbackLedger:
    """``primary`` (a Redis ledger) while it answers; a local :class:`MemoryLedger`
    while it does not. Thread-safe. See the module for why this is unsafe."""

    def __init__(
        self,
        primary: Ledger,
        *,
        retry_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.local = MemoryLedger()
        self.retry_s = retry_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._down_until = 0.0  # monotonic time before which Redis is not tried again
        self._why: str | None = None  # why Redis was last found unusable
        self._local_ids: set[str] = set()  # reservations held by the local ledger

    @property
    def down(self) -> bool:
        """Whether calls are currently metered locally."""
        return self._why is not None and self._monotonic() < self._down_until

    def now(self) -> float:
        if not self.down:
            try:
                return self.primary.now()
            except LedgerUnavailable as exc:
                self._went_down(exc)
        return self.local.now()

    def admit(
        self,
        limits: Sequence[BudgetLimit],
        amount: Decimal,
        ttl: float,
        rates: Sequence[RateLimit],
        requests: int,
        tokens: int,
        now: float,
    ) -> Admission:
        if not self.down:
            try:
                admission = self.primary.admit(limits, amount, ttl, rates, requests, tokens, now)
            except LedgerUnavailable as exc:
                self._went_down(exc)
            else:
                self._came_back()
                return admission
        admission = self.local.admit(limits, amount, ttl, rates, requests, tokens, now)
        held = admission.budgets.reservation if admission.budgets is not None else None
        if held is not None:
            with self._lock:
                self._local_ids.add(held.id)
        return admission._replace(fallback=self._why)

    def finish(
        self,
        reservation: Reservation | None,
        actual: Decimal | None,
        rate_keys: Sequence[str],
        window: int | None,
        token_delta: int,
    ) -> None:
        with self._lock:
            local = reservation is not None and reservation.id in self._local_ids
            if local:
                assert reservation is not None
                self._local_ids.discard(reservation.id)
        if local or (reservation is None and self.down):
            self.local.finish(reservation, actual, rate_keys, window, token_delta)
            return
        # a Redis reservation settles in Redis; if it is down now, the meter records the
        # failure and the hold expires there after its TTL (the budget is not lost)
        self.primary.finish(reservation, actual, rate_keys, window, token_delta)

    def close(self) -> None:
        try:
            self.primary.close()
        finally:
            self.local.close()

    def balance(self, key: str, now: float) -> Balance:
        # the meter reads balances for calls in flight (a policy's remaining budget, a
        # route:auto choice), so a balance falls back as an admission does; a balance
        # read locally shows only this process's spend during the outage
        if not self.down:
            try:
                balance = self.primary.balance(key, now)
            except LedgerUnavailable as exc:
                self._went_down(exc)
            else:
                self._came_back()
                return balance
        return self.local.balance(key, now)

    # The other single operations (tools and tests use them; the meter does not) act on
    # the shared ledger only: a fallback is for calls in flight, not for bookkeeping.

    def reserve(
        self, limits: Sequence[BudgetLimit], amount: Decimal, ttl: float, now: float
    ) -> ReserveResult:
        return self.primary.reserve(limits, amount, ttl, now)

    def settle(self, reservation: Reservation, actual: Decimal) -> None:
        self.primary.settle(reservation, actual)

    def release(self, reservation: Reservation) -> None:
        self.primary.release(reservation)

    def hit(
        self, limits: Sequence[RateLimit], requests: int, tokens: int, now: float
    ) -> RateResult:
        return self.primary.hit(limits, requests, tokens, now)

    def adjust_tokens(self, keys: Sequence[str], window: int, delta: int) -> None:
        self.primary.adjust_tokens(keys, window, delta)

    def _went_down(self, exc: LedgerUnavailable) -> None:
        # the error's message without its hint, which says calls are refused: not here
        problem = str(exc).removesuffix(exc.hint).strip() if exc.hint else str(exc)
        with self._lock:
            first = self._why is None
            self._why = (
                f"UNSAFE local ledger (SECURE_DS_METER_FALLBACK=local-unsafe): {problem} "
                "This process's calls count only against its own in-memory budget."
            )
            self._down_until = self._monotonic() + self.retry_s
        if first:
            _log.warning(
                "the shared ledger is unreachable; metering against a local ledger "
                "(SECURE_DS_METER_FALLBACK=local-unsafe) and retrying in %.0f s: %s",
                self.retry_s,
                problem,
            )

    def _came_back(self) -> None:
        if self._why is None:
            return
        with self._lock:
            self._why = None
        _log.warning("the shared ledger answers again; metering against it")
