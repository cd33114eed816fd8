"""SIGKILL a separate projection process at random points while commands flow: views still equal a rebuild."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from projections.registry import MODELS
from tests.e2e.conftest import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def writer(url: str, stop: threading.Event, acked: list[str], seed: int) -> None:
    """Create tasks and drive them while the projector is being killed; record acknowledged tasks."""
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            body = {"title": "load", "steps": [{"name": "a", "substeps": ["x", "y"]}, {"name": "b"}]}
            tid = client.post("/api/tasks", json=body).json()["task_id"]
            acked.append(tid)
            for path, payload in [
                ("steps/1/start", None),
                ("steps/1/progress", {"percent": rng.randint(1, 99)}),
                ("steps/1/substeps/1/done", None),
                ("logs", {"message": "hello", "level": "info", "step": 1}),
                ("steps/1/complete", None),
                ("steps/2/start", None),
                ("steps/2/complete", None),
            ]:
                response = client.post(f"/api/tasks/{tid}/{path}", json=payload)
                assert response.status_code == 200, response.text


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_killed_projector_resumes_exactly_once(
    backend: str, tmp_path: Path, server_factory: type[ServerProcess], request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    # The gateway appends but does not project; command responses wait only briefly for the views.
    server = server_factory(
        tmp_path, url, extra_args=("--no-projections",), env={"PROGRESSD_READ_TIMEOUT": "0.05"}
    )
    server.start()
    env = server.env()
    command = [sys.executable, "-m", "gateway", "project", "--poll", "0.05"]

    def start_projector() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    rng = random.Random(42)
    stop = threading.Event()
    acked: list[str] = []
    thread = threading.Thread(target=writer, args=(server.url, stop, acked, 1))
    thread.start()
    projector = start_projector()
    try:
        for _ in range(4):
            time.sleep(rng.uniform(0.5, 1.5))
            projector.send_signal(signal.SIGKILL)
            projector.wait(timeout=10)
            projector = start_projector()
        stop.set()
        thread.join(timeout=60)
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while time.monotonic() < deadline:
                ready = client.get("/readyz").json()
                if all(v == 0 for v in ready["lag"].values()):
                    break
                time.sleep(0.2)
            assert all(v == 0 for v in ready["lag"].values()), ready
            listed = client.get("/api/tasks", params={"limit": 500}).json()["tasks"]
    finally:
        projector.terminate()
        projector.wait(timeout=10)
    assert len(acked) >= 3
    assert {t["task_id"] for t in listed} >= set(acked[:-1])
    verified = subprocess.run(
        [sys.executable, "-m", "gateway", "verify"], env=env, capture_output=True, text=True, timeout=120
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.count("equals a replay of the log") == len(MODELS)
