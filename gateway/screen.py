"""The progress box for terminals: pure functions from the progress JSON (and the time) to `rich` renderables.

The same words and symbols as the web page and the spec: `[████░░░░] 65%`, "Step 2 of 4: …", ✓ ◐ ○ ⚠ ✕ ⏸,
"Started: 2 min ago", "ETA: 3 min remaining". Every text from the server is made printable first: a worker's
title, step name or log line holding terminal control sequences must not reach the terminal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.constrain import Constrain
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from client.terminal import printable, printable_json

View = Mapping[str, Any]

STEP_SYMBOL = {
    "completed": "✓",
    "running": "◐",
    "pending": "○",
    "approval": "⚠",
    "failed": "✕",
    "paused": "⏸",
    "skipped": "⤼",
    "stopped": "⊘",
}
STEP_WORD = {"approval": "needs approval"}
TASK_SYMBOL = {
    "completed": "✓",
    "failed": "✕",
    "cancelled": "⊘",
    "attention": "⚠",
    "paused": "⏸",
    "running": "◐",
}
TASK_WORD = {"pending": "waiting to start", "attention": "needs approval"}
STYLE = {
    "completed": "green",
    "done": "green",
    "running": "blue",
    "active": "blue",
    "attention": "yellow",
    "approval": "yellow",
    "failed": "red",
    "paused": "magenta",
    "skipped": "dim",
    "stopped": "dim",
    "cancelled": "dim",
    "pending": "dim",
}
ACTIVE = ("running", "paused", "approval")
BAR_WIDTH = 30


def parse(iso: str | None) -> float | None:
    """Epoch seconds of the API's timestamps (2024-01-15T10:00:00.000Z)."""
    if not iso:
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def task_state(view: View) -> str:
    if view["status"] == "running" and view.get("needs_attention"):
        return "attention"
    return str(view["status"])


def step_state(view: View, step: View) -> str:
    if view["status"] == "cancelled" and step["status"] in ACTIVE:
        return "stopped"
    return str(step["status"])


def bar(percent: int, width: int = BAR_WIDTH) -> str:
    """The spec's bar: [████████████████████░░░░░░░░░░] 65%."""
    filled = min(width, max(0, round(width * percent / 100)))
    return f"[{'█' * filled}{'░' * (width - filled)}] {percent}%"


def current_line(view: View) -> str:
    steps: Sequence[View] = view.get("steps") or []
    total = view.get("total_steps") or len(steps)
    if view["status"] == "completed":
        return f"All {total} steps done"
    if not steps:
        return f"{total} steps"
    step = steps[(view.get("current_step") or 1) - 1]
    line = f"Step {step['order']} of {total}: {step['name']}"
    return f"Cancelled at {line}" if view["status"] == "cancelled" else line


def duration(ms: float) -> str:
    s = max(0, round(ms / 1000))
    if s < 60:
        return f"{s} s"
    m = s // 60
    if m < 60:
        return f"{m} min {s % 60} s" if s % 60 and m < 10 else f"{m} min"
    h = m // 60
    return f"{h} h {m % 60} min" if m % 60 else f"{h} h"


def ago(iso: str | None, now: float) -> str:
    at = parse(iso)
    if at is None:
        return "—"
    seconds = now - at
    if seconds < 1.5:
        return "just now"
    s = round(seconds)
    if s < 60:
        return f"{s} s ago"
    m = s // 60
    if m < 60:
        return f"{m} min ago"
    h = m // 60
    if h < 48:
        return f"{h} h {m % 60} min ago" if m % 60 else f"{h} h ago"
    return f"{h // 24} days ago"


def _roughly(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    h, rest = divmod(seconds, 3600)
    m = round(rest / 60)
    return f"{int(h)} h {m} min" if m else f"{int(h)} h"


def remaining(view: View, seconds: float | None, now: float) -> float | None:
    """Seconds left, counted down from the view's updated_at while a step runs; while every active step waits
    for a person the work clock stands still, and the estimate holds from when the view was read."""
    if seconds is None:
        return None
    updated = parse(view.get("updated_at"))
    if view["status"] != "running" or updated is None:
        return float(seconds)
    steps = view.get("steps") or []
    waiting = bool(steps) and not any(s.get("status") == "running" for s in steps)
    until = min(now, float(view.get("read_at") or now)) if waiting else now
    return seconds - max(0.0, until - updated)


def eta(view: View, now: float) -> str:
    """ "3 min remaining" (with the interval when there is one), "—" without an estimate."""
    status = view["status"]
    if status == "completed":
        return "done"
    if status == "cancelled":
        return "—"
    left = remaining(view, view.get("eta_seconds"), now)
    if left is None:
        return "—"
    text = "any moment now" if left <= 0 else f"{_roughly(left)} remaining"
    if status == "paused":
        text += " (paused)"
    low = remaining(view, view.get("eta_low_seconds"), now)
    high = remaining(view, view.get("eta_high_seconds"), now)
    if low is not None and high is not None:
        text += f" ({_roughly(max(0.0, low))} to {_roughly(max(0.0, high))})"
    return text


def work_ms(view: View, step: View, now: float) -> float | None:
    """A step's work time now: work_ms is as of the view's updated_at, and runs on while the step runs."""
    base = step.get("work_ms")
    if base is None:
        return None
    updated = parse(view.get("updated_at"))
    runs = step["status"] == "running" and not step.get("finished_at") and view["status"] == "running"
    if not runs or updated is None:
        return float(base)
    return float(base) + max(0.0, now - updated) * 1000


def _step_meta(view: View, step: View, state: str, now: float) -> str:
    word = STEP_WORD.get(state, state)
    if state == "completed" and step.get("duration_ms") is not None:
        word = f"completed in {duration(step['duration_ms'])}"
    parts = [word]
    if state in ("running", "paused"):
        parts.append(f"{step['progress']}%")
    work = work_ms(view, step, now)
    if state not in ("completed", "pending", "skipped") and work is not None:
        parts.append(duration(work))
    if step.get("attempts", 0) > 1:
        parts.append(f"attempt {step['attempts']}")
    return " · ".join(parts)


def _substeps(view: View) -> Iterable[Text]:
    steps = view.get("steps") or []
    if not steps or view["status"] in ("completed", "cancelled"):
        return
    step = steps[(view.get("current_step") or 1) - 1]
    subs = step.get("substeps") or []
    upcoming = next((i for i, sub in enumerate(subs) if not sub["done"]), None)
    for i, sub in enumerate(subs):
        branch = "└─" if i == len(subs) - 1 else "├─"
        if sub["done"]:
            yield Text.assemble(f"  {branch} {sub['name']} ", ("✓", "green"))
        elif i == upcoming and step["status"] == "running":
            yield Text.assemble(f"  {branch} {sub['name']} ", ("◐", "blue"), " (in progress)")
        else:
            yield Text.assemble((f"  {branch} {sub['name']} ", "dim"), "○", (" (pending)", "dim"))


def task_box(
    view: View, now: float, *, logs: Sequence[View] = (), status: str = "", hint: str = "", flash: str = ""
) -> RenderableType:
    """One task's progress box, as in the spec, with its steps, notices and latest log lines."""
    view, logs, flash = printable_json(view), printable_json(logs), printable(flash)
    state = task_state(view)
    style = STYLE.get(state, "")
    lines: list[RenderableType] = [
        Text(bar(view["progress"]), style=style),
        Text(current_line(view), style="bold"),
        *_substeps(view),
        Text(""),
        Text(f"Started: {ago(view['started_at'], now)}" if view.get("started_at") else "Started: not yet"),
    ]
    if view["status"] in ("completed", "cancelled") and view.get("finished_at"):
        word = "Finished" if view["status"] == "completed" else "Cancelled"
        lines.append(Text(f"{word}: {ago(view['finished_at'], now)}"))
    else:
        lines.append(Text(f"ETA: {eta(view, now)}"))
    for step in view.get("steps") or []:
        if step["status"] == "approval" and view["status"] != "cancelled":
            message = (step.get("approval") or {}).get("message") or ""
            lines += [
                Text(""),
                Text(f"⚠ Approval required for Step {step['order']}: {message}", style="yellow"),
            ]
        if step["status"] == "failed":
            error = step.get("error") or "no error message"
            lines += [Text(""), Text(f"✕ Step {step['order']} failed: {error}", style="red")]
    if view["status"] == "completed" and view.get("result"):
        lines += [Text(""), Text(f"✓ {view['result']}", style="green")]
    if view.get("restarted_as"):
        lines += [Text(""), Text(f"Restarted as {view['restarted_as']}", style="dim")]

    steps = Table.grid(padding=(0, 1), expand=True)
    steps.add_column(width=1)
    steps.add_column(ratio=1, overflow="fold")
    steps.add_column(justify="right", style="dim")
    for step in view.get("steps") or []:
        st = step_state(view, step)
        name = Text(f"{step['order']}. {step['name']}", style="strike dim" if st == "skipped" else "")
        steps.add_row(
            Text(STEP_SYMBOL.get(st, "○"), style=STYLE.get(st, "")),
            name,
            Text(_step_meta(view, step, st, now)),
        )
    lines += [Text(""), steps]

    if logs:
        lines += [Text(""), Text("Logs", style="bold dim")]
        for line in logs:
            at = (line.get("at") or "")[11:19]
            where = f"Step {line['step']} " if line.get("step") else ""
            level_style = {"warning": "yellow", "error": "red"}.get(line["level"], "dim")
            lines.append(
                Text.assemble(
                    (f"{at} ", "dim"), (f"{line['level']:<7} ", level_style), where, line["message"]
                )
            )
    if flash:
        lines += [Text(""), Text(flash, style="bold")]
    word = TASK_WORD.get(state, state)
    panel = Panel(
        Group(*lines),
        title=Text(f" {view['title']} ", style="bold"),
        title_align="left",
        subtitle=Text.assemble(f" {TASK_SYMBOL.get(state, '○')} {word} ", (f"· {status} ", "dim")),
        subtitle_align="right",
        border_style=style or "dim",
        padding=(1, 2),
    )
    box = Constrain(panel, width=84)  # the spec's box width, narrower on a narrower terminal
    return Group(box, Text(hint, style="dim")) if hint else box


def task_list(
    views: Sequence[View],
    now: float,
    selected: int,
    *,
    rows: int = 20,
    status: str = "",
    hint: str = "",
    flash: str = "",
) -> RenderableType:
    """The caller's tasks, newest first: symbol, title, bar, state and ETA; the selected one highlighted.

    At most `rows` tasks are shown, a window that keeps the selected one in view.
    """
    views, flash = printable_json(views), printable(flash)
    table = Table(box=None, padding=(0, 1), show_header=True, header_style="dim", expand=True)
    for column, options in (
        ("", {"width": 1}),
        ("task", {"ratio": 1, "overflow": "ellipsis", "no_wrap": True}),
        ("progress", {"no_wrap": True}),
        ("state", {"no_wrap": True}),
        ("ETA", {"no_wrap": True, "justify": "right"}),
    ):
        table.add_column(column, **options)
    rows = max(1, rows)
    first = min(max(0, selected - rows // 2), max(0, len(views) - rows))
    for i, view in enumerate(views[first : first + rows], start=first):
        state = task_state(view)
        style = STYLE.get(state, "")
        when = (
            ago(view.get("finished_at"), now)
            if view["status"] in ("completed", "cancelled")
            else eta(view, now)
        )
        table.add_row(
            Text(TASK_SYMBOL.get(state, "○"), style=style),
            Text(f"{view['title']}  ", style="bold").append(current_line(view), style="dim"),
            Text(bar(view["progress"], 20), style=style),
            Text(TASK_WORD.get(state, state), style=style),
            Text(when),
            style="reverse" if i == selected else None,
        )
    if not views:
        more = Text("No tasks yet.", style="dim")
    elif len(views) > rows:
        more = Text(f"{first + 1} to {min(len(views), first + rows)} of {len(views)}", style="dim")
    else:
        more = Text("")
    return Group(
        Text.assemble(("Your tasks ", "bold"), (f"· {len(views)} · {status}", "dim")),
        table,
        more,
        Text(flash, style="bold") if flash else Text(""),
        Text(hint, style="dim"),
    )
