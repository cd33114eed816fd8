"""Chat over HTTP on a real store: the spec's status answer for the CRM task, logs, every command through the
same service and role checks as the API, the webhook adapter, bad input as problem+json, and two owners who
never see each other's tasks in an answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from infra.settings import Settings
from infra.tokens import Role
from tests.integration.notify_kit import app_with_notifications
from tests.integration.tokenkit import make_tokens

CRM = {
    "title": "Cellphone Store CRM",
    "complexity": 4,
    "steps": [
        {"name": "Create database tables", "weight": 4},
        {
            "name": "Generate application UI",
            "weight": 5,
            "substeps": ["Customer list view", "Product list view", "Sales form", "Repair board"],
        },
        {"name": "Add search and filters", "weight": 0.5},
        {"name": "Configure workflows", "weight": 0.5, "requires_approval": True},
    ],
}
AT_65 = [
    "steps/1/start",
    "steps/1/complete",
    "steps/2/start",
    "steps/2/substeps/1/done",
    "steps/2/substeps/2/done",
]
SPEC_STATUS = """📊 Your Cellphone Store CRM task is 65% complete.

Currently: Generating application UI
- ✓ Customer list view
- ✓ Product list view
- ⏳ Sales form (in progress)
- ⏳ Repair board

ETA: """
ETA_LINE = re.compile(r"(About \d+ minutes? remaining|Less than a minute remaining)\.")


def is_spec_status(reply: str) -> bool:
    """The spec's status text, with an ETA sentence from the estimator (its figure depends on the clock)."""
    return reply.startswith(SPEC_STATUS) and ETA_LINE.fullmatch(reply[len(SPEC_STATUS) :]) is not None


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    return make_tokens(
        tmp_path,
        {
            "alice": (Role.OWNER, "alice"),
            "alice_worker": (Role.WORKER, "alice"),
            "bob": (Role.OWNER, "bob"),
            "bot": (Role.ADMIN, "chatbot"),
        },
    )


@pytest.fixture
def client(tmp_path: Path, tokens: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(
        app_with_notifications(Settings(data_dir=tmp_path), None),
        raise_server_exceptions=False,
        base_url="http://localhost",
    ) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def task(c: TestClient, token: str, steps: list[str], body: dict[str, Any] | None = None) -> str:
    response = c.post("/api/tasks", json=body or CRM, headers=auth(token))
    assert response.status_code == 201, response.text
    tid: str = response.json()["task_id"]
    for step in steps:
        assert c.post(f"/api/tasks/{tid}/{step}", headers=auth(token)).status_code == 200, step
    return tid


def say(c: TestClient, token: str, message: str, status: int = 200, **headers: str) -> dict[str, Any]:
    response = c.post("/api/chat", json={"message": message}, headers={**auth(token), **headers})
    assert response.status_code == status, response.text
    data: dict[str, Any] = response.json()
    return data


def view(c: TestClient, token: str, tid: str) -> dict[str, Any]:
    data: dict[str, Any] = c.get(f"/api/tasks/{tid}/progress", headers=auth(token)).json()
    return data


def test_status_answers_with_the_spec_text(client: TestClient, tokens: dict[str, str]) -> None:
    tid = task(client, tokens["alice_worker"], AT_65)
    for message in (
        "How's my CRM task going?",
        "Status of my CRM task",
        "how is the cellphone store crm doing?",
    ):
        answer = say(client, tokens["alice"], message)
        assert is_spec_status(answer["reply"]), message
        assert answer["task_id"] == tid
        assert [a["action"] for a in answer["actions"]] == ["pause", "cancel"]
    # A worker token may ask too: it sees its owner's tasks.
    assert is_spec_status(say(client, tokens["alice_worker"], "Status of my CRM task")["reply"])


def test_logs_errors_first_and_last_lines(client: TestClient, tokens: dict[str, str]) -> None:
    tid = task(client, tokens["alice_worker"], AT_65)
    lines = [("info", "created 3 tables", 1), ("error", "Sales form template missing", 2)]
    lines += [("info", f"rendered view {i}", 2) for i in range(1, 6)]
    for level, message, step in lines:
        body = {"level": level, "message": message, "step": step}
        assert (
            client.post(f"/api/tasks/{tid}/logs", json=body, headers=auth(tokens["alice_worker"])).status_code
            == 200
        )
    reply = say(client, tokens["alice"], "Show logs for my CRM task")["reply"]
    assert reply.startswith("📜 Logs for your Cellphone Store CRM task (7 lines in all, errors first):")
    assert reply.index("Sales form template missing") < reply.index("created 3 tables")
    assert reply.count("Sales form template missing") == 1
    short = say(client, tokens["alice"], "show the last 2 log lines for my CRM task")["reply"]
    assert "rendered view 5" in short and "rendered view 4" in short and "rendered view 3" not in short
    assert "Sales form template missing" in short  # errors are shown even when older than the last lines
    errors = say(client, tokens["alice"], "show errors for my CRM task")["reply"]
    assert "Sales form template missing" in errors and "rendered view" not in errors


def test_pause_resume_cancel(client: TestClient, tokens: dict[str, str]) -> None:
    tid = task(client, tokens["alice_worker"], AT_65)
    alice = tokens["alice"]
    assert say(client, alice, "Pause my CRM task")["reply"].startswith(
        "⏸ Paused your Cellphone Store CRM task at 65%"
    )
    assert view(client, alice, tid)["status"] == "paused"
    refused = say(client, alice, "pause my CRM task")
    assert refused["reply"] == "I can't pause your Cellphone Store CRM task: it is paused."
    assert (
        say(client, alice, "Resume my CRM task")["reply"] == "▶️ Resumed your Cellphone Store CRM task at 65%."
    )
    assert view(client, alice, tid)["status"] == "running"
    cancelled = say(client, alice, "Cancel my CRM task because the client changed their mind")
    assert cancelled["reply"] == "🛑 Cancelled your Cellphone Store CRM task at 65%."
    assert view(client, alice, tid)["status"] == "cancelled"
    assert view(client, alice, tid)["error"] == "the client changed their mind"


def test_cancel_and_start_over_replies_with_the_new_task(client: TestClient, tokens: dict[str, str]) -> None:
    old = task(client, tokens["alice_worker"], AT_65)
    answer = say(client, tokens["alice"], "Cancel my CRM task and start over")
    new = answer["task_id"]
    assert new != old
    assert answer["reply"] == (
        "🔁 Cancelled your Cellphone Store CRM task at 65% and started it over.\n"
        f"New task: {new} (4 steps, pending)."
    )
    assert view(client, tokens["alice"], old)["restarted_as"] == new
    assert view(client, tokens["alice"], new)["restarted_from"] == old
    twice = say(client, tokens["alice"], f"Start task {old} over")  # asked again: no third task
    assert twice["reply"] == (
        f"Your Cellphone Store CRM task was already started over: the new task is {new}."
    )
    assert twice["task_id"] == new
    # "my CRM task" now means the new one, with no question asked.
    again = say(client, tokens["alice"], "How's my CRM task going?")
    assert again["task_id"] == new and again["reply"].startswith(
        "🕓 Your Cellphone Store CRM task has not started"
    )


def test_approve_and_reject_with_the_role_checks_of_the_api(
    client: TestClient, tokens: dict[str, str]
) -> None:
    steps = [*AT_65, "steps/2/substeps/3/done", "steps/2/substeps/4/done", "steps/2/complete"]
    steps += ["steps/3/start", "steps/3/complete", "steps/4/start"]
    tid = task(client, tokens["alice_worker"], steps)
    waiting = say(client, tokens["alice"], "How's my CRM task going?")
    assert "⚠️ Step 4 needs your approval" in waiting["reply"]
    assert [a["action"] for a in waiting["actions"]][:2] == ["approve", "reject"]
    # A worker token cannot approve, from the chat either: 403, and nothing is appended.
    version = view(client, tokens["alice"], tid)["version"]
    denied = client.post(
        "/api/chat", json={"message": "approve step 4 of my CRM task"}, headers=auth(tokens["alice_worker"])
    )
    assert denied.status_code == 403 and denied.headers["content-type"] == "application/problem+json"
    assert view(client, tokens["alice"], tid)["version"] == version
    rejected = say(client, tokens["alice"], "Reject step 4 of my CRM task because the roles are wrong")
    assert rejected["reply"] == "👎 Rejected Step 4 of your Cellphone Store CRM task; it is now failed."
    assert view(client, tokens["alice"], tid)["steps"][3]["error"] == "rejected: the roles are wrong"
    client.post(f"/api/tasks/{tid}/steps/4/retry", headers=auth(tokens["alice_worker"]))
    approved = say(client, tokens["alice"], "approve my CRM task")  # the one step waiting
    assert approved["reply"] == "👍 Approved Step 4: Configure workflows of your Cellphone Store CRM task."
    assert view(client, tokens["alice"], tid)["steps"][3]["status"] == "running"
    nothing = say(client, tokens["alice"], "approve my CRM task")
    assert nothing["reply"] == "Nothing in your Cellphone Store CRM task is waiting for approval."
    wrong = say(client, tokens["alice"], "approve step 2 of my CRM task")
    assert (
        wrong["reply"] == "I can't approve step 2 of your Cellphone Store CRM task: that step is completed."
    )


def test_list_ambiguity_and_no_match(client: TestClient, tokens: dict[str, str]) -> None:
    alice = tokens["alice"]
    assert say(client, alice, "List my tasks")["reply"] == "You have no tasks yet."
    a = task(client, tokens["alice_worker"], ["steps/1/start"])
    b = task(client, tokens["alice_worker"], [], {"title": "Dentist CRM", "steps": [{"name": "Plan"}]})
    listed = say(client, alice, "List my tasks")["reply"]
    assert listed.splitlines()[0] == "You have 2 tasks:" and "Dentist CRM — pending" in listed
    asked = say(client, alice, "How's my CRM task going?")
    assert asked["reply"].startswith("Which task do you mean by “crm”? I found 2:")
    assert {ch["task_id"] for ch in asked["choices"]} == {a, b} and "task_id" not in asked
    # Answering with the id (as the choices and buttons do) resolves it.
    assert say(client, alice, f"status of task {b[:8]}")["task_id"] == b
    assert say(client, alice, "How's my dentist CRM going?")["task_id"] == b
    none = say(client, alice, "How's my blog task going?")
    assert none["reply"].startswith("I couldn't find a task of yours matching “blog”")
    assert say(client, alice, "delete my CRM task")["reply"].startswith("Sorry, I didn't understand that.")
    assert say(client, alice, "help")["reply"].startswith("I can tell you how your tasks are doing")


def test_two_owners_never_see_each_others_tasks(client: TestClient, tokens: dict[str, str]) -> None:
    alices = task(client, tokens["alice_worker"], AT_65)
    bob = tokens["bob"]
    assert say(client, bob, "How's my CRM task going?")["reply"] == "You have no tasks yet."
    assert say(client, bob, "List my tasks")["reply"] == "You have no tasks yet."
    task(client, bob, [], {"title": "Bob's blog", "steps": [{"name": "Write"}]})
    for message in (f"Cancel task {alices}", f"status of task {alices}", f"logs for task {alices[:8]}"):
        answer = say(client, bob, message)
        assert "task_id" not in answer and "Cellphone" not in answer["reply"], message
    assert view(client, tokens["alice"], alices)["status"] == "running"


def test_webhook_adapter(client: TestClient, tokens: dict[str, str]) -> None:
    tid = task(client, tokens["alice_worker"], AT_65)
    body = {"text": "How's my CRM task going?", "user": "U123", "channel": "C9", "team": "T1"}
    response = client.post("/api/chat/webhook", json=body, headers=auth(tokens["alice"]))
    assert response.status_code == 200
    data = response.json()
    assert data["text"] == data["reply"]
    assert is_spec_status(data["reply"])
    assert (data["user"], data["channel"], data["task_id"]) == ("U123", "C9", tid)
    # A bot with an admin token speaks for the owner named by `user`.
    for_alice = client.post(
        "/api/chat/webhook",
        json={"text": "status of my CRM task", "user": "alice"},
        headers=auth(tokens["bot"]),
    )
    assert for_alice.json()["task_id"] == tid
    for_bob = client.post(
        "/api/chat/webhook",
        json={"text": "status of my CRM task", "user": "bob"},
        headers=auth(tokens["bot"]),
    )
    assert for_bob.json()["reply"] == "You have no tasks yet."
    # A platform retrying the same message (same id) applies the command once.
    pause = {"text": "pause my CRM task", "id": "msg-1"}
    first = client.post("/api/chat/webhook", json=pause, headers=auth(tokens["alice"])).json()
    version = view(client, tokens["alice"], tid)["version"]
    second = client.post("/api/chat/webhook", json=pause, headers=auth(tokens["alice"])).json()
    assert first["reply"] == second["reply"] and first["reply"].startswith("⏸ Paused")
    assert view(client, tokens["alice"], tid)["version"] == version


@pytest.mark.parametrize(
    ("path", "body", "status", "slug"),
    [
        ("/api/chat", b"{", 400, "malformed-json"),
        ("/api/chat", b"{}", 422, "invalid-field"),
        ("/api/chat", b'{"message": ""}', 422, "invalid-field"),
        ("/api/chat", b'{"message": "   "}', 422, "invalid-field"),
        ("/api/chat", b'{"message": 7}', 422, "invalid-field"),
        ("/api/chat", b'{"message": "hi", "extra": 1}', 422, "invalid-field"),
        ("/api/chat/webhook", b'{"user": "U1"}', 422, "invalid-field"),
        ("/api/chat/webhook", b"[]", 422, "invalid-field"),
    ],
)
def test_bad_input_is_problem_json(
    client: TestClient, tokens: dict[str, str], path: str, body: bytes, status: int, slug: str
) -> None:
    response = client.post(
        path, content=body, headers={**auth(tokens["alice"]), "content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == f"/problems/{slug}"


def test_chat_needs_a_token(client: TestClient) -> None:
    assert client.post("/api/chat", json={"message": "list my tasks"}).status_code == 401
