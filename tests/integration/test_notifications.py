"""Notifications end to end with real servers on loopback: an aiosmtpd SMTP server gets the emails, an
HTTP server gets the chat webhooks, ntfy publishes and Web Push requests (decrypted here with the
subscriber's keys, VAPID checked). Preferences are respected, owners are kept apart, failures are retried
then dead-lettered, and a worker that crashes or is killed mid-send delivers every notification once after
a restart."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections import Counter, deque
from collections.abc import Callable, Iterator
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from py_vapid import Vapid02  # type: ignore[import-untyped]
from starlette.testclient import TestClient

from domain.task import StepPlan
from infra.channels.base import Outgoing, Result
from infra.notify import Notifier
from infra.notifyconfig import NotifySettings
from infra.notifystore import NotifyStore
from infra.replay import rebuild
from infra.runtime import Runtime
from infra.service import NewTask
from infra.settings import Settings
from infra.tokens import Role
from projections import notifications
from projections.registry import MODELS
from tests.integration.notify_kit import Browser, Receiver, SmtpSink, app_with_notifications, wait_until
from tests.integration.tokenkit import make_tokens

CRM = {
    "title": "Cellphone Store CRM",
    "complexity": 4,
    "steps": [
        {"name": "Create database tables"},
        {"name": "Generate application UI", "substeps": ["Customer list", "Sales form"]},
        {"name": "Configure workflows", "requires_approval": True},
    ],
}
PUBLIC = "http://progress.example"


@pytest.fixture(autouse=True)
def notification_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry entry the wiring adds: the notifications read model next to the others."""
    monkeypatch.setitem(MODELS, "notifications", notifications.MODEL)


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def make_config(smtp: SmtpSink, receiver: Receiver, **overrides: Any) -> NotifySettings:
    values: dict[str, Any] = {
        "public_url": PUBLIC,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "smtp_tls": "none",
        "smtp_from": "progressd <progressd@progress.example>",
        "chat_webhook_url": f"{receiver.url}/chat",
        "ntfy_url": f"{receiver.url}/ntfy",
        "push_allow_http": True,
        "allow_private": True,  # the receivers are on loopback
        "poll": 0.05,
        "backoff": 0.05,
        "backoff_max": 0.2,
        "lease": 0.5,
        "timeout": 5.0,
        "max_attempts": 3,
        "stall_interval": 3600.0,
    }
    values.update(overrides)
    return NotifySettings(**values)


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    return make_tokens(
        tmp_path,
        {
            "alice": (Role.OWNER, "alice"),
            "alice_worker": (Role.WORKER, "alice"),
            "bob": (Role.OWNER, "bob"),
            "bob_worker": (Role.WORKER, "bob"),
        },
    )


@pytest.fixture
def client(
    tmp_path: Path, tokens: dict[str, str], smtp: SmtpSink, receiver: Receiver
) -> Iterator[TestClient]:
    app = app_with_notifications(Settings(data_dir=tmp_path), make_config(smtp, receiver))
    with TestClient(app, raise_server_exceptions=False, base_url="http://localhost") as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def run_task(c: TestClient, worker: str, owner: str, body: dict[str, Any], steps: list[str]) -> str:
    response = c.post("/api/tasks", json=body, headers=auth(worker))
    assert response.status_code == 201, response.text
    tid: str = response.json()["task_id"]
    for step in steps:
        token = owner if step.endswith(("approve", "reject")) else worker
        path, _, payload = step.partition(" ")
        r = c.post(
            f"/api/tasks/{tid}/{path}", json=json.loads(payload) if payload else None, headers=auth(token)
        )
        assert r.status_code == 200, (step, r.text)
    return tid


WHOLE_RUN = [
    "steps/1/start",
    "steps/1/complete",
    "steps/2/start",
    "steps/2/substeps/1/done",
    "steps/2/substeps/2/done",
    "steps/2/complete",
    "steps/3/start",
    "steps/3/approve",
    "steps/3/complete",
]


def settled(c: TestClient, token: str, tid: str, count: int) -> list[dict[str, Any]]:
    """The task's delivery rows once `count` exist and none is still pending or sending."""

    def check() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = c.get(f"/api/tasks/{tid}/notifications", headers=auth(token)).json()[
            "notifications"
        ]
        if len(rows) >= count and all(r["state"] not in ("pending", "sending") for r in rows):
            return rows
        return None

    found: list[dict[str, Any]] = wait_until(check, what=f"{count} settled deliveries")
    return found


def states(rows: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    return {(r["kind"], r["channel"]): r["state"] for r in rows}


def test_every_channel_gets_its_notifications(
    client: TestClient, tokens: dict[str, str], smtp: SmtpSink, receiver: Receiver
) -> None:
    alice = auth(tokens["alice"])
    prefs = {"email": "alice@example.com", "email_min_minutes": 0, "ntfy_topic": "alice-phone"}
    assert client.put("/api/notification-preferences", json=prefs, headers=alice).status_code == 200
    browser = Browser(f"{receiver.url}/push/alice-laptop")
    made = client.post("/api/push-subscriptions", json=browser.subscription(), headers=alice)
    assert made.status_code == 201, made.text
    vapid_key = made.json()["vapid_public_key"]

    tid = run_task(client, tokens["alice_worker"], tokens["alice"], CRM, WHOLE_RUN)
    rows = settled(client, tokens["alice"], tid, 6 * 4)
    expected_sent = {
        ("task_started", "browser"),
        ("task_started", "chat"),
        ("step_complete", "browser"),
        *(
            (kind, ch)
            for kind in ("approval_needed", "task_complete")
            for ch in ("browser", "email", "chat", "push")
        ),
    }
    assert {k for k, v in states(rows).items() if v == "sent"} == expected_sent
    assert all(r["attempts"] <= 1 for r in rows)

    # Email: subject, plain-text and HTML parts, the link to the task page, the dedupe key as Message-ID.
    assert [m["Subject"] for m in smtp.messages] == [
        "⚠️ Approval required for Step 3 · Cellphone Store CRM task",
        "✅ Your Cellphone Store CRM is ready!",
    ]
    link = f"{PUBLIC}/tasks/{tid}"
    for message in smtp.messages:
        assert message["To"] == "alice@example.com"
        assert message.get_content_type() == "multipart/alternative"
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        assert text is not None and html is not None
        assert link in text.get_content() and f'href="{link}"' in html.get_content()
        key = message["X-Progressd-Dedupe"].strip()  # folded: the long header unfolds with a leading space
        digest = hashlib.sha256(key.encode()).hexdigest()[:40]
        assert message["Message-ID"] == f"<{digest}@progress.example>"
    assert "All 3 steps finished in" in smtp.messages[1].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert smtp.recipients == [["alice@example.com"], ["alice@example.com"]]

    # Chat webhook: Slack/Matrix-style JSON, the dedupe key as Idempotency-Key.
    chats = receiver.on("/chat")
    assert [r.json()["kind"] for r in chats] == ["task_started", "approval_needed", "task_complete"]
    assert chats[0].json()["text"] == (
        f"Your Cellphone Store CRM task has started\nCellphone Store CRM: 3 steps.\n{link}"
    )
    for r in chats:
        assert r.headers["idempotency-key"] == r.headers["x-progressd-dedupe"] == r.json()["dedupe_key"]
        assert r.headers["content-type"] == "application/json"

    # Web Push: encrypted for the subscriber (decrypts with its keys), VAPID-signed with the served key.
    pushes = receiver.on("/push/alice-laptop")
    assert len(pushes) == 2
    for r in pushes:
        assert r.headers["content-encoding"] == "aes128gcm"
        assert int(r.headers["ttl"]) > 0 and len(r.headers["topic"]) <= 32
        authorization = r.headers["authorization"]
        assert Vapid02.verify(authorization)
        assert authorization.rsplit("k=", 1)[1] == vapid_key
        jwt = authorization.split("t=", 1)[1].split(",", 1)[0]
        claims = json.loads(base64.urlsafe_b64decode(jwt.split(".")[1] + "=="))
        assert claims["aud"] == receiver.url and claims["sub"] == "mailto:progressd@localhost"
    payloads = [browser.decrypt(r.body) for r in pushes]
    assert [p["title"] for p in payloads] == [m["Subject"] for m in smtp.messages]
    assert {p["url"] for p in payloads} == {link}

    # ntfy: the same two, on the owner's topic.
    ntfy = receiver.on("/ntfy/alice-phone")
    assert [r.body.decode().splitlines()[0] for r in ntfy] == [m["Subject"] for m in smtp.messages]
    assert all(r.headers["click"] == link for r in ntfy)
    # The title header says the subject whole, emoji and all (RFC 2047 when it is not ASCII).
    titles = [str(make_header(decode_header(r.headers["title"]))) for r in ntfy]
    assert titles == [m["Subject"] for m in smtp.messages]

    # Browser: the feed, in order.
    feed = client.get("/api/notifications", headers=alice).json()
    assert [n["text"] for n in feed["notifications"]] == [
        "Your Cellphone Store CRM task has started",
        "Step 1 complete: Create database tables",
        "Step 2 complete: Generate application UI",
        "⚠️ Approval required for Step 3",
        "Step 3 complete: Configure workflows",
        "✅ Your Cellphone Store CRM is ready!",
    ]
    after = feed["notifications"][2]["id"]
    later = client.get(f"/api/notifications?after={after}&limit=2", headers=alice).json()
    assert [n["kind"] for n in later["notifications"]] == ["approval_needed", "step_complete"]
    assert later["next"] == later["notifications"][-1]["id"]


def test_preferences_are_respected_and_short_tasks_get_no_email(
    client: TestClient, tokens: dict[str, str], smtp: SmtpSink, receiver: Receiver
) -> None:
    bob = auth(tokens["bob"])
    prefs = {
        "email": "bob@example.com",
        "events": {
            "task_started": [],
            "step_complete": [],
            "approval_needed": ["browser"],
            "task_failed": ["browser", "email"],
            "task_complete": ["browser", "email"],
        },
    }
    saved = client.put("/api/notification-preferences", json=prefs, headers=bob)
    assert saved.status_code == 200, saved.text
    got = client.get("/api/notification-preferences", headers=bob).json()
    assert got["email"] == "bob@example.com" and got["email_min_minutes"] == 10.0
    assert got["events"]["task_started"] == [] and got["events"]["stalled"] == [
        "browser",
        "email",
        "chat",
        "push",
    ]

    body = {"title": "Blog", "steps": [{"name": "Write posts"}]}
    steps = ["steps/1/start", 'steps/1/fail {"error": "disk full"}', "steps/1/retry", "steps/1/complete"]
    tid = run_task(client, tokens["bob_worker"], tokens["bob"], body, steps)
    rows = settled(client, tokens["bob"], tid, 4 * 4)
    sent = {k for k, v in states(rows).items() if v == "sent"}
    assert sent == {("task_failed", "browser"), ("task_complete", "browser")}
    reasons = {(r["kind"], r["channel"]): r["last_error"] for r in rows if r["state"] == "skipped"}
    assert "under 10 min" in reasons[("task_complete", "email")]
    assert "under 10 min" in reasons[("task_failed", "email")]
    assert reasons[("task_started", "chat")] == "task_started is off for chat"
    assert smtp.messages == [] and receiver.requests == []
    feed = client.get("/api/notifications", headers=bob).json()["notifications"]
    assert [n["text"] for n in feed] == ["❌ Task failed at Step 1", "✅ Your Blog is ready!"]
    assert feed[0]["detail"] == "Blog: Write posts: disk full"


def test_preferences_input_is_checked(client: TestClient, tokens: dict[str, str]) -> None:
    alice = auth(tokens["alice"])
    for bad, path in [
        ({"events": {"task_started": ["fax"]}}, "$.events.task_started[0]"),
        ({"events": {"coffee_ready": ["email"]}}, "$.events"),
        ({"email": "not an address"}, "$.email"),
        ({"email": "a@b.c\r\nBcc: x@y.z"}, "$.email"),
        ({"email_min_minutes": -1}, "$.email_min_minutes"),
        ({"ntfy_topic": "../etc"}, "$.ntfy_topic"),
    ]:
        r = client.put("/api/notification-preferences", json=bad, headers=alice)
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"][0]["path"].startswith(path), r.json()
    r = client.put("/api/notification-preferences", content=b"{", headers=alice)
    assert r.status_code == 400 and r.json()["type"] == "/problems/malformed-json"
    r = client.get("/api/notification-preferences", headers=auth(tokens["alice_worker"]))
    assert r.status_code == 403
    sub = Browser("https://push.example/abc").subscription()
    for broken in (
        {**sub, "endpoint": "ftp://push.example/abc"},
        {**sub, "keys": {**sub["keys"], "p256dh": "AAAA" * 4}},
        {**sub, "keys": {"auth": sub["keys"]["auth"]}},
    ):
        r = client.post("/api/push-subscriptions", json=broken, headers=alice)
        assert r.status_code == 422, r.text


def test_owners_never_see_each_others_notifications(
    client: TestClient, tokens: dict[str, str], receiver: Receiver
) -> None:
    alice, bob = auth(tokens["alice"]), auth(tokens["bob"])
    a = run_task(client, tokens["alice_worker"], tokens["alice"], CRM, ["steps/1/start"])
    b = run_task(client, tokens["bob_worker"], tokens["bob"], CRM, ["steps/1/start", "steps/1/complete"])
    settled(client, tokens["alice"], a, 4)
    settled(client, tokens["bob"], b, 8)
    assert {
        n["task_id"] for n in client.get("/api/notifications", headers=alice).json()["notifications"]
    } == {a}
    assert {n["task_id"] for n in client.get("/api/notifications", headers=bob).json()["notifications"]} == {
        b
    }
    missing = client.get(f"/api/tasks/{a}/notifications", headers=bob)
    assert missing.status_code == 404 and missing.json()["type"] == "/problems/task-not-found"
    browser = Browser(f"{receiver.url}/push/alice")
    sub_id = client.post("/api/push-subscriptions", json=browser.subscription(), headers=alice).json()["id"]
    assert client.get("/api/push-subscriptions", headers=bob).json()["subscriptions"] == []
    assert client.delete(f"/api/push-subscriptions/{sub_id}", headers=bob).status_code == 404
    assert client.delete(f"/api/push-subscriptions/{sub_id}", headers=alice).status_code == 204


def test_failures_are_retried_with_backoff_then_dead_lettered(
    client: TestClient, tokens: dict[str, str], receiver: Receiver
) -> None:
    receiver.by_kind["task_started"] = deque([503, 503, 200])  # accepted on the third try
    receiver.by_kind["task_failed"] = deque([400])  # permanent: dead at once
    receiver.by_kind["task_complete"] = deque([500])  # transient forever: dead after max_attempts (3)
    body = {"title": "Blog", "steps": [{"name": "Write posts"}, {"name": "Publish"}]}
    steps = ["steps/1/start", 'steps/1/fail {"error": "disk full"}']
    tid = run_task(client, tokens["alice_worker"], tokens["alice"], body, steps)
    rows = {(r["kind"], r["channel"]): r for r in settled(client, tokens["alice"], tid, 8)}
    started, failed = rows[("task_started", "chat")], rows[("task_failed", "chat")]
    assert (started["state"], started["attempts"], started["last_error"]) == ("sent", 3, None)
    assert (failed["state"], failed["attempts"]) == ("dead", 1)
    assert failed["last_error"] == "chat: HTTP 400 Bad Request"
    run = ["steps/1/retry", "steps/1/complete", "steps/2/start", "steps/2/complete"]
    for step in run:
        assert (
            client.post(f"/api/tasks/{tid}/{step}", headers=auth(tokens["alice_worker"])).status_code == 200
        )
    rows = {(r["kind"], r["channel"]): r for r in settled(client, tokens["alice"], tid, 5 * 4)}
    done = rows[("task_complete", "chat")]
    assert (done["state"], done["attempts"]) == ("dead", 3)
    assert done["last_error"] == "chat: HTTP 500 Internal Server Error"
    assert Counter(r.headers["x-progressd-dedupe"] for r in receiver.on("/chat")) == {
        started["dedupe_key"]: 3,
        failed["dedupe_key"]: 1,
        done["dedupe_key"]: 3,
    }


def test_a_gone_push_subscription_is_forgotten(
    client: TestClient, tokens: dict[str, str], receiver: Receiver
) -> None:
    alice = auth(tokens["alice"])
    browser = Browser(f"{receiver.url}/push/old-phone")
    assert (
        client.post("/api/push-subscriptions", json=browser.subscription(), headers=alice).status_code == 201
    )
    receiver.by_path["/push/old-phone"] = deque([410])  # the push service no longer knows the subscription
    steps = ["steps/1/start", 'steps/1/fail {"error": "boom"}']
    tid = run_task(client, tokens["alice_worker"], tokens["alice"], CRM, steps)
    rows = states(settled(client, tokens["alice"], tid, 8))
    assert rows[("task_failed", "push")] == "sent"  # nothing left to deliver to is not a failure
    assert client.get("/api/push-subscriptions", headers=alice).json()["subscriptions"] == []


# ---- exactly once across crashes ---------------------------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs."""


class Crashing(Notifier):
    """A worker that dies before or after sending the first notification a predicate picks."""

    def __init__(
        self,
        settings: Settings,
        config: NotifySettings,
        *,
        before: Callable[[Outgoing], bool] | None = None,
        after: Callable[[Outgoing], bool] | None = None,
    ) -> None:
        super().__init__(settings, config)
        self.before, self.after = before, after
        self.dead = False

    async def _dispatch(self, note: Outgoing, done: set[str]) -> Result:
        if self.dead or (self.before is not None and self.before(note)):
            self.dead = True
            raise Crash
        result = await super()._dispatch(note, done)
        if self.dead or (self.after is not None and self.after(note)):
            self.dead = True  # sent, never marked: the window a restart must not turn into a second effect
            raise Crash
        return result


def drive(rt: Runtime, owner: str = "alice") -> str:
    """A whole CRM run through the service, projected, before any worker starts."""
    plan = [
        StepPlan("Create database tables"),
        StepPlan("Generate application UI", substeps=("Customer list",)),
        StepPlan("Configure workflows", requires_approval=True),
    ]
    tid = UUID(str(rt.service.create_sync(owner, NewTask("Cellphone Store CRM", plan, 4)).view["task_id"]))
    position = 0
    for name, args in [
        ("start", {"order": 1}),
        ("complete", {"order": 1}),
        ("start", {"order": 2}),
        ("substep", {"order": 2, "n": 1}),
        ("complete", {"order": 2}),
        ("start", {"order": 3}),
        ("approve", {"order": 3}),
        ("complete", {"order": 3}),
    ]:
        position = rt.service.command_sync(tid, owner, name, args).position
    assert rt.wait_for_sync(position, 10)
    return str(tid)


async def until_dead(worker: Notifier) -> None:
    for _ in range(500):
        task = worker._task
        if task is None or task.done():
            break
        await asyncio.sleep(0.02)
    with contextlib.suppress(BaseExceptionGroup):
        await worker.close()


async def until_settled(store: NotifyStore, count: int) -> list[dict[str, Any]]:
    for _ in range(500):
        rows = await asyncio.to_thread(store.deliveries)
        if len(rows) >= count and all(r["state"] not in ("pending", "sending") for r in rows):
            return rows
        await asyncio.sleep(0.02)
    raise AssertionError("deliveries did not settle")


def test_each_notification_is_delivered_once_across_worker_crashes(
    settings: Settings, smtp: SmtpSink, receiver: Receiver
) -> None:
    config = make_config(smtp, receiver)
    rt = Runtime(settings)
    rt.start()
    try:
        tid = drive(rt)
        store = NotifyStore(settings, config)
        store.save_preferences(
            "alice", store.preferences("alice").__class__(email="alice@example.com", email_min_minutes=0), 0
        )

        async def scenario() -> list[dict[str, Any]]:
            # 1: dies after sending the approval to chat, before marking it sent.
            first = Crashing(
                settings, config, after=lambda n: (n.kind, n.channel) == ("approval_needed", "chat")
            )
            await first.start()
            await until_dead(first)
            # 2: dies after claiming the completion for chat, before sending it.
            second = Crashing(
                settings, config, before=lambda n: (n.kind, n.channel) == ("task_complete", "chat")
            )
            await second.start()
            await until_dead(second)
            # 3: a healthy worker finishes the rest once the dead workers' leases run out.
            third = Notifier(settings, config)
            await third.start()
            try:
                return await until_settled(third.store, 6 * 4)
            finally:
                await third.close()

        rows = asyncio.run(scenario())
        by = {(r["kind"], r["channel"]): r for r in rows}
        chat_keys = [r["dedupe_key"] for r in rows if r["channel"] == "chat" and r["state"] == "sent"]
        email_keys = [r["dedupe_key"] for r in rows if r["channel"] == "email" and r["state"] == "sent"]
        assert {r["kind"] for r in rows if r["channel"] == "chat" and r["state"] == "sent"} == {
            "task_started",
            "approval_needed",
            "task_complete",
        }
        # The chat receiver processed every notification exactly once; the one sent before the crash came
        # again with the same key (and was recognised), the one claimed but not sent came once.
        assert sorted(receiver.processed) == sorted(chat_keys)
        raw = Counter(r.headers["x-progressd-dedupe"] for r in receiver.on("/chat"))
        assert raw[by[("approval_needed", "chat")]["dedupe_key"]] == 2
        assert raw[by[("task_complete", "chat")]["dedupe_key"]] == 1
        assert by[("approval_needed", "chat")]["attempts"] == 2
        # Email: every notification arrived; a repeat could only be the same Message-ID (at-least-once edge).
        ids = Counter((m["X-Progressd-Dedupe"].strip(), m["Message-ID"]) for m in smtp.messages)
        assert {key for key, _ in ids} == set(email_keys) and len(ids) == len(email_keys) == 2
        assert max(ids.values()) <= 2

        # Rebuilding the outbox read model from the log recognises every notification: nothing is re-sent.
        rt.projector.stop()
        rebuild(rt.app, rt.views["notifications"])
        before = len(receiver.requests), len(smtp.messages)

        async def again() -> int:
            worker = Notifier(settings, config)
            await worker.open()
            try:
                return await worker.run_once()
            finally:
                await worker.close()

        asyncio.run(again())
        assert (len(receiver.requests), len(smtp.messages)) == before
        assert len(store.deliveries()) == len(rows) and tid
        store.close()
    finally:
        rt.close()


def test_a_worker_killed_mid_send_delivers_once_after_restart(
    tmp_path: Path, smtp: SmtpSink, receiver: Receiver
) -> None:
    settings = Settings(data_dir=tmp_path)
    config = make_config(smtp, receiver, smtp_host=None)
    receiver.hold_at = 2  # the second chat webhook: received, then the sender is killed before the answer
    rt = Runtime(settings)
    rt.start()
    try:
        drive(rt)

        async def scenario() -> list[dict[str, Any]]:
            first = Notifier(settings, config)
            await first.start()
            await asyncio.to_thread(receiver.holding.wait, 10)
            await first.stop(graceful=False)  # killed mid-send
            await first.close()
            receiver.release.set()
            second = Notifier(settings, config)
            await second.start()
            try:
                return await until_settled(second.store, 6 * 4)
            finally:
                await second.close()

        rows = asyncio.run(scenario())
        chat = [r for r in rows if r["channel"] == "chat" and r["state"] == "sent"]
        assert len(chat) == 3
        assert sorted(receiver.processed) == sorted(r["dedupe_key"] for r in chat)
        raw = Counter(r.headers["x-progressd-dedupe"] for r in receiver.on("/chat"))
        assert sorted(raw.values()) == [1, 1, 2]  # the killed send came again, with its key
    finally:
        rt.close()


def test_a_stalled_step_is_notified_once(tmp_path: Path, smtp: SmtpSink, receiver: Receiver) -> None:
    settings = Settings(data_dir=tmp_path)
    config = make_config(smtp, receiver, stall_interval=0.05, stall_min_seconds=0.3, stall_factor=2.0)
    rt = Runtime(settings)
    rt.start()
    try:
        plan = [StepPlan("Load rows")]
        for _ in range(3):  # history: "Load rows" takes a few milliseconds
            tid = UUID(str(rt.service.create_sync("bob", NewTask("Import", plan, 1)).view["task_id"]))
            rt.service.command_sync(tid, "bob", "start", {"order": 1})
            rt.service.command_sync(tid, "bob", "complete", {"order": 1})
        slow = UUID(str(rt.service.create_sync("bob", NewTask("Import", plan, 1)).view["task_id"]))
        position = rt.service.command_sync(slow, "bob", "start", {"order": 1}).position
        assert rt.wait_for_sync(position, 10)

        async def scenario() -> list[dict[str, Any]]:
            worker = Notifier(settings, config)
            await worker.start()
            try:
                for _ in range(500):
                    rows = await asyncio.to_thread(worker.store.for_task, str(slow))
                    stalls = [r for r in rows if r["kind"] == "stalled" and r["state"] == "sent"]
                    if len(stalls) == 2:  # browser and chat
                        break
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.3)  # more checks run: they must not report the same stall again
                return await asyncio.to_thread(worker.store.for_task, str(slow))
            finally:
                await worker.close()

        rows = asyncio.run(scenario())
        stalls = [r for r in rows if r["kind"] == "stalled"]
        assert sorted((r["channel"], r["state"]) for r in stalls) == [
            ("browser", "sent"),
            ("chat", "sent"),
            ("email", "skipped"),
            ("push", "skipped"),
        ]
        assert stalls[0]["text"] == "⏳ Step 1 is taking longer than usual"
        assert [r.json()["kind"] for r in receiver.on("/chat")].count("stalled") == 1
    finally:
        rt.close()
