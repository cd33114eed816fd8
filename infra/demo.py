"""A demo worker that drives the spec's "Cellphone Store CRM" task so a newcomer sees progress move."""

from __future__ import annotations

import asyncio
import random
from typing import Any
from uuid import UUID

import structlog

from domain.errors import IllegalTransition
from domain.task import StepPlan
from infra.service import NewTask, TaskService

log = structlog.get_logger(__name__)

CRM = NewTask(
    title="Cellphone Store CRM",
    steps=[
        StepPlan("Create database tables", substeps=("Customers", "Products", "Sales", "Repairs")),
        StepPlan(
            "Generate application UI",
            weight=2.0,
            substeps=("Customer list view", "Product list view", "Sales form", "Repair board"),
        ),
        StepPlan("Add search and filters"),
        StepPlan("Configure workflows"),
    ],
    tables=4,
)


class DemoWorker:
    """Reports the CRM task's steps like a real worker would, waiting while paused, stopping if cancelled."""

    def __init__(
        self, service: TaskService, owner: str, step_seconds: float, loop_forever: bool = True
    ) -> None:
        self.service = service
        self.owner = owner
        self.step_seconds = step_seconds
        self.loop_forever = loop_forever
        self.task_id: UUID | None = None
        self.rng = random.Random(7)

    async def create(self) -> UUID:
        outcome = await self.service.create(self.owner, CRM)
        self.task_id = UUID(outcome.view["task_id"])
        return self.task_id

    async def send(self, name: str, **args: Any) -> bool:
        """Send a command; while the task is paused wait and retry; False once it is cancelled."""
        task_id = self.task_id
        assert task_id is not None
        while True:
            try:
                await self.service.command(task_id, self.owner, name, args)
                return True
            except IllegalTransition:
                view = await self.service.read(lambda: self.service.view_sync(task_id, self.owner))
                if view["status"] == "paused":
                    await asyncio.sleep(0.5)
                    continue
                return False

    async def tick(self) -> None:
        await asyncio.sleep(self.step_seconds / 10 * self.rng.uniform(0.6, 1.4))

    async def run_task(self) -> bool:
        """Drive the task through its four steps; False if it was cancelled or moved on without us."""
        for order, plan in enumerate(CRM.steps, start=1):
            if not await self.send("start", order=order):
                return False
            await self.send("log", level="info", message=f"Starting: {plan.name}", step=order)
            if plan.substeps:
                for n, name in enumerate(plan.substeps, start=1):
                    for part in (1, 2):
                        await self.tick()
                        percent = 100 * (n - 1 + part / 2) / len(plan.substeps)
                        if part == 1 and not await self.send("progress", order=order, percent=percent):
                            return False
                    if not await self.send("substep", order=order, n=n):
                        return False
                    await self.send("log", level="info", message=f"{name} done", step=order)
            else:
                for percent in (20, 40, 60, 80):
                    await self.tick()
                    if not await self.send("progress", order=order, percent=percent):
                        return False
            await self.tick()
            if not await self.send("complete", order=order, result="CRM ready" if order == 4 else None):
                return False
        return True

    async def run(self) -> None:
        """Drive the demo task; start over (a restart, linked to the old one) a little after it ends."""
        if self.task_id is None:
            await self.create()
        while True:
            try:
                await self.run_task()
            except Exception as exc:  # the demo must never take the server down
                log.warning("demo_worker_error", error=str(exc))
            if not self.loop_forever:
                return
            await asyncio.sleep(max(5.0, self.step_seconds))
            assert self.task_id is not None
            outcome = await self.service.restart(self.task_id, self.owner)
            self.task_id = UUID(outcome.view["task_id"])
