"""Review a policy folder like a linter: :func:`lint_folder` returns every problem found.

Loading (:func:`~secure_ds.policy.load_bundle`) is all or nothing and stops at the
first problem, which is right for a client but slow for a reviewer fixing a folder
one error at a time. So the checks run file by file as well, and the report lists
all of them:

* errors (the folder does not load, or a permit would not do what it says):
  anything :func:`load_bundle` refuses (syntax, schema validation, duplicate ids,
  oversized or non-file entries, a catalogue that does not conform); a file that is
  not in Cedar's canonical format (``secure-ds policy format`` fixes it); a
  malformed known obligation (``cap_max_tokens:0``, ``redact:`` without kinds); a
  ``route:`` target missing from the catalogue; obligations or advice on a
  ``forbid`` (only the permits that determine a decision carry obligations);
* warnings (it loads, but a reviewer should look): a policy without ``@id`` (its id
  is then its position, which changes when a policy is added above it); a forbid
  without ``@reason`` (the caller is told only that "a forbid policy matched"); an
  obligation the enforce stage does not know (a permit carrying it becomes a
  deny); a DLP kind that is not built in (fine when ``SECURE_DS_DLP_CONFIG``
  defines it); no catalogue (every model call is denied).

Every message says what is wrong and what to do about it.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cedarpy

from ..dlp._model import KINDS
from ..errors import PolicyError
from ._bundle import (
    CATALOGUE_FILE,
    NAMESPACE,
    PolicyBundle,
    PolicyInfo,
    load_bundle,
    parse_policy_file,
    read_policy_file,
)

__all__ = [
    "KNOWN_OBLIGATIONS",
    "FormatReport",
    "LintReport",
    "Problem",
    "check_obligation",
    "format_folder",
    "lint_folder",
]

Severity = Literal["error", "warning"]

KNOWN_OBLIGATIONS = (
    "cap_max_tokens:N, route:MODEL, route:auto, redact:<kinds>[:reversible], block:<kinds>, "
    "require:fhe"
)
_DIFF_LINES = 40  # enough to see what the formatter changes; `format` shows the rest


@dataclass(frozen=True)
class Problem:
    """One finding: ``message`` says what is wrong and what to do."""

    severity: Severity
    code: str  # short and stable, for scripts: "syntax", "format", "obligation", ...
    file: str | None  # relative to the folder; None for the folder as a whole
    line: int | None
    message: str
    detail: str = ""  # extra text to show under the message (a diff)

    @property
    def where(self) -> str:
        if self.file is None:
            return "(folder)"
        return f"{self.file}:{self.line}" if self.line else self.file

    def as_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "file": self.file,
            "line": self.line,
            "message": self.message,
            "detail": self.detail,
        }


@dataclass
class LintReport:
    folder: Path
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # the policy files that were read
    policy_count: int = 0
    bundle: PolicyBundle | None = None  # the loaded folder, when it loads

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_json(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "ok": self.ok,
            "revision": self.bundle.revision if self.bundle else None,
            "files": self.files,
            "policies": self.policy_count,
            "problems": [p.as_json() for p in self.problems],
        }


def lint_folder(path: Path | str) -> LintReport:
    """Check the policy folder at ``path``; never raises for a problem in the folder."""
    folder = Path(path)
    report = LintReport(folder)
    load_problem: Problem | None = None
    try:
        report.bundle = load_bundle(folder)
    except PolicyError as exc:
        load_problem = _from_policy_error(folder, exc, code="load")
    if not folder.is_dir():
        report.problems = [load_problem] if load_problem else []
        return report

    # a folder that loaded has passed schema validation already: validate files one by
    # one only to find every file at fault in one that did not
    schema = None if report.bundle else _schema_of(folder)
    models = report.bundle.models if report.bundle else _models_of(folder)
    seen: dict[str, str] = {}  # policy id -> file, across the folder
    found: list[Problem] = []
    for entry in sorted(p for p in folder.iterdir() if p.suffix == ".cedar"):
        report.files.append(entry.name)
        found.extend(_check_file(folder, entry, schema, models, seen, report))
    if not (folder / CATALOGUE_FILE).exists():
        found.append(
            Problem(
                "warning",
                "no-catalogue",
                None,
                None,
                f"there is no model catalogue ({CATALOGUE_FILE}), so the decide stage "
                "denies every model call (a model must be in the catalogue to be allowed). "
                f"Add {CATALOGUE_FILE} listing the models as SecureDS::Model entities.",
            )
        )
    # The load error repeats what a per-file check already said about that file (a
    # syntax or schema error); keep it only when it says something new.
    if load_problem is not None and not any(
        p.severity == "error" and p.file == load_problem.file for p in found
    ):
        found.insert(0, load_problem)
    report.problems = sorted(found, key=lambda p: (p.file or "", p.line or 0))
    return report


@dataclass
class FormatReport:
    changed: list[str] = field(default_factory=list)  # files that are (or would be) rewritten
    problems: list[Problem] = field(default_factory=list)  # files that cannot be formatted


def format_folder(path: Path | str, *, write: bool) -> FormatReport:
    """Put every ``.cedar`` file of the folder into Cedar's canonical format (what
    ``cedar format`` writes); with ``write=False`` only report which would change."""
    folder = Path(path)
    if not folder.is_dir():
        raise PolicyError(
            f"{folder} is not a directory",
            fix="Pass the folder holding the .cedar files (e.g. policies).",
        )
    report = FormatReport()
    for entry in sorted(p for p in folder.iterdir() if p.suffix == ".cedar"):
        try:
            text = read_policy_file(entry)
            formatted = cedarpy.format_policies(text)
            if formatted == text:
                continue
            # The formatter must change only the layout. Checked rather than trusted,
            # because a rewrite that changed a policy would be committed as
            # "formatting" and slip through review.
            same = cedarpy.policies_to_json_str(text) == cedarpy.policies_to_json_str(formatted)
        except PolicyError as exc:
            report.problems.append(_from_policy_error(folder, exc, code="file"))
            continue
        except ValueError as exc:
            report.problems.append(
                Problem(
                    "error",
                    "syntax",
                    entry.name,
                    None,
                    f"cannot format: the file does not parse ({exc}). Fix it first; "
                    "`secure-ds policy validate` shows the line.",
                )
            )
            continue
        if not same:
            report.problems.append(
                Problem(
                    "error",
                    "format",
                    entry.name,
                    None,
                    "not rewritten: the formatted text would parse to different policies. "
                    "Format it by hand and report this as a bug in the Cedar formatter.",
                )
            )
            continue
        report.changed.append(entry.name)
        if write:
            _replace(entry, formatted)
    return report


def _replace(path: Path, text: str) -> None:
    """Write ``text`` over ``path`` atomically: a policy store watching the folder
    never reads a half-written file. The temporary name does not end in .cedar, so
    a load in between does not pick it up."""
    temporary = path.with_name(f".{path.name}.formatting")
    try:
        temporary.write_text(text, encoding="utf-8", newline="")
        shutil.copymode(path, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# ------------------------------------------------------------------------ per file


def _check_file(
    folder: Path,
    path: Path,
    schema: cedarpy.Schema | None,
    models: frozenset[str] | None,
    seen: dict[str, str],
    report: LintReport,
) -> list[Problem]:
    try:
        text = read_policy_file(path)
        parsed = parse_policy_file(path, text)
    except PolicyError as exc:
        return [_from_policy_error(folder, exc, code="file")]
    name = path.name
    infos = [info for info, _ in parsed]
    report.policy_count += len(infos)
    lines = _policy_lines(text)
    if len(lines) != len(infos):  # an input the scanner below misreads: no line numbers
        lines = [0] * len(infos)
    problems: list[Problem] = []
    problems.extend(_format_problem(name, text))
    problems.extend(_schema_problems(name, text, schema, infos, lines))
    source = text.splitlines()
    for index, info in enumerate(infos):
        start = lines[index] or None
        following = lines[index + 1] if index + 1 < len(lines) else 0
        end = following - 1 if following else len(source)
        if info.id in seen:
            problems.append(
                Problem(
                    "error",
                    "duplicate-id",
                    name,
                    start,
                    f"policy id {info.id!r} is used in {seen[info.id]} and again here; "
                    "ids name policies in decisions and audit records. Give every policy "
                    "a unique @id.",
                )
            )
        seen.setdefault(info.id, name)
        problems.extend(_policy_problems(name, info, start, end, source, models))
    return problems


def _policy_problems(
    name: str,
    info: PolicyInfo,
    start: int | None,
    end: int | None,
    source: list[str],
    models: frozenset[str] | None,
) -> list[Problem]:
    problems: list[Problem] = []
    label = f"policy {info.id!r}"
    if info.name is None:
        problems.append(
            Problem(
                "warning",
                "missing-id",
                name,
                start,
                f"{label} has no @id, so decisions and audit records name it by its "
                'position, which changes when a policy is added above it. Add @id("...") '
                "with a short, unique, descriptive name.",
            )
        )
    obligation_line = _annotation_line(source, start, end, "@obligation") or start
    if info.effect == "forbid":
        if info.obligations or info.advice:
            what = "obligations" if info.obligations else "advice"
            problems.append(
                Problem(
                    "error",
                    "forbid-obligation",
                    name,
                    obligation_line if info.obligations else start,
                    f"{label} is a forbid with {what}, which is never carried out: "
                    "obligations and advice apply only to the permits that allow a call. "
                    "Move them to the permit they belong to, or use @reason to tell a "
                    "denied caller why.",
                )
            )
        if not info.annotations.get("reason"):
            problems.append(
                Problem(
                    "warning",
                    "forbid-reason",
                    name,
                    start,
                    f"{label} is a forbid without @reason, so a caller it denies is told "
                    'only that "a forbid policy matched". Add @reason("...") saying why '
                    "and what to do.",
                )
            )
        return problems
    for obligation in info.obligations:
        problem = check_obligation(obligation, models)
        if problem is not None:
            severity, code, message = problem
            problems.append(Problem(severity, code, name, obligation_line, f"{label}: {message}"))
    return problems


def check_obligation(
    obligation: str, models: frozenset[str] | None
) -> tuple[Severity, str, str] | None:
    """(severity, code, message) when ``obligation`` is malformed or unknown, else None.

    ``models`` is the catalogue (None when it could not be read: route targets are then
    not checked). Mirrors what the enforce stage accepts (secure_ds.guard._stages and
    secure_ds.dlp._guard): anything it would refuse turns the permit into a deny.
    """
    verb, _, arg = obligation.partition(":")
    if verb == "cap_max_tokens":
        if not arg.isdigit() or int(arg) <= 0:
            return (
                "error",
                "obligation",
                f"obligation {obligation!r} is malformed: the cap must be a whole number "
                "above 0 (the enforce stage refuses anything else, which denies the call). "
                "Write e.g. cap_max_tokens:1024.",
            )
        return None
    if verb == "route":
        if not arg:
            return (
                "error",
                "obligation",
                f"obligation {obligation!r} names no model. Write route:MODEL with a model "
                f"from {CATALOGUE_FILE}.",
            )
        if arg == "auto":
            return None  # the cost-aware router picks among the pricing table's models
        if models is not None and arg not in models:
            return (
                "error",
                "route-target",
                f"route target {arg!r} is not in the model catalogue ({CATALOGUE_FILE}): "
                "calls would be sent to a model the policies never vetted. Add it to the "
                "catalogue or route to a model that is there.",
            )
        return None
    if verb in ("redact", "block"):
        kinds_text, _, flag = arg.partition(":")
        if not kinds_text or flag not in ("", "reversible") or (flag and verb == "block"):
            form = "redact:<kinds>[:reversible]" if verb == "redact" else "block:<kinds>"
            return (
                "error",
                "obligation",
                f"obligation {obligation!r} is malformed: write {form}, where <kinds> is "
                "a comma-separated list of DLP kinds or * for all (the DLP stage refuses "
                "anything else, which denies the call).",
            )
        kinds = {k.strip() for k in kinds_text.split(",")} - {""}
        unknown = sorted(kinds - set(KINDS) - {"*"})
        if unknown:
            return (
                "warning",
                "obligation",
                f"obligation {obligation!r} names {', '.join(map(repr, unknown))}, which "
                "is not a built-in DLP kind; it only matches if SECURE_DS_DLP_CONFIG "
                f"defines it. Built-in kinds: {', '.join(KINDS)}.",
            )
        return None
    if obligation == "require:fhe":
        return None  # met by encrypted-inference calls; any other call it applies to is denied
    return (
        "warning",
        "obligation",
        f"obligation {obligation!r}: the enforce stage cannot carry this out yet: a permit "
        f"carrying it becomes a deny. Use one of {KNOWN_OBLIGATIONS}, or remove it.",
    )


def _format_problem(name: str, text: str) -> list[Problem]:
    try:
        formatted = cedarpy.format_policies(text)
    except ValueError:  # does not parse: the syntax error is reported already
        return []
    if formatted == text:
        return []
    diff = list(
        difflib.unified_diff(
            text.splitlines(keepends=True),
            formatted.splitlines(keepends=True),
            fromfile=name,
            tofile=f"{name} (formatted)",
            n=1,
        )
    )
    first = _first_changed_line(text, formatted)
    shown = diff[:_DIFF_LINES]
    if len(diff) > _DIFF_LINES:
        shown.append(f"... {len(diff) - _DIFF_LINES} more diff lines\n")
    return [
        Problem(
            "error",
            "format",
            name,
            first,
            "the file is not in Cedar's canonical format. Run `secure-ds policy format` "
            "to rewrite it (the policies themselves do not change).",
            detail="".join(line if line.endswith("\n") else line + "\n" for line in shown),
        )
    ]


def _first_changed_line(before: str, after: str) -> int:
    for number, (a, b) in enumerate(zip(before.splitlines(), after.splitlines(), strict=False)):
        if a != b:
            return number + 1
    return min(len(before.splitlines()), len(after.splitlines())) + 1


def _schema_problems(
    name: str,
    text: str,
    schema: cedarpy.Schema | None,
    infos: list[PolicyInfo],
    lines: list[int],
) -> list[Problem]:
    if schema is None:  # no usable schema: the load error says why
        return []
    result = cedarpy.validate_policies(text, schema)
    if result.validation_passed:
        return []
    problems: list[Problem] = []
    for error in result.errors:
        index = _cedar_index(error.policy_id)
        info = infos[index] if index is not None and index < len(infos) else None
        line = (lines[index] or None) if info is not None and index is not None else None
        # "for policy `policy0`, attribute ..." names Cedar's per-file number: drop it
        detail = re.sub(r"^for policy `[^`]*`,\s*", "", error.error)
        label = f"policy {info.id!r}" if info else "a policy"
        problems.append(
            Problem(
                "error",
                "schema",
                name,
                line,
                f"{label} does not validate against the schema: {detail}. Fix the policy, "
                "or declare the attribute or entity type in the .cedarschema file.",
            )
        )
    return problems


def _cedar_index(policy_id: str) -> int | None:
    match = re.fullmatch(r"policy(\d+)", policy_id)
    return int(match.group(1)) if match else None


# ------------------------------------------------------------------------- helpers


def _from_policy_error(folder: Path, exc: PolicyError, *, code: str) -> Problem:
    text = str(exc).removeprefix(f"{exc.variable}: ")
    file: str | None = None
    line: int | None = None
    if exc.file is not None:
        try:
            file = str(exc.file.relative_to(folder))
        except ValueError:
            file = exc.file.name
        match = re.search(re.escape(str(exc.file)) + r":(\d+): ", text)
        line = int(match.group(1)) if match else None
        # the location is shown beside the message: do not repeat it inside
        text = text.replace(match.group(0), "", 1) if match else text
        text = text.replace(str(exc.file), file)
    if code == "file" and "syntax error" in text:
        code = "syntax"
    return Problem("error", code, file, line, text)


def _schema_of(folder: Path) -> cedarpy.Schema | None:
    """The folder's schema when the folder as a whole does not load (so files can
    still be checked one by one); None when there is not exactly one that parses."""
    found = [p for p in folder.iterdir() if p.suffix == ".cedarschema"]
    if len(found) != 1:
        return None
    try:
        return cedarpy.Schema.from_str(read_policy_file(found[0]))
    except (PolicyError, ValueError):
        return None


def _models_of(folder: Path) -> frozenset[str] | None:
    """Model ids in the catalogue, read leniently (the load error covers a bad one);
    None when it is missing or unreadable, so route targets go unchecked."""
    try:
        entities = json.loads(read_policy_file(folder / CATALOGUE_FILE))
    except (PolicyError, ValueError):
        return None
    if not isinstance(entities, list):
        return None
    return frozenset(
        str(e["uid"].get("id"))
        for e in entities
        if isinstance(e, dict)
        and isinstance(e.get("uid"), dict)
        and e["uid"].get("type") == f"{NAMESPACE}::Model"
    )


def _annotation_line(
    source: list[str], start: int | None, end: int | None, needle: str
) -> int | None:
    if start is None:
        return None
    for number in range(start, (end or start) + 1):
        if number <= len(source) and needle in source[number - 1]:
            return number
    return None


def _policy_lines(text: str) -> list[int]:
    """The line each policy starts on (its first annotation or its effect), found by
    scanning for the ``;`` that ends a policy outside strings and comments. Cedar's
    parser reports no positions; this is only used to point a reader at a policy."""
    starts: list[int] = []
    line = 1
    in_policy = False
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char == "\n":
            line += 1
        elif char == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif char == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n":
                    line += 1
                i += 1
        elif char == ";":
            in_policy = False
        elif not char.isspace() and not in_policy:
            in_policy = True
            starts.append(line)
        i += 1
    return starts
