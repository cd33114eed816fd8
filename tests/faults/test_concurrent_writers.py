"""Many clients writing to one task at once, through one gateway and through two gateways on one PostgreSQL.

Nothing acknowledged is lost or doubled, each step ends at the last acknowledged progress (ordered by
version), conflicts surface only as 412 on If-Match commands (everything else is retried inside the
service), and nothing answers 500.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.faults.harness import FIGURES, assert_problem, events, settle, verify

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

THREADS = 8
PER_THREAD = 50
STEPS = 4
PLAN = {"title": "contended", "steps": [{"name": f"step {n}"} for n in range(1, STEPS + 1)]}


@dataclass
class Sent:
    """One command and what came back."""

    kind: str  # log, progress, if-match, dup
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    status: int
    answer: dict[str, Any]
    replayed: bool


def writer(url: str, tid: str, n: int, start: threading.Barrier) -> list[Sent]:
    """Logs, progress on random steps, If-Match logs pinned to the last version seen, one shared key."""
    rng = random.Random(n)
    out: list[Sent] = []
    seen = 1
    with httpx.Client(base_url=url, timeout=30) as client:
        start.wait()
        for i in range(PER_THREAD):
            roll = rng.random()
            headers: dict[str, str] = {}
            body: dict[str, Any]
            if i == PER_THREAD // 2:
                kind, path, body = "dup", "logs", {"message": "the same request from every thread"}
                headers["Idempotency-Key"] = "shared-by-all-threads"
            elif roll < 0.4:
                kind, path, body = "log", "logs", {"message": f"c{n}-{i}"}
            elif roll < 0.85:
                step = rng.randint(1, STEPS)
                kind, path, body = "progress", f"steps/{step}/progress", {"percent": rng.randint(0, 100)}
            else:
                kind, path, body = "if-match", "logs", {"message": f"c{n}-{i}-pinned"}
                headers["If-Match"] = f'"{seen}"'
            response = client.post(f"/api/tasks/{tid}/{path}", json=body, headers=headers)
            answer: dict[str, Any] = response.json()
            if response.status_code == 200:
                seen = max(seen, answer["version"])
            replayed = response.headers.get("idempotent-replayed") == "true"
            out.append(Sent(kind, path, body, headers, response.status_code, answer, replayed))
    return out


def hammer(urls: list[str], tid: str) -> list[Sent]:
    start = threading.Barrier(THREADS)
    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(writer, urls[n % len(urls)], tid, n, start) for n in range(THREADS)]
        return [s for f in futures for s in f.result(timeout=180)]


def check(client: httpx.Client, tid: str, sent: list[Sent]) -> dict[str, int]:
    """The log holds exactly the acknowledged commands; the views end where the last acknowledgements say."""
    statuses = {s.status for s in sent}
    assert statuses <= {200, 412}, [(s.status, s.answer) for s in sent if s.status not in (200, 412)]
    for s in sent:
        if s.status == 412:
            assert s.kind == "if-match", s  # only a pinned version may lose a race
            problem = s.answer
            assert problem["type"] == "/problems/version-mismatch"
            assert problem["actual_version"] > problem["expected_version"]
        elif s.kind == "if-match":
            assert s.answer["version"] == int(s.headers["If-Match"].strip('"')) + 1
    acked = [s for s in sent if s.status == 200]
    fresh = [s for s in acked if not s.replayed]
    dups = [s for s in sent if s.kind == "dup"]
    assert len(dups) == THREADS and sum(not s.replayed for s in dups) == 1

    log = events(client, tid)
    assert len(log) == 1 + STEPS + len(fresh)  # created, started, then one event per acknowledged command
    by_seq = {e["seq"]: e for e in log}
    assert sorted(s.answer["version"] for s in fresh) == list(range(2 + STEPS, len(log) + 1))
    for s in fresh:  # each answer names its own event
        event = by_seq[s.answer["version"]]
        if s.path == "logs":
            assert event["type"] == "Logged" and event["data"]["message"] == s.body["message"]
        else:
            assert event["type"] == "Progressed" and event["data"]["percent"] == s.body["percent"]
    lost = [s for s in sent if s.status == 412]
    logged = {e["data"]["message"] for e in log if e["type"] == "Logged"}
    assert not logged & {s.body["message"] for s in lost}

    view = client.get(f"/api/tasks/{tid}/progress").json()
    assert view["version"] == len(log)
    for step in range(1, STEPS + 1):
        ticks = [s for s in fresh if s.path == f"steps/{step}/progress"]
        if ticks:
            last = max(ticks, key=lambda s: s.answer["version"])
            assert view["steps"][step - 1]["progress"] == last.body["percent"], (step, last)
    return {"commands": len(sent), "acked": len(acked), "if_match_412": len(lost), "events": len(log)}


def start_task(client: httpx.Client) -> str:
    tid: str = client.post("/api/tasks", json=PLAN).json()["task_id"]
    for step in range(1, STEPS + 1):
        assert client.post(f"/api/tasks/{tid}/steps/{step}/start").status_code == 200
    return tid


def test_one_gateway_many_writers_on_one_task(tmp_path: Path, server_factory: type[ServerProcess]) -> None:
    """On SQLite; PostgreSQL gets the same writers through two gateways below."""
    server = server_factory(tmp_path)
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        tid = start_task(client)
        started = time.monotonic()
        sent = hammer([server.url], tid)
        seconds = time.monotonic() - started
        settle(client)
        figures = check(client, tid, sent)
    verify(server)
    server.stop()  # before the fixtures drop its database
    FIGURES["concurrent writers, one gateway (sqlite)"] = {
        **figures,
        "threads": THREADS,
        "commands_per_s": round(len(sent) / seconds),
    }


@pytest.mark.postgres
def test_two_gateways_on_one_postgres_write_one_task(
    tmp_path: Path, server_factory: type[ServerProcess], pg_url: str
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = server_factory(tmp_path / "a", pg_url)
    a.start()
    # B does not project: its answers would wait for A's projector poll, so they do not wait at all.
    b = server_factory(
        tmp_path / "b",
        pg_url,
        extra_args=("--no-projections", "--no-relay"),
        env={"PROGRESSD_READ_TIMEOUT": "0.01"},
    )
    b.start()
    with httpx.Client(base_url=a.url, timeout=30) as client:
        tid = start_task(client)
        started = time.monotonic()
        sent = hammer([a.url, b.url], tid)
        seconds = time.monotonic() - started
        settle(client)
        figures = check(client, tid, sent)
        restarts = restart_while_written(client, b.url)
    verify(a)
    b.stop()  # before the fixtures drop their database
    a.stop()
    FIGURES["concurrent writers, two gateways (postgres)"] = {
        **figures,
        "threads": THREADS,
        "commands_per_s": round(len(sent) / seconds),
        **restarts,
    }


def restart_while_written(client: httpx.Client, other: str) -> dict[str, int]:
    """Restarts on gateway A race log lines on gateway B: each restart is whole (201) or 409, never 500."""
    tids = [start_task(client) for _ in range(6)]
    stop = threading.Event()

    def scribble() -> list[int]:
        statuses = []
        with httpx.Client(base_url=other, timeout=30) as writer_client:
            while not stop.is_set():
                for tid in tids:
                    response = writer_client.post(f"/api/tasks/{tid}/logs", json={"message": "busy"})
                    statuses.append(response.status_code)
        return statuses

    with ThreadPoolExecutor(2) as pool:
        scribbling = [pool.submit(scribble) for _ in range(2)]
        time.sleep(0.3)
        answers = [client.post(f"/api/tasks/{tid}/restart") for tid in tids]
        stop.set()
        written = [s for f in scribbling for s in f.result(timeout=60)]
    assert set(written) == {200}
    for tid, response in zip(tids, answers, strict=True):
        if response.status_code != 201:
            assert_problem(response, 412, "version-mismatch")
            continue
        new = response.json()
        assert new["restarted_from"] == tid
        assert client.get(f"/api/tasks/{tid}/progress").json()["restarted_as"] == new["task_id"]
    return {"restarts": len(tids), "logs_racing_restarts": len(written)}
