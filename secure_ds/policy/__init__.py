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
from ._inputs import ClaimError, InputBuilder, call_context, principal_json
from ._obligations import ObligationConflict, merge_obligations
from ._store import PolicyStore

__all__ = [
    "CedarDecider",
    "ClaimError",
    "Evaluation",
    "InputBuilder",
    "ObligationConflict",
    "PolicyBundle",
    "PolicyError",
    "PolicyInfo",
    "PolicyOutcomes",
    "PolicyStore",
    "call_context",
    "evaluate",
    "interpret",
    "load_bundle",
    "merge_obligations",
    "principal_json",
]
