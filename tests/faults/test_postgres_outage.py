"""PostgreSQL stopped and restarted under a running gateway (its own server, not the shared session one).

During the outage commands answer 503 problem+json with Retry-After within a bounded time, reads and
/readyz answer 503 too, nothing is half-applied; after PostgreSQL is back the gateway recovers by itself:
the retried commands are applied exactly once, the read models and a WebSocket watcher catch up.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from infra.embedded import EmbeddedPostgres
from infra.settings import Settings
from infra.tokens import Role, TokenStore
from tests.e2e.conftest import ServerProcess
from tests.faults.harness import FIGURES, Command, assert_problem, counts, deliver, events, settle, verify

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres]

# The slowest answer allowed while PostgreSQL is down: eventsourcing retries each store call ten times,
# each waiting up to POSTGRES_CONNECT_TIMEOUT (1 s) for a pooled connection (~12 s), then the app fails
# fast; the margin is for a loaded machine.
BOUND = 20.0
PLAN = {"title": "outage", "steps": [{"name": "work"}]}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Worker:
    """Posts log lines and progress on one task and restarts a chain of tasks, retrying until acknowledged."""

    def __init__(self, url: str, token: str, task: str, chain: str) -> None:
        self.url = url
        self.token = token
        self.task = task
        self.chain = [chain]  # each restart's new task id appended
        self.sent: list[Command] = []
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=self.url, timeout=30, headers=auth(self.token)) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                body: dict[str, Any]
                if i % 5 == 0:
                    command = Command(f"/api/tasks/{self.chain[-1]}/restart", None, f"restart-{i}")
                elif i % 2:
                    body = {"message": f"line-{i}"}
                    command = Command(f"/api/tasks/{self.task}/logs", body, f"log-{i}")
                else:
                    body = {"percent": round(i * 0.05, 2)}
                    command = Command(f"/api/tasks/{self.task}/steps/1/progress", body, f"p-{i}")
                self.sent.append(command)
                deliver(client, command, deadline, pause=0.1)
                assert command.answer is not None, command.attempts[-3:]
                if command.path.endswith("/restart"):
                    self.chain.append(command.answer["task_id"])


class Watcher:
    """A WebSocket client on one task: reconnects with its cursor whenever the socket ends."""

    def __init__(self, url: str, token: str, task: str) -> None:
        self.url = url.replace("http://", "ws://")
        self.token = token
        self.task = task
        self.got: list[dict[str, Any]] = []
        self.snapshot_seq = 0
        self.reconnects = 0
        self.final: int | None = None

    async def run(self, deadline: float) -> None:
        cursor: str | None = None
        while time.monotonic() < deadline:
            path = f"/ws/tasks/{self.task}" + (f"?after={cursor}" if cursor else "")
            try:
                async with websockets.connect(
                    self.url + path, additional_headers=auth(self.token), open_timeout=5
                ) as ws:
                    while time.monotonic() < deadline:
                        try:
                            message = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                        except TimeoutError:
                            if self.done():
                                return
                            continue
                        if message["type"] == "ping":
                            continue
                        if message["type"] == "snapshot":
                            self.snapshot_seq = message["seq"]
                        else:
                            self.got.append(message)
                        whole = message.get("part", 1) == message.get("parts", 1)
                        cursor = f"{message['seq']}" if whole else f"{message['seq']}.{message['part']}"
                        if self.done():
                            return
            except (websockets.ConnectionClosed, OSError, TimeoutError):
                self.reconnects += 1
                await asyncio.sleep(0.2)

    def done(self) -> bool:
        last = self.got[-1] if self.got else None
        return (
            self.final is not None
            and last is not None
            and last["seq"] >= self.final
            and last["part"] == last["parts"]
        )


def test_postgres_outage_answers_503_and_recovers_by_itself(
    tmp_path: Path, pg_data_dir: Path, server_factory: type[ServerProcess]
) -> None:
    with EmbeddedPostgres(pg_data_dir) as pg:
        url = pg.create_database("outage")
        store = TokenStore(Settings(data_dir=tmp_path, database_url=url))
        _, token = store.create(Role.OWNER, "alice")
        _, fresh = store.create(Role.OWNER, "alice")  # first used during the outage: its lookup fails
        store.db.datastore.close()
        server = server_factory(tmp_path, url)
        server.start()
        with httpx.Client(base_url=server.url, timeout=30, headers=auth(token)) as client:
            task = client.post("/api/tasks", json=PLAN).json()["task_id"]
            assert client.post(f"/api/tasks/{task}/steps/1/start").status_code == 200
            chain = client.post("/api/tasks", json=PLAN).json()["task_id"]
        worker = Worker(server.url, token, task, chain)
        watcher = Watcher(server.url, token, task)
        with ThreadPoolExecutor(2) as pool:
            working = pool.submit(worker.run)
            watching = pool.submit(asyncio.run, watcher.run(time.monotonic() + 120))
            time.sleep(1.5)

            stopped = time.monotonic()
            pg.stop()
            while sum(a.status == 503 for c in list(worker.sent) for a in list(c.attempts)) < 3:
                assert time.monotonic() - stopped < 2 * BOUND, "no 503 answer while PostgreSQL is down"
                assert not working.done(), working.exception()
                time.sleep(0.05)
            first_503 = time.monotonic() - stopped
            outage = check_reads_during_outage(server, token, fresh, task)
            time.sleep(1.0)

            restarted = time.monotonic()
            pg.start()
            outage_seconds = restarted - stopped
            acked_before = sum(c.acked for c in list(worker.sent))
            while sum(c.acked for c in list(worker.sent)) <= acked_before:
                assert time.monotonic() - restarted < 30, "commands did not recover"
                time.sleep(0.02)
            recovered = time.monotonic() - restarted
            time.sleep(1.0)
            worker.stop.set()
            working.result(timeout=60)
            with httpx.Client(base_url=server.url, timeout=30, headers=auth(token)) as client:
                settle(client, token=server.metrics_token)
                caught_up = time.monotonic() - restarted
                watcher.final = client.get(f"/api/tasks/{task}/progress").json()["version"]
                watching.result(timeout=30)
                check_log(client, worker)
                full = replay(server.url, token, task)
                assert fresh_works(server.url, fresh, task)
        verify(server)
        server.stop()  # while PostgreSQL still runs: a clean shutdown, not one waiting on a dead store

    # The watcher saw every message once and in order; progress ticks may be coalesced while a reader lags
    # (the outage, a replay), transitions and log lines never are.
    order = [(m["seq"], m["part"]) for m in watcher.got]
    assert order == sorted(set(order))
    assert watcher.got[-1]["seq"] == watcher.final
    kept = [m for m in full if m["seq"] > watcher.snapshot_seq and m["type"] != "progress"]
    assert [m for m in watcher.got if m["type"] != "progress"] == kept
    attempts = [a for c in worker.sent for a in c.attempts]
    assert all(a.error is None for a in attempts), [a for a in attempts if a.error]
    assert {a.status for a in attempts} <= {200, 201, 503}
    assert max(a.seconds for a in attempts) < BOUND
    unavailable = [a.seconds for a in attempts if a.status == 503]
    FIGURES["PostgreSQL outage"] = {
        "commands": len(worker.sent),
        "answers_503": len(unavailable),
        "slowest_503_s": round(max(unavailable), 2),
        "median_503_s": round(statistics.median(unavailable), 3),
        "first_503_after_s": round(first_503, 2),
        "outage_s": round(outage_seconds, 1),
        "first_command_ok_after_restart_s": round(recovered, 2),
        "views_caught_up_after_restart_s": round(caught_up, 2),
        "ws_reconnects": watcher.reconnects,
        "ws_messages": len(watcher.got),
        **outage,
    }


def check_reads_during_outage(server: ServerProcess, token: str, fresh: str, task: str) -> dict[str, float]:
    """While the store is down: /readyz, a view query and a not yet cached token all answer 503 problems."""
    took: dict[str, float] = {}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        started = time.monotonic()
        assert_problem(client.get("/readyz", headers=auth(server.metrics_token)), 503, "not-ready")
        took["readyz_503_s"] = round(time.monotonic() - started, 2)
        started = time.monotonic()
        view = client.get(f"/api/tasks/{task}/progress", headers=auth(token))
        assert_problem(view, 503, "store-unavailable")
        assert view.headers["retry-after"] == "2"
        took["query_503_s"] = round(time.monotonic() - started, 2)
        started = time.monotonic()
        unknown = client.post(f"/api/tasks/{task}/logs", json={"message": "x"}, headers=auth(fresh))
        assert_problem(unknown, 503, "store-unavailable")
        took["token_lookup_503_s"] = round(time.monotonic() - started, 2)
    return took


def check_log(client: httpx.Client, worker: Worker) -> None:
    """Each command once in the log; every restart whole: the old task linked and the new one created."""
    log = events(client, worker.task)
    messages = [c.body["message"] for c in worker.sent if c.body and "message" in c.body]
    percents = [c.body["percent"] for c in worker.sent if c.body and "percent" in c.body]
    assert counts(log, "Logged", "message") == dict.fromkeys(messages, 1)
    assert counts(log, "Progressed", "percent") == dict.fromkeys(percents, 1)
    assert len(log) == 2 + len(messages) + len(percents)
    for old, new in zip(worker.chain, worker.chain[1:], strict=False):
        old_view = client.get(f"/api/tasks/{old}/progress").json()
        new_view = client.get(f"/api/tasks/{new}/progress").json()
        assert old_view["restarted_as"] == new and new_view["restarted_from"] == old
        assert [e["type"] for e in events(client, old)].count("Restarted") == 1
    listed = client.get("/api/tasks", params={"limit": 500}).json()["tasks"]
    assert len(listed) == 1 + len(worker.chain)  # no task created by a restart that did not happen


def replay(url: str, token: str, task: str) -> list[dict[str, Any]]:
    """Every stream message of the task from the start of its log, on a fresh socket."""

    async def read() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        ws_url = url.replace("http://", "ws://") + f"/ws/tasks/{task}?after=0"
        async with websockets.connect(ws_url, additional_headers=auth(token)) as ws:
            while True:
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
                except TimeoutError:
                    return out
                if message["type"] != "ping":
                    out.append(message)

    return asyncio.run(read())


def fresh_works(url: str, token: str, task: str) -> bool:
    return httpx.get(f"{url}/api/tasks/{task}/progress", headers=auth(token)).status_code == 200
