"""Driver errors become the library's kinds: its retries and our callers match on those."""

from __future__ import annotations

import sqlite3
from types import ModuleType

import psycopg
import pytest
from eventsourcing import persistence

from infra.dbapi import translated


@pytest.mark.parametrize("driver", [psycopg, sqlite3])
@pytest.mark.parametrize(
    "name",
    [
        "InterfaceError",
        "OperationalError",
        "DataError",
        "IntegrityError",
        "InternalError",
        "ProgrammingError",
        "NotSupportedError",
        "DatabaseError",
    ],
)
def test_each_dbapi_error_becomes_the_library_one_of_its_name(driver: ModuleType, name: str) -> None:
    error = translated(getattr(driver, name)("boom"), driver)
    assert type(error) is getattr(persistence, name)
    assert str(error) == "boom"


def test_a_server_error_class_becomes_the_kind_it_derives_from() -> None:
    assert type(translated(psycopg.errors.UniqueViolation("dup"), psycopg)) is persistence.IntegrityError
    assert type(translated(psycopg.errors.LockNotAvailable("lock"), psycopg)) is persistence.OperationalError
    assert type(translated(psycopg.errors.UndefinedTable("gone"), psycopg)) is persistence.ProgrammingError


def test_any_other_driver_error_is_a_persistence_error() -> None:
    assert type(translated(psycopg.Error("odd"), psycopg)) is persistence.PersistenceError
    assert type(translated(sqlite3.Error("odd"), sqlite3)) is persistence.PersistenceError
