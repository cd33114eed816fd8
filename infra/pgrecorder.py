"""The PostgreSQL event log's insert in one round trip, keeping the table lock that orders commits."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from eventsourcing.utils import retry
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Identifier

from infra.dbapi import translated

# Every call to the event store tries three times, not the library's ten: a dropped connection is replaced on
# the second try. When the server is down a call gives up in well under a second while its connections fail
# at once, at most about 3.5 s when each try waits the 1-s connect timeout, instead of 6 to 12 s; the store
# then fails further calls at once until a probe finds the server again (ProgressApp._guarded). Clients retry
# a 503; an acknowledged command was committed.
TRIES = 3
_retried = retry((InterfaceError, OperationalError), max_attempts=TRIES, wait=0.2)


def _tried_less(method: Callable[..., Any]) -> Any:
    """One of the library's recorder methods with our tries instead of its own."""
    return _retried(inspect.unwrap(method))


class LockedInsertRecorder(PostgresApplicationRecorder):
    """eventsourcing's application recorder, whose insert is one statement calling a function of ours.

    The library's default insert sends SET LOCAL lock_timeout, LOCK TABLE … IN EXCLUSIVE MODE, NOTIFY and
    INSERT … RETURNING in a pipelined transaction: BEGIN, a sync for the insert's result, then COMMIT, each a
    wait on the server. Its own insert function (POSTGRES_ENABLE_DB_FUNCTIONS) is one statement but skips the
    table lock, so writers in two processes could commit notification ids out of order and a follower could
    pass over one. Our functions do all four in one statement, in the statement's own (autocommit)
    transaction: the lock is held until that commits, so ids still commit in order, also against writers
    using the library's insert on the same table; a version already taken still raises IntegrityError.
    One event (most commands) goes as plain parameters, several as four arrays. The functions are
    (re)created with CREATE OR REPLACE along with the tables, so an existing database gets them.

    Inserts keep one connection out of the pool for themselves (taking one from psycopg_pool and giving it
    back costs about a tenth of a commit); an insert that finds it in use by another thread takes one from
    the pool as before. A connection that broke is given back (the pool discards it), the pool drops its
    idle connections that broke with it, and the next try takes a fresh one. `release()` gives it back for
    good: the store calls it before closing the pool.
    """

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        many = f"{self.events_table_name}_insert_locked"
        one = f"{self.events_table_name}_insert_locked_one"
        self.check_identifier_length(one)
        names = {
            "schema": Identifier(self.datastore.schema),
            "table": Identifier(self.events_table_name),
            "channel": Identifier(self.channel_name),
            "id_type": Identifier(self.datastore.originator_id_type),
            "lock_timeout": self.datastore.lock_timeout,
            "many": Identifier(many),
            "one": Identifier(one),
        }
        lock = (
            "    SET LOCAL lock_timeout = '{lock_timeout}s';"
            "    LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE;"
            "    NOTIFY {channel};"
        )
        self.sql_create_statements += [
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{many}("
                "ids {id_type}[], versions bigint[], topics text[], states bytea[]) "
                "RETURNS SETOF bigint LANGUAGE plpgsql AS $BODY$ "
                "BEGIN" + lock + "    RETURN QUERY"
                "    INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)"
                "    SELECT * FROM unnest(ids, versions, topics, states)"
                "    RETURNING notification_id;"
                " END; $BODY$"
            ).format(**names),
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{one}("
                "id {id_type}, version bigint, topic text, state bytea) "
                "RETURNS bigint LANGUAGE plpgsql AS $BODY$ "
                "DECLARE inserted bigint; "
                "BEGIN"
                + lock
                + "    INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)"
                "    VALUES (id, version, topic, state)"
                "    RETURNING notification_id INTO inserted;"
                "    RETURN inserted;"
                " END; $BODY$"
            ).format(**names),
        ]
        self._own: psycopg.Connection[DictRow] | None = None
        self._own_cursor: psycopg.Cursor[tuple[Any, ...]] | None = None
        self._own_lock = threading.Lock()
        # Rendered once: a Composed query is rendered again on every execute.
        self.insert_many_statement = (
            SQL(
                "SELECT notification_id FROM {schema}.{many}("
                "%s::{id_type}[], %s::bigint[], %s::text[], %s::bytea[]) AS notification_id"
            )
            .format(**names)
            .as_string()
        )
        self.insert_one_statement = (
            SQL("SELECT {schema}.{one}(%s::{id_type}, %s::bigint, %s::text, %s::bytea) AS notification_id")
            .format(**names)
            .as_string()
        )

    select_events = _tried_less(PostgresApplicationRecorder.select_events)
    select_notifications = _tried_less(PostgresApplicationRecorder.select_notifications)
    max_notification_id = _tried_less(PostgresApplicationRecorder.max_notification_id)

    @_retried
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if not stored_events:
            return None
        params: tuple[Any, ...]
        if len(stored_events) == 1:  # most commands: plain parameters, the cheapest to send
            e = stored_events[0]
            statement, params = (
                self.insert_one_statement,
                (e.originator_id, e.originator_version, e.topic, e.state),
            )
        else:  # four arrays rather than one of the composite type: psycopg dumps composites in Python
            statement = self.insert_many_statement
            params = (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            )
        with self._cursor() as curs:
            curs.execute(statement, params, prepare=True)
            return [row[0] for row in curs.fetchall()]

    @contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[tuple[Any, ...]]]:
        """A cursor on the inserts' own connection when no other thread is using it (kept open from one insert
        to the next), else on one from the pool. A connection is checked and given back only after an error:
        a statement that succeeded in autocommit leaves it idle."""
        if not self._own_lock.acquire(blocking=False):
            with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
                yield curs
            return
        try:
            try:
                if self._own_cursor is None:
                    self._own = self._own or self.datastore.pool.getconn()
                    # The statement is its own transaction: the table lock lasts until it commits.
                    assert self._own.autocommit
                    self._own_cursor = self._own.cursor(row_factory=tuple_row)
                yield self._own_cursor
            except BaseException as exc:
                self._give_back(broken_only=True)
                if isinstance(exc, psycopg.Error):
                    raise translated(exc, psycopg) from exc
                raise
        finally:
            self._own_lock.release()

    def insert_backend(self) -> int:
        """The server process id behind the inserts' own connection (taking one if none is held)."""
        with self._cursor() as curs:
            return curs.connection.info.backend_pid

    def release(self) -> None:
        """Give the inserts' own connection back to the pool."""
        with self._own_lock:
            self._give_back(broken_only=False)

    def _give_back(self, *, broken_only: bool) -> None:
        conn = self._own
        if conn is None:
            return
        broken = conn.closed or conn.broken
        if broken or conn.info.transaction_status != TransactionStatus.IDLE or not broken_only:
            self._own = self._own_cursor = None
            self.datastore.pool.putconn(conn)  # the pool closes a broken one and rolls back an open one
        if broken:  # the server went away (or restarted): the pool's idle connections died with this one
            self.datastore.pool.check()


class SnapshotRecorder(PostgresAggregateRecorder):
    """The snapshots table's recorder, with the same tries as the event log's (a task loads from both)."""

    insert_events = _tried_less(PostgresAggregateRecorder.insert_events)
    select_events = _tried_less(PostgresAggregateRecorder.select_events)


class Factory(PostgresFactory):
    """eventsourcing's PostgreSQL factory, with our snapshots recorder (the event log's is named by topic)."""

    aggregate_recorder_class = SnapshotRecorder
