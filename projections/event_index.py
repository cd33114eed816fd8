"""event_index: where each task event sits in the global log, for time travel and stream resume."""

from __future__ import annotations

from domain.progress import iso
from projections.model import Change, Insert, Op, ReadModel, Table, integer, text

EVENT_INDEX = Table(
    "event_index",
    (
        integer("position", False),
        text("task_id", False),
        integer("seq", False),
        text("type", False),
        text("at", False),
    ),
    key=("position",),
    indexes=(("task_id", "seq"),),
)


def handle(change: Change) -> list[Op]:
    return [
        Insert(
            EVENT_INDEX,
            {
                "position": change.position,
                "task_id": change.task_id,
                "seq": change.event.originator_version,
                "type": change.kind,
                "at": iso(change.event.timestamp),
            },
        )
    ]


MODEL = ReadModel("event_index", (EVENT_INDEX,), handle, "log position of every task event")
