"""SIGKILL the server mid-task: after a restart every acknowledged command is there, views identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e

PLAN = {
    "title": "Cellphone Store CRM",
    "complexity": 4,
    "steps": [
        {"name": "Create database tables", "substeps": ["Customers", "Products"]},
        {"name": "Generate application UI"},
        {"name": "Add search and filters"},
    ],
}


def drive(client: httpx.Client, tid: str) -> list[dict[str, Any]]:
    """Send a run of commands; return every acknowledged response."""
    acked = []
    base = f"/api/tasks/{tid}/steps"
    commands: list[tuple[str, Any]] = [
        (f"{base}/1/start", None),
        (f"{base}/1/progress", {"percent": 25}),
        (f"{base}/1/substeps/1/done", None),
        (f"/api/tasks/{tid}/logs", {"message": "created customers", "step": 1}),
        (f"{base}/1/substeps/2/done", None),
        (f"{base}/1/complete", None),
        (f"{base}/2/start", None),
        (f"{base}/2/progress", {"percent": 40}),
        (f"/api/tasks/{tid}/pause", None),
    ]
    for i, (path, body) in enumerate(commands):
        response = client.post(path, json=body, headers={"Idempotency-Key": f"cmd-{i}"})
        assert response.status_code == 200, response.text
        acked.append(response.json())
    return acked


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sigkill_then_restart_restores_every_acknowledged_command(
    backend: str, tmp_path: Path, server_factory: type[ServerProcess], request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    server = server_factory(tmp_path, url)
    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        created = client.post("/api/tasks", json=PLAN)
        assert created.status_code == 201
        tid = created.json()["task_id"]
        acked = drive(client, tid)
        before = client.get(f"/api/tasks/{tid}/progress").json()
        events_before = client.get(f"/api/tasks/{tid}/events").json()["events"]
        history_before = client.get(f"/api/tasks/{tid}/history").json()
    assert before == acked[-1]
    assert before["status"] == "paused"

    server.kill()
    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        after = client.get(f"/api/tasks/{tid}/progress").json()
        assert after == before
        assert client.get(f"/api/tasks/{tid}/events").json()["events"] == events_before
        assert client.get(f"/api/tasks/{tid}/history").json() == history_before
        # the paused task resumes from exactly where it was
        resumed = client.post(f"/api/tasks/{tid}/resume")
        assert resumed.status_code == 200
        assert resumed.json()["steps"][1]["progress"] == 40
        # a retried command from before the crash is recognised and not applied twice
        replay = client.post(
            f"/api/tasks/{tid}/steps/2/progress", json={"percent": 40}, headers={"Idempotency-Key": "cmd-7"}
        )
        assert replay.headers.get("idempotent-replayed") == "true"
        assert len(client.get(f"/api/tasks/{tid}/events").json()["events"]) == len(events_before) + 1
