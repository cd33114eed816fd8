"""Streams wait on the shared tail: woken when the log grows, and by one shared quiet tick otherwise."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import infra.tail
from domain.task import StepPlan
from infra.service import NewTask, TaskService
from infra.settings import Settings
from infra.store import ProgressApp, open_store
from infra.tail import LogTail
from tests.integration.workload import run_workload


def test_waiters_wake_on_new_events_and_on_the_quiet_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(infra.tail, "QUIET", 0.2)
    app = open_store(Settings(data_dir=tmp_path))
    service = TaskService(app)
    tail = LogTail(app, poll=0.01)

    async def scenario() -> tuple[bool, bool, bool, int]:
        tail.start(asyncio.get_running_loop())
        try:
            service.on_saved(tail.wake)
            pending = asyncio.ensure_future(tail.wait(tail.position))
            monkeypatch.setattr(
                infra.tail, "QUIET", 60.0
            )  # the first tick (0.2 s) schedules the next at 60 s
            quiet = await asyncio.wait_for(pending, 5)  # nothing new: the tick says so
            waiting = [asyncio.ensure_future(tail.wait(tail.position)) for _ in range(50)]
            await asyncio.sleep(0)
            before = tail.position
            await asyncio.to_thread(service.create_sync, "local", NewTask("t", [StepPlan("a")]))
            woke = await asyncio.wait_for(asyncio.gather(*waiting), 5)
            already = await tail.wait(before)  # the tail is past it: no waiting at all
            return quiet, all(woke), already, tail.position - before
        finally:
            await asyncio.to_thread(tail.stop)

    quiet, woke, already, moved = asyncio.run(scenario())
    assert (quiet, woke, already) == (False, True, True)
    assert moved == 1
    service.close()


class CountingStore:
    """The event store, counting the tail's reads of the log."""

    def __init__(self, app: ProgressApp) -> None:
        self.app = app
        self.reads = 0

    def notifications(self, after: int, limit: int, stop: int | None = None) -> Any:
        self.reads += 1
        return self.app.notifications(after, limit, stop)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


def entries(tail: LogTail) -> list[tuple[int, str, int, tuple[bytes, ...]]]:
    found = tail.since(0, 1_000_000)
    assert found is not None
    return [(e.position, e.task_id, e.seq, e.frames) for e in found]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_the_tail_takes_this_writers_events_as_committed_and_reads_only_what_others_wrote(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Handed the events its own writer committed, the tail does not read them back, and its entries are the
    ones a tail reading everything from the store makes; another writer's events (a gap in what was
    handed over) it reads from the store, in log order."""
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    settings = Settings(data_dir=tmp_path, database_url=url)
    app, other = open_store(settings), open_store(settings)
    service, elsewhere = TaskService(app), TaskService(other)
    counting = CountingStore(app)
    handed = LogTail(counting, poll=60)  # type: ignore[arg-type]  # moves only when handed events or woken
    reader = LogTail(app, poll=0.01)

    reads: list[int] = []

    async def caught_up() -> None:
        head = app.head()
        for tail in (handed, reader):
            while tail.position < head:
                await tail.wait(tail.position)
        # A hint can still be pending when the tail has caught up (it reads the store once more for it):
        # count from when the tail has taken every hint and its reads have stopped, so that a late one is
        # not counted against what comes next.
        settled, last = 0, -1
        for _ in range(500):
            taken = not (handed._hinted or handed._wake.is_set())
            settled = settled + 1 if taken and counting.reads == last else 0
            if settled == 5:
                break
            last = counting.reads
            await asyncio.sleep(0.02)
        reads.append(counting.reads)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        handed.start(loop)
        reader.start(loop)
        try:
            service.on_recorded(handed.offer)
            elsewhere.on_saved(handed.wake)  # like a hint from another gateway
            await caught_up()
            await asyncio.to_thread(run_workload, service, 6, 4)
            await caught_up()
            await asyncio.to_thread(run_workload, elsewhere, 1, 5)  # another process's writer
            await caught_up()
            await asyncio.to_thread(run_workload, service, 3, 6)
            await caught_up()
        finally:
            await asyncio.to_thread(handed.stop)
            await asyncio.to_thread(reader.stop)

    asyncio.run(scenario())
    got, expected = entries(handed), entries(reader)
    assert got == expected and len(got) == app.head()
    assert [position for position, *_ in got] == list(range(1, app.head() + 1))
    start, mine, others, mine_again = reads
    assert mine - start == 0  # everything this writer committed was handed over: no read back
    assert others - mine >= 1  # the other writer's events come from the store
    assert mine_again - others <= 1  # handed over again (a read at most, for a hint the tail took late)
    service.close()
    elsewhere.close()
