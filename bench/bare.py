"""Bare Starlette apps the benchmarks compare against, served by the same uvicorn settings as the gateway.

* `http_app`: any JSON POST is decoded and answered with a small JSON body (the load generator's ceiling).
* `ws_app`: WebSockets on `/ws` (and `/ws/{anything}`) join one set; `POST /broadcast` with a JSON list of
  text frames sends each frame to every connected socket (a task per socket), then answers how many.
"""

from __future__ import annotations

import asyncio
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def echo(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({"ok": True, "got": body, "path": request.url.path})


http_app = Starlette(
    routes=[Route("/healthz", healthz), Route("/{path:path}", echo, methods=["POST"])],
)

sockets: set[WebSocket] = set()


async def subscriber(ws: WebSocket) -> None:
    await ws.accept()
    sockets.add(ws)
    try:
        while True:
            await ws.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        sockets.discard(ws)


async def broadcast(request: Request) -> JSONResponse:
    """Send every frame to every socket: one sending task per socket (as a broadcaster with a queue per
    subscriber does), so one slow socket does not hold up the others."""
    frames: list[str] = json.loads(await request.body())

    async def send_all(ws: WebSocket) -> int:
        for frame in frames:
            await ws.send_text(frame)
        return len(frames)

    sent = await asyncio.gather(*(send_all(ws) for ws in list(sockets)), return_exceptions=True)
    return JSONResponse({"sent": sum(n for n in sent if isinstance(n, int)), "sockets": len(sockets)})


async def count(request: Request) -> JSONResponse:
    return JSONResponse({"sockets": len(sockets)})


ws_app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/broadcast", broadcast, methods=["POST"]),
        Route("/count", count),
        WebSocketRoute("/ws", subscriber),
        WebSocketRoute("/ws/{rest:path}", subscriber),
    ]
)
