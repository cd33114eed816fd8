"""The SQLite insert of one event as one statement (infra.sqliterecorder); test_insert has what both have."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError
from eventsourcing.sqlite import SQLiteApplicationRecorder

from infra.service import TaskService
from infra.settings import Settings
from tests.integration.test_insert import new_task, open_service

OWNER = "local"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[TaskService]:
    service = open_service(Settings(data_dir=tmp_path))
    try:
        yield service
    finally:
        service.close()


def test_one_event_skips_the_library_transaction_and_several_use_it(
    service: TaskService, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = new_task(service)
    library = SQLiteApplicationRecorder.insert_events
    sizes: list[int] = []

    def counted(self: Any, stored_events: Any, **kwargs: Any) -> Any:
        sizes.append(len(stored_events))
        return library(self, stored_events, **kwargs)

    monkeypatch.setattr(SQLiteApplicationRecorder, "insert_events", counted)
    first = service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 10}).position
    task = service.app.task(task_id)
    for percent in (20.0, 30.0, 40.0):
        task.report_progress(1, percent)
    recordings = service.app.save(task)

    assert sizes == [3]  # only the save of several events went through the library's insert
    ids = [r.notification.id for r in recordings]
    assert ids == [first + 1, first + 2, first + 3] == list(range(first + 1, service.app.head() + 1))
    stored = service.app.notifications(first - 1, 10)
    assert [n.originator_version for n in stored] == [
        task.version - 3,
        *[r.domain_event.originator_version for r in recordings],
    ]


def test_a_locked_database_is_an_operational_error_and_writes_nothing(tmp_path: Path) -> None:
    service = open_service(Settings(data_dir=tmp_path), SQLITE_LOCK_TIMEOUT="1")
    try:
        task_id = new_task(service)
        head = service.app.head()
        holder = sqlite3.connect(Settings(data_dir=tmp_path).sqlite_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's write transaction
        try:
            task = service.app.task(task_id)
            task.report_progress(1, 70.0)
            with pytest.raises(OperationalError, match="locked"):
                service.app.save(task)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert service.app.head() == head
        outcome = service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 80})
        assert outcome.position == head + 1
    finally:
        service.close()
