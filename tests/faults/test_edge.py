"""Attacks on the gateway's edge against a real server: oversized heads, token floods, revoked and expired
tokens on open sockets, cross-site requests and foreign Host names in local mode."""

from __future__ import annotations

import contextlib
import secrets
import socket
from pathlib import Path

import httpx
import pytest

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
