"""Progress maths: percentages, the current step, durations and the spec's progress JSON, from a Task."""

from __future__ import annotations

import math
from datetime import datetime, tzinfo
from functools import lru_cache
from typing import Any

from domain.state import FINISHED_STEP, StepStatus
from domain.task import Step, Task

# Steps a person should look at first when asking "where is it": in this order of preference.
_CURRENT = (StepStatus.FAILED, StepStatus.APPROVAL, StepStatus.RUNNING, StepStatus.PAUSED)
# Steps under way: a compact view keeps their substep lists (the time estimate reads them).
_UNDER_WAY = frozenset(_CURRENT)
# A plan with more substeps than this in all gets compact command answers (see compact_answers).
COMPACT_SUBSTEPS = 500


def task_percent(task: Task) -> float:
    """Weighted mean of the steps' percents; completed and skipped steps count 100."""
    total = sum(s.weight for s in task.steps)
    # Clamped: float sums of weights can land a hair over 100.
    return min(100.0, sum(s.weight * s.percent for s in task.steps) / total)


def current_step(task: Task) -> int:
    """The step to show as "Step N of M": the one needing attention or running, else the next pending."""
    for status in _CURRENT:
        for step in task.steps:
            if step.status is status:
                return step.order
    for step in task.steps:
        if step.status is StepStatus.PENDING:
            return step.order
    return len(task.steps)


def needs_attention(task: Task) -> bool:
    """True while a step waits for approval or has failed: the ⚠ of the spec."""
    return any(s.status in (StepStatus.APPROVAL, StepStatus.FAILED) for s in task.steps)


def whole(percent: float) -> int:
    """A percent as the integer the spec shows; rounded down so 99.6% never reads 100%."""
    return min(100, max(0, math.floor(percent + 1e-9)))


def iso(at: datetime | None) -> str | None:
    """UTC timestamps as the spec writes them: 2024-01-15T10:00:00.000Z."""
    if at is None:
        return None
    return _iso(at, at.tzinfo)  # equal instants in two zones are equal datetimes: the zone is in the key


@lru_cache(maxsize=4096)
def _iso(at: datetime, _zone: tzinfo | None) -> str:
    # A task's view names the same few instants on every update (when each step started and finished):
    # formatting them again is most of the cost of building the view.
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def step_view(step: Step, now: datetime, substeps: bool = True) -> dict[str, Any]:
    """One step of the progress JSON; without `substeps`, its substep list is null."""
    finished = step.status in FINISHED_STEP or step.status is StepStatus.FAILED
    return {
        "order": step.order,
        "name": step.name,
        "status": str(step.status),
        "progress": whole(step.percent),
        "duration_ms": step.active_ms(now) if finished or step.finished_at else None,
        # Work time as of the view's updated_at: paused and approval-waiting time excluded. A client adds
        # (now - updated_at) while the step is running to get the live figure.
        "work_ms": step.active_ms(now),
        "substeps": (
            [{"name": n, "done": d} for n, d in zip(step.substeps, step.done, strict=True)]
            if substeps
            else None
        ),
        "weight": step.weight,
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
        "updated_at": iso(step.updated_at),
        "attempts": step.attempts,
        "error": step.error,
        "result": step.result,
        "approval": (
            {"message": step.approval_message, "requested_at": iso(step.approval_requested_at)}
            if step.status is StepStatus.APPROVAL
            else None
        ),
    }


def compact_answers(task: Task) -> bool:
    """Whether the task's plan is big enough for its command answers to leave out substep lists."""
    return sum(len(s.substeps) for s in task.steps) > COMPACT_SUBSTEPS


def answer_view(task: Task, step: int | None = None) -> dict[str, Any]:
    """A command's answer: the whole view, or for a big plan the compact one that keeps `step`'s substeps."""
    return progress_view(task, compact_answers(task), step)


def progress_view(task: Task, compact: bool = False, step: int | None = None) -> dict[str, Any]:
    """The spec's progress JSON plus additive fields; a pure function of the task's events.

    `compact` leaves out (as null) the substep lists of the steps that are neither under way nor `step`, and
    says so with `"compact": true`: all that is left out is what only a view of the whole plan needs."""
    now = task.modified_on
    if compact:
        steps = [step_view(s, now, s.status in _UNDER_WAY or s.order == step) for s in task.steps]
    else:
        steps = [step_view(s, now) for s in task.steps]
    view = {
        "task_id": str(task.id),
        "title": task.title,
        "status": str(task.status),
        "progress": whole(task_percent(task)),
        "current_step": current_step(task),
        "total_steps": len(task.steps),
        "started_at": iso(task.started_at),
        "eta_seconds": None,
        "steps": steps,
        "version": task.version,
        "owner": task.owner,
        "complexity": task.complexity,
        "tables": task.tables,
        "created_at": iso(task.created_at),
        "updated_at": iso(task.modified_on),
        "finished_at": iso(task.finished_at),
        "paused_at": iso(task.paused_at),
        "needs_attention": needs_attention(task),
        "error": task.error,
        "result": task.result,
        "restarted_from": task.restarted_from,
        "restarted_as": task.restarted_as,
    }
    if compact:
        view["compact"] = True
    return view
