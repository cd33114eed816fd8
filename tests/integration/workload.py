"""A deterministic workload of realistic task histories, written straight through the service."""

from __future__ import annotations

import contextlib
import random
from uuid import UUID

from domain.errors import DomainError
from domain.task import StepPlan
from infra.service import NewTask, TaskService

STEP_NAMES = [
    "Create database tables",
    "Generate application UI",
    "Add search and filters",
    "Configure workflows",
]


def plan(rng: random.Random, i: int) -> NewTask:
    steps = [
        StepPlan(
            name,
            substeps=tuple(f"part {k}" for k in range(rng.randint(0, 3))),
            requires_approval=rng.random() < 0.1,
        )
        for name in STEP_NAMES[: rng.randint(1, 4)]
    ]
    return NewTask(title=f"task {i}", steps=steps, tables=rng.randint(1, 8))


def run_workload(service: TaskService, tasks: int, seed: int = 1, owner: str = "local") -> list[UUID]:
    """Create tasks and push each through random but legal-looking commands; rejected ones are skipped."""
    rng = random.Random(seed)
    ids = []
    for i in range(tasks):
        outcome = service.create_sync(owner, plan(rng, i))
        tid = UUID(outcome.view["task_id"])
        ids.append(tid)
        n_steps = len(outcome.view["steps"])
        for order in range(1, n_steps + 1):
            script: list[tuple[str, dict[str, object]]] = [("start", {"order": order})]
            if rng.random() < 0.2:
                script.append(("approve", {"order": order}))
            script += [("progress", {"order": order, "percent": p}) for p in (20, 55, 80)]
            script += [("substep", {"order": order, "n": n}) for n in (1, 2, 3)]
            script.append(
                (
                    "log",
                    {
                        "level": rng.choice(["info", "warning", "error"]),
                        "message": f"line {order}",
                        "step": order,
                    },
                )
            )
            if rng.random() < 0.15:
                script += [("fail", {"order": order, "error": "flaky"}), ("retry", {"order": order})]
            if rng.random() < 0.1:
                script += [("pause", {}), ("resume", {})]
            script.append(("skip" if rng.random() < 0.1 else "complete", {"order": order}))
            for name, args in script:
                with contextlib.suppress(DomainError):
                    service.command_sync(tid, owner, name, args)
        if rng.random() < 0.1:
            with contextlib.suppress(DomainError):
                service.command_sync(tid, owner, "cancel", {})
    return ids
