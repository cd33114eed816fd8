"""The OpenAPI document is real: responses convert into its types, and a fuzzer finds no 5xx."""

from __future__ import annotations

import base64
import copy
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.openapi import (
    ChatAnswer,
    Feed,
    History,
    Logs,
    Preferences,
    ProgressView,
    SubscriptionAdded,
    Subscriptions,
    TaskNotifications,
    TaskPage,
    WebhookAnswer,
    build,
)
from infra.settings import Settings
from tests.e2e.conftest import ServerProcess
from tests.integration.notify_kit import Browser

PLAN = {"title": "CRM", "complexity": 2, "steps": [{"name": "a", "substeps": ["x"]}, {"name": "b"}]}


def test_real_responses_match_the_documented_types(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost") as client:
        created = client.post("/api/tasks", json=PLAN).json()
        tid = created["task_id"]
        views = [created]
        for path, body in [
            ("steps/1/start", None),
            ("steps/1/approval", {"message": "ok?"}),
            ("steps/1/approve", None),
        ]:
            views.append(client.post(f"/api/tasks/{tid}/{path}", json=body).json())
        client.post(f"/api/tasks/{tid}/logs", json={"message": "hi", "step": 1})
        views.append(client.get(f"/api/tasks/{tid}/progress").json())
        for view in views:
            msgspec.convert(view, ProgressView)  # raises on a missing, extra or mistyped field
        msgspec.convert(client.get("/api/tasks").json(), TaskPage)
        msgspec.convert(client.get(f"/api/tasks/{tid}/history").json(), History)
        msgspec.convert(client.get(f"/api/tasks/{tid}/logs").json(), Logs)
        served = client.get("/openapi.json").json()
        assert served == msgspec.json.decode(msgspec.json.encode(build()))
        assert served["openapi"] == "3.1.0"
        assert "/api/tasks/{task_id}/steps/{order}/progress" in served["paths"]
        assert "progressd API" in client.get("/docs").text


def test_chat_and_notification_responses_match_the_documented_types(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path)), base_url="http://localhost") as client:
        tid = client.post("/api/tasks", json={**PLAN, "title": "Shop CRM"}).json()["task_id"]
        client.post("/api/tasks", json={**PLAN, "title": "Dentist CRM"})
        client.post(f"/api/tasks/{tid}/steps/1/start")
        for message in ("How's my shop CRM going?", "status of my crm", "pause task " + tid, "help"):
            answer = client.post("/api/chat", json={"message": message})
            assert answer.status_code == 200, answer.text
            msgspec.convert(answer.json(), ChatAnswer)
        asked = msgspec.convert(
            client.post("/api/chat", json={"message": "status of my crm"}).json(), ChatAnswer
        )
        assert len(asked.choices) == 2  # two CRM tasks: it asks which
        hook = client.post(
            "/api/chat/webhook", json={"text": "resume task " + tid, "user": "u1", "channel": "c"}
        )
        said = msgspec.convert(hook.json(), WebhookAnswer)
        assert said.text == said.reply and said.channel == "c" and said.actions

        prefs = msgspec.convert(client.get("/api/notification-preferences").json(), Preferences)
        changed = client.put("/api/notification-preferences", json={"email_min_minutes": 3})
        assert msgspec.convert(changed.json(), Preferences).email_min_minutes == 3 != prefs.email_min_minutes
        added = client.post("/api/push-subscriptions", json=Browser("https://push.example/x").subscription())
        assert added.status_code == 201, added.text
        sub = msgspec.convert(added.json(), SubscriptionAdded)
        listed = msgspec.convert(client.get("/api/push-subscriptions").json(), Subscriptions)
        assert [s.id for s in listed.subscriptions] == [sub.id]
        assert client.delete(f"/api/push-subscriptions/{sub.id}").status_code == 204

        deadline = time.monotonic() + 10
        while True:  # the notifier turns the outbox into deliveries in the background
            rows = msgspec.convert(client.get(f"/api/tasks/{tid}/notifications").json(), TaskNotifications)
            if any(d.channel == "browser" and d.state == "sent" for d in rows.notifications):
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.05)
        assert all(d.next_at.endswith("Z") for d in rows.notifications)  # times are ISO, like everywhere else
        feed = msgspec.convert(client.get("/api/notifications").json(), Feed)
        assert feed.notifications and feed.next == feed.notifications[-1].id
        served = client.get("/openapi.json").json()["paths"]
        for path in ("/api/chat", "/api/chat/webhook", "/api/notifications", "/api/notification-preferences"):
            assert path in served
        assert {"get", "post"} <= set(served["/api/push-subscriptions"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    server = ServerProcess(tmp_path_factory.mktemp("fuzz"))
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


HUGE = "9" * 4_301  # one digit past Python's int-length limit


def with_hostile_examples(document: dict[str, Any]) -> dict[str, Any]:
    """The document with explicit examples the fuzzer sends first: every integer path parameter as a
    4,301-digit number (typed as digits, since such a number cannot be a JSON integer here), every time
    parameter at the ends of the calendar, every cursor holding a NUL."""
    document = copy.deepcopy(document)  # build() shares parameter objects between operations
    for operations in document["paths"].values():
        for op in operations.values():
            for param in op.get("parameters", []):
                schema = param["schema"]
                if param["in"] == "path" and schema.get("type") == "integer":
                    param["schema"] = {"type": "string", "pattern": "^[0-9]+$"}
                    param["examples"] = {"huge": {"value": HUGE}}
                elif schema.get("format") == "date-time":
                    param["examples"] = {
                        "before year 1 in UTC": {"value": "0001-01-01T00:00:00+14:00"},
                        "after year 9999 in UTC": {"value": "9999-12-31T23:59:59-14:00"},
                    }
                elif param["name"] == "before":
                    nul = base64.urlsafe_b64encode(b"2026-01-01T00:00:00.000Z|\x00").decode()
                    param["examples"] = {"NUL": {"value": nul}}
    return document


schema = schemathesis.openapi.from_dict(with_hostile_examples(build()))
_tasks: dict[str, str] = {}


def live_task(server: ServerProcess) -> str:
    if server.url not in _tasks:
        import httpx

        _tasks[server.url] = httpx.post(f"{server.url}/api/tasks", json=PLAN).json()["task_id"]
    return _tasks[server.url]


def problem_json_on_errors(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> bool:
    if response.status_code >= 400:
        assert response.headers.get("content-type", [""])[0].startswith("application/problem+json"), (
            f"{response.status_code} without problem+json"
        )
    return True


@pytest.mark.slow
@pytest.mark.e2e
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzing_finds_no_server_error(case: schemathesis.Case, live: ServerProcess) -> None:
    if case.path_parameters and "task_id" in case.path_parameters:
        # Aim at a real task most of the time, so commands reach the domain rather than a 404.
        case.path_parameters["task_id"] = live_task(live)
    response = case.call(base_url=live.url, timeout=10)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    )
    problem_json_on_errors(None, response, case)
