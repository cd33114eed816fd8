"""Recorded runs as history: a traces CSV becomes completed tasks in the log, with their recorded times.

One row per finished step: `task_id, complexity, step_order, step_name, started_at, finished_at,
substeps_total`. `complexity` is `simple`/`medium`/`complex`, a number of tables, or empty; times are ISO
8601 (UTC when they carry no offset). Each task is written as real events (created, then every step
started and completed at its recorded instant), so `step_stats` learns from it through the normal
projection. Task ids are derived from the CSV's ids, so importing the same file twice adds nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid5

from eventsourcing.persistence import IntegrityError

from domain.errors import DomainError
from domain.task import COMPLEXITY_CLASSES, StepPlan, Task
from infra.runtime import Runtime
from infra.service import TaskService

COLUMNS = ("task_id", "complexity", "step_order", "step_name", "started_at", "finished_at", "substeps_total")
IMPORT_NAMESPACE = UUID("0b7d3f5e-2a41-4c8e-9d6f-5e1a7c3b9f20")


@dataclass(frozen=True)
class TraceStep:
    """One finished step of a recorded run."""

    order: int
    name: str
    started_at: datetime
    finished_at: datetime
    substeps: int = 0


@dataclass(frozen=True)
class Trace:
    """A recorded run: its id in the file, its complexity (class or tables) and its steps in order."""

    task_id: str
    complexity: str | None
    tables: int | None
    steps: tuple[TraceStep, ...]

    @property
    def started_at(self) -> datetime:
        return min(s.started_at for s in self.steps)

    @property
    def finished_at(self) -> datetime:
        return max(s.finished_at for s in self.steps)


def read_traces(path: str | Path) -> list[Trace]:
    """Parse and check a traces CSV; the runs come back ordered by when they started."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return parse_traces(csv.DictReader(f), str(path))


def parse_traces(rows: Iterable[dict[str, str]], source: str = "traces") -> list[Trace]:
    """Group rows into runs, checking every field; raises TraceError naming the line."""
    steps: dict[str, list[TraceStep]] = {}
    classes: dict[str, tuple[str | None, int | None]] = {}
    for line, row in enumerate(rows, start=2):
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise TraceError(f"{source}: missing column(s) {', '.join(missing)}")
        where = f"{source}:{line}"
        task_id = (row["task_id"] or "").strip()
        if not task_id:
            raise TraceError(f"{where}: task_id is empty")
        complexity = _complexity(row["complexity"], where)
        if classes.setdefault(task_id, complexity) != complexity:
            raise TraceError(f"{where}: task {task_id} has two different complexities")
        step = TraceStep(
            order=_int(row["step_order"], "step_order", where),
            name=(row["step_name"] or "").strip(),
            started_at=_time(row["started_at"], "started_at", where),
            finished_at=_time(row["finished_at"], "finished_at", where),
            substeps=_int(row["substeps_total"] or "0", "substeps_total", where),
        )
        if not step.name:
            raise TraceError(f"{where}: step_name is empty")
        if step.finished_at < step.started_at:
            raise TraceError(f"{where}: finished_at is before started_at")
        if step.substeps < 0:
            raise TraceError(f"{where}: substeps_total must not be negative")
        if any(s.order == step.order for s in steps.get(task_id, ())):
            raise TraceError(f"{where}: task {task_id} has step_order {step.order} twice")
        steps.setdefault(task_id, []).append(step)
    traces = [
        Trace(tid, *classes[tid], tuple(sorted(found, key=lambda s: s.order))) for tid, found in steps.items()
    ]
    return sorted(traces, key=lambda t: (t.started_at, t.task_id))


def trace_task(trace: Trace, owner: str, task_id: UUID | None = None) -> Task:
    """The completed Task a recorded run stands for, every event at its recorded instant."""
    plans = [
        StepPlan(s.name, substeps=tuple(f"part {k}" for k in range(1, s.substeps + 1))) for s in trace.steps
    ]
    task = Task.plan(
        f"imported {trace.task_id}",
        owner,
        plans,
        tables=trace.tables,
        complexity=None if trace.tables is not None else trace.complexity,
        task_id=task_id,
        at=trace.started_at,
        imported=True,
    )
    # In time order; at the same instant starts go first, so a step that took no time still starts first.
    moments = sorted(
        [(s.started_at, 0, i) for i, s in enumerate(trace.steps, start=1)]
        + [(s.finished_at, 1, i) for i, s in enumerate(trace.steps, start=1)]
    )
    for at, kind, order in moments:
        if kind == 0:
            task.start_step(order, at=at)
        else:
            task.complete_step(order, at=at)
    return task


def import_id(owner: str, trace_id: str) -> UUID:
    """The task id of an imported run: the same file imported twice names the same tasks."""
    return uuid5(IMPORT_NAMESPACE, f"{owner}\n{trace_id}")


def import_history(target: TaskService | Runtime, csv_path: str | Path, *, owner: str | None = None) -> int:
    """Write a traces CSV's runs as completed tasks; returns how many were new (already imported are kept)."""
    service = target.service if isinstance(target, Runtime) else target
    if owner is None:
        owner = target.settings.local_owner if isinstance(target, Runtime) else "local"
    imported = 0
    for trace in read_traces(csv_path):
        try:
            task = trace_task(trace, owner, import_id(owner, trace.task_id))
        except DomainError as exc:
            raise TraceError(f"{csv_path}: task {trace.task_id}: {exc}") from None
        try:
            service.app.save(task)
        except IntegrityError:
            continue  # imported before
        imported += 1
    if isinstance(target, Runtime):
        target.projector.wake()
    return imported


def _complexity(raw: str | None, where: str) -> tuple[str | None, int | None]:
    value = (raw or "").strip().lower()
    if not value:
        return None, None
    if value.isdigit():
        return None, int(value)
    if value not in COMPLEXITY_CLASSES:
        raise TraceError(f"{where}: complexity must be simple, medium, complex or a number of tables")
    return value, None


def _int(raw: str | None, name: str, where: str) -> int:
    try:
        return int((raw or "").strip())
    except ValueError:
        raise TraceError(f"{where}: {name} must be an integer") from None


def _time(raw: str | None, name: str, where: str) -> datetime:
    try:
        at = datetime.fromisoformat((raw or "").strip().replace("Z", "+00:00"))
    except ValueError:
        raise TraceError(f"{where}: {name} must be an ISO 8601 instant") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


class TraceError(Exception):
    """A traces CSV that cannot be read as recorded runs."""
