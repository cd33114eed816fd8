"""`progressd watch` in a real terminal (tmux) against a real server: the box, the keys, a server restart."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from gateway import screen
from tests.e2e.conftest import ServerProcess
from tests.e2e.debian import ensure_package

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CRM = {
    "title": "Cellphone Store CRM",
    "steps": [
        {"name": "Create database tables"},
        {
            "name": "Generate application UI",
            "substeps": ["Customer list view", "Product list view", "Sales form", "Repair board"],
        },
        {"name": "Add search and filters"},
        {"name": "Configure workflows"},
    ],
}


class Terminal:
    """A program in a detached tmux window on its own tmux server: type keys, read the screen."""

    def __init__(self, tmux: Path, command: list[str], width: int = 100, height: int = 48) -> None:
        self.base = [str(tmux), "-u", "-L", f"progressd-{uuid.uuid4().hex[:10]}"]
        env = {"LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "TERM": "xterm-256color"}
        # The terminal's own size, not the COLUMNS/LINES that this process may have inherited.
        shell = "env -u COLUMNS -u LINES " + " ".join(command) + "; echo WATCH-EXIT=$?; sleep 600"
        size = ["-x", str(width), "-y", str(height)]
        variables = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
        self.tmux("new-session", "-d", "-s", "t", *size, "-c", str(ROOT), *variables, shell)

    def tmux(self, *args: str) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=10, check=True)
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def wait_for(self, *patterns: str, timeout: float = 15.0) -> str:
        """The screen once every pattern (a regular expression) is on it at the same time."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if all(re.search(p, text) for p in patterns):
                return text
            time.sleep(0.1)
        missing = [p for p in patterns if not re.search(p, text)]
        raise AssertionError(f"not on the screen: {missing}\n{text}")

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture(scope="session")
def tmux() -> Path:
    try:
        return ensure_package(Path("/usr/bin/tmux"), "tmux")
    except RuntimeError as exc:
        pytest.fail(f"tmux is needed to test `progressd watch` and could not be installed: {exc}")


@pytest.fixture
def server(tmp_path: Path, server_factory: type[ServerProcess]) -> ServerProcess:
    srv = server_factory(tmp_path)
    srv.start()
    return srv


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as client:
        yield client


@pytest.fixture
def terminals(tmux: Path) -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


def post(api: httpx.Client, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = api.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    view: dict[str, Any] = response.json()
    return view


def until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_watch_shows_the_box_takes_keys_and_resumes_after_a_server_restart(
    server: ServerProcess, api: httpx.Client, tmux: Path, terminals: list[Terminal]
) -> None:
    tid = post(api, "/api/tasks", CRM)["task_id"]
    base = f"/api/tasks/{tid}"
    for path in ("steps/1/start", "steps/1/complete", "steps/2/start", "steps/2/substeps/1/done"):
        post(api, f"{base}/{path}")
    post(api, f"{base}/steps/2/substeps/2/done")
    view = post(api, f"{base}/logs", {"level": "info", "message": "two views generated", "step": 2})

    term = Terminal(tmux, [sys.executable, "-m", "gateway.watch", server.url, tid])
    terminals.append(term)
    text = term.wait_for(
        "Cellphone Store CRM",
        re.escape(f"] {view['progress']}%"),
        r"\[█+░+\]",
        re.escape("Step 2 of 4: Generate application UI"),
        re.escape("├─ Customer list view ✓"),
        re.escape("├─ Sales form ◐ (in progress)"),
        re.escape("└─ Repair board ○ (pending)"),
        r"Started: (just now|\d+ s ago)",
        r"ETA: (—|.+ remaining)",
        r"✓ 1\. Create database tables\s+completed in",
        r"◐ 2\. Generate application UI\s+running",
        "two views generated",
        "● live",
    )
    assert "p pause" in text

    term.keys("p")
    until(lambda: api.get(f"{base}/progress").json()["status"] == "paused")
    term.wait_for(r"⏸ 2\. Generate application UI\s+paused", "⏸ paused")

    server.kill()
    term.wait_for("reconnecting…")
    server.start()
    # What happens while it is away or reconnecting must reach it from its cursor, exactly once.
    post(api, f"{base}/resume")
    post(api, f"{base}/steps/2/complete")
    post(api, f"{base}/logs", {"level": "warning", "message": "retrying a slow query", "step": 3})
    view = post(api, f"{base}/steps/3/start")
    text = term.wait_for(
        "● live",
        re.escape("Step 3 of 4: Add search and filters"),
        re.escape(f"] {view['progress']}%"),
        r"✓ 2\. Generate application UI\s+completed in",
        r"◐ 3\. Add search and filters\s+running",
        "retrying a slow query",
        timeout=30,
    )
    assert text.count("retrying a slow query") == 1

    term.keys("c")
    term.wait_for("Press c again")
    assert api.get(f"{base}/progress").json()["status"] == "running"
    term.keys("c")
    until(lambda: api.get(f"{base}/progress").json()["status"] == "cancelled")
    term.wait_for("⊘ cancelled", "Cancelled at Step 3 of 4")
    term.keys("q")
    term.wait_for("WATCH-EXIT=0")


def test_watch_lists_every_task_without_a_task_id(
    server: ServerProcess, api: httpx.Client, tmux: Path, terminals: list[Terminal]
) -> None:
    first = post(api, "/api/tasks", CRM)["task_id"]
    term = Terminal(tmux, [sys.executable, "-m", "gateway.watch", server.url], width=110, height=20)
    terminals.append(term)
    term.wait_for("Your tasks", "Cellphone Store CRM", "waiting to start", "● live")
    post(api, "/api/tasks", {"title": "Nightly data import", "steps": [{"name": "Download"}]})
    post(api, f"/api/tasks/{first}/steps/1/start")
    post(api, f"/api/tasks/{first}/steps/1/progress", {"percent": 40})
    term.wait_for(r"○\s+Nightly data import", r"◐\s+Cellphone Store CRM.*\] 10%\s+running")
    term.keys("j", "p")  # the second row, the CRM task
    until(lambda: api.get(f"/api/tasks/{first}/progress").json()["status"] == "paused")
    term.wait_for(r"⏸\s+Cellphone Store CRM.*paused")
    term.keys("q")
    term.wait_for("WATCH-EXIT=0")


def test_the_box_reads_like_the_spec() -> None:
    """Rendered with rich's recording console: the spec's picture, with an ETA and its interval."""
    at = "2024-01-15T10:02:00.000Z"
    now = screen.parse(at)
    assert now is not None
    subs = [
        ("Customer list view", True),
        ("Product list view", True),
        ("Sales form", False),
        ("Repair board", False),
    ]
    view: dict[str, Any] = {
        "title": "Cellphone Store CRM",
        "status": "running",
        "progress": 65,
        "current_step": 2,
        "total_steps": 4,
        "started_at": "2024-01-15T10:00:00.000Z",
        "updated_at": "2024-01-15T10:01:30.000Z",
        "eta_seconds": 210,
        "eta_low_seconds": 150,
        "eta_high_seconds": 330,
        "needs_attention": False,
        "steps": [
            {"order": 1, "name": "Create database tables", "status": "completed", "progress": 100,
             "duration_ms": 15000, "work_ms": 15000, "substeps": [], "attempts": 1},
            {"order": 2, "name": "Generate application UI", "status": "running", "progress": 50,
             "duration_ms": None, "work_ms": 60000, "substeps": [{"name": n, "done": d} for n, d in subs],
             "attempts": 1},
            {"order": 3, "name": "Add search and filters", "status": "pending", "progress": 0,
             "substeps": []},
            {"order": 4, "name": "Configure workflows", "status": "pending", "progress": 0,
             "substeps": []},
        ],
    }  # fmt: skip
    console = Console(record=True, width=100, color_system=None)
    console.print(screen.task_box(view, now, status="● live"))
    text = console.export_text()
    for line in (
        "[████████████████████░░░░░░░░░░] 65%",
        "Step 2 of 4: Generate application UI",
        "├─ Customer list view ✓",
        "├─ Product list view ✓",
        "├─ Sales form ◐ (in progress)",
        "└─ Repair board ○ (pending)",
        "Started: 2 min ago",
        "ETA: 3 min remaining (2 min to 5 min)",  # 210 s as of 10:01:30, 30 s ago
        "running · 50% · 1 min 30 s",
        "completed in 15 s",
        "◐ running · ● live",
    ):
        assert line in text, f"{line!r} not in\n{text}"
    assert "ETA: —" not in text


def test_the_eta_stands_still_while_every_active_step_waits_for_a_person() -> None:
    updated = screen.parse("2024-01-15T10:01:30.000Z")
    assert updated is not None
    read, now = updated + 5, updated + 30
    waiting: dict[str, Any] = {
        "status": "running",
        "updated_at": "2024-01-15T10:01:30.000Z",
        "read_at": read,
        "steps": [{"status": "completed"}, {"status": "approval"}],
    }
    assert screen.remaining(waiting, 40, now) == 35  # as read; approval time is no work
    running = {**waiting, "steps": [{"status": "completed"}, {"status": "running"}]}
    assert screen.remaining(running, 40, now) == 10  # counts down from updated_at
