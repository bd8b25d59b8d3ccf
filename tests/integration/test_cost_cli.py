"""``secure-ds cost report`` over an audit log written by real calls to the sandbox."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from secure_ds import PolicyDenied, SecureDeepSeek
from secure_ds.cli import main
from secure_ds.guard import Call, Decision
from secure_ds.sandbox import Sandbox
from tests.conftest import read_audit

pytestmark = pytest.mark.integration

MESSAGES: list[Any] = [{"role": "user", "content": "what does this cost?"}]


class DenyAll:
    def decide(self, call: Call) -> Decision:
        return Decision(effect="deny", engine="test", policies=("no",), reason="not today")


def test_report_total_is_the_sum_of_the_recorded_costs(
    sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audit = tmp_path / "audit.jsonl"
    alice = sb.client_settings(
        "alice", roles=("engineer",), attributes={"team": "platform"}, audit_path=audit
    )
    bob = sb.client_settings(
        "bob", roles=("engineer",), attributes={"team": "data"}, audit_path=audit
    )
    with SecureDeepSeek(settings=alice) as client:
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES * 3)
        for _ in client.chat.completions.create(
            model="deepseek-flash", messages=MESSAGES, stream=True
        ):
            pass
    with SecureDeepSeek(settings=bob) as client:
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)
    with SecureDeepSeek(settings=bob, decider=DenyAll()) as client, pytest.raises(PolicyDenied):
        client.chat.completions.create(model="deepseek-flash", messages=MESSAGES)

    records = read_audit(audit)
    assert len(records) == 5
    recorded = [Decimal(repr(r["cost"]["usd"])) for r in records if r["cost"] is not None]
    assert len(recorded) == 4  # every permitted call was priced; the deny was not

    assert main(["cost", "report", str(audit), "--by", "team", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "secure-ds.cost-report/1"
    assert report["total"]["usd"] > 0
    assert report["total"]["usd"] == float(sum(recorded))
    assert (report["total"]["calls"], report["total"]["denied"]) == (5, 1)
    teams = {g["key"]: g for g in report["groups"]}
    assert set(teams) == {"platform", "data"}
    assert teams["platform"]["usd"] == float(sum(recorded[:3]))
    assert teams["data"]["usd"] == float(recorded[3])
    assert teams["data"]["denied"] == 1
    # the tokens the report sums are the ones the endpoint reported
    usage = [r["response"]["usage"] for r in records if r["response"]]
    assert report["total"]["tokens"]["output"] == sum(u["completion_tokens"] for u in usage)
    assert report["skipped"] == {"malformed": 0, "other_schema": 0, "examples": []}
