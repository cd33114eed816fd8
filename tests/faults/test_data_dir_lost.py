"""The SQLite data dir is deleted, or its database file replaced, under a running server.

SQLite goes on writing to a deleted file through its open descriptors, so the server used to answer 200 and
`/readyz` ready while everything it wrote was already gone. Now commands answer `503 store-unavailable`
problem+json and `/readyz` 503 from then on, and nothing more is written to the lost file.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.faults.harness import FIGURES, assert_problem

pytestmark = pytest.mark.e2e

PLAN = {"title": "import", "steps": [{"name": "load"}]}


def started(server_factory: type[ServerProcess], tmp_path: Path) -> tuple[ServerProcess, Path]:
    data = tmp_path / "data"  # the server's own log stays outside it
    server = server_factory(tmp_path, env={"PROGRESSD_DATA_DIR": str(data)})
    server.start()
    return server, data


def answers_after_loss(client: httpx.Client, tid: str) -> dict[str, list[int]]:
    """Commands and /readyz for a few seconds after the file is lost (reads may see it up to 1 s late)."""
    seen: dict[str, list[int]] = {"command": [], "readyz": []}
    deadline = time.monotonic() + 3.0
    n = 0
    while time.monotonic() < deadline:
        n += 1
        r = client.post(
            f"/api/tasks/{tid}/logs", json={"message": f"after {n}"}, headers={"Idempotency-Key": f"k{n}"}
        )
        seen["command"].append(r.status_code)
        if r.status_code != 200:
            assert_problem(r, 503, "store-unavailable")
            assert r.headers["retry-after"]
        seen["readyz"].append(client.get("/readyz").status_code)
        time.sleep(0.1)
    return seen


def check(seen: dict[str, list[int]], name: str) -> None:
    FIGURES[name] = {k: sorted(set(v)) for k, v in seen.items()} | {"readyz 200s": seen["readyz"].count(200)}
    assert set(seen["command"]) == {503}, seen  # the first command after the loss already
    readyz = seen["readyz"]
    assert readyz[-1] == 503, seen
    first_503 = readyz.index(503)
    assert set(readyz[first_503:]) == {503}, seen  # and it stays not ready


def test_a_deleted_data_dir_answers_503_and_not_ready(
    server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    server, data = started(server_factory, tmp_path)
    with httpx.Client(base_url=server.url, timeout=15) as client:
        tid = client.post("/api/tasks", json=PLAN).json()["task_id"]
        assert client.post(f"/api/tasks/{tid}/steps/1/start").status_code == 200
        assert client.get("/readyz").status_code == 200
        shutil.rmtree(data)
        # With no command to notice first, /readyz alone finds out (its check may be up to 1 s old).
        lost = time.monotonic()
        ready = [client.get("/readyz")]
        while ready[-1].status_code == 200 and time.monotonic() < lost + 5:
            time.sleep(0.05)
            ready.append(client.get("/readyz"))
        not_ready = assert_problem(ready[-1], 503, "not-ready")
        assert "OperationalError" in not_ready["detail"]
        waited = time.monotonic() - lost
        seen = answers_after_loss(client, tid)
        assert server.proc is not None and server.proc.poll() is None  # still up, answering
        assert client.get("/healthz").status_code == 200
    check(seen, "data dir deleted")
    FIGURES["data dir deleted"] |= {
        "readyz 503 after s": round(waited, 2),
        "readyz 200s first": len(ready) - 1,
    }
    assert not (data / "progressd.sqlite3").exists()


def test_a_replaced_database_file_answers_503_and_not_ready(
    server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    server, data = started(server_factory, tmp_path)
    db = data / "progressd.sqlite3"
    with httpx.Client(base_url=server.url, timeout=15) as client:
        tid = client.post("/api/tasks", json=PLAN).json()["task_id"]
        assert client.post(f"/api/tasks/{tid}/steps/1/start").status_code == 200
        db.rename(tmp_path / "moved-away.sqlite3")
        db.write_bytes(b"")  # a new, empty file where the database was
        seen = answers_after_loss(client, tid)
    check(seen, "database file replaced")
    assert db.stat().st_size == 0  # nothing was written into the new file
