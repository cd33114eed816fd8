"""`progressd rebuild` over a large log: a progress bar, and tables equal to the ones built live."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.replay import write_log  # the benchmark's log: about 65 events per task
from gateway.cli import cli
from infra.runtime import Runtime
from infra.settings import Settings

pytestmark = pytest.mark.slow


def tables(rt: Runtime) -> dict[str, list[dict[str, object]]]:
    out = {}
    for view in rt.views.values():
        for table in view.model.tables:
            cols = ", ".join(table.column_names())
            out[table.name] = view.query(f"SELECT {cols} FROM {table.name} ORDER BY {', '.join(table.key)}")
    return out


@pytest.mark.parametrize(
    ("backend", "events"), [("sqlite", 100_000), pytest.param("postgres", 10_000, marks=pytest.mark.postgres)]
)
def test_rebuild_of_a_large_log_equals_live(
    backend: str, events: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    settings = Settings(data_dir=tmp_path, database_url=url)
    rt = Runtime(settings)
    rt.start()
    head = write_log(rt.app, events)
    assert head >= events
    rt.projector.wake()
    assert rt.wait_for_sync(head, timeout=600)
    live = tables(rt)
    rt.close()

    monkeypatch.setenv("PROGRESSD_DATA_DIR", str(tmp_path))
    if url:
        monkeypatch.setenv("PROGRESSD_DATABASE_URL", url)
    result = CliRunner().invoke(cli, ["rebuild"], terminal_width=120)
    assert result.exit_code == 0, result.output
    for name in ("task_view", "task_progress", "step_stats", "task_logs", "event_index"):
        assert f"{name}" in result.output
    assert f"{head:,}/{head:,}" in result.output or f"{head}/{head}" in result.output
    assert "events/s" in result.output

    rt = Runtime(settings, project=False)
    try:
        assert tables(rt) == live
        assert len(live["event_index"]) == head
    finally:
        rt.close()
