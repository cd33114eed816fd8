"""task_progress: the spec's history table, one row per (task, step), and every change to it."""

from __future__ import annotations

from domain.progress import iso
from projections.model import Change, Insert, Op, ReadModel, Table, Upsert, integer, text

TASK_PROGRESS = Table(
    "task_progress",
    (
        text("task_id", False),
        integer("step", False),
        text("name", False),
        integer("percent", False),
        text("status", False),
        text("updated_at"),
    ),
    key=("task_id", "step"),
)

TASK_PROGRESS_CHANGES = Table(
    "task_progress_changes",
    (
        integer("position", False),
        text("task_id", False),
        integer("step", False),
        integer("seq", False),
        text("event", False),
        integer("percent", False),
        text("status", False),
        text("at", False),
    ),
    key=("position", "step"),
    indexes=(("task_id", "step", "position"),),
)


def handle(change: Change) -> list[Op]:
    ops: list[Op] = []
    task = change.task
    task_id = change.task_id
    for step, now, then in zip(task.steps, change.after, change.before or change.after, strict=True):
        if change.before is not None and then == now:
            continue
        ops.append(
            Upsert(
                TASK_PROGRESS,
                {
                    "task_id": task_id,
                    "step": step.order,
                    "name": step.name,
                    "percent": now.percent,
                    "status": now.status,
                    "updated_at": iso(step.updated_at),
                },
            )
        )
        if change.before is not None:
            ops.append(
                Insert(
                    TASK_PROGRESS_CHANGES,
                    {
                        "position": change.position,
                        "task_id": task_id,
                        "step": step.order,
                        "seq": task.version,
                        "event": change.kind,
                        "percent": now.percent,
                        "status": now.status,
                        "at": iso(change.event.timestamp),
                    },
                )
            )
    return ops


MODEL = ReadModel(
    "task_progress", (TASK_PROGRESS, TASK_PROGRESS_CHANGES), handle, "per-step history table and its changes"
)
