"""Shared fixtures for the security tests: one sandbox per session, per-test audit files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from secure_ds import Settings
from secure_ds.sandbox import LocalCA, Sandbox
from tests.security._support import AuditTail

SettingsFactory = Callable[..., Settings]


# `sandbox` (one per session) and `sb` (it, with no queued faults) come from
# tests/conftest.py.


@pytest.fixture(scope="session")
def foreign_ca() -> LocalCA:
    """A CA the sandbox does not trust."""
    return LocalCA.create("foreign test CA")


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.jsonl"


@pytest.fixture
def make_settings(sb: Sandbox, audit_path: Path) -> SettingsFactory:
    """Settings for subject alice against the sandbox, fast retries, a per-test audit file."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "audit_path": audit_path,
            "backoff_factor": 0.001,
        }
        values.update(overrides)
        return sb.client_settings("alice", **values)

    return make


@pytest.fixture
def audit(audit_path: Path) -> AuditTail:
    return AuditTail(audit_path)
