"""Snapshots are a cache of the log: a task loaded from one equals the task replayed from its first event."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import replace
from typing import Any
from uuid import UUID

import pytest

from domain.errors import DomainError
from domain.progress import progress_view
from domain.state import StepStatus, TaskStatus
from domain.task import StepPlan, Task
from infra.service import NewTask, TaskService
from infra.settings import Settings
from infra.store import SNAPSHOT_EVERY, ProgressApp, open_store

OWNER = "local"
PLAN = [
    StepPlan("Create tables"),
    StepPlan("Build screens", substeps=("list", "form", "board")),
    StepPlan("Deploy", requires_approval=True),
    StepPlan("Import data", weight=2.0),
]


def state(task: Task) -> dict[str, Any]:
    """Everything a task holds, steps as plain fields, with the types they have (enums stay enums)."""
    out = {k: v for k, v in vars(task).items() if k not in ("steps", "_pending_events")}
    out["steps"] = [dataclasses.asdict(s) | {"status_type": type(s.status)} for s in task.steps]
    out["status_type"] = type(task.status)
    return out


def busy_task(service: TaskService, events: int, seed: int) -> UUID:
    """A task with many events of every kind: progress, substeps, logs, pauses, approvals, retries, keys."""
    rng = random.Random(seed)
    task_id = UUID(service.create_sync(OWNER, _new()).view["task_id"])
    service.command_sync(task_id, OWNER, "start", {"order": 1})
    for n in range(1, 20 * events):
        if service.load(task_id, OWNER).version >= events:
            return task_id
        task = service.load(task_id, OWNER)
        running = [s.order for s in task.steps if s.status is StepStatus.RUNNING]
        order = running[0] if running else 1
        options: list[tuple[str, dict[str, Any]]] = [
            ("progress", {"order": order, "percent": rng.randint(0, 99)}),
            ("log", {"level": rng.choice(["info", "warning"]), "message": f"line {n}", "step": order}),
            ("pause" if task.status is TaskStatus.RUNNING else "resume", {}),
            ("substep", {"order": 2, "n": rng.randint(1, 3)}),
            ("fail", {"order": order, "error": f"boom {n}"}),
            ("retry", {"order": order}),
            ("approve", {"order": 3, "comment": "ok"}),
            ("start", {"order": rng.randint(1, 4)}),
        ]
        name, args = rng.choice(options)
        try:
            service.command_sync(task_id, OWNER, name, args, key=f"k{n}" if n % 3 == 0 else None)
        except DomainError:
            continue  # not legal in this state: nothing was written
    raise AssertionError("the random walk got stuck")


def _new() -> NewTask:
    return NewTask("Cellphone Store CRM", PLAN, tables=4)


def test_a_task_loaded_from_its_snapshots_equals_its_replay(settings: Settings) -> None:
    writer = open_store(settings)
    try:
        task_id = busy_task(TaskService(writer), 2 * SNAPSHOT_EVERY + 120, seed=11)
        latest = writer.task(task_id).version
    finally:
        writer.close()

    with_snapshots = open_store(settings)  # fresh: nothing cached
    without = ProgressApp(env=replace(settings, snapshots=False).store_env())
    try:
        assert without.snapshots is None and with_snapshots.snapshots is not None
        stored = list(with_snapshots.snapshots.get(task_id))
        assert [s.originator_version for s in stored] == [SNAPSHOT_EVERY, 2 * SNAPSHOT_EVERY]
        every = SNAPSHOT_EVERY
        for version in (1, every - 1, every, every + 1, 2 * every + 7, latest):
            from_snapshot = with_snapshots.task(task_id, version)
            replayed = without.task(task_id, version)
            assert from_snapshot.version == replayed.version == version
            assert state(from_snapshot) == state(replayed), version
            assert progress_view(from_snapshot) == progress_view(replayed)
        assert state(with_snapshots.task(task_id)) == state(without.task(task_id))
    finally:
        with_snapshots.close()
        without.close()


def test_commands_go_on_from_a_task_loaded_from_a_snapshot(settings: Settings) -> None:
    """Keys remembered before the snapshot still replay; the task accepts new events after it."""
    app = open_store(settings)
    try:
        service = TaskService(app)
        task_id = UUID(service.create_sync(OWNER, _new()).view["task_id"])
        service.command_sync(task_id, OWNER, "start", {"order": 1})
        first = service.command_sync(task_id, OWNER, "log", {"level": "info", "message": "keyed"}, key="once")
        while app.task(task_id).version < SNAPSHOT_EVERY + 3:
            service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 50})
    finally:
        app.close()

    fresh = open_store(settings)
    try:
        service = TaskService(fresh)
        again = service.command_sync(task_id, OWNER, "log", {"level": "info", "message": "keyed"}, key="once")
        assert again.replayed and again.version == fresh.task(task_id).version
        done = service.command_sync(task_id, OWNER, "complete", {"order": 1})
        assert done.view["steps"][0]["status"] == "completed"
        assert fresh.task(task_id).seen_keys["once"][1] == first.version
    finally:
        fresh.close()


def test_a_snapshot_is_taken_from_the_task_just_saved_unless_the_save_went_past_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library reloads the task from the store to snapshot it; a save whose last event is the snapshot
    version snapshots the object it saved. A save that passes the version in the middle still gets its
    snapshot at that version, by the library's reload."""
    app = open_store(settings)
    reloads: list[int | None] = []
    library_take = app.take_snapshot

    def take_snapshot(aggregate_id: UUID, version: int | None = None, projector_func: Any = None) -> None:
        reloads.append(version)
        library_take(aggregate_id, version, projector_func)

    monkeypatch.setattr(app, "take_snapshot", take_snapshot)
    try:
        assert app.snapshots is not None
        service = TaskService(app)
        one = UUID(service.create_sync(OWNER, _new()).view["task_id"])
        service.command_sync(one, OWNER, "start", {"order": 1})
        while app.task(one).version < SNAPSHOT_EVERY:
            service.command_sync(one, OWNER, "progress", {"order": 1, "percent": 40})
        [snapshot] = app.snapshots.get(one)
        assert snapshot.originator_version == SNAPSHOT_EVERY and reloads == []

        other = service.load(UUID(service.create_sync(OWNER, _new()).view["task_id"]), OWNER)
        other.start_step(1)
        for i in range(SNAPSHOT_EVERY + 5):  # one save of 502 events, the 500th in the middle
            other.report_progress(1, float(i % 100))
        app.save(other)
        assert reloads == [SNAPSHOT_EVERY]
        [snapshot] = app.snapshots.get(other.id)
        assert snapshot.originator_version == SNAPSHOT_EVERY

        fresh = open_store(settings)  # nothing cached: both load from their snapshots
        without = ProgressApp(env=replace(settings, snapshots=False).store_env())
        try:
            for task_id in (one, other.id):
                assert state(fresh.task(task_id)) == state(without.task(task_id))
                assert state(fresh.task(task_id, SNAPSHOT_EVERY)) == state(
                    without.task(task_id, SNAPSHOT_EVERY)
                )
        finally:
            fresh.close()
            without.close()
    finally:
        app.close()
