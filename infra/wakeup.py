"""Cross-gateway wake-ups: a core NATS subscription whose messages only say "the log moved".

The data always comes from the log; a lost or doubled hint costs a poll interval at most.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from nats.aio.msg import Msg

from infra.relay import NatsLink, Subjects


class WakeListener:
    """Calls `wake()` whenever any gateway's relay publishes on `progress.wake`."""

    def __init__(self, url: str, wake: Callable[[], None], subjects: Subjects | None = None) -> None:
        self.link = NatsLink(url, "progressd-wake")
        self.subject = (subjects or Subjects()).wake
        self.wake = wake
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="progressd-wake")

    async def _run(self) -> None:
        nc = await self.link.connect()

        async def on_message(_msg: Msg) -> None:
            self.wake()

        await nc.subscribe(self.subject, cb=on_message)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.link.close()
