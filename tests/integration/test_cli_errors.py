"""The command line refuses bad settings and an open bind with one clear line and an exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.notify_kit import free_port


def progressd(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROGRESSD_")}
    environ.update({"PROGRESSD_DATA_DIR": str(tmp_path), "COLUMNS": "200", **env})
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], env=environ, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("setting", "value"), [("PROGRESSD_LOG_FORMAT", "xml"), ("PROGRESSD_READ_TIMEOUT", "soon")]
)
def test_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path, setting: str, value: str) -> None:
    done = progressd(tmp_path, "serve", "--port", str(free_port()), **{setting: value})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert setting in done.stderr and value in done.stderr
    assert done.stderr.strip().startswith("error:")


def test_serving_open_on_a_public_address_is_refused_before_starting(tmp_path: Path) -> None:
    done = progressd(tmp_path, "serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert done.returncode == 3
    assert "Traceback" not in done.stderr + done.stdout
    assert "refusing to serve on 0.0.0.0 without API tokens" in done.stderr
    assert "progressd token create" in done.stderr
