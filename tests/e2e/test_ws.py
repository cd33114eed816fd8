"""WebSocket streams on a real server: resume with no gap or duplicate, slow readers, commands, errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psutil
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from infra.settings import Settings
from infra.store import open_store
from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e

CRM = {
    "title": "Cellphone Store CRM",
    "complexity": 4,
    "steps": [
        {"name": "Create database tables"},
        {
            "name": "Generate application UI",
            "substeps": ["Customer list", "Product list", "Sales form", "Repair board"],
        },
        {"name": "Add search and filters"},
        {"name": "Configure workflows", "requires_approval": True},
    ],
}


def crm_commands(tid: str) -> list[tuple[str, Any]]:
    base = f"/api/tasks/{tid}/steps"
    out: list[tuple[str, Any]] = [(f"{base}/1/start", None)]
    out += [(f"{base}/1/progress", {"percent": p}) for p in (20, 50, 80)]
    out += [(f"{base}/1/complete", None), (f"{base}/2/start", None)]
    for n in (1, 2, 3, 4):
        out += [(f"{base}/2/progress", {"percent": n * 20}), (f"{base}/2/substeps/{n}/done", None)]
        out.append((f"/api/tasks/{tid}/logs", {"message": f"substep {n}", "step": 2}))
    out += [(f"/api/tasks/{tid}/pause", None), (f"/api/tasks/{tid}/resume", None)]
    out += [
        (f"{base}/2/complete", None),
        (f"{base}/3/start", None),
        (f"{base}/3/fail", {"error": "index missing"}),
    ]
    out += [(f"{base}/3/retry", None), (f"{base}/3/complete", None), (f"{base}/4/start", None)]
    out += [(f"{base}/4/approve", {"comment": "ok"}), (f"{base}/4/complete", {"result": "CRM ready"})]
    return out


async def recv(ws: ClientConnection, limit: float = 10.0) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), limit))
        if message["type"] != "ping":
            return message


async def until_closed(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    """Read every message (pings included) until the server closes; return them and the close code."""
    got: list[dict[str, Any]] = []
    try:
        while True:
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    except websockets.ConnectionClosed as closed:
        return got, closed.rcvd.code if closed.rcvd else None


@pytest.fixture
def server(tmp_path: Path, server_factory: type[ServerProcess]) -> ServerProcess:
    srv = server_factory(tmp_path)
    srv.start()
    return srv


def ws_url(server: ServerProcess, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def test_reconnecting_client_sees_the_log_exactly_once(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        tid = client.post("/api/tasks", json=CRM).json()["task_id"]
        commands = crm_commands(tid)

        async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            seen: list[dict[str, Any]] = []
            cursor: str | None = None
            pending = list(commands)
            while pending:
                url = f"/ws/tasks/{tid}" + (f"?after={cursor}" if cursor is not None else "")
                async with websockets.connect(ws_url(server, url)) as ws:
                    if cursor is None:
                        snap = await recv(ws)
                        assert snap["type"] == "snapshot" and snap["view"]["task_id"] == tid
                        cursor = str(snap["seq"])
                    # send a few commands, read a few messages, then drop the connection mid-stream
                    for path, body in pending[:4]:
                        assert (await asyncio.to_thread(client.post, path, json=body)).status_code == 200
                    pending = pending[4:]
                    for _ in range(3):
                        message = await recv(ws)
                        seen.append(message)
                        whole_event = message["part"] == message["parts"]
                        cursor = f"{message['seq']}" if whole_event else f"{message['seq']}.{message['part']}"
            # read the rest on a final connection
            progress = await asyncio.to_thread(client.get, f"/api/tasks/{tid}/progress")
            final_seq = progress.json()["version"]
            async with websockets.connect(ws_url(server, f"/ws/tasks/{tid}?after={cursor}")) as ws:
                while not seen or seen[-1]["seq"] < final_seq or seen[-1]["type"] != "task_complete":
                    seen.append(await recv(ws))
            # the whole log from the start, in one go
            full: list[dict[str, Any]] = []
            async with websockets.connect(ws_url(server, f"/ws/tasks/{tid}?after=0")) as ws:
                while not full or full[-1]["type"] != "task_complete":
                    full.append(await recv(ws))
            return seen, full

        seen, full = asyncio.run(scenario())

    # Every message of every event after the snapshot, exactly once and in order, across reconnects.
    assert seen == [m for m in full if m["seq"] > 1]
    assert [m["seq"] for m in full if m["part"] == 1] == list(range(1, full[-1]["seq"] + 1))
    types = [m["type"] for m in full]
    for kind in (
        "step_started",
        "progress",
        "substep_done",
        "step_complete",
        "step_failed",
        "task_failed",
        "paused",
        "resumed",
        "log",
        "approval_needed",
        "approval_resolved",
        "task_complete",
    ):
        assert kind in types, kind
    assert all({"type", "task_id", "seq", "position", "at"} <= m.keys() for m in full)
    positions = [m["position"] for m in full]
    assert positions == sorted(positions)


def test_all_tasks_stream_resumes_by_position(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        a = client.post("/api/tasks", json=CRM).json()["task_id"]

        async def scenario() -> list[dict[str, Any]]:
            async with websockets.connect(ws_url(server, "/ws/tasks")) as ws:
                snap = await recv(ws)
                assert snap["type"] == "snapshot" and snap["task_id"] == a
                b = (await asyncio.to_thread(client.post, "/api/tasks", json=CRM)).json()["task_id"]
                created = await recv(ws)
                assert created["type"] == "task_created" and created["task_id"] == b
                cursor = created["position"]
            return await after_reconnect(b, cursor)

        async def after_reconnect(b: str, cursor: int) -> list[dict[str, Any]]:
            await asyncio.to_thread(client.post, f"/api/tasks/{a}/steps/1/start")
            await asyncio.to_thread(client.post, f"/api/tasks/{b}/steps/1/start")
            async with websockets.connect(ws_url(server, f"/ws/tasks?after={cursor}")) as ws:
                return [await recv(ws) for _ in range(4)]

        got = asyncio.run(scenario())
    assert [(m["type"]) for m in got] == ["step_started", "progress", "step_started", "progress"]
    assert got[0]["task_id"] == a and got[2]["task_id"] != a


def test_commands_over_the_socket_are_acknowledged(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        tid = client.post("/api/tasks", json=CRM).json()["task_id"]
        client.post(f"/api/tasks/{tid}/steps/1/start")

        async def scenario() -> list[dict[str, Any]]:
            out = []
            async with websockets.connect(ws_url(server, f"/ws/tasks/{tid}")) as ws:
                await recv(ws)  # snapshot
                await ws.send(json.dumps({"type": "pause", "id": "c1"}))
                out += [await recv(ws), await recv(ws)]
                await ws.send(json.dumps({"type": "pause", "id": "c1"}))  # a retry: applied once
                out.append(await recv(ws))
                await ws.send(json.dumps({"type": "resume", "id": "c2"}))
                out += [await recv(ws), await recv(ws)]
                await ws.send(json.dumps({"type": "ping", "id": "p"}))
                out.append(await recv(ws))
            return out

        got = asyncio.run(scenario())
        by_type = [m["type"] for m in got]
        assert sorted(by_type[:2]) == ["ack", "paused"]
        ack = next(m for m in got[:2] if m["type"] == "ack")
        assert ack["id"] == "c1" and ack["status"] == "paused" and ack["command"] == "pause"
        assert got[2]["type"] == "ack" and got[2]["seq"] == ack["seq"]
        assert sorted(by_type[3:5]) == ["ack", "resumed"]
        assert got[5] == {"type": "pong", "id": "p"}
        events = client.get(f"/api/tasks/{tid}/events").json()["events"]
        assert [e["type"] for e in events][-2:] == ["Paused", "Resumed"]


def test_live_progress_messages_carry_the_time_estimate(server: ServerProcess) -> None:
    """One command at a time, each waited for: every progress message is the last of its burst and carries
    the estimate as of its own `at`."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        plan = {"title": "Import", "steps": [{"name": f"Load part {n}"} for n in (1, 2, 3, 4)]}
        tid = client.post("/api/tasks", json=plan).json()["task_id"]
        base = f"/api/tasks/{tid}/steps"
        commands = [(f"{base}/1/start", None), (f"{base}/1/progress", {"percent": 40})]
        commands += [(f"{base}/1/complete", None)]
        commands += [(f"{base}/{n}/{verb}", None) for n in (2, 3, 4) for verb in ("start", "complete")]

        async def scenario() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            async with websockets.connect(ws_url(server, f"/ws/tasks/{tid}")) as ws:
                await recv(ws)  # snapshot
                for path, body in commands:
                    answer = (await asyncio.to_thread(client.post, path, json=body)).json()
                    assert "version" in answer, answer
                    while not out or out[-1]["seq"] < answer["version"] or out[-1]["part"] < out[-1]["parts"]:
                        out.append(await recv(ws))
            return out

        got = asyncio.run(scenario())

    ticks = [m for m in got if m["type"] == "progress"]
    running, done = ticks[:-1], ticks[-1]
    assert [m["percent"] for m in running] == [0, 10, 25, 25, 50, 50, 75, 75]
    for m in running:
        assert isinstance(m["eta_seconds"], int) and m["eta_seconds"] > 0, m
        assert m["eta_low_seconds"] <= m["eta_seconds"] <= m["eta_high_seconds"], m
        assert m["eta_confidence"] in ("low", "medium", "high"), m
        assert m["needs_attention"] is False, m
    assert running[0]["eta_confidence"] == "low"  # nothing finished, no history: a prior only
    # With nothing known, four steps of about a minute each; once steps finish in milliseconds, the task's
    # own speed says the rest is quick.
    assert running[0]["eta_seconds"] >= 60 > running[-1]["eta_seconds"], [m["eta_seconds"] for m in running]
    assert done["percent"] == 100 and done["eta_seconds"] == 1  # all steps done, the task not yet
    assert got[-1]["type"] == "task_complete"


def test_bad_frames_get_typed_errors_and_change_nothing(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        tid = client.post("/api/tasks", json=CRM).json()["task_id"]
        before = len(client.get(f"/api/tasks/{tid}/events").json()["events"])

        async def scenario() -> tuple[list[dict[str, Any]], int | None]:
            out = []
            async with websockets.connect(ws_url(server, f"/ws/tasks/{tid}")) as ws:
                await recv(ws)
                for frame in [
                    "not json",
                    json.dumps({"type": "explode"}),
                    json.dumps({"type": "pause", "x": 1}),
                    json.dumps({"type": "resume"}),
                    json.dumps({"type": "approve", "step": 99}),
                    '{"type": "pause", "id": "a", "id": "b"}',  # a repeated key: refused, not last-wins
                ]:
                    await ws.send(frame)
                    out.append(await recv(ws))
                for _ in range(25):  # a flood of garbage closes the socket with a policy violation
                    await ws.send("garbage")
                _, code = await until_closed(ws)
                return out, code

        errors, code = asyncio.run(scenario())
        assert [e["type"] for e in errors] == ["error"] * 6
        assert [e["status"] for e in errors] == [400, 422, 422, 409, 404, 400]
        assert errors[3]["code"] == "illegal-transition"
        assert errors[5]["code"] == "malformed-json" and "repeats the key 'id'" in errors[5]["detail"]
        assert code == 1008
        assert len(client.get(f"/api/tasks/{tid}/events").json()["events"]) == before


def test_bad_cursors_unknown_tasks_and_resync(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        tid = client.post("/api/tasks", json=CRM).json()["task_id"]

        async def close_code(path: str) -> tuple[list[dict[str, Any]], int | None]:
            async with websockets.connect(ws_url(server, path)) as ws:
                return await until_closed(ws)

        got, code = asyncio.run(close_code(f"/ws/tasks/{tid}?after=-1"))
        assert code == 4400 and got[0]["code"] == "bad-cursor"
        got, code = asyncio.run(close_code("/ws/tasks/00000000-0000-4000-8000-000000000000"))
        assert code == 4404 and got[0]["code"] == "task-not-found"

        async def ahead() -> list[dict[str, Any]]:
            async with websockets.connect(ws_url(server, f"/ws/tasks/{tid}?after=999")) as ws:
                return [await recv(ws), await recv(ws)]

        resync, snap = asyncio.run(ahead())
        assert resync["type"] == "resync_required" and snap["type"] == "snapshot" and snap["seq"] == 1


def test_idle_clients_are_closed(tmp_path: Path, server_factory: type[ServerProcess]) -> None:
    server = server_factory(
        tmp_path, env={"PROGRESSD_WS_PING_INTERVAL": "0.2", "PROGRESSD_WS_IDLE_TIMEOUT": "1"}
    )
    server.start()
    tid = httpx.post(f"{server.url}/api/tasks", json=CRM).json()["task_id"]

    async def scenario() -> tuple[int, int | None]:
        async with websockets.connect(ws_url(server, f"/ws/tasks/{tid}")) as ws:
            got, code = await until_closed(ws)
            return sum(m["type"] == "ping" for m in got), code

    pings, code = asyncio.run(scenario())
    assert pings >= 2 and code == 4408


@pytest.mark.slow
def test_a_stalled_reader_lags_without_growing_memory_and_misses_no_transition(
    tmp_path: Path, server_factory: type[ServerProcess]
) -> None:
    server = server_factory(tmp_path)
    server.start()
    assert server.proc is not None
    process = psutil.Process(server.proc.pid)
    tid = httpx.post(f"{server.url}/api/tasks", json={"title": "bulk", "steps": [{"name": "a"}]}).json()[
        "task_id"
    ]
    # Another writer process on the same store: the server follows the log, not its own writes.
    app = open_store(Settings(data_dir=tmp_path))

    async def scenario() -> tuple[list[dict[str, Any]], int, int]:
        async with websockets.connect(ws_url(server, f"/ws/tasks/{tid}"), max_queue=4) as ws:
            assert (await recv(ws))["type"] == "snapshot"
            rss_before = process.memory_info().rss
            for round_ in range(20):
                task = app.task(UUID(tid))
                if round_ == 0:
                    task.start_step(1)
                for i in range(1, 500):
                    task.report_progress(1, (i % 99) + 0.5)
                task.log("info", f"round {round_}")
                await asyncio.to_thread(app.save, task)
            await asyncio.sleep(2)  # the server tries to send into a full socket
            rss_after = process.memory_info().rss
            task = app.task(UUID(tid))
            task.complete_step(1)
            await asyncio.to_thread(app.save, task)
            got = []
            while not got or got[-1]["type"] != "task_complete":
                got.append(await recv(ws, limit=30))
            return got, rss_before, rss_after

    got, rss_before, rss_after = asyncio.run(scenario())
    app.close()
    logs = [m for m in got if m["type"] == "log"]
    assert [m["message"] for m in logs] == [f"round {r}" for r in range(20)]
    assert [m["type"] for m in got if m["type"] not in ("progress", "log")] == [
        "step_started",
        "step_complete",
        "task_complete",
    ]
    ticks = sum(m["type"] == "progress" for m in got)
    assert ticks < 20 * 499  # coalesced while lagging
    assert rss_after - rss_before < 64 * 1024 * 1024
