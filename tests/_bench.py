"""Running a benchmark script from a smoke test: in a fresh interpreter, as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_bench(script: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with ``args``; fail the test with its output unless it exits 0;
    return what it printed."""
    done = subprocess.run(  # noqa: S603 (our own script, fixed arguments)
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done
