"""OpenAPI 3.1, generated from the msgspec types the API decodes and the shapes it answers with."""

from __future__ import annotations

import html
from typing import Any, Literal

import msgspec
from msgspec import Struct
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway import wire
from gateway.chat import ChatIn, WebhookIn
from gateway.notify_routes import PreferencesIn, SubscriptionIn

# ---- response shapes (forbid_unknown_fields: a test converts real responses into them, so they can't drift)


class Substep(Struct, forbid_unknown_fields=True):
    name: str
    done: bool


class ApprovalRequest(Struct, forbid_unknown_fields=True):
    message: str
    requested_at: str | None


class StepView(Struct, forbid_unknown_fields=True):
    order: int
    name: str
    status: Literal["pending", "running", "paused", "approval", "completed", "failed", "skipped"]
    progress: int
    duration_ms: int | None
    substeps: list[Substep] | None  # null only in a compact command answer
    weight: float
    started_at: str | None
    finished_at: str | None
    updated_at: str | None
    attempts: int
    error: str | None
    result: str | None
    approval: ApprovalRequest | None
    work_ms: int | None


class ProgressView(Struct, forbid_unknown_fields=True):
    """The spec's progress JSON plus additive fields."""

    task_id: str
    title: str
    status: Literal["pending", "running", "paused", "completed", "failed", "cancelled"]
    progress: int
    current_step: int
    total_steps: int
    started_at: str | None
    eta_seconds: float | None
    steps: list[StepView]
    version: int
    owner: str
    complexity: str | None
    tables: int | None
    created_at: str
    updated_at: str
    finished_at: str | None
    paused_at: str | None
    needs_attention: bool
    error: str | None
    result: str | None
    restarted_from: str | None
    restarted_as: str | None
    position: int
    eta_low_seconds: float | None = None
    eta_high_seconds: float | None = None
    eta_confidence: str | None = None
    stalled_step: int | None = None
    compact: bool = False  # true on a command answer for a big plan that leaves out some substep lists


class TaskPage(Struct, forbid_unknown_fields=True):
    tasks: list[ProgressView]
    next: str | None


class ProblemDetails(Struct):
    """RFC 9457 problem details; some problems add members (errors, expected, actual…)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


class HistoryRow(Struct, forbid_unknown_fields=True):
    task_id: str
    step: int
    name: str
    percent: int
    status: str
    updated_at: str | None


class HistoryChange(Struct, forbid_unknown_fields=True):
    position: int
    step: int
    seq: int
    event: str
    percent: int
    status: str
    at: str


class History(Struct, forbid_unknown_fields=True):
    task_id: str
    steps: list[HistoryRow]
    changes: list[HistoryChange]


class LogLine(Struct, forbid_unknown_fields=True):
    position: int
    seq: int
    at: str
    level: str
    step: int | None
    message: str


class Logs(Struct, forbid_unknown_fields=True):
    task_id: str
    logs: list[LogLine]


class EventRecord(Struct, forbid_unknown_fields=True):
    type: str
    task_id: str
    seq: int
    at: str
    data: dict[str, Any]


class Events(Struct, forbid_unknown_fields=True):
    task_id: str
    events: list[EventRecord]


class Health(Struct):
    status: str


class Ready(Struct):
    status: str
    head: int
    projections: dict[str, int]
    lag: dict[str, int]


class ChatAction(Struct, forbid_unknown_fields=True):
    """A button a chat client may show: sending `message` performs it."""

    action: Literal["approve", "reject", "pause", "resume", "cancel", "restart"]
    label: str
    message: str
    task_id: str


class ChatChoice(Struct, forbid_unknown_fields=True):
    """One of the tasks a message could mean, when it named several."""

    task_id: str
    title: str
    status: str
    progress: int


class ChatAnswer(Struct, forbid_unknown_fields=True):
    reply: str
    task_id: str | None = None
    actions: list[ChatAction] = []
    choices: list[ChatChoice] = []


class WebhookAnswer(ChatAnswer, kw_only=True):
    """The chat answer for a bot platform: `text` is the reply; `user` and `channel` come back as sent."""

    text: str
    user: str | None = None
    channel: str | None = None


class FeedItem(Struct, forbid_unknown_fields=True):
    id: int
    task_id: str
    kind: str
    text: str
    detail: str
    title: str
    step: int | None
    seq: int
    position: int
    at: str
    url: str


class Feed(Struct, forbid_unknown_fields=True):
    """The browser channel's notifications after a cursor; `next` is the cursor to ask with next time."""

    notifications: list[FeedItem]
    next: int


class Delivery(Struct, forbid_unknown_fields=True):
    """One notification on one channel, and how its delivery went."""

    id: int
    dedupe_key: str
    kind: str
    channel: str
    text: str
    detail: str
    step: int | None
    at: str
    state: Literal["pending", "sending", "sent", "skipped", "expired", "dead"]
    attempts: int
    last_error: str | None
    sent_at: str | None
    next_at: str


class TaskNotifications(Struct, forbid_unknown_fields=True):
    task_id: str
    notifications: list[Delivery]


class ChannelsAvailable(Struct, forbid_unknown_fields=True):
    """Which channels this server can deliver on (email, chat and ntfy need server settings)."""

    browser: bool
    email: bool
    chat: bool
    push: bool
    ntfy: bool


class Preferences(Struct, forbid_unknown_fields=True):
    owner: str
    events: dict[str, list[str]]
    email: str | None
    email_min_minutes: float
    ntfy_topic: str | None
    kinds: list[str]
    channels: list[str]
    available: ChannelsAvailable


class Subscription(Struct, forbid_unknown_fields=True):
    id: str
    endpoint: str
    created_at: str


class SubscriptionAdded(Subscription):
    owner: str
    vapid_public_key: str


class Subscriptions(Struct, forbid_unknown_fields=True):
    vapid_public_key: str
    subscriptions: list[Subscription]


# ---- paths ---------------------------------------------------------------------------------------------

TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
ORDER = {"name": "order", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}}
IF_MATCH = {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"}}
VIEW = {
    "name": "view",
    "in": "query",
    "required": False,
    "description": "full: every step's substeps in the answer, even for a plan with over 500 substeps",
    "schema": {"type": "string", "enum": ["compact", "full"]},
}
ERRORS = {
    code: {
        "description": text,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
    }
    for code, text in {
        "400": "Malformed request",
        "401": "No valid token",
        "403": "The token's role may not do this",
        "404": "No such task, step or route",
        "409": "The state does not allow this command",
        "412": "If-Match did not match",
        "413": "Body over 64 KiB",
        "422": "A field is invalid",
        "429": "Rate limited",
        "503": "Event store unavailable",
    }.items()
}


def _ref(kind: type[Struct]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{kind.__name__}"}


def _json(kind: type[Struct], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(kind)}}}


def _command(
    summary: str, body: type[Struct] | None, params: list[dict[str, Any]], created: bool = False
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [*params, IDEMPOTENCY, IF_MATCH, VIEW],
        "responses": {
            ("201" if created else "200"): _json(ProgressView, "The task's progress after the command"),
            **ERRORS,
        },
    }
    if body is not None:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": _ref(body)}}}
    return {"post": op}


def _post(summary: str, body: type[Struct], answer: type[Struct], created: bool = False) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [IDEMPOTENCY],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(body)}}},
            "responses": {("201" if created else "200"): _json(answer, summary), **ERRORS},
        }
    }


def _query(summary: str, kind: type[Struct], params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            "responses": {"200": _json(kind, summary), **ERRORS},
        }
    }


def _int(name: str, description: str, minimum: int = 0, maximum: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def build() -> dict[str, Any]:
    """The OpenAPI document."""
    paths: dict[str, Any] = {
        "/api/tasks": {
            **_command("Create a task", wire.CreateTaskIn, [], created=True),
            **_query(
                "The caller's tasks, newest first",
                TaskPage,
                [
                    _int("limit", "Page size", 1, 500),
                    {"name": "before", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "status", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
            ),
        },
        "/api/tasks/{task_id}/progress": _query(
            "The progress JSON (optionally as it stood at a position or instant)",
            ProgressView,
            [
                TASK_ID,
                _int("position", "Time travel to a log position"),
                {
                    "name": "at",
                    "in": "query",
                    "required": False,
                    "description": "Time travel to an instant (ISO 8601, years 1 to 9999 in UTC)",
                    "schema": {"type": "string", "format": "date-time"},
                },
                _int("min_position", "Wait for this position"),
            ],
        ),
        "/api/tasks/{task_id}/history": _query(
            "The task_progress rows and their changes", History, [TASK_ID]
        ),
        "/api/tasks/{task_id}/logs": {
            **_query(
                "Log lines",
                Logs,
                [
                    TASK_ID,
                    _int("after", "Only lines after this position"),
                    _int("limit", "At most this many", 1, 5000),
                    {
                        "name": "level",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": ["debug", "info", "warning", "error"]},
                    },
                ],
            ),
            **_command("Append a log line", wire.LogIn, [TASK_ID]),
        },
        "/api/tasks/{task_id}/events": _query(
            "The task's raw event log",
            Events,
            [TASK_ID, _int("after", "After this seq"), _int("limit", "", 1, 10_000)],
        ),
        "/api/tasks/{task_id}/steps/{order}/substeps/{n}/done": _command(
            "Mark a substep done",
            None,
            [
                TASK_ID,
                ORDER,
                {"name": "n", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}},
            ],
        ),
        "/api/tasks/{task_id}/notifications": _query(
            "The task's notifications on every channel, and how their delivery went",
            TaskNotifications,
            [TASK_ID],
        ),
        "/api/chat": _post("Ask about your tasks, or tell one what to do, in words", ChatIn, ChatAnswer),
        "/api/chat/webhook": _post(
            "The same, for a bot platform (Slack, Teams, a webhook relay)", WebhookIn, WebhookAnswer
        ),
        "/api/notifications": _query(
            "Notifications for the browser channel (the page's feed), oldest first",
            Feed,
            [_int("after", "Only notifications after this id"), _int("limit", "At most this many", 1, 500)],
        ),
        "/api/notification-preferences": {
            **_query("Which notifications go to which channels", Preferences, []),
            "put": _post(
                "Replace the preferences; fields left out get their defaults", PreferencesIn, Preferences
            )["post"],
        },
        "/api/push-subscriptions": {
            **_query("This owner's Web Push subscriptions and the server's VAPID key", Subscriptions, []),
            **_post(
                "Subscribe a browser (its PushSubscription.toJSON())",
                SubscriptionIn,
                SubscriptionAdded,
                created=True,
            ),
        },
        "/api/push-subscriptions/{sub_id}": {
            "delete": {
                "summary": "Unsubscribe",
                "parameters": [
                    {"name": "sub_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"204": {"description": "Gone"}, **ERRORS},
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json(Health, "Up")}}},
        "/readyz": {
            "get": {
                "summary": "Readiness and projection lag",
                "responses": {"200": _json(Ready, "Ready"), **ERRORS},
            }
        },
    }
    for action, body in wire.STEP_BODIES.items():
        paths[f"/api/tasks/{{task_id}}/steps/{{order}}/{action}"] = _command(
            f"Step command: {action}", body, [TASK_ID, ORDER]
        )
    for action, body in wire.TASK_BODIES.items():
        paths[f"/api/tasks/{{task_id}}/{action}"] = _command(
            f"Task command: {action}", body, [TASK_ID], created=action == "restart"
        )
    kinds: list[Any] = [
        ProgressView,
        TaskPage,
        ProblemDetails,
        History,
        Logs,
        Events,
        Health,
        Ready,
        TaskNotifications,
        ChatIn,
        ChatAnswer,
        WebhookIn,
        WebhookAnswer,
        Feed,
        Preferences,
        PreferencesIn,
        Subscriptions,
        SubscriptionIn,
        SubscriptionAdded,
        wire.CreateTaskIn,
        wire.LogIn,
        *wire.STEP_BODIES.values(),
        *wire.TASK_BODIES.values(),
    ]
    _, components = msgspec.json.schema_components(kinds, ref_template="#/components/schemas/{name}")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "progressd",
            "version": "0.1.0",
            "description": "Event-sourced progress backend. The WebSocket streams at /ws/tasks and "
            "/ws/tasks/{id} are described in the README.",
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }


_DOCUMENT = msgspec.json.encode(build())


async def openapi(request: Request) -> Response:
    return Response(_DOCUMENT, media_type="application/json")


async def docs(request: Request) -> Response:
    """A plain, script-free rendering of the OpenAPI document."""
    doc = build()
    rows = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = ", ".join(op.get("responses", {}))
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op.get('summary', ''))}</td><td>{codes}</td></tr>"
            )
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>progressd API</title>"
        "<body><h1>progressd API</h1>"
        "<p>Machine-readable: <a href=/openapi.json>/openapi.json</a> (OpenAPI 3.1).</p>"
        "<table><thead><tr><th>method<th>path<th>what<th>responses</thead><tbody>"
        + "".join(rows)
        + "</tbody></table></body></html>"
    )
    return HTMLResponse(page)


OPENAPI_ROUTES = [Route("/openapi.json", openapi), Route("/docs", docs)]
