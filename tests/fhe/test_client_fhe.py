"""client.fhe over the real sandbox (mTLS + certificate-bound JWT): the round trip,
what the audit record holds, and the require:fhe obligation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from secure_ds import PolicyDenied, SecureDeepSeek
from secure_ds.errors import BadRequest, NotFound
from secure_ds.fhe import CONTENT_TYPE, heldout, shipped_model
from secure_ds.fhe._wire import KIND_CONTEXT, KIND_REQUEST, decode, encode
from secure_ds.sandbox import Sandbox
from tests.conftest import read_audit

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
AUDIT_SCHEMA = json.loads((ROOT / "audit" / "record.schema.json").read_text())
POLICIES = ROOT / "policies"


@pytest.fixture(scope="module")
def client(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureDeepSeek]:
    audit = tmp_path_factory.mktemp("fhe") / "audit.jsonl"
    with SecureDeepSeek(settings=sandbox.client_settings("alice", audit_path=audit)) as c:
        yield c


def test_encrypted_inference_round_trip_over_mtls(client: SecureDeepSeek, sandbox: Sandbox) -> None:
    x, _ = heldout("digits")
    model = shipped_model("digits-linear-v1")
    result = client.fhe.infer(model="digits-linear-v1", inputs=x[:40])
    assert result.scores.shape == (40, 10)
    assert np.abs(result.scores - model.plaintext_scores(x[:40])).max() <= 1e-3
    assert result.labels == [int(i) for i in model.plaintext_scores(x[:40]).argmax(1)]
    assert result.predictions[0] == str(result.labels[0])
    assert np.allclose(result.probabilities.sum(axis=1), 1.0)
    assert result.sizes["context_bytes"] > 10_000_000  # Galois keys, uploaded once
    assert sandbox.fhe_service.has_context(result.context_id)
    # a second call reuses the cached context: nothing but the ciphertexts goes up
    again = client.fhe.infer(model="digits-linear-v1", inputs=x[40])
    assert again.sizes["context_bytes"] == 0
    assert again.context_id == result.context_id
    assert sandbox.last_request is not None
    assert sandbox.last_request["path"] == "/fhe/infer"
    assert sandbox.last_request["headers"]["content-type"] == CONTENT_TYPE


def test_binary_model_gets_sigmoid_on_the_client(client: SecureDeepSeek) -> None:
    x, y = heldout("breast-cancer")
    result = client.fhe.infer(model="breast-cancer-logistic-v1", inputs=x)
    assert result.scores.shape == (len(x), 1)
    assert set(result.predictions) <= {"malignant", "benign"}
    probabilities = result.probabilities
    assert ((probabilities > 0.5).astype(int) == np.asarray(result.labels)).all()
    assert (np.asarray(result.labels) == y).mean() >= 0.95


def test_fhe_calls_are_audited_with_digests_never_plaintext(client: SecureDeepSeek) -> None:
    x, _ = heldout("digits")
    session = client.fhe.session("ckks-8192-d2/1")
    model = shipped_model("digits-linear-v1")
    client.fhe.infer(model=model, inputs=x[:3])
    record = read_audit(client.audit_path)[-1]
    assert record["action"] == "fhe_infer"
    assert record["outcome"] == "permit"
    assert record["request"]["path"] == "/fhe/infer"
    assert record["request"]["model"] == "digits-linear-v1"
    fhe = record["fhe"]
    assert fhe["frame"] == "request"
    assert fhe["parameter_set"] == "ckks-8192-d2/1"
    assert fhe["context_id"] == session.context_id
    assert fhe["batch"] == 3
    digests = [c["sha256"] for c in fhe["ciphertexts"]]
    assert len(digests) == len(set(digests)) >= 1
    assert all(len(d) == 64 for d in digests)
    assert record["response"]["status"] == 200
    # the context upload has its own record, with the content-addressed id
    records = read_audit(client.audit_path)
    uploads = [r for r in records if (r["fhe"] or {}).get("frame") == "context"]
    assert uploads[0]["fhe"]["context_id"] == session.context_id
    assert uploads[0]["fhe"]["context_bytes"] > 10_000_000
    for r in read_audit(client.audit_path):
        assert not list(jsonschema.Draft202012Validator(AUDIT_SCHEMA).iter_errors(r))
    # no input value reaches the record (the DLP stage has no text to scan either)
    text = client.audit_path.read_text()
    assert record["classify"]["findings"] == []
    assert json.dumps(x[:3].tolist())[1:40] not in text


def test_the_sandbox_refuses_a_private_context_and_names_the_fix(
    client: SecureDeepSeek,
) -> None:
    session = client.fhe.session("ckks-8192-d2/1")
    private = session._context.private_bytes_for_tests()
    frame = encode(KIND_CONTEXT, {"parameter_set": "ckks-8192-d2/1", "model": "m"}, [private])
    with pytest.raises(BadRequest) as info:
        client.fhe._post("/fhe/contexts", frame)
    assert "contains a secret key" in str(info.value)
    record = read_audit(client.audit_path)[-1]
    assert record["outcome"] == "failure"
    assert record["attempts"][-1]["status"] == 400
    assert record["error"]["type"] == "BadRequest"
    assert record["fhe"]["frame"] == "context"


def test_an_unknown_context_is_a_404_naming_the_upload(client: SecureDeepSeek) -> None:
    session = client.fhe.session("ckks-8192-d2/1")
    batch = session.encrypt_inputs(shipped_model("digits-linear-v1"), np.ones(64))
    frame = decode(batch.to_frame(), kind=KIND_REQUEST)
    unknown = encode(KIND_REQUEST, {**frame.header, "context_id": "ctx-" + "0" * 32}, frame.blobs)
    with pytest.raises(NotFound, match="unknown evaluation context"):
        client.fhe._post("/fhe/infer", unknown)


def _policy_folder(tmp_path: Path, policy: str) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "secure-ds.cedarschema").write_text((POLICIES / "secure-ds.cedarschema").read_text())
    catalogue: list[Any] = json.loads((POLICIES / "entities.json").read_text())
    for model_id in ("digits-linear-v1", "digits-mlp-v1", "breast-cancer-logistic-v1"):
        catalogue.append(
            {
                "uid": {"type": "SecureDS::Model", "id": model_id},
                "attrs": {
                    "family": "fhe-small",
                    "capabilities": ["fhe"],
                    "context_tokens": 0,
                    "region": "local",
                    "cost_tier": "standard",
                },
                "parents": [],
            }
        )
    (folder / "entities.json").write_text(json.dumps(catalogue))
    (folder / "main.cedar").write_text(policy)
    return folder


def test_require_fhe_is_met_by_fhe_calls_and_refuses_others(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    policy = (
        '@id("analysts-only-encrypted")\n@obligation("require:fhe")\n'
        'permit (principal in SecureDS::Role::"analyst", action, resource);\n'
    )
    settings = sandbox.client_settings(
        "bob",
        roles=["analyst"],
        policy_dir=_policy_folder(tmp_path, policy),
        policy_reload=0,
        audit_path=tmp_path / "audit.jsonl",
    )
    x, _ = heldout("breast-cancer")
    with SecureDeepSeek(settings=settings) as c:
        result = c.fhe.infer(model="breast-cancer-logistic-v1", inputs=x[:5])
        assert len(result.labels) == 5
        before = sandbox.stats.requests
        with pytest.raises(PolicyDenied) as info:
            c.chat.completions.create(
                model="deepseek-flash", messages=[{"role": "user", "content": "tumour 3"}]
            )
        assert sandbox.stats.requests == before  # the chat call was never sent
    assert info.value.policy == "analysts-only-encrypted"
    assert "require:fhe" in str(info.value)
    assert "client.fhe.infer(model=..., inputs=...)" in str(info.value)
    records = read_audit(tmp_path / "audit.jsonl")
    fhe_records = [r for r in records if r["action"] == "fhe_infer"]
    assert [r["outcome"] for r in fhe_records] == ["permit", "permit"]  # upload, infer
    for r in fhe_records:
        assert r["decide"]["obligations"] == ["require:fhe"]
        assert r["enforce"]["applied"][0].startswith("require:fhe")
    assert records[-1]["action"] == "chat"
    assert records[-1]["outcome"] == "deny"


def test_ciphertext_digests_in_the_record_match_what_was_sent(client: SecureDeepSeek) -> None:
    session = client.fhe.session("ckks-8192-d2/1")
    model = shipped_model("digits-linear-v1")
    batch = session.encrypt_inputs(model, np.arange(64.0))
    client.fhe.upload_context(session, model.id)
    client.fhe._post("/fhe/infer", batch.to_frame())
    record = read_audit(client.audit_path)[-1]
    assert [c["sha256"] for c in record["fhe"]["ciphertexts"]] == [
        hashlib.sha256(c).hexdigest() for c in batch.ciphertexts
    ]
    assert record["request"]["body_sha256"] == hashlib.sha256(batch.to_frame()).hexdigest()


async def test_the_async_client_does_the_same_round_trip(sandbox: Sandbox, tmp_path: Path) -> None:
    from secure_ds import AsyncSecureDeepSeek

    x, _ = heldout("breast-cancer")
    model = shipped_model("breast-cancer-logistic-v1")
    settings = sandbox.client_settings("alice", audit_path=tmp_path / "audit.jsonl")
    async with AsyncSecureDeepSeek(settings=settings) as c:
        result = await c.fhe.infer(model="breast-cancer-logistic-v1", inputs=x[:7])
        again = await c.fhe.infer(model=model, inputs=x[7])
    assert np.abs(result.scores - model.plaintext_scores(x[:7])).max() <= 1e-3
    assert again.sizes["context_bytes"] == 0
    records = read_audit(tmp_path / "audit.jsonl")
    assert [r["fhe"]["frame"] for r in records] == ["context", "request", "request"]
    assert {r["outcome"] for r in records} == {"permit"}
