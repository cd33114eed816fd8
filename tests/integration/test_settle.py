"""Read-your-writes waits on the event loop: a waiter wakes when the read models reach its position, and a
bounded wait ends with False when they do not."""

from __future__ import annotations

import asyncio
from pathlib import Path
from uuid import UUID

from domain.task import StepPlan
from infra.runtime import Runtime
from infra.service import NewTask
from infra.settings import Settings


def test_waiters_wake_when_the_projections_reach_their_position(tmp_path: Path) -> None:
    rt = Runtime(Settings(data_dir=tmp_path))  # projections not started: nothing moves by itself
    try:
        position = rt.service.create_sync("local", NewTask("t", [StepPlan("a")])).position

        async def scenario() -> tuple[bool, bool, bool]:
            timed_out = await rt.settle(position, limit=0.05)
            waiting = asyncio.ensure_future(rt.settle(position, limit=10))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            await asyncio.to_thread(rt.projector.run_once)
            woke = await asyncio.wait_for(waiting, 5)
            again = await rt.settle(position, limit=0.0)  # already there: no waiting at all
            return timed_out, woke, again

        timed_out, woke, again = asyncio.run(scenario())
        assert (timed_out, woke, again) == (False, True, True)
        assert rt.projector.applied(position)
        assert not rt.projector._waiters  # nobody left behind
    finally:
        rt.close()


def test_listeners_hear_only_of_batches_that_changed_a_model(tmp_path: Path) -> None:
    """The notifier listens for new outbox rows: progress reports write none and must not wake it."""
    rt = Runtime(Settings(data_dir=tmp_path))
    heard: list[tuple[str, int]] = []
    rt.projector.listeners.append(lambda name, position: heard.append((name, position)))
    try:
        created = rt.service.create_sync("local", NewTask("t", [StepPlan("a"), StepPlan("b")]))
        task_id = UUID(created.view["task_id"])
        rt.service.command_sync(task_id, "local", "start", {"order": 1})
        rt.projector.run_once()
        assert ("notifications", rt.app.head()) in heard  # task_started went to the outbox
        heard.clear()
        for percent in (10, 20, 30):
            rt.service.command_sync(task_id, "local", "progress", {"order": 1, "percent": percent})
        rt.projector.run_once()
        names = {name for name, _ in heard}
        assert "notifications" not in names
        assert {"task_view", "task_progress", "event_index"} <= names  # these did change
        heard.clear()
        rt.service.command_sync(task_id, "local", "complete", {"order": 1})
        rt.projector.run_once()
        assert ("notifications", rt.app.head()) in heard  # step_complete
        rt.projector.run_once()  # nothing new: nobody hears anything
        assert [n for n, _ in heard].count("notifications") == 1
    finally:
        rt.close()
