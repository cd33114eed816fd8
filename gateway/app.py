"""The Starlette application: routes, error handlers and the lifespan that opens and closes everything."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from gateway.auth import Auth, AuthError
from gateway.chat import CHAT_ROUTES
from gateway.middleware import AuthMiddleware, EdgeGuard, SecurityHeaders
from gateway.notify_routes import NOTIFY_ROUTES, notifier_lifespan
from gateway.openapi import OPENAPI_ROUTES
from gateway.ops import OPS_ROUTES, RequestIds
from gateway.pages import PAGE_ROUTES
from gateway.problems import EXPECTED_ERRORS, Problem, handle_exception, problem_response
from gateway.routes import ROUTES
from gateway.ws import WS_ROUTES
from infra.demo import DemoWorker
from infra.natscmd import NatsCommands
from infra.notifyconfig import NotifySettings
from infra.relay import Relay, Subjects
from infra.runtime import Runtime
from infra.settings import Settings
from infra.streams import Streams
from infra.tail import LogTail
from infra.tokens import TokenStore
from infra.wakeup import WakeListener

log = structlog.get_logger(__name__)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    problem = Problem(exc.status_code, slug, str(exc.detail))
    if exc.headers:
        problem.headers.update(exc.headers)
    return problem_response(problem, request.url.path)


def public_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.port}"


def create_app(
    settings: Settings,
    *,
    demo: bool = False,
    project: bool = True,
    relay: bool = True,
    notify: NotifySettings | None = None,
) -> Starlette:
    """Build the app; nothing is opened until the lifespan starts."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await asyncio.to_thread(Runtime, settings, project=project)
        try:
            app.state.auth = Auth(settings, await asyncio.to_thread(TokenStore, settings))
        except AuthError as exc:
            log.error("auth_refused", detail=str(exc))
            await asyncio.to_thread(runtime.close)
            raise
        runtime.start()
        tail = LogTail(runtime.app, eta=runtime.read.eta_as_of_update, max_bytes=settings.tail_bytes)
        runtime.metrics.probe(
            "progressd_tail_bytes",
            "Memory held by the shared log tail's entries (bounded by PROGRESSD_TAIL_BYTES).",
            lambda: [({}, float(tail.bytes))],
        )
        runtime.metrics.probe(
            "progressd_tail_entries", "Events held by the shared log tail.", lambda: [({}, float(tail.size))]
        )
        tail.start(asyncio.get_running_loop())
        runtime.service.on_recorded(tail.offer)  # the events themselves: no read back from the store
        app.state.runtime = runtime
        app.state.tail = tail
        app.state.streams = Streams(runtime, tail)
        app.state.ws_ping_interval = settings.ws_ping_interval
        app.state.ws_idle_timeout = settings.ws_idle_timeout
        nats_parts: list[Relay | NatsCommands | WakeListener] = []
        if settings.nats_url:
            if relay:
                publisher = Relay(runtime.app, settings)
                runtime.service.on_saved(publisher.wake)
                nats_parts.append(publisher)
                runtime.metrics.probe(
                    "progressd_nats_relay_lag_events",
                    "Events in the log not yet acknowledged by JetStream.",
                    lambda: [({}, float(publisher.lag))],
                )
            nats_parts.append(
                NatsCommands(
                    runtime.service,
                    settings,
                    settle=runtime.settle,
                    enrich=runtime.with_update_eta,
                    view=runtime.progress,
                )
            )
            nats_parts.append(WakeListener(settings.nats_url, tail.wake, Subjects(settings.nats_prefix)))
            for part in nats_parts:
                await part.start()
        demo_task: asyncio.Task[None] | None = None
        if demo:
            worker = DemoWorker(runtime.service, settings.local_owner, settings.demo_step_seconds)
            task_id = await worker.create()
            app.state.demo_task_id = task_id
            base = f"http://{settings.host}:{settings.port}"
            log.info("demo_task", progress=f"{base}/api/tasks/{task_id}/progress")
            print(
                f"\n  Demo task 'Cellphone Store CRM' is running. Watch it:\n"
                f"    open {base}/tasks/{task_id}\n"
                f"    curl {base}/api/tasks/{task_id}/progress\n",
                flush=True,
            )
            demo_task = asyncio.create_task(worker.run(), name="demo-worker")
        try:
            async with notifier_lifespan(app, notify or NotifySettings(public_url=public_url(settings))):
                yield
        finally:
            if demo_task is not None:
                demo_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await demo_task
            for part in reversed(nats_parts):
                await part.stop()
            await asyncio.to_thread(tail.stop)
            await asyncio.to_thread(runtime.close)

    return Starlette(
        routes=[
            *ROUTES,
            *CHAT_ROUTES,
            *NOTIFY_ROUTES,
            *WS_ROUTES,
            *OPS_ROUTES,
            *OPENAPI_ROUTES,
            *PAGE_ROUTES,
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIds),
            Middleware(SecurityHeaders),
            Middleware(EdgeGuard),
            Middleware(AuthMiddleware),
        ],
        exception_handlers={
            HTTPException: _http_error,
            **{kind: handle_exception for kind in EXPECTED_ERRORS},
            Exception: handle_exception,  # the rest are bugs: a 500 problem, and the traceback logged
        },
    )
