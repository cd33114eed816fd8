"""A bug's 500 on a real uvicorn server: a problem+json that says it closes the keep-alive connection."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import Response

from gateway.app import create_app
from infra.settings import Settings
from tests.e2e.conftest import free_port


async def boom(request: Request) -> Response:
    raise RuntimeError("a bug")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The real app under a real uvicorn, with one extra route that fails like a bug would."""
    app = create_app(Settings(data_dir=tmp_path))
    app.add_route("/boom", boom)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def test_a_500_says_connection_close_and_does_close(served: str) -> None:
    """uvicorn closes the connection after an unexpected error; the answer says so (it did not, and a
    keep-alive client met a dropped connection under its next request)."""
    with httpx.Client(base_url=served, timeout=10) as client:
        response = client.get("/boom")
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "/problems/internal"
        assert response.headers.get("connection") == "close"
        assert client.get("/healthz").status_code == 200  # a new connection, not a reset one

    host, port = served.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"GET /boom HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while chunk := raw.recv(65536):  # the server ends the connection: recv returns b""
            received += chunk
    head = received.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 500") and b"\r\nconnection: close" in head


def test_an_answered_problem_keeps_the_connection(served: str) -> None:
    """Expected errors (here a 404) leave the keep-alive connection open: only a 500 closes it."""
    host, port = served.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        pending = b""
        for _ in range(2):
            raw.sendall(b"GET /api/tasks/nope/progress HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            while b"\r\n\r\n" not in pending:
                pending += raw.recv(65536)
            head, pending = pending.split(b"\r\n\r\n", 1)
            head = head.lower()
            assert head.startswith(b"http/1.1 404") and b"connection: close" not in head
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(pending) < length:
                pending += raw.recv(65536)
            pending = pending[length:]
