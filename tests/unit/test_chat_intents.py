"""Chat intents: the spec's phrasings and their variations parse to the right intent and task words, and
"my CRM task" resolves against the caller's tasks (one, ask which, or none). Pure: no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from projections.intents import Intent, parse, resolve

# (message, kind, words naming the task)
PHRASES = [
    # Progress in Chat
    ("How's my CRM task going?", "status", ("crm",)),
    ("How\u2019s my CRM task going?", "status", ("crm",)),  # a typographic apostrophe
    ("how is the crm task doing", "status", ("crm",)),
    ("What's the progress on my CRM task?", "status", ("crm",)),
    ("Is my CRM task done yet?", "status", ("crm",)),
    ("How long until my CRM task is finished?", "status", ("crm",)),
    ("ETA for Cellphone Store CRM?", "status", ("cellphone", "store", "crm")),
    # Handling Slow Tasks
    ("Status of my CRM task", "status", ("crm",)),
    ("status crm", "status", ("crm",)),
    ("Show logs for my CRM task", "logs", ("crm",)),
    ("show me the logs of the CRM task", "logs", ("crm",)),
    ("crm logs", "logs", ("crm",)),
    ("Why did my CRM task fail?", "logs", ("crm",)),
    ("Cancel my CRM task and start over", "restart", ("crm",)),
    ("cancel the crm task and start it over", "restart", ("crm",)),
    ("Restart my CRM task", "restart", ("crm",)),
    ("Start my CRM task again from scratch", "restart", ("crm",)),
    # Commands
    ("Cancel my CRM task", "cancel", ("crm",)),
    ("abort the CRM task", "cancel", ("crm",)),
    ("Pause my CRM task", "pause", ("crm",)),
    ("stop my CRM task", "pause", ("crm",)),
    ("Resume my CRM task", "resume", ("crm",)),
    ("continue the CRM task please", "resume", ("crm",)),
    ("Approve my CRM task", "approve", ("crm",)),
    ("Reject my CRM task", "reject", ("crm",)),
    ("List my tasks", "list", ()),
    ("what tasks do I have?", "list", ()),
    ("show my tasks", "list", ()),
    ("What's running?", "list", ()),
    ("help", "help", ()),
    ("", "help", ()),
    ("   ", "help", ()),
]


@pytest.mark.parametrize(("message", "kind", "words"), PHRASES)
def test_spec_phrasings_and_variations(message: str, kind: str, words: tuple[str, ...]) -> None:
    intent = parse(message)
    assert (intent.kind, intent.words) == (kind, words)


def test_step_number_and_comment_are_read() -> None:
    intent = parse("Reject step 3 of my CRM task because the schema is wrong")
    assert intent == Intent("reject", ("crm",), step=3, comment="the schema is wrong")
    assert parse("approve step three of the CRM task").step == 3
    assert parse("Approve step #2 of my CRM task, comment: looks good").comment == "looks good"


def test_log_line_count_and_errors_only() -> None:
    assert parse("Show the last 5 log lines for my CRM task").lines == 5
    assert parse("show 20 lines of logs for my CRM task").lines == 20
    assert parse("show logs for my CRM task").lines == 10
    assert parse("show the last 900 lines of logs for crm").lines == 50  # capped
    assert parse("show errors for my CRM task").errors_only
    assert not parse("show logs for my CRM task").errors_only


def test_task_ids_full_and_short() -> None:
    full = "b28a3422-4d0a-4f63-9a51-8e2f3c4d5a6b"
    assert parse(f"pause task {full}").task_id == full
    assert parse(f"Cancel task {full.upper()}").task_id == full
    assert parse("status of task b28a3422").task_id == "b28a3422"
    # Words made of hex letters are not ids.
    assert parse("status of my decade task").task_id is None


def test_questions_and_negations_never_run_a_command() -> None:
    for message in (
        "How do I cancel my CRM task?",
        "don't cancel my CRM task",
        "do not pause it",
        "can I approve it?",
    ):
        assert parse(message).kind == "help", message


def test_unknown_words_are_kept_for_matching() -> None:
    intent = parse("delete my CRM task")
    assert intent.kind == "unknown" and intent.words == ("delete", "crm")
    assert parse("Cellphone Store CRM?").kind == "unknown"


def view(
    title: str, status: str = "running", tid: str = "", restarted_as: str | None = None
) -> dict[str, Any]:
    return {
        "task_id": tid or f"{abs(hash((title, status))):08x}-0000-0000-0000-000000000000"[:36],
        "title": title,
        "status": status,
        "restarted_as": restarted_as,
    }


def test_resolves_my_crm_task_by_title_words() -> None:
    tasks = [view("Cellphone Store CRM", tid="a1"), view("Nightly data import", tid="b2")]
    assert resolve(parse("How's my CRM task going?"), tasks).task == tasks[0]
    assert resolve(parse("status of the import"), tasks).task == tasks[1]
    assert resolve(parse("status of the phone store"), tasks).task == tasks[0]  # part of a word, 4+ letters
    assert resolve(parse("status of my cellphone stores"), tasks).task == tasks[0]  # plural


def test_ambiguous_asks_and_none_says_so() -> None:
    tasks = [view("Cellphone Store CRM", tid="a1"), view("Dentist CRM", tid="b2")]
    res = resolve(parse("How's my CRM task going?"), tasks)
    assert res.task is None and res.ambiguous and [t["task_id"] for t in res.candidates] == ["a1", "b2"]
    assert resolve(parse("How's my dentist CRM going?"), tasks).task == tasks[1]
    none = resolve(parse("How's my blog task going?"), tasks)
    assert none.task is None and not none.ambiguous and none.candidates == ()


def test_prefers_the_task_a_restart_made_and_active_tasks() -> None:
    old = view("Cellphone Store CRM", "cancelled", tid="old", restarted_as="new")
    new = view("Cellphone Store CRM", "running", tid="new")
    assert resolve(parse("How's my CRM task going?"), [new, old]).task == new
    done = view("Cellphone Store CRM", "completed", tid="done")
    assert resolve(parse("Cancel my CRM task"), [new, done]).task == new
    # Nothing named: the one task still going.
    assert resolve(parse("how is it going?"), [done, new]).task == new


def test_short_id_picks_among_same_titles() -> None:
    a = view("Cellphone Store CRM", tid="1a2b3c4d-0000-0000-0000-000000000001")
    b = view("Cellphone Store CRM", tid="9f8e7d6c-0000-0000-0000-000000000002")
    assert resolve(parse("status of my CRM task"), [a, b]).ambiguous
    assert resolve(parse("status of task 9f8e7d6c"), [a, b]).task == b


def test_titles_that_differ_by_a_number_or_a_small_word_are_told_apart() -> None:
    one, two = view("alpha one", tid="a1"), view("alpha two", tid="a2")
    assert resolve(parse("pause my alpha one task"), [two, one]).task == one
    assert resolve(parse("approve step 2 of alpha two"), [one, two]).task == two
    assert resolve(parse("how is alpha going"), [one, two]).ambiguous  # nothing tells them apart
    third, fourth = view("Import 3", tid="i3"), view("Import 4", tid="i4")
    assert resolve(parse("status of import 4"), [third, fourth]).task == fourth
    # A step number that no title holds tells nothing.
    assert resolve(parse("approve step 2 of my import"), [third, fourth]).ambiguous


def test_a_title_named_whole_wins_over_longer_ones() -> None:
    plain = view("nightly import", "completed", tid="n1")
    failing = view("nightly import fail", "failed", tid="n2")
    assert resolve(parse("status of my nightly import task"), [failing, plain]).task == plain
    assert resolve(parse("status of nightly import fail"), [failing, plain]).task == failing
    # Part of both titles, neither whole: the one still going, as before.
    assert resolve(parse("status of my nightly task"), [failing, plain]).task == failing
