"""The composition root: opens the store, the read models, the projector and the service from Settings."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

from infra.metrics import Metrics
from infra.projector import Projection, Projector
from infra.readside import ReadSide
from infra.service import TaskService
from infra.settings import Settings
from infra.store import open_store
from infra.views import ViewRecorder, open_view
from projections.registry import MODELS

# An estimate takes some 35 microseconds per step: the event loop makes it only for plans of up to this many
# steps (a fraction of a millisecond), a reader thread for bigger ones.
LOOP_STEPS = 25


class Runtime:
    """Everything one process needs, built from settings and closed in reverse order."""

    def __init__(self, settings: Settings, *, project: bool = True, models: list[str] | None = None) -> None:
        self.settings = settings
        self.app = open_store(settings)
        self.metrics = Metrics()
        self.service = TaskService(self.app, self.metrics)
        names = models or list(MODELS)
        self.views: dict[str, ViewRecorder] = {name: open_view(settings, MODELS[name]) for name in names}
        self.projector = Projector(Projection(self.app, v) for v in self.views.values())
        self.project = project
        self.read = ReadSide(self.views, self.projector.changed_at if project else None)
        if project:  # this process's commits, handed over: the projector need not read them back
            self.service.on_recorded(self.projector.offer)
        self.metrics.probe(
            "progressd_projection_lag_events",
            "Events in the log that a read model has not applied yet.",
            self._lag,
        )

    def _lag(self) -> list[tuple[dict[str, str], float]]:
        head = self.app.head()
        return [({"projection": name}, float(max(0, head - pos))) for name, pos in self.tracked().items()]

    def start(self) -> None:
        if self.project:
            self.projector.start()

    def close(self) -> None:
        self.projector.stop()
        self.service.close()

    def tracked(self) -> dict[str, int]:
        """Each read model's position as recorded in its tracking table."""
        return {name: view.max_tracking_id(name) or 0 for name, view in self.views.items()}

    def wait_for_sync(self, position: int, timeout: float) -> bool:
        """Block until every read model has applied `position`, polling when projections run elsewhere."""
        if self.project:
            return self.projector.wait_for(position, timeout)
        deadline = time.monotonic() + timeout
        while min(self.tracked().values(), default=position) < position:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    async def progress(self, task_id: UUID, owner: str | None) -> dict[str, Any] | None:
        """A task's progress JSON with its estimate, from the read model on a reader thread (None: no such
        task, or not the owner's)."""
        return await self.service.read(lambda: self.read.progress(task_id, owner))

    async def with_update_eta(self, view: dict[str, Any]) -> dict[str, Any]:
        """A command's answer: its view with the estimate as of the command. Made right here when the history
        is in memory (the usual case: a hop to a reader thread costs more than the estimate), on a reader
        thread when the history must be read first or the plan has more than LOOP_STEPS steps."""
        if len(view.get("steps") or ()) <= LOOP_STEPS:
            found = self.read.with_update_eta_at_hand(view)
            if found is not None:
                return found
        return await self.service.read(lambda: self.read.with_update_eta(view))

    async def settle(self, position: int, limit: float | None = None) -> bool:
        """Read-your-writes: wait (bounded) until the read models include `position`."""
        limit = self.settings.read_timeout if limit is None else limit
        if self.project:
            return await self.projector.wait_async(position, limit)
        return await asyncio.to_thread(self.wait_for_sync, position, limit)
