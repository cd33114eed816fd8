"""Chat replies: the spec's status text for the CRM example, computed from the progress view; the gerund
rule, ETA wording, logs (errors first), lists and buttons. Pure: views come from Task events at set times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.progress import progress_view
from domain.task import StepPlan, Task
from projections import replies
from projections.wording import doing, duration, eta, gerund, task_phrase

T0 = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)

SPEC_STATUS = """📊 Your Cellphone Store CRM task is 65% complete.

Currently: Generating application UI
- ✓ Customer list view
- ✓ Product list view
- ⏳ Sales form (in progress)
- ⏳ Repair board

ETA: About 3 minutes remaining."""


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def crm_at_65() -> Task:
    """The spec's CRM task, step 2 with two of four substeps done; weights chosen so the task reads 65%."""
    task = Task.plan(
        "Cellphone Store CRM",
        "alice",
        [
            StepPlan("Create database tables", weight=4),
            StepPlan(
                "Generate application UI",
                weight=5,
                substeps=("Customer list view", "Product list view", "Sales form", "Repair board"),
            ),
            StepPlan("Add search and filters", weight=0.5),
            StepPlan("Configure workflows", weight=0.5, requires_approval=True),
        ],
        tables=4,
        at=T0,
    )
    task.start_step(1, at=at(0))
    task.complete_step(1, at=at(15))
    task.start_step(2, at=at(15))
    task.complete_substep(2, 1, at=at(60))
    task.complete_substep(2, 2, at=at(120))
    return task


def test_status_reply_is_the_spec_text_for_the_same_state() -> None:
    view = progress_view(crm_at_65())
    assert view["progress"] == 65
    view["eta_seconds"] = 180  # what the estimator fills in; the reply only words it
    assert replies.status_reply(view) == SPEC_STATUS


def test_status_without_an_estimate_says_so() -> None:
    view = progress_view(crm_at_65())
    assert view["eta_seconds"] is None
    assert replies.status_reply(view) == SPEC_STATUS.replace(
        "ETA: About 3 minutes remaining.", "ETA: not enough history yet."
    )


def test_status_in_other_states() -> None:
    task = crm_at_65()
    task.pause(at=at(130))
    paused = replies.status_reply(progress_view(task))
    assert paused.startswith("⏸ Your Cellphone Store CRM task is paused at 65%.")
    assert "- ⏳ Sales form\n" in paused and "(in progress)" not in paused
    assert paused.endswith("ETA: on hold while the task is paused.")
    task.resume(at=at(140))
    task.complete_substep(2, 3, at=at(150))
    task.complete_substep(2, 4, at=at(160))
    task.complete_step(2, at=at(160))
    task.start_step(3, at=at(160))
    task.complete_step(3, at=at(170))
    task.start_step(4, at=at(170))
    waiting = replies.status_reply(progress_view(task))
    assert "Currently: Configuring workflows" in waiting
    assert "⚠️ Step 4 needs your approval: Approve step 4: Configure workflows?" in waiting
    task.reject(4, comment="wrong roles", at=at(180))
    failed = replies.status_reply(progress_view(task))
    assert failed.startswith("❌ Your Cellphone Store CRM task failed at Step 4 of 4.")
    assert "Error: rejected: wrong roles" in failed
    task.retry_step(4, at=at(190))
    task.approve(4, at=at(200))
    task.complete_step(4, at=at(260))
    assert replies.status_reply(progress_view(task)) == (
        "✅ Your Cellphone Store CRM task is complete: all 4 steps finished in 4 min."
    )


def test_status_of_a_cancelled_and_a_pending_task() -> None:
    task = Task.plan("Nightly import job", "bob", [StepPlan("Fetch files"), StepPlan("Load rows")], at=T0)
    assert replies.status_reply(progress_view(task)).splitlines()[0] == (
        "🕓 Your Nightly import job has not started yet (2 steps planned)."
    )
    task.cancel(at=at(5))
    assert replies.status_reply(progress_view(task)) == "🛑 Your Nightly import job was cancelled at 0%."


@pytest.mark.parametrize(
    ("verb", "ing"),
    [
        ("Generate", "Generating"),
        ("Create", "Creating"),
        ("Add", "Adding"),
        ("Configure", "Configuring"),
        ("Run", "Running"),
        ("Set", "Setting"),
        ("Plan", "Planning"),
        ("Fix", "Fixing"),
        ("Open", "Opening"),
        ("Visit", "Visiting"),
        ("Deploy", "Deploying"),
        ("Copy", "Copying"),
        ("Commit", "Committing"),
        ("Wait", "Waiting"),
        ("Debug", "Debugging"),
        ("Reset", "Resetting"),
        ("Tie", "Tying"),
        ("See", "Seeing"),
        ("Building", "Building"),
        ("sync", "syncing"),
    ],
)
def test_gerund_rule(verb: str, ing: str) -> None:
    assert gerund(verb) == ing


def test_step_names_become_what_is_happening() -> None:
    assert doing("Generate application UI") == "Generating application UI"
    assert doing("Set up the database") == "Setting up the database"
    assert doing("Setup database") == "Setting up database"
    assert doing("Database created") == "Database created"  # not a verb: left as it is
    assert doing("UI generation") == "UI generation"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "not enough history yet."),
        (10, "Less than a minute remaining."),
        (50, "About 1 minute remaining."),
        (180, "About 3 minutes remaining."),
        (200, "About 3 minutes remaining."),
        (3600, "About 1 hour remaining."),
        (5100, "About 1 hour 25 minutes remaining."),
        (7 * 3600, "About 7 hours remaining."),
        (20 * 3600, "About 20 hours remaining."),
        (3 * 86400, "About 3 days remaining."),
    ],
)
def test_eta_wording(seconds: float | None, text: str) -> None:
    assert eta(seconds) == text


def test_durations_and_task_phrase() -> None:
    assert [duration(ms) for ms in (400, 15_000, 180_000, 5_100_000, 3 * 86_400_000)] == [
        "1 s",
        "15 s",
        "3 min",
        "1 h 25 min",
        "3 days",
    ]
    assert task_phrase("Cellphone Store CRM") == "Cellphone Store CRM task"
    assert task_phrase("Nightly import task") == "Nightly import task"


def log(position: int, level: str, message: str, step: int | None = 2) -> dict[str, Any]:
    return {
        "position": position,
        "at": f"2024-01-15T10:0{position}:00.000Z",
        "level": level,
        "step": step,
        "message": message,
    }


def test_logs_reply_puts_errors_first_and_does_not_repeat_them() -> None:
    view = progress_view(crm_at_65())
    recent = [
        log(5, "info", "rendered lists"),
        log(6, "error", "template missing"),
        log(7, "info", "retrying"),
    ]
    errors = [log(2, "error", "slow disk"), log(6, "error", "template missing")]
    text = replies.logs_reply(view, recent, errors, total=7)
    assert text.splitlines() == [
        "📜 Logs for your Cellphone Store CRM task (7 lines in all, errors first):",
        "",
        "Errors (2):",
        "- ❌ 10:02:00 step 2 [error] slow disk",
        "- ❌ 10:06:00 step 2 [error] template missing",
        "",
        "Last 2 lines:",
        "- • 10:05:00 step 2 [info] rendered lists",
        "- • 10:07:00 step 2 [info] retrying",
    ]
    assert (
        replies.logs_reply(view, [], [], total=0) == "📜 Your Cellphone Store CRM task has no log lines yet."
    )
    only = replies.logs_reply(view, recent, [], total=3, errors_only=True)
    assert "No error lines." in only and "rendered lists" not in only


def test_actions_name_the_task_by_id() -> None:
    view = progress_view(crm_at_65())
    tid = view["task_id"]
    assert [(a["action"], a["message"]) for a in replies.actions_for(view)] == [
        ("pause", f"pause task {tid}"),
        ("cancel", f"cancel task {tid}"),
    ]


def test_list_and_ambiguity_replies() -> None:
    a = progress_view(crm_at_65())
    b = progress_view(Task.plan("Dentist CRM", "alice", [StepPlan("x")], at=T0))
    listed = replies.list_reply([a, b])
    assert listed.splitlines()[0] == "You have 2 tasks:"
    assert f"- 📊 Cellphone Store CRM — running, 65%, Step 2 of 4 (task {a['task_id'][:8]})" in listed
    assert replies.list_reply([]) == "You have no tasks yet."
    asked = replies.ambiguous_reply([a, b], ["crm"])
    assert asked.startswith("Which task do you mean by “crm”? I found 2:")
    assert replies.none_reply(["blog"], None, True).startswith(
        "I couldn't find a task of yours matching “blog”"
    )
