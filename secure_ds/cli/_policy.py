"""``secure-ds policy validate|format|test|explain|review``: policy-as-code review tools.

Thin on purpose: the work is in :mod:`secure_ds.policy` (``_lint``, ``_testing``,
``_explain``); this module parses arguments and prints. Every subcommand takes the
policy folder as ``DIR``, defaulting to ``$SECURE_DS_POLICY_DIR``, else ``./policies``.

Exit status: 0 all good; 1 problems found (validate, format --check), a decision
test failed or was malformed (test), uncovered policies with --require-coverage;
2 the command could not run (no such folder, a folder that does not load for test
and explain, a malformed explain request). ``explain`` exits 0 whatever the
decision: its job is to explain it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import SecureDSError

if TYPE_CHECKING:
    from ..policy._explain import Explanation

__all__ = ["register", "run"]

_DIR_HELP = "the policy folder (default: $SECURE_DS_POLICY_DIR, else ./policies)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``policy`` and its subcommands to the ``secure-ds`` command."""
    policy = subparsers.add_parser(
        "policy",
        help="policy as code: validate, format, test, explain and review a policy folder",
        description="Review tooling for a Cedar policy folder (SECURE_DS_POLICY_DIR).",
    )
    actions = policy.add_subparsers(dest="policy_command", required=True)

    validate = actions.add_parser(
        "validate",
        help="parse, schema-validate, lint and check the formatting of a policy folder",
        description="Check a policy folder like a linter: everything a client checks "
        "when it loads the folder, plus formatting, @id, @reason and obligations.",
        epilog="Exit status: 0 no errors, 1 errors (or warnings with --strict), "
        "2 the folder does not exist.",
    )
    _add_dir(validate)
    validate.add_argument("--json", action="store_true", help="print the report as JSON")
    validate.add_argument("--strict", action="store_true", help="fail on warnings too")

    fmt = actions.add_parser(
        "format",
        help="rewrite the .cedar files in Cedar's canonical format",
        description="Rewrite every .cedar file of the folder as `cedar format` would. "
        "Only the layout changes; a file whose policies would change is left alone.",
        epilog="Exit status: 0 done (or, with --check, nothing to change), 1 a file "
        "would change (--check) or cannot be formatted, 2 the folder does not exist.",
    )
    _add_dir(fmt)
    fmt.add_argument(
        "--check", action="store_true", help="only report files that would change; write nothing"
    )

    test = actions.add_parser(
        "test",
        help="run the decision tests (tests/*.json) and report policy coverage",
        description="Run the decision tests beside the policies (Cedar's run-tests "
        "case format; see secure_ds.policy._testing for the differences) and list the "
        "policies no test case exercised.",
        epilog="Exit status: 0 all passed, 1 a case failed or is malformed (or, with "
        "--require-coverage, a policy was not exercised), 2 the folder does not load.",
    )
    _add_dir(test)
    test.add_argument(
        "--file",
        action="append",
        type=Path,
        metavar="FILE",
        help="run this test file instead of tests/*.json (repeatable)",
    )
    test.add_argument("--json", action="store_true", help="print the results as JSON")
    test.add_argument(
        "--require-coverage",
        action="store_true",
        help="fail when a policy is not among the determining policies of any case",
    )

    explain = actions.add_parser(
        "explain",
        help="decide one call and say why",
        description="Decide one call the way the client's decide stage does, and print "
        "the decision, the determining policies, the obligations and advice. Describe "
        "the call with flags (as the token and the request would), or give a Cedar "
        "request or a decision test case with --request.",
        epilog="Exit status: 0 explained (whatever the decision), 2 the request is "
        "malformed or the folder does not load. --json output includes the call as a "
        "decision test case, ready for tests/*.json.",
    )
    _add_dir(explain)
    explain.add_argument(
        "--request",
        type=Path,
        metavar="FILE",
        help="JSON file: a Cedar request ({principal, action, resource, context, "
        "entities?}), a test case, or a test file with --case",
    )
    explain.add_argument(
        "--case", type=int, metavar="N", help="with --request FILE holding a list: case N (from 0)"
    )
    explain.add_argument("--principal", metavar="SUB", help="the token's subject (sub)")
    explain.add_argument(
        "--role", action="append", default=[], metavar="ROLE", help="a role (repeatable)"
    )
    explain.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a claim from the token's attrs; VALUE is read as JSON when it parses "
        "(2, true, [..]) and as a string otherwise (repeatable)",
    )
    explain.add_argument(
        "--action",
        help="chat (default), stream, fim, fhe_infer, list_models, balance or other",
    )
    explain.add_argument("--model", help="the request's model (name or name@pin)")
    explain.add_argument(
        "--resource",
        metavar="UID",
        help='the resource as a Cedar uid, e.g. SecureDS::Api::"deepseek" (instead of --model)',
    )
    explain.add_argument(
        "--classification",
        choices=("unclassified", "public", "internal", "confidential", "secret"),
        help="the DLP level (default: what the scanner says for the --finding kinds, "
        "public when none; 'unclassified' is what a client without DLP sends)",
    )
    explain.add_argument(
        "--finding",
        action="append",
        default=[],
        metavar="KIND[=N]",
        help="a kind of sensitive data found, N times (default 1; repeatable)",
    )
    explain.add_argument("--hour", type=_ranged(0, 23), help="hour of the call, UTC (0-23)")
    explain.add_argument(
        "--weekday", type=_ranged(1, 7), help="ISO weekday of the call (1 Monday .. 7 Sunday)"
    )
    explain.add_argument("--max-tokens", type=_ranged(0, None), help="the request's max_tokens")
    explain.add_argument(
        "--auth", choices=("jwt", "api_key"), help="how the call authenticates (default jwt)"
    )
    explain.add_argument(
        "--no-cert-binding",
        action="store_true",
        help="the token is not bound to the client certificate (context.certificate_bound false)",
    )
    explain.add_argument("--cert-sha256", help="the client certificate's SHA-256 thumbprint")
    explain.add_argument("--source-ip", help="the calling host's address (default: this host's)")
    explain.add_argument("--json", action="store_true", help="print the explanation as JSON")

    _add_review(actions)
    policy.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run a ``policy`` subcommand; returns the exit status."""
    command = args.policy_command
    try:
        if command == "review":
            return _review(args)
        folder = _folder(args.dir)
        if command == "validate":
            return _validate(folder, as_json=args.json, strict=args.strict)
        if command == "format":
            return _format(folder, check=args.check)
        if command == "test":
            return _test(folder, args)
        if command == "explain":
            return _explain(folder, args)
    except SecureDSError as exc:
        # printed here, escaped: messages quote policy text, which can hold [brackets]
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 2
    raise AssertionError(f"unhandled policy command {command!r}")  # pragma: no cover


def _add_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="?", type=Path, metavar="DIR", help=_DIR_HELP)


def _folder(given: Path | None) -> Path:
    if given is not None:
        return given
    configured = os.environ.get("SECURE_DS_POLICY_DIR")
    return Path(configured) if configured else Path("policies")


def _ranged(low: int, high: int | None) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"{value} is out of range ({span})")
        return value

    return parse


# ------------------------------------------------------------------------ validate


def _validate(folder: Path, *, as_json: bool, strict: bool) -> int:
    from ..policy._lint import lint_folder

    if not folder.is_dir():
        raise SecureDSError(
            f"{folder} is not a directory.",
            hint="Pass the policy folder (e.g. policies), or set SECURE_DS_POLICY_DIR.",
        )
    report = lint_folder(folder)
    failed = bool(report.errors or (strict and report.warnings))
    if as_json:
        sys.stdout.write(json.dumps(report.as_json(), indent=2) + "\n")
        return 1 if failed else 0
    console = Console(highlight=False, soft_wrap=True)  # keep paths whole for grep
    for problem in report.problems:
        style = "red" if problem.severity == "error" else "yellow"
        console.print(
            f"[bold {style}]{problem.severity}[/] [bold]{escape(problem.where)}:[/] "
            f"{escape(problem.message)}"
        )
        for line in problem.detail.splitlines():
            console.print(f"    {_diff_markup(line)}")
    summary = (
        f"{folder}: {len(report.files)} policy file(s), {report.policy_count} policies; "
        f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)"
    )
    if report.bundle is not None:
        summary += f"; revision {report.bundle.label}"
    console.print(f"[{'red' if failed else 'green'}]{escape(summary)}[/]")
    return 1 if failed else 0


def _diff_markup(line: str) -> str:
    text = escape(line)
    if line.startswith(("+++", "---")):
        return f"[bold]{text}[/]"
    if line.startswith("+"):
        return f"[green]{text}[/]"
    if line.startswith("-"):
        return f"[red]{text}[/]"
    if line.startswith("@@"):
        return f"[cyan]{text}[/]"
    return f"[dim]{text}[/]"


# -------------------------------------------------------------------------- format


def _format(folder: Path, *, check: bool) -> int:
    from ..policy._lint import format_folder

    report = format_folder(folder, write=not check)
    console = Console(highlight=False, soft_wrap=True)
    for problem in report.problems:
        console.print(
            f"[bold red]error[/] [bold]{escape(problem.where)}:[/] {escape(problem.message)}"
        )
    verb = "would reformat" if check else "reformatted"
    for name in report.changed:
        console.print(f"{verb} [bold]{escape(str(folder / name))}[/]")
    if not report.changed and not report.problems:
        console.print(f"[green]{escape(str(folder))}: every .cedar file is formatted[/]")
    return 1 if report.problems or (check and report.changed) else 0


# ---------------------------------------------------------------------------- test


def _test(folder: Path, args: argparse.Namespace) -> int:
    from ..policy._bundle import load_bundle
    from ..policy._testing import run_policy_tests

    bundle = load_bundle(folder)
    result = run_policy_tests(bundle, args.file)
    empty = result.case_count == 0 and not result.errors
    coverage_failed = bool(args.require_coverage and result.uncovered)
    failed = not result.ok or empty or coverage_failed
    if args.json:
        sys.stdout.write(json.dumps(result.as_json(), indent=2) + "\n")
        return 1 if failed else 0
    console = Console(highlight=False, soft_wrap=True)
    if empty:
        where = ", ".join(result.files) or str(folder / "tests")
        console.print(
            f"[red]no decision test cases found in {escape(where)}[/]: add JSON files of "
            "test cases (Cedar's run-tests format) to the folder's tests/ directory."
        )
        return 1
    table = Table(title=f"decision tests: {escape(str(folder))} ({escape(bundle.label)})")
    for column in ("case", "decision", "determining policies", "result"):
        table.add_column(column, overflow="fold")
    for case in result.results:
        decision = case.actual
        if case.actual != case.expected:
            decision = f"[red]{case.actual} (expected {case.expected})[/]"
        table.add_row(
            escape(f"{Path(case.file).stem}[{case.index}] {case.name or ''}".strip()),
            decision,
            escape(", ".join(case.evaluation.policies) or "-"),
            "[green]ok[/]" if case.passed else "[red]FAILED[/]",
        )
    console.print(table)
    for case in result.failed:
        where = f"{case.file}[{case.index}] {case.name or ''}".strip()
        console.print(f"[bold red]FAILED[/] {escape(where)}")
        for difference in case.differences:
            console.print(f"    {escape(difference)}")
    for error in result.errors:
        where = error.file if error.index is None else f"{error.file}[{error.index}]"
        console.print(f"[bold red]MALFORMED[/] {escape(where)}: {escape(error.message)}")
    total = len(bundle.policies)
    line = f"policies exercised: {len(result.covered)}/{total}"
    if result.uncovered:
        line += "; not exercised: " + ", ".join(result.uncovered)
    console.print(
        f"[{'red' if coverage_failed else 'yellow' if result.uncovered else 'green'}]"
        f"{escape(line)}[/]"
    )
    summary = (
        f"{len(result.passed)} passed, {len(result.failed)} failed, {len(result.errors)} malformed"
    )
    console.print(f"[{'red' if failed else 'green'}]{summary}[/]")
    return 1 if failed else 0


# ------------------------------------------------------------------------- explain


def _explain(folder: Path, args: argparse.Namespace) -> int:
    from ..policy._bundle import load_bundle
    from ..policy._explain import explain_call, explain_request, started_at_for
    from ..policy._inputs import MODEL_ACTIONS, local_address
    from ..policy._testing import CaseProblem

    bundle = load_bundle(folder)
    try:
        if args.request is not None:
            flags = [f for f in _CALL_FLAGS if _given(getattr(args, f.replace("-", "_")))]
            if flags:
                raise SecureDSError(
                    f"--request describes the whole call; it cannot be combined with "
                    f"{', '.join('--' + f for f in flags)}.",
                    hint="Put those values into the request file, or drop --request.",
                )
            raw = _request_file(args.request, args.case)
            explanation = explain_request(bundle, raw, args.request.parent)
        else:
            if (args.action or "chat") in MODEL_ACTIONS and not (args.model or args.resource):
                raise SecureDSError(
                    f"--action {args.action or 'chat'} is a model call, but no model is given.",
                    hint="Add --model NAME (a model from the catalogue, entities.json).",
                )
            findings = [_finding(text) for text in args.finding]
            explanation = explain_call(
                bundle,
                subject=args.principal,
                roles=args.role,
                attributes=dict(_claim(text) for text in args.attr),
                action=args.action or "chat",
                model=args.model,
                resource=args.resource,
                level=args.classification or _level_of(findings),
                findings=findings,
                max_tokens=args.max_tokens,
                started_at=started_at_for(args.hour, args.weekday),
                auth=args.auth or "jwt",
                certificate_bound=not args.no_cert_binding,
                cert_sha256=args.cert_sha256,
                source_ip=args.source_ip or local_address(),
            )
    except CaseProblem as exc:
        raise SecureDSError(f"Cannot explain this request: {exc}") from None
    if args.json:
        sys.stdout.write(json.dumps(explanation.as_json(), indent=2) + "\n")
        return 0
    _print_explanation(explanation, bundle.label)
    return 0


# flags that describe a call: --request replaces all of them
_CALL_FLAGS = (
    "principal",
    "role",
    "attr",
    "action",
    "model",
    "resource",
    "classification",
    "finding",
    "hour",
    "weekday",
    "max-tokens",
    "auth",
    "no-cert-binding",
    "cert-sha256",
    "source-ip",
)


def _given(value: object) -> bool:
    # by identity: --hour 0 is given, although 0 == False
    return value is not None and value is not False and value != []


def _request_file(path: Path, case: int | None) -> Any:
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise SecureDSError(
            f"Cannot read {path} ({exc.strerror}).", hint="Pass a readable JSON file."
        ) from None
    except ValueError as exc:
        raise SecureDSError(f"{path} is not valid UTF-8 JSON ({exc}).", hint="Fix it.") from None
    if isinstance(raw, list):
        if case is None or not 0 <= case < len(raw):
            raise SecureDSError(
                f"{path} holds a list of {len(raw)} test case(s).",
                hint=f"Pick one with --case N (0..{max(len(raw) - 1, 0)}).",
            )
        return raw[case]
    return raw


def _claim(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SecureDSError(
            f"--attr {text!r} is not KEY=VALUE.", hint="Write e.g. --attr clearance=2."
        )
    try:
        # as the claim would arrive in a JWT: 2 is a number, "2" (quoted) a string
        return key, json.loads(value)
    except ValueError:
        return key, value


def _finding(text: str) -> tuple[str, int]:
    kind, sep, count = text.partition("=")
    if not kind or (sep and not count.isdigit()):
        raise SecureDSError(
            f"--finding {text!r} is not KIND or KIND=N.", hint="Write e.g. --finding email=2."
        )
    return kind, int(count) if sep else 1


def _level_of(findings: Sequence[tuple[str, int]]) -> str:
    """The level the DLP scanner gives text with these findings (built-in kinds)."""
    from ..dlp._model import CLASSIFICATION_OF_KIND, LEVELS

    levels = [CLASSIFICATION_OF_KIND.get(kind, "public") for kind, _ in findings]
    return max(levels, key=LEVELS.index) if levels else "public"


def _print_explanation(explanation: Explanation, label: str) -> None:
    ev = explanation.evaluation
    console = Console(highlight=False, soft_wrap=True)
    request = explanation.request
    style = "green" if ev.effect == "permit" else "red"
    console.print(f"decision: [bold {style}]{ev.effect.upper()}[/]  (policies {escape(label)})")
    principal = request["principal"]
    entity = next((e for e in explanation.entities if e.get("uid") == principal), None)
    who = _uid(principal)
    if entity is not None:
        roles = ", ".join(p["id"] for p in entity.get("parents", [])) or "none"
        attrs = ", ".join(f"{k}={json.dumps(v)}" for k, v in entity.get("attrs", {}).items())
        who += f" (roles: {roles}; attributes: {attrs or 'none'})"
    console.print(
        f"request:  {escape(who)} -> {escape(request['action']['id'])} -> "
        f"{escape(_uid(request['resource']))}"
    )
    context = ", ".join(f"{k}={_short(v)}" for k, v in request["context"].items())
    console.print(f"context:  {escape(context)}")
    console.print(f"why:      [{style}]{escape(explanation.why)}[/]")
    if explanation.policies:
        console.print("determining policies:")
        for info in explanation.policies:
            reason = info.annotations.get("reason")
            said = f': "{reason}"' if reason and info.effect == "forbid" else ""
            console.print(
                f"  {info.effect:<6} {escape(info.id)} ({escape(info.file)}){escape(said)}"
            )
    if ev.effect == "permit":
        shown = ", ".join(ev.obligations) or "none"
        console.print(f"obligations (merged, carried out by enforce): {escape(shown)}")
    if ev.advice:
        console.print(f"advice: {escape('; '.join(ev.advice))}")
    for error in ev.errors:
        console.print(f"[red]evaluation error:[/] {escape(error)}")
    if explanation.ignored_claims:
        ignored = ", ".join(explanation.ignored_claims)
        console.print(f"[dim]claims the schema does not declare (ignored): {escape(ignored)}[/]")


def _uid(uid: dict[str, str]) -> str:
    return f"{uid['type']}::{json.dumps(uid['id'])}"


def _short(value: Any) -> str:
    if isinstance(value, dict) and "__extn" in value:
        return str(value["__extn"].get("arg"))
    return json.dumps(value)


# -------------------------------------------------------------------------- review


def _add_review(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ._policy_review import add_review_parser

    add_review_parser(actions)


def _review(args: argparse.Namespace) -> int:
    from ._policy_review import run_review  # imported on use: it loads the replayer

    return int(run_review(args))
