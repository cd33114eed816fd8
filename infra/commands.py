"""Command input types shared by every way in (HTTP bodies, NATS requests): one definition each."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal

from msgspec import Meta, Struct

from domain.task import StepPlan
from infra.problems import Problem
from infra.service import NewTask

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
    """A new task: the body of POST /api/tasks and of a `progress.commands.create` request."""

    title: Name
    steps: Annotated[list[StepIn], Meta(min_length=1, max_length=200)]
    complexity: Annotated[int, Meta(ge=0, le=100_000)] | Literal["simple", "medium", "complex"] | None = None


def new_task(body: CreateTaskIn) -> NewTask:
    """The service's request from the decoded body; a number is the count of tables."""
    return NewTask(
        title=body.title,
        steps=[StepPlan(s.name, s.weight, tuple(s.substeps), s.requires_approval) for s in body.steps],
        tables=body.complexity if isinstance(body.complexity, int) else None,
        complexity=body.complexity if isinstance(body.complexity, str) else None,
    )


_VERSION = re.compile(r'^\s*(?:W/)?"?(\d{1,18})"?\s*$')


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """The `Idempotency-Key` header (HTTP or NATS), checked; None when absent."""
    key = headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip().strip('"')
    if not key or len(key) > 200 or not key.isprintable():
        raise Problem(400, "bad-idempotency-key", "Idempotency-Key must be 1 to 200 printable characters")
    return key


def if_match(headers: Mapping[str, str]) -> int | None:
    """The task version an `If-Match` header pins (`7`, `"7"` or `W/"7"`); None when absent."""
    value = headers.get("if-match")
    if value is None:
        return None
    match = _VERSION.match(value)
    if match is None:
        raise Problem(400, "bad-if-match", 'If-Match must be a task version such as "7"')
    return int(match.group(1))
