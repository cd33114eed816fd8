"""The ETA benchmark's oracles: what each one knows shows in its answers."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from bench.eta import TASK_SIGMA, Case, bayes_oracle_ms, oracle_ms

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
MEDIAN_MS, SIGMA = 60_000.0, 0.3


def case(steps: int, speed: float) -> Case:
    """A run of `steps` steps whose expected medians already include its speed factor, as the simulator's."""
    return Case("k", "medium", NOW, NOW, lambda: None, [(MEDIAN_MS * speed, SIGMA)] * steps, speed)  # type: ignore[arg-type,return-value]


def view(done_ms: list[float], pending: int) -> dict[str, object]:
    steps = [{"order": i + 1, "status": "completed", "work_ms": ms} for i, ms in enumerate(done_ms)]
    steps += [{"order": len(steps) + i + 1, "status": "pending", "work_ms": 0} for i in range(pending)]
    return {"status": "running", "updated_at": NOW.isoformat(), "steps": steps}


def test_with_nothing_finished_the_bayes_oracle_knows_only_the_population() -> None:
    c, v = case(6, speed=2.0), view([], 6)
    population = oracle_ms(v, c, NOW, knows_speed=False)
    assert population == pytest.approx(6 * MEDIAN_MS * math.exp((SIGMA**2 + TASK_SIGMA**2) / 2), rel=1e-9)
    assert bayes_oracle_ms(v, c, NOW) == pytest.approx(population, rel=0.01)
    assert oracle_ms(v, c, NOW) == pytest.approx(2 * 6 * MEDIAN_MS * math.exp(SIGMA**2 / 2), rel=1e-9)


def test_finished_steps_teach_the_bayes_oracle_the_runs_speed() -> None:
    """Steps that all took twice their median move it towards the oracle that knows the speed is 2."""
    few = bayes_oracle_ms(view([2 * MEDIAN_MS] * 2, 6), case(8, 2.0), NOW)
    many = bayes_oracle_ms(view([2 * MEDIAN_MS] * 20, 6), case(26, 2.0), NOW)
    knows = oracle_ms(view([2 * MEDIAN_MS] * 20, 6), case(26, 2.0), NOW)
    population = oracle_ms(view([2 * MEDIAN_MS] * 20, 6), case(26, 2.0), NOW, knows_speed=False)
    assert population < few < many < knows * 1.02
    assert many == pytest.approx(knows, rel=0.1)


def test_one_stalled_step_is_not_taken_for_a_slow_run() -> None:
    """Among steps at their median, one that took six times as long barely moves the learned speed."""
    steady = bayes_oracle_ms(view([MEDIAN_MS] * 5, 4), case(9, 1.0), NOW)
    stalled = bayes_oracle_ms(view([MEDIAN_MS] * 4 + [6 * MEDIAN_MS], 4), case(9, 1.0), NOW)
    assert steady < stalled < steady * 1.15
