"""Example: report Celery tasks to progressd through Celery's task signals (Celery is not a dependency).

    from examples.celery_adapter import CeleryProgress

    progress = CeleryProgress(url="http://127.0.0.1:8000")
    progress.install()                    # once, in the worker process (e.g. in your celery app module)

    @app.task(bind=True)
    def import_customers(self, path):
        step = progress.step(self)        # the running Celery task's step, to report from its body
        for i, row in enumerate(rows(path)):
            ...
            step.progress(100 * i / total)

Each Celery task becomes a one-step progressd task: task_prerun creates it (or finds it again: the key is
the Celery task id, so a retried Celery task reports into the same task, and its failed step is retried)
and starts the step; task_success completes it; task_failure fails it with the exception text;
task_revoked cancels it. Reporting never breaks the job: errors are logged, and calls give up after a
short deadline so a down progress server delays a task by seconds, not a minute.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import httpx

from client import Options, ProgressdError, RetryPolicy, Step, Tracker

try:  # Celery is optional: this module imports without it, and install() says what is missing.
    from celery import signals as celery_signals  # type: ignore[import-not-found, unused-ignore]
except ImportError:
    celery_signals = None

log = logging.getLogger(__name__)


class CeleryProgress:
    """Connects Celery's task signals to progressd: one progressd task, with one step, per Celery task."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        options: Options | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.options = options or Options(retry=RetryPolicy(deadline=5.0, timeout=2.0))
        self.client = client or httpx.Client()  # one connection pool shared by every task's tracker
        self.trackers: dict[str, Tracker] = {}
        self.lock = threading.Lock()

    def install(self, signals: Any = None) -> None:
        """Connect the handlers to Celery's signals (or to `signals`, anything with the same names)."""
        signals = signals or celery_signals
        if signals is None:
            raise RuntimeError("Celery is not installed: pip install celery")
        signals.task_prerun.connect(self.on_prerun, weak=False)
        signals.task_success.connect(self.on_success, weak=False)
        signals.task_failure.connect(self.on_failure, weak=False)
        signals.task_revoked.connect(self.on_revoked, weak=False)

    def step(self, task: Any) -> Step:
        """The step of the Celery task running now (`self` in a bound task)."""
        with self.lock:
            return self.trackers[task.request.id].step(1)

    # ---- signal handlers --------------------------------------------------------------------------------

    def on_prerun(self, sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any) -> None:
        if task_id is None or task is None:
            return
        name = str(getattr(task, "name", None) or task_id)
        try:
            tracker = Tracker.create(
                name,
                steps=[name],
                url=self.url,
                token=self.token,
                key=f"celery:{task_id}",
                options=self.options,
                client=self.client,
            )
            tracker.step(1).start()
        except ProgressdError as exc:
            log.warning("progressd: not reporting Celery task %s: %s", task_id, exc)
            return
        with self.lock:
            self.trackers[task_id] = tracker

    def on_success(self, sender: Any = None, result: Any = None, **_: Any) -> None:
        tracker = self._pop(getattr(getattr(sender, "request", None), "id", None))
        if tracker is not None:
            self._report(tracker, lambda: tracker.step(1).complete(None if result is None else repr(result)))

    def on_failure(
        self, sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **_: Any
    ) -> None:
        tracker = self._pop(task_id)
        if tracker is not None:
            error = f"{type(exception).__name__}: {exception}" if exception is not None else "failed"
            self._report(tracker, lambda: tracker.step(1).fail(error))

    def on_revoked(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        tracker = self._pop(getattr(request, "id", None))
        if tracker is not None:
            self._report(tracker, lambda: tracker.cancel("revoked in Celery"))

    def _pop(self, task_id: str | None) -> Tracker | None:
        with self.lock:
            return self.trackers.pop(task_id, None) if task_id else None

    @staticmethod
    def _report(tracker: Tracker, action: Callable[[], object]) -> None:
        try:
            action()
        except ProgressdError as exc:
            log.warning("progressd: could not report task %s: %s", tracker.task_id, exc)
        finally:
            tracker.close()
