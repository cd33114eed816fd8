"""The HTTP API on a real event store: the spec's CRM example, commands, queries and every error shape.

Each test runs twice: on the SQLite file store and on a real PostgreSQL.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from infra.settings import Settings

CRM = {
    "title": "Cellphone Store CRM",
    "complexity": 4,
    "steps": [
        {"name": "Create database tables"},
        {
            "name": "Generate application UI",
            "substeps": ["Customer list", "Product list", "Sales form", "Repair board"],
        },
        {"name": "Add search and filters"},
        {"name": "Configure workflows"},
    ],
}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False, base_url="http://localhost") as c:
        yield c


def create(client: TestClient, body: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    response = client.post("/api/tasks", json=body or CRM, headers=headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def post(
    client: TestClient, path: str, body: Any = None, status: int = 200, **headers: str
) -> dict[str, Any]:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == status, response.text
    data: dict[str, Any] = response.json()
    return data


def event_count(client: TestClient, task_id: str) -> int:
    return len(client.get(f"/api/tasks/{task_id}/events").json()["events"])


ETA_KEYS = ("eta_seconds", "eta_low_seconds", "eta_high_seconds", "eta_confidence", "stalled_step")


def without_eta(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k not in ETA_KEYS}


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"] == f"/problems/{slug}"
    assert body["title"] and body["detail"]
    return body


def test_spec_crm_example_has_the_spec_shape(client: TestClient) -> None:
    created = client.post("/api/tasks", json=CRM)
    assert created.status_code == 201
    task = created.json()
    tid = task["task_id"]
    assert created.headers["location"] == f"/api/tasks/{tid}/progress"
    assert task["status"] == "pending" and task["progress"] == 0 and task["version"] == 1

    base = f"/api/tasks/{tid}/steps"
    post(client, f"{base}/1/start")
    post(client, f"{base}/1/complete")
    post(client, f"{base}/2/start")
    post(client, f"{base}/2/substeps/1/done")
    post(client, f"{base}/2/substeps/2/done")
    after = post(client, f"{base}/2/progress", {"percent": 65})

    view = client.get(f"/api/tasks/{tid}/progress").json()
    assert without_eta(view) == without_eta(after)
    assert view["eta_seconds"] is not None and view["eta_low_seconds"] <= view["eta_high_seconds"]
    spec_keys = {"task_id", "title", "status", "progress", "current_step", "total_steps", "started_at"}
    assert spec_keys | {"eta_seconds", "steps"} <= view.keys()
    assert view["title"] == "Cellphone Store CRM"
    assert view["status"] == "running"
    assert view["current_step"] == 2
    assert view["total_steps"] == 4
    # weighted mean of 100, 65, 0, 0 with equal weights
    assert view["progress"] == 41
    assert view["started_at"].endswith("Z")
    steps = view["steps"]
    assert [s["order"] for s in steps] == [1, 2, 3, 4]
    assert [s["status"] for s in steps] == ["completed", "running", "pending", "pending"]
    assert [s["progress"] for s in steps] == [100, 65, 0, 0]
    assert isinstance(steps[0]["duration_ms"], int) and steps[0]["duration_ms"] >= 0
    assert steps[1]["substeps"] == [
        {"name": "Customer list", "done": True},
        {"name": "Product list", "done": True},
        {"name": "Sales form", "done": False},
        {"name": "Repair board", "done": False},
    ]
    assert view["complexity"] == "medium"


def test_task_completes_when_every_step_is_done_or_skipped(client: TestClient) -> None:
    tid = create(client)["task_id"]
    base = f"/api/tasks/{tid}/steps"
    for order in (1, 2, 3):
        post(client, f"{base}/{order}/start")
        post(client, f"{base}/{order}/complete", {"result": f"result {order}"} if order != 2 else None)
    done = post(client, f"{base}/4/skip", {"reason": "not needed"})
    assert done["status"] == "completed"
    assert done["progress"] == 100
    assert done["finished_at"] is not None
    assert [s["result"] for s in done["steps"]] == ["result 1", None, "result 3", None]
    assert done["result"] is None  # the skip completed the task, and a skip carries no result


def test_fail_retry_and_skip_on_a_failed_step(client: TestClient) -> None:
    tid = create(client)["task_id"]
    base = f"/api/tasks/{tid}/steps"
    post(client, f"{base}/1/start")
    failed = post(client, f"{base}/1/fail", {"error": "disk full"})
    assert failed["status"] == "failed"
    assert failed["steps"][0]["status"] == "failed"
    assert failed["steps"][0]["error"] == "disk full"
    assert failed["needs_attention"] is True
    retried = post(client, f"{base}/1/retry")
    assert retried["status"] == "running" and retried["steps"][0]["attempts"] == 2
    post(client, f"{base}/1/fail", {"error": "again"})
    skipped = post(client, f"{base}/1/skip")
    assert skipped["status"] == "running"
    assert skipped["steps"][0]["status"] == "skipped"


def test_approval_flow(client: TestClient) -> None:
    body = {"title": "Deploy", "steps": [{"name": "Build"}, {"name": "Ship", "requires_approval": True}]}
    tid = create(client, body)["task_id"]
    base = f"/api/tasks/{tid}/steps"
    post(client, f"{base}/1/start")
    post(client, f"{base}/1/complete")
    waiting = post(client, f"{base}/2/start")
    assert waiting["steps"][1]["status"] == "approval"
    assert waiting["steps"][1]["approval"]["message"] == "Approve step 2: Ship?"
    assert waiting["needs_attention"] is True
    approved = post(client, f"{base}/2/approve", {"comment": "go"})
    assert approved["steps"][1]["status"] == "running"
    post(client, f"{base}/2/approval", {"message": "Deploy to production?"})
    rejected = post(client, f"{base}/2/reject", {"comment": "not today"})
    assert rejected["status"] == "failed"
    assert rejected["steps"][1]["error"] == "rejected: not today"


def test_pause_resume_cancel_and_restart(client: TestClient) -> None:
    tid = create(client)["task_id"]
    post(client, f"/api/tasks/{tid}/steps/1/start")
    paused = post(client, f"/api/tasks/{tid}/pause")
    assert paused["status"] == "paused" and paused["paused_at"] is not None
    assert paused["steps"][0]["status"] == "paused"
    # progress on a paused step is refused and says why
    refused = client.post(f"/api/tasks/{tid}/steps/1/progress", json={"percent": 10})
    problem = assert_problem(refused, 409, "illegal-transition")
    assert problem["actual"] == "paused" and problem["expected"] == ["running"]
    resumed = post(client, f"/api/tasks/{tid}/resume")
    assert resumed["status"] == "running" and resumed["steps"][0]["status"] == "running"
    restarted = post(client, f"/api/tasks/{tid}/restart", status=201)
    assert restarted["restarted_from"] == tid
    assert restarted["status"] == "pending" and restarted["title"] == CRM["title"]
    assert [s["name"] for s in restarted["steps"]] == [s["name"] for s in CRM["steps"]]
    old = client.get(f"/api/tasks/{tid}/progress").json()
    assert old["status"] == "cancelled" and old["restarted_as"] == restarted["task_id"]
    listed = len(client.get("/api/tasks").json()["tasks"])
    twice = assert_problem(client.post(f"/api/tasks/{tid}/restart"), 409, "already-restarted")
    assert twice["restarted_as"] == restarted["task_id"]  # a double click makes no second task
    assert len(client.get("/api/tasks").json()["tasks"]) == listed
    assert client.get(f"/api/tasks/{tid}/progress").json()["version"] == old["version"]
    cancelled = post(client, f"/api/tasks/{restarted['task_id']}/cancel", {"reason": "changed my mind"})
    assert cancelled["status"] == "cancelled"
    again = client.post(f"/api/tasks/{restarted['task_id']}/cancel")
    assert assert_problem(again, 409, "illegal-transition")["actual"] == "cancelled"


def test_logs_are_events_and_filter_by_level(client: TestClient) -> None:
    tid = create(client)["task_id"]
    post(client, f"/api/tasks/{tid}/logs", {"level": "info", "message": "created 3 tables", "step": 1})
    post(client, f"/api/tasks/{tid}/logs", {"level": "error", "message": "boom"})
    logs = client.get(f"/api/tasks/{tid}/logs").json()["logs"]
    assert [(line["level"], line["message"], line["step"]) for line in logs] == [
        ("info", "created 3 tables", 1),
        ("error", "boom", None),
    ]
    errors = client.get(f"/api/tasks/{tid}/logs", params={"level": "warning"}).json()["logs"]
    assert [line["message"] for line in errors] == ["boom"]
    after = client.get(f"/api/tasks/{tid}/logs", params={"after": logs[0]["position"]}).json()["logs"]
    assert [line["message"] for line in after] == ["boom"]
    assert_problem(
        client.post(f"/api/tasks/{tid}/logs", json={"message": "x", "step": 9}), 404, "step-not-found"
    )


def test_history_table_matches_the_spec(client: TestClient) -> None:
    tid = create(client)["task_id"]
    post(client, f"/api/tasks/{tid}/steps/1/start")
    post(client, f"/api/tasks/{tid}/steps/1/complete")
    post(client, f"/api/tasks/{tid}/steps/2/start")
    post(client, f"/api/tasks/{tid}/steps/2/progress", {"percent": 65})
    history = client.get(f"/api/tasks/{tid}/history").json()
    rows = [(r["step"], r["percent"], r["status"], r["updated_at"] is None) for r in history["steps"]]
    assert rows == [
        (1, 100, "completed", False),
        (2, 65, "running", False),
        (3, 0, "pending", True),
        (4, 0, "pending", True),
    ]
    moves = [(c["step"], c["percent"], c["status"]) for c in history["changes"]]
    assert moves == [(1, 0, "running"), (1, 100, "completed"), (2, 0, "running"), (2, 65, "running")]


def test_list_is_newest_first_and_paginated(client: TestClient) -> None:
    ids = [create(client, {"title": f"task {i}", "steps": [{"name": "a"}]})["task_id"] for i in range(5)]
    page = client.get("/api/tasks", params={"limit": 2}).json()
    assert [t["task_id"] for t in page["tasks"]] == ids[::-1][:2]
    seen = [t["task_id"] for t in page["tasks"]]
    while page["next"]:
        page = client.get("/api/tasks", params={"limit": 2, "before": page["next"]}).json()
        seen += [t["task_id"] for t in page["tasks"]]
    assert seen == ids[::-1]
    assert_problem(client.get("/api/tasks", params={"limit": 0}), 422, "invalid-query")
    assert_problem(client.get("/api/tasks", params={"before": "nonsense"}), 422, "invalid-query")


def test_list_filters_by_status_and_refuses_an_unknown_one(client: TestClient) -> None:
    waiting = create(client, {"title": "waiting", "steps": [{"name": "a"}]})["task_id"]
    running = create(client, {"title": "running", "steps": [{"name": "a"}]})["task_id"]
    post(client, f"/api/tasks/{running}/steps/1/start")

    def listed(status: str) -> list[str]:
        response = client.get("/api/tasks", params={"status": status})
        assert response.status_code == 200, response.text
        return [t["task_id"] for t in response.json()["tasks"]]

    assert listed("running") == [running]
    assert listed("pending") == [waiting]
    assert listed("completed") == []
    problem = assert_problem(client.get("/api/tasks", params={"status": "bogus"}), 422, "invalid-query")
    assert "running" in problem["detail"] and problem["errors"] == [{"path": "status"}]


def test_min_position_waits_for_the_read_models_and_says_when_it_gave_up(client: TestClient) -> None:
    created = create(client)
    tid, position = created["task_id"], created["position"]
    reached = client.get(f"/api/tasks/{tid}/progress", params={"min_position": position})
    assert reached.status_code == 200
    assert "Progressd-View-Lag" not in reached.headers
    started = time.monotonic()
    ahead = client.get(f"/api/tasks/{tid}/progress", params={"min_position": position + 1_000_000})
    assert ahead.status_code == 200  # what the read models have, after the bounded wait
    assert ahead.headers["Progressd-View-Lag"] == "true"
    assert ahead.json()["version"] == created["version"]
    assert time.monotonic() - started < 10
    negative = client.get(f"/api/tasks/{tid}/progress", params={"min_position": -1})
    assert_problem(negative, 422, "invalid-query")


def test_idempotency_key_applies_a_retried_command_once(client: TestClient) -> None:
    tid = create(client)["task_id"]
    post(client, f"/api/tasks/{tid}/steps/1/start")
    first = client.post(
        f"/api/tasks/{tid}/steps/1/progress", json={"percent": 30}, headers={"Idempotency-Key": "k1"}
    )
    before = event_count(client, tid)
    second = client.post(
        f"/api/tasks/{tid}/steps/1/progress", json={"percent": 30}, headers={"Idempotency-Key": "k1"}
    )
    assert first.status_code == second.status_code == 200
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["version"] == first.json()["version"]
    assert event_count(client, tid) == before
    reused = client.post(
        f"/api/tasks/{tid}/steps/1/progress", json={"percent": 40}, headers={"Idempotency-Key": "k1"}
    )
    assert_problem(reused, 422, "idempotency-key-reused")
    assert event_count(client, tid) == before


def test_idempotent_create_returns_the_same_task(client: TestClient) -> None:
    a = create(client, CRM, **{"Idempotency-Key": "create-1"})
    b = create(client, CRM, **{"Idempotency-Key": "create-1"})
    assert a["task_id"] == b["task_id"]
    assert len(client.get("/api/tasks").json()["tasks"]) == 1


def test_if_match_gives_optimistic_concurrency(client: TestClient) -> None:
    task = create(client)
    tid = task["task_id"]
    ok = client.post(f"/api/tasks/{tid}/steps/1/start", headers={"If-Match": f'"{task["version"]}"'})
    assert ok.status_code == 200 and ok.headers["etag"] == f'"{task["version"] + 1}"'
    stale = client.post(f"/api/tasks/{tid}/steps/1/complete", headers={"If-Match": f'"{task["version"]}"'})
    problem = assert_problem(stale, 412, "version-mismatch")
    assert problem["actual_version"] == task["version"] + 1
    assert_problem(client.post(f"/api/tasks/{tid}/pause", headers={"If-Match": "soon"}), 400, "bad-if-match")


def test_if_match_compares_strongly_and_takes_star_and_lists(client: TestClient) -> None:
    """RFC 9110: a weak tag never matches (it used to be taken as a strong one), `*` matches any task that
    exists (it was a 400) and a task that does not is 404 as without the header, and a list matches when any
    of its strong tags does."""
    tid = create(client)["task_id"]
    start, pause = f"/api/tasks/{tid}/steps/1/start", f"/api/tasks/{tid}/pause"
    weak = assert_problem(client.post(start, headers={"If-Match": 'W/"1"'}), 412, "version-mismatch")
    assert (weak["expected_versions"], weak["actual_version"]) == ([], 1)
    mixed = assert_problem(client.post(start, headers={"If-Match": 'W/"1", "7"'}), 412, "version-mismatch")
    assert (mixed["expected_version"], mixed["actual_version"]) == (7, 1)
    assert event_count(client, tid) == 1

    listed = client.post(start, headers={"If-Match": '"5", "1"'})
    assert listed.status_code == 200 and listed.json()["version"] == 2
    stale = assert_problem(client.post(pause, headers={"If-Match": '"1", "3"'}), 412, "version-mismatch")
    assert (stale["expected_versions"], stale["actual_version"]) == ([1, 3], 2)
    star = client.post(pause, headers={"If-Match": "*"})
    assert star.status_code == 200 and star.json()["version"] == 3
    missing = client.post(f"/api/tasks/{uuid.uuid4()}/pause", headers={"If-Match": "*"})
    assert_problem(missing, 404, "task-not-found")
    for garbage in ['"3",', '"3" "4"', "W/3", '*, "3"', "", '"3", ' * 51 + '"3"']:
        assert_problem(client.post(pause, headers={"If-Match": garbage}), 400, "bad-if-match")
    assert event_count(client, tid) == 3


def test_restart_honours_if_match(client: TestClient) -> None:
    """restart is a command like the others: a stale or garbage If-Match refuses it and cancels nothing
    (it used to answer 201 and cancel the running task whatever the header said)."""
    tid = create(client)["task_id"]
    running = post(client, f"/api/tasks/{tid}/steps/1/start")
    before = event_count(client, tid)
    stale = client.post(f"/api/tasks/{tid}/restart", headers={"If-Match": '"999"'})
    problem = assert_problem(stale, 412, "version-mismatch")
    assert (problem["expected_version"], problem["actual_version"]) == (999, running["version"])
    garbage = client.post(f"/api/tasks/{tid}/restart", headers={"If-Match": "garbage"})
    assert_problem(garbage, 400, "bad-if-match")
    assert event_count(client, tid) == before
    assert client.get(f"/api/tasks/{tid}/progress").json()["status"] == "running"
    assert [t["task_id"] for t in client.get("/api/tasks").json()["tasks"]] == [tid]
    pinned = client.post(f"/api/tasks/{tid}/restart", headers={"If-Match": f'"{running["version"]}"'})
    assert pinned.status_code == 201, pinned.text
    assert pinned.json()["restarted_from"] == tid


@pytest.mark.parametrize(
    ("path", "body", "status", "slug"),
    [
        ("/api/tasks", b"{not json", 400, "malformed-json"),
        ("/api/tasks", b'{"title": "x", "steps": [{"name": "a"}], "colour": "red"}', 422, "invalid-field"),
        ("/api/tasks", b'{"title": "x", "steps": [{"name": "a", "weight": "heavy"}]}', 422, "invalid-field"),
        ("/api/tasks", b'{"title": "x", "steps": []}', 422, "invalid-field"),
        ("/api/tasks", b'{"title": "", "steps": [{"name": "a"}]}', 422, "invalid-field"),
        ("/api/tasks", b'{"title": "x", "steps": [{"name": "a", "weight": -1}]}', 422, "invalid-field"),
        (
            "/api/tasks",
            b'{"title": "x", "steps": [{"name": "a"}], "complexity": "huge"}',
            422,
            "invalid-field",
        ),
        ("/api/tasks", b"\xff\xfe", 400, "malformed-json"),
        ("/api/tasks", b"[" * 5000, 422, "invalid-field"),
        ("/api/tasks", b'{"title": ' + b"[" * 5000, 422, "invalid-field"),
    ],
)
def test_bad_create_bodies_get_problems(
    client: TestClient, path: str, body: bytes, status: int, slug: str
) -> None:
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert_problem(response, status, slug)
    assert client.get("/api/tasks").json()["tasks"] == []


def test_validation_errors_name_the_json_path(client: TestClient) -> None:
    body = b'{"title": "x", "steps": [{"name": "a", "weight": "heavy"}]}'
    problem = assert_problem(client.post("/api/tasks", content=body), 422, "invalid-field")
    assert problem["errors"][0]["path"] == "$.steps[0].weight"


def test_rejected_commands_append_nothing(client: TestClient) -> None:
    tid = create(client)["task_id"]
    before = event_count(client, tid)
    cases = [
        (f"/api/tasks/{tid}/steps/1/complete", None, 409, "illegal-transition"),
        (f"/api/tasks/{tid}/steps/9/start", None, 404, "step-not-found"),
        (f"/api/tasks/{tid}/steps/1/progress", {"percent": 101}, 422, "invalid-field"),
        (f"/api/tasks/{tid}/steps/1/progress", {"percent": "half"}, 422, "invalid-field"),
        (f"/api/tasks/{tid}/steps/1/progress", {"percent": 5, "extra": 1}, 422, "invalid-field"),
        (f"/api/tasks/{tid}/steps/1/fail", {}, 422, "invalid-field"),
        (f"/api/tasks/{tid}/steps/1/dance", None, 404, "unknown-command"),
        (f"/api/tasks/{tid}/resume", None, 409, "illegal-transition"),
        (f"/api/tasks/{tid}/steps/2/substeps/7/done", None, 409, "illegal-transition"),
    ]
    for path, body, status, slug in cases:
        assert_problem(client.post(path, json=body), status, slug)
    post(client, f"/api/tasks/{tid}/steps/2/start")
    before = event_count(client, tid)
    assert_problem(client.post(f"/api/tasks/{tid}/steps/2/substeps/7/done"), 404, "step-not-found")
    assert event_count(client, tid) == before


def test_unknown_tasks_and_big_bodies(client: TestClient) -> None:
    assert_problem(client.get("/api/tasks/not-a-uuid/progress"), 404, "task-not-found")
    missing = "00000000-0000-4000-8000-000000000000"
    assert_problem(client.get(f"/api/tasks/{missing}/progress"), 404, "task-not-found")
    assert_problem(client.post(f"/api/tasks/{missing}/pause"), 404, "task-not-found")
    assert_problem(client.get(f"/api/tasks/{missing}/events"), 404, "task-not-found")
    huge = b'{"title": "' + b"x" * (70 * 1024) + b'", "steps": [{"name": "a"}]}'
    assert_problem(client.post("/api/tasks", content=huge), 413, "body-too-large")
    assert_problem(client.get("/nope"), 404, "not-found")


def test_time_travel_shows_the_view_and_its_estimate_as_they_were(client: TestClient) -> None:
    tid = create(client)["task_id"]
    served = []
    for path, body in [
        ("steps/1/start", None),
        ("steps/1/progress", {"percent": 50}),
        ("steps/1/complete", None),
        ("steps/2/start", None),
    ]:
        response = post(client, f"/api/tasks/{tid}/{path}", body)
        served.append(response)
    # The history moves on afterwards: later tasks of the same plan take longer over their first steps.
    for _ in range(3):
        later = create(client)["task_id"]
        post(client, f"/api/tasks/{later}/steps/1/start")
        time.sleep(0.8)
        post(client, f"/api/tasks/{later}/steps/1/complete")
    now = client.get(f"/api/tasks/{tid}/progress").json()
    assert now["eta_seconds"] != served[-1]["eta_seconds"]  # today's history gives another estimate
    for then in served:
        past = client.get(f"/api/tasks/{tid}/progress", params={"position": then["position"]}).json()
        # The log's view, and the estimate made from the step history as it stood at that position, as of
        # the view's own time: exactly what the command answered then.
        assert past == then
    at = served[1]["updated_at"]
    assert (
        client.get(f"/api/tasks/{tid}/progress", params={"at": at}).json()["version"] == served[1]["version"]
    )

    def version(**params: Any) -> int:
        return int(client.get(f"/api/tasks/{tid}/progress", params=params).json()["version"])

    # Both bounds: whichever came first.
    assert version(position=served[0]["position"], at=served[3]["updated_at"]) == served[0]["version"]
    assert version(position=served[3]["position"], at=at) == served[1]["version"]
    # Past the end of the log: the view as it is now.
    assert version(position=10**9) == now["version"]


def test_events_endpoint_is_the_raw_log(client: TestClient) -> None:
    tid = create(client)["task_id"]
    post(client, f"/api/tasks/{tid}/steps/1/start")
    post(client, f"/api/tasks/{tid}/steps/1/progress", {"percent": 20})
    events = client.get(f"/api/tasks/{tid}/events").json()["events"]
    assert [(e["seq"], e["type"]) for e in events] == [(1, "Created"), (2, "StepStarted"), (3, "Progressed")]
    assert events[2]["data"] == {"order": 1, "percent": 20.0}
    later = client.get(f"/api/tasks/{tid}/events", params={"after": 2}).json()["events"]
    assert [e["seq"] for e in later] == [3]


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    create(client)
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["head"] >= 1
    assert set(ready["projections"]) == {
        "task_view",
        "task_progress",
        "step_stats",
        "task_logs",
        "event_index",
        "notifications",
    }
