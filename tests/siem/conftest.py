"""A real OpenTelemetry Collector per test (its own ports and output), and log makers.

Each :class:`Collector` is an instance of the binary built by ``scripts/otelcol.sh``,
started, stopped and restarted through that script, so the tests exercise it too.
What the collector received is read back from its file exporters' OTLP JSON.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from secure_ds import PolicyDenied, SecureDeepSeek
from secure_ds.sandbox import Sandbox
from tests._services import OTELCOL_SCRIPT, require_otelcol


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Collector:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.http_port = _free_port()
        self.grpc_port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.http_port}"
        self.out = directory / "out"

    def _script(self, command: str) -> None:
        env = {
            **os.environ,
            "SECURE_DS_OTELCOL_DIR": str(self.directory),
            "SECURE_DS_OTELCOL_HTTP_PORT": str(self.http_port),
            "SECURE_DS_OTELCOL_GRPC_PORT": str(self.grpc_port),
        }
        done = subprocess.run(  # noqa: S603 - our own script, fixed arguments
            ["bash", str(OTELCOL_SCRIPT), command],  # noqa: S607 - bash from PATH, as make does
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"otelcol.sh {command}: {done.stderr}{done.stdout}"

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop")

    # ------------------------------------------------------------------ what arrived

    def _requests(self, name: str) -> list[dict[str, Any]]:
        path = self.out / f"{name}.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_bytes().split(b"\n"):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a line the exporter is still writing
        return out

    def log_records(self) -> list[dict[str, Any]]:
        return [
            {
                **rec,
                "attrs": _attrs(rec.get("attributes", [])),
                "resource": _attrs(rl.get("resource", {}).get("attributes", [])),
            }
            for req in self._requests("logs")
            for rl in req.get("resourceLogs", [])
            for sl in rl.get("scopeLogs", [])
            for rec in sl.get("logRecords", [])
        ]

    def spans(self) -> list[dict[str, Any]]:
        return [
            {**span, "attrs": _attrs(span.get("attributes", []))}
            for req in self._requests("traces")
            for rs in req.get("resourceSpans", [])
            for ss in rs.get("scopeSpans", [])
            for span in ss.get("spans", [])
        ]

    def metrics(self) -> list[dict[str, Any]]:
        return [
            metric
            for req in self._requests("metrics")
            for rm in req.get("resourceMetrics", [])
            for sm in rm.get("scopeMetrics", [])
            for metric in sm.get("metrics", [])
        ]

    def event_ids(self) -> list[str]:
        return [str(r["attrs"]["log.record.uid"]) for r in self.log_records()]

    def wait_for(self, event_ids: set[str], timeout: float = 20.0) -> list[str]:
        """Every event id that arrived (with repeats), once all of ``event_ids`` did."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.event_ids()
            # spans are read only once the logs are complete: each look parses the whole
            # output again, and it grows with every batch
            if (
                event_ids <= set(seen)
                and {s["attrs"].get("secure_ds.event_id") for s in self.spans()} >= event_ids
            ):
                return seen
            if time.monotonic() > deadline:
                missing = event_ids - set(seen)
                raise AssertionError(f"{len(missing)} record(s) never reached the collector")
            time.sleep(0.2)


def _value(value: dict[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def _attrs(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value", {})) for item in items}


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    """A collector of this test's own, stopped afterwards."""
    require_otelcol()  # the shared one answers: the binary is built and runs here
    col = Collector(tmp_path / "otelcol")
    col.start()
    try:
        yield col
    finally:
        col.stop()


@pytest.fixture
def make_calls(sb: Sandbox) -> Callable[..., list[bytes]]:
    """Make real calls (through the sandbox) into an audit log; return its record lines."""

    def make(audit: Path, n: int, *, denied: int = 0, **overrides: Any) -> list[bytes]:
        settings = sb.client_settings(
            "alice",
            roles=["engineer"],
            audit_path=audit,
            dlp_block=("private_key",),
            **overrides,
        )
        with SecureDeepSeek(settings=settings, max_retries=0) as client:
            for i in range(n):
                client.chat.completions.create(
                    model="deepseek-flash",
                    messages=[{"role": "user", "content": f"hello {i}"}],
                )
            for _ in range(denied):
                with pytest.raises(PolicyDenied):
                    client.chat.completions.create(
                        model="deepseek-flash",
                        messages=[{"role": "user", "content": PRIVATE_KEY}],
                    )
        # the call records (the log also holds checkpoint lines, without an event_id)
        return [line for line in audit.read_bytes().split(b"\n") if b'"event_id"' in line]

    return make


PRIVATE_KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIBvjmd8T8pC+J6Z+2a8KzJBfPKZz3mZ9Z7V0r5d3O0Hm\n"
    "-----END PRIVATE KEY-----"
)
