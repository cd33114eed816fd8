"""task_view: the current progress JSON of every task, one row each."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import msgspec

from domain.progress import progress_view
from domain.task import Step, Task
from projections.model import Change, LazyRow, Op, ReadModel, Row, Table, Upsert, integer, text

_encode = msgspec.json.Encoder().encode

TASK_VIEW = Table(
    "task_view",
    (
        text("task_id", False),
        text("owner", False),
        text("title", False),
        text("status", False),
        integer("progress", False),
        text("created_at", False),
        text("updated_at", False),
        integer("version", False),
        integer("position", False),
        text("restarted_from"),
        text("view", False),
    ),
    key=("task_id",),
    indexes=(("owner", "created_at"),),
)


COLUMNS = tuple(TASK_VIEW.column_names())

# Substep lists encoded once and reused while they do not change: a 200-step plan's view has thousands of
# substeps, nearly all the same from one event to the next. Only lists of at least SHORTEST substeps and at
# most LONGEST bytes are kept, and at most KEPT of them (a few MB at worst).
SHORTEST, LONGEST, KEPT = 8, 4096, 2048
_lists: OrderedDict[tuple[tuple[str, ...], tuple[bool, ...]], msgspec.Raw] = OrderedDict()
_lists_lock = threading.Lock()


def _substeps(step: Step) -> list[dict[str, object]] | msgspec.Raw:
    """A step's substep list as the view has it, pre-encoded when it is long enough to be worth keeping."""
    if len(step.substeps) < SHORTEST:
        return [{"name": n, "done": d} for n, d in zip(step.substeps, step.done, strict=True)]
    key = (tuple(step.substeps), tuple(step.done))
    with _lists_lock:
        found = _lists.get(key)
        if found is not None:
            _lists.move_to_end(key)
            return found
    raw = msgspec.Raw(
        _encode([{"name": n, "done": d} for n, d in zip(step.substeps, step.done, strict=True)])
    )
    if len(raw) <= LONGEST:
        with _lists_lock:
            _lists[key] = raw
            while len(_lists) > KEPT:
                _lists.popitem(last=False)
    return raw


def view_json(task: Task) -> dict[str, Any]:
    """The task's progress JSON for encoding: the view with long substep lists pre-encoded (same bytes)."""
    view = progress_view(task, compact=True, step=0)  # what compact leaves out is filled in below
    del view["compact"]
    for shown, step in zip(view["steps"], task.steps, strict=True):
        if shown["substeps"] is None:
            shown["substeps"] = _substeps(step)
    return view


def handle(change: Change) -> list[Op]:
    # The row is made when it is written: a task's later event in the same batch replaces it unmade (most of
    # a rebuild's views). By then this task object may have moved on: only its row as of this event will do.
    task, position, version = change.task, change.position, change.task.version

    def make() -> Row:
        if task.version != version:
            raise RuntimeError(f"task {task.id} moved on to version {task.version} before its view was made")
        view = view_json(task)
        view["position"] = position
        return {
            "task_id": view["task_id"],
            "owner": view["owner"],
            "title": view["title"],
            "status": view["status"],
            "progress": view["progress"],
            "created_at": view["created_at"],
            "updated_at": view["updated_at"],
            "version": view["version"],
            "position": position,
            "restarted_from": view["restarted_from"],
            "view": _encode(view).decode(),
        }

    return [Upsert(TASK_VIEW, LazyRow(COLUMNS, {"task_id": change.task_id}, make))]


MODEL = ReadModel("task_view", (TASK_VIEW,), handle, "current progress JSON per task")
