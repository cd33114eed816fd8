"""Command input types shared by every way in (HTTP bodies, NATS requests): one definition each."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from domain.task import StepPlan
from infra.problems import Problem
from infra.service import NewTask, Pin

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


def _no_repeats(pairs: list[tuple[str, Any]]) -> None:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = next(key for i, key in enumerate(keys) if key in keys[:i])
        raise Problem(400, "malformed-json", f"request body repeats the key {repeated[:100]!r} in one object")


# The stdlib's C scanner calls the hook with each object's pairs in order, duplicates kept (msgspec keeps the
# last one silently and has no option to refuse them). About 2-10 us a body, under 1 % of a command.
_PAIRS = json.JSONDecoder(object_pairs_hook=_no_repeats)


def refuse_repeated_keys(raw: bytes | str) -> None:
    """A 400 `malformed-json` problem when an object in a body msgspec already accepted repeats a key."""
    try:
        _PAIRS.raw_decode((raw.decode() if isinstance(raw, bytes) else raw).strip())
    except RecursionError:  # as deep as msgspec allowed, a little deeper than this scanner does
        raise Problem(
            422, "invalid-field", "request body is nested too deeply", errors=[{"path": "$"}]
        ) from None
    except ValueError:  # not for this check to judge: msgspec accepted the body
        pass


_TAG = re.compile(r'(W/)?"(\d{1,18})"|(\d{1,18})')  # an entity-tag, or a bare version as accepted before
_MAX_TAGS = 50


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """The `Idempotency-Key` header (HTTP or NATS), checked; None when absent."""
    key = headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip().strip('"')
    if not key or len(key) > 200 or not key.isprintable():
        raise Problem(400, "bad-idempotency-key", "Idempotency-Key must be 1 to 200 printable characters")
    return key


def if_match(headers: Mapping[str, str]) -> Pin | None:
    """The task versions an `If-Match` header accepts, by RFC 9110's strong comparison: `"7"` (or a bare
    `7`), a list `"7", "8"` (any of them), `*` (any: None, as when absent, so a missing task is still 404).
    A weak tag `W/"7"` never matches strongly: it adds no version, and weak tags alone match nothing."""
    value = headers.get("if-match")
    if value is None:
        return None
    value = value.strip()
    if value == "*":
        return None
    members = value.split(",")
    tags = [_TAG.fullmatch(member.strip()) for member in members[: _MAX_TAGS + 1]]
    if len(members) > _MAX_TAGS or not all(tags):
        raise Problem(
            400,
            "bad-if-match",
            f'If-Match must be *, a task version such as "7", or a list of at most {_MAX_TAGS} ("7", "8")',
        )
    return tuple(int(tag[2] or tag[3]) for tag in tags if tag is not None and tag[1] is None)
