"""task_view's row is made when it is written, and only from the task as it stood at its event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from domain.progress import progress_view
from domain.task import StepPlan, Task
from projections.model import Change, LazyRow, step_states
from projections.task_view import handle

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def running_task() -> Task:
    task = Task.plan("import", "alice", [StepPlan("load"), StepPlan("check")], at=T0)
    task.start_step(1, at=T0 + timedelta(seconds=1))
    task.report_progress(1, 30.0, at=T0 + timedelta(seconds=5))
    task.collect_events()
    return task


def change_of(task: Task, position: int) -> Change:
    return Change(None, task, None, step_states(task), position)


def test_the_row_is_the_view_at_the_event_with_its_position() -> None:
    task = running_task()
    (op,) = handle(change_of(task, 42))
    assert isinstance(op.row, LazyRow)
    expected = {**progress_view(task), "position": 42}
    row = dict(op.row)
    assert json.loads(row.pop("view")) == expected
    assert row == {
        "task_id": str(task.id),
        "owner": "alice",
        "title": "import",
        "status": "running",
        "progress": 15,
        "created_at": expected["created_at"],
        "updated_at": expected["updated_at"],
        "version": task.version,
        "position": 42,
        "restarted_from": None,
    }


def test_a_row_asked_for_after_its_task_moved_on_is_refused_not_written_wrong() -> None:
    task = running_task()
    (op,) = handle(change_of(task, 7))
    assert op.row["task_id"] == str(task.id)  # the key is known without making the row
    task.report_progress(1, 60.0, at=T0 + timedelta(seconds=9))
    with pytest.raises(RuntimeError, match="moved on"):
        op.row["view"]
