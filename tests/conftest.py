"""Shared fixtures: one sandbox for the session, and an audit-file reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from secure_ds.audit import read_records
from secure_ds.sandbox import Sandbox


@pytest.fixture(scope="session", autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The whole run keeps its state (default audit logs, the default audit signing
    key) in a directory of its own, never in the home directory of whoever runs it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
        yield


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The session sandbox with no leftover faults."""
    sandbox.clear_faults()
    yield sandbox
    sandbox.clear_faults()


def read_audit(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return list(read_records(path))  # call records only: checkpoint lines are skipped
