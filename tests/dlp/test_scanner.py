"""The scanner: overlaps, classification, counts, user rules, config errors, bad input."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from secure_ds.dlp import (
    KINDS,
    CustomRule,
    DLPConfigError,
    Finding,
    Scanner,
    ScanResult,
    default_scanner,
)
from secure_ds.dlp._scanner import resolve_overlaps
from secure_ds.errors import ConfigError, SecureDSError

from . import _values as v


def test_public_api_shape() -> None:
    import secure_ds.dlp as dlp

    assert set(dlp.__all__) >= {
        "Classification",
        "KINDS",
        "Finding",
        "ScanResult",
        "Scanner",
        "default_scanner",
        "DLPConfigError",
    }
    assert KINDS == (
        "email",
        "phone",
        "credit_card",
        "iban",
        "us_ssn",
        "ip_address",
        "jwt",
        "private_key",
        "aws_access_key",
        "aws_secret_key",
        "github_token",
        "slack_token",
        "api_key",
        "secret",
    )
    assert default_scanner() is default_scanner()
    assert issubclass(DLPConfigError, ConfigError)
    assert issubclass(DLPConfigError, SecureDSError)


# ----------------------------------------------------------------- overlaps


def _f(kind: str, start: int, end: int, confidence: float) -> Finding:
    return Finding(kind, start, end, confidence, kind)


def test_overlap_keeps_higher_confidence_then_longer_then_more_sensitive() -> None:
    assert resolve_overlaps([_f("secret", 0, 30, 0.75), _f("jwt", 5, 25, 0.97)]) == (
        _f("jwt", 5, 25, 0.97),
    )
    assert resolve_overlaps([_f("phone", 0, 10, 0.9), _f("ip_address", 0, 14, 0.9)]) == (
        _f("ip_address", 0, 14, 0.9),
    )
    # same confidence, same span: the more sensitive kind wins
    assert resolve_overlaps([_f("ip_address", 3, 9, 0.9), _f("phone", 3, 9, 0.9)]) == (
        _f("phone", 3, 9, 0.9),
    )


def test_overlap_result_is_sorted_and_disjoint() -> None:
    findings = [
        _f("email", 50, 60, 0.95),
        _f("secret", 0, 20, 0.7),
        _f("api_key", 10, 30, 0.92),  # beats the secret, then blocks nothing else
        _f("phone", 29, 40, 0.85),  # overlaps the api_key by one character: dropped
        _f("us_ssn", 40, 45, 0.85),  # touches the phone's end: kept
    ]
    result = resolve_overlaps(findings)
    assert result == (
        _f("api_key", 10, 30, 0.92),
        _f("us_ssn", 40, 45, 0.85),
        _f("email", 50, 60, 0.95),
    )
    for a, b in itertools.pairwise(result):
        assert a.end <= b.start


def test_overlapping_detectors_on_real_text() -> None:
    token = v.jwt()
    text = f"token = {token}\naddr ::ffff:192.0.2.1 end"
    result = default_scanner().scan(text)
    assert [(f.kind, text[f.start : f.end]) for f in result.findings] == [
        ("jwt", token),  # the generic secret on the same value loses
        ("ip_address", "::ffff:192.0.2.1"),  # the embedded IPv4 is part of it
    ]


# ------------------------------------------------------- classification/counts


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("nothing to see here, version 1.2.3", "public"),
        ("server 10.1.2.3 is down", "internal"),
        ("mail jane.doe@example.com from 10.1.2.3", "confidential"),
        ("card 4111 1111 1111 1111", "confidential"),
        ("key " + v.openai_key() + " and jane.doe@example.com", "secret"),
        (v.pem(), "secret"),
    ],
)
def test_classification(text: str, level: str) -> None:
    assert default_scanner().scan(text).classification == level


def test_classify_unknown_kind_counts_as_confidential() -> None:
    assert default_scanner().classify([_f("something_else", 0, 1, 1.0)]) == "confidential"
    assert default_scanner().classify([]) == "public"


def test_counts_are_kinds_and_numbers_only() -> None:
    text = "a@example.com b@example.org call (415) 555-0132 " + v.github_token()
    result = default_scanner().scan(text)
    assert result.counts() == {"email": 2, "phone": 1, "github_token": 1}
    assert isinstance(result, ScanResult)
    assert all(isinstance(n, int) for n in result.counts().values())


def test_findings_carry_offsets_not_values() -> None:
    result = default_scanner().scan("x jane.doe@example.com")
    (finding,) = result.findings
    assert (finding.start, finding.end, finding.detector) == (2, 22, "email")
    assert "jane" not in repr(finding)
    with pytest.raises(AttributeError):
        finding.start = 0  # type: ignore[misc]


def test_min_confidence_drops_weak_findings() -> None:
    text = "call 020 7946 0958"  # national format without context word: 0.75... with one
    assert default_scanner().scan(text).findings
    assert Scanner(min_confidence=0.95).scan(text).findings == ()
    with pytest.raises(DLPConfigError):
        Scanner(min_confidence=1.5)


# -------------------------------------------------------------- custom rules


def test_custom_pattern_and_dictionary() -> None:
    scanner = Scanner(
        custom=[
            CustomRule("employee_id", "confidential", regex=r"EMP-[0-9]{6}", confidence=0.9),
            CustomRule("project_codename", "internal", terms=("BLUEFALCON", "Nightjar")),
        ]
    )
    text = "EMP-123456 works on bluefalcon and NIGHTJAR, not nightjars or EMP-12345"
    result = scanner.scan(text)
    assert [(f.kind, text[f.start : f.end], f.detector) for f in result.findings] == [
        ("employee_id", "EMP-123456", "user:employee_id"),
        ("project_codename", "bluefalcon", "user:project_codename"),
        ("project_codename", "NIGHTJAR", "user:project_codename"),
    ]
    assert result.classification == "confidential"
    assert (
        Scanner(custom=[CustomRule("codename", "secret", terms=("Nightjar",))])
        .scan("see nightjar")
        .classification
        == "secret"
    )


def test_case_sensitive_dictionary() -> None:
    rule = CustomRule("codename", "internal", terms=("Nightjar",), case_sensitive=True)
    text = "Nightjar nightjar"
    assert [(f.start, f.end) for f in Scanner(custom=[rule]).scan(text).findings] == [(0, 8)]


def test_from_config(tmp_path: Path) -> None:
    config = tmp_path / "dlp.toml"
    config.write_text(
        """
[[pattern]]
name = "employee_id"
regex = 'EMP-[0-9]{6}'
classification = "confidential"
confidence = 0.9

[[dictionary]]
name = "project_codename"
terms = ["BLUEFALCON", "Nightjar"]
case_sensitive = false
classification = "internal"
"""
    )
    scanner = Scanner.from_config(config)
    result = scanner.scan("EMP-000042 on Nightjar, mail a@example.com")
    assert result.counts() == {"employee_id": 1, "project_codename": 1, "email": 1}


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "dlp.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "[[pattern]]\nname = 'employee_id'\nregex = 'EMP-[0-9'\nclassification = 'internal'\n",
            r"pattern 'employee_id': the regex does not compile",
        ),
        (
            "[[pattern]]\nname = 'nested'\nregex = '(a+)+b'\nclassification = 'internal'\n",
            r"pattern 'nested': the regex can take exponential time",
        ),
        (
            "[[pattern]]\nname = 'words'\nregex = '(\\w+\\s?)+$'\nclassification = 'internal'\n",
            r"pattern 'words': the regex can take exponential time",
        ),
        (
            "[[pattern]]\nname = 'alt'\nregex = '(a|aa)*c'\nclassification = 'internal'\n",
            r"pattern 'alt': the regex can take exponential time",
        ),
        (
            "[[pattern]]\nname = 'empty'\nregex = 'x*'\nclassification = 'internal'\n",
            r"pattern 'empty': the regex matches the empty string",
        ),
        (
            "[[pattern]]\nname = 'email'\nregex = 'x+'\nclassification = 'internal'\n",
            r"pattern 'email': the name clashes with the built-in kind 'email'",
        ),
        (
            "[[dictionary]]\nname = 'codes'\nterms = ['A']\nclassification = 'top-secret'\n",
            r"dictionary 'codes': classification 'top-secret' is not a level",
        ),
        (
            "[[dictionary]]\nname = 'codes'\nterms = []\nclassification = 'internal'\n",
            r"dictionary 'codes': a rule needs exactly one of a regex or a list of terms",
        ),
        (
            "[[pattern]]\nname = 'x1'\nregex = 'x+'\nclassification = 'internal'\nconfidence = 2\n",
            r"pattern 'x1': confidence 2 is outside 0..1",
        ),
        (
            "[[pattern]]\nname = 'x1'\nregex = 'x+'\nclassification = 'internal'\ncolour = 1\n",
            r"pattern 'x1': has unknown keys \['colour'\]",
        ),
        (
            "[[pattern]]\nname = 'd'\nregex = 'x+'\nclassification = 'internal'\n"
            "[[dictionary]]\nname = 'd'\nterms = ['y']\nclassification = 'internal'\n",
            r"'d'.*defined twice",
        ),
        ("[[pattern]\nname=", r"is not valid TOML"),
        ("[rules]\nx = 1\n", r"unknown sections \['rules'\]"),
    ],
)
def test_config_errors_name_the_rule(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(DLPConfigError, match=expected) as info:
        Scanner.from_config(_config(tmp_path, body))
    assert str(info.value).strip()[-1] == "."  # ends with what to do


def test_config_error_carries_the_rule_name(tmp_path: Path) -> None:
    path = _config(
        tmp_path, "[[pattern]]\nname = 'employee_id'\nregex = '('\nclassification = 'internal'\n"
    )
    with pytest.raises(DLPConfigError) as info:
        Scanner.from_config(path)
    assert info.value.rule == "employee_id"
    assert info.value.variable == "pattern 'employee_id'"
    assert str(path) in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(DLPConfigError, match="cannot be read"):
        Scanner.from_config(tmp_path / "nope.toml")


def test_programmatic_rules_are_checked_too() -> None:
    with pytest.raises(DLPConfigError, match="pattern 'bad'"):
        Scanner(custom=[CustomRule("bad", "internal", regex="(x+)*y")])
    with pytest.raises(DLPConfigError, match="defined twice"):
        Scanner(
            custom=[CustomRule("a", "internal", regex="x"), CustomRule("a", "internal", regex="y")]
        )


def test_safe_nested_bounded_repetition_is_allowed() -> None:
    rule = CustomRule("host", "internal", regex=r"(?:[a-z]{1,10}\.){1,4}corp")
    assert Scanner(custom=[rule]).scan("at db.eu.corp now").counts() == {"host": 1}


# ----------------------------------------------------------------- bad input


def test_surrogates_and_odd_characters_do_not_crash() -> None:
    text = "\ud800 broken \udfff jane.doe@example.com \x00\u202e 4111 1111 1111 1111 \U0001f600"
    result = default_scanner().scan(text)
    got = [(f.kind, text[f.start : f.end]) for f in result.findings]
    assert got == [("email", "jane.doe@example.com"), ("credit_card", "4111 1111 1111 1111")]


def test_non_latin_text_keeps_character_offsets() -> None:
    text = "客户邮箱 张伟 jane.doe@example.com 电话 +44 20 7946 0958。密码 password: Xk92mQp4Lz"
    result = default_scanner().scan(text)
    assert [(f.kind, text[f.start : f.end]) for f in result.findings] == [
        ("email", "jane.doe@example.com"),
        ("phone", "+44 20 7946 0958"),
        ("secret", "Xk92mQp4Lz"),
    ]


def test_empty_and_whitespace() -> None:
    assert default_scanner().scan("") == ScanResult((), "public")
    assert default_scanner().scan(" \n\t ").findings == ()


def test_placeholders_already_in_the_text_are_scanned_normally() -> None:
    text = "<EMAIL_1> wrote: contact <EMAIL_1> or bob@example.com, card <CREDIT_CARD_1>"
    result = default_scanner().scan(text)
    assert [(f.kind, text[f.start : f.end]) for f in result.findings] == [
        ("email", "bob@example.com")
    ]


# Units repeated to build hostile inputs: near-misses for every detector, long runs
# of one character class, and the shapes that make naive regexes backtrack.
ADVERSARIAL_UNITS = [
    "a@" * 8 + "a.a@b.co ",
    "1 12 123 1234 12345 " + "9" * 30 + " 1.1.1.1.1 ",
    "::" + "f:" * 9 + "1::2 ",
    "eyJ" * 6 + ".x. sk-" + "-" * 10 + " ghp_ xoxb- AKIA AIza ",
    "password=password=token: secret= key=",
    "-----BEGIN PRIVATE KEY-----\n" + "A" * 60 + "\n",
    "+1 (+44 (0)(0)(0) 0 0 0 0 0 0 0 0 0 0 0 0 ",
    "DE89 DE89 3704 3704 3704 AA11 ",
    "4111 1111 1111 1111 1111 1111 1111 ",
]


def _time(text: str, runs: int = 1) -> float:
    scanner = default_scanner()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        scanner.scan(text)
        best = min(best, time.perf_counter() - start)
    return best


def _ratio(unit: str, small_size: int) -> tuple[float, float]:
    """Best of three for each size, measured in alternation: on a shared machine a
    burst of other work then slows both sizes alike instead of only one of them."""
    small = unit * (small_size // len(unit))
    large = small * 4
    t_small = t_large = float("inf")
    for _ in range(3):
        t_small = min(t_small, _time(small))
        t_large = min(t_large, _time(large))
    return t_small, t_large


def test_scan_time_is_linear_on_1mb_vs_4mb_of_adversarial_input() -> None:
    """Every hostile shape at once, 1 MB against 4 MB: 4x the input must cost about
    4x the time (a catastrophic pattern would make it 16x or worse)."""
    t_small, t_large = _ratio("".join(ADVERSARIAL_UNITS), 1_000_000)
    assert t_large < 8 * max(t_small, 0.005), (t_small, t_large)


@pytest.mark.parametrize(
    "unit",
    [*ADVERSARIAL_UNITS, "a" * 997 + " ", "1" * 997 + " ", "@" * 1000, ":" * 1000],
    ids=lambda u: repr(u[:16]),
)
def test_each_adversarial_shape_scans_in_linear_time(unit: str) -> None:
    t_small, t_large = _ratio(unit, 250_000)
    assert t_large < 8 * max(t_small, 0.005), (t_small, t_large)


def test_long_prompt_with_findings_spread_through_it() -> None:
    filler = "The quick brown fox jumps over the lazy dog 42 times. " * 2000
    text = filler + " jane.doe@example.com " + filler + v.github_token() + filler
    result = default_scanner().scan(text)
    assert result.counts() == {"email": 1, "github_token": 1}
