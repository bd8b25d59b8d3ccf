"""``secure-ds audit ship``: ship the audit log to an OpenTelemetry Collector.

The sidecar mode of the SIEM export (:mod:`secure_ds.siem`): run it beside the
application (with ``SECURE_DS_OTLP_SHIPPER=sidecar`` there, so the client does not
ship too; if both run, one waits for the other's lock). ``--once`` ships what is in
the log and exits: exit 0 when everything was acknowledged, 2 when the collector did
not answer (nothing is lost: the next run starts from the saved cursor).

Registered under an ``audit`` command group, created here if no other module made
one first, and dispatched through the ``siem_ship`` default, so it can sit beside
other ``audit`` subcommands.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ..config import Settings

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit ship`` (to the existing ``audit`` group, if there is one)."""
    audit = subparsers.choices.get("audit")
    if audit is None:
        audit = subparsers.add_parser("audit", help="the audit log: ship it to a SIEM")
    actions = next((a for a in audit._actions if isinstance(a, argparse._SubParsersAction)), None)
    if actions is None:
        actions = audit.add_subparsers(dest="audit_command", required=True)
    ship = actions.add_parser(
        "ship",
        help="ship the audit log to an OpenTelemetry Collector (OTLP/HTTP), at least once",
        description="Read the audit log from its saved cursor and send every call record "
        "to the collector as an OTLP log record (OCSF API Activity attributes), a GenAI "
        "span and metrics. The cursor advances only when the collector acknowledged.",
        epilog="Settings come from the environment (SECURE_DS_AUDIT_PATH, "
        "SECURE_DS_OTLP_ENDPOINT, SECURE_DS_OTLP_HEADERS, ...); the options override "
        "them. Exit status: 0 shipped (or stopped by a signal), 2 error.",
    )
    ship.add_argument("--log", type=Path, help="audit log (default: $SECURE_DS_AUDIT_PATH)")
    ship.add_argument(
        "--endpoint", help="collector OTLP/HTTP URL (default: $SECURE_DS_OTLP_ENDPOINT)"
    )
    ship.add_argument("--once", action="store_true", help="ship what is in the log now, then exit")
    ship.add_argument("--json", action="store_true", help="print the final status as JSON")
    ship.set_defaults(siem_ship=True)


def run(args: argparse.Namespace) -> int:
    from ..siem import Shipper

    settings = _settings(args)
    shipper = Shipper.from_settings(settings)
    stop = threading.Event()
    started = time.monotonic()
    try:
        if args.once:
            shipper.ship_pending()
        else:

            def _stop(signum: int, frame: FrameType | None) -> None:
                stop.set()

            signal.signal(signal.SIGTERM, _stop)
            signal.signal(signal.SIGINT, _stop)
            print(
                f"secure-ds audit ship: {settings.audit_path} -> {settings.otlp_endpoint} "
                "(Ctrl-C to stop)",
                flush=True,
            )
            shipper.run(stop)
    finally:
        shipper.close()
    status = shipper.status
    if args.json:
        print(
            json.dumps(
                {
                    "log": str(settings.audit_path),
                    "endpoint": settings.otlp_endpoint,
                    "shipped": status.shipped,
                    "batches": status.batches,
                    "skipped": status.skipped,
                    "offset": status.offset,
                    "torn_tail": status.torn_tail,
                    "restarted": status.restarted,
                    "failures": status.failures,
                    "last_error": status.last_error,
                    "seconds": round(time.monotonic() - started, 3),
                }
            )
        )
    else:
        print(
            f"secure-ds audit ship: {status.shipped} record(s) shipped, cursor at byte "
            f"{status.offset}" + (" (torn last line left unshipped)" if status.torn_tail else "")
        )
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.log is not None:
        overrides["audit_path"] = args.log
    if args.endpoint is not None:
        overrides["otlp_endpoint"] = args.endpoint
    # the sidecar needs no client identity: an api-key placeholder keeps Settings from
    # asking for certificates it will never use (nothing is sent to DeepSeek from here)
    from .._secret import Secret

    overrides.setdefault("token_provider", "api-key")
    overrides.setdefault("api_key", Secret("unused-by-the-shipper"))
    return Settings.from_env(**overrides)
