"""A compact view leaves out only substep lists that the time estimate does not read: its estimate is the
whole view's, for every state a step can be in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.eta import HistoryTable, eta_fields, history_from_rows
from domain.progress import COMPACT_SUBSTEPS, answer_view, compact_answers, progress_view
from domain.task import StepPlan, Task

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def task_with(substeps: int, steps: int = 8) -> Task:
    plan = [StepPlan(f"step {i}", substeps=tuple(f"s{k}" for k in range(substeps))) for i in range(steps)]
    return Task.plan("big", "alice", plan, at=T0)


def test_the_estimate_of_a_compact_view_is_the_whole_views() -> None:
    task = task_with(7)  # 1 of 7 done is 14.28...%: the view's progress (14) alone would not give it
    history = history_from_rows(
        [
            {
                "step_key": f"step {i}",
                "complexity": "unknown",
                "count": 5,
                "median_ms": 20_000,
                "p90_ms": 60_000,
            }
            for i in range(8)
        ]
    )
    checked = 0
    moves = [
        lambda t: t.start_step(1, at=at(1)),
        lambda t: t.complete_substep(1, 1, at=at(20)),
        lambda t: t.complete_substep(1, 2, at=at(30)),
        lambda t: t.complete_step(1, at=at(40)),
        lambda t: t.start_step(2, at=at(41)),
        lambda t: t.start_step(3, at=at(42)),
        lambda t: t.complete_substep(3, 4, at=at(50)),
        lambda t: t.request_approval(4, "ok?", at=at(55)),
        lambda t: t.report_progress(2, 40.0, at=at(60)),
        lambda t: t.pause(at=at(70)),
    ]
    for move in moves:
        move(task)
        full, compact = progress_view(task), progress_view(task, compact=True)
        assert compact["compact"] is True and "compact" not in full
        for table in (HistoryTable(), history):
            for later in (0, 30, 600):
                now = task.modified_on + timedelta(seconds=later)
                assert eta_fields(compact, table, now) == eta_fields(full, table, now)
                checked += 1
    assert checked == len(moves) * 6


def test_compact_answers_start_past_the_threshold() -> None:
    per_step = COMPACT_SUBSTEPS // 10
    assert not compact_answers(task_with(per_step, steps=10))
    assert compact_answers(task_with(per_step, steps=11))
    small, big = task_with(per_step, steps=10), task_with(per_step, steps=11)
    assert answer_view(small) == progress_view(small)
    assert answer_view(big, 3) == progress_view(big, compact=True, step=3)
    assert [s["substeps"] is not None for s in answer_view(big, 3)["steps"]] == [i == 2 for i in range(11)]
