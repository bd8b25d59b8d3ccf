"""NEW's decision tests (``tests/*.json`` in its folder), run and summarised for the
report: :class:`TestSummary`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ...errors import SecureDSError
from .._bundle import PolicyBundle


@dataclass(frozen=True)
class TestSummary:
    """NEW's decision tests (``tests/*.json`` in the folder), run by
    :func:`secure_ds.policy._testing.run_policy_tests` when it is available."""

    __test__ = False  # not a pytest test class, whatever its name

    status: Literal["passed", "failed", "none", "error", "unavailable"]
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
    # imported late and looked up by name: the test runner is optional here, and the
    # review works (saying the tests were not run) without it
    try:
        from .. import _testing
    except ImportError:
        return TestSummary("unavailable", message="the decision-test runner is not installed")
    runner = getattr(_testing, "run_policy_tests", None)
    if runner is None:
        return TestSummary("unavailable", message="the decision-test runner is not available")
    if not bundle.test_files:
        return TestSummary("none", message="the folder has no tests/*.json")
    try:
        result = runner(bundle)
    except SecureDSError as exc:
        return TestSummary("error", message=str(exc))
    passed = list(getattr(result, "passed", ()) or ())
    failed = [_label(t) for t in getattr(result, "failed", ()) or ()]
    errors = [
        f"{_label(e)}: {getattr(e, 'message', '')}".rstrip(": ")
        for e in getattr(result, "errors", ()) or ()
    ]
    uncovered = [str(p) for p in getattr(result, "uncovered", ()) or ()]
    return TestSummary(
        "failed" if failed or errors else "passed",
        passed=len(passed),
        failed=tuple(failed),
        errors=tuple(errors),
        uncovered=tuple(uncovered),
    )


def _label(test: Any) -> str:
    for attr in ("label", "name", "id"):
        value = getattr(test, attr, None)
        if isinstance(value, str) and value:
            return value
    return str(test)
