"""A shared, bounded tail of the event log: recent events per task as pre-encoded stream frames.

Streams read from here while their cursor is recent and from the store when it is older; the tail itself
only follows the log, so a lost or doubled wake-up costs nothing.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import structlog
from eventsourcing.persistence import Recording

from domain.progress import progress_view
from domain.task import Task
from infra.handover import Handover
from infra.projector import TaskCache
from infra.store import ProgressApp
from projections.messages import Message, ProgressMsg, encoder, messages_for

log = structlog.get_logger(__name__)


Estimator = Callable[[dict[str, Any]], dict[str, Any]]  # a view -> its estimate members, as of updated_at
ETA_FIELDS = ("eta_seconds", "eta_low_seconds", "eta_high_seconds", "eta_confidence", "needs_attention")


_ENCODING = threading.Lock()
EVERYONE = "*"  # an all-tasks stream that sees every owner's tasks
QUIET = 15.0  # seconds: how often waiting streams wake up when nothing happens (to look at the store)
BATCH = 500  # events read (or taken from the writer) at a time
MAX_BYTES = 64 * 1024 * 1024  # default bound on the tail's memory (PROGRESSD_TAIL_BYTES)
# Memory an entry holds besides its frames' payload: the Entry, its frames tuple, the bytes objects' headers,
# its task id, seq and position, and its slots in the tail's lists: 360-385 bytes measured with tracemalloc
# (tests/integration/test_tail_bytes.py checks the count against it), plus room for the estimate members
# an entry whose estimate is owed gains when encoded. Until then it holds message Structs, which take less
# than their encoding: it is counted as that encoding.
OVERHEAD = 420


_buffers = threading.local()


def frame(message: Message) -> bytes:
    """A message encoded into a bytes object of its exact size: msgspec's `encode` leaves up to half again
    as much allocated behind a large result, which the tail would hold for as long as it keeps the frame."""
    buffer: bytearray | None = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = bytearray()
    encoder.encode_into(message, buffer)
    return bytes(buffer)


class Entry:
    """One event as streams see it: where it is, whose it is, and its messages encoded as frames.

    The newest progress message of a task carries the time estimate, made when a stream first sends it (an
    event nobody watches costs no estimate) and shared with the answer to the command that made it. A
    progress message superseded before anyone sent it goes out with null estimate members.
    """

    __slots__ = ("_estimate", "_frames", "_messages", "nbytes", "owner", "position", "seq", "task_id", "tick")

    def __init__(
        self,
        position: int,
        task_id: str,
        owner: str,
        seq: int,
        messages: list[Message],
        estimate: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.position = position
        self.task_id = task_id
        self.owner = owner
        self.seq = seq
        self.tick = bool(messages) and all(isinstance(m, ProgressMsg) for m in messages)
        self._messages: tuple[Message, ...] = tuple(messages)
        self._estimate = estimate
        self._frames: tuple[bytes, ...] | None = None
        if estimate is None:
            self._frames = tuple(frame(m) for m in messages)
            self._messages = ()
            self.nbytes = OVERHEAD + sum(len(f) for f in self._frames)
        else:  # what the messages hold now: their text, as encoded without the estimate, and the Structs
            self.nbytes = OVERHEAD + sum(len(encoder.encode(m)) for m in messages)

    @property
    def frames(self) -> tuple[bytes, ...]:
        if self._frames is None:
            self._encode()
        assert self._frames is not None
        return self._frames

    @property
    def estimated(self) -> bool:
        """Whether encoding this entry still has an estimate to make (not yet sent, not superseded)."""
        return self._frames is None and self._estimate is not None

    def supersede(self) -> None:
        """A newer progress message of the task carries the estimate: this one will not, if not yet sent."""
        self._estimate = None

    def _encode(self) -> None:
        with _ENCODING:  # a stream on the event loop and one on a reader thread may both ask
            if self._frames is not None:
                return
            estimate = self._estimate
            if estimate is not None:
                fields = estimate()
                for message in self._messages:
                    if isinstance(message, ProgressMsg):
                        for name in ETA_FIELDS:
                            setattr(message, name, fields.get(name))
            self._frames = tuple(frame(m) for m in self._messages)
            self._messages = ()
            self._estimate = None


class Watchers:
    """Who is streaming what, so that estimates are made ahead (on the tail's thread, once) only for tasks
    someone watches: a task's own stream, or an all-tasks stream of its owner (or of an admin)."""

    def __init__(self) -> None:
        self._tasks: Counter[str] = Counter()
        self._owners: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, task_id: str, owner: str) -> bool:
        return bool(self._tasks.get(task_id) or self._owners.get(owner) or self._owners.get(EVERYONE))

    @contextmanager
    def task(self, task_id: str) -> Iterator[None]:
        with self._counted(self._tasks, task_id):
            yield

    @contextmanager
    def owner(self, owner: str | None) -> Iterator[None]:
        with self._counted(self._owners, EVERYONE if owner is None else owner):
            yield

    @contextmanager
    def _counted(self, counter: Counter[str], key: str) -> Iterator[None]:
        with self._lock:
            counter[key] += 1
        try:
            yield
        finally:
            with self._lock:
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]


class Batch:
    """Entries of consecutive events. Only the last progress message of each task in the batch may carry the
    time estimate: a live batch is an event or two, and a reader catching up gets one estimate per task, not
    one per tick it missed. The estimate is made here for watched tasks (`ahead`; all when None), else when
    a stream first sends the message."""

    def __init__(self, eta: Estimator | None = None, ahead: Callable[[str, str], bool] | None = None) -> None:
        self.eta = eta
        self.ahead = ahead
        self._entries: list[Entry] = []
        self._last: dict[str, Entry] = {}

    def add(self, event: Any, task: Task, position: int) -> None:
        """One event and the task right after it."""
        messages: list[Message] = messages_for(event, task, position)
        task_id = str(task.id)
        estimate = None
        if self.eta is not None and any(isinstance(m, ProgressMsg) for m in messages):
            estimate = partial(self.eta, progress_view(task, compact=True))  # all the estimate reads
            earlier = self._last.get(task_id)
            if earlier is not None:
                earlier.supersede()
        entry = Entry(position, task_id, task.owner, event.originator_version, messages, estimate)
        if estimate is not None:
            self._last[task_id] = entry
        self._entries.append(entry)

    def entries(self) -> list[Entry]:
        for task_id, entry in self._last.items():
            if self.ahead is None or self.ahead(task_id, entry.owner):
                entry.frames  # noqa: B018 - encoding now makes the estimate
        return self._entries


def _seq(entry: Entry) -> int:
    return entry.seq


class LogTail:
    """Follows the log on a thread; keeps the last `window` events, in at most `max_bytes` of memory.

    A task's own buffer holds its entries that are in that window and no others: an entry leaves both at
    once, so what the tail holds is what it counts. A reader whose cursor has left it reads the store.
    """

    def __init__(
        self,
        app: ProgressApp,
        window: int = 20_000,
        tasks: int = 10_000,
        poll: float = 0.05,
        eta: Estimator | None = None,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.app = app
        self.eta = eta
        self.watchers = Watchers()
        self.window = window
        self.max_tasks = tasks
        self.max_bytes = max_bytes
        self.poll = poll
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._positions: list[int] = []
        self._by_task: OrderedDict[str, list[Entry]] = OrderedDict()
        self._owed: OrderedDict[str, Entry] = OrderedDict()  # entries whose estimate is made when first sent
        self.bytes = 0  # what the entries in the window hold (Entry.nbytes)
        self.first = 0  # entries with position > first are all in memory (until trimmed)
        self.position = 0
        self._cache = TaskCache(app)
        # Events this process's writer just committed: taken from here when they follow on from the tail's
        # position, instead of read back from the store.
        self._handover = Handover(BATCH)
        self._hinted = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._quiet: asyncio.TimerHandle | None = None

    # ---- following --------------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._changed = asyncio.Event()
        head = self.app.head()
        self.first = self.position = max(0, head - self.window)
        self._thread = threading.Thread(target=self._run, name="progressd-tail", daemon=True)
        self._thread.start()
        self._quiet = loop.call_later(QUIET, self._quiet_tick)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._quiet is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._quiet.cancel)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self, _position: int = 0) -> None:
        """A hint that the log grew (another gateway via NATS, another writer): the tail reads the store."""
        self._hinted = True
        self._wake.set()

    def offer(self, recordings: Sequence[Recording[Any]]) -> None:
        """Events this process just committed, with their positions (from the writer thread)."""
        self._handover.offer(recordings)
        self._wake.set()

    def _run(self) -> None:
        read = True  # look at the store: at the start, after each poll interval and on every hint
        while not self._stop.is_set():
            self._wake.clear()
            hinted, self._hinted = self._hinted, False
            try:
                while self._step(read or hinted):
                    pass
            except Exception as exc:  # keep following; a reader that needs the gap reads the store
                log.error("tail_failed", error=str(exc), exc_info=True)
                self._cache = TaskCache(self.app)
                self._stop.wait(1.0)
            read = not self._wake.wait(self.poll)

    def _step(self, read: bool) -> bool:
        """Append the next events: those this process's writer handed over when they follow on, else (when
        told to look, or when what was handed over waits behind a gap) the next ones in the store."""
        events = self._handover.next_events(self.app, self.position, read)
        if not events:
            return False
        fresh = Batch(self.eta, self.watchers)
        for position, event in events:
            if isinstance(event, Task.Event):
                task = self._cache.apply(event)
                fresh.add(event, task, position)
        self._append(fresh.entries(), events[-1][0])
        return True

    def _append(self, fresh: Iterable[Entry], position: int) -> None:
        with self._lock:
            for entry in fresh:
                self._entries.append(entry)
                self._positions.append(entry.position)
                self.bytes += entry.nbytes
                buffer = self._by_task.get(entry.task_id)
                if buffer is None:
                    buffer = self._by_task[entry.task_id] = []
                else:
                    self._by_task.move_to_end(entry.task_id)
                buffer.append(entry)
                if entry.estimated:  # only a task's newest unsent progress message carries the estimate
                    earlier = self._owed.pop(entry.task_id, None)
                    if earlier is not None:
                        earlier.supersede()
                    self._owed[entry.task_id] = entry
                    if len(self._owed) > self.max_tasks:
                        self._owed.popitem(last=False)[1].supersede()
            # Trim in steps (to the window, to 7/8 of the bytes) so that trimming costs O(1) per entry.
            if len(self._entries) > 2 * self.window:
                self._trim(len(self._entries) - self.window)
            if self.bytes > self.max_bytes:
                cut, freed, target = 0, 0, self.bytes - self.max_bytes * 7 // 8
                while freed < target and cut < len(self._entries) - 1:  # the newest entry stays
                    freed += self._entries[cut].nbytes
                    cut += 1
                self._trim(cut)
            self.position = position
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._notify)

    def _trim(self, cut: int) -> None:
        """Drop the oldest `cut` entries from the window and from their tasks' buffers (under the lock)."""
        if cut <= 0:
            return
        gone = self._entries[:cut]
        self.first = gone[-1].position
        del self._entries[:cut]
        del self._positions[:cut]
        dropped: Counter[str] = Counter()
        for entry in gone:
            self.bytes -= entry.nbytes
            dropped[entry.task_id] += 1
            if self._owed.get(entry.task_id) is entry:
                del self._owed[entry.task_id]
        for task_id, count in dropped.items():
            buffer = self._by_task[task_id]
            if count >= len(buffer):
                del self._by_task[task_id]
            else:
                del buffer[:count]  # a task's oldest entries are the window's oldest of that task

    def _notify(self) -> None:
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()

    def _quiet_tick(self) -> None:
        """Wake every waiting stream now and then even when nothing happened (one timer for them all)."""
        if self._stop.is_set() or self._loop is None:
            return
        self._notify()
        self._quiet = self._loop.call_later(QUIET, self._quiet_tick)

    # ---- reading (event loop side) ----------------------------------------------------------------------

    async def wait(self, position: int) -> bool:
        """Wait until the tail has moved past `position` (True), or for the next quiet tick if nothing new
        came by then (False: at most QUIET seconds). Every subscriber waits here after every event: one
        shared tick instead of a timeout each."""
        if self.position > position or self._changed is None:
            return True
        await self._changed.wait()  # set by _notify, which runs on this loop after position moved on
        return self.position > position

    def since(self, position: int, limit: int) -> list[Entry] | None:
        """Entries after a global position, or None when that part of the log has left the tail."""
        with self._lock:
            if position < self.first:
                return None
            i = bisect.bisect_right(self._positions, position)
            return self._entries[i : i + limit]

    def task_since(self, task_id: str, seq: int, limit: int) -> list[Entry] | None:
        """A task's entries after `seq`, or None when the tail does not hold all of them."""
        with self._lock:
            buffer = self._by_task.get(task_id)
            if not buffer:
                return []
            if buffer[0].seq > seq + 1:
                return None
            i = bisect.bisect_right(buffer, seq, key=_seq)  # no list of seqs: every subscriber asks
            return buffer[i : i + limit]

    @property
    def size(self) -> int:
        """How many events the tail holds."""
        return len(self._entries)

    def holds_task(self, task_id: str) -> bool:
        with self._lock:
            return task_id in self._by_task

    def latest(self, task_id: str) -> Entry | None:
        with self._lock:
            buffer = self._by_task.get(task_id)
            return buffer[-1] if buffer else None
