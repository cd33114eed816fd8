"""Client-side rate limit of one step's progress ticks: at most one per interval, the latest value wins."""

from __future__ import annotations

import math
from collections.abc import Callable


class Throttle:
    """Decides which progress values go to the server; the held-back latest one is flushed later."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self.interval = interval
        self.clock = clock
        self.sent: float | None = None  # the last value the server acknowledged
        self.sent_at = -math.inf  # when the last value went out (acknowledged or still in flight)
        self.pending: float | None = None

    def offer(self, value: float) -> float | None:
        """The value to send now, or None when it is held back (replacing any value held before)."""
        if value == self.sent:
            self.pending = None
            return None
        self.pending = value
        return self.due()

    def due(self) -> float | None:
        """The held-back value to send now that its interval has passed, else None."""
        if self.pending is not None and self.clock() - self.sent_at >= self.interval:
            return self.take()
        return None

    def take(self) -> float | None:
        """The held-back value to send now regardless of the interval (before a transition, on exit)."""
        value, self.pending = self.pending, None
        if value is not None:
            self.sent_at = self.clock()
        return value

    def mark_sent(self, value: float) -> None:
        """Record that the server has this value."""
        self.sent = value
