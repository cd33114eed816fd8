"""What a worker can catch: refusals by the server, and the cooperative control signals."""

from __future__ import annotations

from typing import Any


class ProgressdError(Exception):
    """The server refused a call; `problem` is its RFC 9457 problem+json body."""

    def __init__(self, problem: dict[str, Any]) -> None:
        self.problem = problem
        super().__init__(f"{self.status} {self.slug}: {self.detail}")

    @property
    def status(self) -> int:
        status = self.problem.get("status")
        return status if isinstance(status, int) else 0

    @property
    def slug(self) -> str:
        """The last segment of the problem's `type`, e.g. `illegal-transition`."""
        return str(self.problem.get("type") or "about:blank").rpartition("/")[2]

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail") or self.problem.get("title") or "")


class Unavailable(ProgressdError):
    """The server could not be reached, or kept answering 429/502/503/504, until the call's deadline."""


class Interrupted(Exception):
    """Base of the cooperative control signals; `view` is the task's progress JSON when it was raised."""

    def __init__(self, message: str, view: dict[str, Any]) -> None:
        self.view = view
        super().__init__(message)


class Paused(Interrupted):
    """The task is paused and the caller asked not to wait (or waited longer than its timeout)."""


class Cancelled(Interrupted):
    """The task was cancelled: stop working on it; `reason` is what the canceller gave."""

    @property
    def reason(self) -> str | None:
        reason = self.view.get("error")
        return reason if isinstance(reason, str) else None


class Rejected(Interrupted):
    """A person rejected the step awaiting approval; the step has failed on the server."""

    def __init__(self, order: int, view: dict[str, Any]) -> None:
        self.order = order
        steps = view.get("steps") or []
        error = steps[order - 1].get("error") if 0 < order <= len(steps) else None
        self.error = error if isinstance(error, str) else "rejected"
        super().__init__(f"step {order} was {self.error}", view)

    @property
    def comment(self) -> str | None:
        """The reviewer's comment, if they gave one."""
        _, sep, comment = self.error.partition("rejected: ")
        return comment if sep else None
