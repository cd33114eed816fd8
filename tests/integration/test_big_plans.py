"""Command answers stay small for big plans: past COMPACT_SUBSTEPS substeps in all, an answer leaves out the
substep lists of steps that are not under way (other than the command's own), says so, and `?view=full`
gives everything; answers for ordinary plans are unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from infra.settings import Settings

COMPACT_SUBSTEPS = 500  # as documented in the README
DYNAMIC = ("eta_seconds", "eta_low_seconds", "eta_high_seconds", "eta_confidence", "stalled_step")


def plan(steps: int, substeps: int) -> dict[str, Any]:
    """`steps` steps of `substeps` one-letter substeps each (the biggest plan fits a 64 KiB body)."""
    return {
        "title": f"{steps} x {substeps}",
        "steps": [
            {"name": f"step {i}", "substeps": [chr(97 + k % 26) for k in range(substeps)]}
            for i in range(steps)
        ],
    }


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(
        create_app(Settings(data_dir=tmp_path)), base_url="http://localhost", raise_server_exceptions=False
    ) as c:
        yield c


def post(client: TestClient, path: str, body: Any = None, status: int = 200) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    data: dict[str, Any] = response.json()
    return data


def drive(client: TestClient, task_id: str, query: str = "") -> list[dict[str, Any]]:
    """Step 1 done, step 2 running with a substep done, a log line: every answer."""
    base = f"/api/tasks/{task_id}"
    return [
        post(client, f"{base}/steps/1/start{query}"),
        post(client, f"{base}/steps/1/complete{query}"),
        post(client, f"{base}/steps/2/start{query}"),
        post(client, f"{base}/steps/2/substeps/1/done{query}"),
        post(client, f"{base}/steps/3/skip{query}"),
        post(client, f"{base}/logs{query}", {"message": "half way"}),
    ]


def stable(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k not in DYNAMIC}


@pytest.mark.parametrize(("steps", "substeps"), [(4, 3), (10, COMPACT_SUBSTEPS // 10)])
def test_answers_for_ordinary_plans_carry_every_substep_list(
    client: TestClient, steps: int, substeps: int
) -> None:
    created = post(client, "/api/tasks", plan(steps, substeps), 201)
    answers = [created, *drive(client, created["task_id"])]
    for answer in answers:
        assert "compact" not in answer
        assert [len(s["substeps"]) for s in answer["steps"]] == [substeps] * steps
    got = client.get(f"/api/tasks/{created['task_id']}/progress").json()
    assert stable(answers[-1]) == stable(got)


@pytest.mark.parametrize(("steps", "substeps"), [(200, 55), (11, COMPACT_SUBSTEPS // 10)])
def test_answers_for_big_plans_leave_out_substeps_of_steps_not_under_way(
    client: TestClient, steps: int, substeps: int
) -> None:
    created = post(client, "/api/tasks", plan(steps, substeps), 201)
    tid = created["task_id"]
    answers = [created, *drive(client, tid)]
    for answer in answers:
        assert answer["compact"] is True
        assert [s["order"] for s in answer["steps"]] == list(range(1, steps + 1))  # every step, in order
    assert all(s["substeps"] is None for s in created["steps"])
    start1, complete1, start2, substep, skip3, logged = answers[1:]
    assert len(start1["steps"][0]["substeps"]) == substeps  # the command's own step
    assert len(complete1["steps"][0]["substeps"]) == substeps
    assert complete1["steps"][1]["substeps"] is None
    assert len(start2["steps"][1]["substeps"]) == substeps
    assert substep["steps"][1]["substeps"][0] == {"name": "a", "done": True}  # under way
    assert skip3["steps"][0]["substeps"] is None and len(skip3["steps"][2]["substeps"]) == substeps
    assert [i for i, s in enumerate(logged["steps"]) if s["substeps"] is not None] == [1]

    # Everything else is as the whole view has it.
    whole = client.get(f"/api/tasks/{tid}/progress").json()
    assert "compact" not in whole
    for key, value in stable(whole).items():
        if key != "steps":
            assert logged[key] == value, key
    for short, full in zip(logged["steps"], whole["steps"], strict=True):
        assert {k: v for k, v in short.items() if k != "substeps"} == {
            k: v for k, v in full.items() if k != "substeps"
        }
        assert short["substeps"] in (None, full["substeps"])
    if steps == 200:  # the biggest plan: 332 KB per answer before
        response = client.post(f"/api/tasks/{tid}/steps/2/progress", json={"percent": 50})
        assert len(response.content) < 64 * 1024, len(response.content)


def test_view_full_gives_a_big_plans_answer_whole(client: TestClient) -> None:
    created = post(client, "/api/tasks?view=full", plan(200, 55), 201)
    assert "compact" not in created and all(len(s["substeps"]) == 55 for s in created["steps"])
    answers = drive(client, created["task_id"], "?view=full")
    for answer in answers:
        assert "compact" not in answer
        assert all(len(s["substeps"]) == 55 for s in answer["steps"])
    whole = client.get(f"/api/tasks/{created['task_id']}/progress").json()
    assert stable(answers[-1]) == stable(whole)
    # `?view=compact` is the default.
    again = post(client, f"/api/tasks/{created['task_id']}/logs?view=compact", {"message": "x"})
    assert again["compact"] is True


def test_a_bad_view_is_refused_and_applies_nothing(client: TestClient) -> None:
    created = post(client, "/api/tasks", plan(2, 2), 201)
    tid = created["task_id"]
    for path, body in (
        (f"/api/tasks/{tid}/steps/1/start", None),
        (f"/api/tasks/{tid}/logs", {"message": "x"}),
    ):
        response = client.post(path + "?view=everything", json=body)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == "/problems/invalid-query" and problem["errors"] == [{"path": "view"}]
    assert client.post("/api/tasks?view=", json=plan(2, 2)).status_code == 422
    assert len(client.get("/api/tasks").json()["tasks"]) == 1  # no task made
    assert client.get(f"/api/tasks/{tid}/progress").json()["version"] == created["version"]
