"""WebSocket endpoints: live updates with cursor resume, heartbeats, and commands sent over the socket."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated, Any
from uuid import UUID

import msgspec
from msgspec import Meta, Struct
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway.auth import LOOPBACK_ONLY, Auth, unauthorized
from gateway.problems import Problem, to_problem
from infra.commands import refuse_repeated_keys
from infra.runtime import Runtime
from infra.service import Outcome
from infra.store import TaskNotFound
from infra.streams import Cursor, Streams
from infra.tokens import Principal, hash_token

MAX_FRAME = 64 * 1024
MAX_ERRORS = 20

# Close codes: the 1000s are the protocol's, the 4000s mirror HTTP statuses.
CLOSE_NORMAL = 1000
CLOSE_INTERNAL = 1011
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_IDLE = 4408
CLOSE_MISDIRECTED = 4421
CLOSE_TOO_MANY = 4429
AUTH_SECONDS = 5.0
RECHECK_SECONDS = 2.0  # an open socket's token is looked up again this often: revoked or expired, it closes

# ---- client → server frames --------------------------------------------------------------------------------


class ClientFrame(Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    """Fields every client frame may carry: a correlation id (also its idempotency key) and a task."""

    id: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    task_id: str | None = None


class Ping(ClientFrame, tag="ping"):
    pass


class Authenticate(ClientFrame, tag="auth"):
    token: Annotated[str, Meta(min_length=1, max_length=500)]


class Pong(ClientFrame, tag="pong"):
    pass


class Pause(ClientFrame, tag="pause"):
    pass


class Resume(ClientFrame, tag="resume"):
    pass


class Cancel(ClientFrame, tag="cancel"):
    reason: Annotated[str, Meta(max_length=10_000)] | None = None


class Approve(ClientFrame, tag="approve"):
    step: Annotated[int, Meta(ge=1, le=10_000)]
    comment: Annotated[str, Meta(max_length=10_000)] | None = None


class Reject(ClientFrame, tag="reject"):
    step: Annotated[int, Meta(ge=1, le=10_000)]
    comment: Annotated[str, Meta(max_length=10_000)] | None = None


Frame = Ping | Pong | Authenticate | Pause | Resume | Cancel | Approve | Reject
frame_decoder: msgspec.json.Decoder[Frame] = msgspec.json.Decoder(Frame)

# ---- server → client control frames ------------------------------------------------------------------------


class Ack(Struct, tag="ack", tag_field="type", kw_only=True):
    id: str | None
    task_id: str
    command: str
    seq: int
    position: int
    status: str


class Error(Struct, tag="error", tag_field="type", kw_only=True):
    id: str | None
    code: str
    status: int
    detail: str


class ServerPing(Struct, tag="ping", tag_field="type", kw_only=True):
    at: float


class ServerPong(Struct, tag="pong", tag_field="type", kw_only=True):
    id: str | None = None


encode = msgspec.json.Encoder().encode

# ---- the connection ----------------------------------------------------------------------------------------


def _settings(ws: WebSocket) -> tuple[Runtime, Streams]:
    return ws.app.state.runtime, ws.app.state.streams


def _cursor(ws: WebSocket) -> Cursor | None:
    raw = ws.query_params.get("after")
    return None if raw is None else Cursor.parse(raw)


class Connection:
    """One socket: a sender following the stream, a receiver of commands, a heartbeat; one ending ends all."""

    def __init__(self, ws: WebSocket, task_id: UUID | None) -> None:
        self.ws = ws
        self.task_id = task_id
        self.runtime, self.streams = _settings(ws)
        self.auth: Auth = ws.app.state.auth
        self.principal: Principal | None = None
        self.token_key: str | None = None  # the token's hash, to check it again while the socket is open
        self.owner: str | None = None
        self.last_heard = time.monotonic()
        self.errors = 0
        self.send_lock = asyncio.Lock()
        self.ping_interval: float = ws.app.state.ws_ping_interval
        self.idle_timeout: float = ws.app.state.ws_idle_timeout

    async def send(self, text: str | bytes) -> None:
        async with self.send_lock:
            await self.ws.send_text(text if isinstance(text, str) else text.decode())

    async def close(self, code: int, reason: str = "") -> None:
        if self.ws.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.ws.close(code, reason[:120])

    async def refuse(self, code: int, slug: str, status: int, detail: str) -> None:
        if self.ws.application_state is WebSocketState.CONNECTING:
            await self.ws.accept()
        await self.send(encode(Error(id=None, code=slug, status=status, detail=detail)))
        await self.close(code, detail)

    async def authenticate(self) -> Principal | None:
        """Token from the Authorization header, or from a first `auth` frame within a few seconds."""
        if "authorization" in self.ws.headers or await self.auth.is_local():
            token = self.auth.bearer(self.ws)
        else:
            await self.ws.accept()
            try:
                raw = await asyncio.wait_for(self.ws.receive_text(), AUTH_SECONDS)
                frame = frame_decoder.decode(raw)
            except (TimeoutError, msgspec.DecodeError, KeyError):
                return None
            if not isinstance(frame, Authenticate):
                return None
            token = frame.token
        principal = await self.auth.resolve(token)
        if principal.token_id is not None and token:
            self.token_key = hash_token(token)
        return principal

    async def recheck(self, max_age: float | None = None) -> Principal:
        """The socket's principal, checked again (through the token cache): 401 problem once it is revoked or
        expired, or, for local mode's principal, once local mode has ended."""
        assert self.principal is not None
        if self.principal.token_id is None:
            if await self.auth.is_local():
                return self.principal
            raise unauthorized("local mode has ended: an API token is required")
        assert self.token_key is not None
        self.principal = await self.auth.principal_for(self.token_key, max_age)
        return self.principal

    async def guard(self) -> None:
        """Close the socket with 4401 within seconds of its token being revoked or expiring."""
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            try:
                await self.recheck(max_age=RECHECK_SECONDS)
            except Problem as problem:
                if problem.status != 401:
                    continue  # the token store is down: the socket keeps what it was granted
                await self.refuse(CLOSE_UNAUTHORIZED, "unauthorized", 401, problem.detail)
                return
            except Exception:  # a store outage is not the token's fault: look again later
                continue

    async def run(self) -> None:
        if not await self.auth.host_allowed(self.ws.headers):
            await self.refuse(CLOSE_MISDIRECTED, "misdirected-request", 421, LOOPBACK_ONLY)
            return
        if not self.auth.origin_allowed(self.ws.headers):
            await self.refuse(CLOSE_FORBIDDEN, "forbidden-origin", 403, "this Origin may not open a stream")
            return
        try:
            after = _cursor(self.ws)
        except ValueError as exc:
            await self.refuse(CLOSE_BAD_REQUEST, "bad-cursor", 400, str(exc))
            return
        try:
            self.principal = await self.authenticate()
        except Problem:
            self.principal = None
        if self.principal is None:
            await self.refuse(CLOSE_UNAUTHORIZED, "unauthorized", 401, "a valid API token is required")
            return
        self.owner = self.principal.scope
        key = self.principal.token_id or "local"
        if self.auth.sockets.get(key, 0) >= self.runtime.settings.ws_per_token:
            await self.refuse(CLOSE_TOO_MANY, "too-many-streams", 429, "too many open streams for this token")
            return
        self.auth.sockets[key] = self.auth.sockets.get(key, 0) + 1
        gauge = self.runtime.metrics.websockets
        gauge.inc()
        try:
            await self.serve(after)
        finally:
            self.auth.sockets[key] -= 1
            gauge.dec()

    async def serve(self, after: Cursor | None) -> None:
        if self.ws.application_state is WebSocketState.CONNECTING:
            await self.ws.accept()
        tasks = [
            asyncio.create_task(self.sender(after), name="ws-sender"),
            asyncio.create_task(self.receiver(), name="ws-receiver"),
            asyncio.create_task(self.heartbeat(), name="ws-heartbeat"),
            asyncio.create_task(self.guard(), name="ws-guard"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                    await task
        await self.close(CLOSE_NORMAL)

    async def sender(self, after: Cursor | None) -> None:
        try:
            cursor = after or Cursor(0)
            if self.task_id is not None:
                if after is None:
                    snap = await self.streams.task_snapshot(self.task_id, self.owner)
                    cursor.value = snap.seq
                    await self.send(encode(snap))
                frames = self.streams.task_frames(self.task_id, self.owner, cursor)
            else:
                seen: dict[str, int] = {}
                if after is None:
                    cursor.value, snapshots = await self.streams.all_snapshots(self.owner, seen)
                    for frame in snapshots:
                        await self.send(frame)
                frames = self.streams.all_frames(self.owner, cursor, seen)
            async for batch in frames:
                for frame in batch:
                    await self.send(frame)
        except TaskNotFound:
            await self.send(encode(Error(id=None, code="task-not-found", status=404, detail="no such task")))
            await self.close(CLOSE_NOT_FOUND, "task not found")

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            if time.monotonic() - self.last_heard > self.idle_timeout:
                await self.close(CLOSE_IDLE, "idle timeout")
                return
            await self.send(encode(ServerPing(at=time.time())))

    async def receiver(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            self.last_heard = time.monotonic()
            raw: str | bytes | None = message.get("text") or message.get("bytes")
            if raw is None:
                continue
            if len(raw) > MAX_FRAME:
                await self.close(CLOSE_TOO_BIG, "frame over 64 KiB")
                return
            if not await self.handle(raw):
                await self.close(CLOSE_POLICY, "too many bad frames")
                return

    async def handle(self, raw: str | bytes) -> bool:
        """Answer one client frame; False when the client has sent too many bad ones."""
        frame_id: str | None = None
        try:
            if isinstance(raw, bytes):
                raise Problem(400, "binary-frame", "frames must be JSON text frames, not binary")
            frame = frame_decoder.decode(raw)
            frame_id = frame.id
            match frame:
                case Ping():
                    await self.send(encode(ServerPong(id=frame.id)))
                case Pong() | Authenticate():
                    pass
                case _:
                    refuse_repeated_keys(raw)  # as over HTTP and NATS: no silent last-wins
                    await self.command(frame)
            return True
        except Exception as exc:
            problem = to_problem(exc)
            if isinstance(exc, ValueError) and problem.status == 500:
                problem.status, problem.slug, problem.detail = 422, "invalid-frame", str(exc)
            error = Error(id=frame_id, code=problem.slug, status=problem.status, detail=problem.detail)
            await self.send(encode(error))
            if problem.status >= 500:
                await self.close(CLOSE_INTERNAL, "internal error")
                return False
            if problem.status == 401:  # the token was revoked or has expired since the socket opened
                await self.close(CLOSE_UNAUTHORIZED, problem.detail)
                return False
            if problem.status == 429:  # a busy client, not a broken one: its frames were fine
                return True
            self.errors += 1
            return self.errors < MAX_ERRORS

    async def command(self, frame: Frame) -> None:
        name = type(frame).__name__.lower()
        principal = await self.recheck()  # a revoked or expired token sends nothing more
        if not principal.may(name):
            raise Problem(403, "forbidden", f"a {principal.role} token may not {name}")
        self.auth.limit(principal, self.ws.client.host if self.ws.client else "?")  # as over HTTP
        target = self.task_id
        if frame.task_id is not None:
            try:
                target = UUID(frame.task_id)
            except ValueError:
                raise TaskNotFound(frame.task_id) from None
            if self.task_id is not None and target != self.task_id:
                raise TaskNotFound(frame.task_id)
        if target is None:
            raise ValueError("task_id is required on /ws/tasks")
        args: dict[str, Any] = {
            k: v
            for k, v in msgspec.structs.asdict(frame).items()
            if k not in ("id", "task_id") and v is not None
        }
        if "step" in args:
            args["order"] = args.pop("step")
        key = f"ws:{frame.id}" if frame.id else None
        outcome: Outcome = await self.runtime.service.command(target, self.owner, name, args, key)
        await self.send(
            encode(
                Ack(
                    id=frame.id,
                    task_id=str(target),
                    command=name,
                    seq=outcome.version,
                    position=outcome.position,
                    status=outcome.view["status"],
                )
            )
        )


async def task_stream(ws: WebSocket) -> None:
    try:
        task_id = UUID(ws.path_params["task_id"])
    except ValueError:
        await ws.accept()
        await ws.send_text(
            encode(Error(id=None, code="task-not-found", status=404, detail="no such task")).decode()
        )
        await ws.close(CLOSE_NOT_FOUND, "task not found")
        return
    await Connection(ws, task_id).run()


async def all_stream(ws: WebSocket) -> None:
    await Connection(ws, None).run()


WS_ROUTES = [
    WebSocketRoute("/ws/tasks", all_stream),
    WebSocketRoute("/ws/tasks/{task_id}", task_stream),
]
