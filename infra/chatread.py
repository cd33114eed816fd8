"""Queries the chat needs beyond the API's: a task's last log lines, its last errors, how many there are."""

from __future__ import annotations

from infra.readside import ReadSide
from projections.model import Row

_COLUMNS = "position, seq, at, level, step, message"


class ChatReads:
    """Log queries over the `task_logs` read model, newest last. Blocking: call from a reader thread."""

    def __init__(self, read: ReadSide) -> None:
        self.view = read.views["task_logs"]

    def recent(self, task_id: str, limit: int) -> list[Row]:
        rows = self.view.query(
            f"SELECT {_COLUMNS} FROM task_logs WHERE task_id = :t ORDER BY position DESC LIMIT :n",
            {"t": task_id, "n": limit},
        )
        return rows[::-1]

    def errors(self, task_id: str, limit: int) -> list[Row]:
        rows = self.view.query(
            f"SELECT {_COLUMNS} FROM task_logs WHERE task_id = :t AND level = 'error' "
            "ORDER BY position DESC LIMIT :n",
            {"t": task_id, "n": limit},
        )
        return rows[::-1]

    def count(self, task_id: str) -> int:
        rows = self.view.query("SELECT COUNT(*) AS n FROM task_logs WHERE task_id = :t", {"t": task_id})
        return int(rows[0]["n"]) if rows else 0
