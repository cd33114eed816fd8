"""Commands over NATS request/reply: the same commands, headers and answers as the HTTP POSTs.

Subjects (queue group ``progressd``, so any number of gateways share the load):

* ``<prefix>.commands.create`` with the body of ``POST /api/tasks``;
* ``<prefix>.commands.<task_id>.<command>``: ``start progress substep complete fail skip retry approval
  approve reject`` take ``{"order": n, ...}`` (``substep`` also ``"n"``), ``pause resume cancel restart
  log`` take the task command's body;
* ``<prefix>.queries.<task_id>.progress`` (empty body) answers what ``GET /api/tasks/<id>/progress`` does.

NATS headers ``Idempotency-Key`` and ``If-Match`` mean what they mean over HTTP. The reply is JSON
``{"status", "headers", "body"}``: what the POST would answer (201/200 with the progress JSON, or 4xx/503
with an RFC 9457 problem). Requests are decoded into the Structs below (``forbid_unknown_fields``); they
mirror gateway/wire.py, which infra may not import.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
import nats.errors
import structlog
from msgspec import Meta, Struct
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from infra.commands import (
    Comment,
    CreateTaskIn,
    Text,
    idempotency_key,
    if_match,
    new_task,
    refuse_repeated_keys,
)
from infra.problems import Problem, to_problem
from infra.relay import NatsLink, Subjects
from infra.service import Outcome, StoreUnavailable, TaskService
from infra.settings import Settings

log = structlog.get_logger(__name__)

MAX_BODY = 64 * 1024
QUEUE = "progressd"

# ---- requests ---------------------------------------------------------------------------------------------


class StepCmd(Struct, forbid_unknown_fields=True):
    """start, retry: a step by its 1-based order."""

    order: int


class ProgressCmd(Struct, forbid_unknown_fields=True):
    """progress: a running step's reported percent."""

    order: int
    percent: Annotated[float, Meta(ge=0, le=100)]


class SubstepCmd(Struct, forbid_unknown_fields=True):
    """substep: substep `n` (1-based) of a running step is done."""

    order: int
    n: int


class CompleteCmd(Struct, forbid_unknown_fields=True):
    """complete: `result` is kept when this completes the task."""

    order: int
    result: Comment | None = None


class FailCmd(Struct, forbid_unknown_fields=True):
    """fail: a running step failed."""

    order: int
    error: Text


class SkipCmd(Struct, forbid_unknown_fields=True):
    """skip: a pending, running or failed step is skipped."""

    order: int
    reason: Comment | None = None


class ApprovalCmd(Struct, forbid_unknown_fields=True):
    """approval: ask a person to approve the step."""

    order: int
    message: Text


class CommentCmd(Struct, forbid_unknown_fields=True):
    """approve, reject: answer a step waiting for approval."""

    order: int
    comment: Comment | None = None


class EmptyCmd(Struct, forbid_unknown_fields=True):
    """pause, resume, restart: no arguments."""


class ReasonCmd(Struct, forbid_unknown_fields=True):
    """cancel."""

    reason: Comment | None = None


class LogCmd(Struct, forbid_unknown_fields=True):
    """log: a log line, optionally about a step."""

    message: Text
    level: Literal["debug", "info", "warning", "error"] = "info"
    step: Annotated[int, Meta(ge=1, le=10_000)] | None = None


COMMANDS: dict[str, type[Struct]] = {
    "start": StepCmd,
    "progress": ProgressCmd,
    "substep": SubstepCmd,
    "complete": CompleteCmd,
    "fail": FailCmd,
    "skip": SkipCmd,
    "retry": StepCmd,
    "approval": ApprovalCmd,
    "approve": CommentCmd,
    "reject": CommentCmd,
    "pause": EmptyCmd,
    "resume": EmptyCmd,
    "cancel": ReasonCmd,
    "restart": EmptyCmd,
    "log": LogCmd,
}
_KINDS: list[type[Struct]] = [*COMMANDS.values(), CreateTaskIn]
_DECODERS: dict[type[Struct], msgspec.json.Decoder[Any]] = {
    kind: msgspec.json.Decoder(kind) for kind in _KINDS
}


# ---- replies ----------------------------------------------------------------------------------------------


class Reply(Struct):
    """What a command over NATS answers: the HTTP status, headers and body the POST would have given."""

    status: int
    headers: dict[str, str]
    body: dict[str, Any]


_encode = msgspec.json.Encoder().encode


def problem_reply(problem: Problem, instance: str) -> Reply:
    """A problem as a NATS reply."""
    return Reply(
        problem.status,
        {"Content-Type": "application/problem+json", **problem.headers},
        problem.body(instance),
    )


# ---- the subscriber ---------------------------------------------------------------------------------------


class NatsCommands:
    """Answers command requests on `<prefix>.commands.>` through the one writer path, `TaskService`.

    `await start()` returns at once and connects in the background (`await ready(limit)` waits for the
    subscription); `await stop()` stops taking requests, answers those in flight and drains. `settle`
    is the read-your-writes wait the HTTP answer uses (`Runtime.settle`); without it replies go out
    as soon as the event is stored.
    """

    def __init__(
        self,
        service: TaskService,
        settings: Settings,
        *,
        subjects: Subjects | None = None,
        queue: str = QUEUE,
        settle: Callable[[int], Awaitable[bool]] | None = None,
        enrich: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
        view: Callable[[UUID, str | None], Awaitable[dict[str, Any] | None]] | None = None,
        max_in_flight: int = 256,
    ) -> None:
        if settings.nats_url is None:
            raise ValueError("commands over NATS need Settings.nats_url (PROGRESSD_NATS_URL)")
        self.service = service
        self.owner = settings.local_owner
        self.subjects = subjects or Subjects(settings.nats_prefix)
        self.queue = queue
        self.settle = settle
        self.enrich = enrich  # adds what the HTTP answer adds (the time estimate)
        self.view = view  # a task's progress JSON (with its estimate) or None; without it no queries
        self.link = NatsLink(settings.nats_url, "progressd-commands")
        self.handled = 0
        self._prefix = self.subjects.create.removesuffix("create")
        self._queries = self.subjects.queries.removesuffix(">")
        self._slots = asyncio.Semaphore(max_in_flight)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._subs: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Connect and subscribe in the background (NATS may be down now; it is retried forever)."""
        if self._task is not None:
            raise RuntimeError("NATS commands already started")
        self._task = asyncio.create_task(self._subscribe(), name="progressd-nats-commands")

    async def ready(self, limit: float) -> bool:
        """Wait (at most `limit` s) until the subscription is registered with the server."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), limit)
        return self._ready.is_set()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking requests, answer the ones in flight (at most `grace` s), drain and close."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sub in self._subs if self.link.connected else []:
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                # nats-py leaves Subscription.drain unannotated.
                await asyncio.wait_for(sub.drain(), grace)  # type: ignore[no-untyped-call]
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=grace)
        await self.link.close(grace)

    async def _subscribe(self) -> None:
        nc = await self.link.connect()
        subjects = [self.subjects.commands] + ([self.subjects.queries] if self.view is not None else [])
        for subject in subjects:
            self._subs.append(await nc.subscribe(subject, queue=self.queue, cb=self._on_message))
        await nc.flush()
        self._ready.set()

    async def _on_message(self, msg: Msg) -> None:
        # Handled concurrently (bounded), but each command reaches the single writer thread in arrival order:
        # tasks start in creation order and submit to the writer before their first real await.
        await self._slots.acquire()
        task = asyncio.create_task(self._handle(msg))
        self._in_flight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()

    async def _handle(self, msg: Msg) -> None:
        try:
            reply = await self.execute(msg.subject, msg.data, msg.headers or {})
        except Exception as exc:
            problem = to_problem(exc)
            if problem.status >= 500 and not isinstance(exc, StoreUnavailable):
                log.error("nats_command_failed", subject=msg.subject, exc_info=exc)
            reply = problem_reply(problem, msg.subject)
        self.handled += 1
        if msg.reply:
            try:
                await msg.respond(_encode(reply))
            except nats.errors.Error as exc:  # the requester will time out and may retry with its key
                log.warning("nats_reply_failed", subject=msg.subject, error=repr(exc))

    async def execute(self, subject: str, data: bytes, headers: dict[str, str]) -> Reply:
        """Run one command request and build its reply; errors are raised, not answered."""
        if len(data) > MAX_BODY:
            raise Problem(413, "body-too-large", f"request body is over {MAX_BODY} bytes")
        raw = data if data.strip() else b"{}"
        head = {k.lower(): v for k, v in headers.items()}
        if subject.startswith(self._queries):
            return await self._query(subject.removeprefix(self._queries).split("."))
        path = subject.removeprefix(self._prefix).split(".")
        if path == ["create"]:
            body = _DECODERS[CreateTaskIn].decode(raw)
            refuse_repeated_keys(raw)
            outcome = await self.service.create(self.owner, new_task(body), idempotency_key(head))
            return await self._answer(outcome)
        if len(path) != 2 or not subject.startswith(self._prefix):
            raise Problem(404, "unknown-command", f"no command subject {subject!r}")
        raw_id, name = path
        kind = COMMANDS.get(name)
        if kind is None:
            raise Problem(404, "unknown-command", f"no task command {name!r}")
        command = _DECODERS[kind].decode(raw)
        refuse_repeated_keys(raw)
        try:
            task_id = UUID(raw_id)
        except ValueError:
            raise Problem(404, "task-not-found", f"no task {raw_id}") from None
        key = idempotency_key(head)
        if name == "restart":
            outcome = await self.service.restart(task_id, self.owner, key, if_match(head))
        else:
            args = msgspec.structs.asdict(command)
            outcome = await self.service.command(task_id, self.owner, name, args, key, if_match(head))
        return await self._answer(outcome)

    async def _query(self, path: list[str]) -> Reply:
        if self.view is None or len(path) != 2 or path[1] != "progress":
            raise Problem(404, "not-found", f"no query subject {self._queries + '.'.join(path)!r}")
        try:
            task_id = UUID(path[0])
        except ValueError:
            raise Problem(404, "task-not-found", f"no task {path[0]}") from None
        found = await self.view(task_id, self.owner)
        if found is None:
            raise Problem(404, "task-not-found", f"no task {task_id}")
        return Reply(200, {"Content-Type": "application/json", "ETag": f'"{found["version"]}"'}, found)

    async def _answer(self, outcome: Outcome) -> Reply:
        headers = {
            "Content-Type": "application/json",
            "ETag": f'"{outcome.version}"',
            "Progressd-Position": str(outcome.position),
        }
        if self.settle is not None and not await self.settle(outcome.position):
            headers["Progressd-View-Lag"] = "true"
        if outcome.replayed:
            headers["Idempotent-Replayed"] = "true"
        view = outcome.view
        if self.enrich is not None:
            view = await self.enrich(outcome.view)
        if outcome.created:
            headers["Location"] = f"/api/tasks/{view['task_id']}/progress"
            return Reply(201, headers, view)
        return Reply(200, headers, view)
