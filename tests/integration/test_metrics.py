"""/metrics: each series moves when the thing it counts happens."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from infra.notifyconfig import NotifySettings
from infra.settings import Settings

PLAN = {"title": "CRM", "steps": [{"name": "a"}]}


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if series.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def test_command_event_and_stream_series_move(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost") as client:
        before = client.get("/metrics").text
        assert "progressd_projection_lag_events" in before
        tid = client.post("/api/tasks", json=PLAN).json()["task_id"]
        client.post(f"/api/tasks/{tid}/steps/1/start")
        client.post(f"/api/tasks/{tid}/steps/1/start")  # rejected: already running
        client.post(f"/api/tasks/{tid}/logs", json={"message": "x"}, headers={"Idempotency-Key": "k"})
        client.post(f"/api/tasks/{tid}/logs", json={"message": "x"}, headers={"Idempotency-Key": "k"})
        with client.websocket_connect(f"ws://localhost/ws/tasks/{tid}") as ws:  # local mode: a loopback Host
            ws.receive_json()
            during = client.get("/metrics").text
        after = client.get("/metrics").text
    assert sample(after, "progressd_commands_total", command="create", outcome="ok") == 1
    assert sample(after, "progressd_commands_total", command="start", outcome="ok") == 1
    assert sample(after, "progressd_commands_total", command="start", outcome="rejected") == 1
    assert sample(after, "progressd_commands_total", command="log", outcome="replayed") == 1
    assert sample(after, "progressd_events_appended_total") == 3
    assert sample(during, "progressd_websocket_connections") == 1
    assert sample(after, "progressd_websocket_connections") == 0
    assert sample(after, "progressd_projection_lag_events", projection="task_view") == 0


def test_projection_lag_grows_when_nothing_projects(tmp_path: Path) -> None:
    with TestClient(
        create_app(Settings(data_dir=tmp_path, read_timeout=0.01), project=False), base_url="http://localhost"
    ) as client:
        client.post("/api/tasks", json=PLAN)
        client.post("/api/tasks", json=PLAN)
        text = client.get("/metrics").text
    assert sample(text, "progressd_projection_lag_events", projection="task_view") == 2


@pytest.mark.nats
def test_relay_lag_is_exposed_and_drains(tmp_path: Path, nats_url: str) -> None:
    with TestClient(
        create_app(Settings(data_dir=tmp_path, nats_url=nats_url)), base_url="http://localhost"
    ) as client:
        client.post("/api/tasks", json=PLAN)
        deadline = time.monotonic() + 10
        while True:
            text = client.get("/metrics").text
            if (
                "progressd_nats_relay_lag_events" in text
                and sample(text, "progressd_nats_relay_lag_events") == 0
            ):
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.05)


def test_requests_carry_ids(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost") as client:
        assert len(client.get("/healthz").headers["x-request-id"]) == 32
        assert client.get("/healthz", headers={"X-Request-Id": "abc-1"}).headers["x-request-id"] == "abc-1"


def test_notification_outbox_depth_moves(tmp_path: Path) -> None:
    # A chat webhook nobody listens on: the "task started" chat notification waits in the outbox.
    notify = NotifySettings(chat_webhook_url="http://127.0.0.1:9/hook")
    with TestClient(
        create_app(Settings(data_dir=tmp_path), notify=notify), base_url="http://localhost"
    ) as client:
        assert sample(client.get("/metrics").text, "progressd_notification_outbox_depth") == 0
        tid = client.post("/api/tasks", json=PLAN).json()["task_id"]
        client.post(f"/api/tasks/{tid}/steps/1/start")
        deadline = time.monotonic() + 10
        while sample(client.get("/metrics").text, "progressd_notification_outbox_depth") < 1:
            assert time.monotonic() < deadline, "the outbox never held the undeliverable notification"
            time.sleep(0.05)
