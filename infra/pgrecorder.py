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
    pass over one. Our functions do all four in one statement, in the statement's own (autocommit)
    transaction: the lock is held until that commits, so ids still commit in order, also against writers
    using the library's insert on the same table; a version already taken still raises IntegrityError.
    One event (most commands) goes as plain parameters, several as four arrays. The functions are
    (re)created with CREATE OR REPLACE along with the tables, so an existing database gets them.
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

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
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
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            assert conn.autocommit  # the statement is its own transaction: the lock lasts until it commits
            curs.execute(statement, params, prepare=True)
            return [row["notification_id"] for row in curs.fetchall()]
