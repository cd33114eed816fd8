"""The estimator's history is read again only when a step has finished, not on every event."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from domain.task import StepPlan
from infra.runtime import Runtime
from infra.service import NewTask
from infra.settings import Settings


def test_the_history_is_reread_when_a_step_finishes_and_only_then(tmp_path: Path) -> None:
    rt = Runtime(Settings(data_dir=tmp_path))
    try:
        service = rt.service
        outcome = service.create_sync("local", NewTask("import", [StepPlan("Load rows"), StepPlan("Check")]))
        task_id = UUID(outcome.view["task_id"])
        service.command_sync(task_id, "local", "start", {"order": 1})
        rt.projector.run_once()
        empty = rt.read.eta_history()
        assert dict(empty) == {}

        for percent in (10, 50, 90):  # events that finish no step
            service.command_sync(task_id, "local", "progress", {"order": 1, "percent": percent})
            rt.projector.run_once()
            assert rt.read.eta_history() is empty  # the same object: not read again

        service.command_sync(task_id, "local", "complete", {"order": 1})
        rt.projector.run_once()
        learned = rt.read.eta_history()
        assert learned is not empty
        assert sorted((key, h.count) for key, h in learned.items()) == [
            (("load rows", "any"), 1),
            (("load rows", "unknown"), 1),
        ]
    finally:
        rt.close()
