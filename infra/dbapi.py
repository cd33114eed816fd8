"""DB-API drivers' errors (psycopg, sqlite3) as eventsourcing's, the way its datastores translate them."""

from __future__ import annotations

from types import ModuleType

from eventsourcing import persistence

# DB-API's error classes, each before the one it derives from; both drivers and the library use these names.
_NAMES = (
    "InterfaceError",
    "OperationalError",
    "DataError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
    "DatabaseError",
)


def translated(exc: Exception, driver: ModuleType) -> persistence.PersistenceError:
    """The library's error for one of `driver`'s (so its retries and our callers see the kind they expect)."""
    for name in _NAMES:
        if isinstance(exc, getattr(driver, name)):
            error: persistence.PersistenceError = getattr(persistence, name)(str(exc))
            return error
    return persistence.PersistenceError(str(exc))
