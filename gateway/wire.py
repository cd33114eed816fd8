"""Inbound HTTP command bodies as msgspec Structs: a typed decoder is the input validation."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Text = Annotated[str, Meta(min_length=1, max_length=10_000)]
Comment = Annotated[str, Meta(max_length=10_000)]


class StepIn(Struct, forbid_unknown_fields=True):
    """One step of a new task's plan."""

    name: Name
    weight: Annotated[float, Meta(gt=0, le=1_000_000)] = 1.0
    substeps: Annotated[list[Name], Meta(max_length=200)] = []
    requires_approval: bool = False


class CreateTaskIn(Struct, forbid_unknown_fields=True):
    """POST /api/tasks."""

    title: Name
    steps: Annotated[list[StepIn], Meta(min_length=1, max_length=200)]
    complexity: Annotated[int, Meta(ge=0, le=100_000)] | Literal["simple", "medium", "complex"] | None = None


class ProgressIn(Struct, forbid_unknown_fields=True):
    """POST …/steps/{order}/progress."""

    percent: Annotated[float, Meta(ge=0, le=100)]


class FailIn(Struct, forbid_unknown_fields=True):
    """POST …/steps/{order}/fail."""

    error: Text


class ApprovalIn(Struct, forbid_unknown_fields=True):
    """POST …/steps/{order}/approval: ask a person to approve the step."""

    message: Text


class CommentIn(Struct, forbid_unknown_fields=True):
    """POST …/approve and …/reject."""

    comment: Comment | None = None


class CompleteIn(Struct, forbid_unknown_fields=True):
    """POST …/steps/{order}/complete; `result` is kept when this completes the task."""

    result: Comment | None = None


class ReasonIn(Struct, forbid_unknown_fields=True):
    """POST …/skip and …/cancel."""

    reason: Comment | None = None


class EmptyIn(Struct, forbid_unknown_fields=True):
    """Commands without arguments: start, retry, substep done, pause, resume, restart."""


class LogIn(Struct, forbid_unknown_fields=True):
    """POST /api/tasks/{id}/logs."""

    message: Text
    level: Literal["debug", "info", "warning", "error"] = "info"
    step: Annotated[int, Meta(ge=1, le=10_000)] | None = None


def decoder(kind: type[Struct]) -> msgspec.json.Decoder[Struct]:
    return msgspec.json.Decoder(kind)


CREATE = msgspec.json.Decoder(CreateTaskIn)
STEP_BODIES: dict[str, type[Struct]] = {
    "start": EmptyIn,
    "progress": ProgressIn,
    "complete": CompleteIn,
    "fail": FailIn,
    "skip": ReasonIn,
    "retry": EmptyIn,
    "approval": ApprovalIn,
    "approve": CommentIn,
    "reject": CommentIn,
}
TASK_BODIES: dict[str, type[Struct]] = {
    "pause": EmptyIn,
    "resume": EmptyIn,
    "cancel": ReasonIn,
    "restart": EmptyIn,
}
_KINDS: list[type[Struct]] = [*STEP_BODIES.values(), *TASK_BODIES.values(), LogIn]
DECODERS: dict[type[Struct], msgspec.json.Decoder[Struct]] = {kind: decoder(kind) for kind in _KINDS}
