"""The guard's view of an FHE call: the action, the record's summary, and obligations."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from secure_ds.fhe import CONTENT_TYPE
from secure_ds.fhe._wire import KIND_REQUEST, encode
from secure_ds.guard import Decision, Enforcer
from secure_ds.guard._call import Call, action_for
from secure_ds.guard._stages import ObligationRefused
from secure_ds.sandbox import Sandbox

HEADER = {"context_id": "ctx-1", "parameter_set": "ckks-8192-d2/1", "model": "m-1", "batch": 2}


def _fhe_call(body: bytes | None = None) -> Call:
    content = body if body is not None else encode(KIND_REQUEST, HEADER, [b"c1", b"c2"])
    request = httpx2.Request(
        "POST",
        "https://api.example/fhe/infer",
        content=content,
        headers={"content-type": CONTENT_TYPE},
    )
    return Call.from_request(request)


def _permit(*obligations: str) -> Decision:
    return Decision(effect="permit", engine="test", policies=("p",), obligations=obligations)


@pytest.fixture
def enforcer(sb: Sandbox, tmp_path: Path) -> Enforcer:
    return Enforcer(sb.client_settings("alice", audit_path=tmp_path / "a.jsonl"))


def test_fhe_paths_are_the_fhe_infer_action() -> None:
    assert action_for("POST", "/fhe/infer", None) == "fhe_infer"
    assert action_for("POST", "/v1/fhe/contexts", None) == "fhe_infer"
    assert action_for("GET", "/fhe/infer", None) == "other"


def test_an_fhe_call_is_summarised_not_parsed() -> None:
    call = _fhe_call()
    assert call.action == "fhe_infer"
    assert call.body is None  # never parsed as JSON, never given to DLP as text
    assert call.model == "m-1"
    assert call.fhe is not None
    assert call.fhe["frame"] == "request"
    assert [c["bytes"] for c in call.fhe["ciphertexts"]] == [2, 2]
    broken = _fhe_call(b"not a frame")
    assert broken.fhe is not None
    assert broken.fhe["frame"] == "invalid"


def test_require_fhe_is_met_by_an_fhe_call(enforcer: Enforcer) -> None:
    call = _fhe_call()
    enforcer.enforce(call, _permit("require:fhe", "block:private_key", "cap_max_tokens:64"))
    assert call.enforcement[0].startswith("require:fhe")
    assert "block:private_key (not applicable: ciphertext only)" in call.enforcement
    assert "cap_max_tokens:64 (not applicable: ciphertext only)" in call.enforcement


def test_a_fixed_route_cannot_apply_to_an_fhe_call(enforcer: Enforcer) -> None:
    with pytest.raises(ObligationRefused, match="cannot be carried out on an encrypted"):
        enforcer.enforce(_fhe_call(), _permit("route:deepseek-flash"))


def test_require_fhe_refuses_any_other_call_naming_the_fix(enforcer: Enforcer) -> None:
    request = httpx2.Request(
        "POST",
        "https://api.example/chat/completions",
        json={"model": "deepseek-flash", "messages": []},
    )
    with pytest.raises(ObligationRefused) as info:
        enforcer.enforce(Call.from_request(request), _permit("require:fhe"))
    assert "must take the encrypted path" in str(info.value)
    assert "client.fhe.infer(model=..., inputs=...)" in str(info.value)
