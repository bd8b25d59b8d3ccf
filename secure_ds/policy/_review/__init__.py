"""Review a policy change before it is merged: ``secure-ds policy review OLD NEW``.

OLD and NEW are policy folders or git revisions of one (``REV`` or ``REV:path``). The
review replays requests against both and reports what changes:

1. *Requests.* Every recorded call of the audit logs given (each record keeps the
   exact Cedar context the decider built at call time, so the replay asks what was
   asked), and a *sweep*: requests generated over the values the policies of either
   side compare attributes with, so a change is found even when nobody has made
   the call yet.
2. *Evaluation.* Each request is decided against both sides exactly as the live
   decider would: the same principal building (:class:`InputBuilder`, a claim of
   the wrong type is a deny), the decider's own :func:`prepare_request` (an unknown
   model is a deny, then a refused claim) and the same :func:`interpret` (evaluation
   errors and conflicting obligations are denies).
3. *Diff.* Decisions that flip (deny -> permit is *new access* and comes first),
   permits whose obligations change (a weaker one, such as a higher token cap or a
   dropped redaction, is flagged), denies or permits now determined by other
   policies, policies added/removed/modified, and the validation and decision-test
   results of NEW. The review fails when NEW does not load, fails its decision
   tests, or grants new access that was not allowed.

Speed. Cedar's Python binding costs 100-200 us a request, nearly all of it in
building the request, and real logs hardly repeat exactly (the hour, the token
count, the DLP findings differ from call to call), so replaying 100,000 records one
by one against two policy sets takes most of a minute. Requests are therefore
grouped into classes that no policy of either side can tell apart, and each class
is evaluated once per side, its first member standing for it:

* only the policies whose action scope admits the request's action can decide it
  (Cedar itself says which: each policy cut down to its action scope is evaluated
  once per action), so the rest are left out of the following (:class:`_Group`);
* those policies are walked (:class:`_Facts`); an attribute they only compare with
  literals (``context.hour_utc < 7``) is keyed by the outcome of each comparison,
  not by its value; an attribute they do not read is keyed by its JSON type only
  (all that Cedar's request validation looks at); an attribute read in any other
  way, by its full value (:class:`_Abstraction`);
* roles they do not name are left out, unless the catalogue nests roles; the
  subject is left out unless a policy names a user.

A class is never coarser than the policies can see, so grouping never changes a
decision (``tests/policy/test_review.py`` checks that request by request). The
report gives the number of records replayed and of classes evaluated.

The modules, in the order a review runs: :mod:`._sides` (OLD and NEW resolved and
loaded), :mod:`._facts` (what the policies read, and the grouping keys),
:mod:`._requests` (recorded and generated requests), :mod:`._replay` (grouping and
evaluation), :mod:`._diff` (outcomes, findings, policy changes),
:mod:`._decision_tests` (NEW's decision tests), :mod:`._report` (the report and its
verdict) and :mod:`._entry` (:func:`review`, :func:`review_bundles`);
:mod:`._common` holds the few pieces several of them share.
"""

from __future__ import annotations

from ._decision_tests import TestSummary
from ._diff import Finding, PolicyChange, obligation_strength, policy_changes
from ._entry import review, review_bundles
from ._report import DEFAULT_MAX_ROWS, REVIEW_SCHEMA, ReviewReport
from ._requests import SWEEP_LIMIT, SWEEP_SEED, Example, ReplayStats
from ._sides import SideSummary

__all__ = [
    "DEFAULT_MAX_ROWS",
    "REVIEW_SCHEMA",
    "SWEEP_LIMIT",
    "SWEEP_SEED",
    "Example",
    "Finding",
    "PolicyChange",
    "ReplayStats",
    "ReviewReport",
    "SideSummary",
    "TestSummary",
    "obligation_strength",
    "policy_changes",
    "review",
    "review_bundles",
]
