"""The event store: an eventsourcing Application over SQLite or PostgreSQL holding every Task's log."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from uuid import UUID

import structlog
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.persistence import (
    InterfaceError,
    JSONTranscoder,
    Notification,
    OperationalError,
    Recording,
    Transcoding,
)
from psycopg_pool import ConnectionPool

from domain.state import StepStatus
from domain.task import Step, Task
from infra.pgrecorder import LockedInsertRecorder
from infra.settings import Settings

R = TypeVar("R")
log = structlog.get_logger(__name__)
# While the store is known to be down, calls fail at once instead of each running its tries (pgrecorder);
# a quick probe (at most every PROBE_INTERVAL, waiting PROBE_TIMEOUT) lets them through again.
PROBE_INTERVAL = 0.25
PROBE_TIMEOUT = 0.5
SNAPSHOT_EVERY = 500  # events between a task's snapshots
# How stale a read may find the SQLite file check; every save checks afresh.
FILE_CHECK_INTERVAL = 1.0


class ProgressApp(Application[UUID]):
    """The one application whose notification log is the source of truth for every read model."""

    name = "progressd"
    # Every command loads the task it changes: keep recent tasks in memory and fast-forward them from the
    # store (so other writers' events are still seen) instead of replaying the whole task every time.
    env: ClassVar[dict[str, str]] = {"AGGREGATE_CACHE_MAXSIZE": "2000", "AGGREGATE_CACHE_FASTFORWARD": "y"}
    # A task not in that cache loads from its latest snapshot and the events after it (when snapshots are on:
    # Settings.snapshots). Snapshots are a cache of the log: dropping them loses nothing.
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Task: SNAPSHOT_EVERY}
    snapshotting_projectors: ClassVar[dict[type[Any], Any]] = {
        Task: lambda task, events: _project(task, events)
    }
    _down_since: float | None = None
    _next_probe = 0.0
    _file: Path | None = None  # the SQLite file, while it must stay the one opened
    _file_id: tuple[int, int] = (0, 0)
    _file_checked = 0.0
    _file_problem: str | None = None

    def task(self, task_id: UUID, version: int | None = None) -> Task:
        """Load a task, optionally as it stood at a version; raises TaskNotFound."""
        try:
            task: Any = self._guarded(
                lambda: self.repository.get(task_id, version=version, projector_func=_project)
            )
        except AggregateNotFoundError:
            raise TaskNotFound(str(task_id)) from None
        if not isinstance(task, Task):
            raise TaskNotFound(str(task_id))
        return task

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(StepAsDict())

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        return self._guarded(lambda: self._save(objs, kwargs), write=True)

    def _save(self, objs: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Recording[UUID]]:
        """`Application.save`, but a Task's events are collected without the library's two runtime
        Protocol checks per object (`isinstance` against a Protocol walks its members on Python 3.11:
        more than encoding the event costs). Anything else goes through the library's way."""
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:
            if type(obj) is Task:
                processing_event.events.extend(obj.collect_events())
                processing_event.aggregates[obj.id] = obj
            else:
                processing_event.collect_events(obj)
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # deprecated by the library, still called by its save
        return recordings

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """A task whose save reached a snapshot version is snapshotted from the object just saved: the
        library reloads it from the store (the last snapshot and up to SNAPSHOT_EVERY events) first. When
        that version is not the saved object's last (several events in one save), the library does it."""
        if self.snapshots is None:
            return
        for event in processing_event.events:
            version = event.originator_version
            if version % SNAPSHOT_EVERY:
                continue
            task = processing_event.aggregates.get(event.originator_id)
            if type(task) is Task and task.version == version:
                self.snapshots.put([Task.Snapshot.take(task)])
            elif isinstance(task, Task):
                self.take_snapshot(event.originator_id, version, _project)

    def close(self) -> None:
        if isinstance(self.recorder, LockedInsertRecorder):
            self.recorder.release()  # its own connection, which the pool would not close while it is out
        super().close()

    def notifications(self, after: int, limit: int, stop: int | None = None) -> Sequence[Notification]:
        """Notifications with a position greater than `after`, in log order."""
        return self._guarded(
            lambda: self.recorder.select_notifications(
                start=after, limit=limit, stop=stop, inclusive_of_start=False
            )
        )

    def head(self) -> int:
        """The position of the last notification in the log, 0 when empty."""
        return self._guarded(lambda: self.recorder.max_notification_id() or 0)

    def task_events(self, task_id: UUID, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """A task's raw events after a version, decoded, for audit."""
        stored = self._guarded(lambda: self.recorder.select_events(task_id, gt=after or None, limit=limit))
        out = []
        for item in stored:
            domain_event = self.mapper.to_domain_event(item)
            out.append(event_record(domain_event))
        return out

    # ---- failing fast while the store is down ----------------------------------------------------------

    def _guarded(self, fn: Callable[[], R], *, write: bool = False) -> R:
        if self._file is not None and (problem := self._file_lost(fresh=write)) is not None:
            raise OperationalError(f"the event store's file {problem}")
        if self._down_since is not None and not self._reachable():
            raise OperationalError("the event store is unreachable")
        try:
            return fn()
        except (OperationalError, InterfaceError):
            if self._down_since is None and self._pool() is not None:  # SQLite fails at once anyway
                self._down_since = time.monotonic()
            raise

    def watch_file(self, path: Path) -> None:
        """Refuse every call, until a restart, once the SQLite file at `path` is no longer the one opened.

        SQLite keeps reading and writing a deleted (or renamed-over) file through its open descriptors: the
        server would go on answering 200 and lose everything at the next start. A stat of the path, compared
        with the file as opened (device and inode), tells; it runs before every save (one per group commit)
        and at most every FILE_CHECK_INTERVAL for reads. Once lost, the file stays lost: a connection opened
        meanwhile may hold whatever file was at the path, so only a restart makes the store whole again.
        """
        info = os.stat(path)
        self._file, self._file_id, self._file_checked = path, (info.st_dev, info.st_ino), time.monotonic()

    def _file_lost(self, *, fresh: bool) -> str | None:
        """Why the SQLite file is not the one opened (None when it is), as of now or of a moment ago."""
        assert self._file is not None
        now = time.monotonic()
        if self._file_problem is not None or (not fresh and now - self._file_checked < FILE_CHECK_INTERVAL):
            return self._file_problem
        self._file_checked = now
        try:
            info = os.stat(self._file)
        except (FileNotFoundError, NotADirectoryError):
            self._file_problem = f"{self._file} was deleted"
        except OSError:
            pass  # cannot tell (permissions): let SQLite answer for itself
        else:
            if (info.st_dev, info.st_ino) != self._file_id:
                self._file_problem = f"{self._file} was replaced by another file"
        if self._file_problem is not None:
            log.error(
                "event_store_file_lost", problem=self._file_problem, action="refusing every call; restart"
            )
        return self._file_problem

    def _pool(self) -> ConnectionPool[Any] | None:
        pool = getattr(getattr(self.recorder, "datastore", None), "pool", None)
        return pool if isinstance(pool, ConnectionPool) else None

    def _reachable(self) -> bool:
        """Whether calls may go ahead: a quick probe of the PostgreSQL pool, at most every PROBE_INTERVAL."""
        pool = self._pool()
        now = time.monotonic()
        if pool is None or now < self._next_probe:
            return pool is None
        self._next_probe = now + PROBE_INTERVAL
        try:
            pool.check()  # drop connections that died with the server, so the probe gets a live one
            with pool.connection(timeout=PROBE_TIMEOUT) as conn:
                conn.execute("SELECT 1")
        except Exception:
            self._next_probe = time.monotonic() + PROBE_INTERVAL
            return False
        self._down_since = None
        return True


class StepAsDict(Transcoding):
    """A Step in a snapshot: its fields by name (fields added later take their defaults)."""

    type = Step
    name = "progressd_step"
    fields = frozenset(f.name for f in dataclasses.fields(Step))

    def encode(self, obj: Step) -> dict[str, Any]:
        return {name: getattr(obj, name) for name in self.fields}

    def decode(self, data: dict[str, Any]) -> Step:
        step = Step(**{k: v for k, v in data.items() if k in self.fields})
        step.status = StepStatus(step.status)
        return step


def _project(aggregate: Any, events: Iterable[Any]) -> Any:
    """Apply events in order (the library's default also checks a runtime Protocol on every event, which
    costs more than decoding and applying it on Python 3.11)."""
    for domain_event in events:
        aggregate = domain_event.mutate(aggregate)
    return aggregate


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
    app = ProgressApp(env=settings.store_env())
    if not settings.uses_postgres:
        app.watch_file(settings.sqlite_path)
    return app


class TaskNotFound(Exception):
    """No task with this id (or none the caller may see)."""
