"""Concurrent commands, grouped into commits as they queue up, each get their own exact answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.integration.test_metrics import sample

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_concurrent_commands_are_answered_exactly(
    backend: str, tmp_path: Path, server_factory: type[ServerProcess], request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    server = server_factory(tmp_path, url)
    server.start()
    plan = {"title": "load", "steps": [{"name": "a"}]}

    async def scenario() -> tuple[list[str], list[dict[str, Any]]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            tasks = [(await client.post("/api/tasks", json=plan)).json()["task_id"] for _ in range(10)]
            for tid in tasks:
                await client.post(f"/api/tasks/{tid}/steps/1/start")

            async def worker(tid: str, i: int) -> dict[str, Any]:
                response = await client.post(f"/api/tasks/{tid}/logs", json={"message": f"{tid}:{i}"})
                assert response.status_code == 200, response.text
                body: dict[str, Any] = response.json()
                return body

            answers = await asyncio.gather(*(worker(tasks[i % 10], i) for i in range(300)))
            return tasks, list(answers)

    tasks, answers = asyncio.run(scenario())
    metrics = httpx.get(f"{server.url}/metrics").text
    commands = sample(metrics, "progressd_commands_total", command="log", outcome="ok")
    commits = sample(metrics, "progressd_store_commits_total")
    assert commands == 300
    # 20 for creates and starts, then at most one a command: how many share one depends on how fast the
    # writer is against the clients (tests/integration/test_write_contention.py pins the grouping itself).
    assert commits <= 20 + 300
    # every answer names the version and position of its own event
    positions = [a["position"] for a in answers]
    assert len(set(positions)) == 300
    logged: dict[str, int] = {}
    for tid in tasks:
        events = httpx.get(f"{server.url}/api/tasks/{tid}/events").json()["events"]
        logged.update({e["data"]["message"]: e["seq"] for e in events if e["type"] == "Logged"})
    assert len(logged) == 300
    for i, answer in enumerate(answers):
        assert answer["task_id"] == tasks[i % 10]
        assert answer["version"] == logged[f"{tasks[i % 10]}:{i}"]
