"""The task API: commands that append to the log, and queries answered from the read models."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from domain.state import TaskStatus
from gateway import wire
from gateway.auth import Auth
from gateway.body import decode, idempotency_key, if_match
from gateway.problems import Problem
from infra.commands import new_task
from infra.readside import BadCursor, parse_at
from infra.runtime import Runtime
from infra.service import Outcome
from infra.tokens import Principal

_encode = msgspec.json.Encoder().encode


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(body), status_code=status, media_type="application/json", headers=headers)


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def who(request: Request) -> Principal:
    """The authenticated caller (a 401 problem when the token is missing or wrong)."""
    found: Principal | None = getattr(request.state, "principal", None)
    if found is None:
        auth: Auth = request.app.state.auth
        found = request.state.principal = await auth.request(request)
    return found


async def caller(request: Request) -> str | None:
    """The owner whose tasks the caller may see; None for admins (and the local mode)."""
    return (await who(request)).scope


async def commanding(request: Request, command: str) -> Principal:
    """The caller, checked for this command and its rate limit."""
    principal = await who(request)
    full_view(request)  # a bad ?view= is refused before anything is applied
    if not principal.may(command):
        raise Problem(403, "forbidden", f"a {principal.role} token may not {command}")
    auth: Auth = request.app.state.auth
    auth.limit(principal, request.client.host if request.client else "?")
    return principal


def task_id(request: Request) -> UUID:
    raw = request.path_params["task_id"]
    try:
        return UUID(raw)
    except ValueError:
        raise Problem(404, "task-not-found", f"no task {raw}") from None


TASK_STATUSES = tuple(s.value for s in TaskStatus)
MAX_STEP_DIGITS = 18  # plans have at most 200 steps and substeps; past this the number is no step at all


class StepNumber(Convertor[int]):
    """`{order:step}` and `{n:step}`: digits, as Starlette's int convertor, but a number too long to be any
    step is a 404 problem here, before Python's int() refuses it (over 4,300 digits) with a ValueError."""

    regex = "[0-9]+"

    def convert(self, value: str) -> int:
        digits = value.lstrip("0") or "0"
        if len(digits) > MAX_STEP_DIGITS:
            shown = f"{digits[:MAX_STEP_DIGITS]}… ({len(digits)} digits)"
            raise Problem(404, "step-not-found", f"the task has no step or substep {shown}")
        return int(digits)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("step", StepNumber())


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Problem(422, "invalid-query", f"{name} must be an integer", errors=[{"path": name}]) from None
    if not low <= value <= high:
        raise Problem(
            422, "invalid-query", f"{name} must be between {low} and {high}", errors=[{"path": name}]
        )
    return value


def full_view(request: Request) -> bool:
    """`?view=full` on a command: its answer has every step's substeps even for a big plan."""
    raw = request.query_params.get("view")
    if raw is not None and raw not in ("compact", "full"):
        raise Problem(422, "invalid-query", "view must be compact or full", errors=[{"path": "view"}])
    return raw == "full"


async def answer(request: Request, outcome: Outcome) -> Response:
    """A command's response: the view after it, its version and position, once the read models have it."""
    settled = await runtime(request).settle(outcome.position)
    headers = {
        "ETag": f'"{outcome.version}"',
        "Progressd-Position": str(outcome.position),
    }
    if not settled:
        headers["Progressd-View-Lag"] = "true"
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    view = outcome.view
    if view.get("compact") and full_view(request):
        rt, tid = runtime(request), UUID(view["task_id"])
        whole = await rt.service.read(lambda: rt.service.view_sync(tid, None, outcome.version))
        view = {**whole, "position": outcome.position}
    body = await runtime(request).with_update_eta(view)
    if outcome.created:
        headers["Location"] = f"/api/tasks/{outcome.view['task_id']}/progress"
        return json_response(body, 201, headers)
    return json_response(body, 200, headers)


async def create_task(request: Request) -> Response:
    new = new_task(await decode(request, wire.CREATE))
    principal = await commanding(request, "create")
    owner = principal.owner or runtime(request).settings.local_owner
    outcome = await runtime(request).service.create(owner, new, idempotency_key(request))
    return await answer(request, outcome)


async def _command(request: Request, name: str, args: dict[str, Any]) -> Response:
    scope = (await commanding(request, name)).scope
    outcome = await runtime(request).service.command(
        task_id(request), scope, name, args, idempotency_key(request), if_match(request)
    )
    return await answer(request, outcome)


async def step_command(request: Request) -> Response:
    action = request.path_params["action"]
    kind = wire.STEP_BODIES.get(action)
    if kind is None:
        raise Problem(404, "unknown-command", f"no step command {action!r}")
    body = await decode(request, wire.DECODERS[kind])
    args = {"order": request.path_params["order"], **msgspec.structs.asdict(body)}
    return await _command(request, action, args)


async def substep_done(request: Request) -> Response:
    await decode(request, wire.DECODERS[wire.EmptyIn])
    args = {"order": request.path_params["order"], "n": request.path_params["n"]}
    return await _command(request, "substep", args)


async def task_command(request: Request) -> Response:
    action = request.path_params["action"]
    kind = wire.TASK_BODIES.get(action)
    if kind is None:
        raise Problem(404, "unknown-command", f"no task command {action!r}")
    body = await decode(request, wire.DECODERS[kind])
    if action == "restart":
        scope = (await commanding(request, "restart")).scope
        outcome = await runtime(request).service.restart(
            task_id(request), scope, idempotency_key(request), if_match(request)
        )
        return await answer(request, outcome)
    return await _command(request, action, msgspec.structs.asdict(body))


async def post_log(request: Request) -> Response:
    body = await decode(request, wire.DECODERS[wire.LogIn])
    return await _command(request, "log", msgspec.structs.asdict(body))


async def get_progress(request: Request) -> Response:
    rt = runtime(request)
    tid = task_id(request)
    owner = await caller(request)
    if "position" in request.query_params or "at" in request.query_params:
        position = int_param(request, "position", 2**62, 0, 2**62)
        raw_at = request.query_params.get("at")
        try:
            at = parse_at(raw_at) if raw_at is not None else None
        except BadCursor:
            raise Problem(
                422, "invalid-query", "at must be an ISO 8601 instant", errors=[{"path": "at"}]
            ) from None

        def travel() -> dict[str, Any]:
            found = rt.read.seq_at(tid, position, at)
            if found is None:
                rt.service.view_sync(tid, owner)  # 404 when the task does not exist or is not the caller's
                raise Problem(404, "not-yet", "the task did not exist at that moment")
            seq, event_position = found
            then = {**rt.service.view_sync(tid, owner, seq), "position": event_position}
            moment = datetime.fromisoformat((at or then["updated_at"]).replace("Z", "+00:00"))
            return rt.read.with_eta_then(then, moment, event_position)

        return json_response(await rt.service.read(travel))
    wait = int_param(request, "min_position", 0, 0, 2**62)
    settled = await rt.settle(wait) if wait else True
    found = await rt.progress(tid, owner)
    if found is None:
        raise Problem(404, "task-not-found", f"no task {tid}")
    headers = {"ETag": f'"{found["version"]}"'}
    if not settled:  # answered with what the read models have, as a command's answer would be
        headers["Progressd-View-Lag"] = "true"
    return json_response(found, headers=headers)


async def list_tasks(request: Request) -> Response:
    rt = runtime(request)
    limit = int_param(request, "limit", 50, 1, 500)
    status = request.query_params.get("status")
    if status is not None and status not in TASK_STATUSES:
        raise Problem(
            422,
            "invalid-query",
            f"status must be one of {', '.join(TASK_STATUSES)}",
            errors=[{"path": "status"}],
        )
    before = request.query_params.get("before")
    owner = await caller(request)
    page, cursor = await rt.service.read(lambda: rt.read.list_tasks(owner, limit, before, status))
    return json_response({"tasks": page, "next": cursor})


async def get_events(request: Request) -> Response:
    rt = runtime(request)
    tid = task_id(request)
    after = int_param(request, "after", 0, 0, 2**62)
    limit = int_param(request, "limit", 1000, 1, 10_000)
    owner = await caller(request)

    def load() -> list[dict[str, Any]]:
        rt.service.view_sync(tid, owner)  # ownership check: 404 for someone else's task
        return rt.app.task_events(tid, after, limit)

    return json_response({"task_id": str(tid), "events": await rt.service.read(load)})


async def get_history(request: Request) -> Response:
    rt = runtime(request)
    tid = task_id(request)
    owner = await caller(request)
    if await rt.progress(tid, owner) is None:
        raise Problem(404, "task-not-found", f"no task {tid}")
    return json_response({"task_id": str(tid), **await rt.service.read(lambda: rt.read.history(tid))})


async def get_logs(request: Request) -> Response:
    rt = runtime(request)
    tid = task_id(request)
    owner = await caller(request)
    after = int_param(request, "after", 0, 0, 2**62)
    limit = int_param(request, "limit", 200, 1, 5000)
    level = request.query_params.get("level")
    if level is not None and level not in ("debug", "info", "warning", "error"):
        raise Problem(
            422, "invalid-query", "level must be debug, info, warning or error", errors=[{"path": "level"}]
        )
    if await rt.progress(tid, owner) is None:
        raise Problem(404, "task-not-found", f"no task {tid}")
    lines = await rt.service.read(lambda: rt.read.logs(tid, after, level, limit))
    return json_response({"task_id": str(tid), "logs": lines})


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    rt = runtime(request)
    try:
        head = await rt.service.read(rt.app.head)
        tracked = await rt.service.read(rt.tracked)
    except Exception as exc:
        raise Problem(503, "not-ready", f"event store unavailable: {type(exc).__name__}") from None
    lag = {name: head - pos for name, pos in tracked.items()}
    return json_response({"status": "ready", "head": head, "projections": tracked, "lag": lag})


ROUTES = [
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Route("/api/tasks", create_task, methods=["POST"]),
    Route("/api/tasks", list_tasks, methods=["GET"]),
    Route("/api/tasks/{task_id}/progress", get_progress, methods=["GET"]),
    Route("/api/tasks/{task_id}/events", get_events, methods=["GET"]),
    Route("/api/tasks/{task_id}/history", get_history, methods=["GET"]),
    Route("/api/tasks/{task_id}/logs", get_logs, methods=["GET"]),
    Route("/api/tasks/{task_id}/logs", post_log, methods=["POST"]),
    Route("/api/tasks/{task_id}/steps/{order:step}/substeps/{n:step}/done", substep_done, methods=["POST"]),
    Route("/api/tasks/{task_id}/steps/{order:step}/{action}", step_command, methods=["POST"]),
    Route("/api/tasks/{task_id}/{action}", task_command, methods=["POST"]),
]
