"""Our inserts (infra.pgrecorder, infra.sqliterecorder) keep the library's guarantees: written once, run on
each backend. What only one backend has is in test_pg_insert and test_sqlite_insert."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError

from domain.task import StepPlan
from infra.pgrecorder import LockedInsertRecorder
from infra.service import NewTask, TaskService
from infra.settings import Settings
from infra.sqliterecorder import OneStatementRecorder
from infra.store import ProgressApp

OWNER = "local"
OURS = {False: OneStatementRecorder, True: LockedInsertRecorder}


def open_service(settings: Settings, **env: str) -> TaskService:
    return TaskService(ProgressApp(env={**settings.store_env(), **env}))


def new_task(service: TaskService) -> UUID:
    outcome = service.create_sync(OWNER, NewTask("insert", [StepPlan("one")]))
    task_id = UUID(outcome.view["task_id"])
    service.command_sync(task_id, OWNER, "start", {"order": 1})
    return task_id


@pytest.fixture
def service(settings: Settings) -> Iterator[TaskService]:
    service = open_service(settings)
    try:
        yield service
    finally:
        service.close()


def test_the_store_uses_ours_and_a_log_written_by_the_library_carries_on(settings: Settings) -> None:
    ours_class = OURS[settings.uses_postgres]
    stock_env = {k: v for k, v in settings.store_env().items() if k != "APPLICATION_RECORDER_TOPIC"}
    stock = TaskService(ProgressApp(env=stock_env))
    try:
        assert not isinstance(stock.app.recorder, ours_class)
        task_id = new_task(stock)
        before = stock.app.head()
    finally:
        stock.close()

    ours = open_service(settings)
    try:
        assert isinstance(ours.app.recorder, ours_class)
        outcome = ours.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 40})
        assert outcome.position == before + 1 == ours.app.head()
        assert ours.app.task(task_id).steps[0].percent == 40
    finally:
        ours.close()


def test_a_version_already_taken_is_an_integrity_error_and_writes_nothing(service: TaskService) -> None:
    task_id = new_task(service)
    stale = service.app.task(task_id)
    service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 10})
    head = service.app.head()

    stale.report_progress(1, 20.0)
    with pytest.raises(IntegrityError):  # one event
        service.app.save(stale)
    stale = service.app.task(task_id, version=stale.version - 1)
    stale.report_progress(1, 20.0)
    stale.report_progress(1, 30.0)
    with pytest.raises(IntegrityError):  # several
        service.app.save(stale)

    assert service.app.head() == head
    assert service.app.task(task_id).steps[0].percent == 10
    # the connection went back in a usable state (PostgreSQL's ids may skip those the failed inserts drew)
    outcome = service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 50})
    assert outcome.position == service.app.head() > head
    assert [n.originator_version for n in service.app.notifications(head, 10)] == [outcome.version]


def test_a_save_of_several_events_gets_their_ids_in_order(service: TaskService) -> None:
    task_id = new_task(service)
    task = service.app.task(task_id)
    for percent in (10.0, 20.0, 30.0):
        task.report_progress(1, percent)
    recordings = service.app.save(task)
    ids = [r.notification.id for r in recordings]
    assert ids == sorted(ids) and ids[-1] == service.app.head()
    stored = service.app.notifications(ids[0] - 1, 10)
    assert [(n.id, n.originator_version) for n in stored] == [
        (r.notification.id, r.domain_event.originator_version) for r in recordings
    ]
