"""Notification API: preferences, push subscriptions, the browser feed, and each task's delivery states.

Everything is scoped like the task API: preferences and subscriptions belong to the caller's owner, the feed
shows the caller's notifications (an admin's shows everyone's), and another owner's task is a 404.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.body import decode
from gateway.problems import Problem
from gateway.routes import caller, int_param, json_response, runtime, task_id, who
from infra.channels.guard import refused, resolve
from infra.notify import Notifier
from infra.notifyconfig import NotifySettings, Preferences
from infra.notifystore import NotifyStore, TooManySubscriptions
from infra.tokens import Role
from projections.notifications import CHANNELS, KINDS

Channel = Literal["browser", "email", "chat", "push"]
Channels = Annotated[list[Channel], Meta(max_length=4)]
Email = Annotated[str, Meta(pattern=r"^[^@\s<>,;:\"()\[\]\\]+@[A-Za-z0-9.-]+$", max_length=254)]
Topic = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Key = Annotated[str, Meta(min_length=8, max_length=200, pattern=r"^[A-Za-z0-9_=-]+$")]


class EventsIn(Struct, forbid_unknown_fields=True):
    """Channels per kind; a kind left out keeps its default."""

    task_started: Channels | None = None
    step_complete: Channels | None = None
    approval_needed: Channels | None = None
    task_complete: Channels | None = None
    task_failed: Channels | None = None
    stalled: Channels | None = None


class PreferencesIn(Struct, forbid_unknown_fields=True):
    """PUT /api/notification-preferences: the whole document; fields left out get their defaults."""

    events: EventsIn | None = None
    email: Email | None = None
    email_min_minutes: Annotated[float, Meta(ge=0, le=7 * 24 * 60)] | None = None
    ntfy_topic: Topic | None = None


class KeysIn(Struct, forbid_unknown_fields=True):
    p256dh: Key
    auth: Key


class SubscriptionIn(Struct, forbid_unknown_fields=True):
    """POST /api/push-subscriptions: a browser's `PushSubscription.toJSON()`."""

    endpoint: Annotated[str, Meta(min_length=10, max_length=2_000)]
    keys: KeysIn
    expirationTime: int | float | None = None  # the browser's own name for it


PREFERENCES = msgspec.json.Decoder(PreferencesIn)
SUBSCRIPTION = msgspec.json.Decoder(SubscriptionIn)


def notifier(request: Request) -> Notifier:
    found: Notifier | None = getattr(request.app.state, "notifier", None)
    if found is None:
        raise Problem(503, "notifications-off", "notifications are not running on this server")
    return found


def store(request: Request) -> NotifyStore:
    return notifier(request).store


async def owner(request: Request) -> str:
    """The owner whose preferences these are; worker tokens report progress and have none."""
    principal = await who(request)
    if principal.role is Role.WORKER:
        raise Problem(403, "forbidden", "a worker token has no notification preferences")
    return principal.owner or runtime(request).settings.local_owner


def _preferences_json(request: Request, who_: str, prefs: Preferences) -> dict[str, Any]:
    cfg = notifier(request).config
    return {
        "owner": who_,
        **prefs.to_json(),
        "kinds": list(KINDS),
        "channels": list(CHANNELS),
        "available": {
            "browser": True,
            "email": cfg.smtp_host is not None,
            "chat": cfg.chat_webhook_url is not None,
            "push": True,
            "ntfy": cfg.ntfy_url is not None,
        },
    }


async def get_preferences(request: Request) -> Response:
    name = await owner(request)
    db = store(request)
    prefs = await runtime(request).service.read(lambda: db.preferences(name))
    return json_response(_preferences_json(request, name, prefs))


async def put_preferences(request: Request) -> Response:
    name = await owner(request)
    body = await decode(request, PREFERENCES)
    data = msgspec.to_builtins(body)
    if body.events is not None:
        data["events"] = {k: v for k, v in msgspec.structs.asdict(body.events).items() if v is not None}
    db = store(request)
    prefs = Preferences.from_json(data, db.config.email_min_minutes)
    await runtime(request).service.read(lambda: db.save_preferences(name, prefs, time.time()))
    return json_response(_preferences_json(request, name, prefs))


def _key_bytes(raw: str, path: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise Problem(422, "invalid-field", f"{path} is not base64url", errors=[{"path": path}]) from None


async def _public_endpoint(host: str, port: int, cfg: NotifySettings) -> None:
    """Refuse an endpoint whose name resolves to any address that is not public (422).

    A name that does not resolve now is accepted: every send checks again, on the address it connects to.
    """
    try:
        async with asyncio.timeout(cfg.timeout):
            addresses = await resolve(host, port)
    except (OSError, TimeoutError):
        return
    if bad := refused(addresses):
        raise Problem(
            422,
            "endpoint-not-public",
            f"endpoint {host} resolves to an address that is not public: {', '.join(bad)}",
            errors=[{"path": "$.endpoint"}],
        )


async def add_subscription(request: Request) -> Response:
    name = await owner(request)
    body = await decode(request, SUBSCRIPTION)
    cfg = notifier(request).config
    parts = urlsplit(body.endpoint)
    schemes = ("https", "http") if cfg.push_allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        raise Problem(
            422,
            "invalid-field",
            f"endpoint must be an {' or '.join(schemes)} URL",
            errors=[{"path": "$.endpoint"}],
        )
    if not cfg.allow_private:
        await _public_endpoint(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), cfg)
    p256dh = _key_bytes(body.keys.p256dh, "$.keys.p256dh")
    if len(p256dh) != 65 or p256dh[0] != 4:
        raise Problem(
            422,
            "invalid-field",
            "keys.p256dh must be an uncompressed P-256 point",
            errors=[{"path": "$.keys.p256dh"}],
        )
    if len(_key_bytes(body.keys.auth, "$.keys.auth")) < 16:
        raise Problem(422, "invalid-field", "keys.auth must be 16 bytes", errors=[{"path": "$.keys.auth"}])
    db = store(request)
    rt = runtime(request)
    try:
        row = await rt.service.read(
            lambda: db.add_subscription(name, body.endpoint, body.keys.p256dh, body.keys.auth, time.time())
        )
    except TooManySubscriptions as exc:
        raise Problem(409, "too-many-subscriptions", str(exc)) from None
    _, public = await rt.service.read(lambda: db.vapid(time.time()))
    return json_response({**row, "owner": name, "vapid_public_key": public}, 201)


async def list_subscriptions(request: Request) -> Response:
    name = await owner(request)
    db = store(request)
    rt = runtime(request)
    subs = await rt.service.read(lambda: db.subscriptions(name))
    _, public = await rt.service.read(lambda: db.vapid(time.time()))
    return json_response(
        {
            "vapid_public_key": public,
            "subscriptions": [
                {"id": s["id"], "endpoint": s["endpoint"], "created_at": s["created_at"]} for s in subs
            ],
        }
    )


async def delete_subscription(request: Request) -> Response:
    name = await owner(request)
    db = store(request)
    sub_id = request.path_params["sub_id"]
    # No id holds a control character, and PostgreSQL would refuse a NUL in the query (a DataError).
    if not sub_id.isprintable() or not await runtime(request).service.read(
        lambda: db.delete_subscription(name, sub_id)
    ):
        raise Problem(404, "not-found", f"no push subscription {sub_id}")
    return Response(status_code=204)


def _feed_item(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "task_id": row["task_id"],
        "kind": row["kind"],
        "text": row["text"],
        "detail": row["detail"],
        "title": row["title"],
        "step": row["step"],
        "seq": row["seq"],
        "position": row["position"],
        "at": row["at"],
        "url": f"/tasks/{row['task_id']}",
    }


async def feed(request: Request) -> Response:
    scope = await caller(request)
    after = int_param(request, "after", 0, 0, 2**62)
    limit = int_param(request, "limit", 50, 1, 500)
    db = store(request)
    rows = await runtime(request).service.read(lambda: db.feed(scope, after, limit))
    items = [_feed_item(r) for r in rows]
    return json_response({"notifications": items, "next": items[-1]["id"] if items else after})


async def task_notifications(request: Request) -> Response:
    rt = runtime(request)
    tid = task_id(request)
    scope = await caller(request)
    if await rt.progress(tid, scope) is None:
        raise Problem(404, "task-not-found", f"no task {tid}")
    db = store(request)
    rows = await rt.service.read(lambda: db.for_task(str(tid)))
    return json_response({"task_id": str(tid), "notifications": rows})


@contextlib.asynccontextmanager
async def notifier_lifespan(app: Starlette, config: NotifySettings | None = None) -> AsyncIterator[Notifier]:
    """Run the delivery worker inside the app's lifespan, after the runtime is up; woken by the projector."""
    rt = app.state.runtime
    worker = Notifier(rt.settings, config)
    await worker.start()
    rt.projector.listeners.append(lambda name, _position: worker.wake() if name == "notifications" else None)
    app.state.notifier = worker
    rt.metrics.probe(
        "progressd_notification_outbox_depth",
        "Notifications waiting to be delivered.",
        lambda: [({}, float(worker.store.depth()))] if worker.is_open else [],
    )
    try:
        yield worker
    finally:
        app.state.notifier = None
        await worker.close()


NOTIFY_ROUTES = [
    Route("/api/notification-preferences", get_preferences, methods=["GET"]),
    Route("/api/notification-preferences", put_preferences, methods=["PUT"]),
    Route("/api/push-subscriptions", list_subscriptions, methods=["GET"]),
    Route("/api/push-subscriptions", add_subscription, methods=["POST"]),
    Route("/api/push-subscriptions/{sub_id}", delete_subscription, methods=["DELETE"]),
    Route("/api/notifications", feed, methods=["GET"]),
    Route("/api/tasks/{task_id}/notifications", task_notifications, methods=["GET"]),
]
