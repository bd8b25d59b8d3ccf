"""The sandbox endpoint over the wire, driven with raw ``ssl`` and ``httpx2``.

These tests need no external service (the sandbox is in-process), so they always run.
Tokens are minted here with PyJWT, good and deliberately bad, to check the server's
side of the contract independently of secure-ds's own client.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from secure_ds.config import Settings
from secure_ds.identity import RequestSigner, SigningAuth
from secure_ds.sandbox import LocalCA, Sandbox
from secure_ds.sandbox.pki import x5t_s256
from tests._jwt import hmac_confused_token, token_claims

pytestmark = pytest.mark.integration

CHAT = "/chat/completions"
FLASH = "deepseek-flash"


# ---------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        yield sandbox


@pytest.fixture(autouse=True)
def _no_leftover_faults(sb: Sandbox) -> Iterator[None]:
    yield
    sb.clear_faults()


def _context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def _der(cert_path: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def _claims(sb: Sandbox, cert_path: Path | None, **changes: Any) -> dict[str, Any]:
    """The claims the secure client sends, bound to ``cert_path``; ``changes`` set (or,
    as None, drop) claims."""
    thumbprint = x5t_s256(_der(cert_path)) if cert_path is not None else None
    defaults: dict[str, Any] = {"client_id": "secure-ds", "attrs": {"team": "ml"}}
    return token_claims(sb, thumbprint, **{**defaults, **changes})


def _issuer_key(sb: Sandbox) -> Any:
    return serialization.load_pem_private_key(sb.issuer_key_path.read_bytes(), None)


def _mint(sb: Sandbox, cert_path: Path | None, key: Any = None, **changes: Any) -> str:
    """A token as the secure client would send it; ``changes`` set (or, as None, drop) claims."""
    key = key if key is not None else _issuer_key(sb)
    return jwt.encode(
        _claims(sb, cert_path, **changes),
        key,
        algorithm=sb.token_alg,
        headers={"typ": "at+jwt", "kid": "test"},
    )


class Caller:
    """One client identity: its settings (cert, key) and an httpx2 client for it."""

    def __init__(self, sb: Sandbox, subject: str) -> None:
        self.sb = sb
        self.settings: Settings = sb.client_settings(subject)
        assert self.settings.client_cert is not None
        assert self.settings.client_key is not None
        self.cert = self.settings.client_cert
        self.context = _context(sb.ca_path, self.cert, self.settings.client_key)

    def client(self, token: str | None = None, **kwargs: Any) -> httpx2.Client:
        """Requests carry the bearer token and an RFC 9421 signature (the sandbox's
        default demands one) made with this caller's certificate key."""
        token = token if token is not None else _mint(self.sb, self.cert)
        assert self.settings.client_key is not None
        signer = RequestSigner.from_files(self.cert, self.settings.client_key)
        return httpx2.Client(
            base_url=self.sb.base_url,
            verify=self.context,
            headers={"Authorization": f"Bearer {token}"},
            auth=SigningAuth(signer),
            **kwargs,
        )


@pytest.fixture(scope="module")
def alice(sb: Sandbox) -> Caller:
    return Caller(sb, "alice")


@pytest.fixture(scope="module")
def api(alice: Caller) -> Iterator[httpx2.Client]:
    with alice.client() as client:
        yield client


def _chat(content: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": FLASH, "messages": [{"role": "user", "content": content}], **extra}


def _events(response: httpx2.Response) -> tuple[list[str], list[Any]]:
    """SSE comment lines and decoded data events ("[DONE]" kept as a string)."""
    comments: list[str] = []
    events: list[Any] = []
    for line in response.iter_lines():
        if line.startswith(":"):
            comments.append(line)
        elif line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return comments, events


# ---------------------------------------------------------------------- happy paths


def test_chat_completion_is_deterministic_and_shaped_like_deepseek(
    sb: Sandbox, api: httpx2.Client
) -> None:
    prompt = "p" * 600  # 150 estimated tokens: one full 128-token block is half cached
    first = api.post(CHAT, json=_chat(prompt))
    second = api.post(f"/v1{CHAT}", json=_chat(prompt))
    assert first.status_code == 200, first.text
    body, again = first.json(), second.json()
    expected = f"[sandbox {FLASH}] alice said: {prompt[:60]}"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": expected}
    assert again["choices"] == body["choices"]
    assert body["id"].startswith("chatcmpl-sandbox-")
    assert body["id"] != again["id"]
    assert (body["object"], body["model"]) == ("chat.completion", FLASH)
    assert body["system_fingerprint"] == "fp_sandbox"
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == 150
    assert usage["completion_tokens"] == -(-len(expected) // 4)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert (usage["prompt_cache_hit_tokens"], usage["prompt_cache_miss_tokens"]) == (64, 86)
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 0}


def test_max_tokens_cuts_the_reply_with_finish_reason_length(api: httpx2.Client) -> None:
    body = api.post(CHAT, json=_chat("a long enough question", max_tokens=2)).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == "[sandbox"  # 2 tokens x 4 characters
    assert body["usage"]["completion_tokens"] == 2


def test_stream_sends_keepalive_deltas_finish_usage_and_done(api: httpx2.Client) -> None:
    plain = api.post(CHAT, json=_chat()).json()
    with api.stream("POST", CHAT, json=_chat(stream=True)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        comments, events = _events(response)
    assert comments == [": keep-alive"]
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert len([d for d in deltas if d]) >= 3
    assert "".join(deltas) == plain["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == plain["usage"]


def test_fim_plain_and_streamed_agree(api: httpx2.Client) -> None:
    request = {
        "model": FLASH,
        "prompt": "def add(a, b):",
        "suffix": "    return c",
        "max_tokens": 64,
    }
    plain = api.post("/beta/completions", json=request).json()
    text = plain["choices"][0]["text"]
    assert plain["object"] == "text_completion"
    assert text == f"[sandbox {FLASH}] after 'def add(a, b):' before '    return c'"
    assert plain["usage"]["prompt_tokens"] == 7
    with api.stream("POST", "/beta/completions", json={**request, "stream": True}) as response:
        comments, events = _events(response)
    assert comments == [": keep-alive"]
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"]) == text
    assert events[-2]["choices"] == []
    assert events[-2]["usage"] == plain["usage"]


def test_completions_without_beta_points_at_the_beta_base_url(
    sb: Sandbox, api: httpx2.Client
) -> None:
    response = api.post("/completions", json={"model": FLASH, "prompt": "x"})
    assert response.status_code == 404
    assert f"{sb.base_url}/beta" in response.json()["error"]["message"]


@pytest.mark.parametrize("prefix", ["", "/v1"])
def test_models_and_balance(api: httpx2.Client, prefix: str) -> None:
    models = api.get(f"{prefix}/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["deepseek-flash", "deepseek-v4-pro"]
    assert all(m["owned_by"] == "deepseek" for m in models["data"])
    balance = api.get(f"{prefix}/user/balance").json()
    assert balance["is_available"] is True
    assert balance["balance_infos"][0]["total_balance"] == "110.00"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "Invalid JSON body"),
        (b"[]", 400, "JSON object"),
        (json.dumps({"model": FLASH}).encode(), 422, "messages"),
        (json.dumps({"model": FLASH, "messages": []}).encode(), 422, "messages"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 422, "model"),
        (json.dumps(_chat(max_tokens=0)).encode(), 422, "max_tokens"),
        (json.dumps(_chat(max_tokens="9")).encode(), 422, "max_tokens"),
        (json.dumps(_chat(temperature=2.5)).encode(), 422, "temperature"),
        (json.dumps({**_chat(), "model": "deepseek-chat"}).encode(), 400, "Model Not Exist"),
    ],
)
def test_invalid_requests_get_deepseek_errors(
    api: httpx2.Client, body: bytes, status: int, message: str
) -> None:
    response = api.post(CHAT, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert message in error["message"]
    assert error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}


def test_stats_and_last_request_show_what_the_client_sent(sb: Sandbox, alice: Caller) -> None:
    token = _mint(sb, alice.cert, roles=["analyst"], attrs={"clearance": "low"})
    before = sb.stats.requests
    with alice.client(token) as client:
        client.post(CHAT, json=_chat("audit me"), headers={"X-Trace": "t-1"})
    assert sb.stats.requests == before + 1
    claims = sb.stats.last_claims
    assert claims is not None
    assert (claims["sub"], claims["roles"], claims["attrs"]) == (
        "alice",
        ["analyst"],
        {"clearance": "low"},
    )
    last = sb.last_request
    assert last is not None
    assert last["path"] == CHAT
    assert last["json"] == _chat("audit me")
    assert last["headers"]["x-trace"] == "t-1"
    assert last["headers"]["authorization"] == "<redacted>"
    assert token not in json.dumps(last)


# ---------------------------------------------------------------------- mutual TLS


def _tls_refusal(sb: Sandbox, context: ssl.SSLContext) -> ssl.SSLError:
    """Connect with raw ssl and send a request; return the TLS error the server caused."""
    port = urlsplit(sb.base_url).port
    with (  # noqa: PT012 (under TLS 1.3 the refusal arrives on the first read)
        pytest.raises(ssl.SSLError) as info,
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        tls.recv(1024)
    return info.value


def _write_pair(directory: Path, name: str, pair: tuple[bytes, bytes]) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert.write_bytes(pair[0])
    key.write_bytes(pair[1])
    return cert, key


def test_client_without_certificate_is_refused_in_the_handshake(sb: Sandbox) -> None:
    before = sb.stats
    error = _tls_refusal(sb, _context(sb.ca_path))
    assert "CERTIFICATE_REQUIRED" in str(error.reason)
    with pytest.raises(httpx2.TransportError):
        httpx2.get(f"{sb.base_url}/models", verify=_context(sb.ca_path))
    after = sb.stats
    assert after.handshake_failures == before.handshake_failures + 2
    assert (after.requests, after.auth_failures) == (before.requests, before.auth_failures)


def _minted_elsewhere(sb: Sandbox, tmp_path: Path) -> tuple[Path, Path]:
    return _write_pair(tmp_path, "other", LocalCA.create("impostor CA").issue_client_cert("alice"))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_minted_elsewhere, "UNKNOWN_CA"),
        (
            lambda sb, tmp: _write_pair(
                tmp,
                "expired",
                sb.ca.issue_client_cert(
                    "alice",
                    not_before=datetime.now(UTC) - timedelta(days=2),
                    not_after=datetime.now(UTC) - timedelta(days=1),
                ),
            ),
            "CERTIFICATE_EXPIRED",
        ),
        (
            lambda sb, tmp: _write_pair(
                tmp,
                "future",
                sb.ca.issue_client_cert(
                    "alice",
                    not_before=datetime.now(UTC) + timedelta(days=1),
                    not_after=datetime.now(UTC) + timedelta(days=2),
                ),
            ),
            "BAD_CERTIFICATE",
        ),
    ],
    ids=["other-ca", "expired", "not-yet-valid"],
)
def test_bad_client_certificates_are_refused_in_the_handshake(
    sb: Sandbox, tmp_path: Path, make: Any, reason: str
) -> None:
    cert, key = make(sb, tmp_path)
    before = sb.stats
    error = _tls_refusal(sb, _context(sb.ca_path, cert, key))
    assert reason in str(error.reason)
    # Even with a token correctly bound to that certificate, no HTTP is ever served.
    token = _mint(sb, cert)
    with pytest.raises(httpx2.TransportError):
        httpx2.get(
            f"{sb.base_url}/models",
            verify=_context(sb.ca_path, cert, key),
            headers={"Authorization": f"Bearer {token}"},
        )
    assert sb.stats.requests == before.requests
    assert sb.stats.handshake_failures == before.handshake_failures + 2


def test_tls_1_2_client_is_served(sb: Sandbox, alice: Caller) -> None:
    alice_12 = _context(sb.ca_path, alice.cert, alice.settings.client_key)
    alice_12.maximum_version = ssl.TLSVersion.TLSv1_2
    token = _mint(sb, alice.cert)
    assert alice.settings.client_key is not None
    response = httpx2.get(
        f"{sb.base_url}/models",
        verify=alice_12,
        headers={"Authorization": f"Bearer {token}"},
        auth=SigningAuth(RequestSigner.from_files(alice.cert, alice.settings.client_key)),
    )
    assert response.status_code == 200


# ---------------------------------------------------------------------- tokens


def _refusal(sb: Sandbox, alice: Caller, token: str | None) -> str:
    """Send ``token`` over alice's mTLS connection; assert a 401 and return its message."""
    before = sb.stats.auth_failures
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with httpx2.Client(base_url=sb.base_url, verify=alice.context) as client:
        response = client.post(CHAT, json=_chat(), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "authentication_error",
        "invalid_token",
        None,
    )
    assert sb.stats.auth_failures == before + 1
    return str(error["message"])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"exp": int(time.time()) - 120, "iat": int(time.time()) - 400}, "token expired"),
        ({"aud": "https://api.deepseek.com"}, "token audience mismatch"),
        ({"iss": "https://evil.example/issuer"}, "token issuer mismatch"),
        ({"nbf": int(time.time()) + 600}, "token not yet valid"),
        ({"jti": None}, "token missing required claim jti"),
        ({"sub": None}, "token missing required claim sub"),
        ({"exp": int(time.time()) + 7200}, "token lifetime exceeds 3600 s"),
    ],
    ids=["expired", "wrong-aud", "wrong-iss", "nbf-future", "no-jti", "no-sub", "too-long"],
)
def test_tokens_with_bad_claims_are_refused(
    sb: Sandbox, alice: Caller, changes: dict[str, Any], message: str
) -> None:
    assert _refusal(sb, alice, _mint(sb, alice.cert, **changes)) == message


def test_missing_bearer_token_is_refused(sb: Sandbox, alice: Caller) -> None:
    assert _refusal(sb, alice, None) == "missing bearer token"


def test_alg_none_is_refused(sb: Sandbox, alice: Caller) -> None:
    token = jwt.encode(_claims(sb, alice.cert), "", algorithm="none")
    assert _refusal(sb, alice, token) == "algorithm none not allowed"


def test_hs256_keyed_with_the_public_key_is_refused(sb: Sandbox, alice: Caller) -> None:
    token = hmac_confused_token(sb, _claims(sb, alice.cert))
    assert _refusal(sb, alice, token) == "algorithm HS256 not allowed"


def test_token_signed_by_another_key_is_refused(sb: Sandbox, alice: Caller) -> None:
    impostor = ec.generate_private_key(ec.SECP256R1())
    assert _refusal(sb, alice, _mint(sb, alice.cert, key=impostor)) == "token signature invalid"


def test_token_without_cnf_is_refused(sb: Sandbox, alice: Caller) -> None:
    message = _refusal(sb, alice, _mint(sb, None))
    assert message == "token not bound to a client certificate (cnf.x5t#S256 missing)"


def test_token_bound_to_another_certificate_is_refused(sb: Sandbox, alice: Caller) -> None:
    bob = Caller(sb, "bob")
    bobs_token = _mint(sb, bob.cert, sub="bob")
    with bob.client(bobs_token) as client:  # accepted (and cached) on bob's connection
        assert client.get("/models").status_code == 200
    message = _refusal(sb, alice, bobs_token)  # replayed over alice's connection
    assert message == "token not bound to the presented client certificate"


def test_eddsa_sandbox_accepts_only_eddsa(tmp_path: Path) -> None:
    with Sandbox(token_alg="EdDSA") as eddsa:
        assert eddsa.token_alg == "EdDSA"
        assert isinstance(eddsa.issuer_public_key, ed25519.Ed25519PublicKey)
        carol = Caller(eddsa, "carol")
        with carol.client(_mint(eddsa, carol.cert, sub="carol")) as client:
            assert client.get("/models").status_code == 200
        es256 = jwt.encode(
            _claims(eddsa, carol.cert), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"
        )
        assert _refusal(eddsa, carol, es256) == "algorithm ES256 not allowed"


# ---------------------------------------------------------------------- fault injection


def test_fail_next_429_sets_retry_after_then_recovers(sb: Sandbox, api: httpx2.Client) -> None:
    sb.fail_next(429, times=2, retry_after=1.5)
    for _ in range(2):
        response = api.post(CHAT, json=_chat())
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1.5"
        assert response.json()["error"]["type"] == "rate_limit_error"
    assert api.post(CHAT, json=_chat()).status_code == 200


@pytest.mark.parametrize(
    ("status", "kind", "message"),
    [
        (402, "unknown_error", "Insufficient Balance"),
        (500, "api_error", "Server Error"),
        (503, "api_error", "Server Overloaded"),
    ],
)
def test_fail_next_uses_deepseek_error_bodies(
    sb: Sandbox, api: httpx2.Client, status: int, kind: str, message: str
) -> None:
    sb.fail_next(status)
    response = api.get("/models")
    assert response.status_code == status
    assert "retry-after" not in response.headers
    assert response.json()["error"]["type"] == kind
    assert response.json()["error"]["message"] == message
    assert api.get("/models").status_code == 200


def test_faults_wait_for_an_authenticated_request(
    sb: Sandbox, alice: Caller, api: httpx2.Client
) -> None:
    sb.fail_next(503)
    _refusal(sb, alice, _mint(sb, alice.cert, aud="https://elsewhere"))  # 401, not 503
    assert api.get("/models").status_code == 503  # the fault is still queued


def test_drop_next_stream_cuts_the_connection_mid_stream(sb: Sandbox, api: httpx2.Client) -> None:
    sb.drop_next_stream(after_chunks=2)
    received: list[str] = []
    with (
        pytest.raises(httpx2.RemoteProtocolError),
        api.stream("POST", CHAT, json=_chat(stream=True)) as response,
    ):
        received.extend(line for line in response.iter_lines() if line.startswith("data: "))
    assert len(received) == 2
    assert "[DONE]" not in received
    assert api.post(CHAT, json=_chat()).status_code == 200  # a new connection works


def test_delay_next_holds_the_answer(sb: Sandbox, alice: Caller, api: httpx2.Client) -> None:
    sb.delay_next(0.5)
    with (
        alice.client(timeout=httpx2.Timeout(5.0, read=0.15)) as impatient,
        pytest.raises(httpx2.ReadTimeout),
    ):
        impatient.post(CHAT, json=_chat())
    sb.delay_next(0.2)
    started = time.perf_counter()
    assert api.get("/models").status_code == 200
    assert time.perf_counter() - started >= 0.2
    started = time.perf_counter()
    api.get("/models")
    assert time.perf_counter() - started < 0.2


def test_clear_faults_forgets_queued_faults(sb: Sandbox, api: httpx2.Client) -> None:
    sb.fail_next(500, times=3)
    sb.drop_next_stream()
    sb.clear_faults()
    assert api.get("/models").status_code == 200
    with api.stream("POST", CHAT, json=_chat(stream=True)) as response:
        assert _events(response)[1][-1] == "[DONE]"


# ---------------------------------------------------------------------- lifecycle and settings


def test_client_settings_point_at_the_sandbox(sb: Sandbox) -> None:
    settings = sb.client_settings("dave o'neil/ops", roles=["auditor"], attributes={"x": 1})
    assert settings.endpoint == sb.base_url
    assert settings.effective_audience == sb.audience == sb.base_url
    assert (settings.issuer, settings.subject) == (sb.issuer, "dave o'neil/ops")
    assert (settings.roles, dict(settings.attributes)) == (("auditor",), {"x": 1})
    assert settings.ca_bundle == sb.ca_path
    assert settings.issuer_key == sb.directory / "issuer-key.pem"
    assert settings.audit_path == sb.directory / "audit.jsonl"
    assert settings.client_cert is not None
    assert settings.client_cert.parent == sb.directory
    assert "/" not in settings.client_cert.name[len("client-") :]
    again = sb.client_settings("dave o'neil/ops", max_attempts=1)
    assert again.client_cert == settings.client_cert  # minted once per subject
    assert again.max_attempts == 1


def test_lifecycle_is_idempotent_and_cleans_up() -> None:
    sandbox = Sandbox()
    assert sandbox.start() is sandbox
    base_url, directory = sandbox.base_url, sandbox.directory
    sandbox.start()
    assert sandbox.base_url == base_url
    names = {p.name for p in directory.iterdir()}
    assert {"ca.pem", "server.pem", "server-key.pem", "issuer-key.pem"} <= names
    assert b"BEGIN PRIVATE KEY" in (directory / "issuer-key.pem").read_bytes()
    sandbox.stop()
    sandbox.stop()
    assert not directory.exists()
    with pytest.raises(RuntimeError, match="not running"):
        _ = sandbox.base_url
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{base_url}/models", verify=False)
