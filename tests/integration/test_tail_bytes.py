"""The log tail counts the memory it holds honestly and keeps it within its byte limit, per-task buffers
included: what leaves the window leaves the task's buffer too, and a reader asking for it reads the store."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from pathlib import Path
from typing import Any
from uuid import UUID

from domain.task import StepPlan
from infra.projector import TaskCache
from infra.service import NewTask, TaskService
from infra.settings import Settings
from infra.store import open_store
from infra.tail import Batch, LogTail
from tests.integration.workload import run_workload


def held(tail: LogTail, pairs: list[tuple[int, Any, Any]], eta: Any) -> int:
    """Python memory the tail holds after taking these (position, event, task after it) triples."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(0, len(pairs), 500):
            batch = Batch(eta, lambda *_: False)
            for position, event, task in pairs[i : i + 500]:
                batch.add(event, task, position)
            tail._append(batch.entries(), pairs[min(i + 500, len(pairs)) - 1][0])
        del batch
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_the_counted_bytes_cover_what_the_entries_hold(tmp_path: Path) -> None:
    app = open_store(Settings(data_dir=tmp_path))
    service = TaskService(app)
    ids = run_workload(service, 60, 3)
    for n in range(200):  # and some large lines
        service.command_sync(ids[n % 5], "local", "log", {"level": "info", "message": f"{n} " + "y" * 4000})
    cache = TaskCache(app, size=1_000)
    pairs = [
        (n.id, e, cache.apply(e))
        for n in app.notifications(0, 100_000)
        for e in [app.mapper.to_domain_event(n)]
    ]
    for eta in (None, lambda view: {"eta_seconds": 12, "eta_confidence": "low"}):
        tail = LogTail(app, window=1_000_000, max_bytes=1 << 40, eta=eta)
        measured = held(tail, pairs, eta)
        assert tail.size == len(pairs)
        assert tail.bytes == sum(e.nbytes for e in tail.since(0, 1_000_000) or [])
        # Never less than the entries hold, and not much more (entries owed an estimate hold Structs).
        assert measured <= tail.bytes <= 1.3 * measured, (measured, tail.bytes)
    service.close()


def test_the_window_and_the_task_buffers_stay_within_the_byte_limit(tmp_path: Path) -> None:
    app = open_store(Settings(data_dir=tmp_path))
    service = TaskService(app)
    limit = 200_000
    tail = LogTail(app, poll=0.01, max_bytes=limit)
    ids = [
        UUID(service.create_sync("local", NewTask(f"t{i}", [StepPlan("a")])).view["task_id"])
        for i in range(3)
    ]
    observed: list[int] = []

    async def scenario() -> None:
        tail.start(asyncio.get_running_loop())
        service.on_recorded(tail.offer)
        try:
            for n in range(300):
                await asyncio.to_thread(
                    service.command_sync, ids[n % 3], "local", "log", {"level": "info", "message": "z" * 5000}
                )
                observed.append(tail.bytes)
            while tail.position < app.head():
                await tail.wait(tail.position)
        finally:
            await asyncio.to_thread(tail.stop)

    asyncio.run(scenario())
    service.close()
    assert max(observed) <= limit
    held_entries = tail.since(tail.first, 1_000_000)
    assert held_entries is not None and len(held_entries) == tail.size < 300
    assert tail.bytes == sum(e.nbytes for e in held_entries) <= limit
    assert tail.since(0, 10) is None  # the start of the log has left: a reader goes to the store
    for task_id in ids:
        key = str(task_id)
        own = [e for e in held_entries if e.task_id == key]
        # A task's buffer is exactly its entries in the window: nothing older is kept for it.
        assert tail.task_since(key, own[0].seq - 1, 1_000) == own
        assert tail.task_since(key, 1, 1_000) is None  # its first lines have left: read from the store
        latest = tail.latest(key)
        assert latest is not None and latest.seq == 101
