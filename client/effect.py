"""The client's logic is written once, as generators ("flows") that yield effects for a driver to perform.

A flow yields `Attempt` (one HTTP request) or `Sleep`, and is sent back the response, the transport error
(as a value, never thrown in) or None. `http.SyncDriver` and `http.AsyncDriver` perform the same flows with
`httpx.Client` and `httpx.AsyncClient` (and `natsdriver`'s two drivers over NATS request/reply), so the
sync and asyncio trackers share every retry, pause and approval rule whatever the transport, and a unit
test can drive a flow with a fake clock.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """One logical API call; its idempotency key is reused by every retry of it."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    key: str | None = None


@dataclass(frozen=True)
class Attempt:
    """Perform one HTTP request for a call, giving up on it after `timeout` seconds."""

    call: Call
    timeout: float


@dataclass(frozen=True)
class Sleep:
    """Wait this many seconds."""

    seconds: float


Effect = Attempt | Sleep
Outcome = httpx.Response | httpx.TransportError | None
Flow = Generator[Effect, Outcome, T]


def new_key() -> str:
    """A fresh Idempotency-Key for one logical call."""
    return str(uuid.uuid4())


class SyncRunner:
    """Runs flows with blocking I/O; a transport says how to perform one Attempt."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sleep = sleep

    def run(self, flow: Flow[T]) -> T:
        try:
            effect = next(flow)
            while True:
                effect = flow.send(self._perform(effect))
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            flow.close()

    def _perform(self, effect: Effect) -> Outcome:
        if isinstance(effect, Sleep):
            self.sleep(effect.seconds)
            return None
        return self.attempt(effect)

    def attempt(self, attempt: Attempt) -> httpx.Response | httpx.TransportError:
        raise NotImplementedError


class AsyncRunner:
    """Runs flows on the event loop; nothing in it blocks."""

    def __init__(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.sleep = sleep

    async def run(self, flow: Flow[T]) -> T:
        try:
            effect = next(flow)
            while True:
                effect = flow.send(await self._perform(effect))
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            flow.close()

    async def _perform(self, effect: Effect) -> Outcome:
        if isinstance(effect, Sleep):
            await self.sleep(effect.seconds)
            return None
        return await self.attempt(effect)

    async def attempt(self, attempt: Attempt) -> httpx.Response | httpx.TransportError:
        raise NotImplementedError
