"""The native DLP fast paths find exactly what the Python detectors find.

``secure_ds._native`` (Rust, ``native/``) implements ``find_numbers``, ``find_tokens``,
``find_emails``, ``find_ibans``, ``find_secrets`` and the candidate search of
``find_ipv6``; the Python functions stay the reference. These tests run
both over the evaluation corpus, hand-picked edge cases (the places where Unicode
rules or regex backtracking could make them differ) and seeded random text, and
require the same findings in the same order. With ``SECURE_DS_REQUIRE_SERVICES=1``
(CI) a missing extension fails the run instead of skipping it.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from secure_ds.dlp import Scanner, _detectors, _native, _secrets, _tokens
from secure_ds.dlp._context import Context, NativeRow
from secure_ds.dlp._model import Finding

from .._services import skip_unless_required
from ._values import ALNUM, rand

CORPUS = Path(__file__).parent / "corpus"
Detector = Callable[[Context], Iterable[Finding]]
DETECTORS: dict[str, Detector] = {
    "numbers": _detectors.find_numbers,
    "secrets": _secrets.find_secrets,
    "tokens": _tokens.find_tokens,
    "email": _detectors.find_emails,
    "iban": _detectors.find_ibans,
    "ipv6": _detectors.find_ipv6,
}


@pytest.fixture(autouse=True)
def _native_built() -> None:
    if not _native.available():
        skip_unless_required(
            "secure_ds._native is not built (no Rust toolchain at install time); "
            "install one (rustup.rs) and run `make install` again"
        )


def _both(detector: Detector, text: str) -> tuple[list[Finding], list[Finding]]:
    return list(detector(Context(text, native=False))), list(detector(Context(text)))


def _assert_same(text: str) -> list[Finding]:
    found: list[Finding] = []
    for name, detector in DETECTORS.items():
        python, native = _both(detector, text)
        assert native == python, f"{name} differs on {text!r}"
        found.extend(native)
    return found


def test_the_scanner_uses_the_extension_when_built() -> None:
    assert _native.available()
    assert _secrets._native_secrets() is not None
    assert _detectors._native_numbers() is not None
    assert _tokens._native_tokens() is not None
    assert _detectors._native_email() is not None
    assert _detectors._native_iban() is not None
    assert _detectors._native_ipv6() is not None


def test_native_false_runs_the_python_detectors(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("the native scanner was used")

    monkeypatch.setattr(_secrets, "_native_secrets", refuse)
    monkeypatch.setattr(_detectors, "_native_numbers", refuse)
    monkeypatch.setattr(_tokens, "_native_tokens", refuse)
    for name in ("_native_email", "_native_iban", "_native_ipv6"):
        monkeypatch.setattr(_detectors, name, refuse)
    text = (
        f"password = 'hunter2!x' and card 4111 1111 1111 1111 and {_npm_token()} "
        "to bob@example.com, IBAN DE89 3704 0044 0532 0130 00 from 2001:db8::1"
    )
    result = Scanner(native=False).scan(text)
    assert {f.kind for f in result.findings} == {
        *("secret", "credit_card", "api_key", "email", "iban", "ip_address")
    }


def test_short_texts_are_scanned_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Below NATIVE_MIN_CHARS the native detectors' fixed cost outweighs their gain;
    from it on they run."""
    from secure_ds.dlp import _scanner

    used: list[int] = []
    real = _secrets._native_secrets

    def counting() -> object:
        used.append(1)
        return real()

    monkeypatch.setattr(_secrets, "_native_secrets", counting)
    short = "password = 'Zq7!wLx9#pR2'"
    assert len(short) < _scanner.NATIVE_MIN_CHARS
    assert Scanner().scan(short).counts() == {"secret": 1}
    assert used == []
    long = short + " " * (_scanner.NATIVE_MIN_CHARS - len(short))
    assert Scanner().scan(long).counts() == {"secret": 1}
    assert used == [1]


def _npm_token() -> str:
    return "npm" + "_" + rand(ALNUM, 36, seed=21)


def _jwt_like(seed: int) -> str:
    """A header that decodes to {"alg":"HS256"}, then random payload and signature."""
    return "ey" + "JhbGciOiJIUzI1NiJ9." + rand(ALNUM, 30, seed) + "." + rand(ALNUM, 20, seed + 1)


def test_the_corpus_gives_the_same_findings() -> None:
    with (CORPUS / "labelled.jsonl").open(encoding="utf-8") as fh:
        docs = [json.loads(line)["text"] for line in fh]
    clean = (CORPUS / "clean.txt").read_text(encoding="utf-8")
    whole = "\n\n".join([*docs, clean])
    found = _assert_same(whole)
    assert len(found) > 1000  # numbers and secrets of every kind, not an empty agreement
    for doc in docs:
        _assert_same(doc)
    native, python = Scanner(), Scanner(native=False)
    assert native.scan(whole) == python.scan(whole)


# Where Python decides by Unicode rules (case, case folding, whitespace) the native
# scanner must hand the candidate back; where the regex engine would backtrack, the
# hand-written matcher must end where ``re`` ends.
EDGE_CASES = [
    "épassword = 'Zq7!wLx9#pR2'",  # 'é'.islower(): glued to a word, not a key name
    "Épassword = 'Zq7!wLx9#pR2'",
    "token: Ab3dEf5hIj7lMn9pQr1t\u00a0tail",  # NBSP ends a bare value for Python
    "token: Ab3dEf5hIj7lMn9pQr1t\u2003tail",
    "token: Ab3dEf5hIj7lMn9pQr1t\x1ctail",  # str.isspace('\x1c'): True
    "token: 'Ab3dEf5hIj7lMn9pQr1t\u00e9'",
    "api_key=\u212aAb3dEf5hIj7lMn9pQr1t",  # KELVIN SIGN lower-cases to 'k'
    "firmware\x1c8.8.8.8",  # \s of a str pattern includes \x1c
    "version 8.8.8.8",
    "\u212aard 4111111111111111",
    "card\u00e9 4111111111111111",
    "order 4111111111111111",
    "caf\u00e9 phone 415 555 0132",
    "SSN\u00a0536-22-8726",
    "ssn 536 22 8726",
    "536228726",
    "tel: 020 7946 0958 and 01 23 45 67 89, fax 030 1234567",
    "ab 020 7946 0958",  # hex dump before
    "020 7946 0958 ff",  # hex dump after
    "1-800-555-0199 1.800.555.0199 1 800 555 0199 call 1 800 555 0199",
    "415-555-0132 415.555.0132 415-555.0132",
    "4111-1111-1111-1111-123 4111 1111 1111 1111 12 378282246310005",
    "3782 822463 10005 3782-822463-10005 3782 822463 1000",
    "10.1.2.3 1.2.3.4.5 1.2.3.4-5 255.255.255.0 255.255.0.255 0.1.2.3 127.0.0.1 192.168.001.1",
    "12345678901234567890 1234567890123 v1.2.3.4",
    "0123/456/789 0123-4567-89 0 12 34 56 78",
    "Authorization: Bearer Ab3dEf5hIj7lMn9pQr1t",
    "authorization = 'Bearer Ab3dEf5hIj7lMn9pQr1t'",
    "Authorization: Basic",
    "password is hunter22x, passwd=>Zq7!wLx9, pwd := s3cr3tPW",
    "credentials: Ab3dEf5hIj7lMn9pQr1t credential:Ab3dEf5hIj7lMn9pQr1t",
    "passwords: Ab3dEf5hIj7lMn9pQr1t tokens: Ab3dEf5hIj7lMn9pQr1t tokenize=Ab3dEf5hIj7lMn9pQr",
    "password_hash = 'Ab3dEf5hIj7lMn9pQr1t' max_tokens=4096 key_id=Ab3dEf5hIj7lMn9pQr1t",
    "password=${DB_PASSWORD} secret=<your-key> token=os.environ['T'] pwd=changeme",
    "secret = xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx secret = xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx1",
    "token = settings.TOKEN token=get_token() token=Ab3dEf5hIj7lMn9pQr1t).",
    'db_password"] = "' + "Zq7!wLx9#pR2" + '"',
    "bypass=Ab3dEf5hIj7lMn9pQr1t compass=Ab3dEf5hIj7lMn9pQr1t dbpass=Ab3dEf5hIj7lMn9pQr1t",
    "aws_secret_access_key = " + rand(ALNUM + "/+", 40, seed=3),
    "secret: '" + "x" * 300 + "'",
    "token=" + rand(ALNUM, 600, seed=4),
    # URL credentials: the password's characters and length, placeholders, Unicode
    "postgres://app:Zq7!wLx9#pR2@db.internal:5432/x https://user:hunter2@host/",
    "https://admin:changeme@h https://u:${PW}@h https://u:<pw>@h https://:s3cr3tPW99@h",
    "https://u:" + "x1" * 70 + "@h https://u:pw@@h https://u:p/w@h ftp://u:p w@h",
    "https://u:s3cr3t\u00e9PW@h https://u:s3cr3t\u00a0PW@h https://\u00fc:s3cr3tPW@h",
    # e-mail: local part, URL credentials, TLD and label rules, what follows
    "mail bob@example.com, .a.b-c+d@mail.co.uk; x..y@a.com a.@b.com -a@b.io",
    "https://user:pw@host.example.com/ and https://x.org/ bob@example.com",
    "https://x\u00a0bob@example.com https://x\u2003bob@example.com",
    "git@github.com:org/repo a@b.png a@b.c a@-b.com a@b-.com a@b..com a@b.xn--p1ai",
    "user@host.com:/path user@host.com: user@host.comx " + "a" * 70 + "@b.com",
    "a@" + "b" * 70 + ".com a@b." + "c" * 70 + " a@b.c.d.e.f.g.h.i.j.k.com",
    # IBAN: grouping, the country's length, the word after it, mod 97
    "DE89 3704 0044 0532 0130 00 DE89370400440532013000 DE8937040044053201300099",
    "GB82 WEST 1234 5698 7654 32 GB82WEST12345698765432X NL91ABNA0417164300 XX12 3456 7890",
    "FR14 2004 1010 0505 0001 3M02 606 FR14 2004 1010 0505 0001 3M02 607 _DE89370400440532013000",
    # IPv6: compressed, embedded IPv4, MAC-style octets, zones, trailing colons
    "2001:db8::1 ::1 :: fe80::1%eth0 2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    "00:1a:2b:3c:4d:5e ::ffff:192.0.2.1 1:2:3:4:5:6:7:8 a:b:c:d: x2001:db8::1 2001:db8::1x",
    "::1:2:: 1::2::3 " + "1:" * 30 + " :" + "f" * 5 + ":1:2:3:",
    *[
        "x " + token + tail
        for token in (
            "AKIA" + rand("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16, seed=6),
            "ASIA" + rand("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 16, seed=7),
            "gh" + "p_" + rand(ALNUM, 36, seed=8),
            "gh" + "o_" + rand(ALNUM, 251, seed=9),
            "github" + "_pat_" + rand(ALNUM + "_", 60, seed=10),
            "xox" + "b-123456789012-1234567890123-" + rand(ALNUM, 24, seed=11),
            "xa" + "pp-1-A0123-" + rand(ALNUM, 20, seed=12) + "--",
            "s" + "k-" + rand(ALNUM, 48, seed=13),
            "s" + "k-proj-" + rand(ALNUM + "-_", 40, seed=14),
            "s" + "k-learn-some-module-name-here-too",
            "s" + "k_live_" + rand(ALNUM, 24, seed=15),
            "r" + "k_test_" + rand(ALNUM, 30, seed=16),
            "AI" + "za" + rand(ALNUM + "-_", 35, seed=17),
            "gl" + "pat-" + rand(ALNUM + "-_", 20, seed=18),
            "S" + "G." + rand(ALNUM + "-_", 22, seed=19) + "." + rand(ALNUM + "-_", 43, seed=20),
            _npm_token(),
            "h" + "f_" + rand("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", 36, seed=22),
            "ey"
            + "JhbGciOiJIUzI1NiJ9."
            + rand(ALNUM, 30, seed=23)
            + "."
            + rand(ALNUM, 20, seed=24),
        )
        for tail in ("", "_", "x", "\u00e9", " " + rand(ALNUM + "/+", 40, seed=25), "=")
    ],
]


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases_give_the_same_findings(text: str) -> None:
    _assert_same(text)


def test_edge_cases_exercise_findings_and_hand_backs() -> None:
    """The cases above are not vacuous: they produce findings of every numeric and
    secret kind, and some of them are handed back to Python."""
    kinds = {f.kind for text in EDGE_CASES for f in _assert_same(text)}
    assert kinds >= {
        *("secret", "aws_secret_key", "credit_card", "us_ssn", "phone", "ip_address"),
        *("aws_access_key", "github_token", "slack_token", "api_key", "jwt", "email", "iban"),
    }
    from secure_ds._native import ScanText  # built: the fixture checked

    secrets, numbers = _secrets._native_secrets(), _detectors._native_numbers()
    assert secrets is not None
    assert numbers is not None
    handed_back = [
        text
        for text in EDGE_CASES
        # five items per row, the first the kind, None for a candidate handed back
        if None in [*secrets.scan(ScanText(text))[::5], *numbers.scan(ScanText(text))[::5]]
    ]
    assert len(handed_back) >= 6


_PIECES = [
    *" \n\t-./,+:=;'\"`()[]{}<>$%*#@_\\",
    *["=>", ":=", " is ", "0", "1", "4", "9", "12", "123", "1234", "555", "0123", "07"],
    *["4111", "1111 ", "4111111111111111", "378282246310005", "078-05-1120", "536-22-8726"],
    *["192.168.1.1", "10.0.0.", "255.255.255.0", "8.8.8.8", "415-555-0132", "1-800-555-0199"],
    *["(415) 555-0132", "020 7946 0958", "01 23 45 67 89", "030 1234567", "07700 900123"],
    *["password", "Password", "PASSWORD", "passwd", "passphrase", "pwd", "secret", "token"],
    *["tokens", "tokenize", "api_key", "key", "aws_secret_access_key", "credentials", "bypass"],
    *["Authorization", "Bearer", "basic", "password_hash", "max_tokens", "key_id", "db_"],
    *["phone", "call", "ssn", "card", "visa", "order", "id", "version", "build", "agent"],
    *["${X}", "<your-key>", "os.environ", "changeme", "x" * 30, "*" * 8, "null"],
    *["\u00e9", "\u00c9", "\u00df", "\u0130", "\u212a", "\u00a0", "\u2003", "\x85", "\xb2"],
    *["\u4e2d\u6587", "\u01c5", "\u00aa", "\x1c", "ab", "ff", "DE"],
    rand(ALNUM, 20, seed=1),
    rand(ALNUM + "/+", 40, seed=2),
    rand(ALNUM + "!#&", 12, seed=5),
    "AKIA" + rand("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16, seed=26),
    "gh" + "p_" + rand(ALNUM, 36, seed=27),
    "xox" + "b-123456789012-1234567890123-" + rand(ALNUM, 24, seed=28),
    "s" + "k-" + rand(ALNUM, 48, seed=29),
    "AI" + "za" + rand(ALNUM + "-_", 35, seed=30),
    _jwt_like(seed=31),
    *["AKIA", "gh" + "p_", "s" + "k-", "xox" + "b-", "h" + "f_", "S" + "G.", "ey" + "J"],
    *["bob@example.com", "a.b@mail.co.uk", "@", "x@y", "https://", "://", "a@b.png"],
    *["user:", "Zq7!wLx9#pR2@", "s3cr3t99@db.example.com", "changeme@", "${PW}@", "p@ss"],
    *["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "NL91ABNA0417164300", "AB12"],
    *["2001:db8::1", "::1", "::", "fe80::1", "00:1a:2b:3c:4d:5e", "::ffff:192.0.2.1", "a:b:c:d:"],
]


def _random_texts(seed: int, count: int) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        yield "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 40)))


def test_random_text_gives_the_same_findings() -> None:
    found = 0
    for text in _random_texts(seed=2026, count=4000):
        found += len(_assert_same(text))
    assert found > 1000  # the text is dense with candidates, not trivially clean


def test_threads_sharing_the_native_scanners_get_the_same_findings() -> None:
    """The scanner is shared by every thread of a client and the native part runs
    without the interpreter lock: eight threads scanning at once find what one does."""
    texts = [" ".join(EDGE_CASES[i::5]) for i in range(5)]
    expected = [Scanner(native=False).scan(text) for text in texts]
    scanner = Scanner()
    results: list[list[bool]] = []

    def work() -> None:
        pairs = list(zip(texts, expected, strict=True))
        results.append([scanner.scan(text) == want for _ in range(20) for text, want in pairs])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert all(all(row) for row in results)


def test_a_disagreement_falls_back_to_the_reference() -> None:
    """If the native scanner ever handed back a key-name match the Python pattern does
    not make, the reference decides the whole text."""

    confused: list[NativeRow] = [("secret", 0, 3, 0.75, -1), (None, 4, 4, 0.0, 0)]  # no "pass" at 4
    text = "one two password = 'Zq7!wLx9#pR2'"
    expected = _secrets._secrets(Context(text))
    assert expected  # the reference finds the password
    assert _secrets._secrets_native(Context(text), confused) == expected


def test_text_that_is_not_valid_unicode_is_scanned_in_python() -> None:
    text = "password = 'Zq7!wLx9#pR2' \ud800 card 4111 1111 1111 1111"
    ctx = Context(text)
    found = [*_secrets.find_secrets(ctx), *_detectors.find_numbers(ctx)]
    assert not ctx.native  # the first detector found out; the second did not retry
    assert found == [
        *_secrets.find_secrets(Context(text, native=False)),
        *_detectors.find_numbers(Context(text, native=False)),
    ]
    assert {f.kind for f in found} == {"secret", "credit_card"}


def test_placeholder_pattern_compiles_to_the_same_language() -> None:
    """``_PLACEHOLDER`` (a verbose, case-insensitive Python pattern) compiled by the
    regex crate accepts exactly what ``re`` accepts."""
    scanner = _secrets._native_secrets()
    assert scanner is not None
    values = [
        "${DB_PASSWORD}", "$DB", "$(cat f)", "%(pw)s", "%PW%", "{{ pw }}", "{pw}", "<key>",
        "[redacted]", "****", "xXx", "...", "--", "#", "?", "123", "None", "NULL", "Changeme",
        "change-me", "change_me", "YOUR_API_KEY", "your key", "insert here", "my_example_1",
        "sample-token", "Redacted", "abc", "hunter2", "s3cr3t", "x1", "#x#", "a#b", "a b",
        "{{a\nb}}", "$(a\nb)", "<a<b>", "[a[b]", "n/a", "N/A", "tbd", "password123", "foo!",
    ]  # fmt: skip
    for value in values:
        assert scanner.placeholder(value) == bool(_secrets._PLACEHOLDER.fullmatch(value)), value
    assert sum(scanner.placeholder(v) for v in values) >= 25
