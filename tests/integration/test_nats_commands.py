"""Commands over NATS request/reply on a real nats-server: the same answers, headers and problems as HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient

from infra.embedded import EmbeddedNats
from infra.natscmd import NatsCommands
from infra.relay import Subjects
from infra.runtime import Runtime
from infra.settings import Settings
from tests.conftest import unique_name

pytestmark = pytest.mark.nats

CRM = {
    "title": "Cellphone Store CRM",
    "complexity": 4,
    "steps": [
        {"name": "Create database tables"},
        {"name": "Generate application UI", "substeps": ["Customer list", "Product list"]},
        {"name": "Configure workflows", "requires_approval": True},
    ],
}

Ask = Callable[..., Awaitable[dict[str, Any]]]


ETA_KEYS = ("eta_seconds", "eta_low_seconds", "eta_high_seconds", "eta_confidence", "stalled_step")


def without_eta(view: dict[str, Any]) -> dict[str, Any]:
    """The log part of a view: the estimate is made when read, from the clock."""
    return {k: v for k, v in view.items() if k not in ETA_KEYS}


def run(tmp_path: Path, nats_url: str, scenario: Callable[[Runtime, Ask, Subjects], Awaitable[None]]) -> None:
    """Run a scenario against a Runtime with its projections and a NatsCommands subscriber."""
    settings = Settings(data_dir=tmp_path / "data", nats_url=nats_url)
    runtime = Runtime(settings)
    runtime.start()
    subjects = Subjects(unique_name("p"))

    async def main() -> None:
        commands = NatsCommands(
            runtime.service,
            settings,
            subjects=subjects,
            settle=runtime.settle,
            enrich=runtime.with_update_eta,
            view=runtime.progress,
        )
        await commands.start()
        assert await commands.ready(10)
        client: NatsClient = await nats.connect(nats_url)

        async def ask(
            subject: str, body: Any = None, raw: bytes | None = None, **headers: str
        ) -> dict[str, Any]:
            data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
            names = {k.replace("_", "-").title(): v for k, v in headers.items()}
            msg = await client.request(subject, data, timeout=5, headers=names or None)
            reply: dict[str, Any] = json.loads(msg.data)
            return reply

        try:
            await scenario(runtime, ask, subjects)
        finally:
            await client.close()
            await commands.stop()

    try:
        asyncio.run(main())
    finally:
        runtime.close()


def assert_problem(reply: dict[str, Any], status: int, slug: str) -> dict[str, Any]:
    assert reply["status"] == status, reply
    assert reply["headers"]["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = reply["body"]
    assert body["status"] == status and body["type"] == f"/problems/{slug}"
    assert body["title"] and body["detail"] and body["instance"]
    return body


def test_commands_answer_what_the_http_post_would(tmp_path: Path, nats_url: str) -> None:
    async def scenario(rt: Runtime, ask: Ask, s: Subjects) -> None:
        created = await ask(s.create, CRM)
        assert created["status"] == 201
        view = created["body"]
        task_id = view["task_id"]
        assert created["headers"]["Location"] == f"/api/tasks/{task_id}/progress"
        assert created["headers"]["ETag"] == f'"{view["version"]}"'
        assert view["title"] == CRM["title"] and view["complexity"] == "medium" and view["total_steps"] == 3

        started = await ask(s.command(task_id, "start"), {"order": 1})
        progressed = await ask(s.command(task_id, "progress"), {"order": 1, "percent": 40})
        assert started["status"] == progressed["status"] == 200
        body = progressed["body"]
        assert body["steps"][0]["status"] == "running" and body["steps"][0]["progress"] == 40
        assert progressed["headers"]["Progressd-Position"] == str(body["position"])
        assert "Progressd-View-Lag" not in progressed["headers"]

        # The HTTP answer is the service's view after the command plus its position, and a GET right after
        # (the read model) agrees with it: the NATS reply is exactly that.
        tid = UUID(task_id)
        direct = await rt.service.read(lambda: rt.service.view_sync(tid, rt.settings.local_owner))
        assert without_eta(body) == without_eta({**direct, "position": body["position"]})
        stored = await rt.service.read(lambda: rt.read.progress(tid, rt.settings.local_owner))
        assert stored is not None and without_eta(stored) == without_eta(body)

        logged = await ask(s.command(task_id, "log"), {"message": "created 3 tables", "step": 1})
        done = await ask(s.command(task_id, "substep"), {"order": 2, "n": 1})
        assert logged["status"] == 200
        assert_problem(done, 409, "illegal-transition")  # step 2 is not running yet
        assert done["body"]["expected"] == ["running"] and done["body"]["actual"] == "pending"
        paused = await ask(s.command(task_id, "pause"))
        assert paused["status"] == 200 and paused["body"]["status"] == "paused"

    run(tmp_path, nats_url, scenario)


def test_the_progress_query_answers_what_the_http_get_would(tmp_path: Path, nats_url: str) -> None:
    async def scenario(rt: Runtime, ask: Ask, s: Subjects) -> None:
        task_id = (await ask(s.create, CRM))["body"]["task_id"]
        moved = await ask(s.command(task_id, "start"), {"order": 1})
        got = await ask(s.query(task_id, "progress"))
        assert got["status"] == 200 and got["headers"]["Content-Type"] == "application/json"
        body = got["body"]
        assert body["version"] == moved["body"]["version"] == 2 and got["headers"]["ETag"] == '"2"'
        assert body["steps"][0]["status"] == "running" and "eta_seconds" in body
        tid = UUID(task_id)
        stored = await rt.service.read(lambda: rt.read.progress(tid, rt.settings.local_owner))
        assert stored is not None and without_eta(body) == without_eta(stored)

        missing = assert_problem(await ask(s.query(str(UUID(int=7)), "progress")), 404, "task-not-found")
        assert missing["instance"] == s.query(str(UUID(int=7)), "progress")
        assert_problem(await ask(s.query("not-a-uuid", "progress")), 404, "task-not-found")
        assert_problem(await ask(s.query(task_id, "logs")), 404, "not-found")
        assert_problem(await ask(f"{s.prefix}.queries.{task_id}"), 404, "not-found")
        events = await rt.service.read(lambda: rt.app.task_events(tid))
        assert [e["type"] for e in events] == ["Created", "StepStarted"]  # queries append nothing

    run(tmp_path, nats_url, scenario)


def test_idempotency_key_and_if_match_work_as_over_http(tmp_path: Path, nats_url: str) -> None:
    async def scenario(rt: Runtime, ask: Ask, s: Subjects) -> None:
        first = await ask(s.create, CRM, idempotency_key="create-1")
        again = await ask(s.create, CRM, idempotency_key="create-1")
        assert first["status"] == again["status"] == 201
        assert again["headers"]["Idempotent-Replayed"] == "true"
        assert again["body"]["task_id"] == first["body"]["task_id"]
        task_id = first["body"]["task_id"]

        start = s.command(task_id, "start")
        one = await ask(start, {"order": 1}, idempotency_key="k-1")
        two = await ask(start, {"order": 1}, idempotency_key="k-1")  # a retry: applied once
        assert "Idempotent-Replayed" not in one["headers"]
        assert two["headers"]["Idempotent-Replayed"] == "true"
        assert two["body"]["version"] == one["body"]["version"] == 2
        events = await rt.service.read(lambda: rt.app.task_events(UUID(task_id)))
        assert [e["type"] for e in events] == ["Created", "StepStarted"]
        assert_problem(await ask(start, {"order": 2}, idempotency_key="k-1"), 422, "idempotency-key-reused")
        assert_problem(await ask(start, {"order": 2}, idempotency_key=" "), 400, "bad-idempotency-key")

        progress = s.command(task_id, "progress")
        moved = await ask(progress, {"order": 1, "percent": 10}, if_match='"2"')
        assert moved["status"] == 200 and moved["body"]["version"] == 3
        stale = assert_problem(
            await ask(progress, {"order": 1, "percent": 20}, if_match='"2"'), 412, "version-mismatch"
        )
        assert stale["expected_version"] == 2 and stale["actual_version"] == 3
        assert_problem(await ask(progress, {"order": 1, "percent": 20}, if_match="soon"), 400, "bad-if-match")

        restart = s.command(task_id, "restart")  # pinned like every other command (it ignored If-Match)
        refused = assert_problem(await ask(restart, if_match='"2"'), 412, "version-mismatch")
        assert refused["actual_version"] == 3
        assert_problem(await ask(restart, if_match="soon"), 400, "bad-if-match")
        events = await rt.service.read(lambda: rt.app.task_events(UUID(task_id)))
        assert events[-1]["type"] == "Progressed" and len(events) == 3
        assert (await ask(restart, if_match='"3"'))["status"] == 201

    run(tmp_path, nats_url, scenario)


def test_bad_requests_get_the_problem_shape(tmp_path: Path, nats_url: str) -> None:
    async def scenario(rt: Runtime, ask: Ask, s: Subjects) -> None:
        task_id = (await ask(s.create, CRM))["body"]["task_id"]
        progress = s.command(task_id, "progress")
        assert_problem(await ask(progress, raw=b"{not json"), 400, "malformed-json")
        unknown = assert_problem(
            await ask(progress, {"order": 1, "percent": 5, "bogus": 1}), 422, "invalid-field"
        )
        assert unknown["errors"][0]["path"] == "$" and "bogus" in unknown["errors"][0]["detail"]
        wrong = assert_problem(await ask(progress, {"order": 1, "percent": "half"}), 422, "invalid-field")
        assert wrong["errors"] == [{"path": "$.percent", "detail": "Expected `float`, got `str`"}]
        over = assert_problem(await ask(progress, {"order": 1, "percent": 101}), 422, "invalid-field")
        assert over["errors"][0]["path"] == "$.percent"
        nested = assert_problem(
            await ask(s.create, {"title": "x", "steps": [{"name": ""}]}), 422, "invalid-field"
        )
        assert nested["errors"][0]["path"] == "$.steps[0].name"
        assert_problem(await ask(s.create, {"title": "x", "steps": []}), 422, "invalid-field")

        missing = assert_problem(
            await ask(s.command(str(UUID(int=7)), "start"), {"order": 1}), 404, "task-not-found"
        )
        assert missing["instance"] == s.command(str(UUID(int=7)), "start")
        assert_problem(await ask(s.command("not-a-uuid", "start"), {"order": 1}), 404, "task-not-found")
        assert_problem(await ask(s.command(task_id, "explode")), 404, "unknown-command")
        assert_problem(await ask(s.command(task_id, "start"), {"order": 9}), 404, "step-not-found")
        assert_problem(await ask(s.command(task_id, "start")), 422, "invalid-field")  # order is required
        assert_problem(await ask(progress, raw=b"{" + b" " * 70_000 + b"}"), 413, "body-too-large")
        repeated = b'{"order": 1, "percent": 5, "percent": 50}'  # was taken silently, the last one winning
        assert_problem(await ask(progress, raw=repeated), 400, "malformed-json")
        twice = b'{"title": "x", "steps": [{"name": "a", "weight": 1, "weight": 2}]}'
        assert_problem(await ask(s.create, raw=twice), 400, "malformed-json")

        # A rejected command appended nothing.
        events = await rt.service.read(lambda: rt.app.task_events(UUID(task_id)))
        assert [e["type"] for e in events] == ["Created"]

    run(tmp_path, nats_url, scenario)


def test_commands_are_answered_again_after_a_nats_restart(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path / "nats", start_timeout=10) as server:
        settings = Settings(data_dir=tmp_path / "data", nats_url=server.url)
        runtime = Runtime(settings, project=False)
        subjects = Subjects(unique_name("p"))

        async def main() -> None:
            commands = NatsCommands(runtime.service, settings, subjects=subjects)
            await commands.start()
            assert await commands.ready(10)
            client: NatsClient = await nats.connect(
                server.url, max_reconnect_attempts=-1, reconnect_time_wait=1
            )
            try:
                first = json.loads((await client.request(subjects.create, json.dumps(CRM).encode(), 5)).data)
                assert first["status"] == 201
                await asyncio.to_thread(server.kill)
                await asyncio.to_thread(server.start)
                start = subjects.command(first["body"]["task_id"], "start")
                retry = {"Idempotency-Key": "start-1"}  # a timed-out request may still have been applied
                for _ in range(50):  # both sides reconnect on their own (bounded: ~10 s)
                    try:
                        msg = await client.request(start, b'{"order": 1}', 0.2, headers=retry)
                        reply = json.loads(msg.data)
                        break
                    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                        await asyncio.sleep(0.2)
                else:
                    pytest.fail("no answer after the restart")
                assert reply["status"] == 200 and reply["body"]["steps"][0]["status"] == "running"
                await asyncio.to_thread(server.kill)
                stopping = asyncio.get_running_loop().time()
                await commands.stop()  # NATS is down: stop must not hang
                assert asyncio.get_running_loop().time() - stopping < 2.0
            finally:
                await client.close()

        try:
            asyncio.run(main())
        finally:
            runtime.close()
