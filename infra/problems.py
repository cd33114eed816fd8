"""RFC 9457 problem details, and the one mapping from errors to statuses: HTTP, WebSocket and NATS use it."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import msgspec
from eventsourcing.persistence import InterfaceError, OperationalError

from domain.errors import (
    AlreadyRestarted,
    DomainError,
    IdempotencyKeyReused,
    IllegalTransition,
    InvalidValue,
    UnknownStep,
)
from infra.readside import BadCursor
from infra.service import StoreUnavailable, VersionMismatch, WriteContended
from infra.store import TaskNotFound


class Problem(Exception):
    """An error answered with a problem+json body."""

    def __init__(self, status: int, slug: str, detail: str, **extra: Any) -> None:
        self.status = status
        self.slug = slug
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}
        super().__init__(detail)

    def body(self, instance: str | None = None) -> dict[str, Any]:
        """The problem+json document."""
        body: dict[str, Any] = {
            "type": f"/problems/{self.slug}",
            "title": HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


def to_problem(exc: Exception) -> Problem:
    """Translate a domain, service or decoding error into a Problem."""
    match exc:
        case Problem():
            return exc
        case TaskNotFound():
            return Problem(404, "task-not-found", f"no task {exc}")
        case UnknownStep():
            return Problem(404, "step-not-found", str(exc))
        case IllegalTransition():
            return Problem(
                409,
                "illegal-transition",
                str(exc),
                subject=exc.subject,
                action=exc.action,
                expected=list(exc.expected),
                actual=exc.actual,
            )
        case AlreadyRestarted():
            return Problem(409, "already-restarted", str(exc), restarted_as=exc.restarted_as)
        case InvalidValue():
            return Problem(
                422, "invalid-field", str(exc), errors=[{"path": f"$.{exc.field}", "detail": str(exc)}]
            )
        case IdempotencyKeyReused():
            return Problem(422, "idempotency-key-reused", str(exc))
        case DomainError():
            return Problem(422, "rejected", str(exc))
        case VersionMismatch():
            expected: dict[str, Any] = (
                {"expected_version": exc.expected[0]}
                if len(exc.expected) == 1
                else {"expected_versions": list(exc.expected)}  # a list of tags, or weak tags only
            )
            return Problem(412, "version-mismatch", str(exc), **expected, actual_version=exc.actual)
        case WriteContended():
            problem = Problem(503, "write-contended", str(exc))
            problem.headers["Retry-After"] = "1"
            return problem
        case StoreUnavailable() | OperationalError() | InterfaceError():  # the latter from queries
            problem = Problem(503, "store-unavailable", "the event store is unavailable; nothing was written")
            problem.headers["Retry-After"] = "2"
            return problem
        case BadCursor():
            return Problem(422, "invalid-query", "before is not a cursor this server handed out")
        case msgspec.ValidationError():
            message, _, path = str(exc).partition(" - at `")
            path = path.rstrip("`") or "$"
            return Problem(
                422, "invalid-field", f"{message} at {path}", errors=[{"path": path, "detail": message}]
            )
        case msgspec.DecodeError():
            return Problem(400, "malformed-json", f"request body is not valid JSON: {exc}")
        case UnicodeDecodeError():  # msgspec raises it for bad bytes inside a JSON string
            return Problem(400, "malformed-json", f"request body is not valid UTF-8: {exc.reason}")
    return Problem(500, "internal", "internal error")


# Errors that are answers, not failures: handled without a traceback in the logs.
EXPECTED_ERRORS: tuple[type[Exception], ...] = (
    Problem,
    DomainError,
    TaskNotFound,
    VersionMismatch,
    WriteContended,
    StoreUnavailable,
    OperationalError,
    InterfaceError,
    BadCursor,
    msgspec.DecodeError,
    UnicodeDecodeError,
)
