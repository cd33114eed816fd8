"""The ETA estimator on hand-built histories: behaviour, not accuracy (that lives in bench/eta.py).

Pure unit tests: tasks are driven with explicit timestamps, histories are built by hand, `now` is given.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.eta import (
    Estimate,
    StepHistory,
    estimate,
    eta_fields,
    history_from_rows,
    normalise_step_name,
)
from domain.progress import progress_view
from domain.task import StepPlan, Task
from projections import model

T0 = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
NAMES = ("Create database tables", "Generate application UI", "Add search and filters", "Configure workflows")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def plan(steps: int = 4, tables: int | None = 4, substeps: int = 0) -> Task:
    plans = [StepPlan(name, substeps=tuple(f"part {k}" for k in range(substeps))) for name in NAMES[:steps]]
    return Task.plan("Cellphone Store CRM", "agent-7", plans, tables=tables, at=T0)


def samples(median_s: float, n: int, spread: float = 0.2) -> tuple[int, ...]:
    """n durations (ms) spread log-symmetrically around a median: a deterministic, well-behaved history."""
    out = []
    for i in range(n):
        q = (i + 0.5) / n  # evenly spaced quantiles, shuffled by a fixed stride so recent is not sorted
        z = math.sqrt(2) * math.erf(2 * q - 1) * 1.2  # roughly normal scores in (-1.7, 1.7)
        out.append(round(1000 * median_s * math.exp(spread * z)))
    stride = 7 if n % 7 else 11
    return tuple(out[(i * stride) % n] for i in range(n))


def history(
    median_s: float | Sequence[float] = 60.0, n: int = 200, complexity: str = "medium", spread: float = 0.2
) -> dict[tuple[str, str], StepHistory]:
    medians = [median_s] * len(NAMES) if isinstance(median_s, int | float) else list(median_s)
    out = {}
    for name, med in zip(NAMES, medians, strict=True):
        recent = samples(med, n, spread)
        ordered = sorted(recent)
        row = StepHistory(n, float(ordered[n // 2]), float(ordered[int(0.9 * n)]), recent)
        out[(normalise_step_name(name), complexity)] = row
        out[(normalise_step_name(name), "any")] = row
    return out


def eta(task: Task, hist: dict[tuple[str, str], StepHistory], now: datetime) -> Estimate:
    return estimate(progress_view(task), hist, now)


def finish_steps(task: Task, durations: Sequence[float], start: float = 0.0) -> float:
    """Run the first steps back to back with the given durations (seconds); return when the last ended."""
    clock = start
    for order, seconds in enumerate(durations, start=1):
        task.start_step(order, at=at(clock))
        clock += seconds
        task.complete_step(order, at=at(clock))
    return clock


# ------------------------------------------------------------------------------------------------------
# No history: a prior, never absurd.
# ------------------------------------------------------------------------------------------------------


def test_no_history_gives_a_finite_positive_eta_with_an_interval() -> None:
    e = eta(plan(), {}, T0)
    assert e.eta_seconds is not None and e.eta_low_seconds is not None and e.eta_high_seconds is not None
    assert 0 < e.eta_low_seconds <= e.eta_seconds <= e.eta_high_seconds
    # Four steps of about a minute each, give or take: minutes, not seconds or days.
    assert 60 <= e.eta_seconds <= 30 * 60
    assert e.eta_confidence == "low"
    assert "prior" in e.basis


def test_no_history_learns_from_the_tasks_own_finished_steps() -> None:
    fast, slow = plan(), plan()
    finish_steps(fast, [5, 5])
    finish_steps(slow, [600, 600])
    e_fast = eta(fast, {}, at(10))
    e_slow = eta(slow, {}, at(1200))
    assert e_fast.eta_seconds is not None and e_slow.eta_seconds is not None
    # Two steps left: like the two that finished, roughly.
    assert 5 <= e_fast.eta_seconds <= 60
    assert 600 <= e_slow.eta_seconds <= 3600


def test_no_history_and_a_tiny_rate_is_still_bounded() -> None:
    task = plan(steps=2)
    task.start_step(1, at=at(0))
    task.report_progress(1, 1, at=at(10))
    e = eta(task, {}, at(10))
    assert e.eta_seconds is not None and e.eta_high_seconds is not None
    assert 0 < e.eta_seconds < 6 * 3600 and e.eta_high_seconds < 24 * 3600


# ------------------------------------------------------------------------------------------------------
# History: the estimate tracks it, and gets surer with more of it.
# ------------------------------------------------------------------------------------------------------


def test_with_history_the_eta_tracks_the_steps_usual_durations() -> None:
    e = eta(plan(), history([30, 90, 60, 120]), T0)
    assert e.eta_seconds is not None
    assert 300 * 0.8 <= e.eta_seconds <= 300 * 1.15
    doubled = eta(plan(), history([60, 180, 120, 240]), T0)
    assert doubled.eta_seconds is not None
    assert doubled.eta_seconds == pytest.approx(2 * e.eta_seconds, rel=0.1)


def test_more_history_gives_a_narrower_interval() -> None:
    few = eta(plan(), history(60, n=3), T0)
    many = eta(plan(), history(60, n=300), T0)
    assert few.eta_low_seconds is not None and few.eta_high_seconds is not None
    assert many.eta_low_seconds is not None and many.eta_high_seconds is not None
    assert many.eta_high_seconds / many.eta_low_seconds < few.eta_high_seconds / few.eta_low_seconds


def test_history_at_any_complexity_is_used_when_the_class_has_none() -> None:
    hist = {k: v for k, v in history([30, 90, 60, 120], complexity="complex").items() if k[1] == "any"}
    e = eta(plan(tables=4), hist, T0)
    assert e.eta_seconds is not None
    assert "history" in e.basis
    assert 150 <= e.eta_seconds <= 600


def test_a_slower_task_stays_slower_for_the_steps_it_has_left() -> None:
    hist = history(60)
    usual, slow = plan(), plan()
    finish_steps(usual, [60, 60])
    finish_steps(slow, [150, 150])
    e_usual = eta(usual, hist, at(120))
    e_slow = eta(slow, hist, at(300))
    assert e_usual.eta_seconds is not None and e_slow.eta_seconds is not None
    assert 100 <= e_usual.eta_seconds <= 140
    assert e_slow.eta_seconds >= 1.6 * e_usual.eta_seconds
    assert "speed x1.00" not in e_slow.basis


def test_the_running_steps_rate_moves_the_eta() -> None:
    hist = history(100)
    behind, ahead = plan(steps=1), plan(steps=1)
    for task, percent in ((behind, 10), (ahead, 90)):
        task.start_step(1, at=at(0))
        task.report_progress(1, percent, at=at(60))
    e_behind = eta(behind, hist, at(60))
    e_ahead = eta(ahead, hist, at(60))
    assert e_behind.eta_seconds is not None and e_ahead.eta_seconds is not None
    assert e_ahead.eta_seconds < e_behind.eta_seconds
    assert "step 1 at 90%" in e_ahead.basis


def test_substeps_done_count_as_progress() -> None:
    hist = history(100)
    none_done, most_done = plan(steps=1, substeps=4), plan(steps=1, substeps=4)
    for task in (none_done, most_done):
        task.start_step(1, at=at(0))
    for n in (1, 2, 3):
        most_done.complete_substep(1, n, at=at(20 * n))
    e_none = eta(none_done, hist, at(60))
    e_most = eta(most_done, hist, at(60))
    assert e_none.eta_seconds is not None and e_most.eta_seconds is not None
    assert e_most.eta_seconds < e_none.eta_seconds


def test_time_passing_on_a_running_step_counts_as_work() -> None:
    hist = history(60, spread=0.1)
    task = plan(steps=1)
    task.start_step(1, at=at(0))
    early = eta(task, hist, at(1))
    later = eta(task, hist, at(40))
    assert early.eta_seconds is not None and later.eta_seconds is not None
    assert later.eta_seconds < early.eta_seconds - 20


# ------------------------------------------------------------------------------------------------------
# Paused and approval-waiting time is not work.
# ------------------------------------------------------------------------------------------------------


def test_paused_time_is_not_counted_as_work() -> None:
    hist = history(60)
    straight, paused = plan(), plan()
    straight.start_step(1, at=at(0))
    paused.start_step(1, at=at(0))
    paused.pause(at=at(10))
    paused.resume(at=at(3610))
    e_straight = eta(straight, hist, at(30))
    e_paused = eta(paused, hist, at(3630))
    assert e_paused == e_straight


def test_while_paused_the_clock_stands_still() -> None:
    hist = history(60)
    task = plan()
    task.start_step(1, at=at(0))
    task.pause(at=at(20))
    e_then = eta(task, hist, at(20))
    e_hour_later = eta(task, hist, at(3620))
    assert e_hour_later.eta_seconds == e_then.eta_seconds
    assert "paused" in e_hour_later.basis
    assert not e_hour_later.needs_attention


def test_approval_wait_is_not_work_and_needs_attention() -> None:
    hist = history(60)
    task = Task.plan(
        "CRM",
        "agent-7",
        [StepPlan(NAMES[0], requires_approval=True), *(StepPlan(n) for n in NAMES[1:])],
        tables=4,
        at=T0,
    )
    task.start_step(1, at=at(0))  # waits for approval
    waiting = eta(task, hist, at(3600))
    assert waiting.needs_attention
    task.approve(1, at=at(3600))
    approved = eta(task, hist, at(3610))
    fresh = plan()
    fresh.start_step(1, at=at(0))
    assert approved.eta_seconds == eta(fresh, hist, at(10)).eta_seconds


# ------------------------------------------------------------------------------------------------------
# Stalls are flagged, not hidden.
# ------------------------------------------------------------------------------------------------------


def test_a_step_without_progress_far_beyond_its_history_is_flagged() -> None:
    hist = history(60)
    task = plan()
    task.start_step(1, at=at(0))
    normal = eta(task, hist, at(50))
    assert not normal.needs_attention and normal.stalled_step is None
    stalled = eta(task, hist, at(600))
    assert stalled.needs_attention and stalled.stalled_step == 1
    assert stalled.eta_confidence == "low"
    assert "stalled" in stalled.basis
    assert stalled.eta_seconds is not None and stalled.eta_seconds > 0
    # The progress JSON says which step, so a page can say so rather than only "needs attention".
    assert eta_fields(progress_view(task), hist, at(600))["stalled_step"] == 1
    assert eta_fields(progress_view(task), hist, at(50))["stalled_step"] is None


def test_a_long_step_that_keeps_reporting_progress_is_not_stalled() -> None:
    hist = history(60)
    task = plan()
    task.start_step(1, at=at(0))
    for k in range(1, 20):
        task.report_progress(1, 5 * k, at=at(30 * k))
    e = eta(task, hist, at(575))
    assert not e.needs_attention and e.stalled_step is None


# ------------------------------------------------------------------------------------------------------
# Finished tasks, and the shape of the answer.
# ------------------------------------------------------------------------------------------------------


def test_a_completed_task_has_no_eta() -> None:
    task = plan(steps=2)
    end = finish_steps(task, [30, 30])
    e = eta(task, history(60), at(end))
    assert (e.eta_seconds, e.eta_low_seconds, e.eta_high_seconds, e.eta_confidence) == (None,) * 4
    assert not e.needs_attention


def test_a_cancelled_task_has_no_eta() -> None:
    task = plan()
    task.start_step(1, at=at(0))
    task.cancel("no longer needed", at=at(5))
    assert eta(task, history(60), at(10)).eta_seconds is None


def test_a_failed_task_has_no_eta_and_needs_attention() -> None:
    task = plan()
    task.start_step(1, at=at(0))
    task.fail_step(1, "boom", at=at(5))
    e = eta(task, history(60), at(10))
    assert e.eta_seconds is None and e.needs_attention


def test_the_last_steps_remaining_time_shrinks_to_seconds() -> None:
    hist = history(60, spread=0.1)
    task = plan(steps=2)
    finish_steps(task, [60])
    task.start_step(2, at=at(60))
    task.report_progress(2, 95, at=at(116))
    e = eta(task, hist, at(117))
    assert e.eta_seconds is not None and e.eta_seconds <= 15


def test_the_same_input_gives_the_same_estimate() -> None:
    task = plan()
    finish_steps(task, [50])
    task.start_step(2, at=at(50))
    assert eta(task, history(60), at(70)) == eta(task, history(60), at(70))


def test_fields_are_the_progress_json_members() -> None:
    e = eta(plan(), history(60), T0)
    assert set(e.fields()) == {
        "eta_seconds",
        "eta_low_seconds",
        "eta_high_seconds",
        "eta_confidence",
        "needs_attention",
    }
    json.dumps(e.fields())


def test_eta_fields_count_down_from_the_views_updated_at() -> None:
    hist = history(60)
    task = plan()
    finish_steps(task, [55])
    task.start_step(2, at=at(55))
    view = progress_view(task)  # updated_at = 55 s
    e = eta(task, hist, at(75))
    fields = eta_fields(view, hist, at(75))
    assert e.eta_seconds is not None and e.eta_low_seconds is not None and e.eta_high_seconds is not None
    # A client subtracts (now - updated_at) = 20 s while the task runs, and gets the estimate made at now.
    assert fields["eta_seconds"] - 20 == e.eta_seconds
    assert (fields["eta_low_seconds"] - 20, fields["eta_high_seconds"] - 20) == (
        e.eta_low_seconds,
        e.eta_high_seconds,
    )
    assert fields["eta_confidence"] == e.eta_confidence and fields["needs_attention"] is False


def test_eta_fields_keep_the_views_own_attention_and_nothing_for_a_finished_task() -> None:
    task = plan()
    task.start_step(1, at=at(0))
    task.request_approval(1, "ok to migrate?", at=at(5))
    assert eta_fields(progress_view(task), history(60), at(60))["needs_attention"] is True
    done = plan(steps=1)
    finish_steps(done, [10])
    fields = eta_fields(progress_view(done), history(60), at(20))
    assert fields["eta_seconds"] is None and fields["needs_attention"] is False


def test_the_estimate_reads_the_view_as_the_api_serves_it() -> None:
    task = plan()
    finish_steps(task, [55])
    task.start_step(2, at=at(55))
    view = json.loads(json.dumps(progress_view(task)))
    assert estimate(view, history(60), at(80)) == eta(task, history(60), at(80))


@settings(max_examples=40, deadline=None)
@given(
    durations=st.lists(st.floats(0.5, 5000), min_size=0, max_size=3),
    running_for=st.floats(0, 20_000),
    percent=st.integers(0, 100),
    with_history=st.booleans(),
    tables=st.one_of(st.none(), st.integers(1, 12)),
)
def test_the_interval_always_holds_the_point_and_nothing_is_negative(
    durations: list[float], running_for: float, percent: int, with_history: bool, tables: int | None
) -> None:
    task = plan(tables=tables)
    clock = finish_steps(task, durations)
    order = len(durations) + 1
    task.start_step(order, at=at(clock))
    if percent:
        task.report_progress(order, percent, at=at(clock + running_for / 2))
    e = eta(
        task,
        history(90, complexity=task.complexity or "unknown") if with_history else {},
        at(clock + running_for),
    )
    assert e.eta_seconds is not None and e.eta_low_seconds is not None and e.eta_high_seconds is not None
    assert 0 <= e.eta_low_seconds <= e.eta_seconds <= e.eta_high_seconds
    assert e.eta_seconds >= 1 and math.isfinite(e.eta_high_seconds)
    assert e.eta_confidence in ("low", "medium", "high")


# ------------------------------------------------------------------------------------------------------
# Reading step_stats rows.
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Create database tables", "Generate form for table 3", "  Deploy!! (v2) ", "Set-up: auth"]
)
def test_step_names_group_as_the_projection_groups_them(name: str) -> None:
    assert normalise_step_name(name) == model.normalise_step_name(name)


def test_history_from_step_stats_rows() -> None:
    rows: list[dict[str, Any]] = [
        {
            "step_key": "deploy",
            "complexity": "any",
            "count": 3,
            "median_ms": 20.0,
            "p90_ms": 30.0,
            "recent": "[10, 20, 30]",
        },
        {"step_key": "deploy", "complexity": "simple", "count": 2, "median_ms": 15.0, "p90_ms": 20.0},
    ]
    hist = history_from_rows(rows)
    assert hist[("deploy", "any")] == StepHistory(3, 20.0, 30.0, (10, 20, 30))
    assert hist[("deploy", "simple")] == StepHistory(2, 15.0, 20.0, ())


def test_rows_without_recent_still_give_an_estimate() -> None:
    bare = {key: StepHistory(h.count, h.median_ms, h.p90_ms) for key, h in history(60).items()}
    e = eta(plan(), bare, T0)
    assert e.eta_seconds is not None and 180 <= e.eta_seconds <= 300


# ------------------------------------------------------------------------------------------------------
# The Monte Carlo's parts.
# ------------------------------------------------------------------------------------------------------


def test_a_task_needing_several_blocks_of_draws_gets_independent_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from domain.eta import _BLOCK_ROWS, _noise

    # A fresh table cache: an earlier estimate in this process (a 200-step plan) may have grown it already.
    monkeypatch.setattr("domain.eta._tables", {})

    z, u = _noise(400, 3 * _BLOCK_ROWS + 1)  # four blocks
    assert z.shape == u.shape == (4 * _BLOCK_ROWS, 400)
    # No row repeats another (a repeat would make two steps' durations move together).
    assert len({row.tobytes() for row in z}) == len(z) and len({row.tobytes() for row in u}) == len(u)
    assert abs(float(z.mean())) < 0.02 and 0.98 < float(z.std()) < 1.02
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0 and abs(float(u.mean()) - 0.5) < 0.01
    shorter, _ = _noise(400, 10)
    assert (
        shorter[:10] == z[:10]
    ).all()  # the same table every time: an estimate is a function of its inputs


@pytest.mark.parametrize("steps", [8, 150])
def test_pending_steps_draw_their_durations_independently(steps: int) -> None:
    import numpy as np

    from domain.eta import DEFAULT_PARAMS, _Latent, _Pending, _simulate

    known = _Latent(1e-9)  # the task's speed and the references' error known exactly: only step noise left
    known.d = 1e12
    step = _Pending(mu=math.log(60_000), load=0.0, sd=0.3, tail_p=0.0, tail_shift=0.0, tail_var=0.0)
    one = _simulate(known, [], [step], DEFAULT_PARAMS)
    many = _simulate(known, [], [step] * steps, DEFAULT_PARAMS)
    # Independent steps: the sum's variance is `steps` times one step's. Steps sharing draws would add more.
    ratio = float(np.var(many)) / float(np.var(one))
    assert 0.7 * steps < ratio < 1.3 * steps
    assert float(np.mean(many)) == pytest.approx(steps * float(np.mean(one)), rel=0.02)


def test_a_task_with_a_hundred_steps_is_estimated_from_every_one() -> None:
    plans = [StepPlan(f"Generate form for table {n}") for n in range(1, 101)]
    task = Task.plan("Big import", "agent-7", plans, tables=8, at=T0)
    key = normalise_step_name("Generate form for table 1")
    recent = samples(30.0, 200)
    ordered = sorted(recent)
    row = StepHistory(200, float(ordered[100]), float(ordered[180]), recent)
    hist = {(key, "complex"): row, (key, "any"): row}
    e = estimate(progress_view(task), hist, T0)
    assert e.eta_seconds is not None
    assert 100 * 30 * 0.75 <= e.eta_seconds <= 100 * 30 * 1.25
    assert e == estimate(progress_view(task), hist, T0)


@settings(max_examples=200, deadline=None)
@given(
    # Durations in ms, or none: subnormal floats round a pass's comparison differently and are no duration.
    st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 1e7)), min_size=1, max_size=60),
    st.one_of(st.just(0.0), st.floats(1e-3, 1e7)),
    st.sampled_from([0.2, 0.3, 0.5, 0.99, 1.0, 2.0]),
)
def test_the_share_within_the_band_counts_what_a_pass_over_the_draws_counts_bar_edge_rounding(
    draws: list[float], eta_ms: float, band: float
) -> None:
    import numpy as np

    from domain.eta import _share_within

    ordered = np.sort(np.array(draws))
    brute = float(np.mean(np.abs(eta_ms - ordered) <= band * ordered))
    assert _share_within(ordered, eta_ms, band) == pytest.approx(brute, abs=1.5 / len(draws))


def test_the_normal_quantile_table_is_close_to_the_exact_quantile() -> None:
    from statistics import NormalDist

    import numpy as np

    from domain.eta import _inv_cdf

    ps = np.concatenate([np.geomspace(1e-12, 0.5, 2000), 1 - np.geomspace(1e-12, 0.5, 2000)])
    exact = np.array([NormalDist().inv_cdf(float(p)) for p in ps])
    assert float(np.max(np.abs(_inv_cdf(ps) - exact))) < 2e-4
