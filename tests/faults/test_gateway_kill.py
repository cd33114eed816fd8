"""SIGKILL the gateway at random moments while workers post commands with Idempotency-Keys and retry.

After the last restart every command a worker sent is in the log exactly once (acknowledged ones, and
those whose connection died mid-request and were retried), and every view equals a replay of the log.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.faults.harness import FIGURES, Command, counts, deliver, events, settle, verify

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKERS = 4
KILLS = 4
PER_TASK = 40  # commands per task, well inside the 256 keys a task remembers
PLAN = {"title": "kill -9", "steps": [{"name": "work"}]}


def commands_for(worker: int, task: int, tid: str) -> list[Command]:
    """A task's run: start, then log lines and progress ticks, each with a unique text or percent."""
    base = f"/api/tasks/{tid}"
    out = [Command(f"{base}/steps/1/start", None, f"w{worker}-t{task}-start")]
    for i in range(1, PER_TASK):
        if i % 2:
            body = {"message": f"w{worker}-t{task}-{i}", "step": 1}
            out.append(Command(f"{base}/logs", body, f"w{worker}-t{task}-log-{i}"))
        else:
            out.append(Command(f"{base}/steps/1/progress", {"percent": i}, f"w{worker}-t{task}-p-{i}"))
    return out


def work(url: str, worker: int, stop: threading.Event, deadline: float) -> list[tuple[str, list[Command]]]:
    """Create tasks and drive them until told to stop; every command is retried until acknowledged."""
    done: list[tuple[str, list[Command]]] = []
    with httpx.Client(base_url=url, timeout=10) as client:
        task = 0
        while not stop.is_set():
            create = deliver(client, Command("/api/tasks", PLAN, f"w{worker}-t{task}-create"), deadline)
            assert create.answer is not None, create.attempts[-3:]
            tid = create.answer["task_id"]
            sent = [create]
            for command in commands_for(worker, task, tid):
                if stop.is_set():
                    break
                sent.append(deliver(client, command, deadline))
            done.append((tid, sent))
            task += 1
    return done


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sigkill_under_load_keeps_every_command_exactly_once(
    backend: str, tmp_path: Path, server_factory: type[ServerProcess], request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    server = server_factory(tmp_path, url)
    server.start()
    rng = random.Random(20261125)
    stop = threading.Event()
    started = time.monotonic()
    deadline = started + 90
    downtime: list[float] = []
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(work, server.url, n, stop, deadline) for n in range(WORKERS)]
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.5, 1.5))
            server.kill()
            down = time.monotonic()
            server.start()
            downtime.append(time.monotonic() - down)
        time.sleep(1.0)
        stop.set()
        results = [f.result(timeout=120) for f in futures]
    run_seconds = time.monotonic() - started

    tasks = [task for result in results for task in result]
    sent = [c for _, commands in tasks for c in commands]
    assert all(c.acked for c in sent), [c.attempts for c in sent if not c.acked]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        settle(client)
        for tid, commands in tasks:
            log = events(client, tid)
            # one event per command, whatever the number of tries
            assert len(log) == len(commands), (tid, [e["type"] for e in log])
            assert [e["type"] for e in log[:2]] == ["Created", "StepStarted"][: len(log)]
            messages = [c.body["message"] for c in commands if c.body and "message" in c.body]
            percents = [float(c.body["percent"]) for c in commands if c.body and "percent" in c.body]
            assert counts(log, "Logged", "message") == dict.fromkeys(messages, 1)
            assert counts(log, "Progressed", "percent") == dict.fromkeys(percents, 1)
            # an answer that was not a replay names the version of its own event
            seqs = {c.key: c.answer["version"] for c in commands if c.answer and not c.replayed}
            for command, event in zip(commands, log, strict=True):
                if command.key in seqs:
                    assert seqs[command.key] == event["seq"], (command.key, event)
            # the read model agrees with the log
            lines = client.get(f"/api/tasks/{tid}/logs", params={"limit": 5000}).json()["logs"]
            assert sorted(line["message"] for line in lines) == sorted(messages)
    verify(server)
    server.stop()  # before the fixtures drop its database

    retried = [c for c in sent if c.retried]
    FIGURES[f"gateway SIGKILL ({backend})"] = {
        "workers": WORKERS,
        "kills": KILLS,
        "tasks": len(tasks),
        "commands": len(sent),
        "retried_commands": len(retried),
        "retries": sum(len(c.attempts) - 1 for c in sent),
        "retried_found_applied": sum(c.replayed for c in retried),
        "downtime_s_each": [round(d, 2) for d in downtime],
        "run_s": round(run_seconds, 1),
    }
    assert len(retried) >= KILLS  # every kill caught commands in flight or found the server down
