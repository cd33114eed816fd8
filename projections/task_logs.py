"""task_logs: every log line a task reported, with its position, level and step."""

from __future__ import annotations

from domain.progress import iso
from projections.model import Change, Insert, Op, ReadModel, Table, integer, text

TASK_LOGS = Table(
    "task_logs",
    (
        integer("position", False),
        text("task_id", False),
        integer("seq", False),
        text("at", False),
        text("level", False),
        integer("step"),
        text("message", False),
    ),
    key=("position",),
    indexes=(("task_id", "position"),),
)


def handle(change: Change) -> list[Op]:
    if change.kind != "Logged":
        return []
    event = change.event
    return [
        Insert(
            TASK_LOGS,
            {
                "position": change.position,
                "task_id": str(event.originator_id),
                "seq": event.originator_version,
                "at": iso(event.timestamp),
                "level": event.level,
                "step": event.step,
                "message": event.message,
            },
        )
    ]


MODEL = ReadModel("task_logs", (TASK_LOGS,), handle, "log lines per task")
