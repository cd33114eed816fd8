"""task_view: the current progress JSON of every task, one row each."""

from __future__ import annotations

import msgspec

from domain.progress import progress_view
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


def handle(change: Change) -> list[Op]:
    # The row is made when it is written: a task's later event in the same batch replaces it unmade (most of
    # a rebuild's views). By then this task object may have moved on: only its row as of this event will do.
    task, position, version = change.task, change.position, change.task.version

    def make() -> Row:
        if task.version != version:
            raise RuntimeError(f"task {task.id} moved on to version {task.version} before its view was made")
        view = progress_view(task)
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
