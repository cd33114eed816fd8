"""Progress maths: step and task percents, whole(), current_step, durations and the progress JSON.

Pure unit tests: no I/O, explicit timestamps from a fixed base so that durations are exact.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.progress import current_step, iso, needs_attention, progress_view, step_view, task_percent, whole
from domain.state import StepStatus, TaskStatus
from domain.task import Step, StepPlan, Task

S = StepStatus
T = TaskStatus
T0 = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def plan(*steps: StepPlan, title: str = "Build the CRM") -> Task:
    return Task.plan(title, "agent-7", list(steps), at=T0)


def plain(n: int) -> list[StepPlan]:
    return [StepPlan(f"step {i}") for i in range(1, n + 1)]


# ------------------------------------------------------------------------------------------------------
# Step percent.
# ------------------------------------------------------------------------------------------------------


def test_a_new_step_is_at_zero() -> None:
    task = plan(StepPlan("one", substeps=("a", "b")))
    assert task.step(1).percent == 0.0
    assert task_percent(task) == 0.0


def test_reported_percent_without_substeps() -> None:
    task = plan(StepPlan("one"))
    task.start_step(1, at=at(1))
    task.report_progress(1, 37.5, at=at(2))
    assert task.step(1).percent == 37.5


@pytest.mark.parametrize(
    ("substeps", "done", "reported", "expected"),
    [
        (4, 1, 0, 25.0),
        (4, 1, 10, 25.0),  # substeps win when they are ahead
        (4, 2, 65, 65.0),  # the report wins when it is ahead
        (4, 2, 50, 50.0),
        (3, 1, 0, 100 / 3),
        (3, 3, 0, 100.0),  # every substep done reads 100 but the step is still running
        (2, 0, 99.9, 99.9),
    ],
)
def test_step_percent_is_the_max_of_reported_and_substeps(
    substeps: int, done: int, reported: float, expected: float
) -> None:
    task = plan(StepPlan("one", substeps=tuple(f"s{i}" for i in range(substeps))))
    task.start_step(1, at=at(1))
    for n in range(1, done + 1):
        task.complete_substep(1, n, at=at(1 + n))
    task.report_progress(1, reported, at=at(10))
    assert task.step(1).percent == pytest.approx(expected)
    assert task.step(1).status is S.RUNNING


def test_substeps_need_not_be_done_in_order() -> None:
    task = plan(StepPlan("one", substeps=("a", "b", "c", "d")))
    task.start_step(1, at=at(1))
    task.complete_substep(1, 4, at=at(2))
    task.complete_substep(1, 2, at=at(3))
    assert task.step(1).done == [False, True, False, True]
    assert task.step(1).percent == 50.0


def test_completed_step_is_100_whatever_it_reported() -> None:
    task = plan(StepPlan("one", substeps=("a", "b", "c")), StepPlan("two"))
    task.start_step(1, at=at(1))
    task.report_progress(1, 12, at=at(2))
    task.complete_step(1, at=at(3))
    assert task.step(1).percent == 100.0
    assert task.step(1).reported == 100.0
    assert task.step(1).done == [False, False, False]


@pytest.mark.parametrize("started", [False, True])
def test_skipped_step_is_100(started: bool) -> None:
    task = plan(StepPlan("one", substeps=("a", "b")), StepPlan("two"))
    if started:
        task.start_step(1, at=at(1))
        task.report_progress(1, 10, at=at(2))
    task.skip_step(1, at=at(3))
    assert task.step(1).percent == 100.0
    assert task_percent(task) == 50.0


def test_failed_step_keeps_its_percent_and_retry_restarts_from_its_substeps() -> None:
    task = plan(StepPlan("one", substeps=("a", "b", "c", "d")))
    task.start_step(1, at=at(1))
    task.complete_substep(1, 1, at=at(2))
    task.report_progress(1, 60, at=at(3))
    task.fail_step(1, "boom", at=at(4))
    assert task.step(1).percent == 60.0
    task.retry_step(1, at=at(5))
    assert task.step(1).percent == 25.0  # the report is reset, the done substeps are kept


@pytest.mark.parametrize(
    ("reported", "done", "status", "expected"),
    [
        (0.0, [], S.PENDING, 0.0),
        (40.0, [], S.RUNNING, 40.0),
        (10.0, [True, False], S.RUNNING, 50.0),
        (80.0, [True, False], S.PAUSED, 80.0),
        (30.0, [True, True, False], S.FAILED, 200 / 3),
        (0.0, [False], S.COMPLETED, 100.0),
        (5.0, [False, False], S.SKIPPED, 100.0),
    ],
)
def test_step_percent_as_a_pure_function(
    reported: float, done: list[bool], status: StepStatus, expected: float
) -> None:
    step = Step(
        order=1,
        name="x",
        substeps=[f"s{i}" for i in range(len(done))],
        done=done,
        reported=reported,
        status=status,
    )
    assert step.percent == pytest.approx(expected)


@settings(max_examples=200, deadline=None, database=None)
@given(
    n=st.integers(min_value=1, max_value=8),
    data=st.data(),
    reported=st.floats(min_value=0, max_value=100),
)
def test_step_percent_property(n: int, data: st.DataObject, reported: float) -> None:
    done = data.draw(st.sets(st.integers(min_value=1, max_value=n)))
    task = plan(StepPlan("one", substeps=tuple(f"s{i}" for i in range(n))))
    task.start_step(1, at=at(1))
    for k in sorted(done):
        task.complete_substep(1, k, at=at(1 + k))
    task.report_progress(1, reported, at=at(100))
    percent = task.step(1).percent
    assert percent == max(reported, 100.0 * len(done) / n)
    assert 0.0 <= percent <= 100.0


# ------------------------------------------------------------------------------------------------------
# Task percent: the weighted mean of the steps.
# ------------------------------------------------------------------------------------------------------


def test_task_percent_equal_weights() -> None:
    task = plan(*plain(4))
    task.start_step(1, at=at(1))
    task.complete_step(1, at=at(2))
    task.start_step(2, at=at(3))
    task.report_progress(2, 50, at=at(4))
    assert task_percent(task) == pytest.approx((100 + 50) / 4)


def test_task_percent_is_weighted() -> None:
    task = plan(StepPlan("light", weight=1), StepPlan("heavy", weight=3))
    task.start_step(1, at=at(1))
    task.complete_step(1, at=at(2))
    assert task_percent(task) == pytest.approx(25.0)
    task.start_step(2, at=at(3))
    task.report_progress(2, 50, at=at(4))
    assert task_percent(task) == pytest.approx((1 * 100 + 3 * 50) / 4)


def test_task_percent_with_fractional_weights() -> None:
    task = plan(StepPlan("a", weight=0.5), StepPlan("b", weight=0.25), StepPlan("c", weight=0.25))
    task.skip_step(2, at=at(1))
    task.start_step(1, at=at(2))
    task.report_progress(1, 10, at=at(3))
    assert task_percent(task) == pytest.approx(0.5 * 10 + 0.25 * 100)


def test_completed_task_is_at_100() -> None:
    task = plan(StepPlan("a", weight=7), StepPlan("b", weight=0.1))
    task.start_step(1, at=at(1))
    task.complete_step(1, at=at(2))
    task.skip_step(2, at=at(3))
    assert task.status is T.COMPLETED
    assert task_percent(task) == pytest.approx(100.0)
    assert progress_view(task)["progress"] == 100


@settings(max_examples=200, deadline=None, database=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0.01, max_value=1000),
            st.sampled_from(["pending", "report", "complete", "skip"]),
            st.floats(min_value=0, max_value=100),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_task_percent_is_the_weighted_mean(steps: list[tuple[float, str, float]]) -> None:
    task = plan(*[StepPlan(f"s{i}", weight=w) for i, (w, _, _) in enumerate(steps)])
    expected_parts = []
    for order, (weight, what, percent) in enumerate(steps, start=1):
        if what == "report":
            task.start_step(order, at=at(order))
            task.report_progress(order, percent, at=at(order))
            expected_parts.append((weight, percent))
        elif what == "complete":
            task.start_step(order, at=at(order))
            task.complete_step(order, at=at(order))
            expected_parts.append((weight, 100.0))
        elif what == "skip":
            task.skip_step(order, at=at(order))
            expected_parts.append((weight, 100.0))
        else:
            expected_parts.append((weight, 0.0))
    expected = sum(w * p for w, p in expected_parts) / sum(w for w, _ in expected_parts)
    got = task_percent(task)
    assert got == pytest.approx(expected)
    lo = min(p for _, p in expected_parts)
    hi = max(p for _, p in expected_parts)
    assert lo - 1e-9 <= got <= hi + 1e-9
    assert 0 <= whole(got) <= 100


@pytest.mark.parametrize("weights", [(0.1, 0.2), (0.1, 0.7), (82.3895288417613,), (1.0, 1.0, 1.0)])
def test_a_completed_task_reads_100(weights: tuple[float, ...]) -> None:
    task = plan(*[StepPlan(f"s{i}", weight=w) for i, w in enumerate(weights)])
    for order in range(1, len(weights) + 1):
        task.start_step(order, at=at(order))
        task.complete_step(order, at=at(order))
    assert task.status is T.COMPLETED
    assert task_percent(task) == pytest.approx(100.0)
    assert progress_view(task)["progress"] == 100


def test_task_percent_never_exceeds_100() -> None:
    task = plan(StepPlan("a", weight=0.1), StepPlan("b", weight=0.7))
    task.skip_step(1, at=at(1))
    task.skip_step(2, at=at(2))
    assert task_percent(task) <= 100.0


# ------------------------------------------------------------------------------------------------------
# whole(): rounded down and clamped.
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "expected"),
    [
        (0.0, 0),
        (0.4, 0),
        (41.25, 41),
        (65.0, 65),
        (99.0, 99),
        (99.6, 99),  # never reads 100 before it is
        (99.999999, 99),
        (100.0, 100),
        (100.5, 100),
        (1e9, 100),
        (-0.5, 0),
        (-100.0, 0),
        (0.58 * 100, 58),  # 57.99999999999999: float noise does not lose a point
        (100 - 1e-12, 100),
        (1 / 3 * 300, 100),
    ],
)
def test_whole(percent: float, expected: int) -> None:
    result = whole(percent)
    assert result == expected
    assert type(result) is int


@settings(max_examples=200, deadline=None, database=None)
@given(st.floats(min_value=-1e6, max_value=1e6))
def test_whole_property(percent: float) -> None:
    result = whole(percent)
    assert 0 <= result <= 100
    if 0 <= percent <= 100:
        assert percent - 1 < result <= percent + 1e-9
    if percent < 0:
        assert result == 0
    if percent >= 100:
        assert result == 100


# ------------------------------------------------------------------------------------------------------
# current_step: failed, then approval, then running, then paused, then first pending, else the last.
# ------------------------------------------------------------------------------------------------------


def with_statuses(*statuses: StepStatus) -> Task:
    """A task whose steps are set directly to the given statuses (current_step is a pure function)."""
    task = plan(*plain(len(statuses)))
    for step, status in zip(task.steps, statuses, strict=True):
        step.status = status
    return task


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ((S.PENDING, S.PENDING, S.PENDING), 1),
        ((S.COMPLETED, S.PENDING, S.PENDING), 2),
        ((S.COMPLETED, S.SKIPPED, S.PENDING), 3),
        ((S.COMPLETED, S.COMPLETED, S.COMPLETED), 3),
        ((S.SKIPPED, S.SKIPPED), 2),
        ((S.PENDING, S.RUNNING, S.PENDING), 2),  # running beats an earlier pending
        ((S.PENDING, S.PAUSED, S.PENDING), 2),  # paused beats an earlier pending
        ((S.PENDING, S.PAUSED, S.RUNNING), 3),  # running beats paused
        ((S.RUNNING, S.RUNNING), 1),  # the first of several running steps
        ((S.RUNNING, S.APPROVAL), 2),  # approval beats running
        ((S.PAUSED, S.APPROVAL), 2),
        ((S.APPROVAL, S.FAILED), 2),  # failed beats approval
        ((S.RUNNING, S.PAUSED, S.APPROVAL, S.FAILED), 4),
        ((S.FAILED, S.APPROVAL, S.RUNNING, S.PAUSED), 1),
        ((S.COMPLETED, S.FAILED, S.PENDING), 2),
        ((S.COMPLETED, S.PENDING, S.FAILED), 3),
        ((S.PENDING,), 1),
        ((S.COMPLETED,), 1),
    ],
)
def test_current_step_preference(statuses: tuple[StepStatus, ...], expected: int) -> None:
    assert current_step(with_statuses(*statuses)) == expected


def test_current_step_follows_a_real_task() -> None:
    task = plan(*plain(4))
    assert current_step(task) == 1
    task.start_step(1, at=at(1))
    task.request_approval(3, "go?", at=at(2))
    assert current_step(task) == 3  # the step waiting for a person comes first
    task.start_step(4, at=at(3))
    task.fail_step(4, "boom", at=at(4))
    assert current_step(task) == 4  # a failure comes before anything else
    task.skip_step(4, at=at(5))
    assert current_step(task) == 3
    task.approve(3, at=at(6))
    assert current_step(task) == 1  # first running step
    task.pause(at=at(7))
    assert current_step(task) == 1  # first paused step
    task.resume(at=at(8))
    task.complete_step(1, at=at(9))
    task.complete_step(3, at=at(10))
    assert current_step(task) == 2  # the next pending
    task.skip_step(2, at=at(11))
    assert task.status is T.COMPLETED
    assert current_step(task) == 4  # all done: the last step


def test_needs_attention() -> None:
    assert not needs_attention(with_statuses(S.RUNNING, S.PAUSED, S.PENDING, S.COMPLETED, S.SKIPPED))
    assert needs_attention(with_statuses(S.RUNNING, S.APPROVAL))
    assert needs_attention(with_statuses(S.FAILED, S.COMPLETED))


# ------------------------------------------------------------------------------------------------------
# Durations: work time only.
# ------------------------------------------------------------------------------------------------------


def duration(task: Task, order: int) -> int | None:
    value = progress_view(task)["steps"][order - 1]["duration_ms"]
    assert value is None or isinstance(value, int)
    return value


def test_plain_duration() -> None:
    task = plan(*plain(2))
    task.start_step(1, at=at(10))
    task.complete_step(1, at=at(42.5))
    assert duration(task, 1) == 32_500


def test_duration_excludes_paused_time() -> None:
    task = plan(*plain(2))
    task.start_step(1, at=at(0))
    task.pause(at=at(10))
    task.resume(at=at(30))
    task.pause(at=at(35))
    task.resume(at=at(40))
    task.complete_step(1, at=at(50))
    assert duration(task, 1) == (50 - 20 - 5) * 1000
    assert task.step(1).held_ms == 25_000


def test_duration_excludes_the_wait_for_a_required_approval() -> None:
    task = plan(StepPlan("deploy", requires_approval=True), StepPlan("after"))
    task.start_step(1, at=at(0))
    task.approve(1, at=at(60))
    task.complete_step(1, at=at(100))
    assert duration(task, 1) == 40_000


def test_duration_excludes_a_requested_approval_of_a_running_step() -> None:
    task = plan(*plain(2))
    task.start_step(1, at=at(0))
    task.request_approval(1, "continue?", at=at(10))
    task.approve(1, at=at(25))
    task.complete_step(1, at=at(40))
    assert duration(task, 1) == 25_000


def test_duration_excludes_approval_and_pause_overlapping() -> None:
    task = plan(StepPlan("deploy", requires_approval=True), StepPlan("after"))
    task.start_step(1, at=at(0))  # waits for approval from 0
    task.pause(at=at(5))
    task.approve(1, at=at(10))  # approved while paused: stays held
    assert task.step(1).status is S.PAUSED
    task.resume(at=at(20))
    task.complete_step(1, at=at(30))
    assert duration(task, 1) == 10_000


def test_duration_of_a_failed_step() -> None:
    task = plan(*plain(2))
    task.start_step(1, at=at(0))
    task.pause(at=at(2))
    task.resume(at=at(5))
    task.fail_step(1, "boom", at=at(10))
    assert duration(task, 1) == 7_000


def test_retried_step_counts_only_the_retry() -> None:
    task = plan(*plain(2))
    task.start_step(1, at=at(0))
    task.pause(at=at(2))
    task.resume(at=at(5))
    task.fail_step(1, "boom", at=at(10))
    task.retry_step(1, at=at(100))
    assert task.step(1).started_at == at(100)
    assert task.step(1).held_ms == 0
    assert duration(task, 1) is None  # running again: no duration until it finishes
    task.pause(at=at(110))
    task.resume(at=at(115))
    task.complete_step(1, at=at(130))
    assert duration(task, 1) == (30 - 5) * 1000
    assert task.step(1).attempts == 2


def test_retried_after_reject_counts_only_the_retry() -> None:
    task = plan(StepPlan("deploy", requires_approval=True))
    task.start_step(1, at=at(0))
    task.reject(1, "not now", at=at(50))
    assert duration(task, 1) == 0  # it never worked: it waited for approval, then was rejected
    task.retry_step(1, at=at(1000))
    assert task.step(1).status is S.APPROVAL  # rejected, so a retry asks for approval again
    task.approve(1, at=at(1100))
    task.complete_step(1, at=at(1112))
    assert duration(task, 1) == 12_000


def test_skipped_running_step_has_a_duration_and_skipped_pending_step_none() -> None:
    task = plan(*plain(3))
    task.start_step(1, at=at(0))
    task.skip_step(1, at=at(4))
    task.skip_step(2, at=at(5))
    assert duration(task, 1) == 4_000
    assert duration(task, 2) is None
    assert duration(task, 3) is None


def test_running_pending_and_paused_steps_show_no_duration_but_active_ms_runs() -> None:
    task = plan(*plain(3))
    task.start_step(1, at=at(0))
    task.log("info", "tick", at=at(9))
    assert duration(task, 1) is None
    assert duration(task, 2) is None
    assert task.step(1).active_ms(at(9)) == 9_000
    task.pause(at=at(10))
    assert task.step(1).active_ms(at(60)) == 10_000  # the clock is stopped while paused
    assert duration(task, 1) is None


def test_cancelled_steps_stop_their_clock_at_the_cancel() -> None:
    task = plan(*plain(3))
    task.start_step(1, at=at(0))
    task.start_step(2, at=at(0))
    task.pause(at=at(10))
    task.cancel(at=at(100))
    task.log("info", "later", at=at(5000))
    assert task.step(1).finished_at == at(100)
    assert duration(task, 1) == 10_000
    assert duration(task, 2) == 10_000
    assert duration(task, 3) is None


def test_active_ms_as_a_pure_function() -> None:
    step = Step(order=1, name="x")
    assert step.active_ms(at(10)) is None
    step.started_at = at(0)
    assert step.active_ms(at(10)) == 10_000
    step.hold(at(4))
    step.hold(at(6))  # holding twice keeps the first start of the hold
    assert step.active_ms(at(10)) == 4_000
    step.release(at(8))
    step.release(at(9))  # releasing twice adds nothing
    assert step.held_ms == 4_000
    assert step.active_ms(at(10)) == 6_000
    step.finished_at = at(12)
    assert step.active_ms(at(99)) == 8_000


def test_active_ms_never_negative() -> None:
    step = Step(order=1, name="x", started_at=at(10), finished_at=at(5))
    assert step.active_ms(at(0)) == 0


# ------------------------------------------------------------------------------------------------------
# The spec's example and the progress JSON.
# ------------------------------------------------------------------------------------------------------

CRM_TASK_ID = UUID("6f1c1f7e-1d2b-4c8e-9a57-3f2b8d1e0c42")
SPEC_KEYS = {
    "task_id",
    "title",
    "status",
    "progress",
    "current_step",
    "total_steps",
    "started_at",
    "eta_seconds",
    "steps",
}
SPEC_STEP_KEYS = {"order", "name", "status", "progress", "duration_ms", "substeps"}


def crm_task(weights: tuple[float, ...] = (1, 1, 1, 1)) -> Task:
    task = Task.plan(
        "Build a CRM app",
        "agent-7",
        [
            StepPlan("Analyse requirements", weight=weights[0]),
            StepPlan(
                "Create database schema",
                weight=weights[1],
                substeps=("users", "contacts", "deals", "activities"),
            ),
            StepPlan("Build the API", weight=weights[2]),
            StepPlan("Build the UI", weight=weights[3]),
        ],
        tables=4,
        task_id=CRM_TASK_ID,
        at=T0,
    )
    task.start_step(1, at=at(1))
    task.complete_step(1, at=at(121.5))
    task.start_step(2, at=at(122))
    task.complete_substep(2, 1, at=at(130))
    task.complete_substep(2, 2, at=at(140))
    task.report_progress(2, 65, at=at(150))
    return task


def test_spec_example_crm_task() -> None:
    task = crm_task()
    assert task.step(2).percent == 65.0
    assert task_percent(task) == pytest.approx((100 + 65 + 0 + 0) / 4)
    view = progress_view(task)
    assert view["task_id"] == str(CRM_TASK_ID)
    assert view["title"] == "Build a CRM app"
    assert view["status"] == "running"
    assert view["progress"] == 41
    assert view["current_step"] == 2
    assert view["total_steps"] == 4
    assert view["started_at"] == "2024-01-15T10:00:01.000Z"
    assert view["eta_seconds"] is None
    assert view["complexity"] == "medium"
    assert [(s["order"], s["status"], s["progress"]) for s in view["steps"]] == [
        (1, "completed", 100),
        (2, "running", 65),
        (3, "pending", 0),
        (4, "pending", 0),
    ]
    assert view["steps"][0]["duration_ms"] == 120_500
    assert view["steps"][1]["duration_ms"] is None
    assert view["steps"][1]["substeps"] == [
        {"name": "users", "done": True},
        {"name": "contacts", "done": True},
        {"name": "deals", "done": False},
        {"name": "activities", "done": False},
    ]


def test_spec_example_with_weights() -> None:
    task = crm_task(weights=(1, 2, 3, 4))
    assert task_percent(task) == pytest.approx((1 * 100 + 2 * 65) / 10)
    assert progress_view(task)["progress"] == 23


def test_spec_example_substeps_ahead_of_the_report() -> None:
    task = crm_task()
    task.complete_substep(2, 3, at=at(160))
    assert task.step(2).percent == 75.0
    assert progress_view(task)["progress"] == math.floor((100 + 75) / 4)


def test_progress_view_has_the_spec_keys() -> None:
    view = progress_view(crm_task())
    assert set(view) >= SPEC_KEYS
    assert isinstance(view["task_id"], str)
    assert isinstance(view["progress"], int)
    assert isinstance(view["steps"], list)
    for step in view["steps"]:
        assert set(step) >= SPEC_STEP_KEYS
        assert isinstance(step["order"], int)
        assert isinstance(step["name"], str)
        assert step["status"] in {str(s) for s in StepStatus}
        assert isinstance(step["progress"], int)
        for sub in step["substeps"]:
            assert set(sub) == {"name", "done"}
            assert isinstance(sub["done"], bool)
    json.dumps(view)  # plain JSON types only


def test_progress_view_of_a_new_task() -> None:
    task = plan(*plain(2), title="  Fresh  ")
    view = progress_view(task)
    assert view["title"] == "Fresh"
    assert view["status"] == "pending"
    assert view["progress"] == 0
    assert view["current_step"] == 1
    assert view["started_at"] is None
    assert view["created_at"] == "2024-01-15T10:00:00.000Z"
    assert view["updated_at"] == "2024-01-15T10:00:00.000Z"
    assert view["version"] == 1
    assert all(s["duration_ms"] is None for s in view["steps"])
    assert view["needs_attention"] is False


def test_progress_view_shows_approval_and_error() -> None:
    task = plan(*plain(2))
    task.request_approval(1, "Drop table?", at=at(3))
    view = progress_view(task)
    assert view["needs_attention"] is True
    assert view["steps"][0]["approval"] == {
        "message": "Drop table?",
        "requested_at": "2024-01-15T10:00:03.000Z",
    }
    assert view["steps"][1]["approval"] is None
    task.reject(1, "no", at=at(4))
    view = progress_view(task)
    assert view["status"] == "failed"
    assert view["error"] == "rejected: no"
    assert view["steps"][0]["error"] == "rejected: no"
    assert view["steps"][0]["approval"] is None
    assert view["steps"][0]["finished_at"] == "2024-01-15T10:00:04.000Z"


def test_step_view_uses_the_given_now_only_for_unfinished_clocks() -> None:
    task = plan(*plain(2))
    task.start_step(1, at=at(0))
    task.complete_step(1, at=at(3))
    assert step_view(task.step(1), at(1000))["duration_ms"] == 3_000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (T0, "2024-01-15T10:00:00.000Z"),
        (T0 + timedelta(microseconds=123_456), "2024-01-15T10:00:00.123Z"),
        (T0 + timedelta(microseconds=999_999), "2024-01-15T10:00:00.999Z"),
    ],
)
def test_iso(value: datetime | None, expected: str | None) -> None:
    assert iso(value) == expected


def test_iso_keeps_each_instants_own_zone_although_equal_instants_compare_equal() -> None:
    at = datetime(2024, 1, 15, 10, 0, 0, 123456, tzinfo=UTC)
    there = at.astimezone(timezone(timedelta(hours=2)))
    assert at == there
    for _ in range(2):  # the second time from the cache
        assert iso(at) == "2024-01-15T10:00:00.123Z"
        assert iso(there) == "2024-01-15T12:00:00.123+02:00"
    assert iso(None) is None
