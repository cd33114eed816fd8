"""Read-model storage: eventsourcing tracking recorders that also own the read model's tables."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore, SQLiteTrackingRecorder, SQLiteTransaction
from eventsourcing.utils import Environment
from psycopg.sql import SQL, Identifier

from infra.settings import Settings
from projections.model import Insert, LazyRow, Merge, Op, ReadModel, Row, Table, Upsert

_PARAM = re.compile(r"(?<!:):([a-z_][a-z0-9_]*)")


class Cursor(Protocol):
    def execute(self, sql: Any, params: Any = ...) -> Any: ...
    def executemany(self, sql: Any, params_seq: Any) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Any: ...


class _Immediate(SQLiteTransaction):
    """The library's SQLite transaction, begun with BEGIN IMMEDIATE: it takes the write lock at once."""

    def __enter__(self) -> SQLiteCursor:
        cursor = self.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        return cursor


@contextmanager
def transaction(datastore: SQLiteDatastore | PostgresDatastore, *, commit: bool) -> Iterator[Any]:
    """A transaction on either backend. On SQLite one that writes (commit) takes the file's write lock when it
    begins, waiting for it like any writer. The library begins with a plain BEGIN, which takes the lock at the
    first write: when that transaction has read first and another connection has committed since, SQLite
    cannot move it to a newer snapshot and fails the write at once with "database is locked", without
    waiting. Read-then-write transactions (upserts, merges, the notification outbox) would hit that whenever
    a command is saved in between."""
    if not commit or not isinstance(datastore, SQLiteDatastore):
        with datastore.transaction(commit=commit) as cursor:
            yield cursor
        return
    with datastore.get_connection(commit=True) as conn, _Immediate(conn, commit=True) as cursor, cursor:
        yield cursor


def ddl(table: Table, dialect: str) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements for a read-model table."""
    cols = [
        f"{c.name} {c.sqlite if dialect == 'sqlite' else c.postgres}{'' if c.nullable else ' NOT NULL'}"
        for c in table.columns
    ]
    cols.append(f"PRIMARY KEY ({', '.join(table.key)})")
    out = [f"CREATE TABLE IF NOT EXISTS {table.name} ({', '.join(cols)})"]
    for index in table.indexes:
        name = f"{table.name}_{'_'.join(index)}_idx"
        out.append(f"CREATE INDEX IF NOT EXISTS {name} ON {table.name} ({', '.join(index)})")
    return out


def _by_table(ops: Sequence[Op]) -> dict[str, list[Op]]:
    out: dict[str, list[Op]] = {}
    for op in ops:
        out.setdefault(op.table.name, []).append(op)
    return out


def _last_upserts(ops: list[Op]) -> list[Op]:
    """One table's ops without the Upserts that a later Upsert of the same row (same key and columns, no
    Merge in between: a Merge reads the row) replaces entirely."""
    keep = [True] * len(ops)
    seen: set[tuple[Any, ...]] = set()
    for i in range(len(ops) - 1, -1, -1):
        op = ops[i]
        if isinstance(op, Merge):
            seen.clear()
        elif isinstance(op, Upsert):
            ident = (tuple(op.row), *(op.row[col] for col in op.table.key))
            if ident in seen:
                keep[i] = False
            seen.add(ident)
    return [op for op, k in zip(ops, keep, strict=True) if k]


def _made(row: Row | LazyRow) -> Row:
    """A row as the drivers take it (a dict): a lazy one is made now."""
    return row.made() if isinstance(row, LazyRow) else row


class ViewRecorder(Protocol):
    """What the projector needs of a read model's recorder, on either backend."""

    model: ReadModel
    dialect: str

    def max_tracking_id(self, application_name: str) -> int | None: ...
    def create_table(self) -> None: ...
    def apply(self, ops: Sequence[Op], tracking: Tracking) -> None: ...
    def query(self, sql: str, params: Row | None = None) -> list[Row]: ...
    def drop(self) -> None: ...


@contextmanager
def pipelined(c: Any, dialect: str) -> Iterator[None]:
    """On PostgreSQL, send a batch's statements without waiting for each answer (psycopg's pipeline mode):
    a few round trips per batch instead of one per row. A failing statement still fails the transaction."""
    if dialect != "postgres":
        yield
        return
    with c.connection.pipeline():
        yield


class _ViewMixin:
    model: ReadModel
    dialect: str
    _statements: dict[tuple[type, str, tuple[str, ...]], Any] | None = None

    def _sql(self, sql: str) -> Any:
        return SQL(_PARAM.sub(r"%(\1)s", sql)) if self.dialect == "postgres" else sql

    @contextmanager
    def _cursor(self, *, commit: bool) -> Iterator[Cursor]:
        raise NotImplementedError
        yield

    if TYPE_CHECKING:

        def _insert_tracking(self, c: Any, tracking: Tracking) -> None: ...

    def apply(self, ops: Sequence[Op], tracking: Tracking) -> None:
        """Write the rows and the tracking record in one transaction: both or neither."""
        with self._cursor(commit=True) as c:
            copies: list[Copy] = []
            with pipelined(c, self.dialect):
                self._write(c, ops, copies)
                self._insert_tracking(c, tracking)
            copy_rows(c, copies)

    def _write(self, c: Cursor, ops: Sequence[Op], copies: list[Copy]) -> None:
        """A batch's ops, table by table in their order. Rows that follow one another into the same statement
        go in one executemany; a row upserted again later in the batch (same key and columns, no Merge in
        between) is written once, with its last value. Tables do not depend on one another. On PostgreSQL, a
        table that only gets many new rows gets them by COPY, added to `copies` for after the pipeline (COPY
        cannot run in one), in the same transaction."""
        for table_ops in _by_table(ops).values():
            if self.dialect == "postgres" and (copy := _copy_of(table_ops)) is not None:
                copies.append(copy)
                continue
            statement: Any = None
            rows: list[Row] = []
            for op in _last_upserts(table_ops):
                if isinstance(op, Merge):
                    if rows:
                        c.executemany(statement, rows)
                        statement, rows = None, []
                    self._run(c, op)
                    continue
                sql = self._statement(op)
                if sql is not statement and rows:
                    c.executemany(statement, rows)
                    rows = []
                statement = sql
                rows.append(_made(op.row))
            if rows:
                c.executemany(statement, rows)

    def _statement(self, op: Upsert | Insert) -> Any:
        """The statement for an Upsert or Insert of this table and these columns (made once)."""
        cols = tuple(op.row)
        key = (type(op), op.table.name, cols)
        statements = self._statements
        if statements is None:
            statements = self._statements = {}
        found = statements.get(key)
        if found is None:
            table = op.table
            values = ", ".join(":" + col for col in cols)
            sql = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({values})"
            if isinstance(op, Upsert):
                updates = [col for col in cols if col not in table.key]
                action = (
                    f"DO UPDATE SET {', '.join(f'{col} = excluded.{col}' for col in updates)}"
                    if updates
                    else "DO NOTHING"
                )
                sql += f" ON CONFLICT ({', '.join(table.key)}) {action}"
            found = statements[key] = self._sql(sql)
        return found

    def _run(self, c: Cursor, op: Op) -> None:
        match op:
            case Upsert() | Insert():
                c.execute(self._statement(op), _made(op.row))
            case Merge(table, key, fn):
                where = " AND ".join(f"{col} = :{col}" for col in key)
                c.execute(self._sql(f"SELECT * FROM {table.name} WHERE {where}"), key)
                found = c.fetchone()
                self._run(c, Upsert(table, fn(dict(found) if found is not None else None)))

    def query(self, sql: str, params: Row | None = None) -> list[Row]:
        """Run a read-only query with :named parameters."""
        with self._cursor(commit=False) as c:
            c.execute(self._sql(sql), params or {})
            return [dict(r) for r in c.fetchall()]

    def drop(self) -> None:
        """Drop the model's tables and forget its position, so it rebuilds from the start of the log."""
        with self._cursor(commit=True) as c:
            for table in self.model.tables:
                c.execute(self._sql(f"DROP TABLE IF EXISTS {table.name}"))
            c.execute(
                self._sql(f"DELETE FROM {self._tracking_table()} WHERE application_name = :name"),
                {"name": self.model.name},
            )

    def _tracking_table(self) -> str:
        raise NotImplementedError


class SQLiteViewRecorder(_ViewMixin, SQLiteTrackingRecorder):
    """A read model in the SQLite file, tracked in the shared `tracking` table under its own name."""

    dialect = "sqlite"

    def __init__(self, datastore: SQLiteDatastore, model: ReadModel) -> None:
        self.model = model
        super().__init__(datastore)

    def construct_create_table_statements(self) -> list[str]:
        statements = super().construct_create_table_statements()
        for table in self.model.tables:
            statements.extend(ddl(table, "sqlite"))
        return statements

    @contextmanager
    def _cursor(self, *, commit: bool) -> Iterator[Cursor]:
        with transaction(self.datastore, commit=commit) as c:
            yield c

    def _tracking_table(self) -> str:
        return "tracking"


class PostgresViewRecorder(_ViewMixin, PostgresTrackingRecorder):
    """A read model in PostgreSQL with its own `<name>_tracking` table."""

    dialect = "postgres"

    def __init__(self, datastore: PostgresDatastore, model: ReadModel) -> None:
        self.model = model
        super().__init__(datastore, tracking_table_name=f"{model.name}_tracking")
        for table in model.tables:
            self.sql_create_statements.extend(SQL(s).format() for s in ddl(table, "postgres"))

    @contextmanager
    def _cursor(self, *, commit: bool) -> Iterator[Cursor]:
        with self.datastore.transaction(commit=commit) as c:
            yield c

    def _tracking_table(self) -> str:
        return self.tracking_table_name


def shared_database(views: Sequence[ViewRecorder]) -> bool:
    """Whether these read models live in one database (the usual case), so one transaction can hold them."""
    keys = {_database(view) for view in views}
    return len(keys) == 1 and None not in keys


def _database(view: ViewRecorder) -> tuple[type, str] | None:
    """Which database a view writes to: the SQLite file, or PostgreSQL's host, port and database name."""
    pool = getattr(getattr(view, "datastore", None), "pool", None)
    name = getattr(pool, "db_name", None)  # SQLite
    if name is None:
        kwargs = getattr(pool, "kwargs", None) or {}  # psycopg_pool
        name = "/".join(str(kwargs[k]) for k in ("host", "port", "dbname") if k in kwargs) or None
    if not isinstance(view, _ViewMixin) or not name or ":memory:" in name or "mode=memory" in name:
        return None
    return type(view), name


def apply_together(items: Sequence[tuple[ViewRecorder, Sequence[Op], Tracking]]) -> None:
    """Write several read models' rows and tracking records in one transaction (one commit, one fsync);
    only for views that `shared_database` says share one database."""
    first = items[0][0]
    assert isinstance(first, _ViewMixin)
    with first._cursor(commit=True) as c:
        copies: list[Copy] = []
        with pipelined(c, first.dialect):
            for view, ops, tracking in items:
                assert isinstance(view, _ViewMixin)
                view._write(c, ops, copies)
                view._insert_tracking(c, tracking)
        copy_rows(c, copies)


COPY_FROM = 16  # rows: below this, the pipelined INSERTs cost less than starting a COPY


@dataclass(frozen=True)
class Copy:
    """New rows for one table, all with the same columns, to be written with COPY."""

    table: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def _copy_of(ops: list[Op]) -> Copy | None:
    """One table's ops as a COPY, when they are all Inserts of the same columns and there are enough."""
    inserts = [op for op in ops if isinstance(op, Insert)]
    if len(ops) < COPY_FROM or len(inserts) < len(ops):
        return None
    columns = tuple(inserts[0].row)
    if any(tuple(op.row) != columns for op in inserts):
        return None
    return Copy(inserts[0].table.name, columns, [tuple(op.row.values()) for op in inserts])


def copy_rows(c: Any, copies: Sequence[Copy]) -> None:
    """Write each Copy with COPY … FROM STDIN: a duplicate key fails the transaction, as an INSERT would."""
    for copy in copies:
        statement = SQL("COPY {} ({}) FROM STDIN").format(
            Identifier(copy.table), SQL(", ").join(Identifier(col) for col in copy.columns)
        )
        with c.copy(statement) as stream:
            for row in copy.rows:
                stream.write_row(row)


def open_datastore(settings: Settings, name: str, pool_size: int = 2) -> SQLiteDatastore | PostgresDatastore:
    """A datastore (connections) on the configured backend, for read models and small service tables."""
    env = settings.store_env()
    if settings.uses_postgres:
        env["POSTGRES_POOL_SIZE"] = str(pool_size)
    factory = InfrastructureFactory.construct(Environment(name=name, env=env))
    datastore = getattr(factory, "datastore")  # noqa: B009 - both backends' factories have one
    assert isinstance(datastore, SQLiteDatastore | PostgresDatastore)
    return datastore


def open_view(settings: Settings, model: ReadModel) -> ViewRecorder:
    """Open (and create if needed) one read model's recorder on the configured backend."""
    datastore = open_datastore(settings, model.name)
    recorder: ViewRecorder
    if isinstance(datastore, PostgresDatastore):
        recorder = PostgresViewRecorder(datastore, model)
    else:
        recorder = SQLiteViewRecorder(datastore, model)
    recorder.create_table()
    return recorder


class SqlDb:
    """Plain SQL with :named parameters on either backend, for tables that are not read models."""

    def __init__(self, settings: Settings, name: str, schema: list[Table]) -> None:
        self.datastore = open_datastore(settings, name, pool_size=1)
        self.dialect = "postgres" if isinstance(self.datastore, PostgresDatastore) else "sqlite"
        for table in schema:
            for statement in ddl(table, self.dialect):
                self.execute(statement)
            self._add_missing_columns(table)

    def _add_missing_columns(self, table: Table) -> None:
        """Add the (nullable) columns a table gained since this database was made, on either backend."""
        if self.dialect == "postgres":
            rows = self.query(
                "SELECT column_name AS name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = :t",
                {"t": table.name},
            )
        else:
            rows = self.query(f"PRAGMA table_info({table.name})")
        present = {row["name"] for row in rows}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise ValueError(
                    f"{table.name}.{column.name} cannot be added to existing rows: it is NOT NULL"
                )
            kind = column.postgres if self.dialect == "postgres" else column.sqlite
            exists = " IF NOT EXISTS" if self.dialect == "postgres" else ""
            try:
                self.execute(f"ALTER TABLE {table.name} ADD COLUMN{exists} {column.name} {kind}")
            except Exception as exc:  # another process added it first (SQLite has no IF NOT EXISTS here)
                if "duplicate column" not in str(exc):
                    raise

    def _sql(self, sql: str) -> Any:
        return SQL(_PARAM.sub(r"%(\1)s", sql)) if self.dialect == "postgres" else sql

    def execute(self, sql: str, params: Row | None = None) -> int:
        """Run a statement in its own transaction; return the number of rows it changed."""
        with transaction(self.datastore, commit=True) as c:
            c.execute(self._sql(sql), params or {})
            raw: Any = getattr(c, "sqlite_cursor", c)  # eventsourcing's SQLite cursor wraps sqlite3's
            return int(raw.rowcount)

    def query(self, sql: str, params: Row | None = None) -> list[Row]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(self._sql(sql), params or {})
            return [dict(r) for r in c.fetchall()]
