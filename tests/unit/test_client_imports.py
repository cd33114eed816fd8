"""The client imports nothing of the server: only the standard library, httpx and itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "client"
ALLOWED = {"client", "httpx", "msgspec"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.partition(".")[0])
    return roots


def test_the_client_imports_only_the_stdlib_httpx_and_itself() -> None:
    files = sorted(CLIENT.glob("*.py"))
    assert len(files) >= 8
    foreign = {
        f"{path.name}: {root}"
        for path in files
        for root in imported_roots(path)
        if root not in ALLOWED and root not in sys.stdlib_module_names
    }
    assert foreign == set()
