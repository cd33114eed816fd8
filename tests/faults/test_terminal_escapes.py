"""Terminal control sequences in task text do not reach the terminal of `progressd watch`.

A worker's title, step name, substep, log line and approval message carry OSC 0 (window title), OSC 52
(clipboard write), `ESC [ 2 J` (clear screen), a C1 CSI, a carriage return and rich markup. The watch runs in
a real terminal (tmux) against a real server; the bytes it writes are captured with `pipe-pane`. The
worker's `progressd report` prints the same text, and a cancel reason, made printable too, and so does the
operator's `progressd audit`.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from client.cli import EXIT_CANCELLED, EXIT_OK, report
from tests.e2e.conftest import ServerProcess
from tests.e2e.test_watch import Terminal, post
from tests.faults.harness import FIGURES

ESC, ST = "\x1b", "\x1b\\"
TITLE = f"Deploy {ESC}]0;pwned-title{ST} now"
STEP = f"Build {ESC}[2J{ESC}[H here"
SUBSTEP = "sub \x9b31m red"  # CSI as one C1 character
LOG = f"{ESC}]52;c;cHduZWQ={ST}\r[b]loud[/b]"
REASON = f"stop {ESC}]0;cancel-title\x07"
ASK = f"ok? {ESC}]0;approval-title\x07"
INJECTED = [b"\x1b]0;", b"\x1b]52;", b"\x1b[2J", b"\x1b[H here", "\x9b".encode(), b"\x07", b"\r[b]loud"]


def test_watch_shows_control_sequences_as_text(
    server_factory: type[ServerProcess], tmp_path: Path, tmux: Path, terminals: list[Terminal]
) -> None:
    server = server_factory(tmp_path)
    server.start()
    with httpx.Client(base_url=server.url, timeout=15) as api:
        plan = {"title": TITLE, "steps": [{"name": STEP, "substeps": [SUBSTEP]}, {"name": "Ship"}]}
        tid = post(api, "/api/tasks", plan)["task_id"]
        assert api.get(f"/api/tasks/{tid}/progress").json()["title"] == TITLE  # stored as sent
        post(api, f"/api/tasks/{tid}/steps/1/start")
        post(api, f"/api/tasks/{tid}/logs", {"level": "info", "message": LOG, "step": 1})
        post(api, f"/api/tasks/{tid}/steps/1/approval", {"message": ASK})

        raw = tmp_path / "pane.bytes"
        term = Terminal(tmux, [sys.executable, "-m", "gateway.watch", server.url, tid], width=160)
        terminals.append(term)
        term.tmux("set-option", "-s", "set-clipboard", "on")  # let OSC 52 set a tmux buffer, were it sent
        term.tmux("pipe-pane", "-o", "-t", "t", f"cat >> {raw}")
        text = term.wait_for(
            re.escape(r"Deploy \x1b]0;pwned-title\x1b\ now"),
            re.escape(r"Build \x1b[2J\x1b[H here"),
            re.escape(r"sub \x9b31m red"),
            re.escape(r"\x1b]52;c;cHduZWQ=\x1b\\x0d[b]loud[/b]"),
            re.escape(r"ok? \x1b]0;approval-title\x07"),
            "● live",
        )
        time.sleep(1.0)  # a few more redraws into the capture
        title = term.tmux("display-message", "-p", "-t", "t", "#{pane_title}").strip()
        buffers = term.tmux("list-buffers")
        term.keys("q")
        term.wait_for("WATCH-EXIT=0")

        # `progressd report` prints the task's line, and a cancel reason someone else wrote.
        out, err = io.StringIO(), io.StringIO()
        assert report(tid, ["log", "hello"], url=server.url, out=out, err=err) == EXIT_OK
        assert r"Build \x1b[2J\x1b[H here" in out.getvalue(), out.getvalue()
        post(api, f"/api/tasks/{tid}/cancel", {"reason": REASON})
        assert (
            report(tid, ["step", "1", "progress", "50"], url=server.url, out=out, err=err) == EXIT_CANCELLED
        )
        assert r"\x1b]0;cancel-title\x07" in err.getvalue(), err.getvalue()
        printed = out.getvalue() + err.getvalue()

    # The operator's `progressd audit` shows the same events, as a table and as JSON.
    audits = [
        subprocess.run(
            [sys.executable, "-m", "gateway", "audit", tid, *extra],
            env={**os.environ, "PROGRESSD_DATA_DIR": str(tmp_path), "COLUMNS": "200"},
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
        for extra in ([], ["--json"])
    ]
    written = raw.read_bytes()
    assert written, "pipe-pane captured nothing"
    found = [seq for seq in INJECTED if seq in written]
    assert found == [], found
    assert "pwned" not in title and "approval-title" not in title, title
    assert buffers == "", buffers  # no clipboard write
    assert "Ship" in text
    assert not any(c in printed for c in "\x1b\x07\x9b"), printed
    for audit in audits:
        assert b"Created" in audit
        assert not [c for c in (b"\x1b", b"\x07", "\x9b".encode()) if c in audit], audit
    FIGURES["terminal escapes"] = {
        "bytes written": len(written),
        "injected found": len(found),
        "title": title,
    }
