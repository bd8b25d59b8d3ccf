"""Decision tests kept beside the policies (``tests/*.json`` in the policy folder).

A test file holds the test cases of Cedar's own CLI (``cedar run-tests``): a JSON
list of objects ::

    {
      "name": "engineers may chat on code models",        (optional; also "description")
      "request": {"principal": "SecureDS::User::\\"alice\\"",
                  "action": "SecureDS::Action::\\"chat\\"",
                  "resource": "SecureDS::Model::\\"deepseek-flash\\"",
                  "context": {...the CallContext record...}},
      "entities": [{"uid": {...}, "attrs": {...}, "parents": [...]}],
      "decision": "allow",                                 ("allow" or "deny")
      "reason": ["engineers-use-code-models"],             (determining policy ids)
      "num_errors": 0                                      (optional here)
    }

``principal``, ``action`` and ``resource`` are Cedar entity uids, as Cedar's
surface syntax (``"SecureDS::User::\\"alice\\""``) or as ``{"type", "id"}``.
``entities`` may also name a JSON file beside the test file, as in Cedar.

What secure-ds does differently from ``cedar run-tests``, and why:

* policy ids are the ``@id`` annotations (``<file>#<n>`` for a policy without one),
  the ids secure-ds puts in decisions and audit records;
* the model catalogue (``entities.json``) is merged in under the case's entities
  (a case entity with the same uid replaces the catalogue's), so a case needs to
  give only its principal;
* the request and the entities are always validated against the folder's schema,
  as the live decide stage does;
* ``reason`` must *equal* the determining policies (Cedar only checks that they
  include it), so a test notices when another policy starts deciding the call;
  ``[]`` says no policy determined it (a deny because no permit matched);
* ``num_errors`` may be left out and then means 0 (Cedar requires it): an
  evaluation error makes the live decide stage deny, and a test that passed while
  a policy errored would hide a broken policy;
* ``decision`` is the decision the live decide stage reaches: Cedar's, except that
  an evaluation error or conflicting obligations turn an allow into a deny (fail
  closed), exactly as :func:`~secure_ds.policy.interpret` does;
* one extension: ``"obligations": [...]``, the merged obligations an allow hands to
  the enforce stage (compared as a set; ``[]`` for none; only on an allow).

A policy is *covered* when it is among the determining policies of some case; the
others are listed as not exercised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy

from ._bundle import NAMESPACE, PolicyBundle
from ._decider import Evaluation, PolicyOutcomes, interpret
from ._inputs import call_context

__all__ = [
    "CaseError",
    "CaseProblem",
    "CaseResult",
    "TestRun",
    "authorize",
    "case_entities",
    "parse_request",
    "parse_uid",
    "run_policy_tests",
]

MAX_TEST_FILE_BYTES = 8 * 1024 * 1024
_CASE_KEYS = frozenset(
    {
        "name",
        "description",
        "request",
        "entities",
        "decision",
        "reason",
        "num_errors",
        "obligations",
    }
)
_REQUEST_KEYS = frozenset({"principal", "action", "resource", "context"})
_UID = re.compile(r'(?P<type>[A-Za-z_]\w*(?:::[A-Za-z_]\w*)*)::"(?P<id>(?:[^"\\]|\\.)*)"', re.S)
_ESCAPE = re.compile(r"\\(u\{[0-9a-fA-F]{1,6}\}|.)", re.S)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\", '"': '"', "'": "'"}
_UID_FORMS = (
    'write it as Cedar does, "SecureDS::User::\\"alice\\"", '
    'or as {"type": "SecureDS::User", "id": "alice"}'
)


class CaseProblem(ValueError):
    """A request, entity list or test case cannot be evaluated; says what to fix."""


@dataclass(frozen=True)
class CaseResult:
    """One evaluated case. ``differences`` is empty when it passed."""

    file: str
    index: int
    name: str | None
    expected: str  # "allow" or "deny"
    actual: str
    expected_reasons: tuple[str, ...]
    evaluation: Evaluation
    differences: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.name or f"{self.file}[{self.index}]"

    @property
    def passed(self) -> bool:
        return not self.differences

    def as_json(self) -> dict[str, Any]:
        ev = self.evaluation
        return {
            "file": self.file,
            "index": self.index,
            "name": self.name,
            "passed": self.passed,
            "expected": self.expected,
            "actual": self.actual,
            "expected_reasons": list(self.expected_reasons),
            "actual_reasons": list(ev.policies),
            "obligations": list(ev.obligations),
            "errors": list(ev.errors),
            "reason": ev.reason,
            "differences": list(self.differences),
        }


@dataclass(frozen=True)
class CaseError:
    """A malformed test file or case (``index`` is None for the file as a whole)."""

    file: str
    index: int | None
    name: str | None
    message: str

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.file if self.index is None else f"{self.file}[{self.index}]"

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "index": self.index, "name": self.name, "error": self.message}


@dataclass
class TestRun:
    """The outcome of :func:`run_policy_tests`."""

    __test__ = False  # not a pytest test class, whatever its name

    files: list[str] = field(default_factory=list)
    passed: list[CaseResult] = field(default_factory=list)
    failed: list[CaseResult] = field(default_factory=list)
    errors: list[CaseError] = field(default_factory=list)
    covered: list[str] = field(default_factory=list)  # policy ids, in folder order
    uncovered: list[str] = field(default_factory=list)

    @property
    def results(self) -> list[CaseResult]:
        return sorted(self.passed + self.failed, key=lambda r: (r.file, r.index))

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors

    @property
    def case_count(self) -> int:
        return len(self.passed) + len(self.failed) + sum(e.index is not None for e in self.errors)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "files": self.files,
            "passed": len(self.passed),
            "failed": len(self.failed),
            "cases": [r.as_json() for r in self.results],
            "errors": [e.as_json() for e in self.errors],
            "covered": self.covered,
            "uncovered": self.uncovered,
        }


def run_policy_tests(bundle: PolicyBundle, files: Sequence[Path] | None = None) -> TestRun:
    """Run the decision tests in ``files`` (default: the folder's ``tests/*.json``)."""
    run = TestRun()
    outcomes = PolicyOutcomes(bundle)
    determining: set[str] = set()
    for path in bundle.test_files if files is None else files:
        name = _display_name(bundle.directory, path)
        run.files.append(name)
        try:
            cases = _load_cases(path)
        except CaseProblem as exc:
            run.errors.append(CaseError(name, None, None, str(exc)))
            continue
        for index, case in enumerate(cases):
            label = case.get("name") if isinstance(case, dict) else None
            label = label if isinstance(label, str) else None
            try:
                result = _run_case(bundle, outcomes, path, name, index, case)
            except CaseProblem as exc:
                run.errors.append(CaseError(name, index, label, str(exc)))
                continue
            determining.update(result.evaluation.policies)
            (run.passed if result.passed else run.failed).append(result)
    run.covered = [p for p in bundle.policies if p in determining]
    run.uncovered = [p for p in bundle.policies if p not in determining]
    return run


def _display_name(folder: Path, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path)


def _load_cases(path: Path) -> list[Any]:
    try:
        if not path.is_file():
            raise CaseProblem(f"{path} is not a regular file; a test file is a JSON file")
        size = path.stat().st_size
        if size > MAX_TEST_FILE_BYTES:
            raise CaseProblem(
                f"{path} is {size} bytes, over the {MAX_TEST_FILE_BYTES}-byte limit for a "
                "test file; split it into several files"
            )
        cases = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise CaseProblem(f"cannot read {path} ({exc.strerror}); check its permissions") from None
    except UnicodeDecodeError:
        raise CaseProblem(f"{path} is not UTF-8 text; save it as UTF-8") from None
    except ValueError as exc:
        raise CaseProblem(f"{path} is not valid JSON ({exc}); fix the JSON") from None
    if not isinstance(cases, list):
        raise CaseProblem(
            f"{path} must hold a JSON list of test cases (Cedar's run-tests format), "
            f"not a JSON {type(cases).__name__}"
        )
    return cases


def _run_case(
    bundle: PolicyBundle,
    outcomes: PolicyOutcomes,
    path: Path,
    file: str,
    index: int,
    case: Any,
) -> CaseResult:
    if not isinstance(case, dict):
        raise CaseProblem(
            f"a test case must be a JSON object with request, entities, decision and "
            f"reason, not a JSON {type(case).__name__}"
        )
    unknown = sorted(set(case) - _CASE_KEYS)
    if unknown:
        raise CaseProblem(
            f"unknown key(s) {', '.join(map(repr, unknown))}; a case has "
            f"{', '.join(sorted(_CASE_KEYS))} (a misspelt key would silently skip a check)"
        )
    for key in ("request", "decision", "reason"):
        if key not in case:
            raise CaseProblem(f"the case has no {key!r}; {_KEY_HELP[key]}")
    name = case.get("name")
    if name is not None and not isinstance(name, str):
        raise CaseProblem("'name' must be a string")
    expected = case["decision"]
    if expected not in ("allow", "deny"):
        raise CaseProblem(f"'decision' is {expected!r}; {_KEY_HELP['decision']}")
    expected_reasons = _string_list(case["reason"], "reason")
    num_errors = case.get("num_errors", 0)
    if type(num_errors) is not int or num_errors < 0:
        raise CaseProblem(f"'num_errors' is {num_errors!r}; {_KEY_HELP['num_errors']}")
    expected_obligations = None
    if "obligations" in case:
        expected_obligations = _string_list(case["obligations"], "obligations")
        if expected == "deny" and expected_obligations:
            raise CaseProblem(
                "'obligations' are given for a deny; obligations come only with an allow "
                "(remove them, or expect allow)"
            )

    request = parse_request(case["request"])
    entities = case_entities(bundle, case.get("entities", []), path.parent)
    evaluation = interpret(outcomes, authorize(bundle, request, entities))
    actual = "allow" if evaluation.effect == "permit" else "deny"

    differences: list[str] = []
    if actual != expected:
        why = f" ({evaluation.reason})" if actual == "deny" and evaluation.reason else ""
        differences.append(f"decision: expected {expected}, got {actual}{why}")
    if set(expected_reasons) != set(evaluation.policies):
        differences.append(
            f"determining policies: expected {_listed(expected_reasons)}, "
            f"got {_listed(evaluation.policies)}"
        )
        strangers = [r for r in expected_reasons if r not in bundle.policies]
        if strangers:
            differences.append(
                f"{_listed(strangers)} in 'reason' is not a policy id of this folder "
                "(ids are the @id annotations)"
            )
    if len(evaluation.errors) != num_errors:
        said = f": {'; '.join(evaluation.errors)}" if evaluation.errors else ""
        differences.append(
            f"evaluation errors: expected {num_errors}, got {len(evaluation.errors)}{said}"
        )
    if expected_obligations is not None and set(expected_obligations) != set(
        evaluation.obligations
    ):
        differences.append(
            f"obligations: expected {_listed(expected_obligations)}, "
            f"got {_listed(evaluation.obligations)}"
        )
    return CaseResult(
        file=file,
        index=index,
        name=name,
        expected=expected,
        actual=actual,
        expected_reasons=tuple(expected_reasons),
        evaluation=evaluation,
        differences=tuple(differences),
    )


_KEY_HELP = {
    "request": "give the request as "
    '{"principal": ..., "action": ..., "resource": ..., "context": {...}}',
    "decision": 'it must be "allow" or "deny"',
    "reason": "list the ids of the policies expected to determine the decision ([] when none does)",
    "num_errors": "it must be a whole number of evaluation errors (0 or more)",
}


def _string_list(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CaseProblem(f"{key!r} must be a list of strings, not {json.dumps(value)[:80]}")
    return value


def _listed(items: Sequence[str]) -> str:
    return "[" + ", ".join(sorted(items)) + "]"


# ------------------------------------------------------- requests and entities


def parse_uid(value: Any, what: str) -> dict[str, str]:
    """An entity uid from Cedar's surface syntax or ``{"type", "id"}``."""
    if isinstance(value, dict):
        if set(value) == {"__entity"} and isinstance(value["__entity"], dict):
            value = value["__entity"]
        kind, ident = value.get("type"), value.get("id")
        if isinstance(kind, str) and isinstance(ident, str) and set(value) == {"type", "id"}:
            return {"type": kind, "id": ident}
        raise CaseProblem(f"{what} {json.dumps(value)[:80]} is not an entity uid; {_UID_FORMS}")
    if isinstance(value, str):
        match = _UID.fullmatch(value.strip())
        if match:
            return {"type": match.group("type"), "id": _unescape(match.group("id"))}
        raise CaseProblem(f"{what} {value!r} is not an entity uid; {_UID_FORMS}")
    raise CaseProblem(f"{what} is missing or not an entity uid; {_UID_FORMS}")


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("u{"):
            return chr(int(code[2:-1], 16))
        return _ESCAPES.get(code, code)

    return _ESCAPE.sub(one, text)


def parse_request(raw: Any) -> dict[str, Any]:
    """A Cedar request (uids as dicts) from a test case's or a file's ``request``."""
    if not isinstance(raw, dict):
        raise CaseProblem(f"'request' must be a JSON object; {_KEY_HELP['request']}")
    unknown = sorted(set(raw) - _REQUEST_KEYS)
    if unknown:
        raise CaseProblem(
            f"the request has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"it has {', '.join(sorted(_REQUEST_KEYS))}"
        )
    context = raw.get("context", {})
    if not isinstance(context, dict):
        raise CaseProblem("request.context must be a JSON object (the schema's CallContext)")
    return {
        "principal": parse_uid(raw.get("principal"), "request.principal"),
        "action": parse_uid(raw.get("action"), "request.action"),
        "resource": parse_uid(raw.get("resource"), "request.resource"),
        "context": context,
    }


def case_entities(bundle: PolicyBundle, raw: Any, base: Path) -> list[Any]:
    """The catalogue with the case's entities merged over it (same uid: the case's)."""
    if isinstance(raw, str):
        raw = _entities_file(raw, base)
    if not isinstance(raw, list):
        raise CaseProblem(
            "'entities' must be a list of Cedar entities "
            '([{"uid": {...}, "attrs": {...}, "parents": [...]}]) or a JSON file name'
        )
    replaced = {key for key in map(_uid_key, raw) if key is not None}
    kept = [e for e in bundle.catalogue_json if _uid_key(e) not in replaced]
    return [*kept, *raw]


def _entities_file(name: str, base: Path) -> Any:
    path = (base / name).resolve()
    if not path.is_relative_to(base.resolve()):
        raise CaseProblem(
            f"entities file {name!r} is outside the test file's folder; keep it beside the tests"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CaseProblem(f"cannot read entities file {name!r} ({exc.strerror})") from None
    except ValueError as exc:
        raise CaseProblem(f"entities file {name!r} is not valid JSON ({exc})") from None


def _uid_key(entity: Any) -> tuple[str, str] | None:
    uid = entity.get("uid") if isinstance(entity, dict) else None
    if isinstance(uid, dict) and isinstance(uid.get("__entity"), dict):
        uid = uid["__entity"]
    if isinstance(uid, dict) and isinstance(uid.get("type"), str):
        return uid["type"], str(uid.get("id"))
    return None


def authorize(
    bundle: PolicyBundle, request: Mapping[str, Any], entities: list[Any]
) -> cedarpy.AuthzResult:
    """Evaluate against the folder, schema-checked; a request or entity list Cedar
    cannot build is a :class:`CaseProblem` saying what is wrong with it."""
    result = cedarpy.is_authorized(dict(request), bundle.policy_set, entities, bundle.schema)
    if result.decision is not cedarpy.Decision.NoDecision:
        return result
    problem = result.diagnostics.errors[0] if result.diagnostics.errors else "no decision"
    raise CaseProblem(_explain_failure(bundle, request, problem))


def _explain_failure(bundle: PolicyBundle, request: Mapping[str, Any], problem: str) -> str:
    schema = next((n for n in bundle.sources if n.endswith(".cedarschema")), "the schema")
    fix = f"Make it match {schema}."
    if problem.startswith("failed to parse entities"):
        # Cedar echoes the whole entity list first; keep only what it says about it,
        # without a position in JSON the user never wrote (the merged list)
        detail = problem.rsplit("]: ", 1)[-1]
        detail = re.sub(r" at line \d+ column \d+$", "", detail)
        return f"the entities do not fit the schema: {detail}. {fix}"
    detail = problem.removeprefix("failed to build request: ")
    if "is not valid for" in detail and detail.startswith("context"):
        field_problem = _context_field_problem(bundle, request)
        detail = field_problem or "the context does not match the schema's context type"
    elif "is not declared in the schema" in detail:
        bare = re.search(r"type `([^`:]+)`", detail)
        if bare:
            fix = f"Entity types are namespaced: write {NAMESPACE}::{bare.group(1)}."
    return f"the request does not fit the schema: {detail}. {fix}"


def _context_field_problem(bundle: PolicyBundle, request: Mapping[str, Any]) -> str | None:
    """Which context field has the wrong type. Cedar says only that the context as a
    whole is not valid; so put each field in turn into a context that is (the one the
    live guard sends) and see which one breaks it. None for a schema whose context is
    not secure-ds's."""
    good = call_context(
        level="public",
        findings=(),
        max_tokens=0,
        stream=False,
        started_at=0.0,
        auth="jwt",
        certificate_bound=True,
        cert_sha256=None,
        source_ip="127.0.0.1",
    )

    def builds(context: dict[str, Any]) -> bool:
        probe = {**request, "context": context}
        result = cedarpy.is_authorized(probe, "", [], bundle.schema)
        return result.decision is not cedarpy.Decision.NoDecision

    if not builds(good):
        return None
    for key, value in request["context"].items():
        if not builds({**good, key: value}):
            return (
                f"context.{key} is {json.dumps(value)[:60]}, which is not the type the "
                "schema declares for it"
            )
    return None
