"""The client's logic is written once, as generators ("flows") that yield effects for a driver to perform.

A flow yields `Attempt` (one HTTP request) or `Sleep`, and is sent back the response, the transport error
(as a value, never thrown in) or None. `http.SyncDriver` and `http.AsyncDriver` perform the same flows with
`httpx.Client` and `httpx.AsyncClient`, so the sync and asyncio trackers share every retry, pause and
approval rule, and a unit test can drive a flow with a fake clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator
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
