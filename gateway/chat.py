"""Chat: `POST /api/chat` answers a message in plain words; `POST /api/chat/webhook` does the same for a bot.

Intents are rules (`projections.intents`), answers come from the read models (`projections.replies`), and
commands go through the same service, role checks and rate limit as the HTTP API: a worker token cannot
approve from the chat either (403 problem+json). A command the task's state refuses is answered in words.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated, Any
from uuid import UUID

import msgspec
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from domain.errors import AlreadyRestarted, IllegalTransition
from gateway.body import decode, idempotency_key
from gateway.problems import Problem
from gateway.routes import commanding, json_response, runtime, who
from infra.chatread import ChatReads
from infra.tokens import Role
from projections import replies
from projections.intents import Intent, parse, resolve

Message = Annotated[str, Meta(min_length=1, max_length=2_000)]
Label = Annotated[str, Meta(max_length=200)]


class ChatIn(Struct, forbid_unknown_fields=True):
    """POST /api/chat."""

    message: Message


class WebhookIn(Struct):
    """POST /api/chat/webhook: a bot platform's message; unknown fields are ignored (platforms add many)."""

    text: Message
    user: Label | None = None
    channel: Label | None = None
    id: Label | None = None


CHAT = msgspec.json.Decoder(ChatIn)
WEBHOOK = msgspec.json.Decoder(WebhookIn)


@dataclass
class Answer:
    """A chat reply: the text, the task it is about, buttons, and the tasks to choose from when ambiguous."""

    reply: str
    task_id: str | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    choices: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reply": self.reply}
        if self.task_id:
            out["task_id"] = self.task_id
        if self.actions:
            out["actions"] = self.actions
        if self.choices:
            out["choices"] = self.choices
        return out


def _message(raw: str, path: str) -> str:
    if not raw.strip():
        raise Problem(422, "invalid-field", f"{path} must not be blank", errors=[{"path": path}])
    return raw


async def chat(request: Request) -> Response:
    body = await decode(request, CHAT)
    message = _message(body.message, "$.message")
    principal = await who(request)
    answer = await converse(request, principal.scope, message, idempotency_key(request))
    return json_response(answer.to_json())


async def webhook(request: Request) -> Response:
    body = await decode(request, WEBHOOK)
    message = _message(body.text, "$.text")
    principal = await who(request)
    scope = principal.scope
    # A bot holding an admin token speaks for many people: `user` names the owner it asks for.
    if principal.role is Role.ADMIN and principal.token_id is not None and body.user:
        scope = body.user
    key = idempotency_key(request) or (f"chat:{body.id}" if body.id else None)
    answer = await converse(request, scope, message, key)
    out = {"text": answer.reply, **answer.to_json()}
    if body.user is not None:
        out["user"] = body.user
    if body.channel is not None:
        out["channel"] = body.channel
    return json_response(out)


async def converse(request: Request, scope: str | None, message: str, key: str | None) -> Answer:
    """Answer one message for a caller who sees `scope`'s tasks (None: every task)."""
    rt = runtime(request)
    intent = parse(message)
    if intent.kind == "help":
        return Answer(replies.HELP)
    if intent.kind == "list":
        page, more = await rt.service.read(lambda: rt.read.list_tasks(scope, 10))
        return Answer(replies.list_reply(page, more=more is not None))

    tasks, _ = await rt.service.read(lambda: rt.read.list_tasks(scope, 200))
    if (
        intent.task_id
        and len(intent.task_id) == 36
        and not any(t["task_id"] == intent.task_id for t in tasks)
    ):
        found = await rt.progress(UUID(intent.task_id or ""), scope)
        tasks = [found] if found is not None else []
    resolution = resolve(intent, tasks, prefer_active=True)
    if intent.kind == "unknown":
        if not (intent.words and resolution.task is not None):
            return Answer("Sorry, I didn't understand that.\n\n" + replies.HELP)
        intent = replace(intent, kind="status")  # the message only named a task: tell how it is going
    if resolution.task is None:
        if resolution.ambiguous:
            choices = [
                {
                    "task_id": t["task_id"],
                    "title": t["title"],
                    "status": t["status"],
                    "progress": t["progress"],
                }
                for t in resolution.candidates
            ]
            return Answer(replies.ambiguous_reply(resolution.candidates, intent.words), choices=choices)
        return Answer(replies.none_reply(intent.words, intent.task_id, bool(tasks)))

    view: dict[str, Any] = dict(resolution.task)
    tid = str(view["task_id"])
    match intent.kind:
        case "status":
            return Answer(replies.status_reply(view), tid, replies.actions_for(view))
        case "logs":
            return await _logs(request, view, intent)
        case "restart":
            await commanding(request, "restart")
            try:
                outcome = await rt.service.restart(UUID(tid), scope, key)
            except IllegalTransition as exc:
                return Answer(replies.refused_reply(view, "start over", str(exc.actual)), tid)
            except AlreadyRestarted as exc:
                return Answer(replies.already_restarted_reply(view, exc.restarted_as), exc.restarted_as)
            await rt.settle(outcome.position)
            new = outcome.view
            return Answer(replies.restarted_reply(view, new), str(new["task_id"]), replies.actions_for(new))
        case "approve" | "reject":
            return await _decide(request, scope, view, intent, key)
        case "pause" | "resume" | "cancel":
            args: dict[str, Any] = {}
            if intent.kind == "cancel":
                args["reason"] = intent.comment or "cancelled from chat"
            done = await _command(request, scope, view, intent.kind, args, key)
            if isinstance(done, Answer):
                return done
            text = {
                "pause": replies.paused_reply,
                "resume": replies.resumed_reply,
                "cancel": replies.cancelled_reply,
            }
            return Answer(text[intent.kind](done), tid, replies.actions_for(done))
    return Answer(replies.HELP)


async def _command(
    request: Request,
    scope: str | None,
    view: dict[str, Any],
    name: str,
    args: dict[str, Any],
    key: str | None,
) -> dict[str, Any] | Answer:
    """Run a command on the task: its view after it, or an Answer saying why it was refused."""
    rt = runtime(request)
    await commanding(request, name)
    try:
        outcome = await rt.service.command(UUID(str(view["task_id"])), scope, name, args, key)
    except IllegalTransition as exc:
        step = int(args["order"]) if "order" in args else None
        actual = str(exc.actual)
        return Answer(
            replies.refused_reply(view, name, actual, step), str(view["task_id"]), replies.actions_for(view)
        )
    await rt.settle(outcome.position)
    return outcome.view


async def _decide(
    request: Request, scope: str | None, view: dict[str, Any], intent: Intent, key: str | None
) -> Answer:
    tid = str(view["task_id"])
    waiting = [int(s["order"]) for s in view.get("steps") or [] if s["status"] == "approval"]
    step = intent.step
    if step is None:
        if not waiting:
            return Answer(replies.nothing_to_approve(view), tid, replies.actions_for(view))
        if len(waiting) > 1:
            return Answer(replies.which_step(view, waiting), tid, replies.actions_for(view))
        step = waiting[0]
    done = await _command(request, scope, view, intent.kind, {"order": step, "comment": intent.comment}, key)
    if isinstance(done, Answer):
        return done
    text = (
        replies.approved_reply(done, step) if intent.kind == "approve" else replies.rejected_reply(done, step)
    )
    return Answer(text, tid, replies.actions_for(done))


async def _logs(request: Request, view: dict[str, Any], intent: Intent) -> Answer:
    rt = runtime(request)
    tid = str(view["task_id"])
    reads = ChatReads(rt.read)

    def load() -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        return reads.recent(tid, intent.lines), reads.errors(tid, intent.lines), reads.count(tid)

    recent, errors, total = await rt.service.read(load)
    text = replies.logs_reply(view, recent, errors, total, errors_only=intent.errors_only)
    return Answer(text, tid, replies.actions_for(view))


CHAT_ROUTES = [
    Route("/api/chat", chat, methods=["POST"]),
    Route("/api/chat/webhook", webhook, methods=["POST"]),
]
