"""What the policies read, and the keys that group requests by it.

:class:`_Facts` walks Cedar's JSON form (EST) of a set of policies and records how
each attribute is read; :class:`_Abstraction` turns that into keys for principals and
contexts; :class:`_Group` holds them for the actions the same policies apply to. The
invariant (see the package docstring): a key is never coarser than the policies can
see, so requests with one key get one decision from either side.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._bundle import NAMESPACE, PolicyBundle
from .._inputs import USER
from ._common import _MISSING

_I64 = (-(2**63), 2**63 - 1)


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


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
    """Keys for the principals and contexts of one action group (see the package
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
