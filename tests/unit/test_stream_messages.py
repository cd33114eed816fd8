"""WebSocket messages made from events: a completed step's message carries its duration and result."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from domain.task import StepPlan, Task
from projections.messages import StepComplete, messages_for


def test_step_complete_carries_the_steps_result_and_duration() -> None:
    at = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
    task = Task.plan("Import", "alice", [StepPlan("Load"), StepPlan("Check")], at=at)
    task.start_step(1, at=at + timedelta(seconds=1))
    task.complete_step(1, result="1,204 rows", at=at + timedelta(seconds=31))
    task.start_step(2, at=at + timedelta(seconds=32))
    task.complete_step(2, at=at + timedelta(seconds=40))
    events = task.collect_events()
    done = [e for e in events if type(e).__name__ == "StepCompleted"]
    first = messages_for(done[0], task, 7)[0]
    second = messages_for(done[1], task, 9)[0]
    assert isinstance(first, StepComplete) and isinstance(second, StepComplete)
    assert (first.step, first.result, first.duration_ms) == (1, "1,204 rows", 30_000)
    assert (second.step, second.result) == (2, None)
    wire = msgspec.json.decode(msgspec.json.encode(first))
    assert wire["type"] == "step_complete" and wire["result"] == "1,204 rows"
