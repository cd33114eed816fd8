"""Drivers that perform a flow's effects over HTTP: one on httpx.Client, one on httpx.AsyncClient."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from client.effect import AsyncRunner, Attempt, SyncRunner

DEFAULT_URL = "http://127.0.0.1:8000"
SCHEMES = ("http", "https", "nats", "tls")
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
        parts = urlsplit(chosen)
        if parts.scheme not in SCHEMES or not parts.hostname:
            # A mistake no retry can mend: said at once, not after a minute of retries.
            raise ValueError(
                f"the progressd URL must be {', '.join(s + '://host' for s in SCHEMES)}, not {chosen!r}"
            )
        return cls(chosen.rstrip("/"), token or os.environ.get("PROGRESSD_TOKEN") or None)

    @property
    def nats(self) -> bool:
        """Whether the URL names a NATS server (nats:// or tls://): the calls then go over NATS."""
        return self.url.startswith(("nats://", "tls://"))

    def headers(self, attempt: Attempt) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if attempt.call.key is not None:
            headers["Idempotency-Key"] = attempt.call.key
        return headers


class SyncDriver(SyncRunner):
    """Performs a flow's requests with blocking I/O."""

    def __init__(
        self, client: httpx.Client, endpoint: Endpoint, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        super().__init__(sleep)
        self.client = client
        self.endpoint = endpoint

    def attempt(self, attempt: Attempt) -> httpx.Response | httpx.TransportError:
        call = attempt.call
        try:
            return self.client.request(
                call.method,
                self.endpoint.url + call.path,
                json=call.body,
                headers=self.endpoint.headers(attempt),
                timeout=attempt.timeout,
            )
        except httpx.TransportError as exc:
            return exc


class AsyncDriver(AsyncRunner):
    """Performs a flow's requests on the event loop."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        endpoint: Endpoint,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(sleep)
        self.client = client
        self.endpoint = endpoint

    async def attempt(self, attempt: Attempt) -> httpx.Response | httpx.TransportError:
        call = attempt.call
        try:
            return await self.client.request(
                call.method,
                self.endpoint.url + call.path,
                json=call.body,
                headers=self.endpoint.headers(attempt),
                timeout=attempt.timeout,
            )
        except httpx.TransportError as exc:
            return exc
