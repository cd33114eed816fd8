"""The one writer path: every command loads a task, calls the domain, saves, and reports its position."""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from uuid import UUID, uuid4, uuid5

import structlog
from eventsourcing.persistence import IntegrityError, OperationalError, Recording
from eventsourcing.persistence import InterfaceError as StoreInterfaceError

from domain.errors import DomainError, InvalidValue
from domain.progress import answer_view, progress_view
from domain.state import TaskStatus
from domain.task import StepPlan, Task
from infra.metrics import Metrics
from infra.store import ProgressApp, TaskNotFound

log = structlog.get_logger(__name__)
R = TypeVar("R")
KEY_NAMESPACE = UUID("6f1c2b7e-4d0a-4f63-9a51-8e2f3c4d5a6b")
# A command without If-Match that loses a race to another writer is redone on the fresh task, with jittered
# backoff so that two processes hammering one task take turns; after this many tries it answers 503.
MAX_CONFLICT_RETRIES = 24
SAVED_TASKS = 2000  # tasks the writer keeps as it last saved them
Pin = tuple[int, ...]  # the task versions an If-Match accepts, any of them (none: only weak tags were sent)
CONFLICT_BACKOFF_S = 0.002
CONFLICT_BACKOFF_MAX_S = 0.05


@dataclass(frozen=True)
class Outcome:
    """What a command did: the task's view after it, its version, the log position, and how it went."""

    view: dict[str, Any]
    version: int
    position: int
    replayed: bool = False
    created: bool = False


@dataclass(frozen=True)
class NewTask:
    """A request to create a task."""

    title: str
    steps: list[StepPlan]
    tables: int | None = None
    complexity: str | None = None


def fingerprint(*parts: object) -> str:
    """A stable hash of a request, so a reused Idempotency-Key with another body is recognised."""
    raw = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def command_print(name: str, task_id: UUID, args: dict[str, Any], key: str | None) -> tuple[str, str | None]:
    """A command's fingerprint and the idempotency mark its event carries; both empty without a key (only a
    keyed command is ever compared with an earlier one)."""
    if not key:
        return "", None
    print_ = fingerprint(name, str(task_id), args)
    return print_, f"{key}:{print_}"


def check_text(path: str, value: object) -> None:
    """Refuse NUL characters in any text: PostgreSQL text columns cannot hold them, so one such event
    would stop every read model at that position (the log itself, bytea, would accept it)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidValue(path, "must not contain NUL characters")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_text(f"{path}[{i}]", item)


def apply_command(task: Task, name: str, args: dict[str, Any], idem: str | None) -> None:
    """Dispatch a named command to the Task's method."""
    for field, value in args.items():
        check_text(field, value)
    order = int(args.get("order", 0))
    match name:
        case "start":
            task.start_step(order, idem=idem)
        case "progress":
            task.report_progress(order, float(args["percent"]), idem=idem)
        case "substep":
            task.complete_substep(order, int(args["n"]), idem=idem)
        case "complete":
            task.complete_step(order, result=args.get("result"), idem=idem)
        case "fail":
            task.fail_step(order, str(args["error"]), idem=idem)
        case "skip":
            task.skip_step(order, reason=args.get("reason"), idem=idem)
        case "retry":
            task.retry_step(order, idem=idem)
        case "approval":
            task.request_approval(order, str(args["message"]), idem=idem)
        case "approve":
            task.approve(order, comment=args.get("comment"), idem=idem)
        case "reject":
            task.reject(order, comment=args.get("comment"), idem=idem)
        case "pause":
            task.pause(idem=idem)
        case "resume":
            task.resume(idem=idem)
        case "cancel":
            task.cancel(reason=args.get("reason"), idem=idem)
        case "log":
            task.log(str(args["level"]), str(args["message"]), args.get("step"), idem=idem)
        case _:
            raise UnknownCommand(name)


class TaskService:
    """Runs commands on one writer thread and queries on a small reader pool, never on the event loop."""

    def __init__(self, app: ProgressApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics or Metrics()
        self._writer = GroupWriter(self)
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="progressd-reader")
        self._listeners: list[Callable[[int], None]] = []
        self._recorded: list[Callable[[Sequence[Recording[UUID]]], None]] = []
        self._lock = threading.Lock()
        # Tasks as this process last saved them. A command takes its task out (so nothing else changes it
        # meanwhile) and puts it back once saved: no reload, no copy. Another process's write shows up as a
        # conflict on save, and the command is redone on the task read from the store.
        self._saved: OrderedDict[UUID, Task] = OrderedDict()
        self._saved_lock = threading.Lock()

    def on_saved(self, listener: Callable[[int], None]) -> None:
        """Call `listener(position)` after every save (wake projections and streams)."""
        self._listeners.append(listener)

    def on_recorded(self, listener: Callable[[Sequence[Recording[UUID]]], None]) -> None:
        """Call `listener(recordings)` with the events of every save and their log positions, before the
        `on_saved` listeners (the log tail takes them from here instead of reading them back)."""
        self._recorded.append(listener)

    def _committed(self, recordings: Sequence[Recording[UUID]], position: int) -> None:
        if recordings:
            for hand in self._recorded:
                hand(recordings)
        for listener in self._listeners:
            listener(position)

    def close(self) -> None:
        self._writer.close()
        self._readers.shutdown(wait=True)
        self.app.close()

    # ---- async facade -----------------------------------------------------------------------------------

    async def write(self, fn: Callable[[], R]) -> R:
        """Run `fn` on the writer thread, in order with every other write."""
        return await asyncio.wrap_future(self._writer.submit_call(fn))

    async def read(self, fn: Callable[[], R]) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn)

    async def counted(
        self, command: str, fn: Callable[[], Outcome] | CommandJob, grouped: bool = False
    ) -> Outcome:
        """Run a command on the writer thread (grouped with others into one commit) and count its outcome."""
        outcome_label = "error"
        try:
            if isinstance(fn, CommandJob):
                outcome = await asyncio.wrap_future(self._writer.submit_command(fn))
            else:
                outcome = await self.write(fn)
            outcome_label = "replayed" if outcome.replayed else "ok"
            return outcome
        except (DomainError, TaskNotFound, VersionMismatch, UnknownCommand):
            outcome_label = "rejected"
            raise
        except (StoreUnavailable, WriteContended):  # both answer 503: nothing written, try again
            outcome_label = "unavailable"
            raise
        finally:
            self.metrics.commands.labels(command, outcome_label).inc()

    async def create(self, owner: str, new: NewTask, key: str | None = None) -> Outcome:
        return await self.counted("create", lambda: self.create_sync(owner, new, key))

    async def command(
        self,
        task_id: UUID,
        owner: str | None,
        name: str,
        args: dict[str, Any],
        key: str | None = None,
        if_match: Pin | None = None,
    ) -> Outcome:
        job = CommandJob(task_id, owner, name, args, key, if_match)
        return await self.counted(name, job, grouped=True)

    async def restart(
        self, task_id: UUID, owner: str | None, key: str | None = None, if_match: Pin | None = None
    ) -> Outcome:
        return await self.counted("restart", lambda: self.restart_sync(task_id, owner, key, if_match))

    # ---- commands ---------------------------------------------------------------------------------------

    def create_sync(self, owner: str, new: NewTask, key: str | None = None) -> Outcome:
        """Create a task; with a key, the task id is derived from it so a retry finds the same task."""
        check_text("title", new.title)
        for i, step in enumerate(new.steps):
            check_text(f"steps[{i}].name", step.name)
            check_text(f"steps[{i}].substeps", step.substeps)
        print_ = fingerprint(
            "create", new.title, [s.as_dict() for s in new.steps], new.tables, new.complexity
        )
        task_id = uuid5(KEY_NAMESPACE, f"{owner}\n{key}") if key else uuid4()
        idem = f"{key}:{print_}" if key else None
        task = Task.plan(new.title, owner, new.steps, new.tables, new.complexity, task_id=task_id, idem=idem)
        try:
            position = self._save(task)
        except IntegrityError:
            if key is None:
                raise
            existing = self.load(task_id, owner)
            existing.replayed(key, print_)
            return self._outcome(existing, self.app.head(), replayed=True, created=True)
        self.checkin(task)
        return self._outcome(task, position, created=True)

    def command_sync(
        self,
        task_id: UUID,
        owner: str | None,
        name: str,
        args: dict[str, Any],
        key: str | None = None,
        if_match: Pin | None = None,
    ) -> Outcome:
        """Apply one command, retrying on a concurrent writer unless the caller pinned a version."""
        print_, idem = command_print(name, task_id, args, key)
        fresh = False
        for attempt in range(MAX_CONFLICT_RETRIES):
            task = self.checkout(task_id, owner, fresh)
            keep = True  # put the task back unless it may hold changes that were not saved
            try:
                if key and task.replayed(key, print_):
                    return self._outcome(task, self.app.head(), replayed=True, step=_order(args))
                if if_match is not None and task.version not in if_match:
                    if not fresh:  # another process may have written since we saved it: look again
                        fresh = True
                        continue
                    raise VersionMismatch(if_match, task.version)
                keep = False
                apply_command(task, name, args, idem)
                try:
                    position = self._save(task)
                except IntegrityError:
                    if if_match is not None:
                        raise VersionMismatch(if_match, self.load(task_id, owner).version) from None
                    fresh = True
                    _back_off(attempt)
                    continue
                keep = True
                return self._outcome(task, position, step=_order(args))
            finally:
                if keep:
                    self.checkin(task)
        raise WriteContended(str(task_id), MAX_CONFLICT_RETRIES)

    def checkout(self, task_id: UUID, owner: str | None, fresh: bool = False) -> Task:
        """Take a task out to change it: as this process last saved it, or (fresh, or not kept) as stored."""
        with self._saved_lock:
            task = self._saved.pop(task_id, None)
        if task is None or fresh:
            return self.load(task_id, owner)
        if owner is not None and task.owner != owner:
            self.checkin(task)
            raise TaskNotFound(str(task_id))
        return task

    def checkin(self, task: Task) -> None:
        """Put a task back after a save (a task with unsaved changes is dropped instead)."""
        if task.pending_events:
            return
        with self._saved_lock:
            self._saved[task.id] = task
            self._saved.move_to_end(task.id)
            while len(self._saved) > SAVED_TASKS:
                self._saved.popitem(last=False)

    def restart_sync(
        self, task_id: UUID, owner: str | None, key: str | None = None, if_match: Pin | None = None
    ) -> Outcome:
        """Cancel the task if it is still going, then start a new one with the same plan, linked both ways;
        `if_match` pins the old task's version, as for every other command."""
        print_ = fingerprint("restart", str(task_id))
        idem = f"{key}:{print_}" if key else None
        for attempt in range(MAX_CONFLICT_RETRIES):
            old = self.checkout(task_id, owner, fresh=True)  # as stored; put back once saved
            if key and old.replayed(key, print_) and old.restarted_as:
                new = self.load(UUID(old.restarted_as), owner)
                return self._outcome(new, self.app.head(), replayed=True, created=True)
            if if_match is not None and old.version not in if_match:
                self.checkin(old)
                raise VersionMismatch(if_match, old.version)
            if old.status in (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.PAUSED, TaskStatus.FAILED):
                old.cancel(reason="restarted")
            new = Task.plan(
                old.title,
                old.owner,
                old.plan_steps(),
                old.tables,
                old.complexity,
                restarted_from=str(old.id),
            )
            old.mark_restarted(str(new.id), idem=idem)
            try:
                position = self._save(old, new)
            except IntegrityError:  # another process wrote the old task meanwhile: like commands, retry
                if if_match is not None:
                    raise VersionMismatch(if_match, self.load(task_id, owner).version) from None
                _back_off(attempt)
                continue
            self.checkin(old)
            self.checkin(new)
            return self._outcome(new, position, created=True)
        raise WriteContended(str(task_id), MAX_CONFLICT_RETRIES)

    # ---- queries ----------------------------------------------------------------------------------------

    def view_sync(self, task_id: UUID, owner: str | None, version: int | None = None) -> dict[str, Any]:
        """The progress JSON of a task, from its log (optionally as at an earlier version)."""
        return progress_view(self.load(task_id, owner, version))

    # ---- helpers ----------------------------------------------------------------------------------------

    def load(self, task_id: UUID, owner: str | None, version: int | None = None) -> Task:
        try:
            task = self.app.task(task_id, version)
        except (OperationalError, StoreInterfaceError) as exc:
            raise StoreUnavailable(str(exc)) from None
        if owner is not None and task.owner != owner:
            raise TaskNotFound(str(task_id))
        return task

    def _save(self, *tasks: Task) -> int:
        try:
            recordings = self.app.save(*tasks)
        except (OperationalError, StoreInterfaceError) as exc:
            raise StoreUnavailable(str(exc)) from None
        self.metrics.events.inc(len(recordings))
        self.metrics.commits.inc()
        position = recordings[-1].notification.id if recordings else self.app.head()
        self._committed(recordings, position)
        return position

    @staticmethod
    def _outcome(
        task: Task, position: int, *, replayed: bool = False, created: bool = False, step: int | None = None
    ) -> Outcome:
        return Outcome(
            {**answer_view(task, step), "position": position}, task.version, position, replayed, created
        )


@dataclass(frozen=True)
class CommandJob:
    """One command waiting for the writer."""

    task_id: UUID
    owner: str | None
    name: str
    args: dict[str, Any]
    key: str | None = None
    if_match: Pin | None = None


MAX_GROUP = 256


class GroupWriter:
    """The single writer thread. Commands that queue up while a commit is running are applied to their
    tasks one after another and saved together in one transaction (group commit): one lock, one fsync."""

    def __init__(self, service: TaskService) -> None:
        self.service = service
        self._queue: queue.SimpleQueue[tuple[CommandJob | Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="progressd-writer", daemon=True)
        self._thread.start()

    def submit_call(self, fn: Callable[[], R]) -> Future[R]:
        future: Future[R] = Future()
        self._queue.put((fn, future))
        return future

    def submit_command(self, job: CommandJob) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        self._queue.put((job, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            try:
                self._run_batch(batch)
            except BaseException as exc:  # the one writer must outlive any batch: fail what is still owed
                log.error("writer_batch_failed", error=str(exc), exc_info=True)
                failure = (
                    StoreUnavailable(str(exc))
                    if isinstance(exc, OperationalError | StoreInterfaceError)
                    else exc
                )
                for _, future in batch:
                    if not future.done():
                        future.set_exception(failure)
            if stop:
                return

    def _run_batch(self, batch: list[tuple[CommandJob | Callable[[], Any], Future[Any]]]) -> None:
        group: list[tuple[CommandJob, Future[Any]]] = []
        for work, future in batch:
            if isinstance(work, CommandJob):
                group.append((work, future))
                continue
            self._commit(group)
            group = []
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(work())
                except BaseException as exc:
                    future.set_exception(exc)
        self._commit(group)

    def _commit(self, group: list[tuple[CommandJob, Future[Any]]]) -> None:
        """Apply a group of commands to their tasks and save every changed task in one transaction."""
        if not group:
            return
        if len(group) == 1:
            job, future = group[0]
            _settle(future, lambda: self.service.command_sync(*_job_args(job)))
            return
        service = self.service
        tasks: dict[UUID, Task] = {}
        applied: list[tuple[Future[Any], Task, dict[str, Any], bool]] = []
        later: list[tuple[CommandJob, Future[Any]]] = []  # pinned versions our copy does not match
        for job, future in group:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                task = tasks.get(job.task_id)
                if task is None:
                    task = tasks[job.task_id] = service.checkout(job.task_id, job.owner)
                elif job.owner is not None and task.owner != job.owner:
                    raise TaskNotFound(str(job.task_id))
                print_, idem = command_print(job.name, job.task_id, job.args, job.key)
                if job.key and task.replayed(job.key, print_):
                    applied.append((future, task, answer_view(task, _order(job.args)), True))
                    continue
                if job.if_match is not None and task.version not in job.if_match:
                    later.append((job, future))  # decided on its own, against the task as stored
                    continue
                apply_command(task, job.name, job.args, idem)
                applied.append((future, task, answer_view(task, _order(job.args)), False))
            except BaseException as exc:
                future.set_exception(exc)
        try:
            recordings = service.app.save(*tasks.values())
        except IntegrityError:
            # Another process wrote one of these tasks meanwhile: redo each command on its own (it retries on
            # the task as stored).
            for job, future in group:
                if future.running():
                    _settle(future, partial(service.command_sync, *_job_args(job)), started=True)
            return
        except (OperationalError, StoreInterfaceError) as exc:
            for future in [f for f, *_ in applied] + [f for _, f in later]:
                future.set_exception(StoreUnavailable(str(exc)))
            return
        for task in tasks.values():
            service.checkin(task)
        positions = {
            (r.domain_event.originator_id, r.domain_event.originator_version): r.notification.id
            for r in recordings
        }
        head = max(positions.values(), default=0) or service.app.head()
        service.metrics.events.inc(len(recordings))
        if recordings:
            service.metrics.commits.inc()
        service._committed(recordings, head)
        for future, task, view, replayed in applied:
            position = head if replayed else positions.get((task.id, view["version"]), head)
            future.set_result(Outcome({**view, "position": position}, view["version"], position, replayed))
        for job, future in later:
            _settle(future, partial(service.command_sync, *_job_args(job)), started=True)


def _order(args: dict[str, Any]) -> int | None:
    """The step a command names, if any."""
    try:
        return int(args["order"]) if "order" in args else None
    except (TypeError, ValueError):
        return None


def _job_args(job: CommandJob) -> tuple[UUID, str | None, str, dict[str, Any], str | None, Pin | None]:
    return job.task_id, job.owner, job.name, job.args, job.key, job.if_match


def _settle(future: Future[Any], fn: Callable[[], Any], started: bool = False) -> None:
    if not started and not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn())
    except BaseException as exc:
        future.set_exception(exc)


def _back_off(attempt: int) -> None:
    """Sleep a random while that grows with each lost race, so colliding writers stop colliding."""
    time.sleep(random.uniform(0, min(CONFLICT_BACKOFF_MAX_S, CONFLICT_BACKOFF_S * 2**attempt)))


class VersionMismatch(Exception):
    """The task moved on since the version the caller expected (If-Match)."""

    def __init__(self, expected: Pin, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        if not expected:
            detail = "If-Match held only weak tags, and a weak tag never matches (RFC 9110 strong comparison)"
        else:
            detail = f"task is at version {actual}, not {' or '.join(str(v) for v in expected)}"
        super().__init__(detail)


class WriteContended(Exception):
    """Other writers kept changing the task for every retry; nothing was written, the caller may retry."""

    def __init__(self, task_id: str, tries: int) -> None:
        super().__init__(f"task {task_id} changed under each of {tries} attempts; nothing was written")


class StoreUnavailable(Exception):
    """The event store could not be reached; nothing was written."""


class UnknownCommand(Exception):
    """No command of that name."""
