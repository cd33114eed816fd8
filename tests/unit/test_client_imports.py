"""The client imports nothing of the server: only the standard library, httpx and itself (and nats-py, in its
NATS driver only, which the HTTP client never loads)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "client"
ALLOWED = {"client", "httpx", "msgspec"}
ALSO = {"natsdriver.py": {"nats"}}  # the NATS transport, imported only when a tracker is given a nats:// URL


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
        if root not in ALLOWED | ALSO.get(path.name, set()) and root not in sys.stdlib_module_names
    }
    assert foreign == set()


def test_the_http_client_does_not_load_nats() -> None:
    code = (
        "import sys, client, client.cli; from client import Tracker, AsyncTracker; "
        "assert not [m for m in sys.modules if m == 'nats' or m.startswith(('nats.', 'client.natsdriver'))]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=CLIENT.parent)
