"""NATS relay: events/s the Relay publishes to JetStream vs nats-py's `js.publish_async` of the same bodies.

`python -m bench.relay [--quick]`

A log of whole task histories is written at three sizes; the Relay (infra/relay.py) starts from position 0
and is timed until JetStream has acknowledged the head (reading the log, encoding CloudEvents, publishing in
order with `Nats-Msg-Id` and `Nats-Expected-Last-Msg-Id`, tracking its position after each batch). The
baseline publishes the very same subjects, payloads and `Nats-Msg-Id` headers, already encoded, with
`js.publish_async` and waits for every ack (`publish_async_completed`), into a stream of the same
configuration. Each run uses its own stream and subject prefix.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    Table,
    check,
    fresh_database,
    nats,
    postgres,
    quick_main,
    rate,
    scratch,
    section,
    times,
    write_section,
)
from bench.replay import settings_for, write_log

TARGET = 0.5
FULL = (2_000, 10_000, 50_000)
QUICK = (1_000, 5_000, 10_000)


async def relay_rate(app: Any, settings: Any, head: int) -> float:
    from infra.relay import Relay, Subjects

    tag = uuid.uuid4().hex[:10]
    relay = Relay(
        app, settings, subjects=Subjects(f"bench{tag}"), stream=f"BENCH_{tag}", name=f"relay_{tag}", poll=0.01
    )
    started = time.perf_counter()
    await relay.start()
    try:
        if not await relay.wait_for(head, 600):
            raise RuntimeError(f"relay reached {relay.position} of {head}")
        return head / (time.perf_counter() - started)
    finally:
        await relay.stop()


async def raw_rate(app: Any, url: str, head: int) -> float:
    import nats as nats_py
    from nats.js.api import Header, StorageType, StreamConfig

    from infra.relay import CE_CONTENT_TYPE, Subjects, outgoing

    tag = uuid.uuid4().hex[:10]
    subjects = Subjects(f"raw{tag}")
    messages = []
    after = 0
    while after < head:
        batch = app.notifications(after, 1000)
        messages += [m for n in batch if (m := outgoing(app, n, subjects)) is not None]
        after = batch[-1].id
    nc = await nats_py.connect(url)
    try:
        js = nc.jetstream(timeout=5.0)
        await js.add_stream(
            StreamConfig(
                name=f"RAW_{tag}", subjects=[subjects.events], storage=StorageType.FILE, duplicate_window=600
            )
        )
        started = time.perf_counter()
        for m in messages:
            headers = {Header.MSG_ID.value: m.msg_id, "Content-Type": CE_CONTENT_TYPE}
            await js.publish_async(m.subject, m.payload, headers=headers, wait_stall=5.0)
        await js.publish_async_completed()
        return len(messages) / (time.perf_counter() - started)
    finally:
        await nc.drain()


def run(quick: bool = False, pg: Any = None, nats_server: Any = None, command: str = "") -> list[Table]:
    command = command or "python -m bench.relay" + (" --quick" if quick else "")
    if pg is None:
        with postgres() as server:
            return run(quick, server, nats_server, command)
    if nats_server is None:
        with nats() as server:
            return run(quick, pg, server, command)
    from infra.store import open_store

    sizes = QUICK if quick else FULL
    tables = []
    with scratch("relay") as tmp:
        for backend in ("postgres", "sqlite"):
            table = Table(
                f"NATS relay to JetStream — log on {backend}",
                ["events", "Relay events/s", "raw js.publish_async msgs/s", "ratio", f"target ≥ {TARGET}x"],
            )
            url = fresh_database(pg, "relay") if backend == "postgres" else None
            settings = settings_for(Path(tmp / f"relay-{backend}"), url)
            settings = type(settings)(**{**settings.__dict__, "nats_url": nats_server.url})
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            app = open_store(settings)
            try:
                for events in sizes:
                    head = write_log(app, events)
                    ours = asyncio.run(relay_rate(app, settings, head))
                    raw = asyncio.run(raw_rate(app, nats_server.url, head))
                    ratio = ours / raw
                    table.add(f"{head:,}", rate(ours), rate(raw), times(ratio), check(ratio >= TARGET))
                    print(table.rows[-1], flush=True)
            finally:
                app.close()
            table.notes.append(
                "Each row publishes the whole log from position 0 into a new stream. The Relay's time "
                "includes connecting, creating its stream, reading and decoding the log, encoding "
                "CloudEvents and recording its position; the raw side gets the bodies ready-made."
            )
            tables.append(table)
    for t in tables:
        print(t.text(), "\n", flush=True)
    write_section(
        "relay",
        section(
            "NATS relay",
            "Events/s from the log into JetStream by the Relay vs nats-py's own async publish of the same "
            "messages, on the same nats-server.",
            tables,
            command,
        ),
    )
    return tables


def main() -> None:
    quick_main("relay", __doc__, run, "smaller logs")


if __name__ == "__main__":
    main()
