"""Choosing the ledger the settings describe (``SECURE_DS_METER_BACKEND``)."""

from __future__ import annotations

from ..config import Settings
from ..errors import ConfigError
from ._ledger import Ledger, MemoryLedger, SQLiteLedger

__all__ = ["ledger_from_settings"]


def ledger_from_settings(settings: Settings) -> Ledger:
    """The ledger for ``settings.meter_backend``: memory (one process), sqlite (the
    processes of one host, ``SECURE_DS_METER_DB``) or redis (many hosts,
    ``SECURE_DS_METER_REDIS_URL``; with ``SECURE_DS_METER_FALLBACK=local-unsafe``
    wrapped in a :class:`~._fallback.FallbackLedger`). Settings validate these
    already; the checks here cover a Settings built with ``dataclasses.replace`` or by
    hand."""
    backend = settings.meter_backend
    if backend == "memory":
        return MemoryLedger()
    if backend == "sqlite":
        if settings.meter_db is None:
            raise ConfigError(
                "SECURE_DS_METER_DB",
                "is not set, but the sqlite meter backend keeps its ledger there",
                fix="Set SECURE_DS_METER_DB to a file path shared by this host's processes.",
            )
        return SQLiteLedger(settings.meter_db)
    if backend == "redis":
        if settings.meter_redis_url is None:
            raise ConfigError(
                "SECURE_DS_METER_REDIS_URL",
                "is not set, but the redis meter backend keeps its ledger there",
                fix="Set SECURE_DS_METER_REDIS_URL to the Redis every host shares, e.g. "
                "redis://:PASSWORD@redis.internal:6379/0.",
            )
        # imported here: redis-py is an optional extra, needed only for this backend
        from ._ledger_redis import RedisLedger

        ledger: Ledger = RedisLedger(settings.meter_redis_url.reveal())
        if settings.meter_fallback == "local-unsafe":
            from ._fallback import FallbackLedger

            ledger = FallbackLedger(ledger)
        return ledger
    raise ConfigError(
        "SECURE_DS_METER_BACKEND",
        f"{backend!r} is not a meter backend",
        fix="Use memory (one process), sqlite (several processes on one host) or redis "
        "(many hosts).",
    )
