"""Queries over the read models: plain SQL on the tables the projections keep."""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from domain.eta import History, eta_fields, history_from_rows
from infra.views import ViewRecorder
from projections.model import Row
from projections.step_stats import stats_from_samples

ESTIMATES_KEPT = 4096
HISTORY_RECHECK = 1.0  # seconds


class ReadSide:
    """Answers the API's queries from the read models, scoped to an owner (None sees every task)."""

    def __init__(
        self, views: dict[str, ViewRecorder], changed_at: Callable[[str], int | None] | None = None
    ) -> None:
        self.views = views
        # When this process projects a read model: the position of the last batch that changed its rows.
        self._changed_at = changed_at
        self._eta: tuple[int, tuple[int, int], History] | None = None  # position, content stamp, history
        # Estimates as of a version's own updated_at, shared by the command's answer and its live message.
        self._estimates: OrderedDict[tuple[str, int, tuple[int, int]], dict[str, Any]] = OrderedDict()
        self._estimates_lock = threading.Lock()
        # Without the projection here: how stale the history may get (it changes when a step finishes; a
        # second late changes no estimate that matters, and live messages skip two queries each).
        self.history_recheck = HISTORY_RECHECK
        self._checked = -math.inf

    def eta_history(self) -> History:
        """step_stats as the estimator's history."""
        return self._history()[1]

    def _history(self) -> tuple[tuple[int, int], History]:
        """The history and a stamp of its content; the rows are read again only when the stamp changes.

        When this process projects step_stats, the stamp is the position of the projection's last change
        (most events finish no step and change nothing there): no query at all. Otherwise, at most every
        `history_recheck` seconds, the projection's position and, once it has moved on, a small aggregate say
        whether any step finished since."""
        known = self._history_at_hand()
        if known is not None:
            return known
        view = self.views["step_stats"]
        changed = self._changed_at("step_stats") if self._changed_at is not None else None
        if changed is not None:
            stamp = (changed, -1)  # -1: never a row count, so never equal to an aggregate's stamp
            history = self._history_rows(view)
            self._eta = (changed, stamp, history)
            return stamp, history
        self._checked = time.monotonic()
        position = view.max_tracking_id("step_stats") or 0
        cached = self._eta
        if cached is not None and cached[0] == position:
            return cached[1], cached[2]
        row = view.query("SELECT COUNT(*) AS groups, COALESCE(SUM(count), 0) AS samples FROM step_stats")[0]
        stamp = (int(row["groups"]), int(row["samples"]))
        history = cached[2] if cached is not None and cached[1] == stamp else self._history_rows(view)
        self._eta = (position, stamp, history)
        return stamp, history

    def _history_at_hand(self) -> tuple[tuple[int, int], History] | None:
        """What _history answers when it can say so without a query (None: it must look)."""
        cached = self._eta
        if cached is None:
            return None
        changed = self._changed_at("step_stats") if self._changed_at is not None else None
        if changed is not None:
            return (cached[1], cached[2]) if cached[1] == (changed, -1) else None
        if time.monotonic() - self._checked < self.history_recheck:
            return cached[1], cached[2]
        return None

    @staticmethod
    def _history_rows(view: ViewRecorder) -> History:
        rows = view.query("SELECT step_key, complexity, count, median_ms, p90_ms, recent FROM step_stats")
        return history_from_rows(rows)

    def with_eta(self, view: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
        """The view with its time estimate (eta_seconds, interval, confidence) as of `now`."""
        if "step_stats" not in self.views:
            return view
        return {**view, **eta_fields(view, self.eta_history(), now or datetime.now(UTC))}

    def with_eta_then(self, view: dict[str, Any], now: datetime, position: int) -> dict[str, Any]:
        """The view with the estimate it had at a log position: the history as step_stats stood right after
        that position, the clock at `now` (time travel). Reads every step sample up to there."""
        if "step_stats" not in self.views:
            return view
        samples = self._q(
            "step_stats",
            "SELECT step_key, complexity, duration_ms FROM step_samples WHERE position <= :position "
            "ORDER BY position",
            {"position": position},
        )
        return {**view, **eta_fields(view, history_from_rows(stats_from_samples(samples)), now)}

    def eta_as_of_update(self, view: dict[str, Any]) -> dict[str, Any]:
        """A view's estimate members as of its own updated_at: what its live update and the answer to the
        command that made it carry. Computed once per task version and history."""
        if "step_stats" not in self.views:
            return {}
        return self._as_of_update(view, *self._history())

    def with_update_eta(self, view: dict[str, Any]) -> dict[str, Any]:
        """The view of a command's answer, with the estimate as of the command (see eta_as_of_update)."""
        return {**view, **self.eta_as_of_update(view)}

    def with_update_eta_at_hand(self, view: dict[str, Any]) -> dict[str, Any] | None:
        """with_update_eta without touching the database, or None when the history must be read first.
        Cheap enough for the event loop: no query, one estimate at most (a fraction of a millisecond)."""
        if "step_stats" not in self.views:
            return view
        known = self._history_at_hand()
        return None if known is None else {**view, **self._as_of_update(view, *known)}

    def _as_of_update(self, view: dict[str, Any], stamp: tuple[int, int], history: History) -> dict[str, Any]:
        key = (str(view["task_id"]), int(view["version"]), stamp)
        with self._estimates_lock:
            found = self._estimates.get(key)
        if found is not None:
            return found
        at = view.get("updated_at")
        now = datetime.fromisoformat(at.replace("Z", "+00:00")) if at else datetime.now(UTC)
        found = eta_fields(view, history, now)
        with self._estimates_lock:
            self._estimates[key] = found
            while len(self._estimates) > ESTIMATES_KEPT:
                self._estimates.popitem(last=False)
        return found

    def _q(self, model: str, sql: str, params: Row | None = None) -> list[Row]:
        return self.views[model].query(sql, params)

    def progress(self, task_id: UUID, owner: str | None) -> dict[str, Any] | None:
        rows = self._q(
            "task_view",
            "SELECT owner, view FROM task_view WHERE task_id = :task_id",
            {"task_id": str(task_id)},
        )
        if not rows or (owner is not None and rows[0]["owner"] != owner):
            return None
        view: dict[str, Any] = json.loads(rows[0]["view"])
        return self.with_eta(view)

    def list_tasks(
        self, owner: str | None, limit: int, before: str | None = None, status: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The caller's tasks, newest first; returns a page and the cursor of the next page."""
        where = ["1 = 1"]
        params: Row = {"limit": limit + 1}
        if owner is not None:
            where.append("owner = :owner")
            params["owner"] = owner
        if status is not None:
            where.append("status = :status")
            params["status"] = status
        if before:
            created_at, task_id = decode_cursor(before)
            where.append("(created_at < :c_at OR (created_at = :c_at AND task_id < :c_id))")
            params.update(c_at=created_at, c_id=task_id)
        rows = self._q(
            "task_view",
            f"SELECT task_id, created_at, view FROM task_view WHERE {' AND '.join(where)} "
            "ORDER BY created_at DESC, task_id DESC LIMIT :limit",
            params,
        )
        now = datetime.now(UTC)
        page = [self.with_eta(json.loads(r["view"]), now) for r in rows[:limit]]
        cursor = (
            encode_cursor(rows[limit - 1]["created_at"], rows[limit - 1]["task_id"])
            if len(rows) > limit
            else None
        )
        return page, cursor

    def history(self, task_id: UUID) -> dict[str, list[Row]]:
        params = {"task_id": str(task_id)}
        return {
            "steps": self._q(
                "task_progress",
                "SELECT task_id, step, name, percent, status, updated_at FROM task_progress "
                "WHERE task_id = :task_id ORDER BY step",
                params,
            ),
            "changes": self._q(
                "task_progress",
                "SELECT position, step, seq, event, percent, status, at FROM task_progress_changes "
                "WHERE task_id = :task_id ORDER BY position, step",
                params,
            ),
        }

    def logs(self, task_id: UUID, after: int, level: str | None, limit: int) -> list[Row]:
        params: Row = {"task_id": str(task_id), "after": after, "limit": limit}
        where = "task_id = :task_id AND position > :after"
        if level is not None:
            where += " AND level IN (" + ", ".join(f":l{i}" for i in range(len(LEVELS_AT_LEAST[level]))) + ")"
            params.update({f"l{i}": lv for i, lv in enumerate(LEVELS_AT_LEAST[level])})
        return self._q(
            "task_logs",
            f"SELECT position, seq, at, level, step, message FROM task_logs WHERE {where} "
            "ORDER BY position LIMIT :limit",
            params,
        )

    def seq_at(
        self, task_id: UUID, position: int | None = None, at: str | None = None
    ) -> tuple[int, int] | None:
        """The task's last event seq at or before a log position or an instant (time travel)."""
        params: Row = {"task_id": str(task_id)}
        where = "task_id = :task_id"
        if position is not None:
            where += " AND position <= :position"
            params["position"] = position
        if at is not None:
            where += " AND at <= :at"
            params["at"] = at
        rows = self._q(
            "event_index",
            f"SELECT seq, position FROM event_index WHERE {where} ORDER BY seq DESC LIMIT 1",
            params,
        )
        return (int(rows[0]["seq"]), int(rows[0]["position"])) if rows else None

    def step_stats(self) -> list[Row]:
        return self._q(
            "step_stats",
            "SELECT step_key, complexity, count, mean_ms, median_ms, p90_ms FROM step_stats "
            "ORDER BY step_key, complexity",
        )


LEVELS = ("debug", "info", "warning", "error")
LEVELS_AT_LEAST = {lv: LEVELS[i:] for i, lv in enumerate(LEVELS)}


def encode_cursor(created_at: str, task_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at}|{task_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The (created_at, task_id) a cursor from encode_cursor holds; anything else is a BadCursor before it
    reaches SQL (PostgreSQL refuses a NUL in text with a DataError)."""
    try:
        created_at, task_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        datetime.fromisoformat(created_at.replace("Z", "+00:00"))
        UUID(task_id)
    except ValueError:
        raise BadCursor(cursor) from None
    if not created_at.isprintable() or not task_id.isprintable():
        raise BadCursor(cursor)
    return created_at, task_id


class BadCursor(Exception):
    """A page cursor that this server did not hand out."""


def parse_at(raw: str) -> str:
    """An ISO 8601 instant normalised to the form the read models store (UTC, milliseconds, Z)."""
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        # OverflowError: an offset that moves the instant out of years 1-9999 (0001-01-01T00:00+14:00)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (ValueError, OverflowError):
        raise BadCursor(raw) from None
