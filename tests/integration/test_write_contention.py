"""A command without If-Match that loses races to another process is redone; one that loses every race is
answered 503 `write-contended` and writes nothing. The other writer is a second store on the same file."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from domain.task import StepPlan
from infra.problems import to_problem
from infra.service import MAX_CONFLICT_RETRIES, NewTask, TaskService, VersionMismatch, WriteContended
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


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Interfering, ProgressApp]:
    settings = Settings(data_dir=tmp_path)
    ours = Interfering(env=settings.store_env())
    other = open_store(settings)
    ours.other = TaskService(other)
    return ours, other


def started(service: TaskService) -> UUID:
    outcome = service.create_sync(OWNER, NewTask("contended", [StepPlan("one"), StepPlan("two")]))
    task_id = UUID(outcome.view["task_id"])
    service.command_sync(task_id, OWNER, "start", {"order": 1})
    return task_id


def test_a_command_that_loses_some_races_is_redone_on_the_fresh_task(
    stores: tuple[Interfering, ProgressApp],
) -> None:
    ours, other = stores
    service = TaskService(ours)
    task_id = started(service)
    before = other.task(task_id).version

    ours.interfere = 3
    outcome = service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 40})

    task = other.task(task_id)
    assert task.version == before + 3 + 1  # three lines from the other writer, then ours, once
    assert outcome.version == task.version
    assert outcome.view["steps"][0]["progress"] == 40


def test_a_pinned_command_that_loses_its_race_is_a_version_mismatch(
    stores: tuple[Interfering, ProgressApp],
) -> None:
    ours, other = stores
    service = TaskService(ours)
    task_id = started(service)
    version = other.task(task_id).version

    ours.interfere = 1
    with pytest.raises(VersionMismatch) as raised:
        service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 40}, if_match=version)

    assert (raised.value.expected, raised.value.actual) == (version, version + 1)
    assert other.task(task_id).steps[0].percent == 0


def test_a_command_that_loses_every_race_answers_503_and_writes_nothing(
    stores: tuple[Interfering, ProgressApp],
) -> None:
    ours, other = stores
    service = TaskService(ours)
    task_id = started(service)
    before = other.task(task_id).version

    ours.interfere = MAX_CONFLICT_RETRIES
    with pytest.raises(WriteContended) as raised:
        service.command_sync(task_id, OWNER, "progress", {"order": 1, "percent": 40})

    problem = to_problem(raised.value)
    assert (problem.status, problem.slug, problem.headers["Retry-After"]) == (503, "write-contended", "1")
    task = other.task(task_id)
    assert task.version == before + MAX_CONFLICT_RETRIES  # only the other writer's lines
    assert task.steps[0].percent == 0
