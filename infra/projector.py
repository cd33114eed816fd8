"""Follows the event log and keeps each read model up to date, exactly once, from its own tracked position."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from uuid import UUID

import structlog
from eventsourcing.persistence import Notification, Recording, Tracking

from domain.task import Task
from infra.handover import Handover
from infra.store import ProgressApp
from infra.views import ViewRecorder, apply_together, shared_database
from projections.model import Change, Op, StepState, step_states

log = structlog.get_logger(__name__)

BATCH = 500
CACHE = 2_000


class TaskCache:
    """Tasks as of the last event applied to them, with their step states when a read model asked for
    them; a miss loads the task from the log."""

    def __init__(self, app: ProgressApp, size: int = CACHE) -> None:
        self.app = app
        self.size = size
        self._tasks: OrderedDict[UUID, tuple[Task, tuple[StepState, ...] | None]] = OrderedDict()

    def apply(self, event: Any) -> Task:
        """Apply an event to the cached task; the task after it."""
        return self._move(event, False)[0]

    def advance(self, event: Any, position: int) -> Change:
        """Apply an event to the cached task; the Change a read model sees."""
        task, before, after = self._move(event, True)
        assert after is not None
        return Change(event, task, before, after, position)

    def _move(
        self, event: Any, states: bool
    ) -> tuple[Task, tuple[StepState, ...] | None, tuple[StepState, ...] | None]:
        task_id: UUID = event.originator_id
        before = None
        if isinstance(event, Task.Created):
            task = event.mutate(None)
        else:
            cached = self._tasks.get(task_id)
            if cached is None or cached[0].version != event.originator_version - 1:
                cached = (self.app.task(task_id, event.originator_version - 1), None)
            task, before = cached
            if states and before is None:
                before = step_states(task)
            event.mutate(task)
        assert isinstance(task, Task)
        after = step_states(task) if states else None  # the next event's `before`: computed once
        self._tasks[task_id] = (task, after)
        self._tasks.move_to_end(task_id)
        while len(self._tasks) > self.size:
            self._tasks.popitem(last=False)
        return task, before, after


class Projection:
    """One read model following the log."""

    def __init__(self, app: ProgressApp, view: ViewRecorder) -> None:
        self.app = app
        self.view = view
        self.name = view.model.name
        self.cache = TaskCache(app)
        self.position = view.max_tracking_id(self.name) or 0
        self.wrote = False  # whether the last batch changed any of this model's rows
        self.changed_at = 0  # the position of the last batch that did, in this process (0: none yet)

    def step(self, limit: int = BATCH, stop: int | None = None) -> int:
        """Apply the next batch of notifications in one transaction; return how many there were."""
        self.wrote = False
        if stop is not None and self.position >= stop:
            return 0
        batch = self.app.notifications(self.position, limit, stop)
        if not batch:
            return 0
        ops: list[Op] = []
        for notification in batch:
            ops.extend(self._ops(notification))
        self.view.apply(ops, Tracking(self.name, batch[-1].id))
        self.position = batch[-1].id
        self._wrote(bool(ops))
        return len(batch)

    def _wrote(self, changed: bool) -> None:
        self.wrote = changed
        if changed:
            self.changed_at = self.position

    def _ops(self, notification: Notification) -> list[Op]:
        event = self.app.mapper.to_domain_event(notification)
        if not isinstance(event, Task.Event):
            return []
        return self.view.model.handle(self.cache.advance(event, notification.id))

    def reset(self) -> None:
        """Forget the in-memory state, e.g. after the tables were dropped or a batch failed."""
        self.cache = TaskCache(self.app)
        self.position = self.view.max_tracking_id(self.name) or 0


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Projector:
    """Runs projections on a background thread, woken by the writer in-process or by a short poll."""

    def __init__(self, projections: Iterable[Projection], poll: float = 0.5) -> None:
        self.projections = list(projections)
        self.poll = poll
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        # Called with (model name, position) after a batch that changed that model's rows.
        self.listeners: list[Callable[[str, int], None]] = []
        self._shared: TaskCache | None = None
        self._one_database: bool | None = None
        # Events this process's writer committed: applied from here when they follow on, not read back.
        self._handover = Handover(BATCH)
        self._look = True  # whether the next run reads the store (a wake, the poll), not only what was handed
        # Coroutines waiting for a position (read-your-writes), woken on their own event loop.
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._waiters_lock = threading.Lock()

    def wake(self, _position: int = 0) -> None:
        """The log grew, or may have (another writer, a poll): the next run reads the store."""
        self._look = True
        self._wake.set()

    def offer(self, recordings: Sequence[Recording[Any]]) -> None:
        """Events this process's writer just committed, with their positions (from the writer thread)."""
        self._handover.offer(recordings)
        self._wake.set()

    def positions(self) -> dict[str, int]:
        return {p.name: p.position for p in self.projections}

    def changed_at(self, name: str) -> int | None:
        """The position of the last batch that changed a read model's rows since this process started (0:
        none yet; None if this projector does not keep that model)."""
        return next((p.changed_at for p in self.projections if p.name == name), None)

    def run_once(self, look: bool = True) -> int:
        """Apply everything that is in the log now (with `look` false: only what was handed over, unless
        that waits behind a gap); return how many notifications were applied."""
        total = 0
        while True:
            if len(self.projections) > 1 and len({p.position for p in self.projections}) == 1:
                n = self._step_together(look)
            else:
                n = sum(p.step() for p in self.projections)
                self._shared = None
            if not n:
                return total
            total += n
            with self._progress:
                self._progress.notify_all()
            self._wake_waiters()
            for projection in self.projections:
                if projection.wrote:
                    for listener in self.listeners:
                        listener(projection.name, projection.position)

    def _step_together(self, look: bool = True) -> int:
        """Projections at the same position take each batch once (handed over by this process's writer, else
        read and decoded from the store) and share one task cache."""
        first = self.projections[0]
        events = self._handover.next_events(first.app, first.position, look)
        if not events:
            return 0
        if self._shared is None:
            self._shared = TaskCache(first.app)
        ops: list[list[Op]] = [[] for _ in self.projections]
        for position, event in events:
            if isinstance(event, Task.Event):
                # Every handler runs before the next event moves the shared task on.
                change = self._shared.advance(event, position)
                for i, projection in enumerate(self.projections):
                    ops[i].extend(projection.view.model.handle(change))
        tracking_id = events[-1][0]
        if self._one_database is None:
            self._one_database = shared_database([p.view for p in self.projections])
        if self._one_database:  # one commit for every read model instead of one each
            apply_together(
                [(p.view, ops[i], Tracking(p.name, tracking_id)) for i, p in enumerate(self.projections)]
            )
        for i, projection in enumerate(self.projections):
            if not self._one_database:
                projection.view.apply(ops[i], Tracking(projection.name, tracking_id))
            projection.position = tracking_id
            projection._wrote(bool(ops[i]))
            projection.cache = TaskCache(first.app)  # stale now: rebuilt if this projection runs alone
        return len(events)

    def _loop(self) -> None:
        failed = False
        look = True  # at the start, after each poll interval and after any wake: read the store too
        while not self._stop.is_set():
            self._wake.clear()
            look, self._look = look or self._look, False
            try:
                if failed:
                    # Inside the try: while the store is down the reset fails too; it must not end the thread.
                    for projection in self.projections:
                        projection.reset()
                    self._shared = None
                    failed = False
                    look = True
                self.run_once(look)
                self.error = None
            except Exception as exc:  # a failing batch rolls back; reset and retry after a pause, loudly
                self.error = exc
                failed = True
                log.error("projection_failed", error=str(exc), exc_info=True)
                self._stop.wait(1.0)
            look = not self._wake.wait(self.poll)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="progressd-projector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def applied(self, position: int) -> bool:
        """Whether every projection has applied `position`."""
        return all(p.position >= position for p in self.projections)

    async def wait_async(self, position: int, timeout: float) -> bool:  # noqa: ASYNC109 - bounded wait
        """Wait on the event loop, holding no thread, until every projection has applied `position` (True)
        or the timeout passed (False)."""
        if self.applied(position):
            return True
        loop = asyncio.get_running_loop()
        entry = (position, loop, loop.create_future())
        with self._waiters_lock:
            self._waiters.append(entry)
        try:
            if not self.applied(position):  # progress made before we were listed was not announced to us
                await asyncio.wait_for(asyncio.shield(entry[2]), timeout)
            return True
        except TimeoutError:
            return self.applied(position)
        finally:
            with self._waiters_lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)

    def _wake_waiters(self) -> None:
        low = min((p.position for p in self.projections), default=0)
        with self._waiters_lock:
            due = [w for w in self._waiters if w[0] <= low]
            self._waiters = [w for w in self._waiters if w[0] > low]
        for _, loop, future in due:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(_resolve, future)

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until every projection has applied `position` (True) or the timeout passed (False)."""
        with self._progress:
            return self._progress.wait_for(
                lambda: all(p.position >= position for p in self.projections), timeout=timeout
            )
