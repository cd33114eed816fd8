"""Cursor streams over the log: replay what a client missed from the store, then follow the shared tail.

A stream holds only its cursor and one batch; a slow reader lags and catches up, it never loses a
transition. Progress ticks may be coalesced for a lagging reader (latest wins per task), nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from domain.progress import iso
from domain.task import Task
from infra.projector import TaskCache
from infra.runtime import Runtime
from infra.tail import Batch, Entry, LogTail
from projections.messages import ResyncRequired, Snapshot, encoder, snapshot

R = TypeVar("R")
BATCH = 500
LAGGING = 100  # a batch this long means the reader is behind: coalesce its progress ticks
MAX_REPLAY = 1_000_000  # a global cursor further behind than this gets resync_required


@dataclass
class Cursor:
    """Where a stream is: a task's seq (single-task stream) or a log position (all tasks).

    `part` > 0 means the client has the first `part` messages of the event at `value`, and not the rest.
    """

    value: int
    part: int = 0

    @classmethod
    def parse(cls, raw: str) -> Cursor:
        """`12` (after event 12) or `12.1` (after part 1 of event 12)."""
        value, _, part = raw.partition(".")
        if not value.isdigit() or len(value) > 18 or (part and (not part.isdigit() or len(part) > 4)):
            raise ValueError(f"after must be a non-negative integer or <seq>.<part>, got {raw!r}")
        return cls(int(value), int(part or 0))

    def resume(self, entries: list[Entry], key: Callable[[Entry], int]) -> list[bytes]:
        """The frames to send from `entries` (all after value - 1), and move past them."""
        frames: list[bytes] = []
        for entry in entries:
            at = key(entry)
            if at < self.value or (at == self.value and self.part == 0):
                continue
            skip = self.part if at == self.value else 0
            frames.extend(entry.frames[skip:])
            self.value, self.part = at, 0
        return frames


def coalesce(entries: list[Entry]) -> list[Entry]:
    """Drop progress ticks that a later tick of the same task in this batch supersedes."""
    if len(entries) < LAGGING:
        return entries
    last_tick: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if entry.tick:
            last_tick[entry.task_id] = i
    return [e for i, e in enumerate(entries) if not e.tick or last_tick[e.task_id] == i]


class Streams:
    """Builds the frames each WebSocket sends, from the store and the tail."""

    def __init__(self, runtime: Runtime, tail: LogTail) -> None:
        self.runtime = runtime
        self.tail = tail
        self.app = runtime.app

    async def _read(self, fn: Callable[[], R]) -> R:
        return await self.runtime.service.read(fn)

    async def _encoded(self, entries: list[Entry]) -> list[Entry]:
        """The entries, their estimates made (on a reader thread, not the event loop) where still owed."""
        if any(e.estimated for e in entries):
            await self._read(lambda: [e.frames for e in entries])
        return entries

    # ---- one task ---------------------------------------------------------------------------------------

    async def task_snapshot(self, task_id: UUID, owner: str | None) -> Snapshot:
        """The task as it is now, with the seq and position it is at."""
        task = await self._read(lambda: self.runtime.service.load(task_id, owner))
        position = await self._position_of(task_id, task.version)
        snap = snapshot(task, position)
        snap.view = await self._read(lambda: self.runtime.read.with_eta(snap.view))
        return snap

    async def _position_of(self, task_id: UUID, seq: int) -> int:
        latest = self.tail.latest(str(task_id))
        if latest is not None and latest.seq == seq:
            return latest.position
        rows = await self._index(task_id, seq - 1, seq)
        if rows:
            return rows[0][1]
        return 0

    async def _index(self, task_id: UUID, after: int, upto: int) -> list[tuple[int, int]]:
        """(seq, position) of a task's events in (after, upto], waiting for event_index to catch up."""
        for attempt in range(2):
            rows = await self._read(
                lambda: self.runtime.views["event_index"].query(
                    "SELECT seq, position FROM event_index "
                    "WHERE task_id = :t AND seq > :a AND seq <= :b ORDER BY seq",
                    {"t": str(task_id), "a": after, "b": upto},
                )
            )
            if len(rows) == upto - after or attempt:
                return [(int(r["seq"]), int(r["position"])) for r in rows]
            await self.runtime.settle(self.tail.position)
        return []

    async def task_frames(
        self, task_id: UUID, owner: str | None, cursor: Cursor
    ) -> AsyncIterator[list[bytes]]:
        """Every update of one task after the cursor's seq, forever: from the store, then the tail."""
        key = str(task_id)
        with self.tail.watchers.task(key):
            version = await self._read(lambda: self.runtime.service.load(task_id, owner).version)
            if cursor.value > version:
                yield await self._resync(
                    task_id, owner, cursor, f"cursor {cursor.value} is ahead of the task ({version})"
                )
            check_store = True
            while True:
                entries = self.tail.task_since(key, cursor.value - (1 if cursor.part else 0), BATCH)
                # The store holds what the tail does not: events from before it started, or evicted from it.
                if entries is None or (not entries and check_store and not self.tail.holds_task(key)):
                    old = await self._task_from_store(task_id, cursor.value - (1 if cursor.part else 0))
                    if old is None:
                        yield await self._resync(task_id, owner, cursor, "events are no longer available")
                        continue
                    entries = old
                check_store = False
                if entries:
                    frames = cursor.resume(await self._encoded(coalesce(entries)), lambda e: e.seq)
                    if frames:
                        yield frames
                    continue
                # Idle tasks look at the store only on the quiet tick, not on every other task's event.
                check_store = not await self.tail.wait(self.tail.position)

    async def _task_from_store(self, task_id: UUID, after: int) -> list[Entry] | None:
        """A task's events after a seq read from the store (older than the tail); None if unreadable."""

        def load() -> tuple[Task | None, list[Any]]:
            before = self.app.task(task_id, after) if after > 0 else None
            events = list(self.app.repository.event_store.get(task_id, gt=after, limit=BATCH))
            return before, events

        task, events = await self._read(load)
        if not events:
            return []
        index = dict(await self._index(task_id, after, events[-1].originator_version))
        out = Batch(self.tail.eta, ahead=lambda *_: False)  # made by _encoded, off the event loop
        for event in events:
            position = index.get(event.originator_version)
            if position is None:
                tail_entries = self.tail.task_since(str(task_id), event.originator_version - 1, 1) or []
                if not tail_entries:
                    return None
                position = tail_entries[0].position
            task = event.mutate(task)
            assert isinstance(task, Task)
            out.add(event, task, position)
        return out.entries()

    async def _resync(self, task_id: UUID, owner: str | None, cursor: Cursor, reason: str) -> list[bytes]:
        snap = await self.task_snapshot(task_id, owner)
        cursor.value, cursor.part = snap.seq, 0
        resync = ResyncRequired(
            task_id=str(task_id), seq=snap.seq, position=snap.position, at=snap.at, reason=reason
        )
        return [encoder.encode(resync), encoder.encode(snap)]

    # ---- every task the caller may see ------------------------------------------------------------------

    async def all_snapshots(self, owner: str | None, seen: dict[str, int]) -> tuple[int, list[bytes]]:
        """Snapshots of the caller's unfinished tasks, and the position to stream from after them."""
        position = self.tail.position
        await self.runtime.settle(position)
        page, _ = await self._read(lambda: self.runtime.read.list_tasks(owner, 200, None))
        frames = []
        for view in page:
            if view["status"] in ("completed", "cancelled"):
                continue
            seen[view["task_id"]] = view["version"]
            snap = Snapshot(
                task_id=view["task_id"],
                seq=view["version"],
                position=view["position"],
                at=view["updated_at"],
                view=view,
            )
            frames.append(encoder.encode(snap))
        return position, frames

    async def all_frames(
        self, owner: str | None, cursor: Cursor, seen: dict[str, int] | None = None
    ) -> AsyncIterator[list[bytes]]:
        """Every update of the caller's tasks after a log position, forever."""
        with self.tail.watchers.owner(owner):
            seen = seen if seen is not None else {}
            head = await self._read(self.app.head)
            if cursor.value > head or head - cursor.value > MAX_REPLAY:
                reason = "cursor is ahead of the log" if cursor.value > head else "cursor is too far behind"
                resync = ResyncRequired(task_id="*", seq=0, position=head, at=iso(None) or "", reason=reason)
                cursor.value, frames = await self.all_snapshots(owner, seen)
                yield [encoder.encode(resync), *frames]
            cache: TaskCache | None = None
            while True:
                start = cursor.value - (1 if cursor.part else 0)
                entries = self.tail.since(start, BATCH)
                last = entries[-1].position if entries else start
                if entries is None:
                    cache, entries, last = await self._all_from_store(start, cache)
                else:
                    cache = None
                visible = [
                    e
                    for e in entries
                    if (owner is None or e.owner == owner) and e.seq > seen.get(e.task_id, 0)
                ]
                frames = cursor.resume(await self._encoded(coalesce(visible)), lambda e: e.position)
                if last > cursor.value:
                    cursor.value, cursor.part = last, 0
                if frames:
                    yield frames
                elif not entries:
                    await self.tail.wait(cursor.value)

    async def _all_from_store(
        self, after: int, cache: TaskCache | None
    ) -> tuple[TaskCache, list[Entry], int]:
        """Entries after a position that the tail no longer holds, and the last position read."""
        tasks = cache or TaskCache(self.app, size=500)

        def load() -> tuple[list[Entry], int]:
            out = Batch(self.tail.eta)
            last = after
            for notification in self.app.notifications(after, BATCH, stop=self.tail.first):
                last = notification.id
                event = self.app.mapper.to_domain_event(notification)
                if isinstance(event, Task.Event):
                    task = tasks.apply(event)
                    out.add(event, task, notification.id)
            return out.entries(), last

        entries, last = await self._read(load)
        return tasks, entries, last
