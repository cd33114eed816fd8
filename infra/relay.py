"""The NATS relay: follows the event log and publishes every Task event to JetStream as a CloudEvent.

The log decides what happened; JetStream only tells others. The relay is a projection like any other: it
reads the notifications after its own tracked position, publishes them in log order, and records the new
position (an eventsourcing tracking record named ``nats_relay``) only after JetStream acknowledged them.
A crash between the two re-publishes a few events on restart; ``Nats-Msg-Id: <task_id>:<seq>`` and the
stream's duplicate window make that harmless.

Publishes are pipelined (``js.publish_async``, one batch in flight). So that a message lost with a
dropped connection can never be overtaken by the next one (which would store the stream out of order),
every message but the first of an attempt carries ``Nats-Expected-Last-Msg-Id`` naming its predecessor:
JetStream refuses it unless the predecessor is the stream's last message. Dedupe is checked before that
expectation, so a re-published message is still answered as a duplicate.

A core-NATS hint ``<prefix>.wake`` (payload: a log position, ASCII) tells other processes that the log
moved: at once when this process's writer commits (`wake(position)`), and for each batch read from the log
that no hint covered yet, before the batch goes to JetStream (their data comes from the log, so waiting for
JetStream's acks would only delay them). Hints go out in increasing order; each is only a hint, may be
lost; data always comes from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.errors
import structlog
from eventsourcing.persistence import Notification, Tracking
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import Header, PubAck, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from domain.task import Task
from infra.settings import Settings
from infra.store import ProgressApp, event_record
from infra.views import ViewRecorder, open_view
from projections.model import ReadModel

log = structlog.get_logger(__name__)

STREAM = "PROGRESS"
SOURCE = "/progressd"
TYPE_PREFIX = "dev.progressd.task."
CE_CONTENT_TYPE = "application/cloudevents+json"
RELAY_NAME = "nats_relay"
SPECVERSION = "1.0"
_ENCODER = msgspec.json.Encoder()
_CONNECTION_LOST = (nats.errors.StaleConnectionError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True)
class Subjects:
    """Every NATS subject progressd uses, under one prefix (tests use their own prefix per test)."""

    prefix: str = "progress"

    @property
    def stream(self) -> str:
        """The JetStream stream of the events: PROGRESS for the default prefix."""
        return self.prefix.replace(".", "_").upper()

    @property
    def events(self) -> str:
        """The JetStream stream's subjects: task events only, never the command requests."""
        return f"{self.prefix}.tasks.>"

    def event(self, task_id: str, kind: str) -> str:
        return f"{self.prefix}.tasks.{task_id}.{kind}"

    @property
    def wake(self) -> str:
        return f"{self.prefix}.wake"

    @property
    def commands(self) -> str:
        return f"{self.prefix}.commands.>"

    @property
    def create(self) -> str:
        return f"{self.prefix}.commands.create"

    def command(self, task_id: str, name: str) -> str:
        return f"{self.prefix}.commands.{task_id}.{name}"

    @property
    def queries(self) -> str:
        return f"{self.prefix}.queries.>"

    def query(self, task_id: str, name: str) -> str:
        return f"{self.prefix}.queries.{task_id}.{name}"


def cloud_event(domain_event: Any, position: int) -> dict[str, Any]:
    """A Task event as a CloudEvents 1.0 event in structured JSON mode; its data is the event record plus
    its log position. Encoded with msgspec (`time` in RFC 3339 with `Z`, as the CloudEvents SDK writes it):
    the SDK's own event and writer cost about as much again as decoding the event from the log."""
    record = event_record(domain_event)
    record["position"] = position
    return {
        "id": f"{record['task_id']}:{record['seq']}",
        "source": SOURCE,
        "type": TYPE_PREFIX + record["type"],
        "subject": record["task_id"],
        "time": domain_event.timestamp,
        "datacontenttype": "application/json",
        "specversion": SPECVERSION,
        "data": record,
    }


@dataclass(frozen=True)
class Outgoing:
    """One message ready to publish: where it goes, its dedupe id and the encoded CloudEvent."""

    position: int
    subject: str
    msg_id: str
    payload: bytes


@dataclass(frozen=True)
class Batch:
    """What a read of the log found: the messages, the last position read, and the log's head."""

    messages: list[Outgoing]
    last: int
    head: int


def outgoing(app: ProgressApp, notification: Notification, subjects: Subjects) -> Outgoing | None:
    """The message for a notification, or None for anything that is not a Task event."""
    domain_event = app.mapper.to_domain_event(notification)
    if not isinstance(domain_event, Task.Event):
        return None
    return message(domain_event, notification.id, subjects)


def message(domain_event: Any, position: int, subjects: Subjects) -> Outgoing:
    """A Task event at a log position as the message to publish."""
    event = cloud_event(domain_event, position)
    record = event["data"]
    return Outgoing(
        position=position,
        subject=subjects.event(record["task_id"], record["type"]),
        msg_id=event["id"],
        payload=_ENCODER.encode(event),
    )


class NatsLink:
    """One NATS connection that reconnects forever and logs each outage once, not every attempt."""

    def __init__(self, url: str, name: str, *, reconnect_wait: int = 1, connect_timeout: int = 2) -> None:
        self.url = url
        self.name = name
        self.reconnect_wait = reconnect_wait
        self.connect_timeout = connect_timeout
        self.nc = NatsClient()
        self.outages = 0
        self.ever_connected = False
        self._down_since: float | None = None
        self._closing = False

    async def connect(self) -> NatsClient:
        """Connect, retrying every `reconnect_wait` seconds until the server answers (cancellable)."""
        await self.nc.connect(
            servers=[self.url],
            name=self.name,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            max_reconnect_attempts=-1,
            reconnect_time_wait=self.reconnect_wait,
            connect_timeout=self.connect_timeout,
        )
        self.ever_connected = True
        self._up()
        return self.nc

    @property
    def connected(self) -> bool:
        return self.nc.is_connected

    async def close(self, grace: float = 5.0) -> None:
        """Drain (finish subscriptions, flush publishes) and close; just close if that cannot be done."""
        self._closing = True
        if self.nc.is_closed:
            return
        if self.nc.is_connected:
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await asyncio.wait_for(self.nc.drain(), grace)
        if not self.nc.is_closed:
            await self.nc.close()

    async def _on_error(self, exc: Exception) -> None:
        # A lost connection is reported here first (UnexpectedEOF while still "connected"), then to
        # disconnected_cb; both belong to the same outage.
        if self.nc.is_connected and not isinstance(exc, _CONNECTION_LOST):
            log.warning("nats_error", connection=self.name, error=repr(exc))
        else:
            self._down(exc)

    async def _on_disconnected(self) -> None:
        self._down(None)

    async def _on_reconnected(self) -> None:
        self._up()

    def _down(self, exc: Exception | None) -> None:
        """Log the start of an outage (a failed first connect counts); its further attempts stay quiet."""
        if self._closing or self._down_since is not None:
            return
        self._down_since = time.monotonic()
        self.outages += 1
        log.warning("nats_unavailable", connection=self.name, url=self.url, error=repr(exc) if exc else None)

    def _up(self) -> None:
        if self._down_since is not None:
            log.info(
                "nats_connected",
                connection=self.name,
                url=self.url,
                down_seconds=round(time.monotonic() - self._down_since, 3),
            )
        self._down_since = None


class Relay:
    """Publishes the event log to JetStream, exactly once per event, in log order, from its tracked position.

    `await start()` returns at once (NATS may be down; the relay connects in the background) and
    `await stop()` finishes the batch in flight and drains the connection. `wake()` may be called from
    any thread, e.g. `service.on_saved(relay.wake)`; without it the relay polls every `poll` seconds.
    """

    def __init__(
        self,
        app: ProgressApp,
        settings: Settings,
        *,
        subjects: Subjects | None = None,
        stream: str | None = None,
        name: str = RELAY_NAME,
        batch: int = 1024,
        ack_timeout: float = 5.0,
        poll: float = 0.5,
        duplicate_window: float = 600.0,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        if settings.nats_url is None:
            raise ValueError("the NATS relay needs Settings.nats_url (PROGRESSD_NATS_URL)")
        self.app = app
        self.settings = settings
        self.subjects = subjects or Subjects(settings.nats_prefix)
        self.stream = stream or self.subjects.stream
        self.name = name
        self.batch = batch
        self.ack_timeout = ack_timeout
        self.poll = poll
        self.duplicate_window = duplicate_window
        self.backoff = backoff
        self.link = NatsLink(settings.nats_url, f"progressd-relay-{name}")
        self.position = 0
        self.head = 0
        self.hinted = 0  # the last position announced on the wake subject
        self.published = 0
        self.duplicates = 0
        self.stalls = 0
        self.last_error: str | None = None
        self._view: ViewRecorder | None = None
        self._chain: str | None = None
        self._stalled_since: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._moved = asyncio.Condition()
        self._nc: NatsClient | None = None
        self._hints: set[asyncio.Task[None]] = set()

    # ---- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the tracking recorder, read the tracked position and start following the log."""
        if self._task is not None:
            raise RuntimeError("relay already started")
        self._loop = asyncio.get_running_loop()
        self._view = await asyncio.to_thread(open_view, self.settings, relay_model(self.name))
        self.position = await asyncio.to_thread(self._tracked)
        self._task = asyncio.create_task(self._run(), name=f"progressd-{self.name}")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop after the batch in flight (at most `grace` s), drain the connection, close the recorder."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            if not self.link.ever_connected:
                self._task.cancel()  # still waiting for a first connection: nothing in flight
            done, _ = await asyncio.wait({self._task}, timeout=grace)
            if not done:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.link.close()
        if self._view is not None:
            view, self._view = self._view, None
            await asyncio.to_thread(_close_view, view)

    def wake(self, position: int = 0) -> None:
        """Tell the relay the log moved (up to `position`, when known); safe from any thread (the service's
        writer thread calls it after each commit)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            loop.call_soon_threadsafe(self._woken, position)

    def _woken(self, position: int) -> None:
        self._wake.set()
        nc = self._nc
        if position > self.hinted and nc is not None and nc.is_connected:
            # Other gateways hear of a commit at once, not after this relay has read and published it.
            task = asyncio.create_task(self._hint(nc, position))
            self._hints.add(task)
            task.add_done_callback(self._hints.discard)

    async def _hint(self, nc: NatsClient, position: int) -> None:
        """Announce that the log reached `position` (a hint only: never let it fill the reconnect buffer)."""
        if position <= self.hinted or not nc.is_connected:
            return
        self.hinted = position  # checked and set with no await in between: hints go out in order
        with contextlib.suppress(nats.errors.Error):
            await nc.publish(self.subjects.wake, str(position).encode())

    # ---- observation ------------------------------------------------------------------------------------

    @property
    def lag(self) -> int:
        """Events in the log not yet acknowledged by JetStream, as of the last read of the log's head."""
        return max(0, self.head - self.position)

    async def measure_lag(self) -> int:
        """Read the log's head now and return the lag."""
        self.head = max(self.head, await asyncio.to_thread(self.app.head))
        return self.lag

    async def wait_for(self, position: int, limit: float) -> bool:
        """Wait until everything up to `position` is in JetStream and tracked (True) or `limit` s passed."""
        async with self._moved:
            try:
                await asyncio.wait_for(self._moved.wait_for(lambda: self.position >= position), limit)
            except TimeoutError:
                return False
        return True

    # ---- the loop ---------------------------------------------------------------------------------------

    async def _run(self) -> None:
        nc = self._nc = await self.link.connect()
        js = nc.jetstream(timeout=self.ack_timeout)
        delay = self.backoff[0]
        stream_ready = False
        while not self._stopping.is_set():
            try:
                if not nc.is_connected:
                    raise nats.errors.ConnectionClosedError if nc.is_closed else _Disconnected("reconnecting")
                if not stream_ready:
                    await self._ensure_stream(js)
                    stream_ready = True
                moved = await self._pump(nc, js)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # anything: keep the relay alive, say so once, back off, retry
                stream_ready = False
                self._chain = None
                self._stalled(exc)
                await self._sleep(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            self._resumed()
            delay = self.backoff[0]
            if not moved:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll)

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        """Create the stream if it is missing; an existing one is left as it is configured."""
        try:
            info = await js.stream_info(self.stream)
        except NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=self.stream,
                    description="progressd task events (CloudEvents), relayed from the event log",
                    subjects=[self.subjects.events],
                    storage=StorageType.FILE,
                    duplicate_window=self.duplicate_window,
                )
            )
            log.info("nats_stream_created", stream=self.stream, subjects=[self.subjects.events])
            return
        if self.subjects.events not in (info.config.subjects or []):
            log.warning("nats_stream_subjects", stream=self.stream, subjects=info.config.subjects)

    async def _pump(self, nc: NatsClient, js: JetStreamContext) -> bool:
        """Publish the next batch and track it; return whether the position moved."""
        self._wake.clear()
        batch = await asyncio.to_thread(self._read, self.position)
        self.head = max(self.head, batch.head)
        if batch.last <= self.position:
            return False
        # Other gateways read the events from the log, not from JetStream: tell them it moved (unless this
        # process's writer has already announced it), before publishing.
        await self._hint(nc, batch.last)
        acked, duplicates, error = await self._publish(js, batch.messages)
        if error is None:
            reached = batch.last
        elif acked:
            reached = batch.messages[acked - 1].position
        else:
            raise error
        await asyncio.to_thread(self._track, reached)
        async with self._moved:
            self.position = reached
            self._moved.notify_all()
        self.published += acked
        self.duplicates += duplicates
        if error is not None:
            raise error
        return True

    async def _publish(
        self, js: JetStreamContext, messages: Sequence[Outgoing]
    ) -> tuple[int, int, BaseException | None]:
        """Publish in order with every ack awaited; return the acked prefix length, its dupes, the error."""
        futures: list[asyncio.Future[PubAck]] = []
        error: BaseException | None = None
        try:
            for message in messages:
                headers = {Header.MSG_ID.value: message.msg_id, "Content-Type": CE_CONTENT_TYPE}
                if self._chain is not None:
                    headers[Header.EXPECTED_LAST_MSG_ID.value] = self._chain
                futures.append(
                    await js.publish_async(
                        message.subject, message.payload, headers=headers, wait_stall=self.ack_timeout
                    )
                )
                self._chain = message.msg_id
        except nats.errors.Error as exc:
            error = exc
        if futures:
            await asyncio.wait(futures, timeout=self.ack_timeout)
        acked = duplicates = 0
        for future in futures:
            if not future.done() or future.cancelled():
                future.cancel()
                error = error or TimeoutError(f"no JetStream ack within {self.ack_timeout}s")
            elif (failure := future.exception()) is not None:  # retrieved: asyncio will not warn
                error = error or failure
            elif error is None:
                acked += 1
                duplicates += bool(future.result().duplicate)
        return acked, duplicates, error

    # ---- store calls (worker threads) -------------------------------------------------------------------

    def _read(self, after: int) -> Batch:
        notifications = self.app.notifications(after, self.batch)
        messages = [m for n in notifications if (m := outgoing(self.app, n, self.subjects)) is not None]
        last = notifications[-1].id if notifications else after
        return Batch(messages, last, max(last, self.app.head()))

    def _track(self, position: int) -> None:
        assert self._view is not None
        self._view.apply([], Tracking(self.name, position))

    def _tracked(self) -> int:
        assert self._view is not None
        return self._view.max_tracking_id(self.name) or 0

    # ---- helpers ----------------------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _stalled(self, exc: Exception) -> None:
        self.last_error = repr(exc)
        if self._stalled_since is None:
            self._stalled_since = time.monotonic()
            self.stalls += 1
            log.warning("relay_stalled", relay=self.name, position=self.position, error=repr(exc))

    def _resumed(self) -> None:
        if self._stalled_since is not None:
            log.info(
                "relay_resumed",
                relay=self.name,
                position=self.position,
                stalled_seconds=round(time.monotonic() - self._stalled_since, 3),
            )
            self._stalled_since = None
            self.last_error = None


def relay_model(name: str = RELAY_NAME) -> ReadModel:
    """The relay's 'read model': no tables, only a tracking record under its name."""
    return ReadModel(name, (), handle=lambda change: [], doc="NATS relay position (JetStream acked)")


def _close_view(view: ViewRecorder) -> None:
    datastore = getattr(view, "datastore", None)
    if datastore is not None:
        datastore.close()


class _Disconnected(Exception):
    """The NATS connection is down; the client is reconnecting in the background."""
