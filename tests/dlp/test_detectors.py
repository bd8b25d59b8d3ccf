"""Each built-in detector: what it must find (exact spans) and what it must not.

The negatives are the hard ones: strings a naive pattern for that kind matches
(order numbers for cards, dates for phones, version strings for addresses, git SHAs
for AWS secrets, placeholders for passwords).
"""

from __future__ import annotations

import itertools
import random
import re
import string
from typing import Any

import pytest

from secure_ds.dlp import Finding, Scanner, _detectors, default_scanner
from secure_ds.dlp._context import Context
from secure_ds.dlp._validators import (
    card_brand,
    country_code_split,
    entropy_at_least,
    iban_valid,
    ipv4_reportable,
    ipv6_reportable,
    jwt_header_valid,
    luhn_valid,
    shannon_entropy,
    ssn_valid,
)

from . import _values as v


def found(text: str, scanner: Scanner | None = None) -> list[tuple[str, str]]:
    """(kind, exact value) of every finding."""
    result = (scanner or default_scanner()).scan(text)
    return [(f.kind, text[f.start : f.end]) for f in result.findings]


def kinds(text: str) -> set[str]:
    return {kind for kind, _ in found(text)}


# ---------------------------------------------------------------- validators


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")
    assert luhn_valid(v.luhn_complete("401288000000000"))


def test_card_brand_needs_an_issuer_range_and_its_length() -> None:
    assert card_brand("4111111111111111") == "visa"
    assert card_brand("5555555555554444") == "mastercard"
    assert card_brand("2223000048400011") == "mastercard"
    assert card_brand("378282246310005") == "amex"
    assert card_brand("6011111111111117") == "discover"
    assert card_brand("3530111333300000") == "jcb"
    assert card_brand("30569309025904") == "diners"
    assert card_brand("37828224631000") is None  # amex is 15 digits
    assert card_brand("1234567812345670") is None  # no network issues 1...
    assert card_brand("9111111111111111") is None


def test_iban_mod97_and_country_length() -> None:
    assert iban_valid("DE89370400440532013000")
    assert iban_valid("GB82WEST12345698765432")
    assert iban_valid("FR1420041010050500013M02606")
    assert not iban_valid("DE89370400440532013001")  # check digits wrong
    assert not iban_valid("DE8937040044053201300")  # one short for DE (22)
    assert not iban_valid("XX89370400440532013000")  # no such country
    generated = v.iban("NL", "ABNA0417164300")
    assert iban_valid(generated)


def test_ssn_rules() -> None:
    assert ssn_valid("123", "45", "6788")
    for area, group, serial in [
        ("000", "12", "3456"),
        ("666", "12", "3456"),
        ("900", "12", "3456"),
        ("123", "00", "4567"),
        ("123", "45", "0000"),
        ("078", "05", "1120"),  # the Woolworth wallet card
    ]:
        assert not ssn_valid(area, group, serial), (area, group, serial)


def test_ip_validators() -> None:
    assert ipv4_reportable("192.168.1.20")
    assert ipv4_reportable("203.0.113.7")
    for text in (
        "127.0.0.1",
        "0.0.0.0",  # noqa: S104 (a string under test, nothing binds)
        "255.255.255.0",
        "255.255.255.255",
        "256.1.1.1",
        "01.2.3.4",
    ):
        assert not ipv4_reportable(text), text
    assert ipv6_reportable("2001:db8::1")
    assert ipv6_reportable("fe80::1ff:fe23:4567:890a")
    for text in ("::1", "::", "Abc::Def", "1::2", "12:34:56"):
        assert not ipv6_reportable(text), text


def test_jwt_header_must_be_json_with_alg() -> None:
    token = v.jwt()
    assert jwt_header_valid(token.split(".")[0])
    assert not jwt_header_valid(v.b64url(b'{"typ":"JWT"}'))
    assert not jwt_header_valid(v.b64url(b"[1,2,3]"))
    assert not jwt_header_valid("eyJ!!!")


def test_entropy() -> None:
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == pytest.approx(2.0)
    random_like = v.openai_key(3)[3:]
    assert entropy_at_least(random_like, 4.0)
    assert not entropy_at_least("aaaaaaaaaaaaaaaaaaaab", 1.0)
    assert entropy_at_least("abcdefgh", 3.0) is (shannon_entropy("abcdefgh") >= 3.0)


def test_entropy_shortcuts_agree_with_the_exact_value() -> None:
    """entropy_at_least decides most values from distinct-character counts (of the
    whole, or of each half for long values); it must answer as the exact entropy."""
    rng = random.Random(5)
    alphabets = ("ab", "0123456789abcdef", string.ascii_letters + string.digits + "-_")
    for _ in range(1500):
        alphabet = rng.choice(alphabets)
        weights = [rng.random() ** rng.choice((1, 4, 10)) for _ in alphabet]
        value = "".join(rng.choices(alphabet, weights=weights, k=rng.randrange(2, 700)))
        for bits in (1.0, 2.9, 3.0, 3.3, 3.5, 4.0):
            assert entropy_at_least(value, bits) is (shannon_entropy(value) >= bits)


def test_country_codes() -> None:
    assert country_code_split("14155550132") == ("1", (10, 10))
    assert country_code_split("442079460958") == ("44", (9, 10))
    assert country_code_split("35320913") is not None
    assert country_code_split("0123") is None


# ---------------------------------------------------------------- positives

EMAIL_CASES = [
    ("write to jane.doe@example.com today", "jane.doe@example.com"),
    ("<John.Smith+billing@mail.example.org>", "John.Smith+billing@mail.example.org"),
    ("mailto:ops-team@example.net.", "ops-team@example.net"),
]


@pytest.mark.parametrize(("text", "value"), EMAIL_CASES)
def test_email_positive(text: str, value: str) -> None:
    assert found(text) == [("email", value)]


@pytest.mark.parametrize(
    "text",
    [
        "git clone git@github.com:acme/infra.git",
        'background: url("icon@2x.png")',
        "npm i lodash@4.17.21 @types/node@20.11.5",
        "postgres://app:S3cretPw9x@db.example.com:5432/app",  # a credential, not an address
        "@app.route('/x') and user@localhost",
        "sha256@abc and a@b",
    ],
)
def test_email_negative(text: str) -> None:
    assert "email" not in kinds(text)


PHONE_CASES = [
    "(415) 555-0132",
    "415-555-0132",
    "415.555.0132",
    "+1 415 555 0132",
    "+1-202-555-0147",
    "+14155550132",
    "1-800-555-0199",
    "+44 20 7946 0958",
    "+44 (0)20 7946 0958",
    "020 7946 0958",
    "07700 900123",
    "01 99 00 12 34",
    "+49 30 23125 123",
    "030 23125678",
    "+61 491 570 006",
]


@pytest.mark.parametrize("number", PHONE_CASES)
def test_phone_positive(number: str) -> None:
    assert found(f"Please call me on {number} tomorrow.") == [("phone", number)]


@pytest.mark.parametrize(
    "text",
    [
        "2024-03-15 10:23:45",
        "build 2024.03.15 took 1234 ms",
        "ports 1000-2000 and 8080",
        "ISBN 978-0-596-52068-7",
        "sizes: 512 256 1024",  # 3-3-4 digits, but no phone context
        "epoch 1710498121 ms 1710498121123",
        "00000010  01 00 00 00 45 00 00 3c  1c 46 40 00",  # hexdump bytes
        "CVE-2024-12345 fixed in 3.11.4",
        "+1 123 456 7890",  # area code cannot start with 1
        "order ORD-2024-000123",
    ],
)
def test_phone_negative(text: str) -> None:
    assert "phone" not in kinds(text)


def test_space_separated_nanp_needs_a_phone_word() -> None:
    assert found("mobile: 415 555 0132") == [("phone", "415 555 0132")]
    assert found("values 415 555 0132") == []


def test_credit_card_positive() -> None:
    amex = "3782 822463 10005"
    visa = "4111 1111 1111 1111"
    plain = v.luhn_complete("401288000000000")
    dashed = "-".join(["5555", "5555", "5555", "4444"])
    text = f"cards: {visa}, {amex}, {dashed} and my card {plain}."
    assert found(text) == [
        ("credit_card", visa),
        ("credit_card", amex),
        ("credit_card", dashed),
        ("credit_card", plain),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # Luhn fails
        "order #4111111111111111 shipped",  # an id, written as one
        "trace_id=4532015112830366 span=7",  # Luhn-valid, but an identifier
        "1234 5678 9012 3456",  # no issuer
        "timestamp 1710498121123",
    ],
)
def test_credit_card_negative(text: str) -> None:
    assert "credit_card" not in kinds(text)


def test_iban_positive_grouped_and_compact() -> None:
    grouped = "DE89 3704 0044 0532 0130 00"
    compact = v.iban("GB", "WEST12345698765432"[:18])
    text = f"IBAN {grouped} (BIC COBADEFFXXX) or {compact}."
    assert found(text) == [("iban", grouped), ("iban", compact)]


def test_iban_negative() -> None:
    assert "iban" not in kinds("product AB12CDEF3456GH and DE89 3704 0044 0532 0130 01")


def test_ssn_positive_and_context_rules() -> None:
    assert found("employee 123-45-6788 ok") == [("us_ssn", "123-45-6788")]
    assert found("SSN: 123 45 6788") == [("us_ssn", "123 45 6788")]
    assert found("ssn 123456788") == [("us_ssn", "123456788")]
    assert found("ref 123456788") == []  # nine digits alone are not an SSN
    assert found("ID 666-12-3456 and 078-05-1120") == []


def test_ip_addresses() -> None:
    text = "from 192.168.1.20 via 2001:db8::8a2e:370:7334 and [fe80::1]:443, 10.0.0.0/8"
    assert found(text) == [
        ("ip_address", "192.168.1.20"),
        ("ip_address", "2001:db8::8a2e:370:7334"),
        ("ip_address", "fe80::1"),
        ("ip_address", "10.0.0.0"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "listening on 0.0.0.0:8080 and 127.0.0.1 and [::1]",
        "netmask 255.255.255.0",
        "version 1.2.3.4 and v2.0.1.7",
        "OID 1.3.6.1.4.1.311",
        "std::vector<int> v; Vec::<u8>::new(); arr[1::2]",
        "at 10:23:45.123 and MAC 00:1a:2b:3c:4d:5e",
        "tests/test_api.py::TestOrders::test_refund PASSED",
    ],
)
def test_ip_negative(text: str) -> None:
    assert "ip_address" not in kinds(text)


def test_jwt() -> None:
    token = v.jwt()
    assert found(f"Authorization: Bearer {token}") == [("jwt", token)]
    not_jwt = v.b64url(b'{"auths":{}}') + "." + v.b64url(b"x" * 20) + ".abc"
    assert "jwt" not in kinds(f"config {not_jwt}")
    assert "jwt" not in kinds("data:application/json;base64," + v.b64url(b'{"alg":"none"}'))


def test_private_key() -> None:
    key = v.pem()
    assert found(f"key:\n{key}\n") == [("private_key", key)]
    openssh = v.pem("OPENSSH PRIVATE KEY")
    assert found(openssh) == [("private_key", openssh)]
    truncated = "\n".join(v.pem("EC PRIVATE KEY").splitlines()[:3])
    assert found(truncated) == [("private_key", truncated)]
    cert = v.pem("CERTIFICATE")
    public = v.pem("PUBLIC KEY")
    assert found(f"{cert}\n{public}") == []


def test_aws_keys() -> None:
    key_id, secret = v.aws_key_id(), v.aws_secret()
    text = f"aws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"
    assert found(text) == [("aws_access_key", key_id), ("aws_secret_key", secret)]
    documented = "AKIA" + "IOSFODNN7" + "EXAMPLE"
    assert found(f"AWS_ACCESS_KEY_ID={documented}") == [("aws_access_key", documented)]


def test_aws_secret_negatives() -> None:
    sha = "3f786850e387550fdab836ed7e6dc881de23001b"
    assert kinds(f"commit {sha}\naws_secret_access_key = ${{AWS_SECRET}}") == set()


def test_github_slack_and_api_keys() -> None:
    cases = [
        ("github_token", v.github_token()),
        ("github_token", v.github_pat()),
        ("slack_token", v.slack_bot()),
        ("slack_token", v.slack_webhook()),
        ("api_key", v.openai_key()),
        ("api_key", v.deepseek_key()),
        ("api_key", v.stripe_test_key()),
        ("api_key", v.google_key()),
    ]
    for kind, value in cases:
        assert found(f'key = "{value}"') == [(kind, value)], kind


@pytest.mark.parametrize(
    "text",
    [
        "pip install scikit-learn; see sk-learn-metrics-computation-module",
        "task-runner-with-a-very-long-hyphenated-name",
        "ghp_short and xoxb-123",
        "the risk-assessment-framework-document-v2",
    ],
)
def test_vendor_key_negatives(text: str) -> None:
    assert kinds(text) == set()


SECRET_CASES = [
    ('DB_PASSWORD="Tr0ub4dor&3x"', "Tr0ub4dor&3x"),
    ("password: hunter2x", "hunter2x"),
    ("client_secret = '9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c'", "9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c"),
    ("my temporary password is Summer2024!", "Summer2024!"),
    ("Authorization: Bearer 4f9aK2mZ8qT1xW7vB3nL6pR0sD5hJ9cE", "4f9aK2mZ8qT1xW7vB3nL6pR0sD5hJ9cE"),
    ("--password=S3cr3tPw9x", "S3cr3tPw9x"),
    ("redis://:Xk92mQp4Lz@cache.internal:6379/0", "Xk92mQp4Lz"),
    ('"apiKey": "aZ3kP9mQ2xL7vT4bN8cR1sW6yU0eH5jD"', "aZ3kP9mQ2xL7vT4bN8cR1sW6yU0eH5jD"),
]


@pytest.mark.parametrize(("text", "value"), SECRET_CASES)
def test_secret_positive(text: str, value: str) -> None:
    assert found(text) == [("secret", value)]


@pytest.mark.parametrize(
    "text",
    [
        "password: ${DB_PASSWORD}",
        'token = os.environ["GITHUB_TOKEN"]',
        "api_key: <your-api-key>",
        'password = "********"',
        "client_secret=REDACTED",
        "secret_name: app-credentials",
        "max_tokens: 2048",
        "password_hash = bcrypt.hashpw(pw, salt)",
        "PASSWORD_MIN_LENGTH = 12",
        "token: null",
        "password = password_input",
        "token = get_token()",
        "Failed password for invalid user admin from host port 22",
        "the token expired; token refresh scheduled",
        "cache miss key=user:424921:profile",
        "token_type: bearer",
        "passenger_count = 3",
        'token: "{{ secrets.GITHUB_TOKEN }}"',
    ],
)
def test_secret_negative(text: str) -> None:
    assert kinds(text) == set()


def test_numeric_lookahead_is_the_plain_alternation_factored() -> None:
    """The skeleton pattern's look-ahead is written factored for speed; it must accept
    exactly what the plain alternation of the formats' first characters accepts."""
    plain = re.compile(
        rb"\ 1(?=1{7}|11[\-.\ /]1|1{0,2}\.1{1,3}\.|111[\ \-/]111|1111[\ \-/]11"
        rb"|[\-.\ ]111[\-.\ ]|1\ 11\ 11\ 11)"
    )
    source = _detectors._NUMERIC_SKELETON.pattern
    factored = re.compile(source[: source.index(b")\n") + 1])  # " 1(?=...)" only
    assert factored.pattern.startswith(rb"\ 1(?=")
    assert factored.pattern != plain.pattern
    for alphabet, longest in ((b"1.-a /", 7), (b"1 .", 10)):
        for n in range(longest + 1):
            for tail in itertools.product(alphabet, repeat=n):
                probe = b" 1" + bytes(tail)
                assert bool(plain.match(probe)) == bool(factored.match(probe)), probe


def _numbers_always_matching_the_real_pattern(text: str) -> list[Finding]:
    """find_numbers as first written: the real pattern at every skeleton match."""
    d = _detectors
    ctx, resume, out = Context(text), 0, []
    for candidate in d._NUMERIC_SKELETON.finditer(ctx.skeleton):
        start = candidate.start()
        if start < resume:
            continue
        m = d._NUMERIC.match(text, start)
        if m is None:
            continue
        end = resume = m.end()
        value, kind = m.group(), m.lastgroup
        if kind == "card":
            found = d._card(ctx, start, end, value)
        elif kind == "ssn":
            found = d._ssn(ctx, start, end, value, dashed=True)
        elif kind == "nanp":
            found = d._nanp(ctx, start, end, value)
        elif kind == "ipv4":
            found = d._ipv4(ctx, start, end, value)
        elif kind == "ctx":
            found = d._needs_context(ctx, start, end, value)
        else:
            found = d._national_phone(ctx, start, end, value)
        if found is not None:
            out.append(found)
    return out


def test_numbers_shortcuts_agree_with_the_real_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    """find_numbers skips the real pattern where the skeleton match already decides
    it; on generated numbers it must hand the checks exactly the candidates (kind,
    span, value) that always running it does. The checks are replaced by recorders
    so that rejected candidates count too."""

    def recorder(kind: str) -> Any:
        def record(ctx: Context, start: int, end: int, value: str, **_: bool) -> Finding:
            assert ctx.text[start:end] == value
            return Finding(kind, start, end, 1.0, kind)

        return record

    for name in ("_card", "_ssn", "_nanp", "_ipv4", "_needs_context", "_national_phone"):
        monkeypatch.setattr(_detectors, name, recorder(name))
    rng = random.Random(9)
    found_any = 0
    for _ in range(4000):
        groups = [
            "".join(rng.choice("0123456789") for _ in range(rng.choice((1, 2, 3, 4, 9, 16))))
            for _ in range(rng.randrange(1, 6))
        ]
        text = rng.choice(("", "card ", "ssn ", "call ", "ip ", "x", "#")) + rng.choice(
            (" ", "-", ".", "/", "\t", "0")
        ).join(groups)
        text += rng.choice(("", ".", "a", " 1", "-7", " 25 4e"))
        expected = _numbers_always_matching_the_real_pattern(text)
        # the Python detector's shortcut (the native one is held to it by test_native)
        assert list(_detectors.find_numbers(Context(text, native=False))) == expected, text
        found_any += len(expected)
    assert found_any > 1500
