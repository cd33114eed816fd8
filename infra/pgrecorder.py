"""The PostgreSQL event log's insert in one round trip, keeping the table lock that orders commits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier


class LockedInsertRecorder(PostgresApplicationRecorder):
    """eventsourcing's application recorder, whose insert is one statement calling a function of ours.

    The library's default insert sends SET LOCAL lock_timeout, LOCK TABLE … IN EXCLUSIVE MODE, NOTIFY and
    INSERT … RETURNING in a pipelined transaction: BEGIN, a sync for the insert's result, then COMMIT, each a
    wait on the server. Its own insert function (POSTGRES_ENABLE_DB_FUNCTIONS) is one statement but skips the
    table lock, so writers in two processes could commit notification ids out of order and a follower could
    pass over one. This function does all four in one statement, in the statement's own (autocommit)
    transaction: the lock is held until that commits, so ids still commit in order, also against writers
    using the library's insert on the same table; a version already taken still raises IntegrityError.
    The function is (re)created with CREATE OR REPLACE when the tables are, so an existing database gets it.
    """

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.locked_insert_function_name = f"{self.events_table_name}_insert_locked"
        self.check_identifier_length(self.locked_insert_function_name)
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}(events {schema}.{event}[]) "
                "RETURNS SETOF bigint "
                "LANGUAGE plpgsql "
                "AS "
                "$BODY$"
                "BEGIN"
                "    SET LOCAL lock_timeout = '{lock_timeout}s';"
                "    LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE;"
                "    NOTIFY {channel};"
                "    RETURN QUERY"
                "    INSERT INTO {schema}.{table} AS t ("
                "    originator_id, originator_version, topic, state)"
                "    SELECT originator_id, originator_version, topic, state"
                "    FROM unnest(events)"
                "    RETURNING notification_id;"
                "END;"
                "$BODY$"
            ).format(
                function=Identifier(self.locked_insert_function_name),
                lock_timeout=self.datastore.lock_timeout,
                channel=Identifier(self.channel_name),
                event=Identifier(self.stored_event_type_name),
                schema=Identifier(self.datastore.schema),
                table=Identifier(self.events_table_name),
            )
        )
        self.locked_insert_statement = SQL(
            "SELECT notification_id FROM {schema}.{function}((%s)) AS notification_id"
        ).format(
            schema=Identifier(self.datastore.schema),
            function=Identifier(self.locked_insert_function_name),
        )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if not stored_events:
            return None
        rows = [
            self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state)
            for e in stored_events
        ]
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            assert conn.autocommit  # the statement is its own transaction: the lock lasts until it commits
            curs.execute(self.locked_insert_statement, (rows,), prepare=True)
            return [row["notification_id"] for row in curs.fetchall()]
