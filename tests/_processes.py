"""Run worker functions in real OS processes (spawned: each its own interpreter and
connections), for tests that prove something under true concurrency."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import time
from typing import Any

SPAWN = multiprocessing.get_context("spawn")


def run_workers(target: Any, args: list[tuple[Any, ...]], *, timeout: float = 120) -> list[Any]:
    """Start one process per ``args`` entry as ``target(*entry, barrier, out)``; the
    barrier lets them start together, and each puts its result on ``out``. Returns the
    results (in arrival order) once every worker has exited cleanly."""
    barrier = SPAWN.Barrier(len(args))
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(*a, barrier, out)) for a in args]
    for p in procs:
        p.start()
    results: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(results) < len(procs):
        # a worker that dies fails the test now, not after the whole timeout
        assert all(p.exitcode in (None, 0) for p in procs), [p.exitcode for p in procs]
        assert time.monotonic() < deadline, "the workers did not finish in time"
        with contextlib.suppress(queue.Empty):
            results.append(out.get(timeout=0.5))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results
