"""`progressd watch [TASK_ID]`: the progress box live in a terminal, over the WebSocket, resuming by cursor.

With a task id it shows that task; without, the caller's tasks (↑/↓ to choose). Keys: p pause, r resume,
c cancel (press twice), q quit. PROGRESSD_TOKEN, when set, is the API token it sends.

After a disconnect it reconnects with backoff and `?after=<cursor>`, so nothing is missed and nothing is
shown twice; the view itself is re-read from the API after each transition, so what it shows is exactly
the server's state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
import uuid
from collections import deque
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import websockets
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text
from websockets.asyncio.client import ClientConnection

from gateway import screen

TICKS = frozenset({"progress", "substep_done", "log"})  # every other message is a transition
CLOSE_BAD_CURSOR = 4400
# Closes that reconnecting cannot mend, and what to tell the person.
FINAL = {
    4401: "unauthorized: set PROGRESSD_TOKEN to an API token",
    4403: "this origin may not open a stream",
    4404: "task not found",
}
FINISHED = frozenset({"completed", "cancelled"})
REREAD_SECONDS = 10.0


@dataclass
class Cursor:
    """The last message seen: a task seq (one task) or a log position (all tasks), and its part if partial."""

    value: int
    part: int = 0

    def __str__(self) -> str:
        return f"{self.value}.{self.part}" if self.part else str(self.value)

    def after(self, other: Cursor) -> bool:
        if self.value != other.value:
            return self.value > other.value
        return other.part != 0 and (self.part == 0 or self.part > other.part)


def is_newer(view: dict[str, Any], m: dict[str, Any]) -> bool:
    """True when message m is not yet in the view (by the task's seq, and the part of a split event)."""
    if m["seq"] > view["version"]:
        return True
    return bool(m["seq"] == view["version"] and view.get("part") and m["part"] > view["part"])


def apply_tick(view: dict[str, Any], m: dict[str, Any]) -> None:
    """Apply a progress tick or a substep to the view; transitions are re-read from the API instead."""
    if not is_newer(view, m):
        return
    steps = view.get("steps") or []
    step = steps[m["step"] - 1] if m.get("step") and m["step"] <= len(steps) else None
    if m["type"] == "progress":
        view["progress"] = m["percent"]
        if step is not None and m.get("step_percent") is not None:
            step["progress"] = m["step_percent"]
    elif m["type"] == "substep_done" and step is not None:
        step["substeps"][m["substep"] - 1]["done"] = True
    view["version"] = m["seq"]
    view["part"] = 0 if m["part"] == m["parts"] else m["part"]


class Watcher:
    """The state of one `progressd watch`: the stream, the views, the keys and what the screen shows."""

    def __init__(
        self, url: str, task_id: str | None, console: Console | None = None, token: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.task_id = task_id
        self.console = console or Console()
        token = token or os.environ.get("PROGRESSD_TOKEN") or None
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=self.url, timeout=10, headers=self.headers)
        self.failure = ""
        self.views: dict[str, dict[str, Any]] = {}
        self.logs: deque[dict[str, Any]] = deque(maxlen=6)
        self.logged: set[int] = set()  # positions of the log lines shown, from the stream or the API
        self.cursor: Cursor | None = None
        self.ws: ClientConnection | None = None
        self.state = "connecting"
        self.retry_at = 0.0
        self.offset = 0.0  # server clock minus ours, from its pings
        self.selected: str | None = None  # the chosen task in the list (by id: new tasks come in on top)
        self.flash = ""
        self.flash_until = 0.0
        self.confirm_cancel_until = 0.0
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.commands: set[asyncio.Task[None]] = set()
        self.refresh_soon = asyncio.Event()
        self.last_read = 0.0  # when a view was last read from the API (monotonic)
        self.done = asyncio.Event()
        self.interactive = sys.stdin.isatty()

    # ---- the stream ----------------------------------------------------------------------------------

    def ws_url(self) -> str:
        base = self.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        path = f"/ws/tasks/{self.task_id}" if self.task_id else "/ws/tasks"
        return f"{base}{path}" + (f"?after={self.cursor}" if self.cursor else "")

    async def stream(self) -> None:
        """Follow the stream forever, reconnecting with exponential backoff from the cursor."""
        attempt = 0
        while not self.done.is_set():
            opened = 0.0
            code: int | None = None
            try:
                self.state = "reconnecting…" if attempt else "connecting…"
                connect = websockets.connect(
                    self.ws_url(), additional_headers=self.headers, open_timeout=5, max_size=16 * 2**20
                )
                async with connect as ws:
                    self.ws, opened, self.state = ws, time.monotonic(), "live"
                    self.refresh_soon.set()  # back after a gap: re-read the views as well
                    async for raw in ws:
                        await self.receive(json.loads(raw))
            except websockets.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
            except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI):
                pass
            finally:
                self.ws = None
                for future in self.pending.values():
                    future.cancel()
                self.pending.clear()
            if code in FINAL:
                self.state = self.failure = FINAL[code]
                self.done.set()
                return
            if code == CLOSE_BAD_CURSOR:
                self.cursor = None
            if opened and time.monotonic() - opened > 5:
                attempt = 0
            delay = min(10.0, 0.5 * 2**attempt) * random.uniform(0.75, 1.25)
            attempt += 1
            self.retry_at = time.monotonic() + delay
            self.state = "reconnecting…"
            await asyncio.sleep(delay)

    async def receive(self, m: dict[str, Any]) -> None:
        kind = m.get("type")
        if kind == "ping":
            self.offset = float(m.get("at", time.time())) - time.time()
            if self.ws is not None:
                await self.ws.send(json.dumps({"type": "pong"}))
            return
        if kind in ("ack", "error") and m.get("id") in self.pending:
            self.pending.pop(m["id"]).set_result(m)
            return
        if kind in ("pong", "ack", "error"):
            return
        key = m.get("seq") if self.task_id else m.get("position")
        if isinstance(key, int):
            here = Cursor(key, 0 if m.get("part") == m.get("parts") else int(m.get("part", 0)))
            if kind == "resync_required" or self.cursor is None or here.after(self.cursor):
                self.cursor = here
        if kind == "snapshot":
            self.adopt(m["view"])
            return
        if kind == "log" and self.task_id:
            self.add_logs([m])
        view = self.views.get(m.get("task_id", ""))
        if view is not None and kind in ("progress", "substep_done"):
            apply_tick(view, m)
        if kind not in TICKS or view is None:
            self.refresh_soon.set()

    def add_logs(self, lines: list[dict[str, Any]]) -> None:
        """Show log lines once each, in log order, whether the stream or the API brought them."""
        fresh = [line for line in lines if line["position"] not in self.logged]
        self.logged.update(line["position"] for line in fresh)
        merged = sorted([*self.logs, *fresh], key=lambda line: int(line["position"]))
        self.logs.clear()
        self.logs.extend(merged)

    def adopt(self, view: dict[str, Any]) -> None:
        """Take a whole view from the server when it is at least as new as the one shown."""
        known = self.views.get(view["task_id"])
        if known is None or view["version"] >= known["version"]:
            view["part"] = 0
            view["read_at"] = time.time() + self.offset  # the estimate holds from here while nothing runs
            self.views[view["task_id"]] = view
        self.last_read = time.monotonic()

    async def refresher(self) -> None:
        """Re-read the views from the API after transitions (at most a few times a second)."""
        while not self.done.is_set():
            await self.refresh_soon.wait()
            await asyncio.sleep(0.1)
            self.refresh_soon.clear()
            try:
                if self.task_id:
                    response = await self.http.get(f"/api/tasks/{self.task_id}/progress")
                    if response.status_code == 200:
                        self.adopt(response.json())
                    if not self.logged:
                        logs = await self.http.get(f"/api/tasks/{self.task_id}/logs", params={"limit": 5000})
                        if logs.status_code == 200:
                            self.add_logs(logs.json()["logs"][-(self.logs.maxlen or 6) :])
                else:
                    response = await self.http.get("/api/tasks", params={"limit": 100})
                    if response.status_code == 200:
                        for view in response.json()["tasks"]:
                            self.adopt(view)
            except httpx.HTTPError:
                pass  # the stream reconnects, and asks again
            if self.task_id and not self.interactive:
                view = self.views.get(self.task_id)
                if view is not None and view["status"] in FINISHED:
                    self.done.set()

    # ---- commands ------------------------------------------------------------------------------------

    def target(self) -> dict[str, Any] | None:
        views = self.ordered()
        if self.task_id:
            return self.views.get(self.task_id)
        return views[self.index(views)] if views else None

    def index(self, views: list[dict[str, Any]]) -> int:
        """Where the chosen task is in the list; the first one until one is chosen."""
        ids = [v["task_id"] for v in views]
        return ids.index(self.selected) if self.selected in ids else 0

    def move(self, by: int) -> None:
        views = self.ordered()
        if views:
            self.selected = views[min(len(views) - 1, max(0, self.index(views) + by))]["task_id"]

    async def command(self, name: str) -> None:
        """Pause, resume or cancel: over the socket when it is up, else over HTTP (idempotent either way)."""
        view = self.target()
        if view is None:
            return
        frame_id = uuid.uuid4().hex
        try:
            if self.ws is not None:
                future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self.pending[frame_id] = future
                await self.ws.send(json.dumps({"type": name, "id": frame_id, "task_id": view["task_id"]}))
                answer = await asyncio.wait_for(future, 10)
                ok, detail = answer["type"] == "ack", answer.get("detail", "")
            else:
                response = await self.http.post(
                    f"/api/tasks/{view['task_id']}/{name}", headers={"Idempotency-Key": f"watch:{frame_id}"}
                )
                ok, detail = (
                    response.is_success,
                    response.json().get("detail", "") if not response.is_success else "",
                )
                if ok:
                    self.adopt(response.json())
        except (TimeoutError, asyncio.CancelledError, httpx.HTTPError, websockets.ConnectionClosed):
            ok, detail = False, "no answer from the server"
        done = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}[name]
        self.say(f"✓ {done} {view['title']}" if ok else f"✕ {name}: {detail}")
        self.refresh_soon.set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a command in the background, holding a reference so it is not collected mid-way."""
        task = asyncio.create_task(work)
        self.commands.add(task)
        task.add_done_callback(self.commands.discard)

    def say(self, text: str, seconds: float = 4.0) -> None:
        self.flash, self.flash_until = text, time.monotonic() + seconds

    def key(self, key: str) -> None:
        if key in ("q", "\x03"):
            self.done.set()
        elif key == "p":
            self.spawn(self.command("pause"))
        elif key == "r":
            self.spawn(self.command("resume"))
        elif key == "c":
            if time.monotonic() < self.confirm_cancel_until:
                self.confirm_cancel_until = 0
                self.spawn(self.command("cancel"))
            else:
                self.confirm_cancel_until = time.monotonic() + 3
                self.say("Press c again to cancel the task", 3)
        elif key in ("k", "\x1b[A"):
            self.move(-1)
        elif key in ("j", "\x1b[B"):
            self.move(1)

    # ---- the screen ----------------------------------------------------------------------------------

    def ordered(self) -> list[dict[str, Any]]:
        return sorted(self.views.values(), key=lambda v: v.get("created_at") or "", reverse=True)

    def status_line(self) -> str:
        if self.state == "reconnecting…" and self.retry_at > time.monotonic():
            return f"reconnecting… (retry in {round(self.retry_at - time.monotonic())} s)"
        return f"● {self.state}" if self.state == "live" else self.state

    def render(self) -> RenderableType:
        now = time.time() + self.offset
        flash = self.flash if time.monotonic() < self.flash_until else ""
        keys = "p pause · r resume · c cancel · q quit" if self.interactive else ""
        if not self.task_id:
            keys = "↑/↓ choose · " + keys if keys else ""
            views = self.ordered()
            return screen.task_list(
                views,
                now,
                self.index(views),
                rows=self.console.size.height - 6,
                status=self.status_line(),
                hint=keys,
                flash=flash,
            )
        view = self.views.get(self.task_id)
        if view is None:
            return Text(f"{self.status_line()}: task {self.task_id}")
        return screen.task_box(
            view, now, logs=list(self.logs), status=self.status_line(), hint=keys, flash=flash
        )

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.stream()), asyncio.create_task(self.refresher())]
        try:
            # Redrawn from this loop (not rich's refresh thread), so rendering never races the stream.
            with self.keys(), Live(self.render(), console=self.console, auto_refresh=False) as live:
                while not self.done.is_set():
                    # A quiet stream brings no news of a growing estimate or a stall: read again now and then.
                    if time.monotonic() - self.last_read > REREAD_SECONDS:
                        self.refresh_soon.set()
                    live.update(self.render(), refresh=True)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.done.wait(), 0.25)
                live.update(self.render(), refresh=True)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.http.aclose()
        if self.failure:
            self.console.print(f"[red]error:[/red] {self.failure}")

    @contextlib.contextmanager
    def keys(self) -> Iterator[None]:
        """Single keys from the terminal (cbreak mode), restored on the way out; none without a terminal."""
        if not self.interactive:
            yield
            return
        import termios
        import tty

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        loop = asyncio.get_running_loop()

        def readable() -> None:
            data = os.read(fd, 64).decode(errors="ignore")
            for key in [data] if data.startswith("\x1b[") else data:
                self.key(key)

        loop.add_reader(fd, readable)
        try:
            yield
        finally:
            loop.remove_reader(fd)
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def watch(url: str, task_id: str | None) -> None:
    """Show a task's progress (or all your tasks) live until q or Ctrl-C (without a terminal: its end).

    Exits with status 1 when the server refuses the stream (no such task, no valid token).
    """
    watcher = Watcher(url, task_id)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watcher.run())
    if watcher.failure:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="progressd watch", description=watch.__doc__)
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("task_id", nargs="?", help="a task id; all your tasks when omitted")
    args = parser.parse_args()
    watch(args.url, args.task_id)


if __name__ == "__main__":
    main()
