"""What a read model is: its tables, and a pure function from one event to the row changes it causes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from domain.eta import normalise_step_name
from domain.progress import whole
from domain.task import Task

__all__ = ["normalise_step_name"]

Row = dict[str, Any]


class LazyRow(Mapping[str, Any]):
    """A row whose values are made the first time one is read. Its columns and key values are known at
    once, so a batch writer can tell that a later upsert of the same row replaces it; a row replaced like
    that within a batch is never made. `make` must give the row as at the event that asked for it: a caller
    whose state moves on checks that it has not (see task_view)."""

    __slots__ = ("_columns", "_known", "_make", "_row")

    def __init__(self, columns: Sequence[str], known: Row, make: Callable[[], Row]) -> None:
        self._columns = tuple(columns)
        self._known = known
        self._make = make
        self._row: Row | None = None

    def made(self) -> Row:
        """The row itself (made once)."""
        if self._row is None:
            row = self._make()
            if tuple(row) != self._columns or any(row[k] != v for k, v in self._known.items()):
                raise ValueError(f"a lazy row made {row!r}, not columns {self._columns} with {self._known!r}")
            self._row = row
        return self._row

    def __getitem__(self, column: str) -> Any:
        if self._row is None and column in self._known:
            return self._known[column]
        return self.made()[column]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


@dataclass(frozen=True)
class Column:
    """A column with its SQLite and PostgreSQL types."""

    name: str
    sqlite: str
    postgres: str
    nullable: bool = True


def text(name: str, nullable: bool = True) -> Column:
    return Column(name, "TEXT", "text", nullable)


def integer(name: str, nullable: bool = True) -> Column:
    return Column(name, "INTEGER", "bigint", nullable)


def real(name: str, nullable: bool = True) -> Column:
    return Column(name, "REAL", "double precision", nullable)


@dataclass(frozen=True)
class Table:
    """A read-model table: plain SQL a user can query."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()

    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class Upsert:
    """Insert a row, or replace the non-key columns of the row with the same key."""

    table: Table
    row: Row | LazyRow


@dataclass(frozen=True)
class Insert:
    """Append a row (history tables)."""

    table: Table
    row: Row


@dataclass(frozen=True)
class Merge:
    """Read the row with this key (or None), compute its new value with a pure function, upsert it."""

    table: Table
    key: Row
    fn: Callable[[Row | None], Row]


Op = Upsert | Insert | Merge


class StepState(NamedTuple):
    """What a step looked like (status and whole percent), for models that record changes."""

    status: str
    percent: int


def step_states(task: Task) -> tuple[StepState, ...]:
    """Every step's state, in order."""
    return tuple(StepState(str(s.status), whole(s.percent)) for s in task.steps)


@dataclass(frozen=True)
class Change:
    """One event as a read model sees it: the event, the task after it, its steps before (None for the
    first event) and after it, its position in the log."""

    event: Any
    task: Task
    before: Sequence[StepState] | None
    after: Sequence[StepState]
    position: int

    @cached_property
    def kind(self) -> str:
        """The event's name (StepCompleted, Logged, ...)."""
        return type(self.event).__qualname__.rpartition(".")[2]

    @cached_property
    def task_id(self) -> str:
        """The task's id as the read models write it."""
        return str(self.task.id)


@dataclass(frozen=True)
class ReadModel:
    """A named projection: its tables and its event handler."""

    name: str
    tables: tuple[Table, ...]
    handle: Callable[[Change], list[Op]]
    doc: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
