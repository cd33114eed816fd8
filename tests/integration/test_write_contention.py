"""A command without If-Match that loses races to another process is redone; one that loses every race is
answered 503 `write-contended` and writes nothing. The other writer is a second store on the same file."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from domain.errors import IllegalTransition
from domain.task import StepPlan
from infra.problems import to_problem
from infra.service import (
    MAX_CONFLICT_RETRIES,
    CommandJob,
    NewTask,
    TaskService,
    VersionMismatch,
    WriteContended,
)
from infra.settings import Settings
from infra.store import ProgressApp, open_store

OWNER = "local"


class Interfering(ProgressApp):
    """A store that lets another process append a log line to the task just before each of its saves."""

    other: TaskService
    interfere = 0

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        if self.interfere:
            self.interfere -= 1
            for obj in objs:
                line = {"level": "info", "message": "the other writer"}
                self.other.command_sync(obj.id, OWNER, "log", line)
        return super().save(*objs, **kwargs)


@dataclass
class Scene:
    """Our store and writer, the other process's store, and a running task both can write."""

    ours: Interfering
    other: ProgressApp
    service: TaskService
    task_id: UUID


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    settings = Settings(data_dir=tmp_path)
    ours = Interfering(env=settings.store_env())
    other = open_store(settings)
    ours.other = TaskService(other)
    service = TaskService(ours)
    return Scene(ours, other, service, started(service))


def started(service: TaskService) -> UUID:
    outcome = service.create_sync(OWNER, NewTask("contended", [StepPlan("one"), StepPlan("two")]))
    task_id = UUID(outcome.view["task_id"])
    service.command_sync(task_id, OWNER, "start", {"order": 1})
    return task_id


def test_a_command_that_loses_some_races_is_redone_on_the_fresh_task(scene: Scene) -> None:
    ours, other, service, task_id = scene.ours, scene.other, scene.service, scene.task_id
    before = other.task(task_id).version

    ours.interfere = 3
    outcome = service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 40})

    task = other.task(task_id)
    assert task.version == before + 3 + 1  # three lines from the other writer, then ours, once
    assert outcome.version == task.version
    assert outcome.view["steps"][0]["progress"] == 40


def test_a_pinned_command_that_loses_its_race_is_a_version_mismatch(scene: Scene) -> None:
    ours, other, service, task_id = scene.ours, scene.other, scene.service, scene.task_id
    version = other.task(task_id).version

    ours.interfere = 1
    with pytest.raises(VersionMismatch) as raised:
        service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 40}, if_match=(version,))

    assert (raised.value.expected, raised.value.actual) == ((version,), version + 1)
    assert other.task(task_id).steps[0].percent == 0


def test_a_command_that_loses_every_race_answers_503_and_writes_nothing(scene: Scene) -> None:
    ours, other, service, task_id = scene.ours, scene.other, scene.service, scene.task_id
    before = other.task(task_id).version

    ours.interfere = MAX_CONFLICT_RETRIES
    with pytest.raises(WriteContended) as raised:  # through the writer thread, as HTTP and NATS run it
        asyncio.run(service.command(task_id, OWNER, "progress", {"order": 1, "percent": 40}))

    problem = to_problem(raised.value)
    assert (problem.status, problem.slug, problem.headers["Retry-After"]) == (503, "write-contended", "1")
    task = other.task(task_id)
    assert task.version == before + MAX_CONFLICT_RETRIES  # only the other writer's lines
    assert task.steps[0].percent == 0
    counted = {"command": "progress", "outcome": "unavailable"}
    assert service.metrics.registry.get_sample_value("progressd_commands_total", counted) == 1


def test_a_pinned_command_is_judged_against_the_stored_task_not_our_older_copy(scene: Scene) -> None:
    """Another process moved the task on; a client that saw its version pins it here, and it applies."""
    other, service, task_id = scene.other, scene.service, scene.task_id
    TaskService(other).command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 30})
    seen = other.task(task_id).version

    outcome = service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 60}, if_match=(seen,))

    assert outcome.version == seen + 1 == other.task(task_id).version
    assert other.task(task_id).steps[0].percent == 60


def test_a_task_changed_elsewhere_is_read_again_before_a_command_applies(scene: Scene) -> None:
    """Our copy is behind: the command is redone on the stored task, so the other writer's change stays."""
    other, service, task_id = scene.other, scene.service, scene.task_id
    TaskService(other).command_sync(task_id, OWNER, "pause", {})

    with pytest.raises(IllegalTransition):  # progress on a paused task: judged on the stored task
        service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 60})
    outcome = service.command_sync(task_id, OWNER, "resume", {})

    assert outcome.view["status"] == "running"
    assert [e["type"] for e in other.task_events(task_id)][-2:] == ["Paused", "Resumed"]


def test_commands_queued_behind_a_commit_share_the_next_one(tmp_path: Path) -> None:
    """Group commit: while the writer is busy, commands queue up; they are then applied in order and saved in
    one transaction, and each answer names its own event."""
    app = open_store(Settings(data_dir=tmp_path))
    service = TaskService(app)
    try:
        ids = [started(service) for _ in range(5)]

        def commits() -> float | None:
            return service.metrics.registry.get_sample_value("progressd_store_commits_total")

        commits_before = commits()
        busy = threading.Event()
        release = threading.Event()

        def hold() -> None:  # stands for a slow commit
            busy.set()
            release.wait(10)

        held = service._writer.submit_call(hold)
        assert busy.wait(10)
        lines = [{"level": "info", "message": f"m{i}"} for i in range(40)]
        jobs = [CommandJob(ids[i % 5], OWNER, "log", line) for i, line in enumerate(lines)]
        futures = [service._writer.submit_command(job) for job in jobs]
        release.set()
        held.result(10)
        outcomes = [f.result(10) for f in futures]

        assert (commits() or 0) - (commits_before or 0) == 1
        for i, outcome in enumerate(outcomes):
            events = app.task_events(ids[i % 5])
            mine = next(e for e in events if e["data"].get("message") == f"m{i}")
            assert (outcome.version, outcome.view["task_id"]) == (mine["seq"], str(ids[i % 5]))
        assert len({o.position for o in outcomes}) == 40
    finally:
        service.close()
