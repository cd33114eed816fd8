"""The Task aggregate: a title, an owner and ordered steps whose every transition is an event."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, event
from eventsourcing.domain import Snapshot as AggregateSnapshot

from domain.errors import AlreadyRestarted, IdempotencyKeyReused, IllegalTransition, InvalidValue, UnknownStep
from domain.state import ACTIVE_STEP, FINISHED_STEP, STEP_FROM, TASK_FROM, StepStatus, TaskStatus

LOG_LEVELS = ("debug", "info", "warning", "error")
COMPLEXITY_CLASSES = ("simple", "medium", "complex")
MAX_REMEMBERED_KEYS = 256


def complexity_class(tables: int | None) -> str | None:
    """Map a number of tables to the spec's classes: 1-2 simple, 3-5 medium, 6+ complex."""
    if tables is None:
        return None
    if tables <= 2:
        return "simple"
    if tables <= 5:
        return "medium"
    return "complex"


@dataclass
class Step:
    """One step of a task, as the events so far have left it."""

    order: int
    name: str
    weight: float = 1.0
    substeps: list[str] = field(default_factory=list)
    requires_approval: bool = False
    status: StepStatus = StepStatus.PENDING
    reported: float = 0.0
    done: list[bool] = field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    held_since: datetime | None = None
    held_ms: int = 0
    attempts: int = 0
    approved: bool = False
    approval_message: str | None = None
    approval_requested_at: datetime | None = None
    error: str | None = None
    updated_at: datetime | None = None
    result: str | None = None  # what the worker said the step produced, when it completed

    @property
    def percent(self) -> float:
        """Reported percent, or the share of substeps done when that is higher; 100 once finished."""
        if self.status in FINISHED_STEP:
            return 100.0
        derived = 100.0 * sum(self.done) / len(self.done) if self.done else 0.0
        return max(self.reported, derived)

    def hold(self, at: datetime) -> None:
        """Stop the work clock (pause, approval wait)."""
        if self.held_since is None:
            self.held_since = at

    def release(self, at: datetime) -> None:
        """Restart the work clock, adding the held time to what is not counted as work."""
        if self.held_since is not None:
            self.held_ms += _ms(at - self.held_since)
            self.held_since = None

    def active_ms(self, now: datetime) -> int | None:
        """Milliseconds of work so far: from start to finish (or now), less paused and approval time."""
        if self.started_at is None:
            return None
        end = self.finished_at or now
        held = self.held_ms + (_ms(end - self.held_since) if self.held_since else 0)
        return max(0, _ms(end - self.started_at) - held)


@dataclass(frozen=True)
class StepPlan:
    """What a new task's step is: its name, weight, substeps and whether it needs approval to run."""

    name: str
    weight: float = 1.0
    substeps: tuple[str, ...] = ()
    requires_approval: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weight": self.weight,
            "substeps": list(self.substeps),
            "requires_approval": self.requires_approval,
        }


class Task(Aggregate):
    """A tracked task. Public methods check the command; the `_`-prefixed ones are its events."""

    # A recorded run loaded by `progressd import-history`: history for the estimates, news to nobody. The
    # class default serves snapshots taken before the attribute existed.
    imported = False

    class Event(Aggregate.Event):
        """Base of the Task's events."""

    class Snapshot(AggregateSnapshot):
        """The task's state at a version, so a long task loads from here instead of its first event.

        A change to the state's shape bumps `Task.class_version` and adds an `upcast_vN_vM(state)`
        staticmethod, as for events; steps come back through the store's transcoding for `Step`."""

        def mutate(self, _: None) -> Any:
            task: Any = super().mutate(None)
            task.status = TaskStatus(task.status)  # JSON gives the enum back as its plain string
            return task

    @staticmethod
    def create_id(task_id: UUID | None = None, **_: Any) -> UUID:
        return task_id or uuid4()

    @classmethod
    def plan(
        cls,
        title: str,
        owner: str,
        steps: list[StepPlan],
        tables: int | None = None,
        complexity: str | None = None,
        restarted_from: str | None = None,
        task_id: UUID | None = None,
        idem: str | None = None,
        at: datetime | None = None,
        imported: bool = False,
    ) -> Task:
        """Create a task, checking the plan first."""
        title = title.strip()
        if not title:
            raise InvalidValue("title", "must not be empty")
        if not owner:
            raise InvalidValue("owner", "must not be empty")
        if not steps:
            raise InvalidValue("steps", "a task needs at least one step")
        for i, plan in enumerate(steps):
            if not plan.name.strip():
                raise InvalidValue(f"steps[{i}].name", "must not be empty")
            for j, substep in enumerate(plan.substeps):
                if not substep.strip():
                    raise InvalidValue(f"steps[{i}].substeps[{j}]", "must not be blank")
            if not (plan.weight > 0 and math.isfinite(plan.weight)):
                raise InvalidValue(f"steps[{i}].weight", "must be a positive number")
        if tables is not None and tables < 0:
            raise InvalidValue("complexity", "number of tables must not be negative")
        if complexity is None:
            complexity = complexity_class(tables)
        elif complexity not in COMPLEXITY_CLASSES:
            raise InvalidValue("complexity", f"must be one of {', '.join(COMPLEXITY_CLASSES)} or a number")
        return cls(
            task_id=task_id,
            title=title,
            owner=owner,
            steps=[p.as_dict() for p in steps],
            tables=tables,
            complexity=complexity,
            restarted_from=restarted_from,
            idem=idem,
            timestamp=at,
            imported=imported,
        )

    @event("Created")
    def __init__(
        self,
        task_id: UUID | None,
        title: str,
        owner: str,
        steps: list[dict[str, Any]],
        tables: int | None,
        complexity: str | None,
        restarted_from: str | None,
        idem: str | None,
        timestamp: datetime | None,
        imported: bool,
    ) -> None:
        at = _at(timestamp)
        self.imported = imported
        self.title = title
        self.owner = owner
        self.tables = tables
        self.complexity = complexity
        self.restarted_from = restarted_from
        self.restarted_as: str | None = None
        self.steps = [
            Step(
                order=i,
                name=s["name"],
                weight=float(s["weight"]),
                substeps=list(s["substeps"]),
                requires_approval=bool(s["requires_approval"]),
                done=[False] * len(s["substeps"]),
            )
            for i, s in enumerate(steps, start=1)
        ]
        self.status = TaskStatus.PENDING
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.paused_at: datetime | None = None
        self.error: str | None = None
        self.result: str | None = None
        self.seen_keys: dict[str, list[Any]] = {}
        self._remember(idem, 1)
        self.created_at = at

    # ---- queries ----------------------------------------------------------------------------------------

    def step(self, order: int) -> Step:
        """The step at a 1-based order, or UnknownStep."""
        if 1 <= order <= len(self.steps):
            return self.steps[order - 1]
        raise UnknownStep(f"task has no step {order} (it has {len(self.steps)})")

    def replayed(self, key: str, fingerprint: str) -> bool:
        """True when this key was already applied to this same request; raises if it came with another."""
        seen = self.seen_keys.get(key)
        if seen is None:
            return False
        if seen[0] != fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used with a different request on this task"
            )
        return True

    # ---- step commands ----------------------------------------------------------------------------------

    def start_step(self, order: int, idem: str | None = None, at: datetime | None = None) -> None:
        """Start a pending step; a step that needs approval waits for it first."""
        self._check("start", order)
        self._step_started(order=order, idem=idem, timestamp=at)

    def report_progress(
        self, order: int, percent: float, idem: str | None = None, at: datetime | None = None
    ) -> None:
        """Record how far a running step is, 0 to 100."""
        if not (0 <= percent <= 100):
            raise InvalidValue("percent", "must be between 0 and 100")
        self._check("progress", order)
        self._progressed(order=order, percent=float(percent), idem=idem, timestamp=at)

    def complete_substep(
        self, order: int, n: int, idem: str | None = None, at: datetime | None = None
    ) -> None:
        """Mark substep n (1-based) of a running step as done."""
        self._check("substep", order)
        step = self.step(order)
        if not 1 <= n <= len(step.substeps):
            raise UnknownStep(f"step {order} has no substep {n} (it has {len(step.substeps)})")
        if step.done[n - 1]:
            raise IllegalTransition(f"substep {n} of step {order}", "complete", ["not done"], "done")
        self._substep_done(order=order, n=n, idem=idem, timestamp=at)

    def complete_step(
        self, order: int, result: str | None = None, idem: str | None = None, at: datetime | None = None
    ) -> None:
        """Complete a running step; the task completes with it when no step is left."""
        self._check("complete", order)
        self._step_completed(order=order, result=result, idem=idem, timestamp=at)
        if all(s.status in FINISHED_STEP for s in self.steps):
            self._task_completed(result=result, timestamp=self.modified_on)

    def fail_step(self, order: int, error: str, idem: str | None = None, at: datetime | None = None) -> None:
        """Fail a running step with an error message; the task fails with it until retried or skipped."""
        if not error.strip():
            raise InvalidValue("error", "must not be empty")
        self._check("fail", order)
        self._step_failed(order=order, error=error, idem=idem, timestamp=at)

    def skip_step(
        self, order: int, reason: str | None = None, idem: str | None = None, at: datetime | None = None
    ) -> None:
        """Bypass a pending, running or failed step."""
        self._check("skip", order)
        self._step_skipped(order=order, reason=reason, idem=idem, timestamp=at)
        if all(s.status in FINISHED_STEP for s in self.steps):
            self._task_completed(result=None, timestamp=self.modified_on)

    def retry_step(self, order: int, idem: str | None = None, at: datetime | None = None) -> None:
        """Run a failed step again, keeping the substeps it had done."""
        self._check("retry", order)
        self._step_retried(order=order, idem=idem, timestamp=at)

    def request_approval(
        self, order: int, message: str, idem: str | None = None, at: datetime | None = None
    ) -> None:
        """Hold a pending or running step until a person approves or rejects it."""
        if not message.strip():
            raise InvalidValue("message", "must not be empty")
        self._check("request_approval", order)
        self._approval_requested(order=order, message=message, idem=idem, timestamp=at)

    def approve(
        self, order: int, comment: str | None = None, idem: str | None = None, at: datetime | None = None
    ) -> None:
        """Approve a step waiting for approval: it runs (or stays paused if the task is paused)."""
        self._check("approve", order)
        self._approved(order=order, comment=comment, idem=idem, timestamp=at)

    def reject(
        self, order: int, comment: str | None = None, idem: str | None = None, at: datetime | None = None
    ) -> None:
        """Reject a step waiting for approval: it fails, and the task with it."""
        self._check("reject", order)
        self._rejected(order=order, comment=comment, idem=idem, timestamp=at)

    # ---- task commands ----------------------------------------------------------------------------------

    def pause(self, idem: str | None = None, at: datetime | None = None) -> None:
        """Pause a running task; its running steps stop their clocks."""
        self._check_task("pause")
        self._paused(idem=idem, timestamp=at)

    def resume(self, idem: str | None = None, at: datetime | None = None) -> None:
        """Resume a paused task from exactly where it was."""
        self._check_task("resume")
        self._resumed(idem=idem, timestamp=at)

    def cancel(self, reason: str | None = None, idem: str | None = None, at: datetime | None = None) -> None:
        """Cancel a task that has not finished; nothing runs on it after this."""
        self._check_task("cancel")
        self._cancelled(reason=reason, idem=idem, timestamp=at)

    def mark_restarted(self, new_task_id: str, idem: str | None = None, at: datetime | None = None) -> None:
        """Link this finished task to the task that restarted its plan."""
        if self.status not in (TaskStatus.COMPLETED, TaskStatus.CANCELLED, TaskStatus.FAILED):
            raise IllegalTransition("task", "restart", ["completed", "cancelled", "failed"], self.status)
        if self.restarted_as is not None:  # a second restart (a double click) would fork the plan in two
            raise AlreadyRestarted(str(self.id), self.restarted_as)
        self._restarted(new_task_id=new_task_id, idem=idem, timestamp=at)

    def log(
        self,
        level: str,
        message: str,
        step: int | None = None,
        idem: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Append a log line, optionally about one step."""
        if level not in LOG_LEVELS:
            raise InvalidValue("level", f"must be one of {', '.join(LOG_LEVELS)}")
        if not message.strip():
            raise InvalidValue("message", "must not be blank")
        if step is not None:
            self.step(step)
        self._logged(level=level, message=message, step=step, idem=idem, timestamp=at)

    def plan_steps(self) -> list[StepPlan]:
        """The plan this task was created with, for a restart."""
        return [StepPlan(s.name, s.weight, tuple(s.substeps), s.requires_approval) for s in self.steps]

    # ---- checks -----------------------------------------------------------------------------------------

    def _check_task(self, action: str) -> None:
        allowed = TASK_FROM[action]
        if self.status not in allowed:
            raise IllegalTransition("task", action.replace("_", " "), allowed, self.status)

    def _check(self, action: str, order: int) -> None:
        step = self.step(order)
        self._check_task(action)
        allowed = STEP_FROM[action]
        if step.status not in allowed:
            raise IllegalTransition(f"step {order}", action.replace("_", " "), allowed, step.status)

    def _remember(self, idem: str | None, version: int) -> None:
        if idem is None:
            return
        key, _, fingerprint = idem.rpartition(":")
        self.seen_keys[key] = [fingerprint, version]
        if len(self.seen_keys) > MAX_REMEMBERED_KEYS:
            del self.seen_keys[next(iter(self.seen_keys))]

    def _touch(self, step: Step | None, idem: str | None, at: datetime) -> None:
        if step is not None:
            step.updated_at = at
        self._remember(idem, self.version + 1)

    def _refresh_status(self, at: datetime) -> None:
        """After a retry, skip or approval: the task fails while any step is failed, else runs."""
        if any(s.status is StepStatus.FAILED for s in self.steps):
            self.status = TaskStatus.FAILED
            self.error = next(s.error for s in self.steps if s.status is StepStatus.FAILED)
        elif self.status is TaskStatus.FAILED or self.status is TaskStatus.PENDING:
            # A task that was paused when a step failed goes back to paused, not running.
            self.status = TaskStatus.PAUSED if self.paused_at is not None else TaskStatus.RUNNING
            self.error = None
        if self.started_at is None and self.status is TaskStatus.RUNNING:
            self.started_at = at

    # ---- events -----------------------------------------------------------------------------------------

    @event("StepStarted")
    def _step_started(self, order: int, idem: str | None, timestamp: datetime | None) -> None:
        at = _at(timestamp)
        step = self.step(order)
        step.started_at = step.started_at or at
        step.attempts += 1
        if step.requires_approval and not step.approved:
            step.status = StepStatus.APPROVAL
            step.approval_message = f"Approve step {order}: {step.name}?"
            step.approval_requested_at = at
            step.hold(at)
        else:
            step.status = StepStatus.RUNNING
        self._refresh_status(at)
        self._touch(step, idem, at)

    @event("Progressed")
    def _progressed(self, order: int, percent: float, idem: str | None, timestamp: datetime | None) -> None:
        step = self.step(order)
        step.reported = percent
        self._touch(step, idem, _at(timestamp))

    @event("SubstepDone")
    def _substep_done(self, order: int, n: int, idem: str | None, timestamp: datetime | None) -> None:
        step = self.step(order)
        step.done[n - 1] = True
        self._touch(step, idem, _at(timestamp))

    @event("StepCompleted")
    def _step_completed(
        self, order: int, result: str | None, idem: str | None, timestamp: datetime | None
    ) -> None:
        at = _at(timestamp)
        step = self.step(order)
        step.status = StepStatus.COMPLETED
        step.result = result
        step.reported = 100.0
        step.finished_at = at
        step.release(at)
        self._touch(step, idem, at)

    @event("StepFailed")
    def _step_failed(self, order: int, error: str, idem: str | None, timestamp: datetime | None) -> None:
        at = _at(timestamp)
        step = self.step(order)
        step.status = StepStatus.FAILED
        step.error = error
        step.finished_at = at
        step.release(at)
        self._refresh_status(at)
        self._touch(step, idem, at)

    @event("StepSkipped")
    def _step_skipped(
        self, order: int, reason: str | None, idem: str | None, timestamp: datetime | None
    ) -> None:
        at = _at(timestamp)
        step = self.step(order)
        step.status = StepStatus.SKIPPED
        step.error = None
        if step.started_at is not None and step.finished_at is None:
            step.finished_at = at
            step.release(at)
        self._refresh_status(at)
        self._touch(step, idem, at)

    @event("StepRetried")
    def _step_retried(self, order: int, idem: str | None, timestamp: datetime | None) -> None:
        at = _at(timestamp)
        step = self.step(order)
        step.error = None
        step.reported = 0.0
        step.attempts += 1
        # A retry is a new run: its clock starts now, the failed attempt's time is not work on this one.
        step.started_at = at
        step.finished_at = None
        step.held_ms = 0
        step.held_since = None
        if step.requires_approval and not step.approved:
            step.status = StepStatus.APPROVAL
            step.approval_message = f"Approve step {order}: {step.name}?"
            step.approval_requested_at = at
            step.hold(at)
        elif self.paused_at is not None:
            step.status = StepStatus.PAUSED
            step.hold(at)
        else:
            step.status = StepStatus.RUNNING
        self._refresh_status(at)
        self._touch(step, idem, at)

    @event("ApprovalRequested")
    def _approval_requested(
        self, order: int, message: str, idem: str | None, timestamp: datetime | None
    ) -> None:
        at = _at(timestamp)
        step = self.step(order)
        if step.status is StepStatus.PENDING:
            step.started_at = at
            step.attempts += 1
        step.status = StepStatus.APPROVAL
        step.approval_message = message
        step.approval_requested_at = at
        step.hold(at)
        self._refresh_status(at)
        self._touch(step, idem, at)

    @event("Approved")
    def _approved(
        self, order: int, comment: str | None, idem: str | None, timestamp: datetime | None
    ) -> None:
        at = _at(timestamp)
        step = self.step(order)
        step.approved = True
        step.approval_message = None
        step.approval_requested_at = None
        if self.paused_at is not None:
            step.status = StepStatus.PAUSED
        else:
            step.status = StepStatus.RUNNING
            step.release(at)
        self._touch(step, idem, at)

    @event("Rejected")
    def _rejected(
        self, order: int, comment: str | None, idem: str | None, timestamp: datetime | None
    ) -> None:
        at = _at(timestamp)
        step = self.step(order)
        step.status = StepStatus.FAILED
        step.error = f"rejected: {comment}" if comment else "rejected"
        step.approval_message = None
        step.approval_requested_at = None
        step.finished_at = at
        step.release(at)
        self._refresh_status(at)
        self._touch(step, idem, at)

    @event("Paused")
    def _paused(self, idem: str | None, timestamp: datetime | None) -> None:
        at = _at(timestamp)
        self.status = TaskStatus.PAUSED
        self.paused_at = at
        for step in self.steps:
            if step.status is StepStatus.RUNNING:
                step.status = StepStatus.PAUSED
                step.hold(at)
                step.updated_at = at
        self._touch(None, idem, at)

    @event("Resumed")
    def _resumed(self, idem: str | None, timestamp: datetime | None) -> None:
        at = _at(timestamp)
        self.status = TaskStatus.RUNNING
        self.paused_at = None
        for step in self.steps:
            if step.status is StepStatus.PAUSED:
                step.status = StepStatus.RUNNING
                step.release(at)
                step.updated_at = at
        self._touch(None, idem, at)

    @event("Cancelled")
    def _cancelled(self, reason: str | None, idem: str | None, timestamp: datetime | None) -> None:
        at = _at(timestamp)
        self.status = TaskStatus.CANCELLED
        self.error = reason
        self.finished_at = at
        self.paused_at = None
        for step in self.steps:
            if step.status in ACTIVE_STEP:
                step.finished_at = at
                step.release(at)
        self._touch(None, idem, at)

    @event("TaskCompleted")
    def _task_completed(self, result: str | None, timestamp: datetime | None) -> None:
        at = _at(timestamp)
        self.status = TaskStatus.COMPLETED
        self.result = result
        self.finished_at = at
        self.error = None

    @event("Restarted")
    def _restarted(self, new_task_id: str, idem: str | None, timestamp: datetime | None) -> None:
        self.restarted_as = new_task_id
        self._touch(None, idem, _at(timestamp))

    @event("Logged")
    def _logged(
        self, level: str, message: str, step: int | None, idem: str | None, timestamp: datetime | None
    ) -> None:
        self._touch(None, idem, _at(timestamp))


def _at(timestamp: datetime | None) -> datetime:
    # eventsourcing fills in the timestamp before the event body runs; None never reaches here.
    assert timestamp is not None
    return timestamp


def _ms(delta: Any) -> int:
    return int(delta.total_seconds() * 1000)


def _upcast_created_v1_v2(state: dict[str, Any]) -> None:
    """Version 1 plans were a list of step names; version 2 steps carry weight, substeps and approval."""
    state["steps"] = [
        step
        if isinstance(step, dict)
        else {"name": step, "weight": 1.0, "substeps": [], "requires_approval": False}
        for step in state["steps"]
    ]
    state.setdefault("tables", None)
    state.setdefault("complexity", None)
    state.setdefault("restarted_from", None)
    state.setdefault("idem", None)
    state.setdefault("task_id", None)


def _upcast_created_v2_v3(state: dict[str, Any]) -> None:
    """Version 2 had no imported runs (progressd import-history)."""
    state.setdefault("imported", False)


def _upcast_step_completed_v1_v2(state: dict[str, Any]) -> None:
    """Version 1 kept no result for the step (only the task's, when the step completed it)."""
    state.setdefault("result", None)


# Schema versions of the Task's events. A stored event records the version it was written with; when an
# older one is read, eventsourcing calls upcast_vN_vN+1 on its state until it has today's shape.
Task.Created.class_version = 3  # type: ignore[attr-defined]
Task.Created.upcast_v1_v2 = staticmethod(_upcast_created_v1_v2)  # type: ignore[attr-defined]
Task.Created.upcast_v2_v3 = staticmethod(_upcast_created_v2_v3)  # type: ignore[attr-defined]
Task.StepCompleted.class_version = 2  # type: ignore[attr-defined]
Task.StepCompleted.upcast_v1_v2 = staticmethod(_upcast_step_completed_v1_v2)  # type: ignore[attr-defined]
