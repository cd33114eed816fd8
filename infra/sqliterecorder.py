"""The SQLite event log's insert of one event as one statement, without the library's BEGIN and COMMIT."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing import persistence
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder

from infra.dbapi import translated


class OneStatementRecorder(SQLiteApplicationRecorder):
    """eventsourcing's SQLite application recorder, whose insert of a single event is a single statement.

    The library brackets every insert with a BEGIN and a COMMIT sent from Python. On the library's connections
    (autocommit) SQLite runs a lone statement in a transaction of its own, with the same locks and the same
    durability, so one event (most commands) goes as its INSERT alone, on the pool's writer connection.
    Several events, or anything saved along with them (a tracking record), go in the library's transaction.
    """

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if len(stored_events) != 1 or any(v is not None for v in kwargs.values()):  # tracking=None is usual
            return super().insert_events(stored_events, **kwargs)
        event = stored_events[0]
        key = event.originator_id
        params = (
            key.hex if isinstance(key, UUID) else key,
            event.originator_version,
            event.topic,
            event.state,
        )
        with self.datastore.get_connection(commit=True) as conn, conn.cursor() as cursor:
            try:
                cursor.execute(self.insert_events_statement, params)
            except sqlite3.Error as exc:
                raise translated(exc, sqlite3) from exc
            rowid = cursor.lastrowid
        if rowid is None:  # not for a row this INSERT has just made
            raise persistence.PersistenceError("the insert reported no row id")
        return [rowid]
