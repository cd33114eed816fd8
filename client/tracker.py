"""The blocking worker SDK: `Tracker` for a task, `Step` for the block of work on one of its steps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import httpx

from client.core import Options, StepSpec, TaskCore
from client.effect import Flow, SyncRunner, T
from client.http import USER_AGENT, Endpoint, SyncDriver
from client.retry import Stats


class Tracker:
    """A task on a progressd server, reported from blocking code; build it with `create` or `attach`."""

    def __init__(
        self, endpoint: Endpoint, options: Options | None = None, client: httpx.Client | None = None
    ) -> None:
        self._own = client is None
        options = options or Options()
        self._client: httpx.Client | None = None
        self._driver: SyncRunner
        if endpoint.nats:
            if client is not None:
                raise ValueError("an httpx client is for an HTTP URL, not for NATS")
            from client.natsdriver import NatsEndpoint, SyncNatsDriver

            self._driver = self._nats = SyncNatsDriver(NatsEndpoint.resolve(endpoint.url))
        else:
            self._client = client or httpx.Client(
                timeout=options.retry.timeout, headers={"User-Agent": USER_AGENT}
            )
            self._driver = SyncDriver(self._client, endpoint)
        self._core = TaskCore(options)

    @classmethod
    def create(
        cls,
        title: str,
        steps: Iterable[StepSpec],
        url: str | None = None,
        token: str | None = None,
        complexity: int | str | None = None,
        *,
        key: str | None = None,
        options: Options | None = None,
        client: httpx.Client | None = None,
    ) -> Tracker:
        """Create a task. With `key`, a second run with the same key finds the same task instead.

        `url` and `token` default to PROGRESSD_URL (else http://127.0.0.1:8000) and PROGRESSD_TOKEN.
        """
        tracker = cls(Endpoint.resolve(url, token), options, client)
        steps = list(steps)
        tracker._run_or_close(lambda core: core.create(title, steps, complexity, key))
        return tracker

    @classmethod
    def attach(
        cls,
        task_id: str,
        url: str | None = None,
        token: str | None = None,
        *,
        options: Options | None = None,
        client: httpx.Client | None = None,
    ) -> Tracker:
        """Report into an existing task."""
        tracker = cls(Endpoint.resolve(url, token), options, client)
        tracker._run_or_close(lambda core: core.attach(str(task_id)))
        return tracker

    # ---- state ------------------------------------------------------------------------------------------

    @property
    def task_id(self) -> str:
        return self._core.task_id

    @property
    def view(self) -> dict[str, Any]:
        """The task's progress JSON as of the last answer from the server."""
        return self._core.view

    @property
    def status(self) -> str:
        return str(self._core.view.get("status", ""))

    @property
    def stats(self) -> Stats:
        return self._core.stats

    @property
    def options(self) -> Options:
        return self._core.options

    # ---- work -------------------------------------------------------------------------------------------

    def step(self, order: int) -> Step:
        """Step `order` (1-based): `with tracker.step(1) as step:` starts it and completes or fails it."""
        return Step(self, order)

    def check(self, wait: bool = True, timeout: float | None = None) -> None:
        """A cooperative checkpoint: Cancelled if the task was cancelled; while it is paused, wait (or
        raise Paused when `wait` is False or after `timeout` seconds)."""
        self._run(self._core.check(wait, timeout))

    def log(self, message: str, level: str = "info", step: int | None = None) -> None:
        self._run(self._core.log(message, level, step))

    def refresh(self) -> dict[str, Any]:
        """Read the task's current progress JSON from the server."""
        return self._run(self._core.refresh())

    def pause(self) -> dict[str, Any]:
        return self._run(self._core.task_command("pause"))

    def resume(self) -> dict[str, Any]:
        return self._run(self._core.task_command("resume"))

    def cancel(self, reason: str | None = None) -> dict[str, Any]:
        return self._run(self._core.task_command("cancel", None if reason is None else {"reason": reason}))

    def close(self) -> None:
        if self._client is None:
            self._nats.close()
        elif self._own:
            self._client.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, flow: Flow[T]) -> T:
        return self._driver.run(flow)

    def _run_or_close(self, make: Callable[[TaskCore], Flow[Any]]) -> None:
        try:
            self._run(make(self._core))
        except BaseException:
            self.close()
            raise


class Step:
    """The work on one step; as a context manager it starts the step, completes it on a clean exit and
    fails it with the exception's text on an error (pause, cancel and rejection leave it as it is)."""

    def __init__(self, tracker: Tracker, order: int) -> None:
        self.tracker = tracker
        self.order = order
        self._core = tracker._core

    @property
    def status(self) -> str:
        return str(self.tracker.view["steps"][self.order - 1]["status"])

    @property
    def earlier(self) -> bool:
        """True when an earlier run of this worker (the same `key`) finished the step: the block may skip
        its work; its progress and substep reports are dropped, and leaving it reports nothing."""
        return self.order in self._core.earlier

    def start(self) -> Step:
        """Start the step (waits for approval when the step requires it)."""
        self.tracker._run(self._core.start(self.order))
        return self

    def progress(self, percent: float) -> None:
        """Report how far the step is (0-100); rate-limited, the latest value wins; waits while paused."""
        self.tracker._run(self._core.progress(self.order, percent))

    def substep_done(self, n: int) -> None:
        """Mark substep n (1-based) done."""
        self.tracker._run(self._core.substep_done(self.order, n))

    def log(self, message: str, level: str = "info") -> None:
        self.tracker._run(self._core.log(message, level, self.order))

    def complete(self, result: str | None = None) -> None:
        """Complete the step now; the step keeps `result`, and so does the task when this completes it."""
        self.tracker._run(self._core.complete(self.order, result))

    def fail(self, error: str) -> None:
        self.tracker._run(self._core.fail(self.order, error))

    def retry(self) -> None:
        """Run a failed step again (entering `with tracker.step(n)` on a failed step does this too)."""
        self.tracker._run(self._core.retry(self.order))

    def skip(self, reason: str | None = None) -> None:
        self.tracker._run(self._core.skip(self.order, reason))

    def await_approval(self, message: str, timeout: float | None = None) -> None:
        """Ask a person to approve, and wait: returns once approved; Rejected if rejected; TimeoutError
        after `timeout` seconds."""
        self.tracker._run(self._core.await_approval(self.order, message, timeout))

    def __enter__(self) -> Step:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.tracker._run(self._core.exit(self.order, exc))
