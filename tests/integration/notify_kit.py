"""Real servers on loopback for the chat and notification tests, and an app with those routes and the worker.

* `Receiver`: an HTTP server (chat webhooks, ntfy, Web Push endpoints) that records every request, processes
  each dedupe key once (as a well-behaved webhook receiver does), and can answer scripted statuses or hold a
  request to let a test kill the sender mid-send.
* `SmtpSink`: an aiosmtpd SMTP server that keeps every message it accepted.
* `Browser`: a push subscriber with its own P-256 key and auth secret, which decrypts what it receives.
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import json
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece  # type: ignore[import-untyped]
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette

from gateway.app import create_app
from infra.notifyconfig import NotifySettings
from infra.settings import Settings


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def app_with_notifications(settings: Settings, config: NotifySettings | None) -> Starlette:
    """The real app, with its delivery worker configured to send to the test's servers."""
    return create_app(settings, notify=config)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records POSTs; processes each X-Progressd-Dedupe key once; scripted statuses; can hold a request.

    `by_kind["task_failed"] = deque([503, 200])` answers that kind's requests in turn (the last answer
    repeats), `by_path` the same per path; `statuses` answers any other request in turn; otherwise 200
    (201 for /push/).
    """

    requests: list[Seen] = field(default_factory=list)
    processed: list[str] = field(default_factory=list)
    statuses: deque[int] = field(default_factory=deque)
    by_kind: dict[str, deque[int]] = field(default_factory=dict)  # scripted answers per notification kind
    by_path: dict[str, deque[int]] = field(default_factory=dict)  # … and per path (push carries no key)
    hold_at: int | None = None  # hold the request with this number (1-based) until `release`
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver.lock:
                    receiver.requests.append(seen)
                    number = len(receiver.requests)
                    key = seen.headers.get("x-progressd-dedupe")
                    kind = key.split(":")[2] if key and key.count(":") == 3 else ""
                    script = receiver.by_kind.get(kind) or receiver.by_path.get(self.path)
                    if script:
                        status = script.popleft() if len(script) > 1 else script[0]  # the last one repeats
                    else:
                        status = receiver.statuses.popleft() if receiver.statuses else 0
                    if not status:
                        status = 201 if self.path.startswith("/push/") else 200
                    if status < 300 and key and key not in receiver.processed:
                        receiver.processed.append(key)  # the side effect happens once per key
                if number == receiver.hold_at:
                    receiver.holding.set()
                    receiver.release.wait(10)
                with contextlib.suppress(OSError):
                    self.send_response(status)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def on(self, prefix: str) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SmtpSink:
    """An SMTP server on loopback; `messages` are the parsed emails it accepted."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Browser:
    """A push subscriber: its keys, its subscription JSON, and decryption of what the push service got."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)

    def subscription(self) -> dict[str, Any]:
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64(public), "auth": b64(self.auth)},
        }

    def decrypt(self, body: bytes) -> Any:
        plain = http_ece.decrypt(body, private_key=self.key, auth_secret=self.auth, version="aes128gcm")
        return json.loads(plain)
