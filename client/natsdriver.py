"""Drivers that perform a flow's calls over NATS request/reply instead of HTTP.

A gateway started with PROGRESSD_NATS_URL answers every command on ``<prefix>.commands.…`` and the task's
progress JSON on ``<prefix>.queries.<task_id>.progress``, with the status, headers and body the HTTP call
would give, so a flow cannot tell the transports apart. The tracker picks these drivers for a ``nats://``
(or ``tls://``) URL. The Idempotency-Key goes as a NATS header; a request nobody answers in time, or one
sent while no gateway listens, comes back as a transport error and is retried with the same key, as over
HTTP. Credentials belong in the URL (``nats://user:password@host:4222``); bearer tokens are an HTTP thing.

Needs nats-py (installed with the server); the HTTP client does not import this module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import nats.errors
from nats.aio.client import Client as NatsClient

from client.effect import AsyncRunner, Attempt, Call, SyncRunner

log = logging.getLogger("progressd.client")

DEFAULT_PREFIX = "progress"


@dataclass(frozen=True)
class NatsEndpoint:
    """The NATS server to ask and the subject prefix the gateways answer on."""

    url: str
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def resolve(cls, url: str, prefix: str | None = None) -> NatsEndpoint:
        """The given prefix, else PROGRESSD_NATS_PREFIX (what the gateways are started with), else
        "progress"."""
        return cls(url, prefix or os.environ.get("PROGRESSD_NATS_PREFIX") or DEFAULT_PREFIX)


def route(call: Call, prefix: str) -> tuple[str, dict[str, Any] | None]:
    """The subject and body that carry an API call: the HTTP routes the client uses, mapped one to one."""
    parts = call.path.strip("/").split("/")
    if parts[:2] != ["api", "tasks"]:
        raise ValueError(f"no NATS subject for {call.method} {call.path}")
    rest = parts[2:]
    body = dict(call.body or {})
    if call.method == "POST" and not rest:
        return f"{prefix}.commands.create", body
    if call.method == "GET" and len(rest) == 2 and rest[1] == "progress":
        return f"{prefix}.queries.{rest[0]}.progress", None
    if call.method == "POST" and len(rest) == 2:  # pause, resume, cancel, restart, logs
        name = "log" if rest[1] == "logs" else rest[1]
        return f"{prefix}.commands.{rest[0]}.{name}", body
    if call.method == "POST" and len(rest) == 4 and rest[1] == "steps":
        return f"{prefix}.commands.{rest[0]}.{rest[3]}", {"order": int(rest[2]), **body}
    if (
        call.method == "POST"
        and len(rest) == 6
        and rest[1] == "steps"
        and rest[3:6:2] == ["substeps", "done"]
    ):
        return f"{prefix}.commands.{rest[0]}.substep", {"order": int(rest[2]), "n": int(rest[4])}
    raise ValueError(f"no NATS subject for {call.method} {call.path}")


def response(data: bytes, subject: str) -> httpx.Response:
    """The reply of a gateway as the HTTP response it stands for (a reply of another shape: 502)."""
    try:
        reply = json.loads(data)
        status, headers, body = int(reply["status"]), dict(reply["headers"]), reply["body"]
    except (ValueError, TypeError, KeyError) as exc:
        problem = {
            "type": "/problems/bad-response",
            "title": "Bad Gateway",
            "status": 502,
            "detail": f"{subject} answered {data[:200]!r}: {exc}",
        }
        return httpx.Response(502, headers={"Content-Type": "application/problem+json"}, json=problem)
    return httpx.Response(status, headers=headers, json=body)


class _Link:
    """One NATS connection, opened on the first request and reconnecting by itself after that."""

    def __init__(self, endpoint: NatsEndpoint) -> None:
        self.endpoint = endpoint
        self._nc: NatsClient | None = None
        self._last_error: str | None = None  # what the connection last met (connection refused, ...)

    async def request(self, attempt: Attempt) -> httpx.Response | httpx.TransportError:
        call = attempt.call
        try:
            subject, body = route(call, self.endpoint.prefix)
        except ValueError as exc:  # a path this client never builds: a bug, not a network failure
            raise TypeError(str(exc)) from None
        headers = {"Idempotency-Key": call.key} if call.key is not None else None
        payload = b"" if body is None else json.dumps(body).encode()
        started = time.monotonic()
        try:
            nc = await self._connected(attempt.timeout)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            why = f"{type(exc).__name__} {exc}".strip()
            if isinstance(exc, TimeoutError):  # nats-py keeps trying within connect(): say what it met
                why = f"no connection within {attempt.timeout:g} s" + (
                    f" (last error: {self._last_error})" if self._last_error else ""
                )
            return httpx.ConnectError(f"cannot reach NATS at {self.endpoint.url}: {why}")
        left = max(0.05, attempt.timeout - (time.monotonic() - started))
        try:
            msg = await nc.request(subject, payload, timeout=left, headers=headers)
        except nats.errors.NoRespondersError:
            return httpx.ConnectError(f"no progressd gateway answers on {subject}")
        except (TimeoutError, nats.errors.TimeoutError):
            return httpx.ReadTimeout(f"no answer on {subject} within {attempt.timeout:.1f}s")
        except (nats.errors.Error, OSError) as exc:
            return httpx.ConnectError(f"{type(exc).__name__}: {exc}")
        return response(msg.data, subject)

    async def _connected(self, limit: float) -> NatsClient:
        if self._nc is not None and not self._nc.is_closed:
            return self._nc
        nc = NatsClient()
        try:
            # Reconnects forever once connected; the first connection is bounded by the attempt's time.
            await asyncio.wait_for(
                nc.connect(
                    servers=[self.endpoint.url],
                    name="progressd-client",
                    error_cb=self._on_error,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=max(1, min(2, math.ceil(limit))),
                ),
                limit,
            )
        except BaseException:
            await nc.close()
            raise
        self._nc = nc
        return nc

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.debug("nats: %s", exc)

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.drain(), 5.0)
            except (nats.errors.Error, TimeoutError):
                await nc.close()


class AsyncNatsDriver(AsyncRunner):
    """Performs a flow's calls over NATS on the caller's event loop."""

    def __init__(
        self, endpoint: NatsEndpoint, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        super().__init__(sleep)
        self._link = _Link(endpoint)

    async def attempt(self, attempt: Attempt) -> httpx.Response | httpx.TransportError:
        return await self._link.request(attempt)

    async def aclose(self) -> None:
        await self._link.close()


class SyncNatsDriver(SyncRunner):
    """Performs a flow's calls over NATS from blocking code, on an event loop of its own thread."""

    def __init__(self, endpoint: NatsEndpoint, sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(sleep)
        self._link = _Link(endpoint)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="progressd-client-nats", daemon=True
        )
        self._thread.start()

    def attempt(self, attempt: Attempt) -> httpx.Response | httpx.TransportError:
        return asyncio.run_coroutine_threadsafe(self._link.request(attempt), self._loop).result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._link.close(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
