"""Checks shared by the tests of the budgets file (SECURE_DS_BUDGETS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from secure_ds.cost._budgets import load_budgets
from secure_ds.errors import ConfigError


def assert_budgets_file_refused(tmp_path: Path, text: str, problem: str) -> None:
    """A budgets file holding ``text`` is refused with a ConfigError that names the
    variable, the file and ``problem``, and says how to fix it."""
    path = tmp_path / "budgets.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_budgets(path)
    assert info.value.variable == "SECURE_DS_BUDGETS"
    assert problem in str(info.value)
    assert str(path) in str(info.value)
    assert "Fix the budgets file" in info.value.hint
