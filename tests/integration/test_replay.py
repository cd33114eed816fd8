"""Read models are a function of the log: rebuilds equal live tables, verify finds drift, time travel."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from gateway.cli import cli
from infra import replay
from infra.projector import TaskCache
from infra.runtime import Runtime
from infra.settings import Settings
from projections.model import step_states
from projections.registry import MODELS
from tests.integration.workload import run_workload


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    rt.start()
    yield rt
    rt.close()


def raw_tables(rt: Runtime) -> dict[str, list[dict[str, object]]]:
    out = {}
    for name, view in rt.views.items():
        for table in view.model.tables:
            cols = ", ".join(table.column_names())
            out[f"{name}.{table.name}"] = view.query(
                f"SELECT {cols} FROM {table.name} ORDER BY {', '.join(table.key)}"
            )
    return out


def test_rebuild_gives_byte_for_byte_the_live_tables(runtime: Runtime) -> None:
    run_workload(runtime.service, tasks=25)
    assert runtime.wait_for_sync(runtime.app.head(), timeout=30)
    live = raw_tables(runtime)
    assert sum(len(rows) for rows in live.values()) > 500
    runtime.projector.stop()
    for view in runtime.views.values():
        applied = replay.rebuild(runtime.app, view)
        assert applied == runtime.app.head()
    assert raw_tables(runtime) == live


@pytest.mark.parametrize("size", [1, 2_000])
def test_task_cache_gives_each_step_state_before_and_after_an_event(runtime: Runtime, size: int) -> None:
    """Whether a task comes from the cache (its states kept from the last event) or, with a one-task cache
    and interleaved tasks, is loaded again, a Change's steps are those of the task just before and after."""
    run_workload(runtime.service, tasks=4, seed=3)
    app = runtime.app
    cache = TaskCache(app, size=size)
    seen = 0
    for i, notification in enumerate(app.notifications(0, 10_000)):
        event = app.mapper.to_domain_event(notification)
        if i % 5 == 4:  # a consumer that does not ask for states (the tail) uses the same cache
            task = cache.apply(event)
            assert task.version == event.originator_version
            continue
        change = cache.advance(event, notification.id)
        version = event.originator_version
        assert change.after == step_states(app.task(event.originator_id, version))
        if version == 1:
            assert change.before is None
        else:
            assert change.before == step_states(app.task(event.originator_id, version - 1))
            seen += change.before != change.after
        assert change.position == notification.id
    assert seen > 50


def test_verify_reports_drift_and_nothing_else(runtime: Runtime, settings: Settings) -> None:
    run_workload(runtime.service, tasks=8)
    assert runtime.wait_for_sync(runtime.app.head(), timeout=30)
    assert list(replay.verify(runtime.app, settings)) == list(MODELS)
    runtime.projector.stop()
    view = runtime.views["task_progress"]
    with view._cursor(commit=True) as c:  # the test plays a buggy writer
        c.execute("UPDATE task_progress SET percent = 13 WHERE step = 1")
    results = list(replay.verify(runtime.app, settings))
    drifts = [r for r in results if isinstance(r, replay.Drift)]
    assert [(d.model, d.table) for d in drifts] == [("task_progress", "task_progress")]
    assert drifts[0].unexpected and all(row[3] == 13.0 for row in drifts[0].unexpected)
    assert {r for r in results if isinstance(r, str)} == set(MODELS) - {"task_progress"}
    replay.rebuild(runtime.app, view)
    assert list(replay.verify(runtime.app, settings, ["task_progress"])) == ["task_progress"]


def test_time_travel_equals_what_was_served(runtime: Runtime) -> None:
    ids = run_workload(runtime.service, tasks=3, seed=5)
    assert runtime.wait_for_sync(runtime.app.head(), timeout=30)
    tid = ids[0]
    for event in replay.history(runtime.app, tid):
        seq = event["seq"]
        then = replay.view_at(runtime.app, tid, seq)
        found = runtime.read.seq_at(tid, at=event["at"])
        assert found is not None and found[0] >= seq
        position = found[1] if found[0] == seq else None
        if position is not None:
            assert replay.seq_at_position(runtime.app, tid, position) == seq
        assert then["version"] == seq


def test_cli_rebuild_verify_audit_status(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROGRESSD_DATA_DIR", str(settings.data_dir))
    if settings.database_url:
        monkeypatch.setenv("PROGRESSD_DATABASE_URL", settings.database_url)
    rt = Runtime(settings)
    rt.start()
    ids = run_workload(rt.service, tasks=4, seed=9)
    assert rt.wait_for_sync(rt.app.head(), timeout=30)
    head = rt.app.head()
    rt.close()
    runner = CliRunner()
    rebuilt = runner.invoke(cli, ["rebuild", "--projection", "task_view"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "task_view" in rebuilt.output and f"{head}/{head}" in rebuilt.output
    verified = runner.invoke(cli, ["verify"])
    assert verified.exit_code == 0, verified.output
    assert verified.output.count("equals a replay of the log") == len(MODELS)
    audited = runner.invoke(cli, ["audit", str(ids[0]), "--position", "3", "--json"])
    assert audited.exit_code == 0, audited.output
    assert '"type": "Created"' in audited.output
    status = runner.invoke(cli, ["status"])
    assert status.exit_code == 0 and "task_view" in status.output
    unknown = runner.invoke(cli, ["rebuild", "--projection", "nope"])
    assert unknown.exit_code == 2 and "no read model nope" in unknown.output
    missing = runner.invoke(cli, ["audit", "00000000-0000-4000-8000-000000000000"])
    assert missing.exit_code == 1
