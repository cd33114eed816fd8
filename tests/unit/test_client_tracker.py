"""The tracker's rules against an in-memory stand-in for the API: step blocks, pause, cancel, approvals."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest

from client import (
    AsyncTracker,
    Cancelled,
    Options,
    Paused,
    ProgressdError,
    Rejected,
    RetryPolicy,
    Tracker,
)

URL = "http://progressd.test"
TID = "7d0b5e9c-0000-4000-8000-000000000001"
FAST = Options(
    retry=RetryPolicy(deadline=5.0, base=0.001, cap=0.002),
    progress_interval=60.0,
    check_interval=0.0,
    poll_min=0.001,
    poll_max=0.002,
)
ALLOWED = {
    "start": ("pending",),
    "progress": ("running",),
    "substep": ("running",),
    "complete": ("running",),
    "fail": ("running",),
    "retry": ("failed",),
    "skip": ("pending", "running", "failed"),
    "approval": ("pending", "running"),
}


FINISHED = {"complete": "completed", "fail": "failed", "skip": "skipped"}


class FakeApi:
    """Just enough of the HTTP API, in memory, to exercise the client's rules (not the server's)."""

    def __init__(self, steps: int = 3, approval: tuple[int, ...] = ()) -> None:
        self.status = "running"
        self.error: str | None = None
        self.version = 1
        self.approval = approval
        self.steps: list[dict[str, Any]] = [
            {"order": n, "name": f"step {n}", "status": "pending", "error": None, "substeps": [False] * 2}
            for n in range(1, steps + 1)
        ]
        self.requests: list[httpx.Request] = []
        self.applied: list[tuple[str, dict[str, Any]]] = []
        self.keys: set[str] = set()
        self.on_get: Callable[[FakeApi, int], None] = lambda api, n: None
        self.gets = 0

    def view(self) -> dict[str, Any]:
        return {
            "task_id": TID,
            "status": self.status,
            "version": self.version,
            "error": self.error,
            "current_step": 1,
            "total_steps": len(self.steps),
            "steps": copy.deepcopy(self.steps),
        }

    def commands(self, action: str) -> list[dict[str, Any]]:
        return [body for tail, body in self.applied if tail.endswith(action)]

    def posts(self, action: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST" and r.url.path.endswith(action)]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "GET":
            self.gets += 1
            self.on_get(self, self.gets)
            return httpx.Response(200, json=self.view())
        if request.url.path == "/api/tasks":
            return httpx.Response(201, json=self.view())
        key = request.headers["idempotency-key"]
        if key in self.keys:
            return httpx.Response(200, json=self.view(), headers={"Idempotent-Replayed": "true"})
        tail = request.url.path.removeprefix(f"/api/tasks/{TID}/")
        body = json.loads(request.content or b"{}")
        refused = self.apply(tail.split("/"), body)
        if refused is not None:
            subject, actual = refused
            problem = {"type": "/problems/illegal-transition", "status": 409, "subject": subject}
            return httpx.Response(409, json={**problem, "actual": actual, "detail": "no"})
        self.keys.add(key)
        self.version += 1
        self.applied.append((tail, body))
        return httpx.Response(200, json=self.view())

    def apply(self, parts: list[str], body: dict[str, Any]) -> tuple[str, str] | None:
        if parts[0] == "logs":
            return None
        if parts[0] in ("pause", "resume", "cancel"):
            self.status = {"pause": "paused", "resume": "running", "cancel": "cancelled"}[parts[0]]
            return None
        order = int(parts[1])
        action = "substep" if parts[2] == "substeps" else parts[2]
        if self.status in ("paused", "cancelled"):
            return "task", self.status
        step = self.steps[order - 1]
        if step["status"] not in ALLOWED[action]:
            return f"step {order}", step["status"]
        if action == "substep":
            n = int(parts[3])
            if step["substeps"][n - 1]:
                return f"substep {n} of step {order}", "done"
            step["substeps"][n - 1] = True
        elif action in ("start", "retry"):
            step["status"] = "approval" if order in self.approval else "running"
        elif action != "progress":
            step["status"] = FINISHED.get(action, action)
            step["error"] = body.get("error")
        return None


def tracker_for(api: FakeApi, options: Options = FAST) -> Tracker:
    client = httpx.Client(transport=httpx.MockTransport(api))
    return Tracker.create("CRM", steps=["a", "b", "c"], url=URL, options=options, client=client)


def test_a_step_block_starts_reports_and_completes_and_flushes_the_latest_held_back_percent() -> None:
    api = FakeApi()
    tracker = tracker_for(api)
    with tracker.step(1) as step:
        for i in range(1000):
            step.progress(i / 10)
        step.substep_done(1)
        step.log("created 3 tables")
    assert [tail for tail, _ in api.applied] == [
        "steps/1/start",
        "steps/1/progress",  # the first tick goes at once
        "steps/1/progress",  # the latest held-back one (99.9), flushed before the substep
        "steps/1/substeps/1/done",
        "logs",
        "steps/1/complete",
    ]
    assert [body["percent"] for body in api.commands("progress")] == [0.0, 99.9]
    assert api.commands("logs") == [{"message": "created 3 tables", "level": "info", "step": 1}]
    assert len({r.headers["idempotency-key"] for r in api.posts("")}) == len(api.posts(""))


def test_progress_ticks_are_rate_limited_to_one_per_interval_and_the_latest_wins() -> None:
    api = FakeApi()
    tracker = tracker_for(api, Options(progress_interval=0.05))
    started = time.monotonic()
    offered = 0.0
    calls = 0
    with tracker.step(1) as step:
        while (elapsed := time.monotonic() - started) < 0.3:
            offered = round(100 * elapsed / 0.3, 4)
            step.progress(offered)
            calls += 1
    sent = [body["percent"] for body in api.commands("progress")]
    assert calls > 100
    assert 3 <= len(sent) <= 0.3 / 0.05 + 2  # many calls, a handful of requests
    assert sent[-1] == offered
    assert sent == sorted(sent)


def test_repeating_the_same_percent_sends_nothing() -> None:
    api = FakeApi()
    tracker = tracker_for(api, Options(progress_interval=0.0))
    with tracker.step(1) as step:
        for _ in range(5):
            step.progress(40)
    assert [body["percent"] for body in api.commands("progress")] == [40]


def test_an_exception_fails_the_step_with_its_text_and_propagates() -> None:
    api = FakeApi()
    tracker = tracker_for(api)

    def work() -> None:
        with tracker.step(1) as step:
            step.progress(30)
            raise ValueError("no such table: customers")

    with pytest.raises(ValueError, match="no such table"):
        work()
    assert api.commands("fail") == [{"error": "ValueError: no such table: customers"}]
    assert api.commands("complete") == []


def test_progress_on_a_paused_task_waits_for_the_resume_then_resends_with_the_same_key() -> None:
    api = FakeApi()
    tracker = tracker_for(api, replace(FAST, progress_interval=0.0))
    step = tracker.step(1).start()
    api.status = "paused"  # paused from the API; the tracker has not heard of it yet

    def resume_on_third_look(api: FakeApi, n: int) -> None:
        if n == 3:
            api.status = "running"

    api.on_get = resume_on_third_look
    step.progress(50)
    posts = api.posts("/progress")
    assert len(posts) == 2
    assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
    assert [body["percent"] for body in api.commands("progress")] == [50]
    assert api.gets == 3
    assert tracker.stats.paused_waits == 1


def test_check_waits_while_paused_and_raises_paused_when_told_not_to_wait() -> None:
    api = FakeApi()
    tracker = tracker_for(api)
    api.status = "paused"
    with pytest.raises(Paused):
        tracker.check(wait=False)
    with pytest.raises(Paused):
        tracker.check(timeout=0.01)
    api.on_get = lambda api, n: setattr(api, "status", "running") if n >= 8 else None
    tracker.check()
    assert tracker.status == "running"


def test_cancel_raises_cancelled_with_the_reason_and_leaves_the_step_alone() -> None:
    api = FakeApi()
    tracker = tracker_for(api)

    def work() -> None:
        with tracker.step(1) as step:
            step.progress(10)
            api.status, api.error = "cancelled", "customer changed plans"
            tracker.check()

    with pytest.raises(Cancelled) as caught:
        work()
    assert caught.value.reason == "customer changed plans"
    assert api.commands("fail") == [] and api.commands("complete") == []


def test_a_cancelled_task_refusing_progress_raises_cancelled() -> None:
    api = FakeApi()
    tracker = tracker_for(api, replace(FAST, progress_interval=0.0))
    step = tracker.step(1).start()
    api.status = "cancelled"
    with pytest.raises(Cancelled):
        step.progress(20)


def test_logs_never_wait_on_a_pause() -> None:
    api = FakeApi()
    tracker = tracker_for(api)
    step = tracker.step(1).start()
    api.status = "paused"
    step.log("still here", level="warning")
    assert api.commands("logs") == [{"message": "still here", "level": "warning", "step": 1}]
    assert api.gets == 0
    with pytest.raises(ValueError, match="level"):
        step.log("x", level="loud")
    with pytest.raises(ValueError, match="blank"):  # the server refuses it: the SDK does not send it
        step.log(" \n ")
    assert len(api.commands("logs")) == 1


def test_await_approval_returns_once_approved() -> None:
    api = FakeApi()
    tracker = tracker_for(api)

    def approve_on_second_look(api: FakeApi, n: int) -> None:
        if n == 2:
            api.steps[0]["status"] = "running"

    api.on_get = approve_on_second_look
    with tracker.step(1) as step:
        step.await_approval("Deploy to production?")
        assert step.status == "running"
    assert api.commands("approval") == [{"message": "Deploy to production?"}]
    assert len(api.commands("complete")) == 1


def test_await_approval_raises_rejected_and_the_step_stays_failed() -> None:
    api = FakeApi()
    tracker = tracker_for(api)

    def reject(api: FakeApi, n: int) -> None:
        api.steps[0]["status"], api.steps[0]["error"] = "failed", "rejected: not on a Friday"

    api.on_get = reject
    with pytest.raises(Rejected) as caught, tracker.step(1) as step:
        step.await_approval("Deploy to production?")
    assert caught.value.comment == "not on a Friday"
    assert api.commands("fail") == []


def test_await_approval_gives_up_after_its_timeout() -> None:
    api = FakeApi()
    tracker = tracker_for(api)
    step = tracker.step(1).start()
    with pytest.raises(TimeoutError, match="still awaits approval"):
        step.await_approval("Deploy to production?", timeout=0.02)
    assert api.steps[0]["status"] == "approval"


def test_an_approval_timeout_inside_a_step_block_leaves_the_block_with_the_timeout() -> None:
    api = FakeApi()
    tracker = tracker_for(api)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="still awaits approval"), tracker.step(1) as step:
        step.await_approval("Deploy to production?", timeout=0.05)
    assert time.monotonic() - started < 5  # it used to wait for the approval again, for ever
    assert api.steps[0]["status"] == "approval"  # still the person's to decide
    assert api.commands("fail") == []  # the server refused the failure report: a step awaiting approval


def test_a_worker_that_catches_a_rejection_leaves_the_step_as_the_person_left_it() -> None:
    api = FakeApi()
    tracker = tracker_for(api)
    api.on_get = lambda api, n: api.steps[0].update(status="failed", error="not today") if n == 2 else None
    with tracker.step(1) as step, contextlib.suppress(Rejected):  # the worker moves on to something else
        step.await_approval("Deploy to production?")
    assert api.steps[0]["status"] == "failed"
    assert api.commands("complete") == [] and api.commands("fail") == []


def test_entering_a_step_that_requires_approval_waits_for_it() -> None:
    api = FakeApi(approval=(2,))
    tracker = tracker_for(api)
    api.on_get = lambda api, n: api.steps[1].update(status="running") if n == 3 else None
    with tracker.step(2) as step:
        assert step.status == "running"
    assert api.gets == 3


def test_entering_a_failed_step_again_retries_it() -> None:
    api = FakeApi()
    api.steps[0]["status"] = "failed"
    tracker = tracker_for(api)
    with tracker.step(1):
        pass
    assert [tail for tail, _ in api.applied] == ["steps/1/retry", "steps/1/complete"]


def test_a_rerun_finds_the_steps_its_earlier_run_finished_and_reports_nothing_for_them() -> None:
    api = FakeApi()
    api.steps[0]["status"] = "completed"
    api.steps[1]["status"] = "skipped"
    tracker = tracker_for(api)
    for order in (1, 2):
        with tracker.step(order) as step:
            assert step.earlier and step.status in ("completed", "skipped")
            step.progress(50)
            step.substep_done(1)
    with tracker.step(3) as step:
        assert not step.earlier
        step.progress(50)
    assert [tail for tail, _ in api.applied] == ["steps/3/start", "steps/3/progress", "steps/3/complete"]


def test_a_substep_reported_twice_is_not_an_error() -> None:
    api = FakeApi()
    tracker = tracker_for(api)
    with tracker.step(1) as step:
        step.substep_done(2)
        step.substep_done(2)
    assert len(api.commands("substeps/2/done")) == 1


def test_other_refusals_raise_progressd_error_with_the_problem() -> None:
    api = FakeApi()
    tracker = tracker_for(api)
    with pytest.raises(ProgressdError) as caught:
        tracker.step(1).complete()  # never started
    assert caught.value.status == 409
    assert caught.value.problem["actual"] == "pending"
    with pytest.raises(ValueError, match="no step 9"):
        tracker.step(9).start()
    with pytest.raises(ValueError, match="between 0 and 100"):
        tracker.step(1).progress(101)


def test_the_asyncio_tracker_follows_the_same_rules() -> None:
    api = FakeApi()

    async def work() -> None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(api))
        options = replace(FAST, progress_interval=0.0)
        created = await AsyncTracker.create("CRM", steps=["a", "b"], url=URL, options=options, client=client)
        async with created:
            tracker = await AsyncTracker.attach(TID, url=URL, options=options, client=client)
            async with tracker.step(1) as step:
                await step.progress(40)
                api.status = "paused"
                api.on_get = lambda api, n: setattr(api, "status", "running") if n >= 3 else None
                await step.progress(60)  # waits for the resume
                await step.substep_done(1)
                await step.log("created 3 tables")
            with pytest.raises(KeyError):
                async with tracker.step(2):
                    raise KeyError("products")
            await client.aclose()

    asyncio.run(work())
    assert [tail for tail, _ in api.applied] == [
        "steps/1/start",
        "steps/1/progress",
        "steps/1/progress",
        "steps/1/substeps/1/done",
        "logs",
        "steps/1/complete",
        "steps/2/start",
        "steps/2/fail",
    ]
    assert api.commands("fail") == [{"error": "KeyError: 'products'"}]
