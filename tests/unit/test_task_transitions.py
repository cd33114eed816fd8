"""The Task aggregate's state machine: every legal transition, every rejected one, and replay == live.

Pure unit tests: no I/O, explicit timestamps (``at=``) everywhere so that the outcome is deterministic.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.errors import (
    AlreadyRestarted,
    DomainError,
    IdempotencyKeyReused,
    IllegalTransition,
    InvalidValue,
    UnknownStep,
)
from domain.progress import current_step, progress_view, task_percent, whole
from domain.state import FINISHED_STEP, STEP_FROM, TASK_FROM, TERMINAL_TASK, StepStatus, TaskStatus
from domain.task import LOG_LEVELS, MAX_REMEMBERED_KEYS, StepPlan, Task

S = StepStatus
T = TaskStatus
BASE = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)


class Clock:
    """Hands out strictly increasing timestamps, one second apart unless told otherwise."""

    def __init__(self, start: datetime = BASE) -> None:
        self.now = start

    def __call__(self, seconds: float = 1) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def new_task(*plans: StepPlan, clock: Clock | None = None, idem: str | None = None) -> Task:
    steps = list(plans) or [StepPlan("extract", substeps=("a", "b")), StepPlan("load"), StepPlan("check")]
    return Task.plan("Build the CRM", "agent-7", steps, idem=idem, at=(clock.now if clock else BASE))


def snapshot(task: Task) -> dict[str, Any]:
    """Everything the aggregate holds, deep-copied, to prove that a rejected command changed nothing."""
    return copy.deepcopy(task.__dict__)


E = TypeVar("E", bound=DomainError)


def assert_rejected(task: Task, exc: type[E], call: Callable[[], object]) -> E:
    """Run a command that must be refused: the error is raised and no event, no state change happens.

    Events already pending are collected (dropped) first, so that any event left afterwards is new.
    """
    task.collect_events()
    version = task.version
    before = snapshot(task)
    view = progress_view(task)
    with pytest.raises(exc) as info:
        call()
    assert task.collect_events() == []
    assert task.version == version
    assert task.__dict__ == before
    assert progress_view(task) == view
    return info.value


def statuses(task: Task) -> list[StepStatus]:
    return [s.status for s in task.steps]


# ------------------------------------------------------------------------------------------------------
# Scenarios: a fresh three-step task (step 1 has two substeps) driven into a (task status, step 1 status).
# ------------------------------------------------------------------------------------------------------

Scenario = Callable[[Task, Clock], None]


def _pending_pending(t: Task, c: Clock) -> None:
    pass


def _running_pending(t: Task, c: Clock) -> None:
    t.start_step(2, at=c())


def _paused_pending(t: Task, c: Clock) -> None:
    t.start_step(2, at=c())
    t.pause(at=c())


def _failed_pending(t: Task, c: Clock) -> None:
    t.start_step(2, at=c())
    t.fail_step(2, "boom", at=c())


def _cancelled_pending(t: Task, c: Clock) -> None:
    t.cancel(at=c())


def _running_running(t: Task, c: Clock) -> None:
    t.start_step(1, at=c())


def _failed_running(t: Task, c: Clock) -> None:
    t.start_step(1, at=c())
    t.start_step(2, at=c())
    t.fail_step(2, "boom", at=c())


def _cancelled_running(t: Task, c: Clock) -> None:
    t.start_step(1, at=c())
    t.cancel(at=c())


def _paused_paused(t: Task, c: Clock) -> None:
    t.start_step(1, at=c())
    t.pause(at=c())


def _failed_paused(t: Task, c: Clock) -> None:
    t.start_step(1, at=c())
    t.request_approval(2, "go?", at=c())
    t.pause(at=c())
    t.reject(2, at=c())


def _cancelled_paused(t: Task, c: Clock) -> None:
    t.start_step(1, at=c())
    t.pause(at=c())
    t.cancel(at=c())


def _running_approval(t: Task, c: Clock) -> None:
    t.request_approval(1, "go?", at=c())


def _paused_approval(t: Task, c: Clock) -> None:
    t.request_approval(1, "go?", at=c())
    t.pause(at=c())


def _failed_approval(t: Task, c: Clock) -> None:
    t.request_approval(1, "go?", at=c())
    t.start_step(2, at=c())
    t.fail_step(2, "boom", at=c())


def _cancelled_approval(t: Task, c: Clock) -> None:
    t.request_approval(1, "go?", at=c())
    t.cancel(at=c())


def _running_completed(t: Task, c: Clock) -> None:
    t.start_step(1, at=c())
    t.complete_step(1, at=c())


def _paused_completed(t: Task, c: Clock) -> None:
    _running_completed(t, c)
    t.pause(at=c())


def _failed_completed(t: Task, c: Clock) -> None:
    _running_completed(t, c)
    t.start_step(2, at=c())
    t.fail_step(2, "boom", at=c())


def _completed_completed(t: Task, c: Clock) -> None:
    _running_completed(t, c)
    t.skip_step(2, at=c())
    t.skip_step(3, at=c())


def _cancelled_completed(t: Task, c: Clock) -> None:
    _running_completed(t, c)
    t.cancel(at=c())


def _failed_failed(t: Task, c: Clock) -> None:
    t.start_step(1, at=c())
    t.fail_step(1, "boom", at=c())


def _cancelled_failed(t: Task, c: Clock) -> None:
    _failed_failed(t, c)
    t.cancel(at=c())


def _running_skipped(t: Task, c: Clock) -> None:
    t.skip_step(1, at=c())


def _paused_skipped(t: Task, c: Clock) -> None:
    t.skip_step(1, at=c())
    t.start_step(2, at=c())
    t.pause(at=c())


def _failed_skipped(t: Task, c: Clock) -> None:
    t.skip_step(1, at=c())
    t.start_step(2, at=c())
    t.fail_step(2, "boom", at=c())


def _completed_skipped(t: Task, c: Clock) -> None:
    t.skip_step(1, at=c())
    t.skip_step(2, at=c())
    t.skip_step(3, at=c())


def _cancelled_skipped(t: Task, c: Clock) -> None:
    t.skip_step(1, at=c())
    t.cancel(at=c())


SCENARIOS: dict[tuple[TaskStatus, StepStatus], Scenario] = {
    (T.PENDING, S.PENDING): _pending_pending,
    (T.RUNNING, S.PENDING): _running_pending,
    (T.PAUSED, S.PENDING): _paused_pending,
    (T.FAILED, S.PENDING): _failed_pending,
    (T.CANCELLED, S.PENDING): _cancelled_pending,
    (T.RUNNING, S.RUNNING): _running_running,
    (T.FAILED, S.RUNNING): _failed_running,
    (T.CANCELLED, S.RUNNING): _cancelled_running,
    (T.PAUSED, S.PAUSED): _paused_paused,
    (T.FAILED, S.PAUSED): _failed_paused,
    (T.CANCELLED, S.PAUSED): _cancelled_paused,
    (T.RUNNING, S.APPROVAL): _running_approval,
    (T.PAUSED, S.APPROVAL): _paused_approval,
    (T.FAILED, S.APPROVAL): _failed_approval,
    (T.CANCELLED, S.APPROVAL): _cancelled_approval,
    (T.RUNNING, S.COMPLETED): _running_completed,
    (T.PAUSED, S.COMPLETED): _paused_completed,
    (T.FAILED, S.COMPLETED): _failed_completed,
    (T.COMPLETED, S.COMPLETED): _completed_completed,
    (T.CANCELLED, S.COMPLETED): _cancelled_completed,
    (T.FAILED, S.FAILED): _failed_failed,
    (T.CANCELLED, S.FAILED): _cancelled_failed,
    (T.RUNNING, S.SKIPPED): _running_skipped,
    (T.PAUSED, S.SKIPPED): _paused_skipped,
    (T.FAILED, S.SKIPPED): _failed_skipped,
    (T.COMPLETED, S.SKIPPED): _completed_skipped,
    (T.CANCELLED, S.SKIPPED): _cancelled_skipped,
}


def build(task_status: TaskStatus, step_status: StepStatus) -> tuple[Task, Clock]:
    clock = Clock()
    task = new_task(clock=clock)
    SCENARIOS[(task_status, step_status)](task, clock)
    assert (task.status, task.step(1).status) == (task_status, step_status)
    task.collect_events()
    return task, clock


# Step command -> how to call it on step 1.
STEP_COMMANDS: dict[str, Callable[[Task, datetime], None]] = {
    "start": lambda t, at: t.start_step(1, at=at),
    "progress": lambda t, at: t.report_progress(1, 50, at=at),
    "substep": lambda t, at: t.complete_substep(1, 1, at=at),
    "complete": lambda t, at: t.complete_step(1, at=at),
    "fail": lambda t, at: t.fail_step(1, "boom", at=at),
    "skip": lambda t, at: t.skip_step(1, at=at),
    "retry": lambda t, at: t.retry_step(1, at=at),
    "request_approval": lambda t, at: t.request_approval(1, "go?", at=at),
    "approve": lambda t, at: t.approve(1, at=at),
    "reject": lambda t, at: t.reject(1, "no", at=at),
}

TASK_COMMANDS: dict[str, Callable[[Task, datetime], None]] = {
    "pause": lambda t, at: t.pause(at=at),
    "resume": lambda t, at: t.resume(at=at),
    "cancel": lambda t, at: t.cancel("stop", at=at),
}


def test_tables_cover_every_command_and_state() -> None:
    assert set(STEP_COMMANDS) == set(STEP_FROM)
    assert set(STEP_COMMANDS) | set(TASK_COMMANDS) == set(TASK_FROM)
    # Every step state and every task state is reached by some scenario.
    assert {step for _, step in SCENARIOS} == set(StepStatus)
    assert {task for task, _ in SCENARIOS} == set(TaskStatus)


def test_every_disallowed_step_pair_is_exercised_with_the_step_check_firing() -> None:
    """For each (command, step state) refused by STEP_FROM, some scenario lets the task check pass, so the
    table test below proves the step check itself. The exceptions cannot exist in a consistent task: a
    failed step means a failed (or cancelled) task, a paused step a paused (failed, cancelled) one; those
    pairs are refused by the task check, which the table test covers too."""
    uncovered = set()
    for cmd, allowed_steps in STEP_FROM.items():
        for step_status in set(StepStatus) - set(allowed_steps):
            if not any(ss is step_status and ts in TASK_FROM[cmd] for (ts, ss) in SCENARIOS):
                uncovered.add((cmd, step_status))
    needs_running_task = ("start", "request_approval", "progress", "substep", "complete", "fail")
    assert uncovered == (
        {(cmd, S.PAUSED) for cmd in needs_running_task}
        | {(cmd, S.FAILED) for cmd in needs_running_task}
        | {("approve", S.FAILED), ("reject", S.FAILED)}
    )


def _expected_step_after(cmd: str, task: Task) -> StepStatus:
    if cmd == "start":
        return S.APPROVAL if task.step(1).requires_approval else S.RUNNING
    if cmd in ("progress", "substep"):
        return S.RUNNING
    if cmd == "approve":
        return S.PAUSED if task.status is T.PAUSED else S.RUNNING
    return {
        "complete": S.COMPLETED,
        "fail": S.FAILED,
        "skip": S.SKIPPED,
        "retry": S.RUNNING,
        "request_approval": S.APPROVAL,
        "reject": S.FAILED,
    }[cmd]


STEP_TABLE = [
    pytest.param(cmd, ts, ss, id=f"{cmd}-task_{ts}-step_{ss}")
    for cmd in STEP_COMMANDS
    for (ts, ss) in SCENARIOS
]


@pytest.mark.parametrize(("cmd", "task_status", "step_status"), STEP_TABLE)
def test_step_command_table(cmd: str, task_status: TaskStatus, step_status: StepStatus) -> None:
    """Every step command from every reachable (task, step) state: allowed ⇔ both tables allow it."""
    task, clock = build(task_status, step_status)
    call = STEP_COMMANDS[cmd]
    if task_status not in TASK_FROM[cmd]:
        err = assert_rejected(task, IllegalTransition, lambda: call(task, clock()))
        assert err.subject == "task"
        assert err.expected == TASK_FROM[cmd]
        assert err.actual == task_status
        assert err.action == cmd.replace("_", " ")
    elif step_status not in STEP_FROM[cmd]:
        err = assert_rejected(task, IllegalTransition, lambda: call(task, clock()))
        assert err.subject == "step 1"
        assert err.expected == STEP_FROM[cmd]
        assert err.actual == step_status
        assert err.action == cmd.replace("_", " ")
        assert str(step_status) in str(err)
    else:
        version = task.version
        expected = _expected_step_after(cmd, task)
        call(task, clock())
        events = task.collect_events()
        assert len(events) >= 1
        assert task.version == version + len(events)
        assert task.step(1).status is expected


@pytest.mark.parametrize("cmd", list(TASK_COMMANDS))
@pytest.mark.parametrize(("task_status", "step_status"), list(SCENARIOS))
def test_task_command_table(cmd: str, task_status: TaskStatus, step_status: StepStatus) -> None:
    task, clock = build(task_status, step_status)
    call = TASK_COMMANDS[cmd]
    if task_status not in TASK_FROM[cmd]:
        err = assert_rejected(task, IllegalTransition, lambda: call(task, clock()))
        assert (err.subject, err.action, err.expected, err.actual) == (
            "task",
            cmd,
            TASK_FROM[cmd],
            task_status,
        )
    else:
        call(task, clock())
        assert len(task.collect_events()) == 1
        assert task.status is {"pause": T.PAUSED, "resume": T.RUNNING, "cancel": T.CANCELLED}[cmd]


@pytest.mark.parametrize(("task_status", "step_status"), list(SCENARIOS))
def test_mark_restarted_table(task_status: TaskStatus, step_status: StepStatus) -> None:
    task, clock = build(task_status, step_status)
    if task_status in (T.COMPLETED, T.CANCELLED, T.FAILED):
        task.mark_restarted("new-task", at=clock())
        assert len(task.collect_events()) == 1
        assert task.restarted_as == "new-task"
        assert task.status is task_status
        again = assert_rejected(task, AlreadyRestarted, lambda: task.mark_restarted("newer", at=clock()))
        assert again.restarted_as == "new-task" and "restart that task instead" in str(again)
        assert task.restarted_as == "new-task"
    else:
        err = assert_rejected(task, IllegalTransition, lambda: task.mark_restarted("new", at=clock()))
        assert err.expected == ("completed", "cancelled", "failed")
        assert err.actual == task_status


@pytest.mark.parametrize(("task_status", "step_status"), list(SCENARIOS))
def test_log_is_accepted_in_every_state_and_changes_no_status(
    task_status: TaskStatus, step_status: StepStatus
) -> None:
    task, clock = build(task_status, step_status)
    before = statuses(task)
    task.log("info", "hello", step=1, at=clock())
    assert len(task.collect_events()) == 1
    assert task.status is task_status
    assert statuses(task) == before


# ------------------------------------------------------------------------------------------------------
# The legal transitions, told as stories.
# ------------------------------------------------------------------------------------------------------


def test_step_pending_running_completed_and_task_completes_with_last_step() -> None:
    c = Clock()
    task = new_task(StepPlan("one"), StepPlan("two"), clock=c)
    assert task.status is T.PENDING
    assert statuses(task) == [S.PENDING, S.PENDING]
    task.start_step(1, at=c())
    assert task.status is T.RUNNING
    assert task.started_at == c.now
    assert statuses(task) == [S.RUNNING, S.PENDING]
    task.complete_step(1, at=c())
    assert task.status is T.RUNNING
    assert statuses(task) == [S.COMPLETED, S.PENDING]
    task.start_step(2, at=c())
    task.complete_step(2, result="done!", at=c())
    assert statuses(task) == [S.COMPLETED, S.COMPLETED]
    assert task.status is T.COMPLETED
    assert task.result == "done!"
    assert task.finished_at == c.now
    names = [type(e).__name__ for e in task.collect_events()]
    assert names == [
        "Created",
        "StepStarted",
        "StepCompleted",
        "StepStarted",
        "StepCompleted",
        "TaskCompleted",
    ]


def test_task_completes_when_remaining_steps_are_skipped() -> None:
    c = Clock()
    task = new_task(StepPlan("one"), StepPlan("two"), StepPlan("three"), clock=c)
    task.start_step(1, at=c())
    task.complete_step(1, at=c())
    task.skip_step(2, reason="not needed", at=c())
    assert task.status is T.RUNNING
    task.start_step(3, at=c())
    task.skip_step(3, at=c())
    assert statuses(task) == [S.COMPLETED, S.SKIPPED, S.SKIPPED]
    assert task.status is T.COMPLETED
    assert task.result is None


def test_skipping_every_step_of_a_pending_task_completes_it() -> None:
    c = Clock()
    task = new_task(StepPlan("only"), clock=c)
    task.skip_step(1, at=c())
    assert task.status is T.COMPLETED
    assert task.started_at is not None
    assert task.step(1).started_at is None
    assert task.step(1).percent == 100.0


def test_step_fails_then_task_fails_and_retry_brings_both_back_to_running() -> None:
    c = Clock()
    task = new_task(StepPlan("one", substeps=("x", "y")), StepPlan("two"), clock=c)
    task.start_step(1, at=c())
    task.complete_substep(1, 1, at=c())
    task.report_progress(1, 70, at=c())
    task.fail_step(1, "disk full", at=c())
    assert task.step(1).status is S.FAILED
    assert task.step(1).error == "disk full"
    assert task.status is T.FAILED
    assert task.error == "disk full"
    task.retry_step(1, at=c())
    assert task.step(1).status is S.RUNNING
    assert task.step(1).error is None
    assert task.step(1).attempts == 2
    assert task.step(1).reported == 0.0
    assert task.step(1).done == [True, False]  # the retry keeps the substeps it had done
    assert task.status is T.RUNNING
    assert task.error is None
    task.complete_step(1, at=c())
    task.start_step(2, at=c())
    task.complete_step(2, at=c())
    assert task.status is T.COMPLETED


def test_skipping_the_failed_step_brings_the_task_back_to_running() -> None:
    c = Clock()
    task = new_task(StepPlan("one"), StepPlan("two"), clock=c)
    task.start_step(1, at=c())
    task.fail_step(1, "boom", at=c())
    assert task.status is T.FAILED
    task.skip_step(1, at=c())
    assert task.step(1).status is S.SKIPPED
    assert task.step(1).error is None
    assert task.status is T.RUNNING
    assert task.error is None


def test_skipping_the_failed_last_step_completes_the_task() -> None:
    c = Clock()
    task = new_task(StepPlan("one"), StepPlan("two"), clock=c)
    task.start_step(1, at=c())
    task.complete_step(1, at=c())
    task.start_step(2, at=c())
    task.fail_step(2, "boom", at=c())
    task.skip_step(2, at=c())
    assert task.status is T.COMPLETED


def test_a_failed_task_freezes_its_other_steps_until_the_failure_is_handled() -> None:
    c = Clock()
    task = new_task(StepPlan("one"), StepPlan("two"), StepPlan("three"), clock=c)
    task.start_step(1, at=c())
    task.start_step(2, at=c())
    task.request_approval(3, "go?", at=c())
    task.fail_step(1, "first", at=c())
    assert task.status is T.FAILED
    # While the task is failed, its other steps can neither move nor fail, nor be approved or rejected.
    assert_rejected(task, IllegalTransition, lambda: task.report_progress(2, 5, at=c()))
    assert_rejected(task, IllegalTransition, lambda: task.fail_step(2, "second", at=c()))
    assert_rejected(task, IllegalTransition, lambda: task.approve(3, at=c()))
    assert_rejected(task, IllegalTransition, lambda: task.reject(3, at=c()))
    assert_rejected(task, IllegalTransition, lambda: task.pause(at=c()))
    task.skip_step(1, at=c())
    assert task.status is T.RUNNING
    task.reject(3, "nope", at=c())
    assert task.status is T.FAILED
    assert task.error == "rejected: nope"
    task.retry_step(3, at=c())
    assert task.status is T.RUNNING
    task.fail_step(2, "second", at=c())
    assert task.error == "second"
    task.skip_step(2, at=c())
    assert task.status is T.RUNNING
    assert task.error is None


def test_pause_and_resume_move_running_steps_only() -> None:
    c = Clock()
    task = new_task(StepPlan("one"), StepPlan("two"), StepPlan("three"), StepPlan("four"), clock=c)
    task.start_step(1, at=c())
    task.complete_step(1, at=c())
    task.start_step(2, at=c())
    task.request_approval(3, "go?", at=c())
    task.pause(at=c())
    assert task.status is T.PAUSED
    assert task.paused_at == c.now
    assert statuses(task) == [S.COMPLETED, S.PAUSED, S.APPROVAL, S.PENDING]
    task.resume(at=c())
    assert task.status is T.RUNNING
    assert task.paused_at is None
    assert statuses(task) == [S.COMPLETED, S.RUNNING, S.APPROVAL, S.PENDING]


def test_request_approval_from_pending_and_running_then_approve_runs_the_step() -> None:
    c = Clock()
    task = new_task(StepPlan("one"), StepPlan("two"), clock=c)
    task.request_approval(1, "Drop the old table?", at=c())
    assert task.status is T.RUNNING
    step = task.step(1)
    assert step.status is S.APPROVAL
    assert step.approval_message == "Drop the old table?"
    assert step.approval_requested_at == c.now
    assert step.attempts == 1
    task.approve(1, "fine", at=c())
    assert step.status is S.RUNNING
    assert step.approved
    assert step.approval_message is None
    assert step.approval_requested_at is None
    task.start_step(2, at=c())
    task.request_approval(2, "Deploy?", at=c())
    assert task.step(2).status is S.APPROVAL
    assert task.step(2).attempts == 1
    task.approve(2, at=c())
    assert task.step(2).status is S.RUNNING


def test_reject_fails_the_step_and_the_task() -> None:
    c = Clock()
    task = new_task(StepPlan("one"), clock=c)
    task.start_step(1, at=c())
    task.request_approval(1, "go?", at=c())
    task.reject(1, "too risky", at=c())
    assert task.step(1).status is S.FAILED
    assert task.step(1).error == "rejected: too risky"
    assert task.step(1).approval_message is None
    assert task.status is T.FAILED
    assert task.error == "rejected: too risky"
    task.retry_step(1, at=c())
    assert task.step(1).status is S.RUNNING
    assert task.status is T.RUNNING


def test_reject_without_comment() -> None:
    c = Clock()
    task = new_task(StepPlan("one"), clock=c)
    task.request_approval(1, "go?", at=c())
    task.reject(1, at=c())
    assert task.step(1).error == "rejected"


def test_step_requiring_approval_waits_for_it_when_started_and_runs_once_approved() -> None:
    c = Clock()
    task = new_task(StepPlan("deploy", requires_approval=True), clock=c)
    task.start_step(1, at=c())
    step = task.step(1)
    assert step.status is S.APPROVAL
    assert step.approval_message == "Approve step 1: deploy?"
    assert task.status is T.RUNNING
    # It cannot run, report or complete before the approval.
    assert_rejected(task, IllegalTransition, lambda: task.report_progress(1, 10, at=c()))
    assert_rejected(task, IllegalTransition, lambda: task.complete_step(1, at=c()))
    task.approve(1, at=c())
    assert step.status is S.RUNNING
    task.report_progress(1, 40, at=c())
    task.complete_step(1, at=c())
    assert task.status is T.COMPLETED


def test_approving_while_the_task_is_paused_leaves_the_step_paused_until_resume() -> None:
    c = Clock()
    task = new_task(StepPlan("deploy", requires_approval=True), clock=c)
    task.start_step(1, at=c())
    task.pause(at=c())
    assert task.step(1).status is S.APPROVAL
    task.approve(1, at=c())
    assert task.step(1).status is S.PAUSED
    assert task.status is T.PAUSED
    task.resume(at=c())
    assert task.step(1).status is S.RUNNING


def test_reject_while_paused_fails_the_task() -> None:
    c = Clock()
    task = new_task(StepPlan("one"), clock=c)
    task.request_approval(1, "go?", at=c())
    task.pause(at=c())
    task.reject(1, at=c())
    assert task.status is T.FAILED


def test_retry_after_reject_while_paused_keeps_task_and_steps_consistent() -> None:
    c = Clock()
    task = new_task(StepPlan("one"), StepPlan("two"), clock=c)
    task.start_step(1, at=c())
    task.request_approval(2, "go?", at=c())
    task.pause(at=c())
    task.reject(2, at=c())
    task.retry_step(2, at=c())
    # Either the task is back to paused (with every unfinished step paused), or it runs and so do its steps;
    # it must never read "running" with a stuck paused step and a stale paused_at.
    if task.status is T.RUNNING:
        assert S.PAUSED not in statuses(task)
        assert task.paused_at is None
    else:
        assert task.status is T.PAUSED
        assert S.RUNNING not in statuses(task)


def test_reject_while_paused_then_skip_leaves_the_task_paused_and_resumable() -> None:
    c = Clock()
    task = new_task(StepPlan("one"), StepPlan("two"), clock=c)
    task.start_step(1, at=c())
    task.request_approval(2, "go?", at=c())
    task.pause(at=c())
    task.reject(2, at=c())
    task.skip_step(2, at=c())
    assert task.status is T.PAUSED  # it was paused when step 2 was rejected: it stays paused
    assert task.step(1).status is S.PAUSED
    task.resume(at=c())
    task.report_progress(1, 50, at=c())
    assert task.step(1).status is S.RUNNING and task.paused_at is None


def test_cancel_from_every_unfinished_state() -> None:
    for status in (T.PENDING, T.RUNNING, T.PAUSED, T.FAILED):
        step = S.PENDING if status is not T.FAILED else S.FAILED
        task, clock = build(status, step)
        task.cancel("no longer needed", at=clock())
        assert task.status is T.CANCELLED
        assert task.error == "no longer needed"
        assert task.finished_at == clock.now
        assert task.paused_at is None


def test_cancel_stops_the_clocks_of_active_steps() -> None:
    c = Clock()
    task = new_task(StepPlan("one"), StepPlan("two"), StepPlan("three"), clock=c)
    task.start_step(1, at=c(10))
    task.request_approval(2, "go?", at=c(10))
    task.cancel(at=c(10))
    assert task.step(1).finished_at == c.now
    assert task.step(2).finished_at == c.now
    assert task.step(3).finished_at is None
    assert task.step(1).active_ms(c.now + timedelta(hours=1)) == 20_000
    assert task.step(2).active_ms(c.now + timedelta(hours=1)) == 0


@pytest.mark.parametrize(("task_status", "step_status"), [k for k in SCENARIOS if k[0] in TERMINAL_TASK])
def test_finished_tasks_refuse_every_state_changing_command(
    task_status: TaskStatus, step_status: StepStatus
) -> None:
    task, clock = build(task_status, step_status)
    for order in (1, 2, 3):
        for cmd in (
            lambda o: task.start_step(o, at=clock()),
            lambda o: task.report_progress(o, 10, at=clock()),
            lambda o: task.complete_substep(o, 1, at=clock()),
            lambda o: task.complete_step(o, at=clock()),
            lambda o: task.fail_step(o, "x", at=clock()),
            lambda o: task.skip_step(o, at=clock()),
            lambda o: task.retry_step(o, at=clock()),
            lambda o: task.request_approval(o, "x", at=clock()),
            lambda o: task.approve(o, at=clock()),
            lambda o: task.reject(o, at=clock()),
        ):
            err = assert_rejected(task, IllegalTransition, lambda cmd=cmd, o=order: cmd(o))
            assert err.subject == "task"
            assert err.actual == task_status
    for cmd_name, call in TASK_COMMANDS.items():
        err = assert_rejected(task, IllegalTransition, lambda call=call: call(task, clock()))
        assert err.action == cmd_name


# ------------------------------------------------------------------------------------------------------
# Other rejections.
# ------------------------------------------------------------------------------------------------------

ORDERED_COMMANDS: dict[str, Callable[[Task, int], None]] = {
    "start": lambda t, o: t.start_step(o, at=BASE),
    "progress": lambda t, o: t.report_progress(o, 10, at=BASE),
    "substep": lambda t, o: t.complete_substep(o, 1, at=BASE),
    "complete": lambda t, o: t.complete_step(o, at=BASE),
    "fail": lambda t, o: t.fail_step(o, "boom", at=BASE),
    "skip": lambda t, o: t.skip_step(o, at=BASE),
    "retry": lambda t, o: t.retry_step(o, at=BASE),
    "request_approval": lambda t, o: t.request_approval(o, "go?", at=BASE),
    "approve": lambda t, o: t.approve(o, at=BASE),
    "reject": lambda t, o: t.reject(o, at=BASE),
    "log": lambda t, o: t.log("info", "hi", step=o, at=BASE),
}


@pytest.mark.parametrize("order", [0, -1, 4, 99])
@pytest.mark.parametrize("cmd", list(ORDERED_COMMANDS))
@pytest.mark.parametrize("state", [(T.PENDING, S.PENDING), (T.RUNNING, S.RUNNING), (T.CANCELLED, S.PENDING)])
def test_unknown_step_order(cmd: str, order: int, state: tuple[TaskStatus, StepStatus]) -> None:
    task, _ = build(*state)
    err = assert_rejected(task, UnknownStep, lambda: ORDERED_COMMANDS[cmd](task, order))
    assert str(order) in str(err)


def test_step_query_accepts_one_based_orders_only() -> None:
    task = new_task()
    assert [task.step(i).name for i in (1, 2, 3)] == ["extract", "load", "check"]
    with pytest.raises(UnknownStep):
        task.step(0)
    with pytest.raises(UnknownStep):
        task.step(4)


@pytest.mark.parametrize("n", [0, -1, 3, 10])
def test_unknown_substep(n: int) -> None:
    task, clock = build(T.RUNNING, S.RUNNING)
    err = assert_rejected(task, UnknownStep, lambda: task.complete_substep(1, n, at=clock()))
    assert "substep" in str(err)


def test_substep_of_a_step_without_substeps_is_unknown() -> None:
    task, clock = build(T.RUNNING, S.PENDING)  # step 2 is running and has no substeps
    assert_rejected(task, UnknownStep, lambda: task.complete_substep(2, 1, at=clock()))


def test_substep_done_twice_is_an_illegal_transition() -> None:
    task, clock = build(T.RUNNING, S.RUNNING)
    task.complete_substep(1, 2, at=clock())
    task.collect_events()
    err = assert_rejected(task, IllegalTransition, lambda: task.complete_substep(1, 2, at=clock()))
    assert err.subject == "substep 2 of step 1"
    assert err.expected == ("not done",)
    assert err.actual == "done"
    task.complete_substep(1, 1, at=clock())
    assert task.step(1).done == [True, True]


@pytest.mark.parametrize("percent", [-0.001, -1, 100.0001, 101, 1e9, math.inf, -math.inf, math.nan])
def test_percent_out_of_range(percent: float) -> None:
    task, clock = build(T.RUNNING, S.RUNNING)
    err = assert_rejected(task, InvalidValue, lambda: task.report_progress(1, percent, at=clock()))
    assert err.field == "percent"


@pytest.mark.parametrize("percent", [math.nan, 150])
def test_percent_is_checked_before_the_state(percent: float) -> None:
    task, clock = build(T.PENDING, S.PENDING)
    assert_rejected(task, InvalidValue, lambda: task.report_progress(1, percent, at=clock()))


@pytest.mark.parametrize("percent", [0, 0.0, 33.3, 100, 100.0])
def test_percent_bounds_are_inclusive(percent: float) -> None:
    task, clock = build(T.RUNNING, S.RUNNING)
    task.report_progress(1, percent, at=clock())
    assert task.step(1).reported == float(percent)
    assert task.step(1).status is S.RUNNING  # reporting 100 does not complete the step


def test_progress_can_go_back_down() -> None:
    task, clock = build(T.RUNNING, S.RUNNING)
    task.report_progress(1, 80, at=clock())
    task.report_progress(1, 20, at=clock())
    assert task.step(1).reported == 20


@pytest.mark.parametrize("title", ["", "   ", "\t\n"])
def test_empty_title(title: str) -> None:
    with pytest.raises(InvalidValue) as info:
        Task.plan(title, "me", [StepPlan("one")], at=BASE)
    assert info.value.field == "title"


def test_title_is_stripped() -> None:
    task = Task.plan("  Build  ", "me", [StepPlan("one")], at=BASE)
    assert task.title == "Build"


def test_empty_owner() -> None:
    with pytest.raises(InvalidValue) as info:
        Task.plan("t", "", [StepPlan("one")], at=BASE)
    assert info.value.field == "owner"


def test_empty_plan() -> None:
    with pytest.raises(InvalidValue) as info:
        Task.plan("t", "me", [], at=BASE)
    assert info.value.field == "steps"


@pytest.mark.parametrize("name", ["", "  "])
def test_empty_step_name(name: str) -> None:
    with pytest.raises(InvalidValue) as info:
        Task.plan("t", "me", [StepPlan("one"), StepPlan(name)], at=BASE)
    assert info.value.field == "steps[1].name"


@pytest.mark.parametrize("weight", [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf])
def test_non_positive_or_non_finite_weight(weight: float) -> None:
    with pytest.raises(InvalidValue) as info:
        Task.plan("t", "me", [StepPlan("one", weight=weight)], at=BASE)
    assert info.value.field == "steps[0].weight"


def test_bad_complexity_and_tables() -> None:
    with pytest.raises(InvalidValue):
        Task.plan("t", "me", [StepPlan("one")], tables=-1, at=BASE)
    with pytest.raises(InvalidValue):
        Task.plan("t", "me", [StepPlan("one")], complexity="huge", at=BASE)


@pytest.mark.parametrize(
    ("tables", "complexity", "expected"),
    [
        (None, None, None),
        (0, None, "simple"),
        (2, None, "simple"),
        (3, None, "medium"),
        (5, None, "medium"),
        (6, None, "complex"),
        (40, None, "complex"),
        (1, "complex", "complex"),
    ],
)
def test_complexity_class(tables: int | None, complexity: str | None, expected: str | None) -> None:
    task = Task.plan("t", "me", [StepPlan("one")], tables=tables, complexity=complexity, at=BASE)
    assert task.complexity == expected
    assert task.tables == tables


@pytest.mark.parametrize("error", ["", " ", "\n"])
def test_empty_error_message(error: str) -> None:
    task, clock = build(T.RUNNING, S.RUNNING)
    err = assert_rejected(task, InvalidValue, lambda: task.fail_step(1, error, at=clock()))
    assert err.field == "error"


@pytest.mark.parametrize("message", ["", "  "])
def test_empty_approval_message(message: str) -> None:
    task, clock = build(T.RUNNING, S.RUNNING)
    err = assert_rejected(task, InvalidValue, lambda: task.request_approval(1, message, at=clock()))
    assert err.field == "message"


@pytest.mark.parametrize("level", ["", "INFO", "fatal", "warn", "critical"])
def test_bad_log_level(level: str) -> None:
    task, clock = build(T.RUNNING, S.RUNNING)
    err = assert_rejected(task, InvalidValue, lambda: task.log(level, "hello", at=clock()))
    assert err.field == "level"


def test_empty_log_message() -> None:
    task, clock = build(T.RUNNING, S.RUNNING)
    err = assert_rejected(task, InvalidValue, lambda: task.log("info", "", at=clock()))
    assert err.field == "message"


@pytest.mark.parametrize("level", LOG_LEVELS)
def test_every_log_level_is_accepted(level: str) -> None:
    task, clock = build(T.RUNNING, S.RUNNING)
    task.log(level, "hello", at=clock())
    task.log(level, "about step 2", step=2, at=clock())
    events = task.collect_events()
    assert [type(e).__name__ for e in events] == ["Logged", "Logged"]


def test_illegal_transition_message() -> None:
    err = IllegalTransition("step 2", "complete", ["running"], "pending")
    assert str(err) == "cannot complete step 2: expected running, actual pending"
    err = IllegalTransition("task", "skip", [T.PENDING, T.RUNNING], T.PAUSED)
    assert str(err) == "cannot skip task: expected pending or running, actual paused"


# ------------------------------------------------------------------------------------------------------
# Idempotency keys.
# ------------------------------------------------------------------------------------------------------


def test_replayed_is_false_for_a_new_key() -> None:
    task = new_task()
    assert task.replayed("k1", "fp") is False


def test_replayed_after_an_event_carried_the_key() -> None:
    c = Clock()
    task = new_task(clock=c)
    task.start_step(1, idem="k1:fp-a", at=c())
    assert task.replayed("k1", "fp-a") is True
    assert task.replayed("k2", "fp-a") is False
    with pytest.raises(IdempotencyKeyReused):
        task.replayed("k1", "fp-b")


def test_replayed_with_a_key_given_at_creation() -> None:
    task = new_task(idem="create-1:abc")
    assert task.replayed("create-1", "abc") is True
    with pytest.raises(IdempotencyKeyReused):
        task.replayed("create-1", "abd")
    assert task.seen_keys["create-1"] == ["abc", 1]


def test_idempotency_key_remembers_the_version_of_its_event() -> None:
    c = Clock()
    task = new_task(clock=c)
    task.start_step(1, idem="a:1", at=c())
    task.report_progress(1, 5, idem="b:2", at=c())
    task.pause(idem="c:3", at=c())
    task.log("info", "x", idem="d:4", at=c())
    assert task.seen_keys == {"a": ["1", 2], "b": ["2", 3], "c": ["3", 4], "d": ["4", 5]}


def test_key_containing_colons_splits_on_the_last_one() -> None:
    c = Clock()
    task = new_task(clock=c)
    task.start_step(1, idem="tenant:req:42:deadbeef", at=c())
    assert task.replayed("tenant:req:42", "deadbeef") is True


def test_a_rejected_command_does_not_remember_its_key() -> None:
    task, clock = build(T.PENDING, S.PENDING)
    assert_rejected(task, IllegalTransition, lambda: task.complete_step(1, idem="k:fp", at=clock()))
    assert task.replayed("k", "fp") is False


def test_task_completion_remembers_the_key_of_the_completing_command() -> None:
    c = Clock()
    task = new_task(StepPlan("one"), clock=c)
    task.start_step(1, at=c())
    task.complete_step(1, idem="done:x", at=c())
    assert task.status is T.COMPLETED
    assert task.replayed("done", "x") is True


def test_only_the_most_recent_keys_are_remembered() -> None:
    c = Clock()
    task = new_task(StepPlan("one"), clock=c)
    for i in range(MAX_REMEMBERED_KEYS + 1):
        task.log("info", f"line {i}", idem=f"key-{i}:fp", at=c())
    assert len(task.seen_keys) == MAX_REMEMBERED_KEYS
    assert task.replayed("key-0", "fp") is False
    assert task.replayed("key-1", "fp") is True
    assert task.replayed(f"key-{MAX_REMEMBERED_KEYS}", "fp") is True


def test_idempotency_keys_survive_replay() -> None:
    c = Clock()
    task = new_task(clock=c, idem="create:1")
    task.start_step(1, idem="start:2", at=c())
    copy_ = replay(task.collect_events())
    assert copy_.replayed("create", "1") is True
    assert copy_.replayed("start", "2") is True
    with pytest.raises(IdempotencyKeyReused):
        copy_.replayed("start", "3")


# ------------------------------------------------------------------------------------------------------
# Replay == live, and invariants under random command sequences.
# ------------------------------------------------------------------------------------------------------


def replay(events: Any) -> Task:
    task: Any = None
    for e in events:
        task = e.mutate(task)
    assert isinstance(task, Task)
    return task


def test_replay_of_a_full_story_equals_live() -> None:
    c = Clock()
    task = new_task(
        StepPlan("extract", weight=2, substeps=("a", "b", "c")),
        StepPlan("approve", requires_approval=True),
        StepPlan("load", weight=3),
        clock=c,
    )
    task.start_step(1, at=c())
    task.complete_substep(1, 2, at=c())
    task.report_progress(1, 20, at=c())
    task.pause(at=c(30))
    task.resume(at=c(60))
    task.complete_step(1, at=c())
    task.start_step(2, at=c())
    task.approve(2, "ok", at=c(120))
    task.complete_step(2, at=c())
    task.start_step(3, at=c())
    task.fail_step(3, "timeout", at=c())
    task.retry_step(3, at=c(5))
    task.log("warning", "slow", step=3, at=c())
    task.complete_step(3, result="42 rows", at=c(7))
    task.mark_restarted("t-2", at=c())
    events = task.collect_events()
    copy_ = replay(events)
    assert progress_view(copy_) == progress_view(task)
    assert copy_ == task
    assert copy_.version == len(events) == task.version


COMMAND_NAMES = [
    "start",
    "progress",
    "substep",
    "complete",
    "fail",
    "skip",
    "retry",
    "request_approval",
    "approve",
    "reject",
    "pause",
    "resume",
    "cancel",
    "restart",
    "log",
]
STATE_CHANGING = set(COMMAND_NAMES) - {"log", "restart"}


@dataclass(frozen=True)
class Command:
    name: str
    order: int
    number: float
    text: str
    gap: int

    def apply(self, task: Task, at: datetime) -> None:
        o, n, text = self.order, self.number, self.text
        match self.name:
            case "start":
                task.start_step(o, at=at)
            case "progress":
                task.report_progress(o, n, at=at)
            case "substep":
                task.complete_substep(o, int(n) if math.isfinite(n) else 0, at=at)
            case "complete":
                task.complete_step(o, result=text or None, at=at)
            case "fail":
                task.fail_step(o, text, at=at)
            case "skip":
                task.skip_step(o, reason=text or None, at=at)
            case "retry":
                task.retry_step(o, at=at)
            case "request_approval":
                task.request_approval(o, text, at=at)
            case "approve":
                task.approve(o, comment=text or None, at=at)
            case "reject":
                task.reject(o, comment=text or None, at=at)
            case "pause":
                task.pause(at=at)
            case "resume":
                task.resume(at=at)
            case "cancel":
                task.cancel(reason=text or None, at=at)
            case "restart":
                task.mark_restarted(f"restart-{o}", at=at)
            case "log":
                level = LOG_LEVELS[o % len(LOG_LEVELS)] if o >= 0 else "fatal"
                task.log(level, text, step=o if o % 2 else None, at=at)
            case _:  # pragma: no cover
                raise AssertionError(self.name)


step_plans = st.builds(
    StepPlan,
    name=st.sampled_from(["extract", "transform", "load", "deploy"]),
    weight=st.one_of(st.just(1.0), st.floats(min_value=0.01, max_value=100)),
    substeps=st.lists(st.sampled_from(["a", "b", "c"]), max_size=4).map(tuple),
    requires_approval=st.sampled_from([False, False, True]),
)

# Commands are drawn with weights so that random scripts get deep into the state machine: many starts,
# completions and approvals, few cancels (a cancel ends the story).
WEIGHTED_NAMES = (
    ["start"] * 5
    + ["progress", "substep", "complete", "approve"] * 3
    + ["fail", "skip", "retry", "request_approval", "pause", "resume"] * 2
    + ["reject", "cancel", "restart", "log"]
)
assert set(WEIGHTED_NAMES) == set(COMMAND_NAMES)


NUMBERS = st.one_of(
    st.integers(min_value=0, max_value=5).map(float),
    st.floats(min_value=-5, max_value=105),
    st.sampled_from([0.0, 100.0, math.nan, math.inf]),
)
TEXTS = st.sampled_from(["boom", "boom", "boom", "ok", "", "  "])
GAPS = st.integers(min_value=0, max_value=3600)


@functools.cache
def random_commands(n: int) -> st.SearchStrategy[Command]:
    """Any command, mostly about the plan's n steps (sometimes about unknown ones), with any arguments."""
    orders = [*range(1, n + 1)] * 4 + [0, -1, n + 1]
    return st.builds(
        Command,
        name=st.sampled_from(WEIGHTED_NAMES),
        order=st.sampled_from(orders),
        number=NUMBERS,
        text=TEXTS,
        gap=GAPS,
    )


@st.composite
def stories(
    draw: st.DrawFn, max_steps: int = 4, max_commands: int = 40
) -> tuple[list[StepPlan], list[Command]]:
    """A plan and a script of random commands."""
    plans = draw(st.lists(step_plans, min_size=1, max_size=max_steps))
    script = draw(st.lists(random_commands(len(plans)), min_size=max_commands // 4, max_size=max_commands))
    return plans, script


GUIDED_ARGS = st.tuples(st.one_of(st.integers(min_value=1, max_value=4).map(float), NUMBERS), TEXTS, GAPS)


def legal_moves(task: Task) -> list[tuple[str, int]]:
    """(command, step order) pairs the state tables allow now; cancel is left to the random commands."""
    moves = [
        (name, step.order)
        for name, allowed in STEP_FROM.items()
        if task.status in TASK_FROM[name]
        for step in task.steps
        if step.status in allowed
    ]
    moves += [(name, 1) for name in ("pause", "resume") if task.status in TASK_FROM[name]]
    return moves or [("log", 1)]


def guided_command(data: st.DataObject, task: Task) -> Command:
    """Three times in four a command the tables allow (its arguments may still be invalid), else any."""
    if data.draw(st.integers(min_value=0, max_value=3)) == 0:
        return data.draw(random_commands(len(task.steps)))
    moves = legal_moves(task)
    name = data.draw(st.sampled_from(sorted({m[0] for m in moves})))  # by command first: skip is often legal
    order = data.draw(st.sampled_from([o for m, o in moves if m == name]))
    number, text, gap = data.draw(GUIDED_ARGS)
    return Command(name, order, number, text, gap)


def check_invariants(task: Task) -> None:
    n = len(task.steps)
    pct = task_percent(task)
    # Within float noise: see test_task_percent_never_exceeds_100 in test_progress_maths.py.
    assert -1e-9 <= pct <= 100.0 + 1e-9
    for step in task.steps:
        assert 0.0 <= step.percent <= 100.0
        assert 0.0 <= step.reported <= 100.0
        assert len(step.done) == len(step.substeps)
    all_finished = all(s.status in FINISHED_STEP for s in task.steps)
    assert (task.status is T.COMPLETED) == all_finished
    if task.status is T.COMPLETED:
        assert pct == pytest.approx(100.0)
    any_failed = any(s.status is S.FAILED for s in task.steps)
    if task.status is T.FAILED:
        assert any_failed
        assert task.error is not None
    if any_failed:
        assert task.status in (T.FAILED, T.CANCELLED)
    if task.status is T.PENDING:
        assert all(s.status is S.PENDING for s in task.steps)
        assert task.started_at is None
    elif task.status is not T.CANCELLED:
        assert task.started_at is not None
    if task.status is T.PAUSED:
        assert S.RUNNING not in statuses(task)
    view = progress_view(task)
    assert 0 <= view["progress"] <= 100
    assert 1 <= view["current_step"] <= n
    assert view["total_steps"] == n
    for step_view in view["steps"]:
        assert 0 <= step_view["progress"] <= 100
        assert step_view["duration_ms"] is None or step_view["duration_ms"] >= 0
    assert current_step(task) == view["current_step"]
    assert whole(pct) == view["progress"]


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plans=st.lists(step_plans, min_size=1, max_size=4), data=st.data())
def test_random_command_sequences_keep_the_invariants_and_replay_equals_live(
    plans: list[StepPlan], data: st.DataObject
) -> None:
    clock = Clock()
    task = Task.plan("Random", "hypothesis", plans, at=clock.now)
    events = list(task.collect_events())
    replica = replay(events)
    check_invariants(task)
    after_the_end = 0
    for _ in range(data.draw(st.integers(min_value=0, max_value=40), label="length")):
        if task.status in TERMINAL_TASK:
            after_the_end += 1
            if after_the_end > 5:  # a few more commands on a finished task, then stop
                break
        cmd = guided_command(data, task)
        at = clock(cmd.gap)
        was = task.status
        before = snapshot(task)
        try:
            cmd.apply(task, at)
        except DomainError:
            # A refused command changed nothing and triggered nothing.
            assert task.collect_events() == []
            assert task.__dict__ == before
            continue
        finally:
            check_invariants(task)
        new = task.collect_events()
        assert len(new) >= 1
        assert was not in TERMINAL_TASK or cmd.name not in STATE_CHANGING, (
            f"{cmd.name} was accepted by a {was} task"
        )
        if was in TERMINAL_TASK:
            assert task.status is was
        events.extend(new)
        for e in new:
            replica = e.mutate(replica)
        assert task.version == len(events)
        assert progress_view(replica) == progress_view(task)
    assert progress_view(replay(events)) == progress_view(task)
    assert replay(events) == task


def _commands_of(task: Task) -> Iterator[Callable[[], None]]:
    at = task.modified_on + timedelta(seconds=1)
    for order in range(1, len(task.steps) + 1):
        yield lambda o=order: task.start_step(o, at=at)
        yield lambda o=order: task.report_progress(o, 1, at=at)
        yield lambda o=order: task.complete_substep(o, 1, at=at)
        yield lambda o=order: task.complete_step(o, at=at)
        yield lambda o=order: task.fail_step(o, "x", at=at)
        yield lambda o=order: task.skip_step(o, at=at)
        yield lambda o=order: task.retry_step(o, at=at)
        yield lambda o=order: task.request_approval(o, "x", at=at)
        yield lambda o=order: task.approve(o, at=at)
        yield lambda o=order: task.reject(o, at=at)
    yield lambda: task.pause(at=at)
    yield lambda: task.resume(at=at)
    yield lambda: task.cancel(at=at)


@settings(max_examples=100, deadline=None, database=None)
@given(story=stories(max_steps=3, max_commands=30))
def test_terminal_tasks_refuse_every_state_changing_command(
    story: tuple[list[StepPlan], list[Command]],
) -> None:
    """Drive a random task, then cancel it (unless it completed): it takes nothing but log and restart."""
    plans, script = story
    clock = Clock()
    task = Task.plan("Random", "hypothesis", plans, at=clock.now)
    for cmd in script:
        with contextlib.suppress(DomainError):
            cmd.apply(task, clock(cmd.gap))
    if task.status not in TERMINAL_TASK:
        task.cancel(at=clock())
    task.collect_events()
    for call in _commands_of(task):
        assert_rejected(task, IllegalTransition, call)
    task.log("info", "still here", at=clock())
    if task.restarted_as is None:
        task.mark_restarted("t-next", at=clock())
        assert len(task.collect_events()) == 2
    else:  # the script restarted it already: once is all
        assert len(task.collect_events()) == 1
        assert_rejected(task, AlreadyRestarted, lambda: task.mark_restarted("t-next", at=clock()))
