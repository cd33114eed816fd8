"""notifications: the outbox. Each notable event becomes one row per channel, keyed for exactly-once delivery.

The dedupe key is `<task_id>:<seq>:<kind>:<channel>`: the task's own event number makes it the same on every
replay, so a rebuilt outbox names the same notifications and the delivery state (kept outside this read model,
in `notification_deliveries`) recognises them. Which channels an owner wants is decided at delivery time, not
here: this model is a pure function of the log.

Stalls are not events: `stalled_steps` is the pure check a periodic job runs over the running tasks' views
and the `step_stats` history, and `stall_rows` gives the same row shape for what it finds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.progress import iso, task_percent, whole
from domain.state import FINISHED_STEP, StepStatus, TaskStatus
from domain.task import Task
from projections.model import Change, Insert, Op, ReadModel, Row, Table, integer, normalise_step_name, text
from projections.wording import duration, parse_iso, plural, task_phrase

KINDS = ("task_started", "step_complete", "approval_needed", "task_complete", "task_failed", "stalled")
CHANNELS = ("browser", "email", "chat", "push")

NOTIFICATION_OUTBOX = Table(
    "notification_outbox",
    (
        text("dedupe_key", False),
        integer("position", False),
        text("task_id", False),
        integer("seq", False),
        text("kind", False),
        text("channel", False),
        text("owner", False),
        text("title", False),
        text("text", False),
        text("detail", False),
        integer("step"),
        text("at", False),
        integer("elapsed_ms", False),
    ),
    key=("dedupe_key",),
    indexes=(("position",),),
)


@dataclass(frozen=True)
class Note:
    """One notification before it is fanned out to the channels."""

    kind: str
    text: str
    detail: str
    step: int | None = None


def _finished_steps(task: Task) -> str:
    """ "All 4 steps", or "3 of 4 steps (1 skipped)" when some were skipped."""
    skipped = sum(s.status is StepStatus.SKIPPED for s in task.steps)
    total = plural(len(task.steps), "step")
    if not skipped:
        return f"All {total}"
    return f"{len(task.steps) - skipped} of {total} ({skipped} skipped)"


def dedupe_key(task_id: str, seq: int, kind: str, channel: str) -> str:
    return f"{task_id}:{seq}:{kind}:{channel}"


def notes_for(change: Change) -> list[Note]:
    """The notifications one event gives; `change.task` is the task right after it. An imported run
    (`progressd import-history`) gives none: it is history, not news."""
    task = change.task
    if task.imported:
        return []
    event = change.event
    kind = change.kind
    phrase = task_phrase(task.title)
    order: int | None = getattr(event, "order", None)
    out: list[Note] = []
    before = change.before
    if (
        before is not None
        and task.started_at is not None
        and all(s.status == StepStatus.PENDING for s in before)
        and kind != "Cancelled"
    ):
        out.append(
            Note(
                "task_started",
                f"Your {phrase} has started",
                f"{task.title}: {plural(len(task.steps), 'step')}.",
            )
        )
    if kind == "StepCompleted" and order is not None:
        step = task.step(order)
        done = sum(1 for s in task.steps if s.status in FINISHED_STEP)
        out.append(
            Note(
                "step_complete",
                f"Step {order} complete: {step.name}",
                f"{task.title}: {done} of {len(task.steps)} steps done, "
                f"{whole(task_percent(task))}% complete.",
                order,
            )
        )
    if kind in ("StepStarted", "StepRetried", "ApprovalRequested") and order is not None:
        step = task.step(order)
        if step.status is StepStatus.APPROVAL:
            message = step.approval_message or f"Approve step {order}: {step.name}?"
            out.append(
                Note(
                    "approval_needed",
                    f"⚠️ Approval required for Step {order}",
                    f"{task.title}: {message}",
                    order,
                )
            )
    if kind == "TaskCompleted":
        took = _ms(task.started_at, task.finished_at)
        tail = f" in {duration(took)}" if took is not None else ""
        out.append(
            Note(
                "task_complete",
                f"✅ Your {task.title} is ready!",
                f"{_finished_steps(task)} finished{tail}.",
            )
        )
    if kind in ("StepFailed", "Rejected") and task.status is TaskStatus.FAILED and order is not None:
        step = task.step(order)
        out.append(
            Note(
                "task_failed",
                f"❌ Task failed at Step {order}",
                f"{task.title}: {step.name}: {step.error}",
                order,
            )
        )
    return out


def _ms(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, int((end - start).total_seconds() * 1000))


def rows_for(
    note: Note, *, task_id: str, seq: int, owner: str, title: str, position: int, at: str, elapsed_ms: int
) -> list[Row]:
    """One outbox row per channel."""
    return [
        {
            "dedupe_key": dedupe_key(task_id, seq, note.kind, channel),
            "position": position,
            "task_id": task_id,
            "seq": seq,
            "kind": note.kind,
            "channel": channel,
            "owner": owner,
            "title": title,
            "text": note.text,
            "detail": note.detail,
            "step": note.step,
            "at": at,
            "elapsed_ms": elapsed_ms,
        }
        for channel in CHANNELS
    ]


def handle(change: Change) -> list[Op]:
    notes = notes_for(change)
    if not notes:
        return []
    task: Task = change.task
    at = change.event.timestamp
    elapsed = _ms(task.started_at or task.created_at, at) or 0
    ops: list[Op] = []
    for note in notes:
        for row in rows_for(
            note,
            task_id=change.task_id,
            seq=change.event.originator_version,
            owner=task.owner,
            title=task.title,
            position=change.position,
            at=iso(at) or "",
            elapsed_ms=elapsed,
        ):
            ops.append(Insert(NOTIFICATION_OUTBOX, row))
    return ops


MODEL = ReadModel(
    "notifications", (NOTIFICATION_OUTBOX,), handle, "notification outbox: one row per event and channel"
)


# ---- stalls ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stall:
    """A running step that has worked far longer than its kind usually takes."""

    step: int
    name: str
    attempt: int
    elapsed_ms: int
    p90_ms: float


def stalled_steps(
    view: Mapping[str, Any],
    stats: Mapping[tuple[str, str], Mapping[str, Any]],
    now: datetime,
    *,
    factor: float = 2.0,
    min_samples: int = 3,
    min_ms: float = 60_000.0,
) -> list[Stall]:
    """Running steps whose work time is over `factor` times the p90 of finished steps with the same name.

    `stats` maps (normalised step name, complexity) to `step_stats` rows; the task's complexity group is used
    when it has `min_samples`, else the "any" group, else the step has no history and is never called stalled.
    """
    if view.get("status") != "running":
        return []
    updated = parse_iso(view.get("updated_at"))
    gap_ms = max(0.0, (now - updated).total_seconds() * 1000) if updated else 0.0
    complexity = view.get("complexity") or "unknown"
    out = []
    for step in view.get("steps") or []:
        if step.get("status") != "running":
            continue
        key = normalise_step_name(str(step["name"]))
        row = next(
            (
                r
                for r in (stats.get((key, complexity)), stats.get((key, "any")))
                if r is not None and int(r["count"]) >= min_samples
            ),
            None,
        )
        if row is None:
            continue
        elapsed = float(step.get("work_ms") or 0) + gap_ms
        p90 = float(row["p90_ms"])
        if elapsed > max(factor * p90, min_ms):
            out.append(
                Stall(
                    int(step["order"]), str(step["name"]), int(step.get("attempts") or 1), int(elapsed), p90
                )
            )
    return out


def stall_rows(view: Mapping[str, Any], stall: Stall, position: int, at: str) -> list[Row]:
    """Outbox-shaped rows (one per channel) for a stall found at `at`; seq is the view's version then."""
    title = str(view["title"])
    note = Note(
        "stalled",
        f"⏳ Step {stall.step} is taking longer than usual",
        f"{title}: {stall.name} has been running for {duration(stall.elapsed_ms)}; "
        f"it usually takes under {duration(stall.p90_ms)}.",
        stall.step,
    )
    started = parse_iso(view.get("started_at"))
    now = parse_iso(at)
    elapsed = _ms(started, now) if started and now else stall.elapsed_ms
    return rows_for(
        note,
        task_id=str(view["task_id"]),
        seq=int(view["version"]),
        owner=str(view["owner"]),
        title=title,
        position=position,
        at=at,
        elapsed_ms=elapsed or 0,
    )


def stats_index(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """`step_stats` rows keyed by (step_key, complexity)."""
    return {(str(r["step_key"]), str(r["complexity"])): r for r in rows}
