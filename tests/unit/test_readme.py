"""The README's worker quickstart is the example a test runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_quickstart_is_the_tested_example() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Worker quickstart", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    assert block.group(1) == (ROOT / "examples/quickstart.py").read_text()
    assert len(block.group(1).strip().splitlines()) < 15
