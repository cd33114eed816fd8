"""Streams wait on the shared tail: woken when the log grows, and by one shared quiet tick otherwise."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import infra.tail
from domain.task import StepPlan
from infra.service import NewTask, TaskService
from infra.settings import Settings
from infra.store import open_store
from infra.tail import LogTail


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
