"""What the fault-injection tests share: a client that retries like a careful worker, log checks, figures."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.e2e.conftest import ServerProcess

# Figures each test reports for tests/faults/MATRIX.md; printed at the end of the run by conftest.py.
FIGURES: dict[str, dict[str, Any]] = {}


@dataclass
class Attempt:
    """One try of a command: its status (None when the connection failed), or the transport error."""

    status: int | None
    error: str | None
    seconds: float


@dataclass
class Command:
    """A command a worker must get acknowledged; the same Idempotency-Key on every try."""

    path: str
    body: dict[str, Any] | None
    key: str
    headers: dict[str, str] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    answer: dict[str, Any] | None = None
    replayed: bool = False  # the acknowledgement said Idempotent-Replayed: an earlier try had been applied

    @property
    def acked(self) -> bool:
        return self.answer is not None

    @property
    def retried(self) -> bool:
        return len(self.attempts) > 1


def deliver(client: httpx.Client, command: Command, deadline: float, pause: float = 0.05) -> Command:
    """Post until acknowledged (2xx), retrying connection errors, 503s and 429s with the same key, until
    `deadline`.

    Any other answer fails the test: a worker's commands here are always legal. A 429 (the workers share the
    local mode's per-address rate limit, and a restarted gateway gets their retries at once) did nothing and
    is retried after its Retry-After, at most a second, as the client SDK does.
    """
    headers = {"Idempotency-Key": command.key, **command.headers}
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            response = client.post(command.path, json=command.body, headers=headers)
        except httpx.TransportError as exc:
            command.attempts.append(Attempt(None, type(exc).__name__, time.monotonic() - started))
            time.sleep(pause)
            continue
        command.attempts.append(Attempt(response.status_code, None, time.monotonic() - started))
        if response.status_code == 503:
            assert_problem(response, 503, "store-unavailable")
            assert response.headers["retry-after"].isdigit()
            time.sleep(pause)
            continue
        if response.status_code == 429:
            assert_problem(response, 429, "rate-limited")
            time.sleep(min(1.0, float(response.headers["retry-after"])))
            continue
        assert response.status_code in (200, 201), f"{command.path}: {response.status_code} {response.text}"
        command.answer = response.json()
        command.replayed = response.headers.get("idempotent-replayed") == "true"
        return command
    return command


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem with this status (and type slug)."""
    assert response.status_code == status, f"{response.status_code} {response.text[:500]}"
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if slug is not None:
        assert body["type"] == f"/problems/{slug}", body
    return body


def events(client: httpx.Client, task_id: str) -> list[dict[str, Any]]:
    """A task's whole raw log, from GET /api/tasks/{id}/events."""
    out: list[dict[str, Any]] = []
    while True:
        after = out[-1]["seq"] if out else 0
        response = client.get(f"/api/tasks/{task_id}/events", params={"after": after, "limit": 10_000})
        assert response.status_code == 200, response.text
        page: list[dict[str, Any]] = response.json()["events"]
        if not page:
            return out
        out += page


def counts(log: list[dict[str, Any]], kind: str, field_name: str) -> Counter[Any]:
    """How often each value of an event field occurs among events of one type."""
    return Counter(e["data"][field_name] for e in log if e["type"] == kind)


def settle(client: httpx.Client, timeout: float = 30.0, token: str | None = None) -> float:
    """Wait until /readyz answers 200 with every read model at lag 0; return how long that took. With tokens,
    /readyz needs the server's metrics `token`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout:
        try:
            response = client.get("/readyz", headers=headers)
            last = response.text
            if response.status_code == 200 and not any(response.json()["lag"].values()):
                return time.monotonic() - started
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise AssertionError(f"read models did not catch up within {timeout}s: {last}")


def verify(server: ServerProcess) -> str:
    """`progressd verify` against the server's store: every view equals a replay of the log (exit 0)."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "verify"],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) >= 5 and all("equals a replay of the log" in line for line in lines), result.stdout
    return result.stdout
