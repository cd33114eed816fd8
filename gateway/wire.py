"""Inbound HTTP command bodies as msgspec Structs: a typed decoder is the input validation."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from infra.commands import Comment, CreateTaskIn, StepIn, Text

__all__ = ["Comment", "CreateTaskIn", "StepIn", "Text"]


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
