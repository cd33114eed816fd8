"""Attacks on the gateway's edge against a real server: oversized heads, token floods, revoked and expired
tokens on open sockets, cross-site requests and foreign Host names in local mode."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from infra.settings import Settings
from infra.tokens import Role, TokenStore
from tests.e2e.conftest import ServerProcess
from tests.faults.harness import FIGURES, assert_problem

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def raw_exchange(server: ServerProcess, head: bytes) -> bytes:
    """Send raw bytes; return what the server answers up to the end of its response head."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        with contextlib.suppress(OSError):  # the server may close while the head is still going out
            s.sendall(head)
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except OSError:
            pass
    return answer


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def make_token(data_dir: Path, role: Role = Role.OWNER, owner: str = "alice") -> tuple[str, str]:
    store = TokenStore(Settings(data_dir=data_dir))
    try:
        return store.create(role, owner)
    finally:
        store.db.datastore.close()


@pytest.fixture
def token_server(server_factory: type[ServerProcess], tmp_path: Path) -> tuple[ServerProcess, str]:
    """A server in token mode, with one owner token."""
    _, token = make_token(tmp_path)
    server = server_factory(tmp_path)
    server.start()
    return server, token


# ---- item: header and token sizes -------------------------------------------------------------------------


def test_a_request_head_over_64_kib_gets_431(token_server: tuple[ServerProcess, str]) -> None:
    """A 200 KB header, 20,000 headers and a 200 KB WebSocket upgrade head get a 431 problem from the parser;
    a 60 KB header is still served."""
    server, _ = token_server
    start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    heads = {
        "200 KB header": start + b"X-Pad: " + b"a" * 200_000 + b"\r\n\r\n",
        "20,000 headers": start + b"".join(b"X-H%d: v\r\n" % i for i in range(20_000)) + b"\r\n",
        "200 KB upgrade": b"GET /ws/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"X-Pad: " + b"a" * 200_000 + b"\r\n\r\n",
    }
    seen = {}
    for name, head in heads.items():
        answer = raw_exchange(server, head)
        status_line, _, rest = answer.partition(b"\r\n")
        seen[name] = status_line.decode()
        assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large", (name, answer[:300])
        assert b"content-type: application/problem+json" in rest
        assert b'"type":"/problems/headers-too-large"' in rest
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/healthz", headers={"X-Pad": "a" * 60_000}).status_code == 200
    FIGURES["oversized heads"] = seen


def test_a_flood_of_huge_unknown_tokens_does_not_grow_memory(token_server: tuple[ServerProcess, str]) -> None:
    """300 requests with a 1 MB random bearer token, then 300 with a 60 KB one (under the header limit):
    refused (431, then 401 before any lookup), and the server's memory stays where it was."""
    server, token = token_server
    assert server.proc is not None
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
        before = rss_mb(server.proc.pid)
        codes: dict[int, int] = {}
        for size in (1_000_000, 60_000):
            for _ in range(300):
                bearer = "Bearer " + secrets.token_urlsafe(size)[:size]
                answer = client.get("/api/tasks", headers={"Authorization": bearer})
                codes[answer.status_code] = codes.get(answer.status_code, 0) + 1
        long_token = client.get("/api/tasks", headers={"Authorization": "Bearer " + "x" * 513})
        assert_problem(long_token, 401, "unauthorized")
        after = rss_mb(server.proc.pid)
        assert client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert codes == {431: 300, 401: 300}, codes
    FIGURES["token flood"] = {"rss_before_mb": round(before), "rss_after_mb": round(after), "codes": codes}
    assert after - before < 50, f"RSS grew from {before:.0f} to {after:.0f} MB"


# ---- item: revoked tokens on open sockets -----------------------------------------------------------------


def ws_url(server: ServerProcess, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


async def closed_with(ws: Any, limit: float = 10.0) -> tuple[int | None, list[dict[str, Any]]]:
    """Read until the server closes (within `limit` seconds); its close code and the messages read."""
    seen: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(limit):
            while True:
                seen.append(json.loads(await ws.recv()))
    except websockets.ConnectionClosed as closed:
        return (closed.rcvd.code if closed.rcvd else None), seen


def cli(server: ServerProcess, *args: str) -> str:
    env = {**server.env(), "COLUMNS": "200"}  # tables in full, not cut to 80 columns
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_revoked_tokens_sockets_close_4401(server_factory: type[ServerProcess], tmp_path: Path) -> None:
    """Sockets opened with a token (by header and by `auth` frame) close with 4401 within 5 s of
    `progressd token revoke`, as HTTP starts answering 401; another token's socket stays open."""
    token_id, token = make_token(tmp_path)
    _, other = make_token(tmp_path, owner="bob")
    server = server_factory(tmp_path)
    server.start()
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, timeout=10, headers=auth) as client:
        tid = client.post("/api/tasks", json={"title": "t", "steps": [{"name": "a"}]}).json()["task_id"]

    async def scenario() -> dict[str, Any]:
        auth = {"Authorization": f"Bearer {token}"}
        by_header = await websockets.connect(ws_url(server, f"/ws/tasks/{tid}"), additional_headers=auth)
        by_frame = await websockets.connect(ws_url(server, "/ws/tasks"))
        await by_frame.send(json.dumps({"type": "auth", "token": token}))
        bobs = await websockets.connect(
            ws_url(server, "/ws/tasks"), additional_headers={"Authorization": f"Bearer {other}"}
        )
        assert json.loads(await by_header.recv())["type"] == "snapshot"
        await asyncio.to_thread(cli, server, "token", "revoke", token_id)
        revoked_at = time.monotonic()
        results = await asyncio.gather(closed_with(by_header), closed_with(by_frame))
        took = round(time.monotonic() - revoked_at, 1)
        await bobs.send(json.dumps({"type": "ping", "id": "still"}))
        while (pong := json.loads(await asyncio.wait_for(bobs.recv(), 10)))["type"] != "pong":
            pass
        await bobs.close()
        return {"codes": [code for code, _ in results], "seconds": took, "errors": results, "pong": pong}

    seen = asyncio.run(scenario())
    assert seen["codes"] == [4401, 4401], seen
    for _, messages in seen["errors"]:
        assert messages[-1]["code"] == "unauthorized" and messages[-1]["status"] == 401
    assert seen["pong"]["id"] == "still"
    with httpx.Client(base_url=server.url, timeout=10) as client:
        answer = client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
        assert_problem(answer, 401, "unauthorized")
    FIGURES["revoked token sockets"] = {"close_codes": seen["codes"], "closed_after_s": seen["seconds"]}


# ---- item: local mode against cross-site requests and foreign Host names ---------------------------------

EVIL = "https://evil.example"


@pytest.fixture
def local_server(server_factory: type[ServerProcess], tmp_path: Path) -> ServerProcess:
    """A server in local mode (no tokens), as `make run` starts it."""
    server = server_factory(tmp_path)
    server.start()
    return server


def test_local_mode_refuses_what_a_browser_sends_cross_site(local_server: ServerProcess) -> None:
    """A foreign page's fetch or form (text/plain, form-encoded) gets 403 and changes nothing; a browser's
    same-origin body must be JSON (415 otherwise); curl, the SDK and scripts (no Origin) keep working,
    including the README's `curl -d '{…}'`, which sends a form content type; a link followed from another
    site still opens the page."""
    server = local_server
    own = f"http://127.0.0.1:{server.port}"
    plan = json.dumps({"title": "t", "steps": [{"name": "a"}, {"name": "b"}]})
    form = {"content-type": "application/x-www-form-urlencoded"}
    text = {"content-type": "text/plain"}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        tid = client.post("/api/tasks", content=plan, headers=form).json()["task_id"]  # curl -d: no Origin
        assert client.post(f"/api/tasks/{tid}/steps/1/start", content=b"").status_code == 200
        before = client.get(f"/api/tasks/{tid}/events").json()["events"]
        head = client.get("/readyz").json()["head"]
        attacks = {
            "chat text/plain": ("/api/chat", json.dumps({"message": "cancel t"}), {**text, "origin": EVIL}),
            "webhook form text/plain": ("/api/chat/webhook", "text=cancel t", {**text, "origin": EVIL}),
            "create form-encoded": ("/api/tasks", plan, {**form, "origin": EVIL}),
            "cancel, Origin null": (f"/api/tasks/{tid}/cancel", "", {"origin": "null"}),
            "cancel, Sec-Fetch-Site only": (f"/api/tasks/{tid}/cancel", "", {"sec-fetch-site": "cross-site"}),
            "pause JSON from another port": (
                f"/api/tasks/{tid}/pause",
                "{}",
                {"content-type": "application/json", "origin": f"http://127.0.0.1:{server.port + 1}"},
            ),
        }
        statuses: dict[str, int] = {}
        for name, (path, body, headers) in attacks.items():
            answer = client.post(path, content=body, headers=headers)
            statuses[name] = answer.status_code
            assert_problem(answer, 403, "cross-origin")
        same_origin_text = client.post(
            f"/api/tasks/{tid}/pause", content="{}", headers={**text, "origin": own}
        )
        assert_problem(same_origin_text, 415, "unsupported-media-type")
        assert client.get(f"/api/tasks/{tid}/events").json()["events"] == before
        assert client.get("/readyz").json()["head"] == head
        # what keeps working
        page = client.get(
            f"/tasks/{tid}", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"}
        )
        assert page.status_code == 200
        paused = client.post(
            f"/api/tasks/{tid}/pause",
            content="{}",
            headers={"content-type": "application/json", "origin": own},
        )
        assert paused.status_code == 200, paused.text
        assert client.post(f"/api/tasks/{tid}/steps/1/progress", content='{"percent": 40}', headers=form)
    FIGURES["cross-site in local mode"] = statuses


def test_local_mode_serves_only_loopback_host_names(local_server: ServerProcess) -> None:
    """`Host: attacker.example` (a DNS-rebinding page) gets 421 over HTTP and a 4421 close on a WebSocket;
    localhost, 127.0.0.0/8 and [::1] with or without a port are served."""
    server = local_server
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for host in ("attacker.example", f"attacker.example:{server.port}", "127.0.0.1.nip.io"):
            assert_problem(client.get("/api/tasks", headers={"host": host}), 421, "misdirected-request")
        rebound = client.post(
            "/api/tasks",
            json={"title": "t", "steps": [{"name": "a"}]},
            headers={
                "host": f"attacker.example:{server.port}",
                "origin": f"http://attacker.example:{server.port}",
            },
        )
        assert_problem(rebound, 421, "misdirected-request")
        assert client.get("/api/tasks").json()["tasks"] == []
        for host in (
            f"localhost:{server.port}",
            "localhost",
            f"127.0.0.2:{server.port}",
            f"[::1]:{server.port}",
        ):
            assert client.get("/api/tasks", headers={"host": host}).status_code == 200, host

    async def socket_as(host: str) -> tuple[int | None, list[dict[str, Any]]]:
        # The URL names the host (so the handshake's Host header does); the connection goes to loopback.
        ws = await websockets.connect(
            f"ws://{host}:{server.port}/ws/tasks", host="127.0.0.1", port=server.port
        )
        return await closed_with(ws, 5.0)

    code, messages = asyncio.run(socket_as("attacker.example"))
    assert code == 4421 and messages[-1]["code"] == "misdirected-request", (code, messages)

    async def own_socket() -> str:
        async with websockets.connect(ws_url(server, "/ws/tasks")) as ws:
            await ws.send(json.dumps({"type": "ping", "id": "p"}))
            while (message := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "pong":
                pass
            return str(message["type"])

    assert asyncio.run(own_socket()) == "pong"
    FIGURES["foreign Host in local mode"] = {"http": 421, "websocket_close": code}


# ---- item: /metrics and /readyz with tokens ---------------------------------------------------------------


def test_metrics_and_readyz_need_an_operator_once_tokens_exist(
    token_server: tuple[ServerProcess, str],
) -> None:
    """With tokens: /metrics and /readyz answer 401 without a token and 403 to an owner's, 200 to
    PROGRESSD_METRICS_TOKEN (as Prometheus sends it) and to an admin token; /healthz stays open."""
    server, owner = token_server
    _, admin = make_token(server.data_dir, Role.ADMIN, "ops")
    seen: dict[str, dict[str, int]] = {}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for path in ("/metrics", "/readyz"):
            answers = {
                "none": client.get(path),
                "owner": client.get(path, headers={"Authorization": f"Bearer {owner}"}),
                "wrong": client.get(path, headers={"Authorization": f"Bearer {server.metrics_token}x"}),
                "metrics": client.get(path, headers={"Authorization": f"Bearer {server.metrics_token}"}),
                "admin": client.get(path, headers={"Authorization": f"Bearer {admin}"}),
            }
            seen[path] = {who: answer.status_code for who, answer in answers.items()}
            assert_problem(answers["none"], 401, "unauthorized")
            assert_problem(answers["owner"], 403, "forbidden")
            assert_problem(answers["wrong"], 401, "unauthorized")
            assert answers["metrics"].status_code == answers["admin"].status_code == 200
        assert (
            "progressd_commands_total"
            in client.get("/metrics", headers={"Authorization": f"Bearer {server.metrics_token}"}).text
        )
        assert client.get("/healthz").status_code == 200
    FIGURES["operator endpoints with tokens"] = seen


# ---- item: tokens that expire -----------------------------------------------------------------------------


def test_an_expiring_token_stops_working_on_http_and_open_sockets(
    token_server: tuple[ServerProcess, str],
) -> None:
    """`progressd token create --expires-in 15s`: works at once; once it has expired, its open socket closes
    with 4401 and HTTP answers 401, while a token without expiry goes on; `token list` shows the expiry."""
    server, lasting = token_server
    out = cli(server, "token", "create", "--role", "owner", "--owner", "dana", "--expires-in", "15s")
    token = out.strip().splitlines()[-1]
    created = time.monotonic()

    async def scenario() -> tuple[int | None, list[dict[str, Any]], float]:
        async with websockets.connect(
            ws_url(server, "/ws/tasks"), additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            await ws.send(json.dumps({"type": "ping", "id": "p"}))
            code, seen = await closed_with(ws, 40.0)
            return code, seen, time.monotonic() - created

    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        code, seen, after = asyncio.run(scenario())
        assert code == 4401, (code, seen)
        assert seen[0]["type"] == "pong"  # it worked before it expired
        assert seen[-1]["code"] == "unauthorized" and "expired" in seen[-1]["detail"]
        answer = client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
        assert "expired" in assert_problem(answer, 401, "unauthorized")["detail"]
        assert client.get("/api/tasks", headers={"Authorization": f"Bearer {lasting}"}).status_code == 200
    row = next(line for line in cli(server, "token", "list").splitlines() if "dana" in line)
    assert row.count("+00:00") == 2, row  # created and expires
    FIGURES["expiring token"] = {
        "socket_close": code,
        "closed_s_after_create": round(after, 1),
        "lifetime_s": 15,
    }
