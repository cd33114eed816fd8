"""The delivery worker: outbox rows become deliveries, each sent once per channel, retried, or dead-lettered.

One loop, woken by the projector (or every `poll` seconds):
1. `materialise`: new `notification_outbox` rows become `notification_deliveries` rows, decided by the owner's
   preferences (cursor and rows in one transaction);
2. every `stall_interval`: running steps far beyond their history's p90 get a `stalled` notification, once per
   step attempt;
3. due deliveries are claimed (a lease), sent, and marked: `sent`, back to `pending` with exponential
   backoff, or `dead` after `max_attempts` or a permanent error. Channels run side by side, each in log
   order (a row waiting for its retry does not hold up the ones after it).

Exactly once: a row is claimed before it is sent and marked after, both committed. A crash before the send
leaves a claim that expires and the row is sent then; a crash after the send and before the mark re-sends it
once the lease expires, with the same dedupe key: chat webhooks and ntfy get the same `Idempotency-Key` /
`X-Progressd-Dedupe`, push the same `Topic`, email the same `Message-ID` (SMTP cannot refuse a repeat, so that
window is at-least-once for email).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from infra.channels.base import Failure, Outgoing, Result
from infra.channels.email import Email
from infra.channels.guard import public_only_client
from infra.channels.webhook import ChatWebhook, Ntfy
from infra.channels.webpush import WebPush
from infra.notifyconfig import NotifySettings
from infra.notifystore import NotifyStore
from infra.settings import Settings
from projections.notifications import stalled_steps, stats_index

log = structlog.get_logger(__name__)
DUE_BATCH = 100


class Notifier:
    """Owns the notification store and the delivery loop; start and stop it in the app's lifespan."""

    def __init__(
        self,
        settings: Settings,
        config: NotifySettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.config = config or NotifySettings.from_env(settings=settings)
        self.clock = clock
        self._store: NotifyStore | None = None
        self._client: httpx.AsyncClient | None = None  # operator-configured URLs: chat, ntfy
        self._push_client: httpx.AsyncClient | None = None  # owners' push endpoints: public addresses only
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._next_stall_check = 0.0
        self.sent = 0
        self.failed = 0

    @property
    def is_open(self) -> bool:
        return self._store is not None

    @property
    def store(self) -> NotifyStore:
        if self._store is None:
            raise RuntimeError("the notifier is not open: call `await notifier.open()` or `start()` first")
        return self._store

    async def open(self) -> NotifyStore:
        """Open the store (creating its tables) without starting the loop; routes need only this."""
        if self._store is None:
            self._store = await asyncio.to_thread(NotifyStore, self.settings, self.config)
        return self._store

    async def start(self) -> None:
        """Open the store and the HTTP client and start the delivery loop."""
        await self.open()
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._client = httpx.AsyncClient(timeout=self.config.timeout, follow_redirects=False)
        self._push_client = (
            httpx.AsyncClient(timeout=self.config.timeout, follow_redirects=False)
            if self.config.allow_private
            else public_only_client(self.config.timeout)
        )
        self._task = asyncio.create_task(self._run(), name="progressd-notifier")

    async def stop(self, *, graceful: bool = True) -> None:
        """Finish the batch in hand (up to the send timeout), then stop; `graceful=False` stops at once."""
        self._stopping = True
        self.wake()
        task, self._task = self._task, None
        try:
            if task is not None:
                if graceful:
                    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                        await asyncio.wait_for(asyncio.shield(task), self.config.timeout + 1)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            for client in (self._client, self._push_client):
                if client is not None:
                    await client.aclose()
            self._client = self._push_client = None

    async def close(self) -> None:
        """Stop and close the store."""
        try:
            await self.stop()
        finally:
            if self._store is not None:
                await asyncio.to_thread(self._store.close)
                self._store = None

    def wake(self, *_: object) -> None:
        """Look at the outbox now; safe to call from any thread (the projector's listener)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    # ---- the loop ---------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            try:
                busy = await self.run_once()
            except Exception as exc:  # the store is down or a bug: log loudly, keep going
                log.error("notifier_failed", error=str(exc), exc_info=True)
                busy = 0
                await asyncio.sleep(1.0)
            if busy or self._stopping:
                continue
            timeout = self.config.poll
            upcoming = await asyncio.to_thread(self.store.next_due)
            if upcoming is not None:
                timeout = min(timeout, max(0.0, upcoming - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    async def run_once(self) -> int:
        """One pass: new outbox rows, stalls when due, then what is due to send; returns the rows seen."""
        store = self.store
        seen = 0
        while n := await asyncio.to_thread(store.materialise, self.clock()):
            seen += n
        if self.clock() >= self._next_stall_check:
            self._next_stall_check = self.clock() + self.config.stall_interval
            seen += await self.check_stalls()
        due = await asyncio.to_thread(store.due, self.clock(), DUE_BATCH)
        by_channel: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in due:
            by_channel[str(row["channel"])].append(row)
        async with asyncio.TaskGroup() as group:  # one failing channel cancels the others: no orphans
            for rows in by_channel.values():
                group.create_task(self._send_in_order(rows))
        return seen + len(due)

    async def _send_in_order(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            await self.deliver(row)

    async def check_stalls(self) -> int:
        """Notify once per running step far beyond its history (`step_stats` p90 times `stall_factor`)."""
        store = self.store
        views = await asyncio.to_thread(store.running_views)
        if not views:
            return 0
        stats = stats_index(await asyncio.to_thread(store.step_stats))
        now = self.clock()
        found = 0
        for view in views:
            for stall in stalled_steps(
                view,
                stats,
                datetime.fromtimestamp(now, UTC),
                factor=self.config.stall_factor,
                min_samples=self.config.stall_min_samples,
                min_ms=self.config.stall_min_seconds * 1000,
            ):
                if await asyncio.to_thread(store.add_stall, view, stall, now):
                    found += 1
        return found

    # ---- one delivery -----------------------------------------------------------------------------------

    async def deliver(self, row: Mapping[str, Any]) -> str | None:
        """Claim, send and mark one due row; returns its new state (None when another worker had it)."""
        store = self.store
        key = str(row["dedupe_key"])
        token = secrets.token_hex(8)
        if not await asyncio.to_thread(store.claim, key, self.clock(), token):
            return None
        note = Outgoing.from_row(row, self.config.public_url)
        done: set[str] = set(json.loads(row.get("done_targets") or "[]"))
        try:
            result = await self._dispatch(note, done)
        except Exception as exc:  # a channel bug must not stop the loop: retry like any failure
            log.error("notification_send_bug", key=key, exc_info=True)
            result = Result(failures=[Failure(note.channel, f"{type(exc).__name__}: {exc}")])
        done |= result.sent
        attempts = int(row.get("attempts") or 0) + 1
        now = self.clock()
        if result.nothing and not result.sent and not result.failures:
            await asyncio.to_thread(
                store.mark_failed, key, token, result.nothing, sorted(done), retry_at=None, state="skipped"
            )
            return "skipped"
        if result.ok:
            await asyncio.to_thread(store.mark_sent, key, token, sorted(done), now)
            self.sent += 1
            log.info("notification_sent", key=key, attempts=attempts)
            return "sent"
        self.failed += 1
        error = "; ".join(f"{f.target}: {f.error}" for f in result.failures)
        if all(f.permanent for f in result.failures) or attempts >= self.config.max_attempts:
            await asyncio.to_thread(
                store.mark_failed, key, token, error, sorted(done), retry_at=None, state="dead"
            )
            log.warning("notification_dead", key=key, attempts=attempts, error=error)
            return "dead"
        wait = max([self.config.backoff_for(attempts), *(f.retry_after or 0.0 for f in result.failures)])
        wait = min(wait, self.config.backoff_max)
        await asyncio.to_thread(
            store.mark_failed, key, token, error, sorted(done), retry_at=now + wait, state="pending"
        )
        log.info("notification_retry", key=key, attempts=attempts, in_seconds=round(wait, 2), error=error)
        return "pending"

    async def _dispatch(self, note: Outgoing, done: set[str]) -> Result:
        cfg = self.config
        client = self._client
        assert client is not None
        store = self.store
        match note.channel:
            case "browser":
                return Result(sent={"feed"})
            case "email":
                if not cfg.smtp_host:
                    return Result(nothing="email is not configured")
                prefs = await asyncio.to_thread(store.preferences, note.owner)
                return await Email(cfg).send(note, prefs.email)
            case "chat":
                if not cfg.chat_webhook_url:
                    return Result(nothing="no chat webhook is configured")
                return await ChatWebhook(cfg.chat_webhook_url, client).send(note)
            case "push":
                prefs = await asyncio.to_thread(store.preferences, note.owner)
                subs = await asyncio.to_thread(store.subscriptions, note.owner)
                now = self.clock()
                assert self._push_client is not None
                push = WebPush(
                    self._push_client,
                    cfg.vapid_subject,
                    keys=lambda: store.vapid(now),
                    forget=lambda sub_id: store.delete_subscription(note.owner, sub_id),
                )
                result = await push.send(note, subs, done)
                topic = prefs.ntfy_topic if cfg.ntfy_url else None
                if topic and f"ntfy:{topic}" not in done:
                    assert cfg.ntfy_url is not None
                    extra = await Ntfy(cfg.ntfy_url, client).send(note, topic)
                    result.sent |= extra.sent
                    result.failures += extra.failures
                if not subs and not topic:
                    return Result(nothing="no push subscription or ntfy topic")
                return result
        return Result(failures=[Failure(note.channel, f"unknown channel {note.channel}", permanent=True)])
