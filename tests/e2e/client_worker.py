"""A worker process for tests/e2e/test_client.py: reports the CRM task with the client, keeping a journal.

    python -m tests.e2e.client_worker URL JOURNAL

The journal is JSON lines: `{"phase": ...}` marks where the worker is, and every record of the client's
logger (each answered call with its idempotency key, each retry, pause and resume) is copied there, so the
test can check each acknowledged report against the event log. Step 1 runs until it has been paused and
resumed; step 2 until its reports have had to be retried (the server was killed) and 20 ticks more; step 3
until the task is cancelled.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict
from typing import Any

from client import Cancelled, Options, RetryPolicy, Tracker

CRM: list[str | dict[str, Any]] = [
    "Create database tables",
    {
        "name": "Generate application UI",
        "substeps": ["Customer list", "Product list", "Sales form", "Repair board"],
    },
    "Add search and filters",
    {"name": "Configure workflows", "requires_approval": True},
]
OPTIONS = Options(
    retry=RetryPolicy(deadline=60.0, base=0.05, cap=0.5),
    progress_interval=0.1,
    check_interval=0.2,
    poll_min=0.05,
    poll_max=0.2,
)
TICK = 0.02
LIMIT = 2000  # ticks: a step that never sees its event fails the worker instead of hanging the test


class Journal(logging.Handler):
    """Appends the client's log records, and the worker's phases, to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        super().__init__(logging.DEBUG)
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    def emit(self, record: logging.LogRecord) -> None:
        self.write(
            {"log": record.getMessage(), "level": record.levelname, **getattr(record, "progressd", {})}
        )

    def write(self, entry: dict[str, Any]) -> None:
        self.file.write(json.dumps(entry) + "\n")

    def phase(self, name: str, **fields: Any) -> None:
        self.write({"phase": name, **fields})


def main(url: str, path: str) -> int:
    journal = Journal(path)
    logger = logging.getLogger("progressd.client")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(journal)
    tracker = Tracker.create("Cellphone Store CRM", steps=CRM, url=url, complexity=4, options=OPTIONS)
    journal.phase("created", task_id=tracker.task_id)
    try:
        with tracker.step(1) as step:
            journal.phase("step", order=1)
            resumed_at = None
            for i in range(1, LIMIT):
                step.progress(min(95.0, i * 0.5))
                tracker.check()
                if resumed_at is None and tracker.stats.paused_waits:
                    resumed_at = i
                    step.log(f"resumed after {i} ticks")
                if resumed_at is not None and i >= resumed_at + 10:
                    break
                time.sleep(TICK)
            else:
                raise RuntimeError("step 1 was never paused")
        with tracker.step(2) as step:
            journal.phase("step", order=2)
            killed_at = None
            for i in range(1, LIMIT):
                step.log(f"ui tick {i}")
                step.progress(min(95.0, i * 0.5))
                if killed_at is None and tracker.stats.retries:
                    killed_at = i
                    journal.phase("retried", tick=i)
                done = {3: 1, 6: 2} if killed_at is None else {killed_at + 5: 3, killed_at + 10: 4}
                if i in done:
                    step.substep_done(done[i])
                if killed_at is not None and i >= killed_at + 20:
                    break
                time.sleep(TICK)
            else:
                raise RuntimeError("step 2 never had to retry")
        with tracker.step(3) as step:
            journal.phase("step", order=3)
            for i in range(1, LIMIT):
                step.progress(min(95.0, i * 0.5))
                tracker.check()
                time.sleep(TICK)
            raise RuntimeError("step 3 was never cancelled")
    except Cancelled as exc:
        journal.phase("cancelled", reason=exc.reason)
        return 0
    finally:
        journal.phase("stats", **asdict(tracker.stats))
        tracker.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
