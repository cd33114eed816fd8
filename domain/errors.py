"""Errors raised by the domain; the gateway maps each one to an HTTP status and a WebSocket close code."""

from __future__ import annotations

from collections.abc import Iterable


class DomainError(Exception):
    """Base class of every error the domain raises on a rejected command."""


class IllegalTransition(DomainError):
    """A command asked for a state change that the current state does not allow."""

    def __init__(self, subject: str, action: str, expected: Iterable[str], actual: str) -> None:
        self.subject = subject
        self.action = action
        self.expected = tuple(expected)
        self.actual = actual
        wanted = " or ".join(self.expected)
        super().__init__(f"cannot {action} {subject}: expected {wanted}, actual {actual}")


class AlreadyRestarted(DomainError):
    """A finished task was restarted once already: the task that carries its plan on is the one to restart."""

    def __init__(self, task_id: str, restarted_as: str) -> None:
        self.task_id = task_id
        self.restarted_as = restarted_as
        super().__init__(f"task {task_id} was already restarted as {restarted_as}: restart that task instead")


class UnknownStep(DomainError):
    """A command named a step or a substep the task does not have."""


class InvalidValue(DomainError):
    """A command carried a value outside what the domain accepts (a percent over 100, an empty plan)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class IdempotencyKeyReused(DomainError):
    """An Idempotency-Key came back with a different request than the one it was first used with."""
