"""Operator signals: /metrics, request ids, and structured JSON logs."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.runtime import Runtime

access = structlog.get_logger("progressd.access")


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    """structlog for our lines and the standard library's (uvicorn's); JSON unless on a terminal."""
    as_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
    # JSON lines carry an error's traceback as text under "exception"; the console renderer prints its own.
    tracebacks: list[structlog.typing.Processor] = [structlog.processors.format_exc_info] if as_json else []
    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tracebacks, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # replaced by our access line with a request id


class RequestIds:
    """Gives every HTTP request an id (its X-Request-Id, or a new one), logs one access line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 100 and incoming.isprintable() else uuid.uuid4().hex
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                # A WebSocket's messages pass through untouched: no wrapper on every frame it sends.
                await self.app(scope, receive, send_with_id if scope["type"] == "http" else send)
            finally:
                access.info(
                    "request" if scope["type"] == "http" else "websocket",
                    method=scope.get("method", "WS"),
                    path=scope["path"],  # never the query string: it is the client's business
                    status=status,
                    ms=round((time.perf_counter() - started) * 1000, 2),
                )


async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    body = await asyncio.to_thread(generate_latest, runtime.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


OPS_ROUTES = [Route("/metrics", metrics)]
