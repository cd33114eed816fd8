"""The OpenAPI document is real: responses convert into its types, and a fuzzer finds no 5xx."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.openapi import History, Logs, ProgressView, TaskPage, build
from infra.settings import Settings
from tests.e2e.conftest import ServerProcess

PLAN = {"title": "CRM", "complexity": 2, "steps": [{"name": "a", "substeps": ["x"]}, {"name": "b"}]}


def test_real_responses_match_the_documented_types(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path))) as client:
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


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    server = ServerProcess(tmp_path_factory.mktemp("fuzz"))
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


schema = schemathesis.openapi.from_dict(build())
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
