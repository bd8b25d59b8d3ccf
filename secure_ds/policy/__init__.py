"""Attribute-based access policies as code: Cedar policies in a folder, evaluated by
the guard chain's *decide* stage, with obligations carried out by *enforce*.

``SECURE_DS_POLICY_DIR`` points a client at a folder (this repository's ``policies/``
is the default set); :class:`CedarDecider` evaluates every call against it and
:class:`PolicyStore` reloads it when it changes, keeping the last good version when
a new one does not load. The review tooling (``secure-ds policy ...``) uses the same
loader and evaluator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._bundle import PolicyBundle, PolicyError, PolicyInfo, load_bundle
from ._decider import CedarDecider, Evaluation, PolicyOutcomes, evaluate, interpret
from ._inputs import ClaimError, InputBuilder, call_context, principal_json
from ._obligations import ObligationConflict, merge_obligations
from ._store import PolicyStore

if TYPE_CHECKING:
    from ._explain import Explanation, explain_call, explain_request
    from ._lint import LintReport, format_folder, lint_folder
    from ._review import ReviewReport, review
    from ._testing import TestRun, run_policy_tests

# The review tooling is imported on first use: every client imports this package for
# the decision point, and should not pay for loading the linter and the replayer.
_TOOLING = {
    "Explanation": "._explain",
    "explain_call": "._explain",
    "explain_request": "._explain",
    "LintReport": "._lint",
    "format_folder": "._lint",
    "lint_folder": "._lint",
    "ReviewReport": "._review",
    "review": "._review",
    "TestRun": "._testing",
    "run_policy_tests": "._testing",
}


def __getattr__(name: str) -> Any:
    module = _TOOLING.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "CedarDecider",
    "ClaimError",
    "Evaluation",
    "Explanation",
    "InputBuilder",
    "LintReport",
    "ObligationConflict",
    "PolicyBundle",
    "PolicyError",
    "PolicyInfo",
    "PolicyOutcomes",
    "PolicyStore",
    "ReviewReport",
    "TestRun",
    "call_context",
    "evaluate",
    "explain_call",
    "explain_request",
    "format_folder",
    "interpret",
    "lint_folder",
    "load_bundle",
    "merge_obligations",
    "principal_json",
    "review",
    "run_policy_tests",
]
