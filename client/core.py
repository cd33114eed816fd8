"""A tracked task's rules, written once as flows: commands, cooperative pause/cancel, approvals, throttling.

`Tracker` (blocking) and `AsyncTracker` (asyncio) run these flows through their drivers; nothing here does
I/O itself, so the two flavours cannot drift apart.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from client.effect import Call, Flow, Sleep, new_key
from client.errors import Cancelled, Interrupted, Paused, ProgressdError, Rejected, Unavailable
from client.retry import RetryPolicy, Stats, send
from client.throttle import Throttle

log = logging.getLogger("progressd.client")

LEVELS = ("debug", "info", "warning", "error")
MAX_TEXT = 10_000  # the server's limit on messages, errors and reasons


@dataclass(frozen=True)
class Options:
    """How a tracker behaves: retries, the progress rate limit, and how it polls while waiting."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    progress_interval: float = 0.5  # at most one progress tick per step this often; the latest wins
    check_interval: float = 1.0  # check() asks the server when it has heard nothing for this long
    poll_min: float = 0.25  # first pause between polls while paused or awaiting approval
    poll_max: float = 2.0  # the polls back off to this
    pause_timeout: float | None = None  # raise Paused after waiting this long; None: wait for the resume


StepSpec = str | Mapping[str, Any]


def plan(title: str, steps: Iterable[StepSpec], complexity: int | str | None) -> dict[str, Any]:
    """The body of POST /api/tasks; a step is a name or a dict (name, weight, substeps, requires_approval)."""
    body: dict[str, Any] = {
        "title": title,
        "steps": [{"name": s} if isinstance(s, str) else dict(s) for s in steps],
    }
    if complexity is not None:
        body["complexity"] = complexity
    return body


def conflict(exc: ProgressdError) -> tuple[str, str] | None:
    """(subject, actual state) of an illegal-transition refusal, such as ("task", "paused"); else None."""
    if exc.status != 409 or exc.slug != "illegal-transition":
        return None
    return str(exc.problem.get("subject", "")), str(exc.problem.get("actual", ""))


def describe(exc: BaseException) -> str:
    """An exception as a step's error text."""
    text = str(exc)
    return clip(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def step_of(view: dict[str, Any], order: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = view.get("steps") or []
    if not 1 <= order <= len(steps):
        raise ValueError(f"the task has no step {order} (it has {len(steps)})")
    return steps[order - 1]


class TaskCore:
    """The state of one tracked task as this worker knows it, and the flows that act on it."""

    def __init__(
        self,
        options: Options,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.options = options
        self.clock = clock
        self.rng = rng or random.Random()
        self.stats = Stats()
        self.task_id = ""
        self.view: dict[str, Any] = {}
        self.seen_at = -math.inf
        self.throttles: dict[int, Throttle] = {}
        self.finished: set[int] = set()
        self.earlier: set[int] = set()  # steps an earlier run (same key) finished: their reports are dropped

    @property
    def base(self) -> str:
        return f"/api/tasks/{self.task_id}"

    # ---- plumbing ---------------------------------------------------------------------------------------

    def see(self, body: dict[str, Any]) -> None:
        """Keep the newest view of our task from any answer (a lagging read could be older)."""
        if body.get("task_id") != self.task_id or "status" not in body:
            return
        self.seen_at = self.clock()
        if int(body.get("version", 0)) >= int(self.view.get("version", 0)):
            self.view = body

    def call(self, call: Call) -> Flow[dict[str, Any]]:
        body = yield from send(call, self.options.retry, self.clock, self.rng, self.stats)
        self.see(body)
        return body

    def refresh(self) -> Flow[dict[str, Any]]:
        """Read the task's progress JSON."""
        yield from self.call(Call("GET", f"{self.base}/progress"))
        return self.view

    def create(
        self, title: str, steps: Iterable[StepSpec], complexity: int | str | None, key: str | None
    ) -> Flow[dict[str, Any]]:
        """Create the task; the same key always names the same task, so a re-run worker finds its own."""
        body = yield from send(
            Call("POST", "/api/tasks", plan(title, steps, complexity), key or new_key()),
            self.options.retry,
            self.clock,
            self.rng,
            self.stats,
        )
        self.task_id = str(body["task_id"])
        self.see(body)
        return self.view

    def attach(self, task_id: str) -> Flow[dict[str, Any]]:
        self.task_id = task_id
        return (yield from self.refresh())

    def command(
        self,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        order: int | None = None,
        cooperative: bool = True,
    ) -> Flow[dict[str, Any]]:
        """POST a command; a cooperative one waits while the task is paused (or its step awaits approval)
        and is then sent again with the same key, and raises Cancelled when the task is cancelled."""
        call = Call("POST", self.base + path, body, new_key())
        while True:
            try:
                return (yield from self.call(call))
            except ProgressdError as exc:
                found = conflict(exc) if cooperative else None
                if found == ("task", "paused"):
                    yield from self.wait_while_paused(self.options.pause_timeout)
                elif found == ("task", "cancelled"):
                    view = yield from self.refresh()
                    raise Cancelled(f"task {self.task_id} was cancelled", view) from None
                elif order is not None and found == (f"step {order}", "approval"):
                    yield from self.wait_for_approval(order, None)
                else:
                    raise

    # ---- waiting ----------------------------------------------------------------------------------------

    def wait_while_paused(self, timeout: float | None) -> Flow[dict[str, Any]]:
        """Poll, backing off, until the task is no longer paused; Cancelled if it is cancelled meanwhile."""
        started = self.clock()
        delay = self.options.poll_min
        waiting = False
        while True:
            view = yield from self.refresh()
            status = view.get("status")
            if status == "cancelled":
                raise Cancelled(f"task {self.task_id} was cancelled", view)
            if status != "paused":
                if waiting:
                    log.info("task %s resumed", self.task_id, extra={"progressd": {"event": "resumed"}})
                return view
            if not waiting:
                waiting = True
                self.stats.paused_waits += 1
                log.info("task %s is paused; waiting", self.task_id, extra={"progressd": {"event": "paused"}})
            left = math.inf if timeout is None else timeout - (self.clock() - started)
            if left <= 0:
                raise Paused(f"task {self.task_id} is paused", view)
            yield Sleep(min(delay, left))
            delay = min(delay * 1.5, self.options.poll_max)

    def wait_for_approval(self, order: int, timeout: float | None) -> Flow[dict[str, Any]]:
        """Poll until step `order` is approved (return) or rejected (Rejected)."""
        started = self.clock()
        delay = self.options.poll_min
        while True:
            view = yield from self.refresh()
            if view.get("status") == "cancelled":
                raise Cancelled(f"task {self.task_id} was cancelled", view)
            status = step_of(view, order)["status"]
            if status == "failed":
                self.finished.add(order)  # the person decided: leaving the step's block reports nothing more
                raise Rejected(order, view)
            if status != "approval":
                if view.get("status") == "paused":
                    return (yield from self.wait_while_paused(self.options.pause_timeout))
                return view
            left = math.inf if timeout is None else timeout - (self.clock() - started)
            if left <= 0:
                raise TimeoutError(f"step {order} still awaits approval after {timeout:g}s")
            yield Sleep(min(delay, left))
            delay = min(delay * 1.5, self.options.poll_max)

    def hold(self) -> Flow[None]:
        """Act on what the last answer said: Cancelled if cancelled, wait if paused."""
        status = self.view.get("status")
        if status == "cancelled":
            raise Cancelled(f"task {self.task_id} was cancelled", self.view)
        if status == "paused":
            yield from self.wait_while_paused(self.options.pause_timeout)

    def check(self, wait: bool, timeout: float | None) -> Flow[None]:
        """Flush due progress, ask the server if we have not heard from it lately, then act on the status."""
        yield from self.flush_due()
        if self.clock() - self.seen_at >= self.options.check_interval:
            yield from self.refresh()
        status = self.view.get("status")
        if status == "cancelled":
            raise Cancelled(f"task {self.task_id} was cancelled", self.view)
        if status == "paused":
            if not wait:
                raise Paused(f"task {self.task_id} is paused", self.view)
            yield from self.wait_while_paused(self.options.pause_timeout if timeout is None else timeout)

    # ---- progress ---------------------------------------------------------------------------------------

    def throttle(self, order: int) -> Throttle:
        found = self.throttles.get(order)
        if found is None:
            found = self.throttles[order] = Throttle(self.options.progress_interval, self.clock)
        return found

    def progress(self, order: int, percent: float) -> Flow[None]:
        """Report a percent; held back (latest wins) when the step reported less than an interval ago."""
        if isinstance(percent, bool) or not 0 <= percent <= 100:
            raise ValueError(f"percent must be between 0 and 100, not {percent!r}")
        if order in self.earlier:
            return
        yield from self.hold()
        value = self.throttle(order).offer(percent)
        if value is not None:
            yield from self._send_progress(order, value)

    def _send_progress(self, order: int, value: float) -> Flow[None]:
        yield from self.command(f"/steps/{order}/progress", {"percent": value}, order=order)
        self.throttle(order).mark_sent(value)

    def flush(self, order: int) -> Flow[None]:
        """Send step `order`'s held-back percent now (before a transition, on step exit)."""
        throttle = self.throttles.get(order)
        value = throttle.take() if throttle else None
        if value is not None:
            yield from self._send_progress(order, value)

    def flush_due(self) -> Flow[None]:
        for order, throttle in list(self.throttles.items()):
            value = throttle.due()
            if value is not None:
                yield from self._send_progress(order, value)

    # ---- step commands ----------------------------------------------------------------------------------

    def start(self, order: int) -> Flow[dict[str, Any]]:
        """Start a step; a re-run worker finds it running (fine), failed (retried), or finished by the earlier
        run (nothing to do: the block's reports are dropped and leaving it reports nothing); then wait for
        approval when the step requires it."""
        step_of(self.view, order)  # a step the task does not have is a ValueError, not a 404 later
        self.finished.discard(order)
        self.earlier.discard(order)
        try:
            view = yield from self.command(f"/steps/{order}/start", order=order)
        except ProgressdError as exc:
            if conflict(exc) is None:
                raise
            view = yield from self.refresh()
            status = step_of(view, order)["status"]
            if status == "failed":
                view = yield from self.command(f"/steps/{order}/retry", order=order)
            elif status in ("completed", "skipped"):
                self.finished.add(order)
                self.earlier.add(order)
                return view
            elif status not in ("running", "approval"):
                raise
        if step_of(view, order)["status"] == "approval":
            view = yield from self.wait_for_approval(order, None)
        return view

    def substep_done(self, order: int, n: int) -> Flow[None]:
        if order in self.earlier:
            return
        yield from self.flush(order)
        try:
            yield from self.command(f"/steps/{order}/substeps/{n}/done", order=order)
        except ProgressdError as exc:
            if conflict(exc) != (f"substep {n} of step {order}", "done"):
                raise

    def complete(self, order: int, result: str | None = None) -> Flow[None]:
        yield from self.flush(order)
        body = None if result is None else {"result": clip(result)}
        yield from self._finish(order, "complete", body, ("completed", "skipped"))

    def fail(self, order: int, error: str, *, waits_for_approval: bool = True) -> Flow[None]:
        if not error.strip():
            raise ValueError("error must not be empty")
        yield from self.flush(order)
        body = {"error": clip(error)}
        yield from self._finish(order, "fail", body, ("failed",), waits_for_approval=waits_for_approval)

    def skip(self, order: int, reason: str | None = None) -> Flow[None]:
        yield from self.flush(order)
        body = None if reason is None else {"reason": clip(reason)}
        yield from self._finish(order, "skip", body, ("skipped",))

    def retry(self, order: int) -> Flow[None]:
        self.finished.discard(order)
        yield from self.command(f"/steps/{order}/retry", order=order)

    def _finish(
        self,
        order: int,
        action: str,
        body: dict[str, Any] | None,
        already: tuple[str, ...],
        *,
        waits_for_approval: bool = True,
    ) -> Flow[None]:
        try:
            waits = order if waits_for_approval else None
            yield from self.command(f"/steps/{order}/{action}", body, order=waits)
        except ProgressdError as exc:
            found = conflict(exc)
            if found is None or found[0] != f"step {order}" or found[1] not in already:
                raise
        self.finished.add(order)

    def await_approval(self, order: int, message: str, timeout: float | None) -> Flow[dict[str, Any]]:
        """Ask a person to approve the step, then wait: return once approved, Rejected if rejected."""
        if not message.strip():
            raise ValueError("message must not be empty")
        yield from self.flush(order)
        try:
            yield from self.command(
                f"/steps/{order}/approval", {"message": clip(message)}, order=order, cooperative=True
            )
        except ProgressdError as exc:
            if conflict(exc) != (f"step {order}", "approval"):
                raise
        return (yield from self.wait_for_approval(order, timeout))

    def exit(self, order: int, exc: BaseException | None) -> Flow[None]:
        """Leaving a step's block: complete it, or fail it with the exception's text.

        Control signals (paused, cancelled, rejected), an unreachable server and exits that are not errors
        (SystemExit, asyncio's CancelledError) leave the step as it is; a refusal of the failure report is
        logged rather than hiding the worker's own exception.
        """
        if order in self.finished:
            return
        if exc is None:
            yield from self.complete(order)
            return
        if isinstance(exc, Interrupted | Unavailable) or not isinstance(exc, Exception | KeyboardInterrupt):
            return
        try:
            # Not waiting for an approval first: a worker that gave up waiting for one (await_approval's
            # TimeoutError) would wait for ever here. The step stays with the person; the error goes on.
            yield from self.fail(order, describe(exc), waits_for_approval=False)
        except (ProgressdError, Interrupted) as secondary:
            log.warning("could not report step %d failed: %s", order, secondary)

    def log(self, message: str, level: str, step: int | None) -> Flow[None]:
        """Append a log line; logs are accepted in any state, so this never waits on a pause."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
        if not message.strip():
            raise ValueError("message must not be blank")  # the server refuses it (422)
        body: dict[str, Any] = {"message": clip(message), "level": level}
        if step is not None:
            body["step"] = step
        yield from self.command("/logs", body, cooperative=False)

    def task_command(self, action: str, body: dict[str, Any] | None = None) -> Flow[dict[str, Any]]:
        """pause, resume or cancel, as an operator would; refusals are raised, never waited on."""
        return (yield from self.command(f"/{action}", body, cooperative=False))
