"""Step and task states, and which transitions each command may make."""

from __future__ import annotations

from enum import StrEnum


class StepStatus(StrEnum):
    """Where one step is."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    APPROVAL = "approval"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


class TaskStatus(StrEnum):
    """Where the task as a whole is."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = StepStatus
T = TaskStatus

# Step command -> the step states it may start from.
STEP_FROM: dict[str, tuple[StepStatus, ...]] = {
    "start": (S.PENDING,),
    "progress": (S.RUNNING,),
    "substep": (S.RUNNING,),
    "complete": (S.RUNNING,),
    "fail": (S.RUNNING,),
    "skip": (S.PENDING, S.RUNNING, S.FAILED),
    "retry": (S.FAILED,),
    "request_approval": (S.PENDING, S.RUNNING),
    "approve": (S.APPROVAL,),
    "reject": (S.APPROVAL,),
}

# Task command (or step command, checked on the task first) -> the task states it may start from.
TASK_FROM: dict[str, tuple[TaskStatus, ...]] = {
    "start": (T.PENDING, T.RUNNING),
    "progress": (T.RUNNING,),
    "substep": (T.RUNNING,),
    "complete": (T.RUNNING,),
    "fail": (T.RUNNING,),
    "skip": (T.PENDING, T.RUNNING, T.FAILED),
    "retry": (T.FAILED, T.RUNNING),
    "request_approval": (T.PENDING, T.RUNNING),
    "approve": (T.RUNNING, T.PAUSED),
    "reject": (T.RUNNING, T.PAUSED),
    "pause": (T.RUNNING,),
    "resume": (T.PAUSED,),
    "cancel": (T.PENDING, T.RUNNING, T.PAUSED, T.FAILED),
}

FINISHED_STEP = frozenset({S.COMPLETED, S.SKIPPED})
ACTIVE_STEP = frozenset({S.RUNNING, S.PAUSED, S.APPROVAL})
TERMINAL_TASK = frozenset({T.COMPLETED, T.CANCELLED})
