"""The PostgreSQL insert (infra.pgrecorder): its table lock and its own connection (see also test_insert)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import OperationalError, StoredEvent

from infra.pgrecorder import TRIES, LockedInsertRecorder, SnapshotRecorder
from infra.service import TaskService
from infra.settings import Settings
from infra.store import ProgressApp
from tests.integration.test_insert import new_task

OWNER = "local"
TABLE = "progressd_events"
pytestmark = pytest.mark.postgres


def settings_for(pg_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url=pg_url)


@pytest.fixture
def service(pg_url: str, tmp_path: Path) -> Iterator[TaskService]:
    """A writer on PostgreSQL with the store as the settings configure it (our insert)."""
    service = TaskService(ProgressApp(env=settings_for(pg_url, tmp_path).store_env()))
    try:
        yield service
    finally:
        service.close()


def test_it_waits_for_the_table_lock_and_still_notifies(service: TaskService, pg_url: str) -> None:
    """Ids commit in order because every insert takes the table lock: one held elsewhere holds ours back."""
    task_id = new_task(service)
    with psycopg.connect(pg_url, autocommit=True) as listener, psycopg.connect(pg_url) as holder:
        listener.execute(f"LISTEN {TABLE}")
        holder.execute(f"LOCK TABLE {TABLE} IN EXCLUSIVE MODE")
        done = threading.Event()

        def command() -> None:
            service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 50})
            done.set()

        writer = threading.Thread(target=command)
        writer.start()
        time.sleep(0.5)
        assert not done.is_set()  # blocked behind the other transaction's lock
        holder.commit()
        writer.join(timeout=10)
        assert done.is_set()
        assert [n.channel for n in listener.notifies(timeout=5, stop_after=1)] == [TABLE]


def backend_of(service: TaskService) -> int:
    recorder = service.app.recorder
    assert isinstance(recorder, LockedInsertRecorder)
    return recorder.insert_backend()


def test_inserts_keep_one_connection_and_replace_it_when_it_breaks(service: TaskService, pg_url: str) -> None:
    task_id = new_task(service)
    first = backend_of(service)
    for percent in (10, 20, 30):
        service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": percent})
    assert backend_of(service) == first  # the same server session for every insert

    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    outcome = service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 40})
    assert outcome.view["steps"][0]["progress"] == 40  # the library's retry got a fresh connection
    assert backend_of(service) != first
    assert service.app.task(task_id).steps[0].percent == 40


def test_an_insert_while_another_thread_holds_that_connection_uses_the_pool(
    service: TaskService, pg_url: str
) -> None:
    a, b = new_task(service), new_task(service)
    finished: list[int] = []
    with psycopg.connect(pg_url) as holder:
        holder.execute(f"LOCK TABLE {TABLE} IN EXCLUSIVE MODE")

        def command(task_id: UUID, percent: int) -> None:
            service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": percent})
            finished.append(percent)

        threads = [threading.Thread(target=command, args=(t, p)) for t, p in ((a, 10), (b, 20))]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        assert finished == []  # both wait for the table lock: one on the own connection, one on the pool's
        holder.commit()
        for thread in threads:
            thread.join(timeout=10)
    assert sorted(finished) == [10, 20]
    assert service.app.task(a).steps[0].percent == 10 and service.app.task(b).steps[0].percent == 20


def test_closing_the_store_closes_the_inserts_connection(pg_url: str, tmp_path: Path) -> None:
    service = TaskService(ProgressApp(env=settings_for(pg_url, tmp_path).store_env()))
    new_task(service)
    pid = backend_of(service)
    service.close()
    with psycopg.connect(pg_url, autocommit=True) as admin:
        deadline = time.monotonic() + 5
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the session stayed open after close"
            time.sleep(0.05)


def test_an_insert_carries_on_when_every_connection_was_cut(service: TaskService, pg_url: str) -> None:
    """A server restart kills the inserts' connection and the pool's idle ones alike: one command still
    gets through, on a fresh connection, without a 503 for the client to retry."""
    task_id = new_task(service)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        cut = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    assert len(cut) >= 2  # the inserts' own connection and the pool's
    outcome = service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 60})
    assert outcome.view["steps"][0]["progress"] == 60
    assert service.app.task(task_id).steps[0].percent == 60


def test_every_store_call_tries_three_times_while_the_server_is_unreachable(
    service: TaskService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the library's ten tries (each waiting up to a second for a connection): a call meeting an outage
    gives up in a few seconds, and the store then fails the next calls at once until a probe succeeds."""
    task_id = new_task(service)
    app = service.app
    recorder = app.recorder
    assert isinstance(recorder, LockedInsertRecorder)
    snapshots = app.snapshots.recorder if app.snapshots is not None else None
    assert isinstance(snapshots, SnapshotRecorder)
    datastore = recorder.datastore
    tries: list[str] = []

    @contextmanager
    def unreachable() -> Iterator[Any]:
        tries.append("pool")
        raise OperationalError("connection refused")
        yield

    def no_connection(timeout: float | None = None) -> Any:
        tries.append("own")
        raise psycopg.OperationalError("connection refused")

    recorder.release()
    monkeypatch.setattr(datastore, "get_connection", unreachable)
    monkeypatch.setattr(datastore.pool, "getconn", no_connection)
    event = StoredEvent(task_id, 99, "topic", b"{}")
    calls: dict[str, Callable[[], object]] = {
        "select_events": lambda: recorder.select_events(task_id),
        "select_notifications": lambda: recorder.select_notifications(start=0, limit=10),
        "max_notification_id": recorder.max_notification_id,
        "insert_events": lambda: recorder.insert_events([event]),
        "snapshot select_events": lambda: snapshots.select_events(task_id),
        "snapshot insert_events": lambda: snapshots.insert_events([event]),
    }
    for name, call in calls.items():
        tries.clear()
        with pytest.raises(OperationalError):
            call()
        assert len(tries) == TRIES == 3, name
