"""task_view: the current progress JSON of every task, one row each."""

from __future__ import annotations

import msgspec

from domain.progress import progress_view
from projections.model import Change, Op, ReadModel, Table, Upsert, integer, text

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


def handle(change: Change) -> list[Op]:
    view = progress_view(change.task)
    view["position"] = change.position
    return [
        Upsert(
            TASK_VIEW,
            {
                "task_id": view["task_id"],
                "owner": view["owner"],
                "title": view["title"],
                "status": view["status"],
                "progress": view["progress"],
                "created_at": view["created_at"],
                "updated_at": view["updated_at"],
                "version": view["version"],
                "position": change.position,
                "restarted_from": view["restarted_from"],
                "view": _encode(view).decode(),
            },
        )
    ]


MODEL = ReadModel("task_view", (TASK_VIEW,), handle, "current progress JSON per task")
