"""Each audit test gets its own state directory, so the default signing key
(``$XDG_STATE_HOME/secure-ds/audit-signing-key.pem``) is created fresh in it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
