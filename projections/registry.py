"""Every read model by name, in the order they are listed to users."""

from __future__ import annotations

from projections import event_index, notifications, step_stats, task_logs, task_progress, task_view
from projections.model import ReadModel

MODELS: dict[str, ReadModel] = {
    m.name: m
    for m in (
        task_view.MODEL,
        task_progress.MODEL,
        step_stats.MODEL,
        task_logs.MODEL,
        event_index.MODEL,
        notifications.MODEL,
    )
}
