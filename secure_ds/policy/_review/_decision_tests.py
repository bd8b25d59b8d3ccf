"""NEW's decision tests (``tests/*.json`` in its folder), run and summarised for the
report: :class:`TestSummary`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ...errors import SecureDSError
from .._bundle import PolicyBundle
from .._testing import run_policy_tests


@dataclass(frozen=True)
class TestSummary:
    """NEW's decision tests (``tests/*.json`` in the folder), run by
    :func:`secure_ds.policy._testing.run_policy_tests`."""

    __test__ = False  # not a pytest test class, whatever its name

    status: Literal["passed", "failed", "none", "error"]
    passed: int = 0
    failed: tuple[str, ...] = ()  # labels of the failed cases
    errors: tuple[str, ...] = ()  # malformed test files or cases: "label: message"
    uncovered: tuple[str, ...] = ()  # policies no test case is decided by
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "passed": self.passed,
            "failed": list(self.failed),
            "errors": list(self.errors),
            "uncovered": list(self.uncovered),
            "message": self.message,
        }


def _run_tests(bundle: PolicyBundle) -> TestSummary:
    if not bundle.test_files:
        return TestSummary("none", message="the folder has no tests/*.json")
    try:
        result = run_policy_tests(bundle)
    except SecureDSError as exc:
        return TestSummary("error", message=str(exc))
    return TestSummary(
        "passed" if result.ok else "failed",
        passed=len(result.passed),
        failed=tuple(t.label for t in result.failed),
        errors=tuple(f"{e.label}: {e.message}" for e in result.errors),
        uncovered=tuple(result.uncovered),
    )
