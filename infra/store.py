"""The event store: an eventsourcing Application over SQLite or PostgreSQL holding every Task's log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import Notification

from domain.task import Task
from infra.settings import Settings


class ProgressApp(Application[UUID]):
    """The one application whose notification log is the source of truth for every read model."""

    name = "progressd"

    def task(self, task_id: UUID, version: int | None = None) -> Task:
        """Load a task, optionally as it stood at a version; raises TaskNotFound."""
        try:
            task: Any = self.repository.get(task_id, version=version)
        except AggregateNotFoundError:
            raise TaskNotFound(str(task_id)) from None
        if not isinstance(task, Task):
            raise TaskNotFound(str(task_id))
        return task

    def notifications(self, after: int, limit: int, stop: int | None = None) -> Sequence[Notification]:
        """Notifications with a position greater than `after`, in log order."""
        return self.recorder.select_notifications(
            start=after, limit=limit, stop=stop, inclusive_of_start=False
        )

    def head(self) -> int:
        """The position of the last notification in the log, 0 when empty."""
        return self.recorder.max_notification_id() or 0

    def task_events(self, task_id: UUID, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """A task's raw events after a version, decoded, for audit."""
        stored = self.recorder.select_events(task_id, gt=after or None, limit=limit)
        out = []
        for item in stored:
            domain_event = self.mapper.to_domain_event(item)
            out.append(event_record(domain_event))
        return out


def event_record(domain_event: Any) -> dict[str, Any]:
    """A domain event as plain data: type, seq, at and its own fields."""
    fields = {
        k: (str(v) if isinstance(v, UUID) else v)
        for k, v in vars(domain_event).items()
        if k not in ("originator_id", "originator_version", "timestamp", "originator_topic", "idem")
    }
    return {
        "type": type(domain_event).__qualname__.rpartition(".")[2],
        "task_id": str(domain_event.originator_id),
        "seq": domain_event.originator_version,
        "at": domain_event.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": fields,
    }


def open_store(settings: Settings) -> ProgressApp:
    """Open the event store the settings name, creating its tables and the data dir if needed."""
    if not settings.uses_postgres:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return ProgressApp(env=settings.store_env())


class TaskNotFound(Exception):
    """No task with this id (or none the caller may see)."""
