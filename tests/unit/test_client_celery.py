"""The Celery example adapter, driven by stand-in signals (Celery is not installed): signals become steps."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from client import Options, RetryPolicy
from examples.celery_adapter import CeleryProgress
from tests.unit.test_client_tracker import FAST, URL, FakeApi


class Signal:
    """What the adapter uses of a Celery signal: connect(receiver, weak=False) and, here, send."""

    def __init__(self) -> None:
        self.receivers: list[Callable[..., None]] = []

    def connect(self, receiver: Callable[..., None], weak: bool = True) -> None:
        assert weak is False  # bound methods of a long-lived object: a weak reference would be dropped
        self.receivers.append(receiver)

    def send(self, **kwargs: Any) -> None:
        for receiver in self.receivers:
            receiver(**kwargs)


def installed(api: FakeApi) -> tuple[CeleryProgress, SimpleNamespace]:
    signals = SimpleNamespace(
        task_prerun=Signal(), task_success=Signal(), task_failure=Signal(), task_revoked=Signal()
    )
    adapter = CeleryProgress(url=URL, options=FAST, client=httpx.Client(transport=httpx.MockTransport(api)))
    adapter.install(signals)
    return adapter, signals


def celery_task(task_id: str) -> SimpleNamespace:
    return SimpleNamespace(name="crm.import_customers", request=SimpleNamespace(id=task_id))


def test_prerun_starts_the_step_and_success_completes_it() -> None:
    api = FakeApi(steps=1)
    adapter, signals = installed(api)
    task = celery_task("c-1")
    signals.task_prerun.send(sender=task, task_id="c-1", task=task, args=(), kwargs={})
    adapter.step(task).progress(40)
    signals.task_success.send(sender=task, result=3)
    assert [tail for tail, _ in api.applied] == ["steps/1/start", "steps/1/progress", "steps/1/complete"]
    assert api.commands("complete") == [{"result": "3"}]
    create = next(r for r in api.requests if r.url.path == "/api/tasks")
    assert create.headers["idempotency-key"] == "celery:c-1"  # a retried Celery task finds the same task
    assert adapter.trackers == {}


def test_failure_fails_the_step_with_the_exception_text() -> None:
    api = FakeApi(steps=1)
    _, signals = installed(api)
    task = celery_task("c-2")
    signals.task_prerun.send(sender=task, task_id="c-2", task=task)
    signals.task_failure.send(sender=task, task_id="c-2", exception=ConnectionError("db down"))
    assert api.commands("fail") == [{"error": "ConnectionError: db down"}]


def test_revoked_cancels_the_task() -> None:
    api = FakeApi(steps=1)
    _, signals = installed(api)
    task = celery_task("c-3")
    signals.task_prerun.send(sender=task, task_id="c-3", task=task)
    signals.task_revoked.send(sender=task, request=task.request, terminated=True)
    assert api.status == "cancelled"


def test_an_unreachable_server_never_breaks_the_celery_task() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    signals = SimpleNamespace(
        task_prerun=Signal(), task_success=Signal(), task_failure=Signal(), task_revoked=Signal()
    )
    brief = Options(retry=RetryPolicy(deadline=0.05, base=0.001, cap=0.002))
    adapter = CeleryProgress(url=URL, options=brief, client=httpx.Client(transport=httpx.MockTransport(down)))
    adapter.install(signals)
    task = celery_task("c-4")
    signals.task_prerun.send(sender=task, task_id="c-4", task=task)
    signals.task_success.send(sender=task, result=None)
    assert adapter.trackers == {}


def test_install_without_celery_says_so() -> None:
    if importlib.util.find_spec("celery") is not None:
        pytest.skip("Celery happens to be installed")  # pragma: no cover
    with pytest.raises(RuntimeError, match="Celery is not installed"):
        CeleryProgress(url=URL).install()
