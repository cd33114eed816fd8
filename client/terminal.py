"""Text from a server made safe for a terminal: no control sequence in it reaches the terminal.

A task's title, step names, log lines and messages are whatever a worker sent. Printed raw, `ESC ] 0 ; … BEL`
retitles the window, `ESC ] 52 ; c ; …` writes the clipboard, `ESC [ 2 J` clears the screen, and a carriage
return overwrites what was printed. C0 controls (but tab and newline), DEL and C1 controls are shown as
visible escapes instead (`\\x1b`), so the text still says what was sent.
"""

from __future__ import annotations

import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def printable(text: object) -> str:
    """`text` as a string with every control character but tab and newline written as `\\xNN`."""
    return _CONTROL.sub(_escape, str(text))


def printable_json(value: Any) -> Any:
    """A decoded JSON value with every string in it (keys too) made `printable`."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list | tuple):
        return [printable_json(v) for v in value]
    if isinstance(value, dict):
        return {printable(k): printable_json(v) for k, v in value.items()}
    return value
