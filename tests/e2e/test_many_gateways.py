"""Two gateways on one PostgreSQL with NATS: a command accepted by A reaches a subscriber on B."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.e2e.conftest import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.nats]


def test_subscriber_on_b_sees_commands_sent_to_a(
    tmp_path: Path, server_factory: type[ServerProcess], pg_url: str, nats_url: str
) -> None:
    env = {"PROGRESSD_NATS_URL": nats_url}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = server_factory(tmp_path / "a", pg_url, env=env)
    a.start()
    b = server_factory(tmp_path / "b", pg_url, extra_args=("--no-projections", "--no-relay"), env=env)
    b.start()
    plan = {"title": "Cellphone Store CRM", "steps": [{"name": "Create database tables"}, {"name": "UI"}]}
    tid = httpx.post(f"{a.url}/api/tasks", json=plan).json()["task_id"]

    async def scenario() -> tuple[list[dict[str, Any]], list[float]]:
        got: list[dict[str, Any]] = []
        delays: list[float] = []
        url = b.url.replace("http://", "ws://") + f"/ws/tasks/{tid}"
        async with websockets.connect(url) as ws, httpx.AsyncClient(base_url=a.url) as client:
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert snapshot["type"] == "snapshot"
            for path, body in [
                ("steps/1/start", None),
                ("steps/1/progress", {"percent": 50}),
                ("steps/1/complete", None),
                ("pause", None),
            ]:
                sent = time.perf_counter()
                response = await client.post(f"/api/tasks/{tid}/{path}", json=body)
                assert response.status_code == 200
                seq = response.json()["version"]
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if message["type"] == "ping":
                        continue
                    got.append(message)
                    if message["seq"] == seq and message["part"] == message["parts"]:
                        break
                delays.append(time.perf_counter() - sent)
        return got, delays

    got, delays = asyncio.run(scenario())
    assert [m["type"] for m in got] == [
        "step_started",
        "progress",
        "progress",
        "step_complete",
        "progress",
        "paused",
    ]
    assert all(d < 5 for d in delays)
    # B also serves reads from the shared read models (projected by A)
    view = httpx.get(f"{b.url}/api/tasks/{tid}/progress").json()
    assert view["status"] == "paused" and view["steps"][0]["status"] == "completed"
