"""The requests a review replays: the calls recorded in audit logs (streamed, so
memory stays flat; a malformed line is counted and named, never fatal) and the
generated sweep over the values the policies compare attributes with. Also
:class:`Example`, a request as the report shows it, and :class:`ReplayStats`."""

from __future__ import annotations

import bisect
import json
import random
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from ...audit import is_checkpoint_line
from ...audit._record import RECORD_SCHEMA
from ...errors import SecureDSError
from ...guard._call import Action
from .._inputs import MODEL_ACTIONS
from ._common import _MISSING, _SWEEP_SUBJECT, ProgressFn, _base_context, _Request
from ._facts import Abstractor, _Abstraction, _abstractor, _Facts, _Group, _Reads
from ._replay import _Replay

SWEEP_LIMIT = 20_000  # combinations evaluated at most; a larger space is sampled
SWEEP_SEED = 8705  # fixed, so two runs of a review sample the same requests
_MAX_LINE_BYTES = 1024 * 1024
_MALFORMED_NOTES = 5  # malformed lines named in the report; the rest are counted
_SWEEP_OTHER = "sweep-other"  # a string value that matches no literal
_LEVELS = ("unclassified", "public", "internal", "confidential", "secret")


# ---------------------------------------------------------------------- recorded


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
            if is_checkpoint_line(line):
                continue  # the log's own signed checkpoint, not a call
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


def _sweep(replay: _Replay, limit: int, stats: ReplayStats) -> Iterator[_Request]:
    """Requests over the values the policies compare attributes with, per action
    group (see the package docstring): every combination when there are at most
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
