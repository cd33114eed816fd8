"""Text from the server reaches a terminal with its control characters shown, never acted on."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from client.terminal import printable, printable_json
from gateway import screen

EVIL = "a\x1b]0;t\x07b\x1b[2Jc\x9b1md\x7fe\rf\x00g"


def test_control_characters_become_visible_escapes() -> None:
    assert printable(EVIL) == r"a\x1b]0;t\x07b\x1b[2Jc\x9b1md\x7fe\x0df\x00g"
    assert (
        printable("tab\tand\nnewline, ünïcode ✓ [b]markup[/b]")
        == "tab\tand\nnewline, ünïcode ✓ [b]markup[/b]"
    )
    assert printable_json({"k\x1b": [EVIL, 1, None, {"x": ("\x1b",)}]}) == {
        r"k\x1b": [printable(EVIL), 1, None, {"x": [r"\x1b"]}]
    }


def _view(text: str) -> dict[str, Any]:
    step = {
        "order": 1,
        "name": text,
        "status": "approval",
        "progress": 0,
        "substeps": [{"name": text, "done": False}],
    }
    return {
        "task_id": "t1",
        "title": text,
        "status": "running",
        "progress": 0,
        "current_step": 1,
        "total_steps": 1,
        "started_at": None,
        "steps": [{**step, "approval": {"message": text}}],
    }


def test_the_box_and_the_list_write_no_control_sequence_of_the_text() -> None:
    view = _view(EVIL + " [bold]x[/bold]")
    logs = [{"at": "2024-01-15T10:00:00Z", "level": "info", "step": 1, "message": EVIL, "position": 1}]
    for renderable in (
        screen.task_box(view, 0.0, logs=logs, flash=EVIL),
        screen.task_list([view], 0.0, 0, flash=EVIL),
    ):
        out = io.StringIO()
        Console(file=out, force_terminal=True, color_system="truecolor", width=200).print(renderable)
        written = out.getvalue()
        for sequence in ("\x1b]0;", "\x1b[2J", "\x9b", "\x07", "\x7f", "\x00"):
            assert sequence not in written, (sequence, written)
        assert r"a\x1b]0;t\x07b\x1b[2Jc" in written
        assert "[bold]x[/bold]" in written  # shown as typed, not taken as markup
