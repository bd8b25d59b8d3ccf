"""Load a policy folder into a :class:`PolicyBundle`, or refuse with the reason.

A folder holds exactly one Cedar schema (``*.cedarschema``), one or more policy files
(``*.cedar``), the model catalogue (``entities.json``, Cedar's entity JSON) and
decision tests (``tests/*.json``). Loading is all or nothing:

1. every file is a regular, UTF-8 file of at most :data:`MAX_FILE_BYTES`;
2. the schema parses, every policy file parses, and the whole set validates against
   the schema (Cedar's strict validator);
3. every policy's id is unique across the folder: its ``@id`` annotation, or
   ``<file>#<n>`` when it has none;
4. the catalogue conforms to the schema.

Anything else raises :class:`PolicyError` naming the file (and line, for a syntax
error) and what to do, so a client never starts with a broken policy set.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cedarpy

from ..errors import PolicyError

__all__ = [
    "CATALOGUE_FILE",
    "MAX_FILE_BYTES",
    "NAMESPACE",
    "PolicyBundle",
    "PolicyError",
    "PolicyInfo",
    "load_bundle",
    "parse_policy_file",
    "read_policy_file",
    "split_annotation",
]

NAMESPACE = "SecureDS"
CATALOGUE_FILE = "entities.json"
MAX_FILE_BYTES = 1024 * 1024  # policies are code reviewed by people: 1 MiB is plenty
_MAX_FILES = 1000


@dataclass(frozen=True)
class PolicyInfo:
    """One policy of the set, with what the enforce stage and the reviewers need."""

    id: str  # the id Cedar reports as a reason: the @id annotation, else "<file>#<n>"
    name: str | None  # the @id annotation, if any
    file: str  # relative to the folder
    effect: Literal["permit", "forbid"]
    obligations: tuple[str, ...]
    advice: tuple[str, ...]
    annotations: Mapping[str, str]
    body: str  # the policy as Cedar JSON without annotations: equal bodies, same policy


@dataclass(frozen=True)
class PolicyBundle:
    """A loaded, validated policy folder. Immutable: a reload builds a new one."""

    directory: Path
    schema: cedarpy.Schema
    policy_set: cedarpy.PolicySet
    policies: Mapping[str, PolicyInfo]
    catalogue: cedarpy.Entities
    catalogue_json: tuple[dict[str, Any], ...]
    models: frozenset[str]
    revision: str  # "sha256:<hex>" over every file that was loaded
    commit: str | None  # git commit of the folder, "+dirty" when it has local changes
    sources: Mapping[str, str] = field(repr=False)  # file name -> text, as loaded
    test_files: tuple[Path, ...] = ()

    @property
    def reads_budget(self) -> bool:
        """Whether any policy mentions ``context.budget_remaining_usd``: only then does
        the guard ask the meter for it before deciding (a ledger read per call)."""
        return any(
            "budget_remaining_usd" in text
            for name, text in self.sources.items()
            if name.endswith(".cedar")
        )

    @property
    def label(self) -> str:
        short = self.revision.removeprefix("sha256:")[:12]
        return f"{short} ({self.commit[:12]})" if self.commit else short


def load_bundle(directory: Path | str) -> PolicyBundle:
    """Load and validate ``directory``; raises :class:`PolicyError` on any problem."""
    folder = Path(directory)
    if not folder.is_dir():
        raise PolicyError(
            f"{folder} is not a directory",
            fix="Point SECURE_DS_POLICY_DIR at the folder holding the .cedarschema and "
            ".cedar files (this repository's policies/ is an example).",
        )
    entries = sorted(p for p in folder.iterdir() if p.suffix in (".cedar", ".cedarschema"))
    if len(entries) > _MAX_FILES:
        raise PolicyError(
            f"{folder} holds {len(entries)} policy files; at most {_MAX_FILES} are read",
            fix="Merge policies into fewer files.",
        )
    schema_files = [p for p in entries if p.suffix == ".cedarschema"]
    policy_files = [p for p in entries if p.suffix == ".cedar"]
    if not policy_files:
        raise PolicyError(
            f"{folder} has no .cedar policy files",
            fix="Add the policies (an empty set would deny every call), or unset "
            "SECURE_DS_POLICY_DIR to run without a policy engine.",
        )
    if len(schema_files) != 1:
        found = ", ".join(p.name for p in schema_files) or "none"
        raise PolicyError(
            f"{folder} must hold exactly one .cedarschema file (found: {found})",
            fix="Keep one schema; policies are validated against it.",
        )
    sources: dict[str, str] = {}
    schema_path = schema_files[0]
    schema_text = sources[schema_path.name] = read_policy_file(schema_path)
    try:
        schema = cedarpy.Schema.from_str(schema_text)
    except ValueError as exc:
        raise PolicyError(
            f"{schema_path} is not a valid Cedar schema: {exc}",
            fix="Fix the schema (see https://docs.cedarpolicy.com/schema/human-readable-schema.html).",
            file=schema_path,
        ) from None

    policies: dict[str, PolicyInfo] = {}
    static: dict[str, Any] = {}
    for path in policy_files:
        text = sources[path.name] = read_policy_file(path)
        for info, est in parse_policy_file(path, text):
            if info.id in policies:
                other = policies[info.id].file
                raise PolicyError(
                    f"policy id {info.id!r} is used in {other} and again in {path.name}",
                    fix="Give every policy a unique @id annotation.",
                    file=path,
                )
            policies[info.id] = info
            static[info.id] = est
    policy_json = json.dumps({"staticPolicies": static, "templates": {}, "templateLinks": []})
    policy_set = cedarpy.PolicySet.from_json_str(policy_json)
    _validate(folder, policies, sources, schema)

    catalogue_json, catalogue, models = _load_catalogue(folder, schema, sources)
    tests_dir = folder / "tests"
    tests = tuple(sorted(tests_dir.glob("*.json"))) if tests_dir.is_dir() else ()
    return PolicyBundle(
        directory=folder,
        schema=schema,
        policy_set=policy_set,
        policies=policies,
        catalogue=catalogue,
        catalogue_json=catalogue_json,
        models=models,
        revision=revision_of(sources),
        commit=_git_commit(folder),
        sources=sources,
        test_files=tests,
    )


def revision_of(sources: Mapping[str, str]) -> str:
    """SHA-256 over the file names and contents, in name order."""
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
    return "sha256:" + digest.hexdigest()


def split_annotation(value: str) -> tuple[str, ...]:
    """``@obligation("cap_max_tokens:1024 route:deepseek-flash")``: one or more items,
    separated by spaces or semicolons (Cedar allows each annotation key once)."""
    return tuple(item for item in re.split(r"[\s;]+", value) if item)


def read_policy_file(path: Path) -> str:
    """The text of a policy, schema or catalogue file, or :class:`PolicyError` saying why
    it cannot be read (not a plain file, over :data:`MAX_FILE_BYTES`, not UTF-8)."""
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise PolicyError(
            f"{path} is {kind}",
            fix="Policy and schema entries must be plain files; move or rename it.",
            file=path,
        )
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise PolicyError(
            f"{path} is {size} bytes, over the {MAX_FILE_BYTES}-byte limit for a policy file",
            fix="Split it into smaller files; a file this large is not reviewable.",
            file=path,
        )
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"{path} is not UTF-8 text", fix="Save it as UTF-8.", file=path) from None
    except OSError as exc:
        raise PolicyError(
            f"cannot read {path} ({exc.strerror})", fix="Check its permissions.", file=path
        ) from None


def parse_policy_file(path: Path, text: str) -> list[tuple[PolicyInfo, Any]]:
    """Each policy of one file with its Cedar JSON, in source order; a syntax error is
    a :class:`PolicyError` naming the file and line."""
    try:
        est = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        line = _error_line(text, str(exc))
        where = f"{path}:{line}" if line else str(path)
        raise PolicyError(
            f"{where}: Cedar syntax error: {exc}",
            fix="Fix the policy (`secure-ds policy validate` checks a folder).",
            file=path,
        ) from None
    if est.get("templates"):
        raise PolicyError(
            f"{path} contains policy templates (?principal/?resource slots)",
            fix="Write static policies; secure-ds does not link templates.",
            file=path,
        )
    parsed: list[tuple[PolicyInfo, Any]] = []
    # Cedar numbers a file's policies policy0, policy1, ... in source order
    items = sorted(est.get("staticPolicies", {}).items(), key=lambda kv: int(kv[0][6:]))
    for index, (_, policy) in enumerate(items):
        annotations: dict[str, str] = {
            str(k): "" if v is None else str(v) for k, v in policy.get("annotations", {}).items()
        }
        name = annotations.get("id")
        policy_id = name if name else f"{path.name}#{index}"
        body = json.dumps({k: v for k, v in policy.items() if k != "annotations"}, sort_keys=True)
        info = PolicyInfo(
            id=policy_id,
            name=name or None,
            file=path.name,
            effect="permit" if policy["effect"] == "permit" else "forbid",
            obligations=_annotated(annotations, "obligation", split=True),
            advice=_annotated(annotations, "advice", split=False),  # prose: kept whole
            annotations=annotations,
            body=body,
        )
        parsed.append((info, policy))
    return parsed


def _annotated(annotations: Mapping[str, str], key: str, *, split: bool) -> tuple[str, ...]:
    """Values of ``@key`` and ``@key_<anything>`` (Cedar allows each key once)."""
    items: list[str] = []
    for name in sorted(annotations):
        if name == key or name.startswith(key + "_"):
            value = annotations[name]
            items.extend(split_annotation(value) if split else [value] if value else [])
    return tuple(items)


def _error_line(text: str, message: str) -> int | None:
    """Cedar's parse errors carry no position: find the first line at which the text
    up to it fails with the same message (a missing-end error from a cut-off policy
    differs, so it does not count)."""
    lines = text.splitlines(keepends=True)
    if "end of input" in message:  # the last policy is cut off: point at its end
        return len(lines) or None
    for end in range(1, len(lines) + 1):
        try:
            cedarpy.policies_to_json_str("".join(lines[:end]))
        except ValueError as exc:
            if str(exc) == message:
                return end
    return None


def _validate(
    folder: Path, policies: Mapping[str, PolicyInfo], sources: Mapping[str, str], schema: Any
) -> None:
    for name, text in sources.items():
        if not name.endswith(".cedar"):
            continue
        result = cedarpy.validate_policies(text, schema)
        if result.validation_passed:
            continue
        by_id = result.id_annotations_by_policy_id
        problems = []
        for error in result.errors[:5]:
            named = by_id.get(error.policy_id) or error.policy_id
            problems.append(f"[{named}] {error.error}" if named else error.error)
        raise PolicyError(
            f"{folder / name} does not validate against the schema: " + "; ".join(problems),
            fix="Fix the policy or declare the attribute/type in the .cedarschema file.",
            file=folder / name,
        )


def _load_catalogue(
    folder: Path, schema: Any, sources: dict[str, str]
) -> tuple[tuple[dict[str, Any], ...], cedarpy.Entities, frozenset[str]]:
    path = folder / CATALOGUE_FILE
    if not path.exists():
        return (), cedarpy.Entities.from_json_str("[]", schema), frozenset()
    text = sources[CATALOGUE_FILE] = read_policy_file(path)
    try:
        entities = json.loads(text)
    except ValueError as exc:
        raise PolicyError(
            f"{path} is not valid JSON ({exc})", fix="Fix the JSON.", file=path
        ) from None
    if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
        raise PolicyError(
            f"{path} must be a JSON list of Cedar entities",
            fix='Use Cedar\'s entity format: [{"uid": {...}, "attrs": {...}, "parents": []}].',
            file=path,
        )
    detail = _catalogue_problem(entities, schema)
    if detail is not None:
        raise PolicyError(
            f"{path} does not conform to the schema: {detail}",
            fix="Fix the entity or its type in the schema.",
            file=path,
        )
    handle = cedarpy.Entities.from_json_str(text, schema)
    models = frozenset(
        str(e["uid"]["id"])
        for e in entities
        if isinstance(e.get("uid"), dict) and e["uid"].get("type") == f"{NAMESPACE}::Model"
    )
    return tuple(entities), handle, models


def _catalogue_problem(entities: list[dict[str, Any]], schema: Any) -> str | None:
    """Cedar's entity parser says only "does not conform"; its authorizer says why."""
    probe = {
        "principal": {"type": f"{NAMESPACE}::User", "id": "catalogue-check"},
        "action": {"type": f"{NAMESPACE}::Action", "id": "list_models"},
        "resource": {"type": f"{NAMESPACE}::Api", "id": "catalogue-check"},
    }
    try:
        cedarpy.Entities.from_json_str(json.dumps(entities), schema)
    except ValueError as exc:
        result = cedarpy.is_authorized(probe, "", entities, schema)
        errors = [e for e in result.diagnostics.errors if "entit" in e]
        return errors[0].split(": ", 1)[-1] if errors else str(exc)
    return None


def _git_commit(folder: Path) -> str | None:
    """The commit the folder was checked out at, if it is in a git work tree."""
    head = _git(folder, "rev-parse", "HEAD")
    if head is None:
        return None
    status = _git(folder, "status", "--porcelain", "--", ".")
    return head + ("+dirty" if status else "")


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - fixed git arguments, no shell
            ["git", "-C", str(folder), *args],  # noqa: S607 - git as found on PATH
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
