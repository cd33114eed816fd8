"""How good are the time estimates? `python -m bench.eta [--quick] [--traces f.csv] [--out bench/RESULTS.md]`.

A simulator produces tasks with 1-8 tables: per step kind a log-normal duration with complexity and table
effects, per-task speed factors, run-to-run noise, rare stalls that freeze progress, pauses, workers that
report no progress at all, and a speed that drifts over the weeks. Every task is written as real events
(explicit `at=` timestamps) into a real store; the `step_stats` projection learns from the log. Held-out
tasks are replayed in time order: their history is the `step_stats` table as it stood when they started,
their view at 10/25/50/75% of their true duration is read back through the `event_index` projection and the
store (the API's time travel), and `domain.eta.estimate` is asked with `now` = that moment. Side by side:
the naive linear ETA (elapsed / percent) and three oracles that know every step's expected duration but not
its noise: one knows the run's own speed factor, one counts it as noise, and the Bayes oracle learns it from
the run's finished steps under the simulator's true model (the best the data allow). `--traces` does the
same on recorded runs (no oracle there).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

import numpy as np

from domain.eta import History, estimate, history_from_rows
from domain.progress import iso, progress_view
from domain.task import StepPlan, Task, complexity_class
from infra.history_import import import_id, read_traces, trace_task
from infra.runtime import Runtime
from infra.settings import Settings

CHECKPOINTS = (0.10, 0.25, 0.50, 0.75)
CLASSES = ("simple", "medium", "complex")
BANDS = {"simple": 0.20, "medium": 0.30, "complex": 0.50}
METHODS = ("estimator", "linear", "oracle", "oracle w/o speed", "Bayes oracle")
SIM_NAMESPACE = UUID("3c0e9a52-6f1d-4b7e-8a2c-9d4f1e6b7a30")
T0 = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)

# ---- the simulator ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A step kind: median seconds at one table, run-to-run log spread, how it grows with tables."""

    base_s: float
    sigma: float
    table_exp: float = 0.0
    substeps: str = ""  # "tables": one per table, "views": 2-5, "": none
    share: float = 1.0  # share of tasks whose plan has it


KINDS: tuple[tuple[str, Kind], ...] = (
    ("Create database tables", Kind(40, 0.30, 0.8, "tables")),
    ("Import sample data", Kind(60, 0.45, 0.6, share=0.5)),
    ("Generate application UI", Kind(150, 0.35, 0.5, "views")),
    ("Generate form for table {n}", Kind(45, 0.30)),  # one per table; names differ only in the number
    ("Add search and filters", Kind(80, 0.35, 0.5)),
    ("Set up authentication", Kind(90, 0.30, share=0.4)),
    ("Configure workflows", Kind(120, 0.40, 0.3)),
    ("Write tests", Kind(100, 0.30, 0.6)),
    ("Deploy", Kind(50, 0.25)),
)
CLASS_FACTOR = {"simple": 0.9, "medium": 1.0, "complex": 1.2}
TASK_SIGMA = 0.30  # per-task speed factor, log sd: some tasks run uniformly slower or faster
DRIFT_SIGMA_PER_DAY = 0.025  # random walk of the global speed: about +-20% over two months
STALL_SHARE, STALL_TIMES = 0.03, (3.0, 8.0)  # a stalled step takes 3-8 times as long, progress frozen
PAUSE_SHARE, PAUSE_MINUTES = 0.05, (2.0, 30.0)
SILENT_SHARE = 0.25  # workers that only report start and complete
ARRIVAL_MINUTES = 90.0  # mean time between task starts
SIMULATOR = (
    f"- simulator: {len(KINDS)} step kinds (one form step per table), log-normal run-to-run noise of log sd "
    f"0.25-0.45 (±28-57% at one sd), a per-run speed factor (log sd {TASK_SIGMA}), complexity x0.9/1.0/1.2 "
    f"and tables^0-0.8 per kind, {STALL_SHARE:.0%} of steps stall {STALL_TIMES[0]:.0f}-{STALL_TIMES[1]:.0f} "
    f"times longer with progress frozen, {PAUSE_SHARE:.0%} of runs pause 2-30 min (the truth includes it), "
    f"{SILENT_SHARE:.0%} of workers report no progress, and the speed drifts {DRIFT_SIGMA_PER_DAY:.1%} a day "
    "(a random walk in log)."
)


@dataclass
class SimStep:
    """One step as the simulator decided it: its expected median (what the oracle knows) and what happened."""

    name: str
    median_ms: float
    sigma: float
    duration_ms: int
    substeps: int
    marks: list[tuple[int, str, int]] = field(default_factory=list)  # (offset ms, progress|substep, arg)
    freeze: tuple[int, int] | None = None  # work-time window with no progress (a stall)


@dataclass
class SimTask:
    """A simulated run: when it starts, its tables, speed, steps and an optional pause."""

    index: int
    start: datetime
    tables: int
    speed: float
    steps: list[SimStep]
    gaps_ms: list[int]
    pause: tuple[int, int] | None  # (offset ms from the start, length ms)

    @property
    def klass(self) -> str:
        return complexity_class(self.tables) or "medium"


class Drift:
    """The global speed over the days: a random walk in log space (speeds drift over weeks)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.walk = [0.0]

    def factor(self, day: int) -> float:
        while len(self.walk) <= day:
            self.walk.append(self.walk[-1] + self.rng.gauss(0, DRIFT_SIGMA_PER_DAY))
        return math.exp(self.walk[day])


def simulate(n: int, seed: int) -> list[SimTask]:
    """n tasks in start order over about n * 90 minutes."""
    rng = random.Random(seed)
    drift = Drift(random.Random(seed + 1))
    tasks = []
    at = T0
    for index in range(n):
        at += timedelta(minutes=rng.expovariate(1 / ARRIVAL_MINUTES))
        tables = rng.randint(1, 8)
        klass = complexity_class(tables) or "medium"
        speed = math.exp(rng.gauss(0, TASK_SIGMA))
        scale = speed * CLASS_FACTOR[klass] * drift.factor((at - T0).days)
        silent = rng.random() < SILENT_SHARE
        steps = []
        for name, kind in KINDS:
            if rng.random() >= kind.share:
                continue
            for n_table in range(1, tables + 1) if "{n}" in name else (0,):
                median = 1000 * kind.base_s * tables**kind.table_exp * scale
                steps.append(_step(rng, name.format(n=n_table), median, kind, tables, silent))
        gaps = [rng.randint(0, 2000) for _ in steps]
        total = sum(s.duration_ms for s in steps) + sum(gaps)
        pause = None
        if rng.random() < PAUSE_SHARE and total > 4000:
            pause = (rng.randint(gaps[0] + 1000, total - 1000), int(60_000 * rng.uniform(*PAUSE_MINUTES)))
        tasks.append(SimTask(index, at, tables, speed, steps, gaps, pause))
    return tasks


def _step(rng: random.Random, name: str, median: float, kind: Kind, tables: int, silent: bool) -> SimStep:
    base = median * math.exp(rng.gauss(0, kind.sigma))
    substeps = tables if kind.substeps == "tables" else rng.randint(2, 5) if kind.substeps == "views" else 0
    parts = substeps or rng.randint(4, 8)
    weights = [rng.gammavariate(2.0, 1.0) for _ in range(parts)]
    bounds = [base * sum(weights[: i + 1]) / sum(weights) for i in range(parts)]
    freeze = None
    if rng.random() < STALL_SHARE:
        at_part = rng.randrange(parts)
        frozen_at = bounds[at_part - 1] if at_part else 0.0
        extra = base * (rng.uniform(*STALL_TIMES) - 1)
        bounds = [b + extra if i >= at_part else b for i, b in enumerate(bounds)]
        freeze = (int(frozen_at), int(frozen_at + extra))
    step = SimStep(name, median, kind.sigma, int(bounds[-1]), substeps, freeze=freeze)
    if not silent:
        for i, b in enumerate(bounds):
            if substeps:
                step.marks.append((int(b), "substep", i + 1))
            elif i < parts - 1:
                step.marks.append((int(b), "progress", round(100 * (i + 1) / parts)))
    return step


def sim_actions(task: SimTask) -> list[tuple[datetime, str, int, int]]:
    """Every command of a simulated run in time order: (at, command, step, argument)."""
    raw: list[tuple[int, int, str, int, int]] = []  # (offset ms, sequence, command, step, argument)
    cursor = 0
    for order, (step, gap) in enumerate(zip(task.steps, task.gaps_ms, strict=True), start=1):
        begin = cursor + gap
        raw.append((begin, len(raw), "start", order, 0))
        raw.extend((begin + off, len(raw), kind, order, arg) for off, kind, arg in step.marks)
        cursor = begin + step.duration_ms
        raw.append((cursor, len(raw), "complete", order, 0))
    if task.pause is not None:
        at, length = task.pause
        raw = [(t + length + 1 if t >= at else t, seq, k, o, a) for t, seq, k, o, a in raw]
        raw += [(at, -2, "pause", 0, 0), (at + length, -1, "resume", 0, 0)]
    raw.sort()
    return [(task.start + timedelta(milliseconds=t), k, o, a) for t, _, k, o, a in raw]


def sim_task(task: SimTask, owner: str = "bench") -> Task:
    """The simulated run as a Task aggregate, every command at its simulated instant."""
    plans = [
        StepPlan(s.name, substeps=tuple(f"part {k}" for k in range(1, s.substeps + 1))) for s in task.steps
    ]
    tid = uuid5(SIM_NAMESPACE, f"sim {task.index}")
    agg = Task.plan(
        f"simulated task {task.index}", owner, plans, tables=task.tables, task_id=tid, at=task.start
    )
    for at, kind, order, arg in sim_actions(task):
        match kind:
            case "start":
                agg.start_step(order, at=at)
            case "progress":
                agg.report_progress(order, arg, at=at)
            case "substep":
                agg.complete_substep(order, arg, at=at)
            case "complete":
                agg.complete_step(order, at=at)
            case "pause":
                agg.pause(at=at)
            case "resume":
                agg.resume(at=at)
    return agg


def write_traces(tasks: Sequence[SimTask], path: Path) -> None:
    """The simulated runs as a traces CSV (one row per finished step), for --traces and import-history."""
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(
            [
                "task_id",
                "complexity",
                "step_order",
                "step_name",
                "started_at",
                "finished_at",
                "substeps_total",
            ]
        )
        for task in tasks:
            agg = sim_task(task)
            for step in agg.steps:
                times = (iso(step.started_at), iso(step.finished_at))
                out.writerow(
                    [f"sim-{task.index}", task.tables, step.order, step.name, *times, len(step.substeps)]
                )


# ---- cases: what the evaluation needs of a run, simulated or recorded -------------------------------------


@dataclass
class Case:
    """A finished run to learn from or to hold out."""

    key: str
    klass: str
    start: datetime
    finish: datetime
    build: Callable[[], Task]
    expected: list[tuple[float, float]] | None = None  # per step: median ms (task speed included), log sd
    speed: float = 1.0  # the run's own speed factor (simulated runs)
    freezes: list[tuple[int, int] | None] | None = None


def sim_cases(tasks: Sequence[SimTask]) -> list[Case]:
    out = []
    for task in tasks:
        finish = sim_actions(task)[-1][0]
        out.append(
            Case(
                f"sim-{task.index}",
                task.klass,
                task.start,
                finish,
                partial(sim_task, task),
                [(s.median_ms, s.sigma) for s in task.steps],
                task.speed,
                [s.freeze for s in task.steps],
            )
        )
    return out


def trace_cases(path: Path) -> list[Case]:
    out = []
    for trace in read_traces(path):
        klass = trace.complexity or complexity_class(trace.tables) or "medium"
        build = partial(trace_task, trace, "bench", import_id("bench", trace.task_id))
        out.append(Case(trace.task_id, klass, trace.started_at, trace.finished_at, build))
    return out


# ---- the store: real events, real projections -------------------------------------------------------------


class Store:
    """A fresh installation in a temp dir: the event log, step_stats and event_index, projected on demand."""

    def __init__(self, data_dir: Path) -> None:
        self.rt = Runtime(Settings(data_dir=data_dir), models=["step_stats", "event_index"])
        self.dirty = False

    def save(self, task: Task) -> None:
        self.rt.app.save(task)
        self.dirty = True

    def sync(self) -> None:
        if self.dirty:
            self.rt.projector.run_once()
            self.dirty = False

    def history(self) -> History:
        """The step_stats table as it stands now."""
        self.sync()
        return history_from_rows(
            self.rt.views["step_stats"].query(
                "SELECT step_key, complexity, count, median_ms, p90_ms, recent FROM step_stats"
            )
        )

    def view_at(self, task_id: UUID, at: datetime) -> dict[str, Any] | None:
        """The progress view as it stood at an instant, as GET .../progress?at= serves it."""
        self.sync()
        found = self.rt.read.seq_at(task_id, at=iso(at))
        return None if found is None else self.rt.service.view_sync(task_id, None, found[0])

    def close(self) -> None:
        self.rt.close()


@contextmanager
def fresh_store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory(prefix="progressd-bench-eta-") as tmp:
        store = Store(Path(tmp))
        try:
            yield store
        finally:
            store.close()


# ---- the reference estimators -----------------------------------------------------------------------------


def _time(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else None


def elapsed_work(view: dict[str, Any], step: dict[str, Any], now: datetime) -> float:
    """A step's work so far: work_ms as of the view, plus the time since while it is running."""
    work = float(step.get("work_ms") or 0)
    if step["status"] == "running" and view["status"] == "running":
        updated = _time(view["updated_at"]) or now
        work += max(0.0, (now - updated).total_seconds() * 1000)
    return work


def linear_ms(view: dict[str, Any], now: datetime) -> float | None:
    """The usual home-made ETA: time since the start times (100 - percent) / percent."""
    started = _time(view["started_at"])
    steps = view["steps"]
    percent: float = sum(s["weight"] * s["progress"] for s in steps) / sum(s["weight"] for s in steps)
    if started is None or percent <= 0:
        return None
    return (now - started).total_seconds() * 1000 * (100 - percent) / percent


def _log_q(x: float) -> float:
    if x < 5:
        return math.log(max(0.5 * math.erfc(x / math.sqrt(2)), 1e-300))
    return -x * x / 2 - math.log(x) - 0.5 * math.log(2 * math.pi) + math.log1p(-1 / (x * x))


def oracle_ms(view: dict[str, Any], case: Case, now: datetime, knows_speed: bool = True) -> float:
    """Expected remaining time from every step's true expected duration; not its noise, nor stalls.

    With knows_speed=False the run's own speed factor counts as noise too: the oracle then knows the step
    kind, tables, complexity and the drift of the day, and expects the population's duration.
    """
    assert case.expected is not None
    offset, extra_var = (0.0, 0.0) if knows_speed else (-math.log(case.speed), TASK_SIGMA**2)
    total = 0.0
    for step in view["steps"]:
        median, sigma = case.expected[step["order"] - 1]
        total += float(_remaining(step, view, now, math.log(median) + offset, sigma * sigma + extra_var))
    return total


def _remaining(step: dict[str, Any], view: dict[str, Any], now: datetime, m: Any, v: float) -> Any:
    """Expected remaining work of one step whose duration is log-normal(m, v) (m a float or an array)."""
    if step["status"] == "pending":
        return np.exp(m + v / 2)
    if step["status"] not in ("running", "paused", "approval"):
        return 0.0 * m
    e = elapsed_work(view, step, now)
    if e <= 0:
        return np.exp(m + v / 2)
    a = (math.log(e) - m) / math.sqrt(v)
    return np.maximum(np.exp(m + v / 2 + _log_q_array(a - math.sqrt(v)) - _log_q_array(a)) - e, 0.0)


def _log_q_array(x: Any) -> Any:
    return np.vectorize(_log_q, otypes=[float])(x)


# The Bayes oracle's grid over the run's log speed factor, and the log of a stall's 3-8x stretch.
SPEED_GRID = np.linspace(-5 * TASK_SIGMA, 5 * TASK_SIGMA, 301)
_STRETCH = np.log(np.linspace(*STALL_TIMES, 1001))
STALL_LOG_MEAN, STALL_LOG_VAR = float(_STRETCH.mean()), float(_STRETCH.var())


def bayes_oracle_ms(view: dict[str, Any], case: Case, now: datetime) -> float:
    """The best estimate the run's own data allow under the simulator's true model.

    It knows what oracle_ms(knows_speed=False) knows (every step's expected duration without the run's
    speed factor, the noise and stall rates) and learns the run's speed factor as a Bayesian would: prior
    log-normal(0, TASK_SIGMA), updated by the work time of every finished step (a mixture with the stall
    rate, so a stall is not taken for a slow run) and by how long the running step has lasted so far. The
    estimate is the posterior mean of the remaining time. It does not use progress within a step.
    """
    assert case.expected is not None
    s = SPEED_GRID
    log_post = -(s * s) / (2 * TASK_SIGMA**2)
    base = -math.log(case.speed)
    for step in view["steps"]:
        median, sigma = case.expected[step["order"] - 1]
        m = math.log(median) + base + s
        if step["status"] == "completed" and (d := float(step.get("work_ms") or 0)) > 0:
            normal = _log_normal_pdf(math.log(d), m, sigma * sigma)
            stalled = _log_normal_pdf(math.log(d), m + STALL_LOG_MEAN, sigma * sigma + STALL_LOG_VAR)
            log_post += np.logaddexp(math.log1p(-STALL_SHARE) + normal, math.log(STALL_SHARE) + stalled)
        elif step["status"] in ("running", "paused", "approval") and (e := elapsed_work(view, step, now)) > 0:
            lasted = _log_q_array((math.log(e) - m) / sigma)
            stalled = _log_q_array((math.log(e) - m - STALL_LOG_MEAN) / math.sqrt(sigma**2 + STALL_LOG_VAR))
            log_post += np.logaddexp(math.log1p(-STALL_SHARE) + lasted, math.log(STALL_SHARE) + stalled)
    weights = np.exp(log_post - log_post.max())
    weights /= weights.sum()
    total = np.zeros_like(s)
    for step in view["steps"]:
        median, sigma = case.expected[step["order"] - 1]
        total = total + _remaining(step, view, now, math.log(median) + base + s, sigma * sigma)
    return float((weights * total).sum())


def _log_normal_pdf(x: float, m: Any, v: float) -> Any:
    return -((x - m) ** 2) / (2 * v) - 0.5 * math.log(2 * math.pi * v)


# ---- evaluation -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One estimate of one method at one checkpoint of one held-out run."""

    klass: str
    frac: float
    method: str
    ape: float  # |estimate - truth| / truth; 1.0 when the method gave no estimate
    in_band: bool
    covered: bool | None = None
    ratio: float = 1.0  # estimate / truth
    confidence: str | None = None
    attention: bool = False
    frozen: bool = False


def judge(case: Case, frac: float, view: dict[str, Any], history: History, now: datetime) -> list[Record]:
    """Every method's estimate at one moment, against the truth."""
    truth = (case.finish - now).total_seconds() * 1000
    band = BANDS[case.klass]
    est = estimate(view, history, now)
    assert (
        est.eta_seconds is not None and est.eta_low_seconds is not None and est.eta_high_seconds is not None
    )
    ape = abs(est.eta_seconds * 1000 - truth) / truth
    out = [
        Record(
            case.klass,
            frac,
            "estimator",
            ape,
            ape <= band,
            est.eta_low_seconds * 1000 <= truth <= est.eta_high_seconds * 1000,
            est.eta_seconds * 1000 / truth,
            est.eta_confidence,
            est.needs_attention,
            _frozen(case, view, now),
        )
    ]
    guesses = {"linear": linear_ms(view, now)}
    if case.expected is not None:
        guesses["oracle"] = oracle_ms(view, case, now)
        guesses["oracle w/o speed"] = oracle_ms(view, case, now, knows_speed=False)
        guesses["Bayes oracle"] = bayes_oracle_ms(view, case, now)
    for method, guess in guesses.items():
        err = 1.0 if guess is None else abs(guess - truth) / truth
        out.append(Record(case.klass, frac, method, err, guess is not None and err <= band))
    return out


def _frozen(case: Case, view: dict[str, Any], now: datetime) -> bool:
    """Whether a running step is inside a simulated stall at this moment."""
    if case.freezes is None:
        return False
    for step in view["steps"]:
        window = case.freezes[step["order"] - 1]
        if step["status"] == "running" and window is not None:
            e = elapsed_work(view, step, now)
            if window[0] <= e < window[1]:
                return True
    return False


def walk_forward(history_cases: Sequence[Case], held_out: Sequence[Case]) -> list[Record]:
    """Replay runs in time order: a run joins the log when it finishes; a held-out run is judged against
    step_stats as it stood when it started, its views read back from the store (time travel)."""
    timeline: list[tuple[datetime, int, str, Case]] = [(c.finish, 0, "save", c) for c in history_cases]
    timeline += [(c.finish, 0, "save", c) for c in held_out] + [(c.start, 1, "read", c) for c in held_out]
    timeline.sort(key=lambda item: (item[0], item[1]))
    held = {c.key for c in held_out}
    snapshots: dict[str, History] = {}
    records: list[Record] = []
    with fresh_store() as store:
        for _, _, what, case in timeline:
            if what == "read":
                snapshots[case.key] = store.history()
                continue
            task = case.build()
            store.save(task)
            if case.key not in held:
                continue
            history = snapshots.pop(case.key)
            for frac in CHECKPOINTS:
                now = case.start + (case.finish - case.start) * frac
                view = store.view_at(task.id, now)
                if view is not None:
                    records.extend(judge(case, frac, view, history, now))
    return records


def task_at(events: Sequence[Any], at: datetime) -> Task:
    """A task as it stood at an instant, from its events (the projector's own way of applying them)."""
    agg: Any = None
    for event in events:
        if event.timestamp > at:
            break
        agg = event.mutate(agg)
    assert isinstance(agg, Task)
    return agg


def learning_curve(
    cases: Sequence[Case], sizes: Sequence[int], held_out: Sequence[Case]
) -> list[tuple[int, list[Record]]]:
    """The estimator on a fixed set of runs, with the last N runs that finished before them as history."""
    first = min(c.start for c in held_out)
    before = sorted((c for c in cases if c.finish <= first), key=lambda c: c.finish)
    prepared = [(c, c.build().collect_events()) for c in held_out]
    rows = []
    for n in sizes:
        if n > len(before):
            break
        with fresh_store() as store:
            for case in before[len(before) - n :]:
                store.save(case.build())
            history = store.history()
        records: list[Record] = []
        for case, events in prepared:
            for frac in CHECKPOINTS:
                now = case.start + (case.finish - case.start) * frac
                view = progress_view(task_at(events, now))
                records.extend(r for r in judge(case, frac, view, history, now) if r.method == "estimator")
        rows.append((n, records))
    return rows


# ---- the report -------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _mdape(records: Sequence[Record]) -> float | None:
    return statistics.median(r.ape for r in records) if records else None


def _pick(records: Sequence[Record], **match: Any) -> list[Record]:
    return [r for r in records if all(getattr(r, k) == v for k, v in match.items())]


def _methods(records: Sequence[Record]) -> list[str]:
    present = {r.method for r in records}
    return [m for m in METHODS if m in present]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _check(value: float | None, ok: bool, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit} {'✓' if ok else '✗'}"


def headline(records: Sequence[Record]) -> tuple[list[str], list[str]]:
    """The table at 50% of the true duration, and the issue's done-when checks."""
    methods = _methods(records)
    oracles = [m for m in methods if "oracle" in m]
    table = [
        "| class (band) | runs | "
        + " | ".join(f"MdAPE {m}" for m in methods)
        + " | "
        + " | ".join(f"in band {m}" for m in methods)
        + " | 80% interval coverage |",
        "|---" * (3 + 2 * len(methods)) + "|",
    ]
    checks = [
        "| class | "
        + " | ".join(f"in band vs {o} (>= 0.90) | MdAPE vs {o} (<= 1.5x)" for o in oracles)
        + (" | " if oracles else "")
        + "MdAPE vs linear (<= 0.70x) | coverage (75-85%) |",
        "|---" * (3 + 2 * len(oracles)) + "|",
    ]
    for klass in CLASSES:
        at = {m: _pick(records, klass=klass, frac=0.5, method=m) for m in methods}
        if not at["estimator"]:
            continue
        md = {m: _mdape(at[m]) for m in methods}
        band = {m: _share([r.in_band for r in at[m]]) for m in methods}
        cover = _share([bool(r.covered) for r in at["estimator"]])
        cells = " | ".join(_pct(md[m]) for m in methods) + " | " + " | ".join(_pct(band[m]) for m in methods)
        table.append(f"| {klass} (±{BANDS[klass]:.0%}) | {len(at['estimator'])} | {cells} | {_pct(cover)} |")
        row = [klass]
        for o in oracles:
            b, m = _ratio(band["estimator"], band[o]), _ratio(md["estimator"], md[o])
            row += [_check(b, b is not None and b >= 0.9), _check(m, m is not None and m <= 1.5, "x")]
        lin = _ratio(md["estimator"], md["linear"])
        row.append(_check(lin, lin is not None and lin <= 0.70, "x"))
        row.append(f"{_pct(cover)} {'✓' if cover is not None and 0.75 <= cover <= 0.85 else '✗'}")
        checks.append("| " + " | ".join(row) + " |")
    return table, checks


def by_checkpoint(records: Sequence[Record]) -> list[str]:
    methods = _methods(records)
    out = [
        "| class | at | " + " | ".join(f"MdAPE {m}" for m in methods) + " | in band estimator | coverage |",
        "|---" * (4 + len(methods)) + "|",
    ]
    for klass in CLASSES:
        for frac in CHECKPOINTS:
            est = _pick(records, klass=klass, frac=frac, method="estimator")
            if not est:
                continue
            cells = " | ".join(
                _pct(_mdape(_pick(records, klass=klass, frac=frac, method=m))) for m in methods
            )
            out.append(
                f"| {klass} | {frac:.0%} | {cells} | {_pct(_share([r.in_band for r in est]))} "
                f"| {_pct(_share([bool(r.covered) for r in est]))} |"
            )
    return out


def confidence_table(records: Sequence[Record]) -> list[str]:
    est = _pick(records, method="estimator")
    out = [
        "| eta_confidence | share of estimates | in band | MdAPE | coverage |",
        "|---|---|---|---|---|",
    ]
    for label in ("high", "medium", "low"):
        picked = [r for r in est if r.confidence == label]
        out.append(
            f"| {label} | {_pct(_share([r.confidence == label for r in est]))} "
            f"| {_pct(_share([r.in_band for r in picked]))} | {_pct(_mdape(picked))} "
            f"| {_pct(_share([bool(r.covered) for r in picked]))} |"
        )
    return out


def stall_lines(records: Sequence[Record]) -> list[str]:
    est = _pick(records, method="estimator")
    frozen = [r.attention for r in est if r.frozen]
    normal = [r.attention for r in est if not r.frozen]
    if not frozen:
        return []
    return [
        f"- needs_attention was raised at {_pct(_share(frozen))} of the {len(frozen)} checkpoints that fell "
        "inside a stall (progress frozen; the flag waits until the freeze outlasts twice the step's usual "
        f"p90) and at {_pct(_share(normal))} of the {len(normal)} others."
    ]


def curve_table(rows: Sequence[tuple[int, list[Record]]]) -> list[str]:
    out = [
        "| finished runs in history | MdAPE, every checkpoint | in band | coverage "
        "| MdAPE at 50%: simple | medium | complex | ETA / truth, min to max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, records in rows:
        at = _pick(records, frac=0.5)
        cells = " | ".join(_pct(_mdape(_pick(at, klass=k))) for k in CLASSES)
        ratios = [r.ratio for r in records]
        out.append(
            f"| {n} | {_pct(_mdape(records))} | {_pct(_share([r.in_band for r in records]))} "
            f"| {_pct(_share([bool(r.covered) for r in records]))} | {cells} "
            f"| {min(ratios, default=0):.2f} to {max(ratios, default=0):.2f} |"
        )
    return out


def machine() -> list[str]:
    """`uname -a` and `nproc`, as the shell would print them."""

    def run(*command: str, fallback: str) -> str:
        with suppress(OSError, subprocess.CalledProcessError):
            return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
        return fallback

    uname = run("uname", "-a", fallback=" ".join(platform.uname()))
    nproc = run("nproc", fallback=str(os.cpu_count()))
    return [f"- machine: `{uname}`, `nproc` = {nproc}, python {platform.python_version()}"]


BEGIN, END = "<!-- bench:eta -->", "<!-- /bench:eta -->"


def write_section(path: Path, lines: Sequence[str]) -> None:
    """Replace (or append) the ETA section of RESULTS.md between its markers; other sections stay."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    section = "\n".join([BEGIN, *lines, END])
    head, found, rest = text.partition(BEGIN)
    if found and END in rest:
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


# ---- main -------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.eta", description="How good are the time estimates?"
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs: well under two minutes")
    parser.add_argument(
        "--traces", type=Path, help="evaluate on recorded runs (CSV) instead of the simulator"
    )
    parser.add_argument("--out", default="bench/RESULTS.md", help="where to write the results ('-': nowhere)")
    parser.add_argument("--seed", type=int, default=2024, help="the simulator's seed")
    parser.add_argument("--runs", type=int, help="simulated runs (default 3000, 800 with --quick)")
    parser.add_argument("--history-share", type=float, default=0.5, help="share of runs used only as history")
    parser.add_argument("--write-traces", type=Path, help="also write the simulated runs as a traces CSV")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    if args.traces:
        cases = trace_cases(args.traces)
        source = f"recorded runs from `{args.traces}` ({len(cases)} runs)"
    else:
        sim = simulate(args.runs or (800 if args.quick else 3000), args.seed)
        if args.write_traces:
            write_traces(sim, args.write_traces)
            print(f"wrote {args.write_traces}")
        cases = sim_cases(sim)
        source = f"the simulator, seed {args.seed}, {len(cases)} runs"
    split = int(len(cases) * args.history_share)
    history_cases, held_out = cases[:split], cases[split:]
    if not held_out:
        parser.error("no run left to hold out")
    print(f"{source}: {len(history_cases)} as history, {len(held_out)} held out", flush=True)
    records = walk_forward(history_cases, held_out)
    table, checks = headline(records)
    sizes = (0, 1, 3, 10, 30, 100) if args.quick else (0, 1, 3, 10, 30, 100, 300, 1000)
    curve_set = held_out[: 100 if args.quick else 300]
    curve = learning_curve(cases, sizes, curve_set)
    elapsed = time.perf_counter() - began
    command = "python -m bench.eta" + (" --quick" if args.quick else "")
    command += f" --traces {args.traces}" if args.traces else f" --seed {args.seed}"
    command += f" --runs {args.runs}" if args.runs else ""
    lines = [
        "## ETA accuracy",
        "",
        f"`{command}` on {datetime.now(UTC).date().isoformat()}, {elapsed:.0f} s.",
        "",
        *machine(),
        *([] if args.traces else [SIMULATOR]),
        f"- data: {source}; the first {len(history_cases)} are history only, the other {len(held_out)} are "
        "held out and replayed in time order, each judged against `step_stats` as it stood when it started "
        "(it joins the history once it has finished). Views come back from the store at 10/25/50/75% of "
        "each run's true duration.",
        "- MdAPE: median |ETA - truth| / truth; in band: within the spec's ±20/30/50%; coverage: the truth "
        "within [eta_low_seconds, eta_high_seconds]. linear = elapsed / percent (no estimate at 0% counts "
        "as 100% off)."
        + (
            ""
            if args.traces
            else " oracle = every step's true expected duration, the run's own speed factor included, not "
            "its noise or stalls; oracle w/o speed = the same without the run's speed factor (step kind, "
            "tables, complexity and the day's drift only); Bayes oracle = what oracle w/o speed knows, plus "
            "the run's speed factor learned from its finished steps and the running step's duration so far "
            "(prior log sd 0.3, the true noise and stall rates; the posterior mean of the remaining time): "
            "the best any estimator can do on this data without using progress within a step."
        ),
        "",
        "### At 50% of each run's true duration",
        "",
        *table,
        "",
        "Done-when checks at 50%:",
        "",
        *checks,
        "",
        "### Every checkpoint",
        "",
        *by_checkpoint(records),
        "",
        "### Learning curve (0 = no history at all)",
        "",
        f"The estimator on the same {len(curve_set)} held-out runs (every checkpoint), with the last N runs "
        "that finished before them as history.",
        "",
        *curve_table(curve),
        "",
        "### Confidence labels and stalls",
        "",
        *confidence_table(records),
        "",
        *stall_lines(records),
    ]
    print("\n".join(lines), flush=True)
    if args.out != "-":
        write_section(Path(args.out), lines)
        print(f"\nwrote the ETA section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
