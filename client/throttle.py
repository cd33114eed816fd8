"""Client-side rate limit of one step's progress ticks: at most one per interval, the latest value wins."""

from __future__ import annotations

import math
from collections.abc import Callable


class Throttle:
    """Decides which progress values go to the server; the held-back latest one is flushed later."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self.interval = interval
        self.clock = clock
        self.sent: float | None = None
        self.sent_at = -math.inf
        self.pending: float | None = None

    def offer(self, value: float) -> float | None:
        """The value to send now, or None when it is held back (replacing any value held before)."""
        if value == self.sent:
            self.pending = None
            return None
        if self.clock() - self.sent_at >= self.interval:
            self.pending = None
            return value
        self.pending = value
        return None

    def due(self) -> float | None:
        """The held-back value once its interval has passed, else None."""
        if self.pending is not None and self.clock() - self.sent_at >= self.interval:
            return self.pending
        return None

    def take(self) -> float | None:
        """The held-back value regardless of the interval (before a transition or on step exit)."""
        return self.pending

    def mark_sent(self, value: float) -> None:
        """Record that the server has this value; a held-back value is dropped only if it is this one."""
        self.sent = value
        self.sent_at = self.clock()
        if self.pending == value:
            self.pending = None
