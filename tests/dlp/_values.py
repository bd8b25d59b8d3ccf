"""Test values built at run time.

Vendor tokens are assembled from pieces here instead of being written out, so the
test sources contain no string that secret scanners (ours or a code host's) would
take for a credential. Every value is synthetic.
"""

from __future__ import annotations

import base64
import json
import random

_R = random.Random(7)
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def rand(alphabet: str, n: int, seed: int = 0) -> str:
    r = random.Random(seed * 7919 + n)
    return "".join(r.choice(alphabet) for _ in range(n))


def luhn_complete(body: str) -> str:
    """``body`` plus the check digit that makes it pass Luhn."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


def iban(country: str, bban: str) -> str:
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def jwt(header: dict[str, object] | None = None, payload: dict[str, object] | None = None) -> str:
    header = {"alg": "HS256", "typ": "JWT"} if header is None else header
    payload = (
        {"sub": "1234567890", "name": "Test User", "iat": 1700000000}
        if payload is None
        else payload
    )
    parts = [
        b64url(json.dumps(header).encode()),
        b64url(json.dumps(payload).encode()),
        b64url(bytes(range(32))),
    ]
    return ".".join(parts)


def github_token(seed: int = 1) -> str:
    return "gh" + "p_" + rand(ALNUM, 36, seed)


def github_pat(seed: int = 1) -> str:
    return "github" + "_pat_" + rand(ALNUM, 22, seed) + "_" + rand(ALNUM, 59, seed + 1)


def slack_bot(seed: int = 1) -> str:
    return (
        "xo"
        + "xb-"
        + rand("0123456789", 11, seed)
        + "-"
        + rand("0123456789", 13, seed)
        + "-"
        + rand(ALNUM, 24, seed)
    )


def slack_webhook(seed: int = 1) -> str:
    up = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return (
        "https://hooks.slack.com/services/T"
        + rand(up, 8, seed)
        + "/B"
        + rand(up, 10, seed)
        + "/"
        + rand(ALNUM, 24, seed)
    )


def openai_key(seed: int = 1) -> str:
    return "s" + "k-" + rand(ALNUM, 48, seed)


def deepseek_key(seed: int = 1) -> str:
    return "s" + "k-" + rand("0123456789abcdef", 32, seed)


def stripe_test_key(seed: int = 1) -> str:
    return "s" + "k_test_" + rand(ALNUM, 32, seed)


def google_key(seed: int = 1) -> str:
    return "AI" + "za" + rand(ALNUM + "-_", 35, seed)


def aws_key_id(seed: int = 1) -> str:
    return "AK" + "IA" + rand("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16, seed)


def aws_secret(seed: int = 1) -> str:
    return rand(ALNUM + "/+", 36, seed) + "Ab1/"


def pem(label: str = "RSA PRIVATE KEY", lines: int = 6) -> str:
    body = base64.b64encode(bytes(_R.getrandbits(8) for _ in range(48 * lines))).decode()
    rows = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *rows, f"-----END {label}-----"])
