"""One logical call with retries: exponential backoff with jitter, Retry-After, and a total deadline."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import httpx

from client.effect import Attempt, Call, Flow, Sleep
from client.errors import ProgressdError, Unavailable

log = logging.getLogger("progressd.client")

# 429 and the gateway statuses say "nothing was done, try later"; every other 4xx/5xx would fail again.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter between attempts, bounded by a total deadline per logical call."""

    deadline: float = 60.0
    timeout: float = 10.0
    base: float = 0.1
    cap: float = 5.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        """The pause before retry n (1-based): doubling up to `cap`, half of it random."""
        ceiling = min(self.cap, self.base * 2.0 ** min(retry - 1, 60))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """The backoff, never shorter than what the server asked for in Retry-After."""
        backoff = self.backoff(retry, rng)
        return backoff if retry_after is None else max(retry_after, backoff)


@dataclass
class Stats:
    """Counters of one tracker's traffic: logical calls, HTTP requests, retries, replayed answers."""

    calls: int = 0
    requests: int = 0
    retries: int = 0
    replayed: int = 0
    paused_waits: int = 0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The problem+json body of an error response, or one made up from its status when it has none."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and ("type" in body or "status" in body):
        return {"status": response.status_code, **body}
    try:
        title = HTTPStatus(response.status_code).phrase
    except ValueError:
        title = "Error"
    return {
        "type": "about:blank",
        "title": title,
        "status": response.status_code,
        "detail": response.text[:500],
    }


def decode(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise ProgressdError(
            {
                "type": "/problems/bad-response",
                "title": "Bad Response",
                "status": response.status_code,
                "detail": f"expected a JSON object, got {response.text[:200]!r}",
            }
        )
    return body


def send(
    call: Call,
    policy: RetryPolicy,
    clock: Callable[[], float],
    rng: random.Random,
    stats: Stats,
) -> Flow[dict[str, Any]]:
    """Perform a call until it answers, retrying network errors and 429/502/503/504 until the deadline.

    Every attempt carries the call's one idempotency key, so a command whose answer was lost is
    replayed by the server, not applied twice. Other error statuses raise ProgressdError at once.
    """
    started = clock()
    retries = 0
    stats.calls += 1
    while True:
        remaining = policy.deadline - (clock() - started)
        outcome = yield Attempt(call, timeout=max(0.05, min(policy.timeout, remaining)))
        stats.requests += 1
        failure: Exception
        if isinstance(outcome, httpx.Response):
            if outcome.status_code < 400:
                body = decode(outcome)
                replayed = outcome.headers.get("idempotent-replayed") == "true"
                stats.replayed += replayed
                log.debug(
                    "%s %s -> %d",
                    call.method,
                    call.path,
                    outcome.status_code,
                    extra={"progressd": _fields(call, outcome.status_code, retries, replayed=replayed)},
                )
                return body
            problem = problem_of(outcome)
            if outcome.status_code not in RETRY_STATUSES:
                raise ProgressdError(problem)
            failure = ProgressdError(problem)
            retry_after = parse_retry_after(outcome.headers.get("retry-after"))
            reason = str(failure)
        elif isinstance(outcome, httpx.TransportError):
            failure, retry_after, reason = outcome, None, f"{type(outcome).__name__}: {outcome}"
        else:
            raise TypeError(f"the driver answered an Attempt with {outcome!r}")
        retries += 1
        delay = policy.delay(retries, retry_after, rng)
        elapsed = clock() - started
        if delay >= policy.deadline - elapsed:
            raise _give_up(call, failure, retries, elapsed) from failure
        stats.retries += 1
        log.info(
            "retrying %s %s in %.2fs after %s",
            call.method,
            call.path,
            delay,
            reason,
            extra={"progressd": {**_fields(call, None, retries), "delay": delay, "reason": reason}},
        )
        yield Sleep(delay)


def _fields(call: Call, status: int | None, retries: int, *, replayed: bool = False) -> dict[str, Any]:
    return {
        "method": call.method,
        "path": call.path,
        "key": call.key,
        "status": status,
        "retries": retries,
        "replayed": replayed,
    }


def _give_up(call: Call, failure: Exception, attempts: int, elapsed: float) -> Unavailable:
    if isinstance(failure, ProgressdError):
        problem = dict(failure.problem)
    else:
        problem = {
            "type": "/problems/unreachable",
            "title": "Service Unavailable",
            "status": 503,
            "detail": f"{type(failure).__name__}: {failure}",
        }
    problem["detail"] = (
        f"{call.method} {call.path}: gave up after {attempts} attempts in {elapsed:.1f}s: {problem['detail']}"
    )
    return Unavailable(problem)
