"""The estimator's history is read again only when a step has finished, not on every event: in the process
that projects step_stats without any query, elsewhere after one small aggregate."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from domain.task import StepPlan
from infra.readside import ReadSide
from infra.runtime import LOOP_STEPS, Runtime
from infra.service import NewTask
from infra.settings import Settings


@dataclass
class Scene:
    """A runtime whose step_stats queries are recorded (projections run only when a test says so)."""

    rt: Runtime
    queries: list[str] = field(default_factory=list)

    def task(self, *steps: str) -> UUID:
        outcome = self.rt.service.create_sync("local", NewTask("t", [StepPlan(s) for s in steps]))
        return UUID(outcome.view["task_id"])


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    rt = Runtime(Settings(data_dir=tmp_path))
    scene = Scene(rt)
    step_stats = rt.views["step_stats"]
    original = step_stats.query

    def counted(sql: str, params: Any = None) -> Any:
        scene.queries.append(sql)
        return original(sql, params)

    step_stats.query = counted  # type: ignore[method-assign]
    try:
        yield scene
    finally:
        rt.close()


@pytest.mark.parametrize("projects_here", [True, False], ids=["projecting", "reading only"])
def test_the_history_is_reread_when_a_step_finishes_and_only_then(scene: Scene, projects_here: bool) -> None:
    rt, queries = scene.rt, scene.queries
    read = rt.read if projects_here else ReadSide(rt.views)  # a gateway run with --no-projections
    read.history_recheck = 0.0  # look every time (the default looks at most once a second)
    service = rt.service
    task_id = scene.task("Load rows", "Check")
    service.command_sync(task_id, "local", "start", {"order": 1})
    rt.projector.run_once()
    empty = read.eta_history()
    assert dict(empty) == {}

    queries.clear()
    for percent in (10, 50, 90):  # events that finish no step
        service.command_sync(task_id, "local", "progress", {"order": 1, "percent": percent})
        rt.projector.run_once()
        assert read.eta_history() is empty  # the same object: not read again
    rows_read = [q for q in queries if "median_ms" in q]
    assert not rows_read
    assert len(queries) == (0 if projects_here else 3)  # elsewhere: one aggregate per new position

    service.command_sync(task_id, "local", "complete", {"order": 1})
    rt.projector.run_once()
    learned = read.eta_history()
    assert learned is not empty
    assert sorted((key, h.count) for key, h in learned.items()) == [
        (("load rows", "any"), 1),
        (("load rows", "unknown"), 1),
    ]


def test_without_the_projection_the_history_is_looked_at_once_a_second(scene: Scene) -> None:
    rt, queries = scene.rt, scene.queries
    read = ReadSide(rt.views)  # a gateway run with --no-projections
    task_id = scene.task("a")
    rt.service.command_sync(task_id, "local", "start", {"order": 1})
    rt.projector.run_once()
    first = read.eta_history()
    queries.clear()
    rt.service.command_sync(task_id, "local", "complete", {"order": 1})
    rt.projector.run_once()
    assert read.eta_history() is first and not queries  # within the second: the history as it was
    read._checked -= read.history_recheck  # a second later
    assert sorted(key for key, _ in read.eta_history().items()) == [("a", "any"), ("a", "unknown")]
    assert queries


def test_an_answer_gets_its_estimate_without_a_query_when_the_history_is_at_hand(scene: Scene) -> None:
    """The event loop may make an answer's estimate itself only when that needs no query."""
    rt, queries = scene.rt, scene.queries
    task_id = scene.task("a", "b")
    started = rt.service.command_sync(task_id, "local", "start", {"order": 1})
    rt.projector.run_once()
    assert rt.read.with_update_eta_at_hand(started.view) is None  # the history was never read
    expected = rt.read.with_update_eta(started.view)  # reads it (a reader thread's job)
    queries.clear()
    at_hand = rt.read.with_update_eta_at_hand(started.view)
    assert at_hand == expected and "eta_seconds" in at_hand and not queries

    moved = rt.service.command_sync(task_id, "local", "progress", {"order": 1, "percent": 40})
    rt.projector.run_once()  # changes nothing in step_stats
    at_hand = rt.read.with_update_eta_at_hand(moved.view)
    assert at_hand == rt.read.with_update_eta(moved.view) and not queries

    done = rt.service.command_sync(task_id, "local", "complete", {"order": 1})
    rt.projector.run_once()  # step_stats learned a duration: the history must be read again
    assert rt.read.with_update_eta_at_hand(done.view) is None
    assert "eta_seconds" in asyncio.run(rt.with_update_eta(done.view))  # on a reader thread
    assert queries


def test_a_big_plans_answer_gets_its_estimate_off_the_event_loop(scene: Scene) -> None:
    """An estimate over hundreds of steps takes milliseconds: not on the event loop, even when at hand."""
    rt = scene.rt
    small, big = scene.task("a", "b"), scene.task(*(f"s{i}" for i in range(LOOP_STEPS + 1)))
    views = [rt.service.command_sync(t, "local", "start", {"order": 1}).view for t in (small, big)]
    rt.projector.run_once()
    for view in views:
        rt.read.with_update_eta(view)  # the history is at hand from now on
    made_on: list[str] = []
    original = rt.read.with_update_eta_at_hand

    def recorded(view: dict[str, Any]) -> dict[str, Any] | None:
        made_on.append(threading.current_thread().name)
        return original(view)

    rt.read.with_update_eta_at_hand = recorded  # type: ignore[method-assign]

    async def answers() -> tuple[list[dict[str, Any]], str]:
        return [await rt.with_update_eta(v) for v in views], threading.current_thread().name

    got, loop_thread = asyncio.run(answers())
    assert made_on == [loop_thread]  # the small plan's, on the loop; the big plan's went to a reader thread
    assert got == [rt.read.with_update_eta(v) for v in views] and "eta_seconds" in got[1]
