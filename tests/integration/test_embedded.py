"""Integration tests for infra.embedded: real PostgreSQL and real nats-server, no mocks."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import psutil  # type: ignore[import-untyped,unused-ignore]
import psycopg
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from nats.aio.client import Client as NatsClient

from infra.embedded import EmbeddedNats, EmbeddedPostgres, parse_postgres_url, postgres_env, with_database


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper counts as dead)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


# ---------------------------------------------------------------------------------------------------
# URL helpers (no server needed)
# ---------------------------------------------------------------------------------------------------

_ENV_KEYS = ("POSTGRES_DBNAME", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://alice:s3cret@db.example:6543/app", ("app", "db.example", "6543", "alice", "s3cret")),
        ("postgres://alice@localhost/app", ("app", "localhost", "5432", "alice", "")),
        ("postgresql://postgres@/db?host=/tmp/x&port=5433", ("db", "/tmp/x", "5433", "postgres", "")),
        ("postgresql://postgres@%2Ftmp%2FX:5432/db", ("db", "/tmp/X", "5432", "postgres", "")),
        (
            "postgresql://postgres:@/postgres?host=/tmp/p%20q",
            ("postgres", "/tmp/p q", "5432", "postgres", ""),
        ),
        ("postgresql://u:p%40ss@[::1]:5000/d%2Fb", ("d/b", "::1", "5000", "u", "p@ss")),
        ("postgresql://h/db?user=bob&password=pw&dbname=other", ("other", "h", "5432", "bob", "pw")),
    ],
)
def test_postgres_env_parses_urls(url: str, expected: tuple[str, ...]) -> None:
    assert postgres_env(url) == dict(zip(_ENV_KEYS, expected, strict=True))
    # round trip through PostgresParams.url
    params = parse_postgres_url(url)
    assert parse_postgres_url(params.url) == params


def test_with_database_replaces_only_the_database() -> None:
    assert (
        with_database("postgresql://postgres@/postgres?host=/tmp/s&port=5432&dbname=x", "new_db")
        == "postgresql://postgres@/new_db?host=/tmp/s&port=5432"
    )
    assert with_database("postgresql://u:p@h:1/a", "b") == "postgresql://u:p@h:1/b"


# ---------------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_psycopg_round_trip(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE items (id integer PRIMARY KEY, label text NOT NULL)")
        conn.execute("INSERT INTO items VALUES (%s, %s)", (1, "héllo"))
        conn.commit()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT id, label FROM items").fetchall() == [(1, "héllo")]
        assert conn.info.dbname == parse_postgres_url(pg_url).dbname


class Counter(Aggregate):
    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    @event("Incremented")
    def increment(self, by: int) -> None:
        self.count += by


@pytest.mark.postgres
def test_eventsourcing_aggregate_on_postgres(pg_url: str) -> None:
    env = {"PERSISTENCE_MODULE": "eventsourcing.postgres", **postgres_env(pg_url)}
    app: Application[Any] = Application(env=env)
    try:
        counter = Counter("jobs")
        counter.increment(2)
        counter.increment(3)
        app.save(counter)
        counter_id = counter.id
    finally:
        app.close()

    # a second application instance reads it back from PostgreSQL
    app2: Application[Any] = Application(env=env)
    try:
        loaded: object = app2.repository.get(counter_id)
        assert isinstance(loaded, Counter)
        assert (loaded.name, loaded.count, loaded.version) == ("jobs", 5, 3)
    finally:
        app2.close()

    with psycopg.connect(pg_url) as conn:
        tables = {
            row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert tables, "eventsourcing should have created its tables in the per-test database"


@pytest.mark.postgres
def test_embedded_postgres_stop_start_keeps_data(pg_data_dir: Path) -> None:
    pg = EmbeddedPostgres(pg_data_dir)
    with pg:
        url = pg.create_database("restart_db")
        assert pg.params("restart_db").host == pg.host
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('survives')")
        pid = pg.pid
        assert pid is not None

        pg.stop()
        assert not pg.running
        assert not _pid_alive(pid)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2)

        pg.start()
        assert pg.running
        assert pg.pid != pid
        assert pg.url("restart_db") == url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("survives",)]
        new_pid = pg.pid
    assert not pg.running
    assert new_pid is not None
    assert not _pid_alive(new_pid)


# ---------------------------------------------------------------------------------------------------
# NATS / JetStream
# ---------------------------------------------------------------------------------------------------


async def _connect(url: str) -> NatsClient:
    return await nats.connect(url, connect_timeout=5, allow_reconnect=False)


async def _publish_twice_same_id(url: str, stream: str) -> tuple[bool, bool, int]:
    nc = await _connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        first = await js.publish(f"{stream}.events", b"payload-1", headers={"Nats-Msg-Id": "msg-1"})
        second = await js.publish(f"{stream}.events", b"payload-1", headers={"Nats-Msg-Id": "msg-1"})
        info = await js.stream_info(stream)
        return bool(first.duplicate), bool(second.duplicate), int(info.state.messages)
    finally:
        await nc.close()


async def _stream_contents(url: str, stream: str) -> tuple[int, bytes, bool]:
    """Message count, first message's payload, and whether re-publishing msg-1 is still a duplicate."""
    nc = await _connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        msg = await js.get_msg(stream, seq=1)
        again = await js.publish(f"{stream}.events", b"payload-1", headers={"Nats-Msg-Id": "msg-1"})
        return int(info.state.messages), bytes(msg.data or b""), bool(again.duplicate)
    finally:
        await nc.close()


async def _delete_stream(url: str, stream: str) -> None:
    nc = await _connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


@pytest.mark.nats
def test_jetstream_deduplicates_by_msg_id(nats_url: str) -> None:
    stream = _name("DEDUP")
    first_dup, second_dup, count = asyncio.run(_publish_twice_same_id(nats_url, stream))
    try:
        assert (first_dup, second_dup, count) == (False, True, 1)
    finally:
        asyncio.run(_delete_stream(nats_url, stream))


def _refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


@pytest.mark.nats
def test_embedded_nats_restart_same_port_keeps_stream(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    with server:
        url, port = server.url, server.port
        assert url == f"nats://127.0.0.1:{port}"
        stream = _name("RESTART")
        assert asyncio.run(_publish_twice_same_id(url, stream)) == (False, True, 1)

        # graceful stop + start: same port, same store
        pid = server.pid
        assert pid is not None
        server.stop()
        assert not server.running
        assert not _pid_alive(pid)
        assert _refuses_connections(port)
        server.start()
        assert (server.url, server.port) == (url, port)
        assert server.pid != pid
        assert asyncio.run(_stream_contents(url, stream)) == (1, b"payload-1", True)

        # crash (SIGKILL) + start
        pid = server.pid
        assert pid is not None
        server.kill()
        assert not server.running
        assert not _pid_alive(pid)
        assert _refuses_connections(port)
        server.start()
        assert server.url == url
        assert asyncio.run(_stream_contents(url, stream)) == (1, b"payload-1", True)
        last_pid = server.pid
    assert not server.running
    assert last_pid is not None
    assert not _pid_alive(last_pid)


@pytest.mark.nats
def test_embedded_nats_start_failure_is_loud(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy_port = blocker.getsockname()[1]
        server = EmbeddedNats(tmp_path / "nats", port=busy_port, start_timeout=5)
        with pytest.raises(RuntimeError, match="nats-server exited") as excinfo:
            server.start()
    assert "address already in use" in str(excinfo.value).lower()
    assert not server.running


_DIE_HARD = """
import json, os, signal, sys
from infra.embedded import EmbeddedNats, EmbeddedPostgres
pg = EmbeddedPostgres(sys.argv[1]); pg.start()
ns = EmbeddedNats(sys.argv[2]); ns.start()
print(json.dumps({"pg": pg.pid, "nats": ns.pid}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no finally: only the watchdogs can clean up
"""


@pytest.mark.postgres
@pytest.mark.nats
def test_servers_are_stopped_when_owner_is_killed(pg_data_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _DIE_HARD, str(pg_data_dir), str(tmp_path / "nats")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    pids = json.loads(proc.stdout.splitlines()[-1])
    deadline = time.monotonic() + 30
    while any(_pid_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {name: _pid_alive(pid) for name, pid in pids.items()} == {"pg": False, "nats": False}
