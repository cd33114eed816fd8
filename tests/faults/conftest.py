"""Fixtures for the fault-injection suite: real server processes (shared with e2e), figures at the end."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import server_factory  # a fixture: real `progressd serve` processes
from tests.e2e.test_watch import terminals, tmux  # fixtures: real terminals in tmux
from tests.faults.harness import FIGURES

__all__ = ["server_factory", "terminals", "tmux"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what each fault test measured (commands, kills, retries, outage and recovery times)."""
    if not FIGURES:
        return
    terminalreporter.section("fault-injection figures")
    for name, figures in FIGURES.items():
        terminalreporter.write_line(f"{name}: {json.dumps(figures, sort_keys=True)}")
