"""Large log lines against a small tail: the tail's memory stays within its byte limit, and streams whose
cursor has left the tail read the log instead, missing nothing."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import websockets

from tests.e2e.conftest import ServerProcess
from tests.faults.harness import FIGURES, settle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIMIT = 2 * 1024 * 1024
LINE = 10_000  # bytes of text per log line
LINES = 2_400  # ~24 MB of log text: twelve times the limit
TASKS = 4
WRITERS = 3


def gauge(client: httpx.Client, name: str) -> float:
    """A sample of a gauge without labels from /metrics."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def text(task: int, n: int) -> str:
    head = f"task {task} line {n} "
    return head + "x" * (LINE - len(head))


async def read_logs(url: str, expected: int) -> list[dict[str, Any]]:
    """Every log message a stream sends until `expected` have come (without their text, to keep it small)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    async with websockets.connect(url, max_size=1 << 20) as ws:
        while len(got) < expected:
            message = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
            if message["type"] == "log":
                got.append(
                    {k: message[k] for k in ("task_id", "seq", "position")}
                    | {"head": message["message"][:40]}
                )
    return got


def test_the_tail_stays_within_its_byte_limit_and_old_cursors_read_the_log(
    tmp_path: Path, server_factory: type[ServerProcess]
) -> None:
    server = server_factory(
        tmp_path, env={"PROGRESSD_TAIL_BYTES": str(LIMIT), "PROGRESSD_RATE_LIMIT": "100000"}
    )
    server.start()
    assert server.proc is not None
    process = psutil.Process(server.proc.pid)
    ws_base = server.url.replace("http://", "ws://")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        ids = [
            client.post("/api/tasks", json={"title": f"t{i}", "steps": [{"name": "a"}]}).json()["task_id"]
            for i in range(TASKS)
        ]
        rss_before = process.memory_info().rss
        per_task = LINES // TASKS

        # A live subscriber on the first task from the start: it follows the tail while it keeps up and reads
        # the log when the tail has moved on.
        live: list[list[dict[str, Any]]] = []
        live_ready = threading.Event()

        def follow() -> None:
            async def run() -> list[dict[str, Any]]:
                task = asyncio.ensure_future(read_logs(f"{ws_base}/ws/tasks/{ids[0]}?after=1", per_task))
                await asyncio.sleep(0.5)
                live_ready.set()
                return await task

            live.append(asyncio.run(run()))

        follower = threading.Thread(target=follow)
        follower.start()
        assert live_ready.wait(30)

        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as scraper:
                while not stop.is_set():
                    samples.append(gauge(scraper, "progressd_tail_bytes"))
                    stop.wait(0.2)

        def post(writer: int) -> int:
            done = 0
            with httpx.Client(base_url=server.url, timeout=30) as own:
                for n in range(writer, LINES, WRITERS):
                    task = n % TASKS
                    response = own.post(
                        f"/api/tasks/{ids[task]}/logs", json={"message": text(task, n // TASKS)}
                    )
                    assert response.status_code == 200, response.text
                    done += 1
            return done

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with ThreadPoolExecutor(WRITERS) as pool:
                posted = sum(pool.map(post, range(WRITERS)))
        finally:
            stop.set()
            sampler.join()
        assert posted == LINES
        settle(client)
        final = gauge(client, "progressd_tail_bytes")
        entries = gauge(client, "progressd_tail_entries")
        rss_after = process.memory_info().rss
        follower.join(180)

        # Old cursors: the tail holds only the last ~200 lines, so these come from the log.
        async def from_old_cursors() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            one = await read_logs(f"{ws_base}/ws/tasks/{ids[1]}?after=1", per_task)
            every = await read_logs(f"{ws_base}/ws/tasks?after=0", LINES)
            return one, every

        one, every = asyncio.run(from_old_cursors())

    assert samples and max(samples) <= LIMIT, max(samples)
    assert 0 < final <= LIMIT
    assert 0 < entries < LINES // 4  # most lines have left the tail
    # Every line once, in log order, on every stream.
    assert len(every) == LINES
    assert [m["position"] for m in every] == sorted({m["position"] for m in every})
    for task in range(TASKS):
        mine = [m for m in every if m["task_id"] == ids[task]]
        assert sorted(m["head"] for m in mine) == sorted(text(task, n)[:40] for n in range(per_task))
        assert [m["seq"] for m in mine] == list(range(2, per_task + 2))
    assert live[0] == [m for m in every if m["task_id"] == ids[0]]
    assert one == [m for m in every if m["task_id"] == ids[1]]
    FIGURES["tail_memory"] = {
        "lines": LINES,
        "line_bytes": LINE,
        "limit_bytes": LIMIT,
        "tail_bytes_max": max(samples),
        "tail_bytes_final": final,
        "tail_entries_final": entries,
        "rss_before_mb": round(rss_before / 2**20),
        "rss_after_mb": round(rss_after / 2**20),
    }
