# ruff: noqa: E501, S608, SIM905
"""Generate the labelled DLP evaluation corpus (deterministic: fixed seeds).

    .venv/bin/python tests/dlp/make_corpus.py        # rewrites tests/dlp/corpus/

Writes two files:

* ``corpus/labelled.jsonl``: one document per line, ``{"id", "text", "labels"}``, each
  label ``{"kind", "start", "end"}`` in character offsets. Documents are code and
  config snippets with credentials in them (.env, Python, JS, YAML, Terraform, curl),
  support tickets, e-mails and chat transcripts with customer data, server logs with
  client addresses, and clean technical documents with nothing to find.
* ``corpus/clean.txt``: about 250 KB of technical text that must produce (almost) no
  finding: logs, stack traces, git and docker output, lock files, hashes, UUIDs,
  base64 blobs, versions, timestamps, order numbers, hexdumps, code that *talks about*
  passwords and tokens. These are the hard negatives naive patterns flag.

Every value is synthetic and a test value: e-mail domains are example.com/.org/.net,
phone numbers come from ranges reserved for fiction (NANP 555-01xx, Ofcom drama
numbers, ...), card numbers start with the public test BINs and are made Luhn-valid,
AWS keys follow the documented example shape, other keys and passwords are random
strings from this generator's seeded PRNG. None of them is a real credential.

Labels are recorded while the text is assembled (a template's ``{{name}}`` slots are
filled one by one), so offsets are exact by construction.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

SEED = 20261128
OUT = Path(__file__).resolve().parent / "corpus"
SLOT = re.compile(r"\{\{([a-z0-9_]+)\}\}")

ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
B64 = string.ascii_letters + string.digits + "+/"
B64URL = string.ascii_letters + string.digits + "-_"
PW_CHARS = string.ascii_letters + string.digits + "!#$%&*+-=?@^_~"

FIRST = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William "
    "Barbara Richard Susan Joseph Jessica Thomas Sarah Charles Karen Christopher Lisa "
    "Daniel Nancy Matthew Betty Anthony Sandra Mark Ashley Priya Wei Mohammed Fatima "
    "Hiroshi Yuki Olga Dmitri Lucia Mateo Sofia Liam Chloe Noah Amara Kwame Ingrid Lars "
    "Anouk Pieter Siobhan Declan Aisha Omar Mei Jun Carlos Ana Giulia Marco Zoe Ethan"
).split()
LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
    "Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson "
    "White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright "
    "Scott Nguyen Hill Flores Green Patel Kim Chen Mueller Schmidt Rossi Dubois Jansen "
    "Okafor Mensah Kowalski Novak Silva Costa Tanaka Sato Ivanova OBrien Murphy Larsen"
).split()
COMPANIES = (
    "Acme Globex Initech Umbrella Hooli Vandelay Soylent Stark Wayne Wonka Cyberdyne "
    "Tyrell Aperture Massive Dynamic Gringotts Nakatomi Oceanic Pied Piper"
).split()
APPS = "billing orders inventory payments auth search notify ledger catalog gateway".split()
CITIES = "Springfield Riverton Lakeside Fairview Greenville Madison Georgetown Salem".split()
STREETS = "Maple Oak Pine Cedar Elm Main High Church Mill Park Station Bridge".split()
EMAIL_DOMAINS = (
    "example.com example.org example.net mail.example.com support.example.org "
    "eu.example.net corp.example.com customers.example.org"
).split()
WORDS = (
    "the request was retried after the upstream returned an error and the worker picked "
    "up the next batch from the queue while the scheduler rebalanced partitions across "
    "nodes cache entries expired config reloaded migration applied index rebuilt "
    "connection pool exhausted deadline exceeded checksum verified snapshot uploaded"
).split()


class Doc:
    """Text under construction, with the labels of the values put into it."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.labels: list[dict[str, object]] = []
        self.size = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    def put(self, kind: str, value: str) -> None:
        self.labels.append({"kind": kind, "start": self.size, "end": self.size + len(value)})
        self.add(value)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class Gen:
    """Value generators. Each slot returns ``(value, kind or None)``."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    # -- helpers -----------------------------------------------------------
    def rand(self, alphabet: str, n: int) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def pick(self, seq: list[str] | tuple[str, ...]) -> str:
        return self.r.choice(seq)

    def digits(self, n: int) -> str:
        return self.rand(string.digits, n)

    # -- positives -----------------------------------------------------------
    def email(self) -> str:
        f, la = self.pick(FIRST), self.pick(LAST)
        local = self.pick(
            [
                f"{f}.{la}",
                f"{f[0]}{la}",
                f"{f}_{la}",
                f"{f}{self.r.randint(1, 99)}",
                f"{f}.{la}+{self.pick(['billing', 'news', 'work', 'shop'])}",
                f"{la}.{f[0]}",
                f"{f}-{la}",
            ]
        )
        if self.r.random() < 0.85:
            local = local.lower()
        return f"{local}@{self.pick(EMAIL_DOMAINS)}"

    def phone(self) -> str:
        return self.pick([self.phone_us(), self.phone_us(), self.phone_intl(), self.phone_eu()])

    def phone_us(self) -> str:
        a = self.pick(["201", "202", "212", "213", "312", "415", "503", "617", "646", "702"])
        line = f"01{self.digits(2)}"
        return self.pick(
            [
                f"({a}) 555-{line}",
                f"{a}-555-{line}",
                f"{a}.555.{line}",
                f"+1 {a} 555 {line}",
                f"+1-{a}-555-{line}",
                f"+1{a}555{line}",
                f"1-{a}-555-{line}",
                f"+1 ({a}) 555-{line}",
                f"({a})555-{line}",
            ]
        )

    def phone_intl(self) -> str:
        d3, d4 = self.digits(3), self.digits(4)
        return self.pick(
            [
                f"+44 20 7946 0{d3}",
                f"+44 (0)20 7946 0{d3}",
                f"+44 7700 900{d3}",
                f"+44 161 496 0{d3}",
                f"+49 30 23125 {d3}",
                f"+49 89 99998{d3}",
                f"+33 1 99 00 {d3[:2]} {d4[:2]}",
                f"+61 491 570 {d3}",
                f"+61 2 5550 {d4}",
                f"+1 {self.pick(['415', '646', '312'])} 555 01{d4[:2]}",
            ]
        )

    def phone_eu(self) -> str:
        d3, d4 = self.digits(3), self.digits(4)
        return self.pick(
            [
                f"020 7946 0{d3}",
                f"07700 900{d3}",
                f"0161 496 0{d3}",
                f"01 99 00 {d4[:2]} {d4[2:]}",
                f"06 39 98 {d4[:2]} {d4[2:]}",
                f"030 23125{d3}",
                f"089 99998{d3}",
            ]
        )

    def card(self) -> str:
        brand = self.r.choice(
            [
                ("411111", 16), ("424242", 16), ("401288", 16), ("400005", 16),
                ("400000", 16), ("555555", 16), ("510510", 16), ("520082", 16),
                ("222300", 16), ("545454", 16), ("378282", 15), ("371449", 15),
                ("601111", 16), ("601100", 16), ("353011", 16), ("305693", 14),
            ]
        )  # fmt: skip
        prefix, n = brand
        body = prefix + self.digits(n - len(prefix) - 1)
        number = body + luhn_digit(body)
        style = self.r.random()
        if style < 0.3:
            return number
        sep = " " if style < 0.75 else "-"
        if n == 15:
            return sep.join([number[:4], number[4:10], number[10:]])
        if n == 14:
            return sep.join([number[:4], number[4:10], number[10:]])
        return sep.join(number[i : i + 4] for i in range(0, 16, 4))

    def iban(self) -> str:
        country, length, spec = self.r.choice(IBAN_SPECS)
        bban = "".join(
            self.rand(
                string.ascii_uppercase
                if c == "a"
                else ALNUM.upper()
                if c == "c"
                else string.digits,
                1,
            )
            for c in spec
        )
        assert len(bban) == length - 4
        numeric = (bban + country + "00").translate(LETTERS)
        check = 98 - int(numeric) % 97
        compact = f"{country}{check:02d}{bban}"
        if self.r.random() < 0.55:
            return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
        return compact

    def ssn_parts(self) -> tuple[str, str, str]:
        area = self.r.choice([a for a in range(1, 900) if a != 666])
        return f"{area:03d}", f"{self.r.randint(1, 99):02d}", f"{self.r.randint(1, 9999):04d}"

    def ssn(self) -> str:
        return "-".join(self.ssn_parts())

    def ssn_any(self) -> str:
        a, g, s = self.ssn_parts()
        return self.pick([f"{a}-{g}-{s}", f"{a}-{g}-{s}", f"{a} {g} {s}", f"{a}{g}{s}"])

    def ipv4(self) -> str:
        r = self.r
        return self.pick(
            [
                f"192.0.2.{r.randint(1, 254)}",
                f"198.51.100.{r.randint(1, 254)}",
                f"203.0.113.{r.randint(1, 254)}",
                f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
                f"172.{r.randint(16, 31)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
                f"192.168.{r.randint(0, 255)}.{r.randint(1, 254)}",
            ]
        )

    def ipv6(self) -> str:
        h = lambda: f"{self.r.randint(1, 0xFFFF):x}"  # noqa: E731
        return self.pick(
            [
                f"2001:db8::{h()}",
                f"2001:db8:{h()}:{h()}::{h()}",
                f"fe80::{h()}:{h()}:{h()}:{h()}",
                f"2001:0db8:{self.rand(HEX, 4)}:0000:0000:{self.rand(HEX, 4)}:0370:7334",
                f"2001:db8:{h()}:{h()}:{h()}:{h()}:{h()}:{h()}",
                f"::ffff:192.0.2.{self.r.randint(1, 254)}",
                f"fd00:{h()}:{h()}::{self.r.randint(1, 99)}",
            ]
        )

    def ip(self) -> str:
        return self.ipv4() if self.r.random() < 0.75 else self.ipv6()

    def jwt(self) -> str:
        alg = self.pick(["HS256", "RS256", "ES256", "HS512"])
        header: dict[str, object] = {"alg": alg, "typ": "JWT"}
        if self.r.random() < 0.4:
            header = {"typ": "JWT", "alg": alg, "kid": self.rand(HEX, 16)}
        payload = {
            "sub": str(self.r.randint(10000, 99999)),
            "name": f"{self.pick(FIRST)} {self.pick(LAST)}",
            "iat": 1700000000 + self.r.randint(0, 9999999),
            "exp": 1800000000 + self.r.randint(0, 9999999),
            "scope": self.pick(["read", "read write", "admin", "orders:read"]),
        }
        sig_len = {"HS256": 32, "HS512": 64, "RS256": 256, "ES256": 64}[alg]
        sig = bytes(self.r.getrandbits(8) for _ in range(sig_len))
        return ".".join([b64url_json(header), b64url_json(payload), b64url(sig)])

    def pem(self) -> str:
        label = self.pick(
            ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY",
             "ENCRYPTED PRIVATE KEY"]
        )  # fmt: skip
        raw = bytes(self.r.getrandbits(8) for _ in range(self.r.randint(120, 900)))
        body = base64.b64encode(raw).decode()
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"])

    def pem_escaped(self) -> str:
        return self.pem().replace("\n", "\\n")

    def aws_id(self) -> str:
        prefix = self.pick(["AKIA", "AKIA", "AKIA", "ASIA"])
        if self.r.random() < 0.3:
            return prefix + self.rand("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 9) + "EXAMPLE"
        return prefix + self.rand("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)

    def aws_secret(self) -> str:
        while True:
            if self.r.random() < 0.3:
                value = self.rand(B64, 30) + "EXAMPLEKEY"
            else:
                value = self.rand(B64, 40)
            if any(c.isdigit() or c in "/+" for c in value):
                return value

    def gh_token(self) -> str:
        if self.r.random() < 0.2:
            return "github_pat_" + self.rand(ALNUM, 22) + "_" + self.rand(ALNUM, 59)
        return self.pick(["ghp_", "ghp_", "gho_", "ghs_", "ghu_", "ghr_"]) + self.rand(ALNUM, 36)

    def slack_token(self) -> str:
        if self.r.random() < 0.5:
            return f"xoxb-{self.digits(11)}-{self.digits(13)}-{self.rand(ALNUM, 24)}"
        if self.r.random() < 0.6:
            return (
                f"xoxp-{self.digits(11)}-{self.digits(11)}-{self.digits(13)}-{self.rand(HEX, 32)}"
            )
        return f"xapp-1-A{self.rand(string.ascii_uppercase + string.digits, 10)}-{self.digits(13)}-{self.rand(HEX, 64)}"

    def slack_webhook(self) -> str:
        up = string.ascii_uppercase + string.digits
        return (
            f"https://hooks.slack.com/services/T{self.rand(up, 8)}/B{self.rand(up, 10)}/"
            f"{self.rand(ALNUM, 24)}"
        )

    def sk_key(self) -> str:
        return self.pick(
            [
                "sk-" + self.rand(ALNUM, 48),
                "sk-proj-" + self.rand(B64URL, self.r.randint(80, 130)),
                "sk-" + self.rand(HEX, 32),  # DeepSeek
                "sk-" + self.rand(HEX, 32),
                "sk-ant-api03-" + self.rand(B64URL, 93) + "AA",
            ]
        )

    def deepseek_key(self) -> str:
        return "sk-" + self.rand(HEX, 32)

    def vendor_key(self) -> str:
        return self.pick(
            [
                self.pick(["sk_test_", "rk_test_"]) + self.rand(ALNUM, self.r.randint(24, 60)),
                "AIza" + self.rand(B64URL, 35),
                "glpat-" + self.rand(B64URL, 20),
                "SG." + self.rand(B64URL, 22) + "." + self.rand(B64URL, 43),
                "npm_" + self.rand(ALNUM, 36),
                "hf_" + self.rand(string.ascii_letters, 34),
            ]
        )

    def api_key(self) -> str:
        return self.sk_key() if self.r.random() < 0.6 else self.vendor_key()

    def password(self) -> str:
        r = self.r
        style = r.random()
        if style < 0.35:
            word = self.pick(
                ["Summer", "Winter", "Dragon", "Monkey", "Falcon", "Tiger", "Orange", "Coffee"]
            )
            return word + str(r.randint(10, 2099)) + self.pick(["!", "#", "$", "?", "@", "*"])
        if style < 0.55:
            base = self.pick(["Tr0ub4dor", "C0rr3ct", "P4ssw0rd", "S3cur1ty", "Adm1nistr8"])
            return base + self.pick(["&3", "!!", "#9", "_x", "42"])
        while True:
            value = self.rand(PW_CHARS, r.randint(12, 24))
            if sum(c.isdigit() for c in value) >= 2 and any(c.isupper() for c in value):
                return value

    def url_password(self) -> str:
        while True:
            value = self.rand(ALNUM + "-_.~!*", self.r.randint(10, 20))
            if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
                return value

    def token_secret(self) -> str:
        while True:
            value = self.pick(
                [
                    self.rand(HEX, int(self.pick(["32", "40", "64"]))),
                    self.rand(ALNUM, self.r.randint(24, 48)),
                    base64.b64encode(bytes(self.r.getrandbits(8) for _ in range(32))).decode(),
                    self.rand(B64URL, 43),
                ]
            )
            if sum(c.isdigit() for c in value) >= 2:
                return value

    def django_secret(self) -> str:
        while True:
            value = self.rand(string.ascii_lowercase + string.digits + "!@#%^&*(-_=+)", 50)
            if sum(c.isdigit() for c in value) >= 2:
                return value

    # -- negatives / fillers ---------------------------------------------------
    def name(self) -> str:
        return f"{self.pick(FIRST)} {self.pick(LAST)}"

    def uuid(self) -> str:
        h = self.rand(HEX, 32)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{self.pick(['8', '9', 'a', 'b'])}{h[17:20]}-{h[20:]}"

    def date(self) -> str:
        y, m, d = self.r.randint(2019, 2026), self.r.randint(1, 12), self.r.randint(1, 28)
        return self.pick(
            [f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}", f"{m}/{d}/{y}", f"{d}.{m:02d}.{y}",
             f"{self.pick(['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun'])} {d}, {y}"]
        )  # fmt: skip

    def time(self) -> str:
        return (
            f"{self.r.randint(0, 23):02d}:{self.r.randint(0, 59):02d}:{self.r.randint(0, 59):02d}"
        )

    def ts(self) -> str:
        y, m, d = self.r.randint(2023, 2026), self.r.randint(1, 12), self.r.randint(1, 28)
        return f"{y}-{m:02d}-{d:02d}T{self.time()}.{self.r.randint(0, 999):03d}Z"

    def order_no(self) -> str:
        return self.pick(
            [f"ORD-{self.r.randint(2019, 2026)}-{self.digits(6)}", f"#{self.digits(7)}",
             f"{self.digits(3)}-{self.digits(7)}-{self.digits(7)}", f"SO{self.digits(8)}"]
        )  # fmt: skip

    def long_id(self) -> str:
        return self.rand("123456789", 1) + self.digits(self.r.randint(15, 18))

    def version(self) -> str:
        return f"{self.r.randint(0, 20)}.{self.r.randint(0, 40)}.{self.r.randint(0, 200)}"

    def version4(self) -> str:
        return f"{self.r.randint(1, 12)}.{self.r.randint(0, 9)}.{self.r.randint(0, 99)}.{self.r.randint(0, 250)}"

    def amount(self) -> str:
        return f"{self.r.randint(1, 4999)}.{self.r.randint(0, 99):02d}"

    def hostname(self) -> str:
        return f"{self.pick(['LT', 'WS', 'MBP'])}-{self.pick(LAST).upper()}-{self.digits(2)}"

    def domain_internal(self) -> str:
        return self.pick(["internal.example.com", "corp.example.net", "svc.example.org"])

    def slots(self) -> dict[str, Callable[[], tuple[str, str | None]]]:
        pos: dict[str, tuple[str, Callable[[], str]]] = {
            "email": ("email", self.email),
            "phone": ("phone", self.phone),
            "phone_us": ("phone", self.phone_us),
            "phone_intl": ("phone", self.phone_intl),
            "phone_eu": ("phone", self.phone_eu),
            "card": ("credit_card", self.card),
            "iban": ("iban", self.iban),
            "ssn": ("us_ssn", self.ssn),
            "ssn_any": ("us_ssn", self.ssn_any),
            "ipv4": ("ip_address", self.ipv4),
            "ipv6": ("ip_address", self.ipv6),
            "ip": ("ip_address", self.ip),
            "jwt": ("jwt", self.jwt),
            "pem": ("private_key", self.pem),
            "pem_escaped": ("private_key", self.pem_escaped),
            "aws_id": ("aws_access_key", self.aws_id),
            "aws_secret": ("aws_secret_key", self.aws_secret),
            "gh_token": ("github_token", self.gh_token),
            "slack_token": ("slack_token", self.slack_token),
            "slack_webhook": ("slack_token", self.slack_webhook),
            "sk_key": ("api_key", self.sk_key),
            "deepseek_key": ("api_key", self.deepseek_key),
            "vendor_key": ("api_key", self.vendor_key),
            "api_key": ("api_key", self.api_key),
            "password": ("secret", self.password),
            "url_password": ("secret", self.url_password),
            "token_secret": ("secret", self.token_secret),
            "django_secret": ("secret", self.django_secret),
        }
        r = self.r
        neg: dict[str, Callable[[], str]] = {
            "name": self.name,
            "first": lambda: self.pick(FIRST),
            "last": lambda: self.pick(LAST),
            "company": lambda: self.pick(COMPANIES),
            "app": lambda: self.pick(APPS),
            "city": lambda: self.pick(CITIES),
            "street": lambda: f"{r.randint(1, 999)} {self.pick(STREETS)} Street",
            "uuid": self.uuid,
            "sha1": lambda: self.rand(HEX, 40),
            "sha7": lambda: self.rand(HEX, 7),
            "sha256": lambda: self.rand(HEX, 64),
            "hex8": lambda: self.rand(HEX, 8),
            "hex16": lambda: self.rand(HEX, 16),
            "hex32": lambda: self.rand(HEX, 32),
            "b64blob": lambda: base64.b64encode(
                bytes(r.getrandbits(8) for _ in range(r.randint(48, 160)))
            ).decode(),
            "version": self.version,
            "version4": self.version4,
            "date": self.date,
            "time": self.time,
            "ts": self.ts,
            "epoch": lambda: str(r.randint(1600000000, 1800000000)),
            "epoch_ms": lambda: str(r.randint(1600000000000, 1800000000000)),
            "order_no": self.order_no,
            "long_id": self.long_id,
            "ticket_no": lambda: str(r.randint(10000, 999999)),
            "amount": self.amount,
            "int1": lambda: str(r.randint(1, 9)),
            "int2": lambda: str(r.randint(10, 99)),
            "int3": lambda: str(r.randint(100, 999)),
            "int4": lambda: str(r.randint(1000, 9999)),
            "int6": lambda: str(r.randint(100000, 999999)),
            "port": lambda: str(
                r.choice([80, 443, 5432, 6379, 8080, 8443, 9090, 3000, r.randint(1024, 65535)])
            ),
            "pid": lambda: str(r.randint(100, 99999)),
            "float": lambda: f"{r.random() * 10:.3f}",
            "hostname": self.hostname,
            "domain_internal": self.domain_internal,
            "dbuser": lambda: self.pick(["app", "svc_orders", "readonly", "etl", "api"]),
            "dbname": lambda: self.pick(["orders", "billing", "analytics", "app_prod"]),
            "ns": lambda: self.pick(["default", "prod", "staging", "payments"]),
            "bic": lambda: self.pick(
                ["COBADEFFXXX", "DEUTDEFF", "BNPAFRPP", "NWBKGB2L", "INGBNL2A"]
            ),
            "exp": lambda: f"{r.randint(1, 12):02d}/{r.randint(26, 31)}",
            "word": lambda: self.pick(WORDS),
            "claim_no": lambda: f"CLM-{self.digits(8)}",
            "dob": lambda: f"{r.randint(1950, 2004)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
            "mac": lambda: ":".join(self.rand(HEX, 2) for _ in range(6)),
            "org": lambda: self.pick(["acme", "globex", "initech", "hooli"]),
            "repo": lambda: self.pick(["api", "web", "infra", "data-pipeline"]),
        }
        table: dict[str, Callable[[], tuple[str, str | None]]] = {}
        for key, (kind, fn) in pos.items():
            table[key] = lambda kind=kind, fn=fn: (fn(), kind)  # type: ignore[misc]
        for key, fn2 in neg.items():
            table[key] = lambda fn2=fn2: (fn2(), None)  # type: ignore[misc]
        return table


IBAN_SPECS = [
    ("DE", 22, "n" * 18), ("GB", 22, "aaaa" + "n" * 14), ("FR", 27, "n" * 10 + "c" * 11 + "nn"),
    ("NL", 18, "aaaa" + "n" * 10), ("ES", 24, "n" * 20), ("IT", 27, "a" + "n" * 10 + "c" * 12),
    ("BE", 16, "n" * 12), ("CH", 21, "n" * 5 + "c" * 12), ("AT", 20, "n" * 16),
    ("PL", 28, "n" * 24), ("IE", 22, "aaaa" + "n" * 14), ("SE", 24, "n" * 20),
]  # fmt: skip
LETTERS = str.maketrans({chr(c): str(c - 55) for c in range(65, 91)})


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def b64url_json(obj: object) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


# ------------------------------------------------------------------ templates

CODE_TEMPLATES = [
    # .env
    """# {{company}} {{app}} service: local development settings
APP_ENV=development
APP_PORT={{port}}
DATABASE_URL=postgres://{{dbuser}}:{{url_password}}@db.{{domain_internal}}:5432/{{dbname}}
REDIS_URL=redis://cache.{{domain_internal}}:6379/0
AWS_ACCESS_KEY_ID={{aws_id}}
AWS_SECRET_ACCESS_KEY={{aws_secret}}
AWS_REGION=eu-west-1
OPENAI_API_KEY={{sk_key}}
SENTRY_DSN=https://{{hex32}}@o{{int6}}.ingest.sentry.io/{{int4}}
FEATURE_FLAGS=checkout_v2,new_search
""",
    # Django settings
    """import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEBUG = False
SECRET_KEY = "{{django_secret}}"
ALLOWED_HOSTS = ["{{app}}.{{domain_internal}}"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "{{dbname}}",
        "USER": "{{dbuser}}",
        "PASSWORD": "{{password}}",
        "HOST": "{{ipv4}}",
        "PORT": "5432",
    }
}
STRIPE_API_KEY = "{{vendor_key}}"
PASSWORD_MIN_LENGTH = 12
CACHE_TTL = {{int4}}
""",
    # JS config
    """// {{company}} integration config, generated {{date}}
export const config = {
  github: {
    token: process.env.GITHUB_TOKEN || "{{gh_token}}",
    org: "{{org}}",
  },
  slack: { webhookUrl: "{{slack_webhook}}", botToken: "{{slack_token}}" },
  retryCount: {{int1}},
  timeoutMs: {{int4}},
  buildId: "{{sha7}}",
};
""",
    # k8s secret
    """apiVersion: v1
kind: Secret
metadata:
  name: {{app}}-credentials
  namespace: {{ns}}
  annotations:
    checksum/config: {{sha256}}
type: Opaque
stringData:
  DB_PASSWORD: "{{password}}"
  JWT_SIGNING_KEY: {{token_secret}}
  GITHUB_TOKEN: {{gh_token}}
""",
    # docker compose
    """services:
  {{app}}:
    image: registry.{{domain_internal}}/{{app}}:{{version}}
    restart: unless-stopped
    environment:
      - POSTGRES_PASSWORD={{password}}
      - SLACK_BOT_TOKEN={{slack_token}}
      - LOG_LEVEL=info
      - WORKERS={{int1}}
    ports:
      - "{{port}}:8080"
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost:8080/healthz"]
""",
    # curl
    """# reproduce the failing charge ({{order_no}})
curl -sS https://api.payments.example.com/v1/charges \\
  -H "Authorization: Bearer {{token_secret}}" \\
  -H "Content-Type: application/json" \\
  -H "X-Request-Id: {{uuid}}" \\
  -d '{"amount": {{int4}}, "currency": "usd", "customer": "cus_{{hex16}}"}'
""",
    # DeepSeek curl
    """curl https://api.deepseek.com/chat/completions \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer {{deepseek_key}}" \\
  -d '{"model": "deepseek-chat", "messages": [{"role": "user", "content": "Hello"}], "stream": false}'
""",
    # python with JWT
    """import requests

# token captured from the staging login flow on {{date}}
token = "{{jwt}}"
headers = {"Authorization": f"Bearer {token}", "X-Trace": "{{hex16}}"}
resp = requests.get("https://staging.{{domain_internal}}/api/v2/orders/{{int6}}", headers=headers, timeout=10)
print(resp.status_code, resp.elapsed.total_seconds())
""",
    # terraform
    """provider "aws" {
  region     = "us-east-1"
  access_key = "{{aws_id}}"
  secret_key = "{{aws_secret}}"
}

resource "aws_s3_bucket" "{{app}}_artifacts" {
  bucket = "{{company}}-{{app}}-artifacts-{{int4}}"
  tags = { owner = "platform", cost_center = "{{int4}}" }
}
""",
    # aws credentials file
    """[default]
aws_access_key_id = {{aws_id}}
aws_secret_access_key = {{aws_secret}}
region = us-west-2

[profile readonly]
role_arn = arn:aws:iam::{{int6}}{{int6}}:role/ReadOnly
source_profile = default
""",
    # PEM in python
    '''"""Test fixture: signing key for the {{app}} webhook verifier."""

PRIVATE_KEY = """{{pem}}"""

KEY_ID = "{{hex16}}"
''',
    # service account JSON
    """{
  "type": "service_account",
  "project_id": "{{app}}-{{int6}}",
  "private_key_id": "{{sha1}}",
  "private_key": "{{pem_escaped}}",
  "client_email": "{{email}}",
  "client_id": "{{long_id}}",
  "token_uri": "https://oauth2.example.com/token"
}
""",
    # github actions
    """name: publish
on:
  push:
    tags: ["v*"]
jobs:
  release:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-node@v4
        with:
          node-version: 20
      - run: npm ci && npm publish
        env:
          NODE_AUTH_TOKEN: {{vendor_key}}
""",
    # openai client
    """from openai import OpenAI

client = OpenAI(api_key="{{sk_key}}", base_url="https://api.deepseek.com")
resp = client.chat.completions.create(
    model="deepseek-chat",
    messages=[{"role": "user", "content": "Summarise ticket {{ticket_no}}"}],
    max_tokens=1024,
    temperature=0.2,
)
""",
    # notebook
    """import os
os.environ["HF_TOKEN"] = "{{vendor_key}}"
os.environ["WANDB_PROJECT"] = "{{app}}-experiments"
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("bert-base-uncased")
print(tokenizer("hello world")["input_ids"][:{{int1}}])
""",
    # git remote with token
    """$ git remote -v
origin  https://x-access-token:{{gh_token}}@github.com/{{org}}/{{repo}}.git (fetch)
origin  https://x-access-token:{{gh_token}}@github.com/{{org}}/{{repo}}.git (push)
$ git log --oneline -3
{{sha7}} Fix retry budget for webhooks
{{sha7}} Bump urllib3 from {{version}} to {{version}}
{{sha7}} Merge pull request #{{int4}} from {{org}}/feature/search
""",
    # app log leaking a token
    """{{ts}} INFO  auth.session: login ok user_id={{int6}} request_id={{uuid}}
{{ts}} DEBUG auth.session: refreshed session, token={{token_secret}} expires_in=3600
{{ts}} INFO  http: GET /api/v1/profile 200 {{int2}}ms
""",
    # slack sdk
    """from slack_sdk import WebClient

client = WebClient(token="{{slack_token}}")
client.chat_postMessage(channel="#deploys", text="Deployed {{app}} {{version}} ({{sha7}})")
""",
    # gitlab ci
    """variables:
  GITLAB_TOKEN: {{vendor_key}}
  DOCKER_DRIVER: overlay2
deploy:
  stage: deploy
  script:
    - ./scripts/deploy.sh --env production --version {{version}}
""",
    # html google maps
    """<!-- store locator for {{city}} -->
<div id="map" data-lat="52.{{int4}}" data-lng="4.{{int4}}"></div>
<script src="https://maps.googleapis.com/maps/api/js?key={{vendor_key}}&callback=initMap" async></script>
""",
    # config ini with password
    """[database]
host = db01.{{domain_internal}}
port = 5432
user = {{dbuser}}
password = {{password}}
pool_size = {{int2}}

[smtp]
host = smtp.example.com
username = notifications
password = {{password}}
""",
    # redis url + mongo
    """CACHE_URL = "redis://:{{url_password}}@cache.{{domain_internal}}:6379/2"
MONGO_URI = "mongodb://{{dbuser}}:{{url_password}}@mongo-0.{{domain_internal}}:27017/{{dbname}}?authSource=admin"
QUEUE_URL = "amqp://guest:guest@localhost:5672/"
""",
    # JSON config with api keys
    """{
  "service": "{{app}}",
  "region": "eu-central-1",
  "providers": {
    "openai": { "apiKey": "{{sk_key}}", "model": "gpt-4o-mini" },
    "deepseek": { "apiKey": "{{deepseek_key}}", "model": "deepseek-chat" }
  },
  "clientSecret": "{{token_secret}}",
  "maxTokens": 2048,
  "requestId": "{{uuid}}"
}
""",
    # shell history
    """$ export GITHUB_TOKEN={{gh_token}}
$ gh api repos/{{org}}/{{repo}}/actions/runs --jq '.workflow_runs[0].id'
{{long_id}}
$ mysql -h {{ipv4}} -u {{dbuser}} --password={{password}} {{dbname}} < dump-{{date}}.sql
""",
    # mixed pem + aws in a chat prompt
    """Can you tell me why boto3 says the signature does not match? Here is my config:

aws_access_key_id={{aws_id}}
aws_secret_access_key={{aws_secret}}

and the key I use for the tunnel:
{{pem}}
""",
    # k8s configmap negatives + jwt in header
    """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{app}}-config
data:
  TOKEN_TTL_SECONDS: "3600"
  PASSWORD_MIN_LENGTH: "12"
  AUTH_HEADER: "Authorization"
  UPSTREAM_URL: "http://{{app}}.{{ns}}.svc.cluster.local:8080"
---
# debug: captured from ingress at {{ts}}
# Authorization: Bearer {{jwt}}
""",
]

PLACEHOLDER_TEMPLATES = [
    """# settings.py (safe: everything comes from the environment)
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DATABASE_PASSWORD = os.getenv("DATABASE_PASSWORD", "")
API_KEY = settings.API_KEY
token = get_token(scope="orders:read")
password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
max_tokens = 4096
""",
    """db:
  host: postgres
  password: ${DB_PASSWORD}
  password_file: /run/secrets/db_password
api:
  api_key: <your-api-key>
  token: "{{ secrets.GITHUB_TOKEN }}"
  secret_name: {{app}}-secrets
  token_type: bearer
  auth: true
""",
    """{
  "password": "********",
  "token": null,
  "apiKey": "YOUR_API_KEY",
  "client_secret": "REDACTED",
  "secretRef": {"name": "db-credentials", "key": "password"},
  "max_tokens": 1024
}
""",
    """Password policy: passwords must be at least 12 characters; a token expires after 3600 seconds.
Rotate API keys every 90 days and never paste a private key into a ticket.
Set the password via the DB_PASSWORD environment variable (see docs/ops.md, section 4.2).
The bearer token is sent in the Authorization header; the refresh token is stored server-side.
""",
]

TICKET_TEMPLATES = [
    """Subject: Refund request for order {{order_no}}

Hi {{first}},

My name is {{name}} and I was charged twice on {{date}}. The card I used is {{card}} (exp {{exp}}).
Please refund the duplicate charge of ${{amount}} to the same card or to my bank account {{iban}}.
You can reach me at {{phone}} or reply to {{email}}.

Thanks,
{{first}}
""",
    """Ticket #{{ticket_no}} - W-4 update
Employee: {{name}} (employee no. E{{int6}})
SSN: {{ssn_any}}
Home phone: {{phone_us}}
Personal email: {{email}}
Notes: employee called from {{phone_us}} on {{date}} at {{time}} to confirm the change.
""",
    """From: {{email}}
To: {{email}}
Subject: VPN keeps dropping

Hi team, since {{date}} my VPN drops every ~{{int2}} minutes. My laptop ({{hostname}}) gets {{ipv4}} from DHCP
and the gateway is {{ipv4}}. Error code 0x{{hex8}}, client build {{version4}}, ticket {{ticket_no}}.
""",
    """Dear {{name}},

we received your transfer of EUR {{amount}} from IBAN {{iban}} (BIC {{bic}}) on {{date}}.
Reference: {{order_no}}. For questions call us on {{phone_intl}} or write to {{email}}.

Kind regards, {{company}} Customer Care
""",
    """[{{time}}] customer: hi, I can't log in to my account {{email}}
[{{time}}] agent: Sorry to hear that! Can you confirm the last four digits of your card?
[{{time}}] customer: the full number is {{card}}
[{{time}}] agent: Please don't share full card numbers here. I've reset it; your temporary password is {{password}}
[{{time}}] customer: ok and my phone is {{phone}} if you need it
""",
    """Claim {{claim_no}}
Policy holder: {{name}}, DOB {{dob}}, SSN {{ssn}}
Address: {{street}}, {{city}}
Phone: {{phone_us}}   Email: {{email}}
Amount claimed: ${{amount}} (invoice {{order_no}})
""",
    """Hello support,

Order {{order_no}} was delivered to the wrong address. Please update my details:
  name:    {{name}}
  phone:   {{phone_eu}}
  mobile:  {{phone_intl}}
  email:   {{email}}
  IBAN for the refund: {{iban}}
Tracking number was 1Z{{hex8}}{{int6}}, shipped {{date}}.
""",
    """Payment failed for subscription {{uuid}}.
Card on file: {{card}} — customer {{name}} <{{email}}>.
Gateway response: do_not_honor (code {{int2}}), attempt {{int1}} of 3, next retry {{ts}}.
""",
    """Hi, I'm travelling and my card {{card}} was blocked. Please call me back on {{phone_intl}}.
My SSN is {{ssn}} if you need to verify. Thanks, {{name}}
""",
    """Hi, our integration gets 401 from your API since {{date}}. The request:

GET /v1/me HTTP/1.1
Host: api.example.com
Authorization: Bearer {{jwt}}

The token was issued at {{ts}}. Thanks, {{name}} ({{email}})
""",
    """Our webhook signature check fails (case {{ticket_no}}). This is the key we sign with:
{{pem}}
and the JWT from the X-Signature header: {{jwt}}
Can someone from {{company}} call me at {{phone}}?
""",
    """Customer record (export {{date}}):
name={{name}}; email={{email}}; phone={{phone}}; iban={{iban}}; last_login_ip={{ip}}; plan=pro; seats={{int2}}
""",
]

LOG_TEMPLATES = [
    """{{ipv4}} - - [15/Mar/2024:{{time}} +0000] "GET /api/v1/orders/{{int6}} HTTP/1.1" 200 {{int4}} "-" "Mozilla/5.0 (X11; Linux x86_64)" rt={{float}}
{{ipv4}} - - [15/Mar/2024:{{time}} +0000] "POST /api/v1/login HTTP/1.1" 401 {{int3}} "-" "curl/8.5.0" rt={{float}}
{{ip}} - - [15/Mar/2024:{{time}} +0000] "GET /static/app.{{hex8}}.js HTTP/2.0" 304 0 "-" "Mozilla/5.0" rt={{float}}
""",
    """Mar 15 {{time}} bastion sshd[{{pid}}]: Failed password for invalid user admin from {{ipv4}} port {{port}} ssh2
Mar 15 {{time}} bastion sshd[{{pid}}]: Accepted publickey for deploy from {{ipv6}} port {{port}} ssh2: ED25519 SHA256:{{b64blob}}
Mar 15 {{time}} bastion sshd[{{pid}}]: Disconnected from user deploy {{ipv4}} port {{port}}
""",
    """kernel: [UFW BLOCK] IN=eth0 OUT= MAC={{mac}}:{{mac}}:08:00 SRC={{ipv4}} DST={{ipv4}} LEN=60 TOS=0x00 TTL=64 ID={{int4}} DF PROTO=TCP SPT={{port}} DPT=443 WINDOW=64240
kernel: [UFW BLOCK] IN=eth0 OUT= SRC={{ipv6}} DST={{ipv6}} LEN=80 TC=0 HOPLIMIT=64 PROTO=TCP SPT={{port}} DPT=22
""",
    """{{ts}} WARN  ratelimit: client {{ip}} exceeded 100 req/min (burst={{int2}}) route=/api/v1/search
{{ts}} INFO  upstream: connected to {{ipv4}}:{{port}} in {{int2}}ms (pool=orders, size={{int1}})
{{ts}} INFO  listener: bound 0.0.0.0:{{port}} and [::]:{{port}}
{{ts}} DEBUG oauth: callback ok id_token={{jwt}} aud=web state={{hex16}}
""",
]


def fill(template: str, table: dict[str, Callable[[], tuple[str, str | None]]]) -> Doc:
    doc = Doc()
    pos = 0
    for m in SLOT.finditer(template):
        doc.add(template[pos : m.start()])
        value, kind = table[m.group(1)]()
        if kind is None:
            doc.add(value)
        else:
            doc.put(kind, value)
        pos = m.end()
    doc.add(template[pos:])
    return doc


# ------------------------------------------------------------- clean text


class Clean:
    """Technical text with nothing sensitive in it (hard negatives)."""

    def __init__(self, gen: Gen) -> None:
        self.g = gen
        self.r = gen.r

    def block(self) -> str:
        return self.r.choice(
            [self.app_log, self.traceback, self.java_trace, self.git_log, self.pip_freeze,
             self.npm_lock, self.docker, self.kubectl, self.csv, self.sql, self.prose,
             self.hexdump, self.code, self.changelog, self.orders, self.http, self.json_api,
             self.pytest, self.cert, self.safe_config, self.metrics]
        )()  # fmt: skip

    def app_log(self) -> str:
        g, r = self.g, self.r
        msgs = [
            lambda: (
                f"processed batch {r.randint(1, 9999)} items={r.randint(1, 999)} duration_ms={r.randint(1, 9999)}"
            ),
            lambda: f"cache miss key=user:{r.randint(100000, 999999)}:profile ttl=300",
            lambda: f"retrying in {r.randint(100, 900)}ms (attempt {r.randint(1, 4)}/5)",
            lambda: "token bucket refilled: 120/120",
            lambda: "password policy updated (min_length=12, require_symbols=true)",
            lambda: f"rotated signing key kid={g.rand(HEX, 16)}",
            lambda: f"listening on 0.0.0.0:{r.randint(1024, 65535)}",
            lambda: "connected to localhost:5432 (pool size 10)",
            lambda: (
                f"upstream 127.0.0.1:{r.randint(1024, 65535)} responded 200 in {r.randint(1, 99)}ms"
            ),
            lambda: f"GC pause {r.random() * 40:.1f}ms heap={r.randint(64, 4096)}MB",
            lambda: f"order {g.order_no()} state=paid amount={g.amount()} currency=EUR",
            lambda: f"job {g.uuid()} finished exit_code=0 elapsed={r.random() * 100:.2f}s",
            lambda: f"span_id={g.rand(HEX, 16)} parent={g.rand(HEX, 16)} sampled=1",
            lambda: f"fetched object sha256:{g.rand(HEX, 64)} size={r.randint(1, 10**7)}",
            lambda: f"session expired for user_id={r.randint(1, 10**6)}; token refresh scheduled",
            lambda: f"trace_id={g.rand(HEX, 32)} user_agent=Mozilla/5.0 build={g.version()}",
            lambda: f"txn {g.long_id()} committed in {r.randint(1, 999)}us",
            lambda: f"request id {g.long_id()} routed to shard {r.randint(0, 63)}",
            lambda: f"invoice no. {g.long_id()} exported to ledger",
        ]
        lines = []
        for _ in range(r.randint(8, 25)):
            level = r.choice(["INFO ", "DEBUG", "WARN ", "ERROR"])
            module = r.choice(
                ["orders.sync", "http.server", "db.pool", "auth.session", "scheduler"]
            )
            lines.append(
                f"{g.ts()} {level} [{r.choice(['worker', 'main', 'io'])}-{r.randint(0, 9)}] {module}: {r.choice(msgs)()}"
            )
        return "\n".join(lines)

    def traceback(self) -> str:
        r = self.r
        modules = ["views", "models", "tasks", "client"]
        functions = ["handle", "save", "run", "_send", "get_token", "check_password"]
        lines = [
            "return self._session.request(method, url, **kwargs)",
            'raise AuthError("missing token")',
            "obj.full_clean()",
            "result = fn(*args)",
        ]
        errors = [
            "requests.exceptions.ReadTimeout: HTTPSConnectionPool(host=localhost, port=8443): "
            "Read timed out. (read timeout=30)",
            "ValueError: invalid literal for int() with base 10: abc",
            "KeyError: token",
        ]
        frames = []
        for _ in range(r.randint(2, 6)):
            path = f"/srv/app/{r.choice(APPS)}/{r.choice(modules)}.py"
            frames.append(f'  File "{path}", line {r.randint(1, 900)}, in {r.choice(functions)}')
            frames.append("    " + r.choice(lines))
        return "Traceback (most recent call last):\n" + "\n".join(frames) + "\n" + r.choice(errors)

    def java_trace(self) -> str:
        r = self.r
        frames = "\n".join(
            f"\tat com.example.{r.choice(APPS)}.{r.choice(['Service', 'Repository', 'Controller'])}.{r.choice(['find', 'save', 'handle'])}({r.choice(['Service', 'Main'])}.java:{r.randint(10, 999)})"
            for _ in range(r.randint(3, 8))
        )
        return f"java.lang.IllegalStateException: Connection pool exhausted (max=50, waited=30000ms)\n{frames}\n\t... {r.randint(5, 60)} more"

    def git_log(self) -> str:
        g, r = self.g, self.r
        out = []
        for _ in range(r.randint(2, 5)):
            out.append(
                f"commit {g.rand(HEX, 40)}\nMerge: {g.rand(HEX, 7)} {g.rand(HEX, 7)}\nDate:   Fri Mar {r.randint(1, 28)} {g.time()} 2024 +0000\n\n"
                f"    {r.choice(['Fix flaky test in', 'Refactor', 'Bump dependencies for', 'Add retries to'])} {r.choice(APPS)} (#{r.randint(100, 9999)})\n"
            )
        return "\n".join(out)

    def pip_freeze(self) -> str:
        g = self.g
        pkgs = [
            "requests",
            "urllib3",
            "idna",
            "certifi",
            "pydantic",
            "fastapi",
            "sqlalchemy",
            "boto3",
            "numpy",
        ]
        return "\n".join(
            f"{p}=={g.version()} \\\n    --hash=sha256:{g.rand(HEX, 64)}"
            for p in self.r.sample(pkgs, 5)
        )

    def npm_lock(self) -> str:
        g = self.g
        out = []
        for p in self.r.sample(["lodash", "react", "express", "debug", "ms", "chalk", "semver"], 3):
            v = g.version()
            integrity = base64.b64encode(bytes(self.r.getrandbits(8) for _ in range(64))).decode()
            out.append(
                f'    "node_modules/{p}": {{\n      "version": "{v}",\n      "resolved": "https://registry.npmjs.org/{p}/-/{p}-{v}.tgz",\n      "integrity": "sha512-{integrity}"\n    }},'
            )
        return "\n".join(out)

    def docker(self) -> str:
        g, r = self.g, self.r
        rows = [
            f'{g.rand(HEX, 12)}   registry.example.com/{r.choice(APPS)}@sha256:{g.rand(HEX, 64)}   "/entrypoint.sh"   {r.randint(2, 59)} minutes ago   Up {r.randint(2, 59)} minutes   0.0.0.0:{r.randint(1024, 65000)}->8080/tcp'
            for _ in range(r.randint(2, 5))
        ]
        return "CONTAINER ID   IMAGE   COMMAND   CREATED   STATUS   PORTS\n" + "\n".join(rows)

    def kubectl(self) -> str:
        g, r = self.g, self.r
        rows = [
            f"{r.choice(APPS)}-{g.rand(HEX, 10)}-{g.rand('bcdfghjklmnpqrstvwxz2456789', 5)}   1/1   Running   {r.randint(0, 5)}   {r.randint(1, 30)}d"
            for _ in range(r.randint(3, 8))
        ]
        return "NAME   READY   STATUS   RESTARTS   AGE\n" + "\n".join(rows)

    def csv(self) -> str:
        g, r = self.g, self.r
        rows = [
            f"{g.ts()},{r.choice(APPS)},{r.random() * 100:.4f},{r.randint(0, 100000)},{r.randint(100, 599)},{g.uuid()}"
            for _ in range(r.randint(5, 15))
        ]
        return "timestamp,service,p99_ms,requests,status,request_id\n" + "\n".join(rows)

    def sql(self) -> str:
        g, r = self.g, self.r
        rows = "\n".join(
            f" {r.randint(1, 10**6):>7} | {g.order_no():<22} | {g.amount():>9} | {g.date()}"
            for _ in range(r.randint(3, 8))
        )
        return (
            "SELECT id, order_no, total, created_at FROM orders\n WHERE created_at > '2024-03-01' AND status = 'paid'\n ORDER BY id DESC LIMIT 100;\n"
            f"   id    | order_no               |   total   | created_at\n{rows}\n({r.randint(3, 8)} rows)"
        )

    def prose(self) -> str:
        r = self.r
        sentences = [
            "Rotate API keys every 90 days and store them in the secrets manager, never in the repository.",
            "The access token is short-lived; the refresh token is rotated on every use.",
            "Passwords are hashed with Argon2id (m=65536, t=3, p=4) before they are stored.",
            "Set the password through the DB_PASSWORD environment variable, not in config files.",
            f"In release {self.g.version()} we raised the default timeout to {r.randint(10, 90)} seconds.",
            "Use `secure-ds dlp scan FILE` to check a prompt before sending it.",
            "The service listens on port 8443 and exposes /healthz and /metrics.",
            "Version 2.4.1.0 of the agent fixed the memory leak reported in issue #4312.",
            "See RFC 7519 section 4.1 for the registered claim names.",
            "A private key must never leave the HSM; only the public key is exported.",
            f"Throughput improved by {r.randint(5, 60)}% after switching to HTTP/2 (p99 {r.randint(20, 200)} ms).",
            "Tokens are counted with the model's tokenizer; max_tokens caps the completion.",
            "Upgrade note: the key_id field replaces kid in the JWKS cache.",
        ]
        return " ".join(r.sample(sentences, r.randint(3, 7)))

    def hexdump(self) -> str:
        r = self.r
        lines = []
        for i in range(r.randint(4, 10)):
            data = bytes(r.getrandbits(8) for _ in range(16))
            hexes = " ".join(f"{b:02x}" for b in data)
            text = "".join(chr(b) if 32 <= b < 127 else "." for b in data)
            lines.append(f"{i * 16:08x}  {hexes}  |{text}|")
        return "\n".join(lines)

    def code(self) -> str:
        return self.r.choice(
            [
                "std::vector<int> v; auto it = std::find(v.begin(), v.end(), 42);\nstd::map<std::string, int> counts;",
                "impl Default for Config { fn default() -> Self { Self { buf: Vec::<u8>::with_capacity(1024) } } }",
                "evens = arr[::2]\nodds = arr[1::2]\nrev = s[::-1]",
                '@app.route("/api/v1/users/<int:user_id>", methods=["GET"])\n@login_required\ndef get_user(user_id): ...',
                "def check_password(self, raw_password: str) -> bool:\n    return hasher.verify(self.password, raw_password)",
                "if token is None:\n    raise AuthError('missing token')\nself.api_key = api_key\npassword = password_input\nsecret = os.environ.get('APP_SECRET')",
                "const key = `${prefix}:${id}`;\nmap.set(key, value);\nconst token = await getToken();",
                '.icon { background: url("icon@2x.png"); }\n@media (max-width: 600px) { .nav { display: none; } }',
                "npm install @types/node@20.11.5 lodash@4.17.21 --save-dev",
                "git clone git@github.com:acme/infra.git && cd infra && make plan",
                "tests/test_api.py::TestOrders::test_refund PASSED                      [ 42%]",
                "SELECT pg_size_pretty(pg_total_relation_size('orders')); -- 1,234,567 rows",
            ]
        )

    def changelog(self) -> str:
        g, r = self.g, self.r
        return (
            f"## v{g.version()} ({g.date()})\n\n- Bump lodash from {g.version()} to {g.version()}\n- Requires Python >=3.9,<3.13\n"
            f"- Chrome/{r.randint(100, 125)}.0.{r.randint(1000, 6999)}.{r.randint(10, 250)} is now the minimum browser\n"
            f"- Fixed CVE-2024-{r.randint(1000, 49999)} (ISBN 978-0-{r.randint(100, 999)}-{r.randint(10000, 99999)}-{r.randint(0, 9)} referenced in docs)\n"
            f"- agent version {g.version4()} ships with firmware {g.version4()}"
        )

    def orders(self) -> str:
        g, r = self.g, self.r
        return "\n".join(
            f"Order #{g.long_id()}  placed {g.date()}  total ${g.amount()}  tracking 1Z{g.rand('0123456789ABCDEF', 16)}  ref {g.long_id()}"
            for _ in range(r.randint(3, 8))
        )

    def http(self) -> str:
        g = self.g
        return (
            f"GET /api/v1/orders?page=2&per_page=50 HTTP/1.1\nHost: api.example.com\nUser-Agent: python-requests/{g.version()}\n"
            f'Accept: application/json\nX-Request-Id: {g.uuid()}\nIf-None-Match: "{g.rand(HEX, 32)}"\n\nHTTP/1.1 200 OK\n'
            f'Content-Length: {self.r.randint(100, 99999)}\nETag: "{g.rand(HEX, 32)}"\nDate: Fri, 15 Mar 2024 {g.time()} GMT'
        )

    def json_api(self) -> str:
        g, r = self.g, self.r
        return json.dumps(
            {
                "id": g.uuid(),
                "object": "charge",
                "created": r.randint(1600000000, 1800000000),
                "amount": r.randint(100, 99999),
                "currency": "eur",
                "status": "succeeded",
                "checksum": g.rand(HEX, 40),
                "blob": base64.b64encode(bytes(r.getrandbits(8) for _ in range(48))).decode(),
                "crc": zlib.crc32(g.rand(HEX, 8).encode()),
                "token_count": r.randint(1, 4096),
                "usage": {
                    "prompt_tokens": r.randint(1, 999),
                    "completion_tokens": r.randint(1, 999),
                },
            },
            indent=2,
        )

    def pytest(self) -> str:
        r = self.r
        return "\n".join(
            f"tests/{r.choice(APPS)}/test_{r.choice(['api', 'models', 'tasks'])}.py::test_{r.choice(['refund', 'login', 'token_refresh', 'password_reset'])} {r.choice(['PASSED', 'PASSED', 'SKIPPED'])} [{r.randint(1, 99):>3}%]"
            for _ in range(r.randint(4, 10))
        )

    def cert(self) -> str:
        raw = bytes(self.r.getrandbits(8) for _ in range(self.r.randint(200, 600)))
        body = base64.b64encode(raw).decode()
        lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        label = self.r.choice(["CERTIFICATE", "PUBLIC KEY"])
        return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----"

    def safe_config(self) -> str:
        return self.r.choice(PLACEHOLDER_TEMPLATES).replace("{{app}}", self.r.choice(APPS))

    def metrics(self) -> str:
        r = self.r
        return "\n".join(
            f'http_request_duration_seconds_bucket{{le="{r.choice(["0.1", "0.25", "0.5", "1"])}",route="/api/v1/{r.choice(APPS)}"}} {r.randint(0, 10**6)} {r.randint(1600000000000, 1800000000000)}'
            for _ in range(r.randint(4, 10))
        )


def labelled_docs(rng: random.Random) -> list[dict[str, object]]:
    gen = Gen(rng)
    table = gen.slots()
    clean = Clean(gen)
    docs: list[dict[str, object]] = []

    def emit(kind: str, doc: Doc) -> None:
        docs.append({"id": f"{kind}-{len(docs):04d}", "text": doc.text, "labels": doc.labels})

    for _ in range(16):
        for t in CODE_TEMPLATES:
            emit("code", fill(t, table))
    for _ in range(25):
        for t in TICKET_TEMPLATES:
            emit("ticket", fill(t, table))
    for _ in range(25):
        for t in LOG_TEMPLATES:
            emit("log", fill(t, table))
    for _ in range(20):
        for t in PLACEHOLDER_TEMPLATES:
            emit("placeholder", fill(t, table))
    for _ in range(150):
        doc = Doc()
        doc.add(clean.block())
        emit("clean", doc)
    rng.shuffle(docs)
    return docs


def clean_text(rng: random.Random, size: int = 250_000) -> str:
    clean = Clean(Gen(rng))
    blocks: list[str] = []
    total = 0
    while total < size:
        block = clean.block()
        blocks.append(block)
        total += len(block) + 2
    return "\n\n".join(blocks) + "\n"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    docs = labelled_docs(random.Random(SEED))
    with (OUT / "labelled.jsonl").open("w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")
    (OUT / "clean.txt").write_text(clean_text(random.Random(SEED + 1)), encoding="utf-8")
    counts: dict[str, int] = {}
    for d in docs:
        for label in d["labels"]:  # type: ignore[attr-defined]
            counts[label["kind"]] = counts.get(label["kind"], 0) + 1
    print(f"{len(docs)} documents; labels: {dict(sorted(counts.items()))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
