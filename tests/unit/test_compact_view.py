"""A compact view leaves out only substep lists that the time estimate does not read: its estimate is the
whole view's, for every state a step can be in. The stored view reuses encoded substep lists: same JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from domain.eta import HistoryTable, eta_fields, history_from_rows
from domain.progress import COMPACT_SUBSTEPS, answer_view, compact_answers, progress_view
from domain.task import StepPlan, Task
from projections import task_view
from projections.task_view import KEPT, LONGEST, SHORTEST, view_json

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


def test_the_stored_view_with_reused_substep_lists_is_the_same_json() -> None:
    encode = msgspec.json.Encoder().encode
    task = task_with(SHORTEST + 3, steps=6)
    # a plan with long lists (kept) and one with short ones (built each time)
    short = task_with(2, steps=3)
    moves = [
        lambda t: t.start_step(1, at=at(1)),
        lambda t: t.complete_substep(1, 1, at=at(2)),
        lambda t: t.complete_step(1, at=at(3)),
        lambda t: t.start_step(2, at=at(4)),
        lambda t: t.complete_substep(2, 2, at=at(5)),
        lambda t: t.skip_step(3, at=at(6)),
        lambda t: t.pause(at=at(7)),
    ]
    for move in moves:
        for t in (task, short):
            move(t)
            assert encode(view_json(t)) == encode(progress_view(t))
            assert encode(view_json(t)) == encode(progress_view(t))  # from the kept lists


def test_kept_substep_lists_are_bounded() -> None:
    for i in range(KEPT + 50):
        task = Task.plan(
            f"t{i}", "alice", [StepPlan("a", substeps=tuple(f"{i}-{k}" for k in range(SHORTEST)))]
        )
        view_json(task)
    assert len(task_view._lists) <= KEPT
    huge = Task.plan("h", "alice", [StepPlan("a", substeps=tuple("x" * 200 for _ in range(40)))])
    view_json(huge)  # over LONGEST bytes: encoded each time, not kept
    step = huge.steps[0]
    assert (tuple(step.substeps), tuple(step.done)) not in task_view._lists
    assert all(len(raw) <= LONGEST for raw in task_view._lists.values())
