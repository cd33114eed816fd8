"""Replay and audit tooling: rebuild a read model, verify views against the log, time travel, status."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from uuid import UUID

from domain.progress import progress_view
from infra.projector import Projection
from infra.settings import Settings
from infra.store import ProgressApp, event_record
from infra.views import ViewRecorder, open_view
from projections.model import ReadModel, Table
from projections.registry import MODELS

Report = Callable[[int, int], None]


def models(names: list[str] | None) -> list[ReadModel]:
    """The read models named (all when None); raises UnknownModel for a name that does not exist."""
    if not names:
        return list(MODELS.values())
    missing = [n for n in names if n not in MODELS]
    if missing:
        raise UnknownModel(f"no read model {', '.join(missing)}; there are {', '.join(MODELS)}")
    return [MODELS[n] for n in names]


def catch_up(projection: Projection, head: int, report: Report | None = None, stop: int | None = None) -> int:
    """Apply the log up to `stop` (or its end), reporting (applied, head) after each batch."""
    applied = 0
    while n := projection.step(stop=stop):
        applied += n
        if report:
            report(projection.position, head)
    return applied


def rebuild(app: ProgressApp, view: ViewRecorder, report: Report | None = None) -> int:
    """Drop a read model's tables and tracking, recreate them, and replay the whole log into them."""
    view.drop()
    view.create_table()
    projection = Projection(app, view)
    return catch_up(projection, app.head(), report)


def dump(view: ViewRecorder, table: Table) -> list[tuple[Any, ...]]:
    """A table's rows in key order, with numbers normalised so SQLite and PostgreSQL compare equal."""
    cols = table.column_names()
    rows = view.query(f"SELECT {', '.join(cols)} FROM {table.name} ORDER BY {', '.join(table.key)}")
    return [tuple(_norm(r[c]) for c in cols) for r in rows]


def _norm(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    return str(value)


@dataclass(frozen=True)
class Drift:
    """Rows of a live table that differ from a fresh replay of the log up to the same position."""

    model: str
    table: str
    position: int
    missing: list[tuple[Any, ...]]
    unexpected: list[tuple[Any, ...]]


def snapshot_live(view: ViewRecorder, attempts: int = 20) -> tuple[int, dict[str, list[tuple[Any, ...]]]]:
    """Dump a live model's tables at one tracked position (retrying while a projector moves it)."""
    name = view.model.name
    for _ in range(attempts):
        position = view.max_tracking_id(name) or 0
        tables = {t.name: dump(view, t) for t in view.model.tables}
        if (view.max_tracking_id(name) or 0) == position:
            return position, tables
    raise VerifyError(f"{name} kept moving; stop its projector or try again")


def verify(app: ProgressApp, settings: Settings, names: list[str] | None = None) -> Iterator[Drift | str]:
    """Replay the log into scratch tables and compare them with the live ones; yields drift (or names ok)."""
    with tempfile.TemporaryDirectory(prefix="progressd-verify-") as scratch:
        shadow_settings = replace(Settings(), data_dir=Path(scratch))
        for model in models(names):
            live = open_view(settings, model)
            position, live_tables = snapshot_live(live)
            shadow = open_view(shadow_settings, model)
            catch_up(Projection(app, shadow), position, stop=position)
            drifted = False
            for table in model.tables:
                fresh = dump(shadow, table)
                have = live_tables[table.name]
                if fresh != have:
                    drifted = True
                    fresh_set, have_set = set(fresh), set(have)
                    yield Drift(
                        model.name,
                        table.name,
                        position,
                        missing=sorted(fresh_set - have_set, key=repr)[:20],
                        unexpected=sorted(have_set - fresh_set, key=repr)[:20],
                    )
            if not drifted:
                yield model.name


def history(app: ProgressApp, task_id: UUID) -> list[dict[str, Any]]:
    """Every event of a task, decoded, oldest first."""
    return [event_record(e) for e in app.repository.event_store.get(task_id)]


def view_at(app: ProgressApp, task_id: UUID, seq: int) -> dict[str, Any]:
    """The progress view as it stood right after event `seq` of the task."""
    return progress_view(app.task(task_id, seq))


def seq_at_position(app: ProgressApp, task_id: UUID, position: int) -> int | None:
    """The task's last seq at or before a log position, read from the log itself (no read model)."""
    seq = None
    cursor = 0
    while True:
        batch = app.notifications(cursor, 1000, stop=position)
        if not batch:
            return seq
        for n in batch:
            if n.originator_id == task_id:
                seq = n.originator_version
        cursor = batch[-1].id


def lag(app: ProgressApp, view: ViewRecorder) -> tuple[int, int, float | None]:
    """(position, events behind the head, seconds behind the head) of one read model."""
    head = app.head()
    position = view.max_tracking_id(view.model.name) or 0
    behind = head - position
    if behind <= 0:
        return position, 0, 0.0
    newest = app.notifications(head - 1, 1)
    oldest = app.notifications(position, 1)
    if not newest or not oldest:
        return position, behind, None
    t_head = _timestamp(app, newest[0])
    t_next = _timestamp(app, oldest[0])
    return position, behind, max(0.0, (t_head - t_next).total_seconds())


def _timestamp(app: ProgressApp, notification: Any) -> Any:
    return getattr(app.mapper.to_domain_event(notification), "timestamp")  # noqa: B009


class UnknownModel(Exception):
    """No read model of that name."""


class VerifyError(Exception):
    """The live tables could not be read at a stable position."""
