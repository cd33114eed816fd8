"""`import_history` on SQLite: a traces CSV becomes completed tasks, and step_stats learns from them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest

from domain.eta import estimate, history_from_rows
from infra.history_import import TraceError, import_history, import_id, read_traces
from infra.runtime import Runtime
from infra.settings import Settings

HEADER = "task_id,complexity,step_order,step_name,started_at,finished_at,substeps_total\n"
ROWS = [
    # Two runs of the same plan and one of another; times with Z, with an offset, and without (UTC).
    "crm-1,4,1,Create database tables,2024-01-15T10:00:00Z,2024-01-15T10:01:00Z,4\n",
    "crm-1,4,2,Generate UI for table 1,2024-01-15T10:01:00Z,2024-01-15T10:04:00Z,0\n",
    "crm-2,medium,2,Generate UI for table 2,2024-01-16T10:02:00+00:00,2024-01-16T10:07:00+00:00,\n",
    "crm-2,medium,1,Create database tables,2024-01-16T10:00:00+00:00,2024-01-16T10:02:00+00:00,4\n",
    "shop-1,1,1,Create database tables,2024-01-17T09:00:00,2024-01-17T09:00:30,1\n",
]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(Settings(data_dir=tmp_path / "data"))
    yield rt
    rt.close()


def traces(tmp_path: Path, rows: list[str], name: str = "traces.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "".join(rows), encoding="utf-8")
    return path


def stats(rt: Runtime) -> dict[tuple[str, str], dict[str, object]]:
    rows = rt.views["step_stats"].query("SELECT * FROM step_stats")
    return {(r["step_key"], r["complexity"]): r for r in rows}


def test_imported_runs_become_completed_tasks_and_step_stats(runtime: Runtime, tmp_path: Path) -> None:
    assert import_history(runtime, traces(tmp_path, ROWS)) == 3
    runtime.projector.run_once()
    rows = stats(runtime)
    tables = rows[("create database tables", "medium")]
    assert tables["count"] == 2
    assert json.loads(str(tables["recent"])) == [60_000, 120_000]  # in the order the runs happened
    assert rows[("generate ui for table", "medium")]["median_ms"] == 240_000.0
    assert rows[("create database tables", "simple")]["count"] == 1
    assert rows[("create database tables", "any")]["count"] == 3

    view = runtime.read.progress(import_id("local", "crm-2"), "local")
    assert view is not None
    assert view["status"] == "completed"
    assert view["complexity"] == "medium" and view["tables"] is None
    assert [s["name"] for s in view["steps"]] == ["Create database tables", "Generate UI for table 2"]
    assert [s["duration_ms"] for s in view["steps"]] == [120_000, 300_000]
    assert view["started_at"] == "2024-01-16T10:00:00.000Z"
    assert view["finished_at"] == "2024-01-16T10:07:00.000Z"
    assert len(view["steps"][0]["substeps"]) == 4


def test_imported_runs_are_history_not_news(runtime: Runtime, tmp_path: Path) -> None:
    """No notification for a recorded run, however recent; a live task alongside it still gets its own."""
    from domain.task import StepPlan
    from infra.service import NewTask

    assert import_history(runtime, traces(tmp_path, ROWS)) == 3
    live = runtime.service.create_sync("local", NewTask("Live CRM", [StepPlan("Create database tables")]))
    runtime.service.command_sync(UUID(live.view["task_id"]), "local", "start", {"order": 1})
    runtime.projector.run_once()
    outbox = runtime.views["notifications"].query("SELECT task_id, kind FROM notification_outbox")
    assert {r["task_id"] for r in outbox} == {live.view["task_id"]}
    assert {r["kind"] for r in outbox} == {"task_started"}
    assert runtime.app.task(import_id("local", "crm-1")).imported
    assert not runtime.app.task(UUID(live.view["task_id"])).imported


def test_importing_the_same_file_again_adds_nothing(runtime: Runtime, tmp_path: Path) -> None:
    path = traces(tmp_path, ROWS)
    assert import_history(runtime, path) == 3
    head = runtime.app.head()
    assert import_history(runtime, path) == 0
    assert runtime.app.head() == head
    more = traces(
        tmp_path, [*ROWS, "shop-2,1,1,Create database tables,2024-01-18T09:00:00Z,2024-01-18T09:01:00Z,0\n"]
    )
    assert import_history(runtime.service, more, owner="local") == 1


def test_the_estimator_learns_from_an_import(runtime: Runtime, tmp_path: Path) -> None:
    runs = [
        f"run-{i},medium,{order},{name},2024-02-0{1 + i // 4}T{10 + i % 4}:{minute:02d}:00Z,"
        f"2024-02-0{1 + i // 4}T{10 + i % 4}:{minute + length:02d}:00Z,0\n"
        for i in range(12)
        for order, (name, minute, length) in enumerate((("Plan", 0, 2), ("Build", 2, 10), ("Ship", 12, 3)), 1)
    ]
    assert import_history(runtime, traces(tmp_path, runs)) == 12
    runtime.projector.run_once()
    history = history_from_rows(
        runtime.views["step_stats"].query(
            "SELECT step_key, complexity, count, median_ms, p90_ms, recent FROM step_stats"
        )
    )
    fresh = runtime.read.progress(import_id("local", "run-0"), "local")
    assert fresh is not None
    # The same plan, not started yet: about 15 minutes of work, as every imported run took.
    pending = {
        **fresh,
        "status": "pending",
        "steps": [{**s, "status": "pending", "duration_ms": None, "work_ms": None} for s in fresh["steps"]],
    }
    e = estimate(pending, history, datetime(2024, 3, 1, tzinfo=UTC))
    assert e.eta_seconds is not None and 12 * 60 <= e.eta_seconds <= 18 * 60
    assert e.eta_low_seconds is not None and e.eta_high_seconds is not None
    assert e.eta_low_seconds <= 15 * 60 <= e.eta_high_seconds


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("x,4,1,Step,2024-01-15T10:00:00Z,2024-01-15T09:00:00Z,0\n", "finished_at is before started_at"),
        ("x,huge,1,Step,2024-01-15T10:00:00Z,2024-01-15T10:01:00Z,0\n", "complexity must be"),
        ("x,4,one,Step,2024-01-15T10:00:00Z,2024-01-15T10:01:00Z,0\n", "step_order must be an integer"),
        ("x,4,1,Step,yesterday,2024-01-15T10:01:00Z,0\n", "started_at must be an ISO 8601 instant"),
        ("x,4,1,,2024-01-15T10:00:00Z,2024-01-15T10:01:00Z,0\n", "step_name is empty"),
    ],
)
def test_a_bad_file_is_rejected_with_its_line_and_writes_nothing(
    runtime: Runtime, tmp_path: Path, row: str, message: str
) -> None:
    path = traces(tmp_path, [ROWS[0], row])
    with pytest.raises(TraceError, match=message) as caught:
        import_history(runtime, path)
    assert ":3:" in str(caught.value)
    assert runtime.app.head() == 0


def test_a_repeated_step_order_and_missing_columns_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="step_order 1 twice"):
        read_traces(traces(tmp_path, [ROWS[0], ROWS[0]]))
    bad = tmp_path / "bad.csv"
    bad.write_text("task_id,step_name\nx,Step\n", encoding="utf-8")
    with pytest.raises(TraceError, match="missing column"):
        read_traces(bad)


def test_overlapping_steps_and_instant_steps_are_replayed_in_time_order(
    runtime: Runtime, tmp_path: Path
) -> None:
    rows = [
        "par,2,1,Download,2024-01-15T10:00:00Z,2024-01-15T10:05:00Z,0\n",
        "par,2,2,Index,2024-01-15T10:01:00Z,2024-01-15T10:03:00Z,0\n",
        "par,2,3,Notify,2024-01-15T10:05:00Z,2024-01-15T10:05:00Z,0\n",
    ]
    assert import_history(runtime, traces(tmp_path, rows)) == 1
    runtime.projector.run_once()
    view = runtime.read.progress(UUID(str(import_id("local", "par"))), None)
    assert view is not None and view["status"] == "completed"
    assert [s["duration_ms"] for s in view["steps"]] == [300_000, 120_000, 0]
