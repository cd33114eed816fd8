"""SQLite transactions that read before they write wait for the file's write lock instead of failing.

In WAL mode a transaction begun with a plain BEGIN reads from a snapshot; when another connection commits
before its first write, SQLite cannot move it on and answers "database is locked" at once, busy timeout or
not. Upserts, merges and the notification outbox all read first, and a command saved in between is
routine, so their transactions begin with BEGIN IMMEDIATE.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

from infra.notifystore import Db
from infra.settings import Settings
from infra.views import open_datastore, transaction

Begin = Callable[[], AbstractContextManager[Any]]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(settings.sqlite_path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE counter (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        conn.execute("CREATE TABLE other (k INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO counter VALUES (1, 0)")
    return settings


def read_then_write_while_another_writer_commits(path: Path, begin: Begin) -> list[str]:
    """Read in a transaction, let another connection try to commit, then write; what the other one saw."""
    other_done = threading.Event()
    seen: list[str] = []

    def other_writer() -> None:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        try:
            conn.execute("INSERT INTO other VALUES (1)")
            seen.append("committed")
        finally:
            conn.close()
            other_done.set()

    writer = threading.Thread(target=other_writer)
    with begin() as cursor:
        cursor.execute("SELECT v FROM counter WHERE k = 1")
        value = cursor.fetchone()[0]
        writer.start()
        if other_done.wait(0.5):  # it got in before this transaction wrote anything
            seen.append("before our write")
        cursor.execute("UPDATE counter SET v = ? WHERE k = 1", (value + 1,))
    writer.join(15)
    return seen


def counter(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT v FROM counter").fetchone()[0], conn.execute(
            "SELECT count(*) FROM other"
        ).fetchone()[0]


def test_a_plain_begin_fails_the_write_when_another_connection_committed_after_the_read(
    settings: Settings,
) -> None:
    """The failure the other tests guard against, shown with the library's own transaction."""
    datastore = open_datastore(settings, "plain")
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            read_then_write_while_another_writer_commits(
                settings.sqlite_path, lambda: datastore.transaction(commit=True)
            )
    finally:
        datastore.close()
    assert counter(settings.sqlite_path) == (0, 1)  # the other writer's row, not ours


def test_a_write_transaction_takes_the_lock_first_and_the_other_writer_waits(settings: Settings) -> None:
    datastore = open_datastore(settings, "immediate")
    try:
        seen = read_then_write_while_another_writer_commits(
            settings.sqlite_path, lambda: transaction(datastore, commit=True)
        )
    finally:
        datastore.close()
    assert seen == ["committed"]  # it waited for our commit, then went in
    assert counter(settings.sqlite_path) == (1, 1)


def test_the_notification_tables_transactions_do_too(settings: Settings) -> None:
    db = Db(settings, "notify-lock")

    class Adapter:
        """Db's Tx as the plain cursor the scenario drives."""

        def __init__(self) -> None:
            self.rows: list[Any] = []

        def __enter__(self) -> Adapter:
            self._cm = db.tx()
            self.tx = self._cm.__enter__()
            return self

        def __exit__(self, *exc: Any) -> Any:
            return self._cm.__exit__(*exc)

        def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
            named = {f"p{i}": v for i, v in enumerate(params)}
            for i in range(len(params)):
                sql = sql.replace("?", f":p{i}", 1)
            if sql.lstrip().upper().startswith("SELECT"):
                self.rows = [tuple(r.values()) for r in self.tx.query(sql, named)]
            else:
                self.tx.execute(sql, named)

        def fetchone(self) -> Any:
            return self.rows[0]

    try:
        seen = read_then_write_while_another_writer_commits(settings.sqlite_path, Adapter)
    finally:
        db.close()
    assert seen == ["committed"]
    assert counter(settings.sqlite_path) == (1, 1)


def test_read_only_transactions_take_no_write_lock(settings: Settings) -> None:
    datastore = open_datastore(settings, "reader")
    try:
        with transaction(datastore, commit=False) as cursor:
            cursor.execute("SELECT v FROM counter")
            other = sqlite3.connect(settings.sqlite_path, timeout=0.2, isolation_level=None)
            try:
                other.execute("INSERT INTO other VALUES (7)")  # not kept waiting by a reader
            finally:
                other.close()
    finally:
        datastore.close()
    assert counter(settings.sqlite_path) == (0, 1)
