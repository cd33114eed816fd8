"""A real `progressd serve` process for end-to-end tests, killable with SIGKILL and restartable."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """`progressd serve` in a subprocess with its own data dir (or database URL)."""

    def __init__(
        self,
        data_dir: Path,
        database_url: str | None = None,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.port = free_port()
        self.extra_args = extra_args
        self.extra_env = env or {}
        # /readyz and /metrics need it once tokens exist; start() waits for /readyz with it.
        self.metrics_token = self.extra_env.get("PROGRESSD_METRICS_TOKEN") or secrets.token_urlsafe(24)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        env = self.env()
        command = [sys.executable, "-m", "gateway", "serve", "--port", str(self.port), *self.extra_args]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                headers = {"Authorization": f"Bearer {self.metrics_token}"}
                if httpx.get(f"{self.url}/readyz", headers=headers, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become ready: {self.log.read_text()[-2000:]}")

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "PROGRESSD_DATA_DIR": str(self.data_dir),
            "PROGRESSD_LOG_LEVEL": "warning",
            "PROGRESSD_METRICS_TOKEN": self.metrics_token,
            **self.extra_env,
        }
        if self.database_url:
            env["PROGRESSD_DATABASE_URL"] = self.database_url
        return env

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flush, like a power cut of the process."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[type[ServerProcess]]:
    started: list[ServerProcess] = []

    class Tracked(ServerProcess):
        def start(self, timeout: float = 30.0) -> None:
            started.append(self)
            super().start(timeout)

    yield Tracked
    for server in started:
        server.stop()
