"""Live fan-out: WebSocket deliveries/s to many subscribers of one task, against a bare Starlette broadcast.

`python -m bench.fanout [--quick]`

S subscribers (raw asyncio sockets in a separate process, see bench/wsclient.py) follow one task on a real
`progressd serve`; the bench then appends M log events to that task in one commit, from its own connection to
the store (the gateway's shared log tail finds them within its 50 ms poll), and times until every subscriber
has every message. Log lines are used because progress ticks may be coalesced for a reader that lags (by
design), which would make "every message" ill-defined. The baseline is a bare Starlette app
(bench/bare.py) that sends each of the same M frames to every connected socket, with the same client and the
same uvicorn. Memory per idle connection is the gateway's RSS growth divided by S, after every subscriber got
its snapshot.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any
from uuid import UUID

from bench.common import (
    Subscribers,
    Table,
    bare,
    check,
    gateway,
    http_json,
    quick_main,
    raise_nofile,
    rate,
    rss,
    scratch,
    section,
    times,
    write_section,
)

TARGET = 0.7
HISTORY = 2_000  # events the task already has (and the gateway's log tail holds) when subscribers come
TARGET_KIB = 50
FULL = ((100, 500, 2000), 300_000)
QUICK = ((100, 500, 2000), 40_000)


def log_frames(task_id: str, count: int) -> list[str]:
    """Frames shaped like the gateway's `log` messages, for the bare broadcast."""
    from projections.messages import Log, encoder

    return [
        encoder.encode(
            Log(
                task_id=task_id,
                seq=1000 + i,
                position=5000 + i,
                at="2026-01-15T10:02:00.000Z",
                level="info",
                message=f"bench line {i}",
                step=1,
            )
        ).decode()
        for i in range(count)
    ]


def append_logs(data_dir: Path, task_id: UUID, count: int) -> float:
    """Append `count` log events to the task in one commit; return when the commit started."""
    from infra.settings import Settings
    from infra.store import open_store

    app = open_store(Settings(data_dir=data_dir))
    try:
        task = app.task(task_id)
        started = time.monotonic()
        for i in range(count):
            task.log("info", f"bench line {i}", 1)
        app.save(task)
        return started
    finally:
        app.close()


def ours(data_dir: Path, subscribers: int, messages: int) -> dict[str, Any]:
    with gateway(data_dir) as server:
        plan = {"title": "fan-out", "steps": [{"name": "work"}]}
        tid = http_json("POST", f"{server.url}/api/tasks", plan)["task_id"]
        http_json("POST", f"{server.url}/api/tasks/{tid}/steps/1/start")
        append_logs(data_dir, UUID(tid), HISTORY)  # a task with a past, as agents' tasks have
        time.sleep(1.0)
        before = rss(server.pid)
        url = server.url.replace("http://", "ws://") + f"/ws/tasks/{tid}"
        clients = Subscribers(url, subscribers, skip=1, expect=messages, timeout=120)
        try:
            connected = clients.ready()
            time.sleep(1.0)
            after = rss(server.pid)
            started = append_logs(data_dir, UUID(tid), messages)
            results = clients.results()
        finally:
            clients.close()
    return summary(results, started, connected, messages, (after - before) / max(connected, 1))


def baseline(log: Path, subscribers: int, messages: int) -> dict[str, Any]:
    frames = json.dumps(log_frames("0b3a1f7e-3c44-4c1e-9d0e-6a1b2c3d4e5f", messages)).encode()
    with bare("ws_app", log) as app:
        time.sleep(0.5)
        before = rss(app.pid)
        url = app.url.replace("http://", "ws://") + "/ws"
        clients = Subscribers(url, subscribers, skip=0, expect=messages, timeout=120)
        try:
            connected = clients.ready()
            time.sleep(1.0)
            after = rss(app.pid)
            request = urllib.request.Request(f"{app.url}/broadcast", data=frames, method="POST")
            started = time.monotonic()
            urllib.request.urlopen(request, timeout=300).read()
            results = clients.results()
        finally:
            clients.close()
    return summary(results, started, connected, messages, (after - before) / max(connected, 1))


def summary(
    results: list[dict[str, Any]], started: float, connected: int, messages: int, per_socket: float
) -> dict[str, Any]:
    frames = sum(r["frames"] for r in results)
    last = max(r["last"] for r in results)
    complete = sum(r["complete"] for r in results)
    seconds = max(last - started, 1e-9)
    return {
        "rate": frames / seconds,
        "seconds": seconds,
        "complete": complete,
        "connected": connected,
        "expected": connected * messages,
        "frames": frames,
        "per_socket": per_socket,
        "client_cpu": sum(r["cpu"] for r in results),
    }


def run(quick: bool = False, command: str = "python -m bench.fanout") -> list[Table]:
    raise_nofile(65_536)
    sizes, deliveries = QUICK if quick else FULL
    table = Table(
        "WebSocket fan-out to subscribers of one task — SQLite",
        [
            "subscribers",
            "messages",
            "deliveries/s (ours)",
            "bare broadcast/s",
            "ratio",
            f"target ≥ {TARGET}x",
            "KiB per idle socket (ours)",
            "bare KiB",
            f"< {TARGET_KIB} KiB",
            "client CPU s (ours/bare)",
        ],
    )
    with scratch("fanout") as tmp:
        for subscribers in sizes:
            messages = max(20, deliveries // subscribers)
            a = ours(tmp / f"ours-{subscribers}", subscribers, messages)
            b = baseline(tmp / f"bare-{subscribers}.log", subscribers, messages)
            ratio = a["rate"] / b["rate"]
            kib = a["per_socket"] / 1024
            missing = [
                f"{x['expected'] - x['frames']:,} of {name}'s deliveries missing"
                for name, x in (("ours", a), ("bare", b))
                if x["frames"] < x["expected"]
            ]
            table.add(
                f"{subscribers:,}",
                f"{messages:,}",
                rate(a["rate"]),
                rate(b["rate"]),
                times(ratio),
                check(ratio >= TARGET),
                f"{kib:.1f}",
                f"{b['per_socket'] / 1024:.1f}",
                check(kib < TARGET_KIB),
                f"{a['client_cpu']:.1f} / {b['client_cpu']:.1f}" + "".join(f" ({m})" for m in missing),
            )
            print(table.rows[-1], flush=True)
    table.notes.append(
        "Deliveries/s = frames received by all subscribers / (last arrival - start of the commit or of the "
        "broadcast request). The gateway side includes finding the commit (log tail poll, 50 ms at most), "
        "decoding the events and encoding the messages once; the bare side gets ready-made frames."
    )
    table.notes.append(
        f"The task already has {HISTORY:,} events when the subscribers connect (each gets a snapshot first)."
    )
    table.notes.append(
        "Client CPU s is the subscriber process's CPU time for the whole run (connect + receive): "
        "well under the elapsed time means the client was not the bottleneck."
    )
    print(table.text(), flush=True)
    write_section(
        "fanout",
        section(
            "Live fan-out",
            "WebSocket deliveries/s from one gateway to S subscribers of one task vs a bare Starlette "
            "broadcast of the same number of same-sized frames to the same clients; RSS per idle socket.",
            [table],
            command,
        ),
    )
    return [table]


def main() -> None:
    quick_main("fanout", __doc__, run, "fewer messages, about 40 s")


if __name__ == "__main__":
    main()
