"""An event written in an older schema is upcast when replayed, so old logs stay readable."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

from eventsourcing.persistence import StoredEvent

from domain.progress import progress_view
from domain.task import StepPlan, Task
from infra.settings import Settings
from infra.store import open_store


def test_v1_created_event_is_upcast_on_replay(tmp_path: Path) -> None:
    app = open_store(Settings(data_dir=tmp_path))
    task_id = uuid4()
    # The version-1 shape: steps were bare names, and there was no complexity, link or idempotency key.
    v1_state = {
        "timestamp": {
            "_type_": "datetime_iso",
            "_data_": datetime(2024, 1, 15, 10, 0, tzinfo=UTC).isoformat(),
        },
        "originator_topic": "domain.task:Task",
        "title": "Cellphone Store CRM",
        "owner": "alice",
        "steps": ["Create database tables", "Generate application UI"],
    }
    stored = StoredEvent(
        originator_id=task_id,
        originator_version=1,
        topic="domain.task:Task.Created",
        state=json.dumps(v1_state).encode(),
    )
    app.recorder.insert_events([stored])

    task = app.task(task_id)
    assert isinstance(task, Task)
    assert [s.name for s in task.steps] == ["Create database tables", "Generate application UI"]
    assert [s.weight for s in task.steps] == [1.0, 1.0]
    assert task.complexity is None
    view = progress_view(task)
    assert view["total_steps"] == 2 and view["status"] == "pending"

    # New events are written in today's shape and carry their version.
    task.start_step(1)
    app.save(task)
    assert app.task(task_id).steps[0].status == "running"
    assert b'"class_version":' not in app.recorder.select_events(task_id, lte=1)[0].state
    new = Task.plan("Deploy", "alice", [StepPlan("Ship")])
    app.save(new)
    assert b'"class_version":3' in app.recorder.select_events(new.id, lte=1)[0].state
    assert app.task(task_id).imported is False  # upcast through v2 to v3
    app.close()


def test_v1_step_completed_event_replays_with_no_step_result(tmp_path: Path) -> None:
    app = open_store(Settings(data_dir=tmp_path))
    task = Task.plan("Import", "alice", [StepPlan("Load"), StepPlan("Check")])
    task.start_step(1)
    app.save(task)
    # The version-1 shape of StepCompleted: no result, no class_version.
    at = {"_type_": "datetime_iso", "_data_": datetime(2024, 1, 15, 10, 5, tzinfo=UTC).isoformat()}
    v1_state = {"timestamp": at, "order": 1, "idem": None}
    app.recorder.insert_events(
        [
            StoredEvent(
                originator_id=task.id,
                originator_version=task.version + 1,
                topic="domain.task:Task.StepCompleted",
                state=json.dumps(v1_state).encode(),
            )
        ]
    )
    replayed = app.task(task.id)
    assert replayed.steps[0].status == "completed" and replayed.steps[0].result is None
    assert progress_view(replayed)["steps"][0]["result"] is None
    # Today's events carry the step's result, and say their version.
    replayed.start_step(2)
    replayed.complete_step(2, result="1,204 rows checked")
    app.save(replayed)
    again = app.task(task.id)
    assert [s.result for s in again.steps] == [None, "1,204 rows checked"]
    assert again.result == "1,204 rows checked"  # the step that completed the task gives the task's result
    assert b'"class_version":2' in app.recorder.select_events(task.id, gt=again.version - 2)[0].state
    app.close()
