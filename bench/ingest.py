"""Command ingest: progress commands/s through the domain and the event store, and through HTTP.

`python -m bench.ingest [--quick]`

1. One writer, no HTTP: `TaskService.command_sync` (load the task, run the domain, save one event, one
   commit per command) against plain one-row-per-commit inserts of the same stored bytes (psycopg on
   PostgreSQL, sqlite3 on SQLite) into a table shaped like `stored_events`, at three task lengths.
2. HTTP: `wrk` POSTs `…/steps/1/progress` from 10, 50 and 200 keep-alive connections to a real
   `progressd serve` (group commit: concurrent commands share one transaction) and, in the same run, to a
   bare Starlette JSON POST app (the generator's ceiling).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from bench.common import (
    Table,
    bare,
    check,
    fresh_database,
    gateway,
    http_json,
    ms,
    pct,
    postgres,
    quick_main,
    rate,
    scratch,
    times,
    write_section,
    wrk_post,
)

TASKS = 10
TARGET_ONE = 0.7
TARGET_GROUP = 2.0


@dataclass
class Sizes:
    lengths: tuple[int, ...]  # events already in each task before the measured commands
    commands: int  # measured commands per size (bounded by `seconds`)
    seconds: float  # time box for one measured loop
    concurrency: tuple[int, ...]
    http_seconds: float


FULL = Sizes((10, 100, 1000), 3000, 12.0, (10, 50, 200), 8.0)
QUICK = Sizes((10, 100, 1000), 500, 2.0, (10, 50, 200), 2.0)


@dataclass
class Loop:
    """A timed loop of single commits."""

    count: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.count / self.seconds


# ---- domain + store (no HTTP) -----------------------------------------------------------------------------


def open_service(data_dir: Path, database_url: str | None) -> Any:
    from infra.service import TaskService
    from infra.settings import Settings
    from infra.store import open_store

    settings = Settings(data_dir=data_dir, database_url=database_url)
    return TaskService(open_store(settings))


def prepared_tasks(service: Any, length: int) -> list[UUID]:
    """TASKS running tasks, each already `length` events long (written in one save per task)."""
    from domain.task import StepPlan
    from infra.service import NewTask

    ids = []
    for i in range(TASKS):
        outcome = service.create_sync("bench", NewTask(f"ingest {i}", [StepPlan("work")]))
        task_id = UUID(outcome.view["task_id"])
        service.command_sync(task_id, "bench", "start", {"order": 1})
        task = service.load(task_id, "bench")
        for j in range(max(0, length - 2)):
            task.report_progress(1, float(j % 100))
        service.app.save(task)
        ids.append(task_id)
    return ids


def payloads(service: Any, count: int) -> list[tuple[str, bytes]]:
    """The stored (topic, state) of the last `count` events: the raw baseline writes the same bytes."""
    head = service.app.head()
    rows = service.app.recorder.select_notifications(start=max(1, head - count + 1), limit=count)
    return [(n.topic, bytes(n.state)) for n in rows]


# ---- raw baselines ----------------------------------------------------------------------------------------

PG_RAW = """
CREATE TABLE raw_events (
  originator_id uuid NOT NULL, originator_version bigint NOT NULL, topic text, state bytea,
  notification_id bigserial, PRIMARY KEY (originator_id, originator_version));
CREATE UNIQUE INDEX raw_events_notification_id ON raw_events (notification_id ASC);
"""
PG_INSERT = "INSERT INTO raw_events (originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s)"
SQLITE_RAW = """
CREATE TABLE raw_events (
  originator_id TEXT, originator_version INTEGER, topic TEXT, state BLOB,
  PRIMARY KEY (originator_id, originator_version))
"""
SQLITE_INSERT = "INSERT INTO raw_events (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)"


class RawWriter:
    """One row per commit, the same payload, into a table already holding TASKS * length rows."""

    def __init__(self, backend: str, where: str, length: int, rows: list[tuple[str, bytes]]) -> None:
        self.backend = backend
        self.rows = rows
        self.ids = [uuid.uuid4() for _ in range(TASKS)]
        self.versions = dict.fromkeys(self.ids, length)
        self.done = 0
        prefill = [
            (self._key(i), v, rows[v % len(rows)][0], rows[v % len(rows)][1])
            for i in self.ids
            for v in range(1, length + 1)
        ]
        if backend == "postgres":
            import psycopg

            self.pg = psycopg.connect(where, autocommit=True)
            self.pg.execute(PG_RAW)
            with self.pg.transaction(), self.pg.cursor() as cur:
                cur.executemany(PG_INSERT, prefill)
        else:
            self.lite = sqlite3.connect(where, isolation_level=None)  # autocommit: a transaction per INSERT
            self.lite.execute("PRAGMA journal_mode=WAL")
            self.lite.execute(SQLITE_RAW)
            self.lite.execute("BEGIN")
            self.lite.executemany(SQLITE_INSERT, prefill)
            self.lite.execute("COMMIT")

    def _key(self, key: UUID) -> Any:
        return key if self.backend == "postgres" else str(key)

    def insert(self) -> None:
        key = self.ids[self.done % TASKS]
        self.versions[key] += 1
        topic, state = self.rows[self.done % len(self.rows)]
        params = (self._key(key), self.versions[key], topic, state)
        if self.backend == "postgres":
            self.pg.execute(PG_INSERT, params)
        else:
            self.lite.execute(SQLITE_INSERT, params)
        self.done += 1

    def close(self) -> None:
        if self.backend == "postgres":
            self.pg.close()
        else:
            self.lite.close()


def interleaved(
    service: Any, ids: list[UUID], raw: RawWriter, commands: int, seconds: float, chunk: int = 50
) -> tuple[Loop, Loop]:
    """Our commands and raw commits in alternating chunks, so load from elsewhere hits both alike."""
    ours = Loop(0, 0.0, [])
    base = Loop(0, 0.0, [])
    while ours.count < commands and ours.seconds + base.seconds < 2 * seconds:
        for _ in range(chunk):
            t0 = time.perf_counter()
            service.command_sync(
                ids[ours.count % len(ids)], "bench", "progress", {"order": 1, "percent": ours.count % 100}
            )
            elapsed = time.perf_counter() - t0
            ours.latencies.append(elapsed)
            ours.seconds += elapsed
            ours.count += 1
        for _ in range(chunk):
            t0 = time.perf_counter()
            raw.insert()
            elapsed = time.perf_counter() - t0
            base.latencies.append(elapsed)
            base.seconds += elapsed
            base.count += 1
    return ours, base


def one_writer(backend: str, sizes: Sizes, pg: Any, tmp: Path) -> tuple[Table, list[float]]:
    table = Table(
        f"Ingest, one writer, no HTTP — {backend}",
        [
            "events per task",
            "commands/s (ours)",
            "p50 ms",
            "p99 ms",
            "raw one-row commits/s",
            "raw p50 ms",
            "ratio",
            f"target ≥ {TARGET_ONE}x",
        ],
    )
    raws = []
    for length in sizes.lengths:
        data_dir = tmp / f"one-{backend}-{length}"
        url = fresh_database(pg, f"one{length}") if backend == "postgres" else None
        service = open_service(data_dir, url)
        try:
            ids = prepared_tasks(service, length)
            # Warm up (the first commands open connections and fill the cache), and take the payload.
            for i in range(100):
                service.command_sync(ids[i % len(ids)], "bench", "progress", {"order": 1, "percent": i})
            writer = RawWriter(backend, url or str(data_dir / "raw.sqlite3"), length, payloads(service, 100))
            try:
                ours, raw = interleaved(service, ids, writer, sizes.commands, sizes.seconds)
            finally:
                writer.close()
        finally:
            service.close()
        raws.append(raw.rate)
        ratio = ours.rate / raw.rate
        table.add(
            f"{length:,}",
            rate(ours.rate),
            ms(pct(ours.latencies, 50)),
            ms(pct(ours.latencies, 99)),
            rate(raw.rate),
            ms(pct(raw.latencies, 50)),
            times(ratio),
            check(ratio >= TARGET_ONE),
        )
        print(table.rows[-1], flush=True)
    table.notes.append(
        f"{TASKS} running tasks, commands round-robin over them; up to {sizes.commands:,} commands or "
        f"{sizes.seconds:.0f} s of each per size, in alternating chunks of 50 (so that load from other "
        "processes hits both alike). Ours: `TaskService.command_sync`: load the task, `report_progress`, "
        "save (one event, one commit). Raw: the same stored bytes, one INSERT per commit into a table "
        "shaped like `stored_events` already holding as many rows."
    )
    return table, raws


# ---- HTTP, 10/50/200 concurrent workers -------------------------------------------------------------------


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def over_http(
    backend: str, sizes: Sizes, pg: Any, tmp: Path, raw_rate: float, ceiling: dict[int, Any]
) -> Table:
    table = Table(
        f"Ingest over HTTP (wrk, keep-alive, group commit) — {backend}",
        [
            "connections",
            "commands/s (ours)",
            "p50 ms",
            "p99 ms",
            "events/commit",
            "bare Starlette req/s",
            "÷ bare",
            "÷ raw one-row",
            f"target ≥ {TARGET_GROUP}x raw (at 50)",
        ],
    )
    runs = [(c, False) for c in sizes.concurrency] + [(50, True)]
    for without_eta in (False, True):
        url = fresh_database(pg, "http") if backend == "postgres" else None
        data_dir = tmp / f"http-{backend}{'-no-eta' if without_eta else ''}"
        with gateway(data_dir, url, without_eta=without_eta) as server:
            concurrency = [c for c, flag in runs if flag == without_eta]
            http_rows(table, server, concurrency, sizes, raw_rate, ceiling, without_eta)
    table.notes.append(
        f"{sizes.http_seconds:.0f} s per row; `POST /api/tasks/<id>/steps/1/progress` round-robin over 50 "
        "running tasks; every answer waits until the read models include the command (read-your-writes) "
        "and carries the task's time estimate. The last row runs a gateway whose answers skip the estimate "
        "(`ReadSide.with_eta` and `eta_as_of_update` bypassed), to show what computing it for every "
        "answer costs. Raw one-row "
        "commits/s is the median of the three raw figures of the one-writer table (same run)."
    )
    return table


def http_rows(
    table: Table,
    server: Any,
    concurrency: list[int],
    sizes: Sizes,
    raw_rate: float,
    ceiling: dict[int, Any],
    without_eta: bool,
) -> None:
    import urllib.request

    plan = {"title": "ingest", "steps": [{"name": "work"}]}
    ids = []
    for _ in range(50):
        tid = http_json("POST", f"{server.url}/api/tasks", plan)["task_id"]
        http_json("POST", f"{server.url}/api/tasks/{tid}/steps/1/start")
        ids.append(tid)
    requests = [
        (f"/api/tasks/{tid}/steps/1/progress", f'{{"percent": {p}}}'.encode())
        for p in (10, 35, 60, 85)
        for tid in ids
    ]
    for connections in concurrency:
        before = urllib.request.urlopen(f"{server.url}/metrics").read().decode()
        result = wrk_post(server.url, requests, connections, sizes.http_seconds)
        after = urllib.request.urlopen(f"{server.url}/metrics").read().decode()
        commits = metric(after, "progressd_store_commits_total") - metric(
            before, "progressd_store_commits_total"
        )
        events = metric(after, "progressd_events_appended_total") - metric(
            before, "progressd_events_appended_total"
        )
        bare_result = ceiling[connections]
        ratio_raw = result.rate / raw_rate
        table.add(
            f"{connections}{' (answers without ETA)' if without_eta else ''}",
            rate(result.rate) + (f" ({result.errors} errors)" if result.errors else ""),
            ms(result.p50),
            ms(result.p99),
            f"{events / commits:.1f}" if commits else "-",
            rate(bare_result.rate),
            times(result.rate / bare_result.rate),
            times(ratio_raw),
            check(ratio_raw >= TARGET_GROUP) if connections == 50 else "",
        )
        print(table.rows[-1], flush=True)


def bare_ceiling(sizes: Sizes, tmp: Path) -> dict[int, Any]:
    requests = [(f"/api/tasks/{uuid.uuid4()}/steps/1/progress", b'{"percent": 42}') for _ in range(50)]
    out = {}
    with bare("http_app", tmp / "bare-http.log") as app:
        for connections in sizes.concurrency:
            out[connections] = wrk_post(app.url, requests, connections, sizes.http_seconds)
    return out


# ---- entry ------------------------------------------------------------------------------------------------


def run(quick: bool = False, pg: Any = None, command: str = "python -m bench.ingest") -> list[Table]:
    sizes = QUICK if quick else FULL
    tables: list[Table] = []
    with scratch("ingest") as tmp:
        if pg is None:
            with postgres() as server:
                return run(quick, server, command)
        ceiling = bare_ceiling(sizes, tmp)
        http_tables = []
        for backend in ("postgres", "sqlite"):
            table, raws = one_writer(backend, sizes, pg, tmp)
            tables.append(table)
            raw_rate = sorted(raws)[len(raws) // 2]
            http_tables.append(over_http(backend, sizes, pg, tmp, raw_rate, ceiling))
        tables += http_tables
    for t in tables:
        print(t.text(), "\n", flush=True)
    from bench.common import section

    write_section(
        "ingest",
        section(
            "Command ingest",
            "Progress commands through the domain and the event store (one writer, one commit each), and "
            "through HTTP from many connections (group commit), against raw one-row commits of the same "
            "bytes and a bare Starlette JSON POST app measured in the same run.",
            tables,
            command,
        ),
    )
    return tables


def main() -> None:
    quick_main("ingest", __doc__, run, "smaller sizes, about a minute")


if __name__ == "__main__":
    main()
