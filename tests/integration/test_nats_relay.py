"""The NATS relay on a real nats-server with JetStream: every event of the log exactly once, in log order.

Tests that kill or restart NATS run their own EmbeddedNats in a temp dir; the others share the session
server under a unique subject prefix and stream name.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import nats
import nats.errors
import nats.js.errors
import pytest
from cloudevents.core.formats.json import JSONFormat
from eventsourcing.persistence import Tracking
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from structlog.testing import capture_logs

from domain.task import StepPlan
from infra import eventschema
from infra.embedded import EmbeddedNats
from infra.relay import Relay, Subjects, relay_model
from infra.service import NewTask, TaskService
from infra.settings import Settings
from infra.store import ProgressApp, event_record, open_store
from infra.views import open_view
from tests.conftest import unique_name

OWNER = "local"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.schema.json"


class Env:
    """One test's store, writer service and NATS names (a unique prefix and stream on a shared server)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: ProgressApp = open_store(settings)
        self.service = TaskService(self.app)
        self.subjects = Subjects(unique_name("p"))
        self.stream = unique_name("S").upper()

    def relay(self, **options: Any) -> Relay:
        options.setdefault("backoff", (0.05, 0.5))
        relay = Relay(self.app, self.settings, subjects=self.subjects, stream=self.stream, **options)
        self.service.on_saved(relay.wake)
        return relay

    def close(self) -> None:
        self.service.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def settings_for(tmp_path: Path, nats_url: str, pg_url: str | None = None) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=pg_url, nats_url=nats_url)


@pytest.fixture
def local_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A NATS server of this test's own, so it can be killed without touching the session's."""
    with EmbeddedNats(tmp_path / "nats", start_timeout=10) as server:
        yield server


async def drive(service: TaskService, steps: int, updates: int, title: str = "relay") -> UUID:
    """A task through all its steps: start, `updates` progress reports and log lines each, complete."""
    plan = [StepPlan(f"step {i}") for i in range(1, steps + 1)]
    created = await service.create(OWNER, NewTask(title, plan))
    task_id = UUID(created.view["task_id"])
    for order in range(1, steps + 1):
        await service.command(task_id, OWNER, "start", {"order": order})
        for k in range(updates):
            await service.command(task_id, OWNER, "progress", {"order": order, "percent": k * 100 / updates})
            await service.command(task_id, OWNER, "log", {"level": "info", "message": f"{order}.{k}"})
        await service.command(task_id, OWNER, "complete", {"order": order})
    return task_id


async def consume(url: str, env: Env, expected: int, limit: float = 15.0) -> list[Msg]:
    """Everything in the stream, through an ephemeral pull consumer with explicit acks; fails on extras."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(env.subjects.events, stream=env.stream)
        got: list[Msg] = []
        deadline = time.monotonic() + limit
        while len(got) < expected and time.monotonic() < deadline:
            try:
                batch = await sub.fetch(min(500, expected - len(got)), timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in batch:
                await msg.ack()
            got.extend(batch)
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=0.3)  # nothing beyond what the log holds
        info = await js.stream_info(env.stream)
        assert info.state.messages == expected
        await sub.unsubscribe()
        return got
    finally:
        await nc.close()


def tracked(settings: Settings) -> int | None:
    """The relay's position as its tracking record holds it."""
    view = open_view(settings, relay_model())
    try:
        return view.max_tracking_id("nats_relay")
    finally:
        getattr(view, "datastore").close()  # noqa: B009 - both recorders have one


def expected_log(app: ProgressApp) -> list[dict[str, Any]]:
    """What the relay must have published: every notification of the log, as data, in order."""
    out = []
    for n in app.notifications(0, 100_000):
        record = event_record(app.mapper.to_domain_event(n))
        out.append({**record, "position": n.id})
    return out


def assert_exactly_the_log(messages: list[Msg], env: Env) -> None:
    """The stream holds each event of the log once, in log order, as a CloudEvent matching the schema."""
    expected = expected_log(env.app)
    assert len(messages) == len(expected)
    for msg, want in zip(messages, expected, strict=True):
        event = JSONFormat().read(None, msg.data)
        assert event.get_id() == f"{want['task_id']}:{want['seq']}"
        assert event.get_type() == f"dev.progressd.task.{want['type']}"
        assert event.get_source() == "/progressd"
        assert event.get_subject() == want["task_id"]
        assert event.get_data() == json.loads(json.dumps(want))
        assert msg.subject == env.subjects.event(want["task_id"], want["type"])
        assert msg.headers is not None
        assert msg.headers["Nats-Msg-Id"] == event.get_id()
        assert msg.headers["Content-Type"] == "application/cloudevents+json"
        msgspec.json.decode(msg.data, type=eventschema.TASK_EVENT)  # strict: the documented schema holds
    assert msgspec.json.decode(messages[-1].data)["data"]["position"] == env.app.head()


def test_committed_schema_is_the_generated_one() -> None:
    assert DOCS.read_text() == eventschema.render(), (
        "run: python -m infra.eventschema > docs/events.schema.json"
    )


@pytest.mark.nats
def test_relay_publishes_every_event_once_in_log_order(
    backend: str, tmp_path: Path, nats_url: str, request: pytest.FixtureRequest
) -> None:
    pg_url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    env = Env(settings_for(tmp_path, nats_url, pg_url))

    async def scenario() -> None:
        hints: list[int] = []
        nc = await nats.connect(nats_url)

        async def on_wake(msg: Msg) -> None:
            hints.append(int(msg.data))

        await nc.subscribe(env.subjects.wake, cb=on_wake)
        relay = env.relay()
        await relay.start()
        try:
            # Two tasks written concurrently while the relay follows: the log interleaves them.
            await asyncio.gather(drive(env.service, 3, 10, "one"), drive(env.service, 2, 10, "two"))
            head = env.app.head()
            assert await relay.wait_for(head, 15), f"relay at {relay.position} of {head}"
            assert relay.lag == 0 and await relay.measure_lag() == 0
            assert relay.published == head and relay.duplicates == 0
        finally:
            await relay.stop()
        assert tracked(env.settings) == head
        assert_exactly_the_log(await consume(nats_url, env, head), env)
        await nc.flush()
        assert hints and hints[-1] == head and hints == sorted(hints)
        await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        env.close()


@pytest.mark.nats
def test_a_commit_is_hinted_to_other_gateways_before_the_relay_reads_it(
    tmp_path: Path, nats_url: str
) -> None:
    """The writer's wake-up carries the committed position: the hint goes out at once (in order, once),
    not after the relay has read the log; positions it already announced are not announced again."""
    env = Env(settings_for(tmp_path, nats_url))

    async def scenario() -> tuple[int, list[int]]:
        hints: list[int] = []
        heard = asyncio.Event()
        nc = await nats.connect(nats_url)

        async def on_wake(msg: Msg) -> None:
            hints.append(int(msg.data))
            heard.set()

        await nc.subscribe(env.subjects.wake, cb=on_wake)
        relay = env.relay(poll=60.0)
        await relay.start()
        try:
            await asyncio.to_thread(env.service.create_sync, OWNER, NewTask("t", [StepPlan("a")]))
            head = env.app.head()
            assert await relay.wait_for(head, 15)
            await nc.flush()
            # As if this process's writer had just committed further than the relay has read: the hint
            # names that position although the relay has nothing new to read from the log.
            relay.wake(head + 3)
            relay.wake(head + 2)  # older than what was announced: no hint
            relay.wake(head + 3)  # already announced: no hint
            heard.clear()
            await asyncio.wait_for(heard.wait(), 5)
            await asyncio.sleep(0.2)  # time for a hint that should not come
            await nc.flush()
        finally:
            await relay.stop()
            await nc.close()
        return head, hints

    try:
        head, hints = asyncio.run(scenario())
    finally:
        env.close()
    assert hints == [head, head + 3]  # each position once, in order


@pytest.mark.nats
def test_relay_catch_up_throughput(tmp_path: Path, nats_url: str) -> None:
    """A backlog written with NATS unconfigured is relayed at well over the store's write rate."""
    env = Env(settings_for(tmp_path, nats_url))

    async def scenario() -> None:
        for i in range(30):
            await drive(env.service, 2, 10, f"backlog {i}")
        head = env.app.head()
        relay = env.relay(batch=512)
        started = time.perf_counter()
        await relay.start()
        try:
            assert await relay.wait_for(head, 20)
            rate = head / (time.perf_counter() - started)
        finally:
            await relay.stop()
        print(f"\nrelay catch-up: {head} events at {rate:,.0f} events/s")
        assert rate > 300  # measured ~3-4k/s on SQLite; a floor that only a broken pipeline misses
        assert_exactly_the_log(await consume(nats_url, env, head), env)

    try:
        asyncio.run(scenario())
    finally:
        env.close()


@pytest.mark.nats
def test_nats_outage_mid_task_loses_and_doubles_nothing(tmp_path: Path, local_nats: EmbeddedNats) -> None:
    env = Env(settings_for(tmp_path, local_nats.url))

    async def scenario() -> None:
        relay = env.relay(ack_timeout=1.0)
        await relay.start()
        try:
            task_id = await drive(env.service, 1, 20, "before")
            assert await relay.wait_for(env.app.head(), 10)
            with capture_logs() as logs:
                # A writer keeps going while NATS is SIGKILLed under the relay's in-flight publishes.
                async def writer() -> None:
                    for k in range(150):
                        out = await env.service.command(
                            task_id, OWNER, "log", {"level": "info", "message": f"{k}"}
                        )
                        assert out.version > 0  # commands never touch NATS: they keep succeeding
                        await asyncio.sleep(0.002)

                writing = asyncio.create_task(writer())
                await asyncio.sleep(0.1)
                await asyncio.to_thread(local_nats.kill)
                await writing
                await drive(env.service, 2, 5, "during")
                await asyncio.sleep(1.0)  # several retries happen in here: they must not log every time
                assert await relay.measure_lag() > 2 * 12
                await asyncio.to_thread(local_nats.start)
                head = env.app.head()
                assert await relay.wait_for(head, 15), f"relay at {relay.position} of {head}"
            events = [e["event"] for e in logs]
            assert "nats_error" not in events, events
            assert events.count("relay_stalled") == 1, events
            assert events.count("nats_unavailable") == 1, events
            assert events.count("relay_resumed") == 1 and events.count("nats_connected") == 1, events
            assert relay.stalls == 1
        finally:
            await relay.stop()
        assert_exactly_the_log(await consume(local_nats.url, env, env.app.head()), env)

    try:
        asyncio.run(scenario())
    finally:
        env.close()


@pytest.mark.nats
def test_stop_does_not_hang_while_nats_is_down(tmp_path: Path, local_nats: EmbeddedNats) -> None:
    env = Env(settings_for(tmp_path, local_nats.url))

    async def scenario() -> None:
        connected = env.relay()
        await connected.start()
        await drive(env.service, 1, 2)
        assert await connected.wait_for(env.app.head(), 10)
        await asyncio.to_thread(local_nats.kill)
        never = env.relay(name="nats_relay_2")
        await never.start()
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await asyncio.gather(connected.stop(), never.stop())
        assert time.monotonic() - started < 2.0
        assert connected.link.nc.is_closed and never.link.nc.is_closed

    try:
        asyncio.run(scenario())
    finally:
        env.close()


@pytest.mark.nats
def test_relay_started_while_nats_is_down_catches_up(tmp_path: Path, local_nats: EmbeddedNats) -> None:
    env = Env(settings_for(tmp_path, local_nats.url))
    local_nats.stop()

    async def scenario() -> None:
        relay = env.relay()
        started = time.monotonic()
        await relay.start()  # returns at once: NATS is not needed to run
        assert time.monotonic() - started < 1.0
        try:
            await drive(env.service, 1, 5)
            await asyncio.sleep(0.3)
            assert relay.position == 0
            await asyncio.to_thread(local_nats.start)
            assert await relay.wait_for(env.app.head(), 15)
        finally:
            await relay.stop()
        assert_exactly_the_log(await consume(local_nats.url, env, env.app.head()), env)

    try:
        asyncio.run(scenario())
    finally:
        env.close()


@pytest.mark.nats
def test_restart_after_publish_without_tracking_stores_no_duplicate(tmp_path: Path, nats_url: str) -> None:
    """A crash after JetStream's ack but before the tracking commit: the new relay re-publishes, JetStream
    drops the repeats by Nats-Msg-Id, and the stream still holds every event once."""
    env = Env(settings_for(tmp_path, nats_url))

    async def scenario() -> None:
        await drive(env.service, 2, 10)
        head = env.app.head()
        first = env.relay()
        await first.start()
        assert await first.wait_for(head, 15)
        await first.stop()

        # The crash: tracking is back where it was before the last batches were published.
        back = head // 3
        view = open_view(env.settings, relay_model())
        view.drop()
        view.apply([], Tracking("nats_relay", back))
        assert view.max_tracking_id("nats_relay") == back

        second = env.relay(batch=16)  # several batches of pure duplicates
        await second.start()
        assert second.position == back
        try:
            assert await second.wait_for(head, 15)
            assert second.duplicates == head - back and second.published == head - back
            # New events after the restart are stored (not mistaken for duplicates) and the chain holds.
            await drive(env.service, 1, 3, "after")
            assert await second.wait_for(env.app.head(), 15)
            assert second.duplicates == head - back
        finally:
            await second.stop()
        assert_exactly_the_log(await consume(nats_url, env, env.app.head()), env)

    try:
        asyncio.run(scenario())
    finally:
        env.close()


@pytest.mark.nats
def test_publish_refused_when_the_previous_message_is_missing(nats_url: str) -> None:
    """Why pipelining is safe: JetStream refuses a message whose predecessor (Nats-Expected-Last-Msg-Id) is
    not the stream's last one, yet still answers a re-publish as a duplicate (dedupe is checked first)."""

    async def scenario() -> None:
        nc: NatsClient = await nats.connect(nats_url)
        js = nc.jetstream()
        stream, subject = unique_name("S").upper(), unique_name("p")
        await js.add_stream(name=stream, subjects=[f"{subject}.>"], duplicate_window=60)
        a = {"Nats-Msg-Id": "a"}
        b = {"Nats-Msg-Id": "b", "Nats-Expected-Last-Msg-Id": "a"}
        c = {"Nats-Msg-Id": "c", "Nats-Expected-Last-Msg-Id": "b"}
        with pytest.raises(nats.js.errors.BadRequestError, match="wrong last msg ID"):
            await js.publish(f"{subject}.b", b"b", headers=dict(b))  # "a" was lost: "b" may not overtake
        assert (await js.publish(f"{subject}.a", b"a", headers=dict(a))).seq == 1
        assert (await js.publish(f"{subject}.b", b"b", headers=dict(b))).seq == 2
        assert (await js.publish(f"{subject}.c", b"c", headers=dict(c))).seq == 3
        again = await js.publish(f"{subject}.b", b"b", headers=dict(b))
        assert again.duplicate and again.seq == 2
        await js.delete_stream(stream)
        await nc.close()

    asyncio.run(scenario())
