"""Drivers that perform a flow's effects over HTTP: one on httpx.Client, one on httpx.AsyncClient."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from client.effect import Attempt, Effect, Flow, Outcome, Sleep, T

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "progressd-client/0.1"


@dataclass(frozen=True)
class Endpoint:
    """Where the server is and the token to present to it."""

    url: str
    token: str | None = None

    @classmethod
    def resolve(cls, url: str | None = None, token: str | None = None) -> Endpoint:
        """The given URL and token, else PROGRESSD_URL and PROGRESSD_TOKEN, else the local default."""
        chosen = url or os.environ.get("PROGRESSD_URL") or DEFAULT_URL
        return cls(chosen.rstrip("/"), token or os.environ.get("PROGRESSD_TOKEN") or None)

    def headers(self, attempt: Attempt) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if attempt.call.key is not None:
            headers["Idempotency-Key"] = attempt.call.key
        return headers


class SyncDriver:
    """Runs flows with blocking I/O."""

    def __init__(
        self, client: httpx.Client, endpoint: Endpoint, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.client = client
        self.endpoint = endpoint
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
        call = effect.call
        try:
            return self.client.request(
                call.method,
                self.endpoint.url + call.path,
                json=call.body,
                headers=self.endpoint.headers(effect),
                timeout=effect.timeout,
            )
        except httpx.TransportError as exc:
            return exc


class AsyncDriver:
    """Runs flows on the event loop; nothing in it blocks."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        endpoint: Endpoint,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.endpoint = endpoint
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
        call = effect.call
        try:
            return await self.client.request(
                call.method,
                self.endpoint.url + call.path,
                json=call.body,
                headers=self.endpoint.headers(effect),
                timeout=effect.timeout,
            )
        except httpx.TransportError as exc:
            return exc
