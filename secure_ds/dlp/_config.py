"""User-defined DLP rules: regex patterns and term dictionaries from a TOML file.

Organisations have sensitive data no built-in detector knows (employee ids, project
code names). They describe it in a small TOML file::

    [[pattern]]
    name = "employee_id"
    regex = 'EMP-[0-9]{6}'
    classification = "confidential"   # public | internal | confidential | secret
    confidence = 0.9                   # optional, 0..1, default 0.9

    [[dictionary]]
    name = "project_codename"
    terms = ["BLUEFALCON", "Nightjar"]
    case_sensitive = false             # optional, default false
    classification = "internal"

Everything is checked when the file is loaded, so a mistake stops the client from
starting instead of silently scanning nothing: a regex that does not compile, one
that matches the empty string, one with the classic catastrophic-backtracking shape
(a quantifier inside a quantifier, such as ``(a+)+``), a name that clashes with a
built-in kind or another rule, unknown keys. Each :class:`DLPConfigError` names the
rule and says what to change.
"""

from __future__ import annotations

import re
import tomllib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..errors import ConfigError
from ._model import KINDS, LEVELS, Classification

__all__ = ["CompiledRule", "CustomRule", "DLPConfigError", "compile_rule", "load_rules"]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_MAX_TERMS = 100_000


class DLPConfigError(ConfigError):
    """A DLP rule (or the file holding it) is unusable.

    ``variable`` says which rule (``pattern 'employee_id'``) or which file; ``rule``
    is the rule's name when there is one.
    """

    def __init__(self, where: str, problem: str, *, fix: str, rule: str | None = None) -> None:
        self.rule = rule
        super().__init__(where, problem, fix=fix)


@dataclass(frozen=True, slots=True)
class CustomRule:
    """A user-defined detector: either ``regex`` or ``terms`` (a dictionary)."""

    name: str
    classification: Classification = "confidential"
    regex: str | None = None
    terms: tuple[str, ...] = ()
    case_sensitive: bool = False  # dictionaries only; a regex can use (?i)
    confidence: float = 0.9

    @property
    def what(self) -> str:
        return f"{'pattern' if self.regex is not None else 'dictionary'} {self.name!r}"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: CustomRule
    pattern: re.Pattern[str]
    word_edges: bool  # dictionary terms match whole words only


def compile_rule(rule: CustomRule, *, source: str = "") -> CompiledRule:
    """Check one rule and compile it; raise :class:`DLPConfigError` naming it."""
    where = rule.what
    suffix = f" in {source}" if source else ""

    def fail(problem: str, fix: str) -> DLPConfigError:
        return DLPConfigError(where, problem + suffix, fix=fix, rule=rule.name)

    if not isinstance(rule.name, str) or not _NAME.fullmatch(rule.name):
        raise fail(
            "the name is not a valid identifier",
            "Use a letter followed by letters, digits or underscores (at most 64).",
        )
    if rule.name in KINDS:
        raise fail(
            f"the name clashes with the built-in kind {rule.name!r}",
            "Choose another name; built-in kinds are " + ", ".join(KINDS) + ".",
        )
    if rule.classification not in LEVELS:
        raise fail(
            f"classification {rule.classification!r} is not a level",
            "Use one of: " + ", ".join(LEVELS) + ".",
        )
    confidence = rule.confidence
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise fail("confidence is not a number", "Use a number between 0 and 1.")
    if not 0.0 <= float(confidence) <= 1.0:
        raise fail(f"confidence {confidence} is outside 0..1", "Use a number between 0 and 1.")
    if (rule.regex is None) == (not rule.terms):
        raise fail(
            "a rule needs exactly one of a regex or a list of terms",
            "Put regexes under [[pattern]] and term lists under [[dictionary]].",
        )
    if rule.regex is not None:
        return CompiledRule(rule, _compile_regex(rule.regex, fail), word_edges=False)
    return CompiledRule(rule, _compile_terms(rule, fail), word_edges=True)


def _compile_regex(regex: str, fail: Any) -> re.Pattern[str]:
    if not isinstance(regex, str) or not regex:
        raise fail("the regex is empty", "Give the pattern to look for, e.g. 'EMP-[0-9]{6}'.")
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise fail(
            f"the regex does not compile ({exc})",
            "Fix the regular expression (Python `re` syntax; single-quote it in TOML "
            "so backslashes stay as written).",
        ) from None
    if pattern.fullmatch(""):
        raise fail(
            "the regex matches the empty string",
            "Make it require at least one character (use + instead of *).",
        )
    problem = _backtracking_hazard(regex)
    if problem:
        raise fail(
            f"the regex can take exponential time on some inputs ({problem})",
            "Remove the nested repetition, e.g. write (ab)+ or [a-z]+ instead of (a+)+, "
            "or make the inner repetition bounded and possessive ({1,8}+).",
        )
    return pattern


def _compile_terms(rule: CustomRule, fail: Any) -> re.Pattern[str]:
    terms = rule.terms
    if isinstance(terms, str) or not all(isinstance(t, str) for t in terms):
        raise fail("terms must be a list of strings", 'Write terms = ["first", "second"].')
    cleaned = sorted({t.strip() for t in terms if t.strip()}, key=len, reverse=True)
    if not cleaned:
        raise fail("the dictionary has no terms", "List at least one non-empty term.")
    if len(cleaned) > _MAX_TERMS:
        raise fail(f"more than {_MAX_TERMS} terms", "Split the dictionary or use a regex.")
    flags = 0 if rule.case_sensitive else re.IGNORECASE
    return re.compile("|".join(re.escape(t) for t in cleaned), flags)


def _backtracking_hazard(regex: str) -> str:
    """The classic exponential shapes, found on the parsed pattern (cheap, not
    complete): a repetition inside a repetition where either is unbounded, like
    ``(a+)+`` or ``(\\w+\\s?)*``; and an unbounded repetition of alternatives that
    start alike, like ``(a|ab)*``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import sre_constants as c
        import sre_parse

    repeats = {c.MAX_REPEAT, c.MIN_REPEAT}

    def walk(data: Any, outer: tuple[int, int] | None) -> str:
        for op, av in data:
            av = cast(Any, av)
            if op in repeats:
                lo, hi, item = av
                if outer is not None and hi > 1:
                    outer_unbounded = outer[1] == c.MAXREPEAT
                    if outer_unbounded or hi == c.MAXREPEAT:
                        return "a quantifier inside a quantifier"
                if hi == c.MAXREPEAT and _overlapping_branches(item, c):
                    return "a repeated alternation whose branches start alike"
                inner = (lo, hi) if hi > 1 else outer
                found = walk(item.data, inner)
            elif op == c.SUBPATTERN:
                found = walk(av[3].data, outer)
            elif op == c.BRANCH:
                found = ""
                for branch in av[1]:
                    found = found or walk(branch.data, outer)
            elif op in (c.ASSERT, c.ASSERT_NOT):
                found = walk(av[1].data, outer)
            else:
                found = ""  # atomic groups and possessive repeats cannot backtrack
            if found:
                return found
        return ""

    return walk(sre_parse.parse(regex).data, None)


def _overlapping_branches(item: Any, c: Any) -> bool:
    """An alternation directly inside the repeated item whose branches can start with
    the same thing: ``(a|a)*``, ``(a|ab)*`` (parsed as ``a(|b)``), ``(x|)*``."""
    data = item.data
    while len(data) == 1 and data[0][0] == c.SUBPATTERN:
        data = data[0][1][3].data
    for op, av in data:
        if op != c.BRANCH:
            continue
        firsts = []
        for branch in av[1]:
            if not branch.data:
                return True  # an empty alternative: the repeat can split input two ways
            firsts.append(repr(branch.data[0]))
        if len(firsts) != len(set(firsts)):
            return True
    return False


_PATTERN_KEYS = {"name", "regex", "classification", "confidence"}
_DICTIONARY_KEYS = {"name", "terms", "case_sensitive", "classification", "confidence"}


def load_rules(path: Path) -> list[CustomRule]:
    """Read and check a DLP config file; every rule is compiled once here."""
    where = f"DLP config {path}"
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DLPConfigError(
            where, f"cannot be read ({exc.strerror or exc})", fix="Check the path."
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DLPConfigError(
            where, f"is not valid TOML ({exc})", fix="Fix the syntax at the place named."
        ) from None
    unknown = set(data) - {"pattern", "dictionary"}
    if unknown:
        raise DLPConfigError(
            where,
            f"has unknown sections {sorted(unknown)}",
            fix="Use [[pattern]] and [[dictionary]] tables only.",
        )
    rules: list[CustomRule] = []
    for section, allowed in (("pattern", _PATTERN_KEYS), ("dictionary", _DICTIONARY_KEYS)):
        entries = data.get(section, [])
        if not isinstance(entries, list):
            raise DLPConfigError(
                where, f"'{section}' is not a list of tables", fix=f"Write [[{section}]]."
            )
        for i, entry in enumerate(entries):
            rules.append(_rule_from_table(section, i, entry, allowed, where))
    _check_unique(rules, where)
    for rule in rules:
        compile_rule(rule, source=str(path))
    return rules


def _rule_from_table(
    section: str, index: int, entry: Any, allowed: set[str], where: str
) -> CustomRule:
    name = entry.get("name") if isinstance(entry, dict) else None
    label = f"{section} {name!r}" if isinstance(name, str) else f"{section} #{index + 1}"
    if not isinstance(entry, dict):
        raise DLPConfigError(label, f"is not a table in {where}", fix=f"Write [[{section}]].")
    if not isinstance(name, str):
        raise DLPConfigError(
            label, f"has no name in {where}", fix='Add name = "..." (used as the kind).'
        )
    extra = set(entry) - allowed
    if extra:
        raise DLPConfigError(
            label,
            f"has unknown keys {sorted(extra)} in {where}",
            fix="Allowed keys: " + ", ".join(sorted(allowed)) + ".",
            rule=name,
        )
    missing = "regex" if section == "pattern" else "terms"
    if missing not in entry:
        raise DLPConfigError(
            label, f"has no {missing} in {where}", fix=f"Add {missing} = ...", rule=name
        )
    if "classification" not in entry:
        raise DLPConfigError(
            label,
            f"has no classification in {where}",
            fix="Add classification = one of " + ", ".join(LEVELS) + ".",
            rule=name,
        )
    case_sensitive = entry.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        raise DLPConfigError(
            label, f"case_sensitive is not true/false in {where}", fix="Use true or false."
        )
    terms = entry.get("terms", ())
    return CustomRule(
        name=name,
        classification=entry["classification"],
        regex=entry.get("regex") if section == "pattern" else None,
        terms=tuple(terms) if isinstance(terms, list) else terms,
        case_sensitive=case_sensitive,
        confidence=entry.get("confidence", 0.9),
    )


def _check_unique(rules: Sequence[CustomRule], where: str) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise DLPConfigError(
                rule.what,
                f"is defined twice in {where}",
                fix="Give every rule its own name.",
                rule=rule.name,
            )
        seen.add(rule.name)
