"""step_stats: how long finished steps took, grouped by normalised step name and task complexity."""

from __future__ import annotations

import json
import statistics
from collections import deque
from collections.abc import Iterable
from functools import partial

from domain.progress import iso
from projections.model import (
    Change,
    Insert,
    Merge,
    Op,
    ReadModel,
    Row,
    Table,
    integer,
    normalise_step_name,
    real,
    text,
)

RECENT = 500  # samples kept per group for the median and p90: recent history matters most

STEP_SAMPLES = Table(
    "step_samples",
    (
        integer("position", False),
        text("task_id", False),
        integer("step", False),
        text("step_key", False),
        text("complexity", False),
        integer("duration_ms", False),
        integer("substeps", False),
        text("at", False),
    ),
    key=("position",),
    indexes=(("step_key", "complexity"),),
)

STEP_STATS = Table(
    "step_stats",
    (
        text("step_key", False),
        text("complexity", False),
        integer("count", False),
        real("mean_ms", False),
        real("median_ms", False),
        real("p90_ms", False),
        text("recent", False),
    ),
    key=("step_key", "complexity"),
)


def add_sample(row: Row | None, key: Row, duration_ms: int) -> Row:
    """The stats row after one more sample; percentiles over the last RECENT samples."""
    count = (row["count"] if row else 0) + 1
    mean = _mean(row["mean_ms"] if row else 0.0, count, duration_ms)
    recent = [*(json.loads(row["recent"]) if row else []), duration_ms][-RECENT:]
    return _stats_row(key, count, mean, recent)


def stats_from_samples(samples: Iterable[Row]) -> list[Row]:
    """The step_stats rows the table held right after the last of these step_samples rows (given in log
    order): the same fold as add_sample, for the history as it stood at an earlier position."""
    groups: dict[tuple[str, str], tuple[int, float, deque[int]]] = {}
    for sample in samples:
        duration = int(sample["duration_ms"])
        for group in (str(sample["complexity"]), "any"):
            ident = (str(sample["step_key"]), group)
            count, mean, recent = groups.get(ident) or (0, 0.0, deque(maxlen=RECENT))
            recent.append(duration)
            groups[ident] = (count + 1, _mean(mean, count + 1, duration), recent)
    return [
        _stats_row({"step_key": step_key, "complexity": group}, count, mean, list(recent))
        for (step_key, group), (count, mean, recent) in groups.items()
    ]


def _mean(mean: float, count: int, duration_ms: int) -> float:
    return round(mean + (duration_ms - mean) / count, 3)


def _stats_row(key: Row, count: int, mean: float, recent: list[int]) -> Row:
    ordered = sorted(recent)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return {
        **key,
        "count": count,
        "mean_ms": mean,
        "median_ms": float(statistics.median(ordered)),
        "p90_ms": float(p90),
        "recent": json.dumps(recent),
    }


def handle(change: Change) -> list[Op]:
    if change.kind != "StepCompleted":
        return []
    step = change.task.step(change.event.order)
    duration = step.active_ms(change.event.timestamp)
    if duration is None:
        return []
    step_key = normalise_step_name(step.name)
    complexity = change.task.complexity or "unknown"
    ops: list[Op] = [
        Insert(
            STEP_SAMPLES,
            {
                "position": change.position,
                "task_id": change.task_id,
                "step": step.order,
                "step_key": step_key,
                "complexity": complexity,
                "duration_ms": duration,
                "substeps": len(step.substeps),
                "at": iso(change.event.timestamp),
            },
        )
    ]
    for group in (complexity, "any"):
        key: Row = {"step_key": step_key, "complexity": group}
        ops.append(Merge(STEP_STATS, key, partial(add_sample, key=key, duration_ms=duration)))
    return ops


MODEL = ReadModel("step_stats", (STEP_SAMPLES, STEP_STATS), handle, "durations of finished steps")
