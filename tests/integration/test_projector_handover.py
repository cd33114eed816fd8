"""The projector applies the events its own process's writer committed without reading them back; what
other writers commit it reads from the store; either way the read models equal a replay of the log."""

from __future__ import annotations

import time

from infra.projector import Projection, Projector
from infra.replay import verify
from infra.service import TaskService
from infra.settings import Settings
from infra.store import open_store
from infra.views import open_view
from projections.registry import MODELS
from tests.integration.test_tail_wait import CountingStore
from tests.integration.workload import run_workload


def test_the_projector_takes_this_writers_events_as_committed_and_reads_only_what_others_wrote(
    settings: Settings,
) -> None:
    app, other = open_store(settings), open_store(settings)
    service, elsewhere = TaskService(app), TaskService(other)
    counting = CountingStore(app)
    views = [open_view(settings, model) for model in MODELS.values()]
    projector = Projector([Projection(counting, view) for view in views], poll=60)  # type: ignore[arg-type]
    service.on_recorded(projector.offer)
    elsewhere.on_saved(projector.wake)  # like a hint from another gateway
    reads: list[int] = []

    def caught_up() -> None:
        assert projector.wait_for(app.head(), 10), projector.positions()
        # A wake can still be pending when the projector has caught up (it reads the store once more for
        # it): count from when it has taken every wake and its reads have stopped, so that a late one is
        # not counted against what comes next.
        settled, last = 0, -1
        for _ in range(500):
            taken = not (projector._look or projector._wake.is_set())
            settled = settled + 1 if taken and counting.reads == last else 0
            if settled == 5:
                break
            last = counting.reads
            time.sleep(0.02)
        reads.append(counting.reads)

    projector.start()
    try:
        caught_up()
        run_workload(service, 6, 4)
        caught_up()
        run_workload(elsewhere, 1, 5)  # another process's writer
        caught_up()
        run_workload(service, 3, 6)
        caught_up()
    finally:
        projector.stop()
    start, mine, others, mine_again = reads
    assert mine - start == 0  # everything this writer committed was handed over: no read back
    assert others - mine >= 1  # the other writer's events come from the store
    # at most what the last hints cost: the end of the run they started, and one more run they left pending
    assert mine_again - others <= 2
    assert set(projector.positions().values()) == {app.head()}
    assert list(verify(app, settings)) == list(MODELS)  # each model equals a replay of the log (no drift)
    service.close()
    elsewhere.close()
