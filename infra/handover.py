"""Events this process's writer committed, handed straight to a follower of the log (the log tail, the
projector), so that it need not read them back from the store."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import Recording

from infra.store import ProgressApp

KEPT = 20_000  # committed events kept for a follower at most (beyond that it reads the store)


def _first(item: tuple[int, Any]) -> int:
    return item[0]


class Handover:
    """Committed events by log position, from the writer thread to one follower's thread.

    A follower takes those that directly follow its position. Notification ids commit in order (SQLite has
    one writer at a time, our PostgreSQL insert takes the table lock), so when the next position is here,
    nothing can come before it; when it is not (another process's writer, an id a failed insert used up),
    the follower reads the store, and the events waiting here are taken once it has caught up to them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._events: deque[tuple[int, Any]] = deque(maxlen=KEPT)
        self._lock = threading.Lock()

    def offer(self, recordings: Sequence[Recording[Any]]) -> None:
        """The events of one commit, with their positions."""
        with self._lock:
            self._events.extend((r.notification.id, r.domain_event) for r in recordings)

    def take(self, position: int) -> list[tuple[int, Any]]:
        """The events that directly follow `position`, in order (at most `limit`); none when there is a gap.
        Those at or before `position` are dropped; those after a gap wait."""
        taken: list[tuple[int, Any]] = []
        with self._lock:
            if not self._events:
                return taken
            ordered = sorted(self._events, key=_first)
            self._events.clear()
            expected = position + 1
            for i, (at, event) in enumerate(ordered):
                if at < expected:
                    continue
                if at > expected or len(taken) >= self.limit:
                    self._events.extend(ordered[i:])
                    break
                taken.append((at, event))
                expected += 1
        return taken

    def waiting(self) -> bool:
        """Whether events wait here (behind a gap only the store can fill)."""
        with self._lock:
            return bool(self._events)

    def next_events(self, app: ProgressApp, position: int, read: bool) -> list[tuple[int, Any]]:
        """The events after `position`: handed over when they follow on; else, when told to `read` (a wake,
        a poll) or when handed events wait behind a gap, the next ones in the store, decoded."""
        events = self.take(position)
        if events or not (read or self.waiting()):
            return events
        return [(n.id, app.mapper.to_domain_event(n)) for n in app.notifications(position, self.limit)]
