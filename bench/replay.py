"""Replay: projection rebuild events/s vs a raw SELECT scan of the same rows; loading a 10,000-event task.

`python -m bench.replay [--quick]`

A log of whole task histories (about 65 events per task, like tests/integration/test_rebuild_large.py) is
written at three sizes; `infra.replay.rebuild` then drops and rebuilds the `task_progress` read model (the
spec's history table: every event gives rows) and, separately, every read model at once through the
projector's shared-decoding path (up to 150,000 events). The baseline reads the same `stored_events`
rows in pages of 500 by position (what the projector's reads do) with plain sqlite3 / psycopg and
touches every column.

Loading one task with 10,000 events: a replay from the first event (snapshots off; `app.task(id, version)`
bypasses the aggregate cache), the cached load a command does (fast-forward + copy), and a load from the
task's latest snapshot (the store takes one every 500 events) plus the events after it.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from bench.common import (
    Table,
    check,
    fresh_database,
    ms,
    postgres,
    quick_main,
    rate,
    scratch,
    section,
    times,
    write_section,
)

TARGET_REBUILD = 0.1
TARGET_LOAD = 0.050
FULL = {"sqlite": (10_000, 100_000, 1_000_000), "postgres": (10_000, 30_000, 100_000)}
QUICK = {"sqlite": (5_000, 20_000, 50_000), "postgres": (5_000, 10_000, 20_000)}
TASK_EVENTS = 10_000
ALL_MODELS_UP_TO = 150_000


def settings_for(data_dir: Path, url: str | None) -> Any:
    from infra.settings import Settings

    return Settings(data_dir=data_dir, database_url=url)


def write_log(app: Any, events: int) -> int:
    """Whole task histories, saved 20 tasks per commit, until the log holds `events` events."""
    from domain.task import StepPlan, Task

    plan = [
        StepPlan("Create database tables", substeps=("a", "b")),
        StepPlan("Generate UI"),
        StepPlan("Workflows"),
    ]
    i = 0
    head = app.head()
    while head < events:
        tasks = []
        for _ in range(20):
            task = Task.plan(f"task {i}", "local", plan, tables=i % 8 + 1)
            for order in (1, 2, 3):
                task.start_step(order)
                for percent in range(5, 100, 5):
                    task.report_progress(order, percent)
                if order == 1:
                    task.complete_substep(1, 1)
                    task.complete_substep(1, 2)
                task.log("info", f"step {order} done", order)
                if i % 7 == 0 and order == 2:
                    task.fail_step(order, "flaky")
                    task.retry_step(order)
                task.complete_step(order)
            tasks.append(task)
            i += 1
        recordings = app.save(*tasks)
        head = recordings[-1].notification.id
    return int(head)


def raw_scan(backend: str, where: str, table: str, decode: bool = False) -> tuple[int, float]:
    """Read every stored event in pages of 500 by position, touching each column (and `json.loads` of
    each state with `decode`); (rows, seconds)."""
    started = time.perf_counter()
    if backend == "sqlite":
        conn = sqlite3.connect(where)
        try:
            query = (
                "SELECT rowid, originator_id, originator_version, topic, state FROM "
                f"{table} WHERE rowid > ? ORDER BY rowid LIMIT 500"
            )
            rows = _scan(lambda last: conn.execute(query, (last,)).fetchall(), decode)
        finally:
            conn.close()
    else:
        import psycopg
        from psycopg import sql

        pg_query = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {} "
            "WHERE notification_id > %s ORDER BY notification_id LIMIT 500"
        ).format(sql.Identifier(table))
        with psycopg.connect(where) as pg:
            rows = _scan(lambda last: pg.execute(pg_query, (last,)).fetchall(), decode)
    return rows, time.perf_counter() - started


def _scan(fetch: Any, decode: bool) -> int:
    """Page through rows (position, id, version, topic, state) with `fetch(after)`; how many there were."""
    rows = size = last = 0
    while True:
        page = fetch(last)
        if not page:
            return rows
        for row in page:
            size += len(row[4]) + len(row[3])
            if decode:
                json.loads(row[4])
        last = page[-1][0]
        rows += len(page)


def rebuild_one(app: Any, settings: Any, name: str) -> tuple[int, float]:
    from infra import replay
    from infra.views import open_view
    from projections.registry import MODELS

    view = open_view(settings, MODELS[name])
    started = time.perf_counter()
    applied = replay.rebuild(app, view)
    return applied, time.perf_counter() - started


def rebuild_all(app: Any, settings: Any) -> tuple[int, float]:
    """Drop every read model and replay the log into all of them with one projector (shared decoding)."""
    from infra.projector import Projection, Projector
    from infra.views import open_view
    from projections.registry import MODELS

    views = [open_view(settings, model) for model in MODELS.values()]
    for view in views:
        view.drop()
        view.create_table()
    projector = Projector([Projection(app, view) for view in views])
    started = time.perf_counter()
    applied = projector.run_once()
    return applied, time.perf_counter() - started


def rebuild_table(backend: str, sizes: tuple[int, ...], pg: Any, tmp: Path) -> Table:
    from infra.store import open_store
    from projections.registry import MODELS

    table = Table(
        f"Projection rebuild vs raw scan — {backend}",
        [
            "events",
            "task_progress rebuild ev/s",
            f"all {len(MODELS)} read models ev/s",
            "raw SELECT scan rows/s",
            "scan + json.loads rows/s",
            "ratio (task_progress)",
            "ratio (all)",
            f"target ≥ {TARGET_REBUILD}x",
        ],
    )
    url = fresh_database(pg, "replay") if backend == "postgres" else None
    settings = settings_for(tmp / f"replay-{backend}", url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = open_store(settings)
    try:
        for events in sizes:
            started = time.perf_counter()
            head = write_log(app, events)
            wrote = time.perf_counter() - started
            print(f"{backend}: log of {head:,} events written in {wrote:.0f} s", flush=True)
            where, name = url or str(settings.sqlite_path), getattr(app.recorder, "events_table_name")  # noqa: B009
            rows, scan = raw_scan(backend, where, name)
            decoded, decode_s = raw_scan(backend, where, name, decode=True)
            one, one_s = rebuild_one(app, settings, "task_progress")
            raw_rate = rows / scan
            ratio_one = one / one_s / raw_rate
            every_rate = ratio_all = "-"
            if head <= ALL_MODELS_UP_TO:  # bounded: every read model at a million events takes minutes
                every, every_s = rebuild_all(app, settings)
                every_rate, ratio_all = rate(every / every_s), times(every / every_s / raw_rate)
            table.add(
                f"{head:,}",
                rate(one / one_s),
                every_rate,
                rate(raw_rate),
                rate(decoded / decode_s),
                times(ratio_one),
                ratio_all,
                check(ratio_one >= TARGET_REBUILD),
            )
            print(table.rows[-1], flush=True)
    finally:
        app.close()
    table.notes.append(
        "Sizes grow in one log (each row adds events to the previous one). The raw scan reads the same "
        "rows in the same pages of 500; a rebuild also decodes each event, runs the domain's mutator and "
        "the read model, and writes its rows and tracking in one transaction per page. `scan + json.loads` "
        "only parses each event's JSON: a floor for any Python consumer of the log, already far below "
        "the raw scan."
    )
    return table


def timed(fn: Any, *args: Any) -> float:
    """Median seconds of five calls."""
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        fn(*args)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def load_table(pg: Any, tmp: Path) -> Table:
    from dataclasses import replace

    from domain.task import StepPlan, Task
    from infra.store import SNAPSHOT_EVERY, ProgressApp, open_store

    table = Table(
        f"Loading one task with {TASK_EVENTS:,} events (median of 5), ms",
        [
            "backend",
            "replay from event 1",
            "cached (what a command does)",
            "from its latest snapshot",
            f"worst case: snapshot + {SNAPSHOT_EVERY - 1} events",
            f"< {TARGET_LOAD * 1000:.0f} ms? replay / cached / snapshot / worst",
        ],
    )
    for backend in ("sqlite", "postgres"):
        url = fresh_database(pg, "load") if backend == "postgres" else None
        settings = settings_for(tmp / f"load-{backend}", url)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        app = open_store(settings)  # snapshots on, as progressd runs
        plain = ProgressApp(env=replace(settings, snapshots=False).store_env())
        try:
            task = Task.plan("long", "local", [StepPlan("work"), StepPlan("more", substeps=("a", "b"))])
            task.start_step(1)
            task_id: UUID = task.id
            while task.version + len(task.pending_events) < TASK_EVENTS:
                task.report_progress(1, float(task.version % 100))
                if len(task.pending_events) >= 2000:
                    app.save(task)
            app.save(task)
            version = task.version
            replay = timed(plain.task, task_id, version)  # no snapshots: from event 1
            app.task(task_id)
            cached = timed(app.task, task_id)
            snap = timed(app.task, task_id, version)  # a given version bypasses the cache
            worst = timed(app.task, task_id, version - 1)
            loaded = app.task(task_id, version)
            assert loaded.version == version and loaded.steps[0].status == "running"
            assert app.snapshots is not None and list(app.snapshots.get(task_id, desc=True, limit=1))
        finally:
            app.close()
            plain.close()
        verdicts = " / ".join(
            "met" if t < TARGET_LOAD else "**missed**" for t in (replay, cached, snap, worst)
        )
        table.add(backend, ms(replay), ms(cached), ms(snap), ms(worst), verdicts)
        print(table.rows[-1], flush=True)
    table.notes.append(
        "The store keeps recently used tasks in memory (eventsourcing's aggregate cache, fast-forwarded from "
        "the store on every load); a task that is not cached loads from its latest snapshot (one every "
        f"{SNAPSHOT_EVERY} events, `PROGRESSD_SNAPSHOTS=on` by default) and the events after it. 'Replay "
        "from event 1' is the same load with snapshots off."
    )
    return table


def run(quick: bool = False, pg: Any = None, command: str = "") -> list[Table]:
    command = command or "python -m bench.replay" + (" --quick" if quick else "")
    if pg is None:
        with postgres() as server:
            return run(quick, server, command)
    sizes = QUICK if quick else FULL
    with scratch("replay") as tmp:
        tables = [rebuild_table(backend, sizes[backend], pg, tmp) for backend in ("sqlite", "postgres")]
        tables.append(load_table(pg, tmp))
    for t in tables:
        print(t.text(), "\n", flush=True)
    write_section(
        "replay",
        section(
            "Replay",
            "Rebuilding read models from the log against a raw scan of the same rows; loading a long task. "
            f"SQLite up to {sizes['sqlite'][-1]:,} events; PostgreSQL up to {sizes['postgres'][-1]:,} "
            "(bounded for time: writing and rebuilding a million events on PostgreSQL takes too long for "
            "this run).",
            tables,
            command,
        ),
    )
    return tables


def main() -> None:
    quick_main("replay", __doc__, run, "smaller logs")


if __name__ == "__main__":
    main()
