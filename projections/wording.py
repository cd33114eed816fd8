"""Plain-English pieces shared by chat replies and notifications: gerunds, task phrases, durations, ETAs."""

from __future__ import annotations

import math
from datetime import datetime


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Imperative verbs that start step names ("Generate application UI"). Only these become gerunds: a first
# word that is not a known verb ("Database setup") is left as it is rather than guessed at.
VERBS = _words(
    """
    add adjust aggregate allocate analyse analyze annotate apply approve archive assemble assign attach audit
    back backfill benchmark bootstrap build bump bundle cache calculate call cancel check choose clean
    clear clone close collect combine commit compare compile compose compress compute configure
    connect convert copy count crawl create crop cut debug declare decrypt deduplicate define delete deliver
    deploy describe design detect diff disable discover download draft drop dump edit email embed emit
    enable encode encrypt enrich ensure estimate evaluate execute expand export extract fetch file fill
    filter finalise finalize find finish fix flag flush fold format gather generate get grant group guess
    hash import improve index infer initialise initialize insert inspect install integrate invite invoke
    join label launch lint list load localise localize lock log look make map mark measure merge migrate
    mine minify mirror model monitor mount move normalise normalize notify obtain open optimise optimize
    order organise organize pack package parse partition patch pause pick ping plan plot poll populate
    post prepare preprocess print process profile provision prune publish pull purge push put query queue
    rank read rebuild receive reconcile record recover redact reduce refactor refresh register reindex
    release reload remove rename render reorder repair replace replicate report request reserve reset
    resize resolve restart restore resume retrain retry return review revoke rewrite roll rotate route run
    sample sanitise sanitize save scaffold scale scan schedule score scrape search secure seed select send
    serve set setup ship shrink sign simulate sketch sort split stage start stop store stream submit
    summarise summarize swap sync tag test tidy tokenise tokenize track train transcode transfer transform
    translate trim tune uninstall unpack unzip update upgrade upload validate verify view visit wait warm
    watch wire wrap write zip
    """
)

# Verbs whose final consonant doubles before -ing although they have more than one syllable.
_DOUBLE = _words(
    "begin commit submit admit permit omit occur refer prefer transfer control patrol compel forget regret "
    "upset equip debug format unzip embed emit infer bootstrap reset"
)
_VOWELS = set("aeiou")


def gerund(verb: str) -> str:
    """The -ing form of an English verb: generate → generating, run → running, fix → fixing, see → seeing."""
    word = verb.lower()
    if word.endswith("ing") and len(word) > 4:
        out = word
    elif word.endswith("ie"):
        out = word[:-2] + "ying"
    elif word.endswith("e") and not word.endswith(("ee", "ye", "oe")) and word != "be":
        out = word[:-1] + "ing"
    elif word in _DOUBLE or _short_cvc(word):
        out = word + word[-1] + "ing"
    else:
        out = word + "ing"
    return verb[0] + out[1:] if verb[:1].isupper() else out


def _short_cvc(word: str) -> bool:
    """One syllable ending consonant-vowel-consonant (run, stop, plan): the last consonant doubles."""
    if len(word) < 3 or word[-1] in _VOWELS or word[-1] in "wxy":
        return False
    if word[-2] not in _VOWELS or word[-3] in _VOWELS:
        return False
    return (
        sum(1 for i, ch in enumerate(word) if ch in _VOWELS and (i == 0 or word[i - 1] not in _VOWELS)) == 1
    )


def doing(step_name: str) -> str:
    """A step name as what is happening now: "Generate application UI" → "Generating application UI"."""
    first, sep, rest = step_name.strip().partition(" ")
    if first.lower() not in VERBS:
        return step_name.strip()
    if first.lower() == "setup":  # "Setup database" is "set up" written as one word
        return f"{first[0]}etting up{sep}{rest}"
    return f"{gerund(first)}{sep}{rest}"


def task_phrase(title: str) -> str:
    """ "Cellphone Store CRM" → "Cellphone Store CRM task" (no "task task" when the title already says so)."""
    title = title.strip()
    return title if title.lower().split()[-1:] in (["task"], ["job"]) else f"{title} task"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def duration(ms: float) -> str:
    """A duration in words, to a sensible precision: "45 s", "3 min", "1 h 25 min", "2 days"."""
    seconds = max(0.0, ms / 1000)
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{round(hours / 24)} days"


def eta(seconds: float | None) -> str:
    """The ETA sentence of the chat status: "About 3 minutes remaining.", or why there is none."""
    if seconds is None or not math.isfinite(seconds):
        return "not enough history yet."
    if seconds < 45:
        return "Less than a minute remaining."
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"About {plural(minutes, 'minute')} remaining."
    if minutes < 600:
        hours, rest = divmod(5 * round(minutes / 5), 60)
        if rest == 0:
            return f"About {plural(hours, 'hour')} remaining."
        return f"About {plural(hours, 'hour')} {plural(rest, 'minute')} remaining."
    hours = round(minutes / 60)
    if hours < 48:
        return f"About {plural(hours, 'hour')} remaining."
    return f"About {plural(round(hours / 24), 'day')} remaining."


def parse_iso(raw: str | None) -> datetime | None:
    """The views' ISO timestamps ("2024-01-15T10:00:00.000Z") as aware datetimes."""
    return datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else None


def between_ms(start: str | None, end: str | None) -> int | None:
    """Milliseconds between two of the views' ISO timestamps, None when either is missing."""
    a, b = parse_iso(start), parse_iso(end)
    if a is None or b is None:
        return None
    return max(0, int((b - a).total_seconds() * 1000))
