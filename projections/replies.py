"""Chat replies: the spec's status text and the other answers, computed from the progress views. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from projections.wording import between_ms, doing, duration, eta, plural, task_phrase

View = Mapping[str, Any]

HELP = (
    "I can tell you how your tasks are doing and run a few commands. Try:\n"
    '- "How\'s my CRM task going?" or "Status of my CRM task"\n'
    '- "Show logs for my CRM task" (errors first; "last 20 lines" for more)\n'
    '- "Pause my CRM task", "Resume my CRM task", "Cancel my CRM task"\n'
    '- "Cancel my CRM task and start over"\n'
    '- "Approve step 3 of my CRM task", "Reject step 3 of my CRM task because …"\n'
    '- "List my tasks"'
)

_ICON = {
    "running": "📊",
    "paused": "⏸",
    "pending": "🕓",
    "completed": "✅",
    "failed": "❌",
    "cancelled": "🛑",
}
_LEVEL_ICON = {"error": "❌", "warning": "⚠️", "info": "•", "debug": "·"}


def _step(view: View, order: int) -> View | None:
    steps: Sequence[View] = view.get("steps") or []
    return next((s for s in steps if s["order"] == order), None)


def _waiting(view: View) -> list[View]:
    return [s for s in view.get("steps") or [] if s["status"] == "approval"]


def _failed_step(view: View) -> View | None:
    return next((s for s in view.get("steps") or [] if s["status"] == "failed"), None)


def substep_lines(step: View) -> list[str]:
    """One line per substep: ✓ done, ⏳ the one in progress, ⏳ the ones after it."""
    lines = []
    running = step["status"] == "running"
    first_open = True
    for sub in step.get("substeps") or []:
        if sub["done"]:
            lines.append(f"- ✓ {sub['name']}")
        elif first_open and running:
            lines.append(f"- ⏳ {sub['name']} (in progress)")
            first_open = False
        else:
            lines.append(f"- ⏳ {sub['name']}")
            first_open = False
    return lines


def status_reply(view: View) -> str:
    """The spec's "Progress in Chat" answer for a task, in whatever state it is."""
    status = view["status"]
    phrase = task_phrase(view["title"])
    total = view["total_steps"]
    current = _step(view, view["current_step"])
    if status == "completed":
        took = between_ms(view.get("started_at"), view.get("finished_at"))
        tail = f" in {duration(took)}" if took is not None else ""
        return f"✅ Your {phrase} is complete: all {plural(total, 'step')} finished{tail}."
    if status == "cancelled":
        out = f"🛑 Your {phrase} was cancelled at {view['progress']}%."
        if view.get("restarted_as"):
            out += f" It was started over as task {view['restarted_as']}."
        return out
    if status == "failed":
        failed = _failed_step(view) or current
        lines = [f"❌ Your {phrase} failed at Step {failed['order'] if failed else '?'} of {total}."]
        if failed is not None:
            lines += ["", f"Failed: {failed['name']}", f"Error: {failed.get('error') or view.get('error')}"]
        lines += ["", "Say “show logs for …” to see what happened, or “… and start over” to run it again."]
        return "\n".join(lines)
    if status == "pending":
        first = _step(view, 1)
        lines = [f"🕓 Your {phrase} has not started yet ({plural(total, 'step')} planned)."]
        if first is not None:
            lines += ["", f"First: {first['name']}"]
        lines += ["", f"ETA: {eta(view.get('eta_seconds'))}"]
        return "\n".join(lines)

    if status == "paused":
        lines = [f"⏸ Your {phrase} is paused at {view['progress']}%."]
    else:
        lines = [f"📊 Your {phrase} is {view['progress']}% complete."]
    if current is not None:
        lines.append("")
        if current["status"] in ("running", "paused", "approval"):
            lines.append(f"Currently: {doing(current['name'])}")
        else:
            lines.append(f"Next: {current['name']}")
        lines += substep_lines(current)
    for waiting in _waiting(view):
        message = (waiting.get("approval") or {}).get("message") or f"Approve step {waiting['order']}?"
        lines += ["", f"⚠️ Step {waiting['order']} needs your approval: {message}"]
    lines.append("")
    if status == "paused":
        lines.append("ETA: on hold while the task is paused.")
    else:
        lines.append(f"ETA: {eta(view.get('eta_seconds'))}")
    return "\n".join(lines)


def actions_for(view: View) -> list[dict[str, Any]]:
    """Buttons a chat client may show: each carries the message that performs it, naming the task by id."""
    tid = view["task_id"]
    status = view["status"]
    out: list[dict[str, Any]] = []

    def add(action: str, label: str, message: str) -> None:
        out.append({"action": action, "label": label, "message": message, "task_id": tid})

    for waiting in _waiting(view):
        n = waiting["order"]
        add("approve", f"Approve step {n}", f"approve step {n} of task {tid}")
        add("reject", f"Reject step {n}", f"reject step {n} of task {tid}")
    if status == "running":
        add("pause", "Pause", f"pause task {tid}")
    if status == "paused":
        add("resume", "Resume", f"resume task {tid}")
    if status in ("pending", "running", "paused", "failed"):
        add("cancel", "Cancel", f"cancel task {tid}")
    if status in ("failed", "cancelled", "completed") and not view.get("restarted_as"):
        add("restart", "Start over", f"start task {tid} over")
    return out


def list_reply(views: Sequence[View], more: bool = False) -> str:
    if not views:
        return "You have no tasks yet."
    lines = [f"You have {plural(len(views), 'task')}{' (newest first; there are more)' if more else ''}:"]
    for v in views:
        icon = "⚠️" if v.get("needs_attention") and v["status"] != "failed" else _ICON.get(v["status"], "•")
        if v["status"] in ("running", "paused"):
            where = f"{v['status']}, {v['progress']}%, Step {v['current_step']} of {v['total_steps']}"
        else:
            where = v["status"]
        lines.append(f"- {icon} {v['title']} — {where} (task {str(v['task_id'])[:8]})")
    return "\n".join(lines)


def _log_line(row: Mapping[str, Any]) -> str:
    at = str(row.get("at") or "")
    clock = at[11:19] if len(at) >= 19 else at
    step = f" step {row['step']}" if row.get("step") is not None else ""
    icon = _LEVEL_ICON.get(str(row["level"]), "·")
    return f"- {icon} {clock}{step} [{row['level']}] {row['message']}"


def logs_reply(
    view: View,
    recent: Sequence[Mapping[str, Any]],
    errors: Sequence[Mapping[str, Any]],
    total: int,
    *,
    errors_only: bool = False,
) -> str:
    """Log lines of a task, errors first: the last errors, then the last lines not already shown."""
    phrase = task_phrase(view["title"])
    if total == 0 and not view.get("error"):
        return f"📜 Your {phrase} has no log lines yet."
    shown = {row["position"] for row in errors}
    rest = [row for row in recent if row["position"] not in shown]
    lines = [f"📜 Logs for your {phrase} ({plural(total, 'line')} in all, errors first):"]
    if errors:
        lines += ["", f"Errors ({len(errors)}):", *(_log_line(r) for r in errors)]
    elif errors_only:
        lines += ["", "No error lines."]
    if view.get("error") and view["status"] in ("failed", "cancelled"):
        lines += ["", f"Task error: {view['error']}"]
    if rest and not errors_only:
        lines += ["", f"Last {plural(len(rest), 'line')}:", *(_log_line(r) for r in rest)]
    return "\n".join(lines)


def ambiguous_reply(candidates: Sequence[View], words: Sequence[str]) -> str:
    named = " ".join(words)
    lines = [f"Which task do you mean{f' by “{named}”' if named else ''}? I found {len(candidates)}:"]
    for v in candidates:
        lines.append(f"- {v['title']} — {v['status']}, {v['progress']}% (task {str(v['task_id'])[:8]})")
    lines.append("Say it again with more of the title, or with the task id (e.g. “status of task 1a2b3c4d”).")
    return "\n".join(lines)


def none_reply(words: Sequence[str], task_id: str | None, have_tasks: bool) -> str:
    if task_id:
        return f"I couldn't find a task {task_id} among your tasks."
    if not have_tasks:
        return "You have no tasks yet."
    if words:
        return (
            f"I couldn't find a task of yours matching “{' '.join(words)}”. Say “list my tasks” to see them."
        )
    return "Which task? Say “list my tasks” to see them."


def paused_reply(view: View) -> str:
    return f"⏸ Paused your {task_phrase(view['title'])} at {view['progress']}%. Say “resume” to continue."


def resumed_reply(view: View) -> str:
    return f"▶️ Resumed your {task_phrase(view['title'])} at {view['progress']}%."


def cancelled_reply(view: View) -> str:
    return f"🛑 Cancelled your {task_phrase(view['title'])} at {view['progress']}%."


def restarted_reply(old: View, new: View) -> str:
    was = "Cancelled" if old["status"] in ("pending", "running", "paused", "failed") else "Closed"
    return (
        f"🔁 {was} your {task_phrase(old['title'])} at {old['progress']}% and started it over.\n"
        f"New task: {new['task_id']} ({plural(new['total_steps'], 'step')}, {new['status']})."
    )


def already_restarted_reply(old: View, new_id: str) -> str:
    return f"Your {task_phrase(old['title'])} was already started over: the new task is {new_id}."


def approved_reply(view: View, order: int) -> str:
    step = _step(view, order)
    name = f": {step['name']}" if step else ""
    return f"👍 Approved Step {order}{name} of your {task_phrase(view['title'])}."


def rejected_reply(view: View, order: int) -> str:
    return f"👎 Rejected Step {order} of your {task_phrase(view['title'])}; it is now {view['status']}."


def nothing_to_approve(view: View) -> str:
    return f"Nothing in your {task_phrase(view['title'])} is waiting for approval."


def which_step(view: View, orders: Sequence[int]) -> str:
    listed = ", ".join(str(o) for o in orders)
    return f"Steps {listed} of your {task_phrase(view['title'])} are waiting: which one? (“approve step N …”)"


def refused_reply(view: View, action: str, actual: str, step: int | None = None) -> str:
    """A command the task's (or step's) state does not allow, in words."""
    what = f"{action} step {step} of" if step is not None else action
    return f"I can't {what} your {task_phrase(view['title'])}: {'that step' if step else 'it'} is {actual}."
