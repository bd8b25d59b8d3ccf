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
   the wrong type is a deny), the same catalogue check (an unknown model is a deny)
   and the same :func:`interpret` (evaluation errors and conflicting obligations are
   denies).
3. *Diff.* Decisions that flip (deny -> permit is *new access* and comes first),
   permits whose obligations change (a weaker one, such as a higher token cap or a
   dropped redaction, is flagged), denies or permits now determined by other
   policies, policies added/removed/modified, and the validation and decision-test
   results of NEW.

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
"""

from __future__ import annotations

import bisect
import io
import json
import random
import re
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, NamedTuple, get_args

import cedarpy

from ..audit._record import RECORD_SCHEMA
from ..errors import SecureDSError
from ..guard._call import Action
from ._bundle import NAMESPACE, PolicyBundle, PolicyError, load_bundle
from ._decider import Evaluation, PolicyOutcomes, interpret
from ._inputs import (
    ACTION,
    API_RESOURCE,
    MODEL,
    MODEL_ACTIONS,
    USER,
    ClaimError,
    InputBuilder,
    PrincipalInputs,
    call_context,
)

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

REVIEW_SCHEMA = "secure-ds.policy-review/1"
DEFAULT_GIT_PATH = "policies"
DEFAULT_MAX_ROWS = 20
SWEEP_LIMIT = 20_000  # combinations evaluated at most; a larger space is sampled
SWEEP_SEED = 8705  # fixed, so two runs of a review sample the same requests
_BATCH = 256  # requests per is_authorized_batch call (one principal's Entities each)
_GIT_TIMEOUT = 60.0
_MAX_ARCHIVE_BYTES = 64 * 1024 * 1024  # a policy folder is a few KB; refuse a runaway tree
_MAX_LINE_BYTES = 1024 * 1024
_MALFORMED_NOTES = 5  # malformed lines named in the report; the rest are counted
_I64 = (-(2**63), 2**63 - 1)
_SWEEP_SUBJECT = "sweep"
_SWEEP_OTHER = "sweep-other"  # a string value that matches no literal
# a Wednesday, 12:30 UTC: the base the sweep varies hour and weekday from
_SWEEP_BASE_TIME = 1_763_555_400.0
_LEVELS = ("unclassified", "public", "internal", "confidential", "secret")

ProgressFn = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: called now and then during a long review."""


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# --------------------------------------------------------------------------- sides


@dataclass(frozen=True)
class SideSummary:
    """What one side of the review is and whether it loaded."""

    spec: str  # as given on the command line
    kind: Literal["folder", "git"]
    location: str  # the folder, or "<commit>:<path>" for a git revision
    revision: str | None  # the bundle's sha256 revision, when it loaded
    policies: int
    models: tuple[str, ...]
    error: str | None  # the PolicyError text when it did not load

    @property
    def loaded(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "kind": self.kind,
            "location": self.location,
            "revision": self.revision,
            "policies": self.policies,
            "models": list(self.models),
            "loaded": self.loaded,
            "error": self.error,
        }


def _resolve(spec: str, stack: ExitStack, cwd: Path) -> tuple[Literal["folder", "git"], str, Path]:
    """The folder ``spec`` names: itself, or a git revision's tree extracted to a
    temporary directory that lives as long as ``stack``."""
    folder = Path(spec) if Path(spec).is_absolute() else cwd / spec
    if folder.is_dir():
        return "folder", str(folder), folder
    if spec.startswith(("/", "./", "../", "~")) or spec in (".", ".."):
        raise SecureDSError(
            f"No folder {folder}.",
            hint="Check the path; a git revision is given as REV or REV:path, not as a path.",
        )
    rev, _, sub = spec.partition(":")
    sub = sub.strip("/") or DEFAULT_GIT_PATH
    what = f"{spec!r} is not a folder"
    if not rev or rev.startswith("-"):
        raise SecureDSError(
            f"{what}, nor a git revision.",
            hint="Pass a policy folder, or a git revision as REV or REV:path "
            f"(e.g. HEAD~1 or origin/main:{DEFAULT_GIT_PATH}).",
        )
    root = _git(cwd, "rev-parse", "--show-toplevel")
    if root is None:
        raise SecureDSError(
            f"{what}, and {cwd} is not inside a git work tree, so it is not a git revision either.",
            hint="Pass an existing policy folder, or run the review inside the repository.",
        )
    commit = _git(Path(root), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if commit is None:
        raise SecureDSError(
            f"{what}, and {rev!r} is not a revision of the git repository at {root}.",
            hint="Use a commit, branch or tag (HEAD~1, main, a sha), or an existing folder; "
            "`git fetch` first if the revision lives on a remote.",
        )
    tree = f"{commit}:{sub}"
    if _git(Path(root), "cat-file", "-t", tree) != "tree":
        raise SecureDSError(
            f"Revision {rev} ({commit[:12]}) has no folder {sub!r}.",
            hint=f"Name the folder as REV:path, the path from the repository root "
            f"(the default is {DEFAULT_GIT_PATH}), e.g. {rev}:{DEFAULT_GIT_PATH}.",
        )
    archive = _git_bytes(Path(root), "archive", "--format=tar", tree)
    target = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="secure-ds-review-")))
    _extract(archive, target, tree)
    return "git", tree, target


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - git with list arguments, no shell
            ["git", "-C", str(cwd), *args],  # noqa: S607 - git as found on PATH
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git_bytes(cwd: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(  # noqa: S603 - git with list arguments, no shell
            ["git", "-C", str(cwd), *args],  # noqa: S607 - git as found on PATH
            capture_output=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise SecureDSError(
            f"Running `git {' '.join(args)}` failed ({exc}).",
            hint="Check that git is installed and the repository is readable.",
        ) from None
    if done.returncode != 0:
        problem = done.stderr.decode("utf-8", "replace").strip()
        raise SecureDSError(
            f"`git {' '.join(args)}` failed: {problem}",
            hint="Check the revision and path, or review a checked-out folder instead.",
        )
    if len(done.stdout) > _MAX_ARCHIVE_BYTES:
        raise SecureDSError(
            f"{args[-1]} is over {_MAX_ARCHIVE_BYTES // 2**20} MiB as a tar archive.",
            hint="Point the review at the policy folder itself (REV:path), not a larger tree.",
        )
    return done.stdout


def _extract(archive: bytes, target: Path, tree: str) -> None:
    """Unpack regular files and folders only, each strictly inside ``target`` (no
    absolute names, no ``..``), so an archive cannot write elsewhere."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        for member in tar.getmembers():
            name = PurePosixPath(member.name)
            if member.name in ("", ".") or member.name == "pax_global_header":
                continue
            if name.is_absolute() or ".." in name.parts:
                raise SecureDSError(
                    f"{tree} holds an entry with an unsafe name ({member.name!r}).",
                    hint="Review a checked-out folder instead.",
                )
            path = target.joinpath(*name.parts)
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - isfile() members always have data
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(source.read())
            elif member.type == tarfile.XGLTYPE:
                continue  # git's global pax header (the commit id), not a file
            else:
                raise SecureDSError(
                    f"{tree} holds {member.name!r}, which is not a regular file "
                    "(a symbolic link or a submodule).",
                    hint="Policy folders hold plain files only; review a checked-out folder "
                    "to see what the link points at.",
                )


# ------------------------------------------------------------------ policy facts


@dataclass
class _Reads:
    """How a set of policies reads one attribute (``context.hour_utc``)."""

    raw: bool = False  # read other than by comparison with a literal: key by full value
    eq: set[tuple[type, Any]] = field(default_factory=set)  # ==, != literals
    order: set[tuple[str, int]] = field(default_factory=set)  # ("<", 7): attr < 7
    members: set[tuple[type, Any]] = field(default_factory=set)  # contains/-Any/-All
    has: bool = False
    samples: set[Any] = field(default_factory=set)  # sweep values for raw reads (like)


_COMPARE = frozenset({"==", "!=", "<", "<=", ">", ">="})
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}  # 7 > x  is  x < 7
_SET_OPS = frozenset({"contains", "containsAll", "containsAny"})
_ROLE = f"{NAMESPACE}::Role"


class _Facts:
    """What a set of policies reads, collected by walking Cedar's JSON form (EST) of
    each. Keys requests (:class:`_Abstraction`) and shapes the sweep."""

    def __init__(self) -> None:
        self.reads: dict[tuple[str, str], _Reads] = {}
        self.whole: set[str] = set()  # variables used as a whole (not attr/has/in/==)
        self.entities: set[tuple[str, str]] = set()  # entity literals: (type, id)
        self.role_graph = False  # the catalogue holds roles (a role hierarchy)

    def add_policy(self, policy: Mapping[str, Any]) -> None:
        for slot in ("principal", "action", "resource"):
            self._scope(policy.get(slot))
        for condition in policy.get("conditions", ()):
            self._visit(condition.get("body"))

    def add_catalogue(self, bundle: PolicyBundle) -> None:
        for entity in bundle.catalogue_json:
            uid = entity.get("uid")
            kind = uid.get("type") if isinstance(uid, dict) else None
            if kind == USER:
                # a user in the catalogue can be a parent or an attribute value: the
                # principal's id can then matter
                self.whole.add("principal")
            elif kind == _ROLE:
                self.role_graph = True  # a role can sit inside another: keep all roles

    @property
    def subject_matters(self) -> bool:
        return "principal" in self.whole or any(t == USER for t, _ in self.entities)

    def attrs(self, var: str) -> dict[str, _Reads]:
        return {attr: r for (v, attr), r in self.reads.items() if v == var}

    def roles(self) -> list[str]:
        return sorted(i for t, i in self.entities if t == _ROLE)

    def users(self) -> list[str]:
        return sorted(i for t, i in self.entities if t == USER)

    def _read(self, var: str, attr: str) -> _Reads:
        return self.reads.setdefault((var, attr), _Reads())

    def _scope(self, scope: Any) -> None:
        if not isinstance(scope, dict):
            return
        self._entity(scope.get("entity"))
        for entity in scope.get("entities", ()) or ():
            self._entity(entity)
        inner = scope.get("in")
        if isinstance(inner, dict):
            self._entity(inner.get("entity"))

    def _entity(self, value: Any) -> None:
        if isinstance(value, dict):
            ref = value.get("__entity", value)
            if isinstance(ref, dict) and isinstance(ref.get("type"), str) and "id" in ref:
                self.entities.add((ref["type"], str(ref["id"])))

    def _literals(self, value: Any) -> None:
        """Record the entity references inside a literal value."""
        if isinstance(value, dict):
            if "__entity" in value:
                self._entity(value)
                return
            for item in value.values():
                self._literals(item)
        elif isinstance(value, list):
            for item in value:
                self._literals(item)

    def _visit(self, node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                self._visit(item)
            return
        if not isinstance(node, dict):
            return
        if len(node) == 1:
            op, arg = next(iter(node.items()))
            if op == "Value":
                self._literals(arg)
                return
            if op == "Var":
                self.whole.add(str(arg))
                return
            if op in (".", "has") and isinstance(arg, dict):
                var = _var(arg.get("left"))
                if var is not None and isinstance(arg.get("attr"), str):
                    reads = self._read(var, arg["attr"])
                    if op == "has":
                        reads.has = True
                    else:
                        reads.raw = True  # a bare read; comparisons are handled below
                    return
            if isinstance(arg, dict) and self._special(op, arg):
                return
        for value in node.values():
            self._visit(value)

    def _special(self, op: str, arg: dict[str, Any]) -> bool:
        """Handle the forms that read an attribute in a way its class can capture;
        False sends the node to the generic walk (which keys attributes by value)."""
        left, right = arg.get("left"), arg.get("right")
        if op in _COMPARE:
            for attr_side, literal_side, flipped in ((left, right, False), (right, left, True)):
                ref = _attr_ref(attr_side)
                literal = _scalar(literal_side)
                if ref is None or literal is _MISSING:
                    continue
                reads = self._read(*ref)
                if op in _FLIP and type(literal) is int:
                    reads.order.add((_FLIP[op] if flipped else op, literal))
                elif op in ("==", "!="):
                    reads.eq.add((type(literal), literal))
                else:
                    reads.raw = True
                return True
            if op in ("==", "!="):
                # principal == SecureDS::User::"alice": the id matters, nothing else does
                for var_side, literal_side in ((left, right), (right, left)):
                    if (
                        _var(var_side) is not None
                        and isinstance(literal_side, dict)
                        and "Value" in literal_side
                    ):
                        self._literals(literal_side["Value"])
                        return True
            return False
        if op in _SET_OPS:
            ref = _attr_ref(left)
            members = _scalars(right)
            if ref is None or members is None:
                return False
            self._read(*ref).members.update((type(m), m) for m in members)
            return True
        if op == "in" and _var(left) in ("principal", "resource"):
            if isinstance(right, dict) and "Value" in right:
                self._literals(right["Value"])
                return True
            items = right.get("Set") if isinstance(right, dict) else None
            if isinstance(items, list) and all(isinstance(i, dict) and "Value" in i for i in items):
                for item in items:
                    self._literals(item["Value"])
                return True
            return False
        if op == "like":
            ref = _attr_ref(left)
            pattern = arg.get("pattern")
            if ref is None or not isinstance(pattern, list):
                return False
            reads = self._read(*ref)
            reads.raw = True  # a pattern match: keyed by value
            # for the sweep: the pattern with its wildcards matching nothing
            reads.samples.add("".join(str(p["Literal"]) for p in pattern if isinstance(p, dict)))
            return True
        if op == "is" and _var(left) is not None:
            self._visit(arg.get("in"))
            return True
        return False


def _var(node: Any) -> str | None:
    if isinstance(node, dict) and len(node) == 1 and isinstance(node.get("Var"), str):
        return str(node["Var"])
    return None


def _attr_ref(node: Any) -> tuple[str, str] | None:
    """``principal.clearance`` -> ("principal", "clearance")."""
    if isinstance(node, dict) and len(node) == 1 and isinstance(node.get("."), dict):
        arg = node["."]
        var = _var(arg.get("left"))
        if var is not None and isinstance(arg.get("attr"), str):
            return var, arg["attr"]
    return None


def _scalar(node: Any) -> Any:
    """The literal of ``{"Value": "secret"}`` (a string, integer or boolean), else missing."""
    if isinstance(node, dict) and len(node) == 1 and "Value" in node:
        value = node["Value"]
        if type(value) in (str, int, bool):
            return value
    return _MISSING


def _scalars(node: Any) -> list[Any] | None:
    single = _scalar(node)
    if single is not _MISSING:
        return [single]
    if isinstance(node, dict) and len(node) == 1:
        items = node.get("Set")
        if isinstance(items, list):
            values = [_scalar(i) for i in items]
            return None if any(v is _MISSING for v in values) else values
        value = node.get("Value")
        if isinstance(value, list) and all(type(v) in (str, int, bool) for v in value):
            return list(value)
    return None


# ------------------------------------------------------------------- abstraction

Abstractor = Callable[[Any], Hashable]
_TESTS: dict[str, Callable[[int, int], bool]] = {
    "<": lambda v, lit: v < lit,
    "<=": lambda v, lit: v <= lit,
    ">": lambda v, lit: v > lit,
    ">=": lambda v, lit: v >= lit,
}


def _abstractor(reads: _Reads) -> Abstractor:
    """A function from an attribute's value to its class: two values of one class
    make every one of the policies read the attribute the same way (each comparison
    with a literal comes out the same)."""
    if reads.raw:
        return _by_value
    eq = frozenset(reads.eq)
    order = [(_TESTS[op], literal) for op, literal in sorted(reads.order)]
    members = sorted(reads.members, key=repr)

    def classify(value: Any) -> Hashable:
        if value is _MISSING:
            return ("-",)
        kind = type(value)
        key: list[Hashable] = [kind.__name__]
        if eq:
            if kind not in (str, int, bool):
                return ("=", _canon(value))
            key.append(value if (kind, value) in eq else _MISSING)
        if order:
            if kind is not int or not _I64[0] <= value <= _I64[1]:
                return ("=", _canon(value))  # not a Long: Cedar errors, keep it apart
            key.append(tuple(test(value, literal) for test, literal in order))
        if members:
            if kind is not list or not all(type(m) in (str, int) for m in value):
                return ("=", _canon(value))
            present = {(type(m), m) for m in value}
            key.append(tuple(i for i, m in enumerate(members) if m in present))
        return tuple(key)

    return classify


_IPV4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
)


def _by_value(value: Any) -> Hashable:
    """The class of a value read in ways no class can capture: the value itself."""
    if value is _MISSING:
        return ("-",)
    kind = type(value)
    if kind is str or kind is bool or kind is int:
        return kind.__name__, value  # the type too: Cedar tells 1 from true
    return "=", _canon(value)


def _shape(value: Any) -> Hashable:
    """What Cedar's request validation sees of a value no policy reads: its type (and
    for a Long whether it fits; for an extension value whether it is a plain IPv4
    address, which Cedar always parses, else all of it; a record, all of it)."""
    kind = type(value)
    if kind is str or kind is bool:
        return kind.__name__
    if kind is int:
        return "int" if _I64[0] <= value <= _I64[1] else ("=", value)
    if kind is list:
        return "list", frozenset(map(_shape, value))
    if kind is dict:
        extension = value.get("__extn")
        if len(value) == 1 and isinstance(extension, dict):
            arg = extension.get("arg")
            if extension.get("fn") == "ip" and isinstance(arg, str) and _IPV4.fullmatch(arg):
                return "ipv4"
        return "=", _canon(value)
    return kind.__name__


class _Abstraction:
    """Keys for the principals and contexts of one action group (see the module
    docstring): built from the policies whose action scope admits those actions."""

    def __init__(self, facts: _Facts) -> None:
        self.facts = facts
        self.subject_matters = facts.subject_matters
        self.context_whole = "context" in facts.whole
        self.principal_whole = "principal" in facts.whole
        self._context_fns = {a: _abstractor(r) for a, r in facts.attrs("context").items()}
        self.principal = sorted((a, _abstractor(r)) for a, r in facts.attrs("principal").items())
        # roles no policy of the group names cannot change its decisions (unless the
        # catalogue nests roles, or a policy uses the principal as a whole)
        keep_all = facts.role_graph or self.principal_whole
        self.roles: frozenset[str] | None = None if keep_all else frozenset(facts.roles())

    def context_key(self, context: Mapping[str, Any]) -> Hashable:
        """Every field with its class (read ones) or shape (the rest), in the order
        recorded: the same context written in another key order gets another key,
        which only costs an evaluation (classes may be finer than needed, never
        coarser)."""
        if self.context_whole:
            return _canon(context)
        read = self._context_fns
        return tuple([(k, read[k](v)) if k in read else (k, _shape(v)) for k, v in context.items()])

    def principal_key(
        self, subject: str | None, roles: Sequence[str], attributes: Mapping[str, Any]
    ) -> Hashable:
        if self.principal_whole:
            return subject, tuple(sorted(set(roles))), _canon(attributes)
        named = set(roles) if self.roles is None else self.roles.intersection(roles)
        read = tuple(f(attributes.get(a, _MISSING)) for a, f in self.principal)
        return subject if self.subject_matters else None, tuple(sorted(named)), read


class _Group:
    """Actions to which the same policies of both sides apply (by action scope)."""

    def __init__(self, index: int, facts: _Facts) -> None:
        self.index = index
        self.abstraction = _Abstraction(facts)


# ----------------------------------------------------------------------- requests


class _Request(NamedTuple):  # a tuple: made once per record, so cheap to build
    subject: str | None
    roles: tuple[str, ...]
    attributes: Mapping[str, Any]
    action: str
    model: str | None  # None: the Api resource (actions that are not about one model)
    context: Mapping[str, Any]


@dataclass(frozen=True)
class Example:
    """A request as shown in the report."""

    subject: str | None
    roles: tuple[str, ...]
    attributes: Mapping[str, Any]
    action: str
    model: str | None
    classification: str | None
    hour_utc: int | None
    weekday: int | None
    source: str  # "<audit file>:<line>" or "sweep"

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "roles": list(self.roles),
            "attributes": dict(self.attributes),
            "action": self.action,
            "model": self.model,
            "classification": self.classification,
            "hour_utc": self.hour_utc,
            "weekday": self.weekday,
            "source": self.source,
        }


def _example(request: _Request, source: str) -> Example:
    context = request.context
    hour, weekday = context.get("hour_utc"), context.get("weekday")
    classification = context.get("classification")
    return Example(
        subject=request.subject,
        roles=request.roles,
        attributes=request.attributes,
        action=request.action,
        model=request.model,
        classification=classification if isinstance(classification, str) else None,
        hour_utc=hour if type(hour) is int else None,
        weekday=weekday if type(weekday) is int else None,
        source=source,
    )


@dataclass
class ReplayStats:
    """How many requests were replayed, and what was left out and why."""

    audit_files: list[str] = field(default_factory=list)
    records: int = 0  # lines read from the audit logs (blank lines aside)
    replayed: int = 0
    skipped_no_context: int = 0  # decided without a policy engine: nothing to replay
    malformed: int = 0
    malformed_notes: list[str] = field(default_factory=list)
    sweep_requests: int = 0
    sweep_space: int = 0  # combinations the sweep could generate
    sweep_sampled: bool = False
    sweep_seed: int = SWEEP_SEED
    classes: int = 0  # requests evaluated per side, after grouping
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "audit_files": list(self.audit_files),
            "records": self.records,
            "replayed": self.replayed,
            "skipped_no_context": self.skipped_no_context,
            "malformed": self.malformed,
            "malformed_notes": list(self.malformed_notes),
            "sweep_requests": self.sweep_requests,
            "sweep_space": self.sweep_space,
            "sweep_sampled": self.sweep_sampled,
            "sweep_seed": self.sweep_seed,
            "evaluated_per_side": self.classes,
            "seconds": round(self.seconds, 3),
        }


def _note_malformed(stats: ReplayStats, where: str, problem: str) -> None:
    stats.malformed += 1
    if len(stats.malformed_notes) < _MALFORMED_NOTES:
        stats.malformed_notes.append(f"{where}: {problem}")


def _audit_requests(
    path: Path, stats: ReplayStats, progress: ProgressFn | None
) -> Iterator[tuple[_Request, int]]:
    """Stream the requests recorded in one audit log (JSON lines, one record each),
    with their line numbers; memory stays flat whatever the file's size."""
    try:
        handle = path.open("rb")
        total = max(path.stat().st_size, 1)
    except OSError as exc:
        raise SecureDSError(
            f"Cannot read the audit log {path} ({exc.strerror}).",
            hint="Pass the JSON-lines file written by SECURE_DS_AUDIT_PATH with --audit.",
        ) from None
    done = 0
    label = path.name
    loads = json.loads
    with handle:
        for number, line in enumerate(handle, 1):
            done += len(line)
            if progress is not None and not number & 2047:
                progress(f"replaying {label}", done, total)
            if len(line) > _MAX_LINE_BYTES:
                stats.records += 1
                _note_malformed(
                    stats, f"{label}:{number}", f"line longer than {_MAX_LINE_BYTES} bytes"
                )
                continue
            try:
                record = loads(line)
            except ValueError:
                if line.strip():
                    stats.records += 1
                    _note_malformed(stats, f"{label}:{number}", "not JSON")
                continue  # (a blank line is no record)
            stats.records += 1
            request = _recorded_request(record)
            if type(request) is _Request:
                stats.replayed += 1
                yield request, number
            elif request is None:
                stats.skipped_no_context += 1
            else:
                _note_malformed(stats, f"{label}:{number}", str(request))
    if progress is not None:
        progress(f"replaying {label}", total, total)


def _recorded_request(record: Any) -> _Request | str | None:
    """The request a record was decided on; None when it carries no policy context
    (decided without a policy engine), a string saying what is wrong when malformed."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("schema") != RECORD_SCHEMA:
        return f"schema is {record.get('schema')!r}, not {RECORD_SCHEMA!r}"
    decide = record.get("decide")
    if decide is None or (isinstance(decide, dict) and decide.get("context") is None):
        return None
    context = decide.get("context") if isinstance(decide, dict) else None
    if not isinstance(context, dict):
        return "decide.context is not a JSON object"
    action = record.get("action")
    if not isinstance(action, str):
        return "action is missing"
    actor = record.get("actor")
    subject: str | None = None
    roles: tuple[str, ...] = ()
    attributes: dict[str, Any] = {}
    if actor is None:
        pass  # no identity: the decider asks as "anonymous" with no roles
    elif isinstance(actor, dict):
        subject = actor.get("subject")
        raw_roles = actor.get("roles") or []
        attributes = actor.get("attributes") or {}
        if subject is not None and not isinstance(subject, str):
            return "actor.subject is not a string"
        if not isinstance(raw_roles, list) or not all(isinstance(r, str) for r in raw_roles):
            return "actor.roles is not a list of strings"
        if not isinstance(attributes, dict):
            return "actor.attributes is not a JSON object"
        roles = tuple(raw_roles)
    else:
        return "actor is not a JSON object"
    model: str | None = None
    if action in MODEL_ACTIONS:
        # the decider judged the model as requested, before enforce stripped a pin
        # or routed the call elsewhere
        request = record.get("request")
        requested = request.get("model_requested") if isinstance(request, dict) else None
        model = requested.split("@", 1)[0] if isinstance(requested, str) else ""
    return _Request(subject, roles, attributes, action, model, context)


# -------------------------------------------------------------------------- sweep


@dataclass
class _Dimension:
    name: str
    values: list[dict[str, Any]]  # each: overrides ("roles", "attr:X", "ctx:X", ...)


def _base_context(level: str = "public") -> dict[str, Any]:
    return call_context(
        level=level,
        findings=(),
        max_tokens=0,
        stream=False,
        started_at=_SWEEP_BASE_TIME,
        auth="jwt",
        certificate_bound=True,
        cert_sha256=None,
        source_ip="127.0.0.1",
    )


def _sweep(replay: _Replay, limit: int, stats: ReplayStats) -> Iterator[_Request]:
    """Requests over the values the policies compare attributes with, per action
    group (see the module docstring): every combination when there are at most
    ``limit``, else a sample of ``limit`` drawn with :data:`SWEEP_SEED`."""
    base = _base_context()
    models = sorted({m for side in replay.sides for m in side.bundle.models})
    actions: dict[int, list[dict[str, Any]]] = {}
    groups: dict[int, _Group] = {}
    for action in sorted(set(get_args(Action)) | MODEL_ACTIONS):
        accepted, group = replay.probe(action)
        if not accepted:
            continue  # no side's schema takes it: every side denies it, nothing to diff
        groups[group.index] = group
        pairs = actions.setdefault(group.index, [])
        if action in MODEL_ACTIONS:
            pairs.extend({"action": action, "model": m} for m in models)
        else:
            pairs.append({"action": action, "model": None})
    plans: list[tuple[list[_Dimension], list[int], int]] = []
    for index, group in sorted(groups.items()):
        facts, abstraction = group.abstraction.facts, group.abstraction
        dims = _principal_dimensions(facts, abstraction)
        dims.append(_Dimension("action", actions[index]))
        dims.extend(_context_dimensions(facts, base))
        sizes = [len(d.values) for d in dims]
        size = 1
        for n in sizes:
            size *= n
        plans.append((dims, sizes, size))
    total = sum(size for _, _, size in plans)
    stats.sweep_space = total
    if total <= limit:
        indices: Iterable[int] = range(total)
    else:
        stats.sweep_sampled = True
        # not for security: a fixed seed, so two runs of one review sample alike
        sampler = random.Random(SWEEP_SEED)  # noqa: S311
        indices = sorted(sampler.sample(range(total), limit))
    starts = []
    offset = 0
    for _, _, size in plans:
        starts.append(offset)
        offset += size
    for index in indices:
        at = bisect.bisect_right(starts, index) - 1
        dims, sizes, _ = plans[at]
        local = index - starts[at]
        chosen: dict[str, Any] = {}
        for dim, size in zip(reversed(dims), reversed(sizes), strict=True):
            local, pick = divmod(local, size)
            chosen.update(dim.values[pick])
        yield _sweep_request(chosen, base)


def _sweep_request(chosen: Mapping[str, Any], base: Mapping[str, Any]) -> _Request:
    attributes = {
        k[5:]: v for k, v in chosen.items() if k.startswith("attr:") and v is not _MISSING
    }
    context = dict(base)
    for key, value in chosen.items():
        if key.startswith("ctx:"):
            if value is _MISSING:
                context.pop(key[4:], None)
            else:
                context[key[4:]] = value
    findings = context.get("findings")
    if isinstance(findings, list) and "ctx:finding_count" not in chosen:
        context["finding_count"] = len(findings)
    elif isinstance(findings, list) and type(context.get("finding_count")) is int:
        # as the guard counts: at least one finding per kind found, none without kinds
        context["finding_count"] = max(context["finding_count"], len(findings)) if findings else 0
    action = str(chosen["action"])
    context["stream"] = action == "stream"
    return _Request(
        subject=chosen.get("subject", _SWEEP_SUBJECT),
        roles=tuple(chosen.get("roles", ())),
        attributes=attributes,
        action=action,
        model=chosen.get("model"),
        context=context,
    )


def _values_for(reads: _Reads, *, optional: bool) -> list[Any]:
    """Values for one attribute: every literal it is compared with, v-1/v/v+1 around
    each ordering literal, a value matching none, and absent when it may be."""
    values: list[Any] = [_MISSING] if optional else []
    for kind, literal in sorted(reads.eq, key=repr):
        values.append(literal)
        if kind is str:
            values.append(_SWEEP_OTHER)
        elif kind is bool:
            values.append(not literal)
        elif kind is int:
            values.append(literal + 1)
    for _, literal in sorted(reads.order):
        values.extend((literal - 1, literal, literal + 1))
    if reads.members:
        kinds = sorted((m for _, m in reads.members), key=repr)
        values.append([])
        values.extend([m] for m in kinds)
        values.append(kinds)
    for sample in sorted(reads.samples, key=repr):
        values.extend((sample, _SWEEP_OTHER))
    return values


def _dedupe(
    name: str, values: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Hashable]
) -> _Dimension:
    """Keep one value per class: values no policy can tell apart add nothing."""
    seen: dict[Hashable, dict[str, Any]] = {}
    for value in values:
        seen.setdefault(key(value), value)
    return _Dimension(name, list(seen.values()) or [{}])


def _principal_dimensions(facts: _Facts, abstraction: _Abstraction) -> list[_Dimension]:
    dims: list[_Dimension] = []
    if facts.subject_matters:
        subjects = [_SWEEP_SUBJECT, *facts.users()]
        dims.append(_Dimension("subject", [{"subject": s} for s in dict.fromkeys(subjects)]))
    roles = facts.roles()
    combos: list[tuple[str, ...]] = [(), *((r,) for r in roles)]
    if len(roles) <= 6:  # pairs catch a forbid on one role overriding a permit on another
        combos.extend((a, b) for i, a in enumerate(roles) for b in roles[i + 1 :])
    dims.append(_Dimension("roles", [{"roles": c} for c in combos]))
    abstractors = dict(abstraction.principal)
    for attr, reads in sorted(facts.attrs("principal").items()):
        key = f"attr:{attr}"
        values = _values_for(reads, optional=True)
        dims.append(
            _dedupe(f"principal.{attr}", ({key: v} for v in values), _by(key, abstractors[attr]))
        )
    return dims


def _by(key: str, abstract: Abstractor) -> Callable[[dict[str, Any]], Hashable]:
    return lambda value: abstract(value[key])


def _context_dimensions(facts: _Facts, base: Mapping[str, Any]) -> list[_Dimension]:
    reads = facts.attrs("context")
    empty = _Reads()

    def key_of(*names: str) -> Callable[[dict[str, Any]], Hashable]:
        functions = [(n, _abstractor(reads.get(n, empty))) for n in names]
        return lambda d: tuple(f(d.get(f"ctx:{n}", base.get(n, _MISSING))) for n, f in functions)

    dims: list[_Dimension] = []
    literal_levels = [lit for kind, lit in reads.get("classification", empty).eq if kind is str]
    levels = list(dict.fromkeys([*_LEVELS, *sorted(literal_levels)]))
    dims.append(
        _dedupe(
            "classification",
            ({"ctx:classification": lv, "ctx:classification_level": _level(lv)} for lv in levels),
            key_of("classification", "classification_level"),
        )
    )
    findings = _values_for(reads.get("findings", empty), optional=False)
    dims.append(
        _dedupe("findings", ({"ctx:findings": v} for v in [[], *findings]), key_of("findings"))
    )
    for name, low, high, usual in (("hour_utc", 0, 23, 12), ("weekday", 1, 7, 3)):
        values = [usual, *_values_for(reads.get(name, empty), optional=False)]
        dims.append(
            _dedupe(
                name,
                ({f"ctx:{name}": v} for v in values if type(v) is int and low <= v <= high),
                key_of(name),
            )
        )
    literal_auths = sorted(lit for kind, lit in reads.get("auth", empty).eq if kind is str)
    auths = list(dict.fromkeys(["jwt", "api_key", *literal_auths]))
    credentials = [{"ctx:auth": "jwt", "ctx:certificate_bound": True}]
    credentials += [{"ctx:auth": a, "ctx:certificate_bound": False} for a in auths]
    dims.append(_dedupe("credential", credentials, key_of("auth", "certificate_bound")))
    handled = {
        "classification",
        "classification_level",
        "findings",
        "hour_utc",
        "weekday",
        "auth",
        "certificate_bound",
        "stream",  # follows the action, as in a real call
    }
    for name, attr_reads in sorted(reads.items()):
        if name in handled:
            continue
        values = _values_for(attr_reads, optional=name not in base)
        if name in base:
            values.insert(0, base[name])
            if type(base[name]) is bool:
                values.append(not base[name])  # a flag read as a condition: both ways
        if len(values) > 1:
            dims.append(_dedupe(name, ({f"ctx:{name}": v} for v in values), key_of(name)))
    return dims


def _level(level: str) -> int:
    return int(_base_context(level)["classification_level"])


# ---------------------------------------------------------------------- evaluation


class _Side:
    """One loaded side, with the per-bundle helpers the live decider uses."""

    def __init__(self, bundle: PolicyBundle) -> None:
        self.bundle = bundle
        self.builder = InputBuilder(bundle)
        self.outcomes = PolicyOutcomes(bundle)
        self.policies = {pid: json.loads(info.body) for pid, info in bundle.policies.items()}
        # each policy cut down to its action scope: evaluating these tells which
        # policies can apply to an action, by Cedar's own action hierarchy
        scopes = {
            pid: {
                **est,
                "effect": "permit",
                "principal": {"op": "All"},
                "resource": {"op": "All"},
                "conditions": [],
            }
            for pid, est in self.policies.items()
        }
        self.scopes = cedarpy.PolicySet.from_json_str(
            json.dumps({"staticPolicies": scopes, "templates": {}, "templateLinks": []})
        )

    def principal(
        self, subject: str | None, roles: Sequence[str], attributes: Mapping[str, Any]
    ) -> PrincipalInputs | ClaimError:
        try:
            return self.builder.principal(subject, roles, attributes)
        except ClaimError as exc:
            return exc

    def admits(self, action: str) -> tuple[bool, frozenset[str]]:
        """Whether this side's schema takes ``action`` with the resource the decider
        gives it, and the policies whose action scope admits it (all of them when
        the probe cannot tell: a superset only makes the classes finer)."""
        if action in MODEL_ACTIONS:
            model = min(self.bundle.models, default="review-probe")
            resource: dict[str, str] = {"type": MODEL, "id": model}
        else:
            resource = API_RESOURCE
        request = {
            "principal": {"type": USER, "id": _SWEEP_SUBJECT},
            "action": {"type": ACTION, "id": action},
            "resource": resource,
            "context": _base_context(),
        }
        result = cedarpy.is_authorized(
            request, self.scopes, self.bundle.catalogue, self.bundle.schema
        )
        errors = result.diagnostics.errors
        if errors:
            accepted = not any("failed to build request" in e for e in errors)
            return accepted, frozenset(self.policies)
        return True, frozenset(result.diagnostics.reasons)


@dataclass
class _Case:
    """One class of requests: evaluated once per side for all its members."""

    request: _Request  # the first member seen: a real request, evaluated as is
    source: str
    principal: int
    audit: int = 0  # records of this class
    sweep: int = 0  # sweep requests of this class
    subjects: list[str] = field(default_factory=list)  # recorded subjects, a few
    old: Evaluation | None = None
    new: Evaluation | None = None


class _Replay:
    """Groups requests into cases and evaluates every case against both sides."""

    def __init__(self, old: _Side, new: _Side) -> None:
        self.sides = (old, new)
        self.cases: dict[Hashable, _Case] = {}
        self._groups: dict[tuple[frozenset[str], frozenset[str]], _Group] = {}
        self._probes: dict[str, tuple[bool, _Group]] = {}
        self._inputs: dict[tuple[Any, ...], tuple[tuple[PrincipalInputs | ClaimError, ...], Any]]
        self._inputs = {}
        self._classes: dict[Hashable, int] = {}
        self._raw_class: dict[tuple[Any, ...], int] = {}
        self.representatives: list[tuple[PrincipalInputs | ClaimError, ...]] = []

    def probe(self, action: str) -> tuple[bool, _Group]:
        """(whether some side accepts ``action``, its group)."""
        known = self._probes.get(action)
        if known is not None:
            return known
        (old_ok, old_ids), (new_ok, new_ids) = (side.admits(action) for side in self.sides)
        key = (old_ids, new_ids)
        group = self._groups.get(key)
        if group is None:
            facts = _Facts()
            for side, ids in zip(self.sides, key, strict=True):
                for pid in sorted(ids):
                    facts.add_policy(side.policies[pid])
                facts.add_catalogue(side.bundle)
            group = self._groups[key] = _Group(len(self._groups), facts)
        known = self._probes[action] = (old_ok or new_ok, group)
        return known

    def add(self, request: _Request, source: str, line: int = 0) -> None:
        """Count ``request`` in its case: a recorded one (``source`` names the audit
        file, ``line`` its line) or, with no line, a sweep request."""
        case = self.case_for(request, f"{source}:{line}" if line else source)
        if line:
            case.audit += 1
            subject = request.subject
            if subject and len(case.subjects) < 5 and subject not in case.subjects:
                case.subjects.append(subject)
        else:
            case.sweep += 1

    def case_for(self, request: _Request, source: str = "") -> _Case:
        """The case (class) of ``request``; a new one, with ``request`` as its
        representative, when it is the first of its class."""
        group = self.probe(request.action)[1]
        # repr, not canonical JSON: cheaper, and it tells 1 from True and "1"; claims
        # written in another order only get a principal of their own
        attributes = repr(request.attributes)
        principal = self._principal(group, request, attributes)
        context_key = group.abstraction.context_key(request.context)
        key = (principal, request.action, request.model, context_key)
        case = self.cases.get(key)
        if case is None:
            case = self.cases[key] = _Case(request, source, principal)
        return case

    def _principal(self, group: _Group, request: _Request, attributes: str) -> int:
        raw = (request.subject, request.roles, attributes)
        known = self._raw_class.get((raw, group.index))
        if known is not None:
            return known
        built = self._inputs.get(raw)
        if built is None:
            inputs = tuple(
                side.principal(request.subject, request.roles, request.attributes)
                for side in self.sides
            )
            # a claim refused on one side must not share a class with one accepted
            # there (claims the schema ignores leave the entity as it would be without)
            status = tuple((i.claim, str(i)) if isinstance(i, ClaimError) else None for i in inputs)
            built = self._inputs[raw] = (inputs, status)
        inputs, status = built
        abstraction = group.abstraction
        key = (
            group.index,
            abstraction.principal_key(request.subject, request.roles, request.attributes),
            status,
        )
        pid = self._classes.get(key)
        if pid is None:
            pid = self._classes[key] = len(self.representatives)
            self.representatives.append(inputs)
        self._raw_class[(raw, group.index)] = pid
        return pid

    def evaluate(self, progress: ProgressFn | None) -> None:
        by_principal: dict[int, list[_Case]] = {}
        for case in self.cases.values():
            by_principal.setdefault(case.principal, []).append(case)
        total = len(self.cases)
        done = 0
        for pid, cases in by_principal.items():
            # the context as JSON once for both sides (cedarpy would encode it per call)
            contexts = [json.dumps(case.request.context) for case in cases]
            for index, side in enumerate(self.sides):
                results = _evaluate(side, self.representatives[pid][index], cases, contexts)
                for case, evaluation in zip(cases, results, strict=True):
                    if index == 0:
                        case.old = evaluation
                    else:
                        case.new = evaluation
            done += len(cases)
            if progress is not None:
                progress("evaluating", done, total)


def _evaluate(
    side: _Side,
    principal: PrincipalInputs | ClaimError,
    cases: Sequence[_Case],
    contexts: Sequence[str],
) -> list[Evaluation]:
    """Decide ``cases`` (all of one principal) as the live decider would."""
    results: list[Evaluation | None] = [None] * len(cases)
    pending: list[tuple[int, dict[str, Any]]] = []
    models = side.bundle.models
    for index, case in enumerate(cases):
        request = case.request
        resource: dict[str, str] = API_RESOURCE
        # the decider's order: the catalogue check, then the claims
        if request.action in MODEL_ACTIONS:
            model = request.model or ""
            if model not in models:
                what = f"model {model!r} is" if model else "the request names no model; it"
                results[index] = _refusal("catalogue", f"{what} not in the policy catalogue")
                continue
            resource = {"type": MODEL, "id": model}
        if isinstance(principal, ClaimError):
            denied_by = f"claim:{principal.claim}" if principal.claim else "claims"
            results[index] = _refusal(denied_by, str(principal))
            continue
        pending.append(
            (
                index,
                {
                    "principal": principal.uid,
                    "action": {"type": ACTION, "id": request.action},
                    "resource": resource,
                    "context": contexts[index],
                },
            )
        )
    if pending and not isinstance(principal, ClaimError):  # (a refused principal has none)
        bundle = side.bundle
        for start in range(0, len(pending), _BATCH):
            chunk = pending[start : start + _BATCH]
            answers = cedarpy.is_authorized_batch(
                [r for _, r in chunk], bundle.policy_set, principal.entities, bundle.schema
            )
            for (index, _), answer in zip(chunk, answers, strict=True):
                results[index] = interpret(side.outcomes, answer)
    return [r if r is not None else _refusal("review", "not evaluated") for r in results]


def _refusal(denied_by: str, reason: str) -> Evaluation:
    return Evaluation("deny", (), (), (), (), denied_by, reason)


# --------------------------------------------------------------------------- diff

FindingKind = Literal["new-access", "restriction", "obligations", "reattributed"]
Strength = Literal["weaker", "stronger", "mixed", "changed"]


@dataclass(frozen=True)
class Outcome:
    """One side's decision, normalised for comparison: Cedar lists the determining
    policies in no fixed order, so they are sorted, and a deny by forbids is
    attributed to all of them rather than to whichever Cedar listed first."""

    effect: str
    policies: tuple[str, ...]
    obligations: tuple[str, ...]
    denied_by: str  # what a deny is attributed to when that is not a forbid policy
    reason: str = field(compare=False)

    @classmethod
    def of(cls, evaluation: Evaluation) -> Outcome:
        policies = tuple(sorted(set(evaluation.policies)))
        denied_by = evaluation.denied_by
        if evaluation.effect == "deny" and denied_by in policies:
            denied_by = ""
        return cls(
            evaluation.effect, policies, evaluation.obligations, denied_by, evaluation.reason
        )

    @property
    def decided_by(self) -> str:
        """The policies behind a permit or a forbid, or what else a deny is due to."""
        if self.denied_by:
            return self.denied_by
        return ", ".join(self.policies) or "no permit matched"

    def to_json(self) -> dict[str, Any]:
        return {
            "effect": self.effect,
            "policies": list(self.policies),
            "obligations": list(self.obligations),
            "denied_by": self.denied_by or None,
            "reason": self.reason,
        }


@dataclass
class Finding:
    """Requests whose outcome changes the same way (same OLD and NEW outcome): one
    row of the report, with the roles, actions and models it was seen for."""

    kind: FindingKind
    old: Outcome
    new: Outcome
    example: Example  # a recorded call when there is one, else a sweep request
    strength: Strength | None = None  # for obligation changes
    roles: list[tuple[str, ...]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)  # recorded subjects, a few
    classes: int = 0  # request classes evaluated
    audit_records: int = 0
    sweep_requests: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "old": self.old.to_json(),
            "new": self.new.to_json(),
            "strength": self.strength,
            "roles": [list(r) for r in self.roles],
            "actions": list(self.actions),
            "models": list(self.models),
            "subjects": list(self.subjects),
            "audit_records": self.audit_records,
            "sweep_requests": self.sweep_requests,
            "classes": self.classes,
            "example": self.example.to_json(),
        }


def _parse_obligations(obligations: Iterable[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {"others": set()}
    for obligation in obligations:
        verb, _, arg = obligation.partition(":")
        if verb == "cap_max_tokens" and arg.isdigit():
            parsed["cap"] = int(arg)
        elif verb == "route" and arg:
            parsed["route"] = arg
        elif verb in ("redact", "block") and arg:
            kinds, _, flag = arg.partition(":")
            parsed[verb] = ({k for k in kinds.split(",") if k}, flag == "reversible")
        else:
            parsed["others"].add(obligation)
    return parsed


def _covers(wide: set[str], narrow: set[str]) -> bool:
    return "*" in wide or narrow <= wide


def obligation_strength(old: Sequence[str], new: Sequence[str]) -> Strength:
    """How NEW's obligations compare with OLD's for one permit: ``weaker`` when NEW
    asks less of the call in some way and more in none (a higher or no token cap,
    fewer kinds redacted or blocked, a redaction made reversible, a route or another
    obligation dropped), ``stronger`` for the reverse, ``mixed`` for both, and
    ``changed`` when it is neither (a route to another model)."""
    a, b = _parse_obligations(old), _parse_obligations(new)
    weaker = stronger = False
    if a.get("cap") != b.get("cap"):
        if b.get("cap") is None or (a.get("cap") is not None and b["cap"] > a["cap"]):
            weaker = True
        else:
            stronger = True
    for verb in ("redact", "block"):
        before, after = a.get(verb), b.get(verb)
        if before == after:
            continue
        if after is None:
            weaker = True
        elif before is None:
            stronger = True
        else:
            if not _covers(after[0], before[0]):
                weaker = True
            if not _covers(before[0], after[0]):
                stronger = True
            if after[1] and not before[1]:
                weaker = True  # reversible: the original comes back on this machine
            if before[1] and not after[1]:
                stronger = True
    route_changed = False
    if a.get("route") != b.get("route"):
        if b.get("route") is None:
            weaker = True
        elif a.get("route") is None:
            stronger = True
        else:
            route_changed = True
    if a["others"] - b["others"]:
        weaker = True
    if b["others"] - a["others"]:
        stronger = True
    if weaker and stronger:
        return "mixed"
    if weaker:
        return "weaker"
    if stronger and not route_changed:
        return "stronger"
    return "changed"  # another route, or the same obligations written differently


def _findings(cases: Iterable[_Case]) -> list[Finding]:
    groups: dict[Hashable, Finding] = {}
    for case in cases:
        if case.old is None or case.new is None:
            continue
        old, new = Outcome.of(case.old), Outcome.of(case.new)
        strength: Strength | None = None
        kind: FindingKind
        if old.effect != new.effect:
            kind = "new-access" if new.effect == "permit" else "restriction"
        elif old.effect == "permit" and old.obligations != new.obligations:
            kind = "obligations"
            strength = obligation_strength(old.obligations, new.obligations)
        elif old != new:
            kind = "reattributed"
        else:
            continue
        request = case.request
        finding = groups.get((kind, old, new))
        if finding is None:
            finding = groups[(kind, old, new)] = Finding(
                kind, old, new, _example(request, case.source), strength
            )
        elif finding.example.source == "sweep" and case.audit:
            finding.example = _example(request, case.source)  # a recorded call says more
        roles = tuple(sorted(set(request.roles)))
        if roles not in finding.roles:
            finding.roles.append(roles)
        if request.action not in finding.actions:
            finding.actions.append(request.action)
        if request.model and request.model not in finding.models:
            finding.models.append(request.model)
        for subject in case.subjects:
            if subject not in finding.subjects and len(finding.subjects) < 5:
                finding.subjects.append(subject)
        finding.classes += 1
        finding.audit_records += case.audit
        finding.sweep_requests += case.sweep
    for finding in groups.values():
        finding.roles.sort()
        finding.actions.sort()
        finding.models.sort()
    return sorted(
        groups.values(),
        key=lambda f: (-f.audit_records, -f.sweep_requests, f.new.decided_by, f.old.decided_by),
    )


@dataclass(frozen=True)
class PolicyChange:
    """A policy added, removed or modified between OLD and NEW (matched by id)."""

    id: str
    change: Literal["added", "removed", "modified"]
    effect: str
    file: str
    details: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "change": self.change,
            "effect": self.effect,
            "file": self.file,
            "details": list(self.details),
        }


def policy_changes(old: PolicyBundle, new: PolicyBundle) -> list[PolicyChange]:
    changes: list[PolicyChange] = []
    for pid in sorted(set(old.policies) | set(new.policies)):
        before, after = old.policies.get(pid), new.policies.get(pid)
        if before is None and after is not None:
            changes.append(PolicyChange(pid, "added", after.effect, after.file))
        elif after is None and before is not None:
            changes.append(PolicyChange(pid, "removed", before.effect, before.file))
        elif before is not None and after is not None:
            details: list[str] = []
            if before.effect != after.effect:
                details.append(f"effect {before.effect} -> {after.effect}")
            if before.body != after.body:
                details.append("scope or conditions changed")
            for name in sorted(set(before.annotations) | set(after.annotations)):
                was, now = before.annotations.get(name), after.annotations.get(name)
                if name != "id" and was != now:
                    details.append(f"@{name}: {_show(was)} -> {_show(now)}")
            if before.file != after.file:
                details.append(f"moved from {before.file}")
            if details:
                changes.append(
                    PolicyChange(pid, "modified", after.effect, after.file, tuple(details))
                )
    return changes


def _show(value: str | None) -> str:
    return "(none)" if value is None else json.dumps(value)


# ---------------------------------------------------------------------------- tests


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
        from . import _testing
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


# --------------------------------------------------------------------------- report


@dataclass
class ReviewReport:
    """The result of a review; :meth:`to_markdown` for a pull request, :meth:`to_json`
    for machines."""

    old: SideSummary
    new: SideSummary
    replay: ReplayStats
    new_access: list[Finding] = field(default_factory=list)
    restrictions: list[Finding] = field(default_factory=list)
    obligation_changes: list[Finding] = field(default_factory=list)
    reattributed: list[Finding] = field(default_factory=list)
    policy_changes: list[PolicyChange] = field(default_factory=list)
    tests: TestSummary | None = None
    max_rows: int = DEFAULT_MAX_ROWS

    @property
    def loosened_obligations(self) -> list[Finding]:
        """Obligation changes that ask less of a permitted call (all but ``stronger``)."""
        return [f for f in self.obligation_changes if f.strength != "stronger"]

    @property
    def grants_new_access(self) -> bool:
        """NEW permits a request OLD denied, or permits one with obligations that ask
        less of it (a higher cap, a dropped redaction, another route)."""
        return bool(self.new_access or self.loosened_obligations)

    @property
    def new_loaded(self) -> bool:
        return self.new.loaded

    def exit_code(self, *, allow_new_access: bool = False) -> int:
        """0 when NEW may be merged as far as the review can tell, 1 when NEW does not
        load or grants new access (unless that is allowed)."""
        if not self.new_loaded:
            return 1
        return 1 if self.grants_new_access and not allow_new_access else 0

    # ---------------------------------------------------------------- json

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": REVIEW_SCHEMA,
            "old": self.old.to_json(),
            "new": self.new.to_json(),
            "grants_new_access": self.grants_new_access,
            "summary": {
                "new_access": len(self.new_access),
                "new_access_records": sum(f.audit_records for f in self.new_access),
                "restrictions": len(self.restrictions),
                "restriction_records": sum(f.audit_records for f in self.restrictions),
                "obligation_changes": len(self.obligation_changes),
                "loosened_obligations": len(self.loosened_obligations),
                "reattributed": len(self.reattributed),
                "policies_added": sum(1 for c in self.policy_changes if c.change == "added"),
                "policies_removed": sum(1 for c in self.policy_changes if c.change == "removed"),
                "policies_modified": sum(1 for c in self.policy_changes if c.change == "modified"),
            },
            "replay": self.replay.to_json(),
            "new_access": [f.to_json() for f in self.new_access],
            "restrictions": [f.to_json() for f in self.restrictions],
            "obligation_changes": [f.to_json() for f in self.obligation_changes],
            "reattributed": [f.to_json() for f in self.reattributed],
            "policy_changes": [c.to_json() for c in self.policy_changes],
            "tests": self.tests.to_json() if self.tests else None,
        }

    # ------------------------------------------------------------ markdown

    def to_markdown(self) -> str:
        lines = [f"## Policy review: `{_code(self.old.spec)}` → `{_code(self.new.spec)}`", ""]
        lines += [self._headline(), ""]
        if self.new.loaded:
            lines += [self._coverage(), ""]
            lines += self._flips(
                "New access (deny → permit)",
                self.new_access,
                "NEW permits these requests; OLD denied them.",
            )
            lines += self._flips(
                "Restrictions (permit → deny)",
                self.restrictions,
                "NEW denies these requests; OLD permitted them.",
            )
            lines += self._obligations()
            lines += self._reattributed()
            lines += self._policies()
        lines += self._validation()
        return "\n".join(lines).rstrip() + "\n"

    def _headline(self) -> str:
        if not self.new.loaded:
            return (
                "**❌ NEW does not load**, so nothing was replayed: a client would refuse "
                "to start with it, and a running one would keep its last good version."
            )
        parts = [
            f"{len(self.new_access)} new-access change(s)",
            f"{len(self.restrictions)} restriction(s)",
            f"{len(self.obligation_changes)} obligation change(s)"
            + (
                f" ({len(self.loosened_obligations)} loosened)" if self.loosened_obligations else ""
            ),
            f"{len(self.policy_changes)} policy change(s)",
        ]
        counts = ", ".join(parts)
        if self.grants_new_access:
            records = sum(f.audit_records for f in self.new_access)
            recorded = f"; {records:,} recorded call(s) newly permitted" if records else ""
            return f"**⚠️ NEW grants new access**: {counts}{recorded}."
        return f"**✅ NEW grants no new access**: {counts}."

    def _coverage(self) -> str:
        r = self.replay
        bits = []
        if r.audit_files:
            files = ", ".join(f"`{_code(Path(f).name)}`" for f in r.audit_files)
            bits.append(f"Replayed {r.replayed:,} recorded call(s) from {files}")
        if r.sweep_requests:
            sampled = (
                f", a sample (seed {r.sweep_seed}) of {r.sweep_space:,} combinations"
                if r.sweep_sampled
                else f", all {r.sweep_space:,} combinations"
            )
            bits.append(
                f"{'and ' if bits else 'Replayed '}{r.sweep_requests:,} sweep request(s) "
                f"over the values the policies compare with{sampled}"
            )
        if not bits:
            text = "No requests were replayed (no audit log given and the sweep is off)."
        else:
            text = (
                " ".join(bits) + f"; {r.classes:,} request classes evaluated against each "
                f"side in {r.seconds:.1f} s."
            )
        skipped = []
        if r.skipped_no_context:
            skipped.append(
                f"{r.skipped_no_context:,} record(s) made without a policy engine "
                "(no recorded policy context)"
            )
        if r.malformed:
            notes = "; ".join(r.malformed_notes)
            more = (
                f"; and {r.malformed - len(r.malformed_notes)} more"
                if r.malformed > len(r.malformed_notes)
                else ""
            )
            skipped.append(f"{r.malformed:,} malformed line(s) ({_cell(notes)}{more})")
        if skipped:
            text += " Skipped: " + "; ".join(skipped) + "."
        return text

    def _capped(self, rows: Sequence[Any]) -> tuple[Sequence[Any], str]:
        shown = rows[: self.max_rows]
        more = len(rows) - len(shown)
        return shown, (f"_… and {more} more (see `--json`)._" if more > 0 else "")

    def _flips(self, title: str, findings: Sequence[Finding], lead: str) -> list[str]:
        lines = [f"### {title}: {len(findings)}", ""]
        if not findings:
            return [*lines, "None.", ""]
        lines += [
            lead,
            "",
            "| OLD | NEW | example request | roles | actions · models | recorded | sweep |",
            "|---|---|---|---|---|---:|---:|",
        ]
        shown, more = self._capped(findings)
        for f in shown:
            cells = [
                _cell(_outcome_text(f.old)),
                _cell(_outcome_text(f.new)),
                _request_text(f),
                _roles_text(f.roles),
                _scope_text(f),
                f"{f.audit_records:,}",
                f"{f.sweep_requests:,}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if more:
            lines.append(more)
        return [*lines, ""]

    def _obligations(self) -> list[str]:
        rows = self.obligation_changes
        lines = [f"### Obligation changes: {len(rows)}", ""]
        if not rows:
            return [*lines, "None.", ""]
        lines += [
            "Both sides permit these requests, with different obligations.",
            "",
            "| change | OLD obligations | NEW obligations | permitted by (NEW) | example request "
            "| roles | actions · models | recorded | sweep |",
            "|---|---|---|---|---|---|---|---:|---:|",
        ]
        order = {"weaker": 0, "mixed": 1, "changed": 2, "stronger": 3}
        shown, more = self._capped(sorted(rows, key=lambda f: order.get(f.strength or "", 4)))
        for f in shown:
            label = {
                "weaker": "**⚠️ weaker**",
                "mixed": "**⚠️ mixed**",
                "changed": "**⚠️ changed**",
            }.get(f.strength or "", "stronger")
            cells = [
                label,
                _cell(" ".join(f.old.obligations) or "(none)"),
                _cell(" ".join(f.new.obligations) or "(none)"),
                _cell(f.new.decided_by),
                _request_text(f),
                _roles_text(f.roles),
                _scope_text(f),
                f"{f.audit_records:,}",
                f"{f.sweep_requests:,}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if more:
            lines.append(more)
        return [*lines, ""]

    def _reattributed(self) -> list[str]:
        rows = self.reattributed
        if not rows:
            return []
        lines = [
            f"<details><summary>Same decision, other determining policies: {len(rows)}</summary>",
            "",
            "| OLD | NEW | example request | roles | actions · models | recorded | sweep |",
            "|---|---|---|---|---|---:|---:|",
        ]
        shown, more = self._capped(rows)
        for f in shown:
            cells = [
                _cell(_outcome_text(f.old)),
                _cell(_outcome_text(f.new)),
                _request_text(f),
                _roles_text(f.roles),
                _scope_text(f),
                f"{f.audit_records:,}",
                f"{f.sweep_requests:,}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if more:
            lines.append(more)
        return [*lines, "", "</details>", ""]

    def _policies(self) -> list[str]:
        rows = self.policy_changes
        lines = [f"### Policy changes: {len(rows)}", ""]
        if not rows:
            return [*lines, "None.", ""]
        lines += ["| policy | change | effect | file | details |", "|---|---|---|---|---|"]
        shown, more = self._capped(rows)
        for c in shown:
            lines.append(
                f"| `{_code(c.id)}` | {c.change} | {c.effect} | `{_code(c.file)}` | "
                f"{_cell('; '.join(c.details)) or '—'} |"
            )
        if more:
            lines.append(more)
        return [*lines, ""]

    def _validation(self) -> list[str]:
        lines = ["### Validation and tests", ""]
        for name, side in (("OLD", self.old), ("NEW", self.new)):
            where = f"`{_code(side.spec)}` ({_code(side.location)})"
            if side.loaded:
                models = ", ".join(side.models) or "none"
                revision = (side.revision or "").removeprefix("sha256:")[:12]
                lines.append(
                    f"- {name} {where}: ✅ loads and validates: {side.policies} policies, "
                    f"models {models}, revision `{revision}`."
                )
            else:
                lines.append(f"- {name} {where}: ❌ **does not load**: {_cell(side.error or '')}")
        tests = self.tests
        if tests is None:
            pass
        elif tests.status in ("unavailable", "none"):
            lines.append(f"- Decision tests (NEW): not run ({tests.message}).")
        elif tests.status == "error":
            lines.append(f"- Decision tests (NEW): ❌ could not run: {_cell(tests.message)}")
        else:
            mark = "✅" if tests.status == "passed" else "❌"
            text = (
                f"- Decision tests (NEW): {mark} {tests.passed} passed, {len(tests.failed)} failed"
            )
            if tests.failed:
                text += " (" + ", ".join(f"`{_code(t)}`" for t in tests.failed[:10]) + ")"
            if tests.errors:
                text += f"; {len(tests.errors)} malformed: " + _cell("; ".join(tests.errors[:5]))
            if tests.uncovered:
                text += "; no test is decided by " + ", ".join(
                    f"`{_code(p)}`" for p in tests.uncovered[:10]
                )
            lines.append(text + ".")
        return [*lines, ""]


def _outcome_text(outcome: Outcome) -> str:
    if outcome.effect == "permit":
        text = "permit by " + outcome.decided_by
        if outcome.obligations:
            text += " [" + " ".join(outcome.obligations) + "]"
        return text
    return "deny by " + outcome.decided_by


def _request_text(finding: Finding) -> str:
    """The example request, in one cell: who, what, on which model, and when."""
    e = finding.example
    subject = _cell(e.subject or "anonymous")
    who = [", ".join(e.roles) or "no roles"]
    claims = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(e.attributes.items()))
    if claims:
        who.append(claims if len(claims) <= 60 else claims[:59] + "…")
    roles = _cell("; ".join(who))
    target = f" on `{_code(e.model)}`" if e.model else ""
    parts = [f"{subject} ({roles}): `{_code(e.action)}`{target}"]
    if e.classification:
        parts.append(_cell(e.classification))
    if e.hour_utc is not None:
        parts.append(_when(e))
    source = "sweep" if e.source == "sweep" else f"`{_code(e.source)}`"
    return ", ".join(parts) + f" ({source})"


def _roles_text(roles: Sequence[tuple[str, ...]], limit: int = 4) -> str:
    shown = ["+".join(r) if r else "(none)" for r in roles[:limit]]
    more = f" and {len(roles) - limit} more" if len(roles) > limit else ""
    return _cell(", ".join(shown) + more)


def _scope_text(finding: Finding) -> str:
    actions = ", ".join(f"`{_code(a)}`" for a in finding.actions)
    models = ", ".join(f"`{_code(m)}`" for m in finding.models)
    return f"{actions} · {models}" if models else actions


def _when(example: Example) -> str:
    if example.hour_utc is None:
        return "—"
    day = (
        ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[example.weekday - 1]
        if example.weekday is not None and 1 <= example.weekday <= 7
        else "?"
    )
    return f"{example.hour_utc:02d}h {day}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _code(text: str) -> str:
    """Text safe inside a `code span` in a table cell."""
    return text.replace("`", "'").replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------- entry


def review(
    old: str,
    new: str,
    *,
    audit: Sequence[Path | str] = (),
    sweep: bool = True,
    sweep_limit: int = SWEEP_LIMIT,
    max_rows: int = DEFAULT_MAX_ROWS,
    cwd: Path | None = None,
    run_tests: bool = True,
    progress: ProgressFn | None = None,
) -> ReviewReport:
    """Review the change from ``old`` to ``new`` (folders or git revisions).

    Raises :class:`SecureDSError` when a side cannot be found, OLD does not load (a
    review needs a working baseline), or an audit log cannot be read. A NEW that
    does not load is a finding: the report says so and :meth:`ReviewReport.exit_code`
    is 1.
    """
    if max_rows < 1:
        raise SecureDSError(
            f"max_rows must be at least 1 (got {max_rows}).", hint="Pass --max-rows 1 or more."
        )
    started = time.perf_counter()
    here = cwd or Path.cwd()
    with ExitStack() as stack:
        old_kind, old_where, old_dir = _resolve(old, stack, here)
        new_kind, new_where, new_dir = _resolve(new, stack, here)
        try:
            old_bundle = load_bundle(old_dir)
        except PolicyError as exc:
            raise SecureDSError(
                f"OLD ({old}) does not load, so there is nothing to compare with: {exc}",
                hint="Review against a revision whose policies load (an earlier commit).",
            ) from None
        old_summary = _summary(old, old_kind, old_where, old_bundle, None)
        try:
            new_bundle = load_bundle(new_dir)
        except PolicyError as exc:
            stats = ReplayStats(audit_files=[str(p) for p in audit])
            stats.seconds = time.perf_counter() - started
            return ReviewReport(
                old=old_summary,
                new=_summary(new, new_kind, new_where, None, str(exc)),
                replay=stats,
                max_rows=max_rows,
            )
        report = _review_bundles(
            old_bundle,
            new_bundle,
            audit=audit,
            sweep=sweep,
            sweep_limit=sweep_limit,
            progress=progress,
        )
        report.old = old_summary
        report.new = _summary(new, new_kind, new_where, new_bundle, None)
        report.max_rows = max_rows
        if run_tests:
            report.tests = _run_tests(new_bundle)  # the test files live in the temp folder
        report.replay.seconds = time.perf_counter() - started
        return report


def review_bundles(
    old: PolicyBundle,
    new: PolicyBundle,
    *,
    audit: Sequence[Path | str] = (),
    sweep: bool = True,
    sweep_limit: int = SWEEP_LIMIT,
    max_rows: int = DEFAULT_MAX_ROWS,
    progress: ProgressFn | None = None,
) -> ReviewReport:
    """Review two loaded bundles (no git, no decision tests): the replay and diff."""
    started = time.perf_counter()
    report = _review_bundles(
        old, new, audit=audit, sweep=sweep, sweep_limit=sweep_limit, progress=progress
    )
    report.max_rows = max_rows
    report.replay.seconds = time.perf_counter() - started
    return report


def _review_bundles(
    old_bundle: PolicyBundle,
    new_bundle: PolicyBundle,
    *,
    audit: Sequence[Path | str],
    sweep: bool,
    sweep_limit: int,
    progress: ProgressFn | None,
) -> ReviewReport:
    replay = _Replay(_Side(old_bundle), _Side(new_bundle))
    stats = ReplayStats(audit_files=[str(p) for p in audit])
    for path in audit:
        label = Path(path).name
        for request, line in _audit_requests(Path(path), stats, progress):
            replay.add(request, label, line)
    if sweep:
        for request in _sweep(replay, sweep_limit, stats):
            stats.sweep_requests += 1
            replay.add(request, "sweep")
    stats.classes = len(replay.cases)
    replay.evaluate(progress)
    findings = _findings(replay.cases.values())
    return ReviewReport(
        old=_summary("OLD", "folder", str(old_bundle.directory), old_bundle, None),
        new=_summary("NEW", "folder", str(new_bundle.directory), new_bundle, None),
        replay=stats,
        new_access=[f for f in findings if f.kind == "new-access"],
        restrictions=[f for f in findings if f.kind == "restriction"],
        obligation_changes=[f for f in findings if f.kind == "obligations"],
        reattributed=[f for f in findings if f.kind == "reattributed"],
        policy_changes=policy_changes(old_bundle, new_bundle),
    )


def _summary(
    spec: str,
    kind: Literal["folder", "git"],
    where: str,
    bundle: PolicyBundle | None,
    error: str | None,
) -> SideSummary:
    return SideSummary(
        spec=spec,
        kind=kind,
        location=where,
        revision=bundle.revision if bundle else None,
        policies=len(bundle.policies) if bundle else 0,
        models=tuple(sorted(bundle.models)) if bundle else (),
        error=error,
    )
