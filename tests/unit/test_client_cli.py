"""The shell form's grammar: `report TASK_ID step 2 progress 40` and friends, read without a server."""

from __future__ import annotations

import io

import pytest

from client.cli import EXIT_USAGE, Report, UsageError, parse_report, report, run, summary


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("step 2 progress 40", Report("progress", 2, number=40.0)),
        ("step 2 progress 12.5", Report("progress", 2, number=12.5)),
        ("step 1 start", Report("start", 1)),
        ("step 3 retry", Report("retry", 3)),
        ("step 2 complete", Report("complete", 2)),
        ("step 2 complete|CRM ready", Report("complete", 2, text="CRM ready")),
        ("step 2 skip", Report("skip", 2)),
        ("step 2 skip|not needed", Report("skip", 2, text="not needed")),
        ("step 2 fail|index missing", Report("fail", 2, text="index missing")),
        ("step 2 substep 3", Report("substep", 2, number=3)),
        ("step 4 approval|Deploy to production?", Report("approval", 4, text="Deploy to production?")),
        ("log|created 3 tables", Report("log", text="created 3 tables")),
        ("pause", Report("pause")),
        ("resume", Report("resume")),
        ("cancel", Report("cancel")),
        ("cancel|customer changed plans", Report("cancel", text="customer changed plans")),
    ],
)
def test_report_words_parse(words: str, expected: Report) -> None:
    head, _, quoted = words.partition("|")
    argv = head.split() + ([quoted] if quoted else [])
    assert parse_report(argv) == expected


@pytest.mark.parametrize(
    ("words", "complaint"),
    [
        ([], "cannot read"),
        (["step", "two", "start"], "positive integer"),
        (["step", "0", "start"], "positive integer"),
        (["step", "2", "progress"], "needs a PERCENT"),
        (["step", "2", "progress", "lots"], "must be a number"),
        (["step", "2", "progress", "140"], "between 0 and 100"),
        (["step", "2", "fail"], "needs a MESSAGE"),
        (["step", "2", "fail", "index", "missing"], "quote it"),
        (["step", "2", "start", "now"], "takes no argument"),
        (["step", "2", "frobnicate"], "unknown step action"),
        (["log"], "needs a MESSAGE"),
        (["pause", "now"], "cannot read"),
        (["cancel", "a", "b"], "at most one"),
    ],
)
def test_bad_report_words_are_usage_errors(words: list[str], complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        parse_report(words)


def test_a_usage_error_exits_2_without_touching_the_network() -> None:
    err = io.StringIO()
    assert report("any", ["step", "x", "start"], url="http://127.0.0.1:9", err=err) == EXIT_USAGE
    assert "positive integer" in err.getvalue()
    assert report("any", ["log", "hi"], level="loud", url="http://127.0.0.1:9", err=err) == EXIT_USAGE


def test_run_needs_a_command() -> None:
    err = io.StringIO()
    assert run([], err=err) == EXIT_USAGE
    assert "needs a command" in err.getvalue()


def test_summary_is_one_line() -> None:
    view = {
        "task_id": "t1",
        "status": "running",
        "progress": 40,
        "current_step": 2,
        "total_steps": 4,
        "steps": [{"name": "Create database tables"}, {"name": "Generate application UI"}],
    }
    assert summary(view) == "t1 running 40% step 2/4 Generate application UI"
