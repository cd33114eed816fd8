"""Live update messages: a tagged union of msgspec Structs, derived from each event and the task after it."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from domain.progress import iso, progress_view, task_percent, whole
from domain.state import StepStatus
from domain.task import Task

# ---- server → client ---------------------------------------------------------------------------------------


class Message(Struct, tag_field="type", kw_only=True):
    """Fields every update carries: the task, its own event sequence, the global log position, and when.

    One event may give several messages (a completed step also moves the task's percent): `part` of
    `parts` numbers them, so a client that was cut off mid-event resumes with `after=<seq>.<part>`.
    """

    task_id: str
    seq: int
    position: int
    at: str
    part: int = 1
    parts: int = 1


class Snapshot(Message, tag="snapshot"):
    view: dict[str, Any]


class ProgressMsg(Message, tag="progress"):
    """The task's percent and the step's. The estimate is as of `at` (null on a message that a newer one of
    the same task superseded before it was first sent, so a reader catching up gets no stale estimates)."""

    percent: int
    step: int | None = None
    step_percent: int | None = None
    eta_seconds: int | None = None
    eta_low_seconds: int | None = None
    eta_high_seconds: int | None = None
    eta_confidence: str | None = None
    needs_attention: bool | None = None


class StepStarted(Message, tag="step_started"):
    step: int
    name: str
    attempt: int = 1


class SubstepDone(Message, tag="substep_done"):
    step: int
    substep: int
    name: str


class StepComplete(Message, tag="step_complete"):
    step: int
    name: str
    duration_ms: int | None = None
    result: str | None = None


class StepFailed(Message, tag="step_failed"):
    step: int
    error: str


class StepSkipped(Message, tag="step_skipped"):
    step: int
    reason: str | None = None


class Approval(Struct):
    step: int
    message: str
    actions: list[str]


class ApprovalNeeded(Message, tag="approval_needed"):
    approval: Approval


class ApprovalResolved(Message, tag="approval_resolved"):
    step: int
    approved: bool
    comment: str | None = None


class Paused(Message, tag="paused"):
    pass


class Resumed(Message, tag="resumed"):
    pass


class Log(Message, tag="log"):
    level: str
    message: str
    step: int | None = None


class TaskCreated(Message, tag="task_created"):
    title: str
    total_steps: int


class TaskComplete(Message, tag="task_complete"):
    result: str | None = None


class TaskFailed(Message, tag="task_failed"):
    step: int | None
    error: str | None


class TaskCancelled(Message, tag="task_cancelled"):
    reason: str | None = None


class TaskRestarted(Message, tag="task_restarted"):
    new_task_id: str


class ResyncRequired(Message, tag="resync_required"):
    reason: str


Update = (
    Snapshot
    | ProgressMsg
    | StepStarted
    | SubstepDone
    | StepComplete
    | StepFailed
    | StepSkipped
    | ApprovalNeeded
    | ApprovalResolved
    | Paused
    | Resumed
    | Log
    | TaskCreated
    | TaskComplete
    | TaskFailed
    | TaskCancelled
    | TaskRestarted
    | ResyncRequired
)

encoder = msgspec.json.Encoder()
update_decoder: msgspec.json.Decoder[Update] = msgspec.json.Decoder(Update)


def snapshot(task: Task, position: int) -> Snapshot:
    view = progress_view(task)
    view["position"] = position
    return Snapshot(
        task_id=str(task.id), seq=task.version, position=position, at=iso(task.modified_on) or "", view=view
    )


def _progress(base: dict[str, Any], task: Task, order: int | None) -> ProgressMsg:
    step_percent = whole(task.step(order).percent) if order else None
    return ProgressMsg(**base, percent=whole(task_percent(task)), step=order, step_percent=step_percent)


def _failed(base: dict[str, Any], task: Task) -> list[Message]:
    if str(task.status) != "failed":
        return []
    failed = next((s for s in task.steps if s.status is StepStatus.FAILED), None)
    return [TaskFailed(**base, step=failed.order if failed else None, error=task.error)]


def messages_for(event: Any, task: Task, position: int) -> list[Message]:
    """The updates one event produces, numbered part 1..n; `task` is the task right after the event."""
    messages = _messages(event, task, position)
    for i, message in enumerate(messages, start=1):
        message.part = i
        message.parts = len(messages)
    return messages


def _messages(event: Any, task: Task, position: int) -> list[Message]:
    kind = type(event).__qualname__.rpartition(".")[2]
    base: dict[str, Any] = {
        "task_id": str(task.id),
        "seq": event.originator_version,
        "position": position,
        "at": iso(event.timestamp) or "",
    }
    order: int | None = getattr(event, "order", None)
    match kind:
        case "Created":
            return [TaskCreated(**base, title=task.title, total_steps=len(task.steps))]
        case "StepStarted" | "StepRetried":
            step = task.step(order or 0)
            out: list[Message] = [StepStarted(**base, step=step.order, name=step.name, attempt=step.attempts)]
            if step.status is StepStatus.APPROVAL:
                out.append(_approval(base, step.order, step.approval_message or ""))
            return [*out, _progress(base, task, order)]
        case "Progressed":
            return [_progress(base, task, order)]
        case "SubstepDone":
            step = task.step(order or 0)
            n = event.n
            return [
                SubstepDone(**base, step=step.order, substep=n, name=step.substeps[n - 1]),
                _progress(base, task, order),
            ]
        case "StepCompleted":
            step = task.step(order or 0)
            return [
                StepComplete(
                    **base,
                    step=step.order,
                    name=step.name,
                    duration_ms=step.active_ms(event.timestamp),
                    result=event.result,
                ),
                _progress(base, task, order),
            ]
        case "StepFailed":
            return [StepFailed(**base, step=order or 0, error=event.error), *_failed(base, task)]
        case "StepSkipped":
            return [StepSkipped(**base, step=order or 0, reason=event.reason), _progress(base, task, order)]
        case "ApprovalRequested":
            return [_approval(base, order or 0, event.message)]
        case "Approved":
            return [ApprovalResolved(**base, step=order or 0, approved=True, comment=event.comment)]
        case "Rejected":
            return [
                ApprovalResolved(**base, step=order or 0, approved=False, comment=event.comment),
                StepFailed(**base, step=order or 0, error=task.step(order or 0).error or "rejected"),
                *_failed(base, task),
            ]
        case "Paused":
            return [Paused(**base)]
        case "Resumed":
            return [Resumed(**base)]
        case "Cancelled":
            return [TaskCancelled(**base, reason=event.reason)]
        case "TaskCompleted":
            return [TaskComplete(**base, result=event.result)]
        case "Restarted":
            return [TaskRestarted(**base, new_task_id=event.new_task_id)]
        case "Logged":
            return [Log(**base, level=event.level, message=event.message, step=event.step)]
    return []


def _approval(base: dict[str, Any], order: int, message: str) -> ApprovalNeeded:
    return ApprovalNeeded(
        **base, approval=Approval(step=order, message=message, actions=["approve", "reject"])
    )


def is_transition(message: Message) -> bool:
    """Everything but progress ticks is a transition: never dropped or coalesced."""
    return not isinstance(message, ProgressMsg)
