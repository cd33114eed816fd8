"""The SQLite data dir fills up or turns read-only under a running server.

Commands get a 503 problem (never a 500 or a crash), nothing half-written is left behind, and once
space or permissions are back the store passes `PRAGMA integrity_check`, the refused commands apply
exactly once when retried with their keys, and every view equals a replay of the log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.faults.harness import FIGURES, assert_problem, counts, events, settle, verify

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLAN = {"title": "disk", "steps": [{"name": "work"}]}
NOBODY = 65534


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 6 MiB tmpfs: a disk that really fills up (mounting one needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    scratch = Path(tempfile.mkdtemp(prefix="progressd-full-"))
    mount = scratch / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0755", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


def fill(disk: Path, leave: int) -> Path:
    """Write a file until the disk says ENOSPC, then give back `leave` bytes."""
    filler = disk / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def integrity(db: Path) -> list[tuple[str]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows: list[tuple[str]] = conn.execute("PRAGMA integrity_check").fetchall()
        return rows


def post_log(client: httpx.Client, tid: str, key: str, message: str) -> httpx.Response:
    return client.post(f"/api/tasks/{tid}/logs", json={"message": message}, headers={"Idempotency-Key": key})


def test_disk_full_answers_503_and_the_store_survives(
    tmp_path: Path, small_disk: Path, server_factory: type[ServerProcess]
) -> None:
    server = server_factory(
        tmp_path, env={"PROGRESSD_DATA_DIR": str(small_disk)}
    )  # its log stays off the disk
    server.start()
    assert server.proc is not None
    with httpx.Client(base_url=server.url, timeout=30) as client:
        tid = client.post("/api/tasks", json=PLAN).json()["task_id"]
        assert client.post(f"/api/tasks/{tid}/steps/1/start").status_code == 200
        filler = fill(small_disk, leave=256 * 1024)  # room for a few commands, then none
        accepted: list[str] = []
        refused: list[str] = []
        for i in range(100):  # large lines, so the write-ahead log must grow into the full disk
            message = f"{i:03d} " + "x" * 9_000
            response = post_log(client, tid, f"full-{i}", message)
            if response.status_code == 200:
                accepted.append(message)
                continue
            assert_problem(response, 503, "store-unavailable")
            assert response.headers["retry-after"] == "2"
            refused.append(message)
            if len(refused) >= 5:
                break
        assert accepted and refused, (len(accepted), len(refused))
        assert server.proc.poll() is None
        assert client.get(f"/api/tasks/{tid}/progress").status_code == 200
        logged = counts(events(client, tid), "Logged", "message")
        assert logged == dict.fromkeys(accepted, 1)  # refused ones left nothing behind

        filler.unlink()
        freed = time.monotonic()
        for message in refused:
            i = int(message[:3])
            response = post_log(client, tid, f"full-{i}", message)
            assert response.status_code == 200, response.text
            assert response.headers.get("idempotent-replayed") is None
        recovered = time.monotonic() - freed
        settle(client)
        assert counts(events(client, tid), "Logged", "message") == dict.fromkeys(accepted + refused, 1)
        assert integrity(small_disk / "progressd.sqlite3") == [("ok",)]
    verify(server)
    server.stop()
    FIGURES["SQLite disk full"] = {
        "disk_mib": 6,
        "accepted_while_filling": len(accepted),
        "answers_503": len(refused),
        "retried_after_freeing": len(refused),
        "retries_ok_in_s": round(recovered, 2),
        "integrity_check": "ok",
    }


class NobodyServer(ServerProcess):
    """The server as an unprivileged user when the tests run as root (root ignores file permissions)."""

    def start(self, timeout: float = 30.0) -> None:
        command = ["-m", "gateway", "serve", "--port", str(self.port), *self.extra_args]
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        argv = [*(prefix if os.geteuid() == 0 else []), sys.executable, *command]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code in (200, 503):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer: {self.log.read_text()[-2000:]}")


def set_mode(data: Path, directory: int, files: int) -> None:
    for path in data.iterdir():
        path.chmod(files)
    data.chmod(directory)


def test_read_only_data_dir_answers_503_and_nothing_is_lost(tmp_path: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="progressd-ro-"))
    scratch.chmod(0o755)  # the unprivileged server must reach its data dir
    data = scratch / "data"
    data.mkdir()
    if os.geteuid() == 0:
        os.chown(data, NOBODY, NOBODY)
    server = NobodyServer(tmp_path, env={"PROGRESSD_DATA_DIR": str(data)})
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            tid = client.post("/api/tasks", json=PLAN).json()["task_id"]
            assert client.post(f"/api/tasks/{tid}/steps/1/start").status_code == 200
            set_mode(data, 0o555, 0o444)
            # Open files keep the access they were opened with: the running server still writes.
            running = post_log(client, tid, "running", "while read-only").status_code
            assert running in (200, 503)
            server.kill()
            server.start()  # a restart (a crash, a deploy) on the read-only directory
            assert server.proc is not None
            before = len(events(client, tid))
            refused = []
            for i in range(5):
                response = post_log(client, tid, f"ro-{i}", f"read-only {i}")
                assert_problem(response, 503, "store-unavailable")
                assert response.headers["retry-after"] == "2"
                refused.append(i)
            reads = {client.get(f"/api/tasks/{tid}/progress").status_code, client.get("/readyz").status_code}
            assert reads <= {200, 503}
            assert server.proc.poll() is None
            assert len(events(client, tid)) == before
            server.stop()

            set_mode(data, 0o755, 0o644)
            server.start()  # connections opened read-only stay so: it takes a restart to write again
            for i in refused:
                assert post_log(client, tid, f"ro-{i}", f"read-only {i}").status_code == 200
            if running == 503:
                assert post_log(client, tid, "running", "while read-only").status_code == 200
            settle(client)
            log = events(client, tid)
            expected = ["while read-only", *(f"read-only {i}" for i in refused)]
            assert counts(log, "Logged", "message") == dict.fromkeys(expected, 1)
        assert integrity(data / "progressd.sqlite3") == [("ok",)]
        verify(server)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    FIGURES["SQLite read-only data dir"] = {
        "write_on_open_connection_while_read_only": running,
        "answers_503_after_restart_on_read_only_dir": len(refused),
        "read_statuses": sorted(reads),
        "integrity_check": "ok",
    }
