"""Chat intents: what a message in plain words asks for, and which of the caller's tasks it names; rules only.

`parse("Cancel my CRM task and start over")` gives `Intent("restart", words=("crm",))`; `resolve` matches the
words against the titles of the caller's tasks (every word must be in the title), prefers the task a restart
replaced it with and, when several still match, the one that is not finished. Deterministic and pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

KINDS = (
    "status",
    "logs",
    "cancel",
    "restart",
    "pause",
    "resume",
    "approve",
    "reject",
    "list",
    "help",
    "unknown",
)
ACTIVE = frozenset({"pending", "running", "paused", "failed"})
DEFAULT_LOG_LINES = 10
MAX_LOG_LINES = 50

_NUMBERS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
}
_CONTRACTIONS = {
    "how's": "how is",
    "what's": "what is",
    "where's": "where is",
    "it's": "it is",
    "that's": "that is",
    "i'm": "i am",
    "can't": "can not",
    "don't": "do not",
    "let's": "let us",
}
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
# A short id: at least 6 hex characters including a digit, so words such as "decade" are not ids.
_SHORT_ID = re.compile(r"\b(?=[0-9a-f-]*\d)[0-9a-f]{6,}(?:-[0-9a-f]{1,12}){0,4}\b")
_STEP = re.compile(r"\bstep\s*(?:no\.?|number|#)?\s*(\d{1,4}|" + "|".join(_NUMBERS) + r")\b")
_LINES = re.compile(
    r"\b(?:last|latest|recent|final|top)\s+(\d{1,4})\b|\b(\d{1,4})\s+(?:log\s+)?(?:lines?|logs?|entries|messages)\b"
)
_COMMENT = re.compile(
    r"(?:\s*[,;:.-]\s*|\s+)(?:because|since|reason\s*:?|comment\s*:?|saying|with\s+(?:the\s+)?comment\s*:?)"
    r"\s+(?P<comment>.+)$",
    re.IGNORECASE | re.DOTALL,
)
_WORD = re.compile(r"[a-z0-9][a-z0-9-]*")

_RESTART = ("start over", "start it over", "start again", "from scratch", "begin again", "over again")
_RESTART_WORDS = {"restart", "redo", "rerun", "re-run", "relaunch"}
_LOG_WORDS = {"log", "logs", "logging", "errors", "error", "output", "trace", "traceback", "why"}
_APPROVE_WORDS = {"approve", "accept", "allow", "lgtm"}
_REJECT_WORDS = {"reject", "deny", "decline", "refuse"}
_CANCEL_WORDS = {"cancel", "abort", "kill", "terminate", "drop"}
_RESUME_WORDS = {"resume", "continue", "unpause", "proceed"}
# "stop" pauses rather than cancels: pausing can be undone, cancelling cannot.
_PAUSE_WORDS = {"pause", "hold", "suspend", "stop", "halt"}
_LIST_WORDS = {"list", "tasks", "jobs", "everything"}
_STATUS_WORDS = {
    "status",
    "progress",
    "how",
    "going",
    "doing",
    "eta",
    "long",
    "where",
    "update",
    "far",
    "state",
    "check",
    "done",
    "finished",
    "complete",
    "ready",
    "remaining",
    "left",
}
_HELP_WORDS = {"help", "commands", "usage", "hi", "hello", "hey"}
_KEYWORDS = (
    _RESTART_WORDS
    | _LOG_WORDS
    | _APPROVE_WORDS
    | _REJECT_WORDS
    | _CANCEL_WORDS
    | _RESUME_WORDS
    | _PAUSE_WORDS
    | _LIST_WORDS
    | _STATUS_WORDS
    | _HELP_WORDS
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that never name a task: they are dropped before the rest is matched against titles.
_STOPWORDS = _words(
    """
    a about after again all also am an and any are as at be been before begin being but by can could did do
    does for from get give go got has have hi i in into is it its it's just let lines line last latest
    recent final top me mine my now of off on or our over please quick quickly right same scratch see
    should show so some start started starting tell than thank thanks that the their them then there these
    this those to up us was we well were what when which who will with would yet you your entries messages
    task job build step steps run running currently current whole entire at new old one only whats hows
    happening happened going tell look looking give list view display until till take takes much more time
    soon yet still anything something thing things fail failed fails failing wrong broken
    """
)


@dataclass(frozen=True)
class Intent:
    """What a chat message asks: the kind, the words that name the task, and the kind's details."""

    kind: str
    words: tuple[str, ...] = ()
    task_id: str | None = None
    step: int | None = None
    lines: int = DEFAULT_LOG_LINES
    errors_only: bool = False
    comment: str | None = None
    # Words that only tell tasks apart when their titles differ by them ("alpha one" and "alpha two"):
    # numbers, and stop words that a title may still hold.
    extra: tuple[str, ...] = field(default=(), compare=False)


def normalise(message: str) -> str:
    text = message.replace("\u2019", "'").replace("\u2018", "'").lower()
    for short, long in _CONTRACTIONS.items():
        text = text.replace(short, long)
    return " ".join(text.split())


def parse(message: str) -> Intent:
    """The intent of one message."""
    comment: str | None = None
    found = _COMMENT.search(message)
    if found and re.search(r"\b(approv|accept|reject|deny|decline|refuse|cancel|abort)", message, re.I):
        comment = found.group("comment").strip().strip("\"'").strip() or None
        message = message[: found.start()]
    text = normalise(message)

    task_id: str | None = None
    if (full := _UUID.search(text)) is not None:
        task_id = full.group(0)
        text = text.replace(task_id, " ")
    elif (short := _SHORT_ID.search(text)) is not None:
        task_id = short.group(0)
        text = text.replace(task_id, " ")

    step: int | None = None
    if (m := _STEP.search(text)) is not None:
        raw = m.group(1)
        step = int(raw) if raw.isdigit() else _NUMBERS[raw]
        text = text[: m.start()] + " " + text[m.end() :]

    lines = DEFAULT_LOG_LINES
    if (m := _LINES.search(text)) is not None:
        lines = max(1, min(MAX_LOG_LINES, int(m.group(1) or m.group(2))))
        text = text[: m.start()] + " " + text[m.end() :]

    tokens = _WORD.findall(text)
    present = set(tokens)
    kind = _kind(text, present)
    errors_only = kind == "logs" and bool(present & {"error", "errors", "why"}) and "logs" not in present
    words = tuple(
        t
        for t in tokens
        if t not in _STOPWORDS and t not in _KEYWORDS and not t.isdigit() and t not in _NUMBERS
    )
    extra = tuple(dict.fromkeys(t for t in tokens if t not in words and t not in _KEYWORDS))
    return Intent(kind, words, task_id, step, lines, errors_only, comment, extra)


_QUESTION = re.compile(
    r"^(?:how (?:do|can|would|should) (?:i|you|we)|what (?:happens|does|do)|can i|is it possible)\b"
)
_NEGATIONS = {"not", "never", "dont", "no"}
_COMMANDS = {"cancel", "restart", "pause", "resume", "approve", "reject"}


def _kind(text: str, present: set[str]) -> str:
    kind = _verb(text, present)
    if kind in _COMMANDS and (present & _NEGATIONS or _QUESTION.search(text)):
        return "help"  # "how do I cancel?" or "don't cancel it" must never cancel anything
    return kind


def _verb(text: str, present: set[str]) -> str:
    again = "start" in present and ("again" in present or "over" in present)
    if any(phrase in text for phrase in _RESTART) or present & _RESTART_WORDS or again:
        return "restart"
    if (present & _LOG_WORDS and "failed" not in present) or {"log", "logs"} & present:
        return "logs"
    if present & _REJECT_WORDS:
        return "reject"
    if present & _APPROVE_WORDS:
        return "approve"
    if present & _CANCEL_WORDS:
        return "cancel"
    if present & _RESUME_WORDS or "carry on" in text or "keep going" in text:
        return "resume"
    if present & _PAUSE_WORDS:
        return "pause"
    if present & _LIST_WORDS or "what is running" in text or "what am i running" in text:
        return "list"
    if present & _STATUS_WORDS or "failed" in present:
        return "status"
    if present & _HELP_WORDS or not present:
        return "help"
    return "unknown"


# ---- resolving the task ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """Which task a message names: one, several to choose from, or none."""

    task: Mapping[str, Any] | None = None
    candidates: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    @property
    def ambiguous(self) -> bool:
        return self.task is None and len(self.candidates) > 1


def title_words(title: str) -> list[str]:
    return _WORD.findall(normalise(title))


def word_matches(word: str, title: Sequence[str]) -> bool:
    """A message word names a title word: equal, its prefix (3+ letters), inside it (4+), or its plural."""
    for t in title:
        if word == t or (len(word) >= 3 and t.startswith(word)) or (len(word) >= 4 and word in t):
            return True
        if word.endswith("s") and word[:-1] == t:
            return True
    return False


def _closest(intent: Intent, matches: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Of several titles that every naming word matches: those that also hold the message's other words
    that some of them hold ("alpha one" and "alpha two"), then those the message names whole."""
    titles = [set(title_words(str(t["title"]))) for t in matches]
    telling = {w for w in intent.extra if any(w in title for title in titles)}
    if telling:
        scores = [len(telling & title) for title in titles]
        best = max(scores)
        matches = [t for t, score in zip(matches, scores, strict=True) if score == best]
        titles = [title for title, score in zip(titles, scores, strict=True) if score == best]
    named = set(intent.words) | telling
    whole = [t for t, title in zip(matches, titles, strict=True) if title <= named]
    return whole or matches


def resolve(intent: Intent, tasks: Sequence[Mapping[str, Any]], *, prefer_active: bool = True) -> Resolution:
    """The task among `tasks` (the caller's views, newest first) that the intent names."""
    if intent.task_id:
        matches = [t for t in tasks if str(t["task_id"]).startswith(intent.task_id)]
    elif intent.words:
        matches = [
            t for t in tasks if all(word_matches(w, title_words(str(t["title"]))) for w in intent.words)
        ]
    else:
        matches = list(tasks)
    # A task that was started over is named by its replacement ("my CRM task" after "start over").
    current = [t for t in matches if not t.get("restarted_as")]
    if current:
        matches = current
    if len(matches) > 1 and intent.words:
        matches = _closest(intent, matches)
    if len(matches) > 1 and prefer_active:
        active = [t for t in matches if t.get("status") in ACTIVE]
        if active:
            matches = active
    if len(matches) == 1:
        return Resolution(matches[0])
    return Resolution(None, tuple(matches[:5]))
