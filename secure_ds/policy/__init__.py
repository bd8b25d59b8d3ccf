"""Attribute-based access policies as code: Cedar policies in a folder, evaluated by
the guard chain's *decide* stage, with obligations carried out by *enforce*.

``SECURE_DS_POLICY_DIR`` points a client at a folder (this repository's ``policies/``
is the default set); :class:`CedarDecider` evaluates every call against it and
:class:`PolicyStore` reloads it when it changes, keeping the last good version when
a new one does not load. The review tooling (``secure-ds policy ...``) uses the same
loader and evaluator.
"""

from __future__ import annotations

from ._bundle import PolicyBundle, PolicyError, PolicyInfo, load_bundle
from ._decider import CedarDecider, Evaluation, PolicyOutcomes, evaluate, interpret
from ._explain import Explanation, explain_call, explain_request
from ._inputs import ClaimError, InputBuilder, call_context, principal_json
from ._lint import LintReport, format_folder, lint_folder
from ._obligations import ObligationConflict, merge_obligations
from ._store import PolicyStore
from ._testing import TestRun, run_policy_tests

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
    "run_policy_tests",
]
