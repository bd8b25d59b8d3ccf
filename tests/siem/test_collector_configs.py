"""The example collector configs in audit/collector/, checked by the built collector."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests._services import OTELCOL_SCRIPT, require_otelcol

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[2] / "audit" / "collector"


def _validate(config: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own script, fixed arguments
        ["bash", str(OTELCOL_SCRIPT), "validate", str(config)],  # noqa: S607
        env={**os.environ, "SECURE_DS_EXPORT_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_the_file_export_config_is_valid(tmp_path: Path) -> None:
    require_otelcol()
    done = _validate(CONFIGS / "file.yaml", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "is valid" in done.stdout


def test_validate_rejects_a_broken_config(tmp_path: Path) -> None:
    require_otelcol()
    broken = tmp_path / "broken.yaml"
    text = (CONFIGS / "file.yaml").read_text()
    # the mistake validate caught in this very file: append cannot go with rotation
    broken.write_text(text.replace("    rotation:\n", "    append: true\n    rotation:\n", 1))
    done = _validate(broken, tmp_path)
    assert done.returncode != 0
    assert "append and rotation" in done.stderr


@pytest.mark.parametrize("name", ["syslog-cef.yaml", "splunk-hec.yaml"])
def test_configs_needing_contrib_components_say_so(name: str) -> None:
    text = (CONFIGS / name).read_text()
    assert "NOT validated in this repository" in text
    assert "otlp:" in text


def test_the_start_script_is_idempotent_and_stoppable(tmp_path: Path) -> None:
    from .conftest import Collector

    require_otelcol()
    col = Collector(tmp_path / "otelcol")

    def script(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own script, fixed arguments
            ["bash", str(OTELCOL_SCRIPT), command],  # noqa: S607
            env={
                **os.environ,
                "SECURE_DS_OTELCOL_DIR": str(col.directory),
                "SECURE_DS_OTELCOL_HTTP_PORT": str(col.http_port),
                "SECURE_DS_OTELCOL_GRPC_PORT": str(col.grpc_port),
            },
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    assert script("status").returncode == 1
    try:
        started = script("start")
        assert started.returncode == 0, started.stderr
        assert started.stdout.splitlines()[-1] == col.endpoint
        again = script("start")
        assert "already running" in again.stdout
        assert script("status").returncode == 0
    finally:
        assert script("stop").returncode == 0
    assert script("status").returncode == 1
    assert script("stop").returncode == 0  # stopping a stopped one is fine
