"""The asyncio worker SDK: the same API as `Tracker`, awaited (`async with tracker.step(1) as step:`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import httpx

from client.core import Options, StepSpec, TaskCore
from client.effect import AsyncRunner, Flow, T
from client.http import USER_AGENT, AsyncDriver, Endpoint
from client.retry import Stats


class AsyncTracker:
    """A task on a progressd server, reported from asyncio code; build it with `create` or `attach`."""

    def __init__(
        self, endpoint: Endpoint, options: Options | None = None, client: httpx.AsyncClient | None = None
    ) -> None:
        self._own = client is None
        options = options or Options()
        self._client: httpx.AsyncClient | None = None
        self._driver: AsyncRunner
        if endpoint.nats:
            if client is not None:
                raise ValueError("an httpx client is for an HTTP URL, not for NATS")
            from client.natsdriver import AsyncNatsDriver, NatsEndpoint

            self._driver = self._nats = AsyncNatsDriver(NatsEndpoint.resolve(endpoint.url))
        else:
            self._client = client or httpx.AsyncClient(
                timeout=options.retry.timeout, headers={"User-Agent": USER_AGENT}
            )
            self._driver = AsyncDriver(self._client, endpoint)
        self._core = TaskCore(options)

    @classmethod
    async def create(
        cls,
        title: str,
        steps: Iterable[StepSpec],
        url: str | None = None,
        token: str | None = None,
        complexity: int | str | None = None,
        *,
        key: str | None = None,
        options: Options | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> AsyncTracker:
        """Create a task (see `Tracker.create`)."""
        tracker = cls(Endpoint.resolve(url, token), options, client)
        steps = list(steps)
        await tracker._run_or_close(lambda core: core.create(title, steps, complexity, key))
        return tracker

    @classmethod
    async def attach(
        cls,
        task_id: str,
        url: str | None = None,
        token: str | None = None,
        *,
        options: Options | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> AsyncTracker:
        """Report into an existing task."""
        tracker = cls(Endpoint.resolve(url, token), options, client)
        await tracker._run_or_close(lambda core: core.attach(str(task_id)))
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

    def step(self, order: int) -> AsyncStep:
        """Step `order` (1-based): `async with tracker.step(1) as step:`."""
        return AsyncStep(self, order)

    # `timeout` as in the blocking API: it bounds a wait on a person and raises Paused, not TimeoutError.
    async def check(self, wait: bool = True, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """A cooperative checkpoint (see `Tracker.check`)."""
        await self._run(self._core.check(wait, timeout))

    async def log(self, message: str, level: str = "info", step: int | None = None) -> None:
        await self._run(self._core.log(message, level, step))

    async def refresh(self) -> dict[str, Any]:
        return await self._run(self._core.refresh())

    async def pause(self) -> dict[str, Any]:
        return await self._run(self._core.task_command("pause"))

    async def resume(self) -> dict[str, Any]:
        return await self._run(self._core.task_command("resume"))

    async def cancel(self, reason: str | None = None) -> dict[str, Any]:
        body = None if reason is None else {"reason": reason}
        return await self._run(self._core.task_command("cancel", body))

    async def aclose(self) -> None:
        if self._client is None:
            await self._nats.aclose()
        elif self._own:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncTracker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, flow: Flow[T]) -> T:
        return await self._driver.run(flow)

    async def _run_or_close(self, make: Callable[[TaskCore], Flow[Any]]) -> None:
        try:
            await self._run(make(self._core))
        except BaseException:
            await self.aclose()
            raise


class AsyncStep:
    """The work on one step, awaited; `async with` starts it and completes or fails it (see `Step`)."""

    def __init__(self, tracker: AsyncTracker, order: int) -> None:
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

    async def start(self) -> AsyncStep:
        await self.tracker._run(self._core.start(self.order))
        return self

    async def progress(self, percent: float) -> None:
        await self.tracker._run(self._core.progress(self.order, percent))

    async def substep_done(self, n: int) -> None:
        await self.tracker._run(self._core.substep_done(self.order, n))

    async def log(self, message: str, level: str = "info") -> None:
        await self.tracker._run(self._core.log(message, level, self.order))

    async def complete(self, result: str | None = None) -> None:
        await self.tracker._run(self._core.complete(self.order, result))

    async def fail(self, error: str) -> None:
        await self.tracker._run(self._core.fail(self.order, error))

    async def retry(self) -> None:
        await self.tracker._run(self._core.retry(self.order))

    async def skip(self, reason: str | None = None) -> None:
        await self.tracker._run(self._core.skip(self.order, reason))

    async def await_approval(self, message: str, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self.tracker._run(self._core.await_approval(self.order, message, timeout))

    async def __aenter__(self) -> AsyncStep:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.tracker._run(self._core.exit(self.order, exc))
