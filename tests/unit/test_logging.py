"""Log lines: an error logged with exc_info keeps its traceback, as JSON and on the console."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from gateway.ops import configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level
    structlog.reset_defaults()


def fail() -> None:
    raise ValueError("the disk is full")


def log_an_error(name: str) -> None:
    try:
        fail()
    except ValueError:
        structlog.get_logger(name).error("writer_failed", task="t1", exc_info=True)


def test_json_lines_carry_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", json=True)
    log_an_error("progressd.test.json")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    [line] = [entry for entry in lines if entry.get("event") == "writer_failed"]
    assert line["level"] == "error" and line["task"] == "t1"
    assert "exc_info" not in line
    assert "Traceback (most recent call last)" in line["exception"]
    assert "in fail" in line["exception"] and "ValueError: the disk is full" in line["exception"]


def test_standard_library_errors_carry_it_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", json=True)
    try:
        fail()
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    [line] = [entry for entry in lines if entry.get("event") == "Exception in ASGI application"]
    assert "ValueError: the disk is full" in line["exception"]


def test_console_lines_show_it(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", json=False)
    log_an_error("progressd.test.console")
    err = capsys.readouterr().err
    assert "writer_failed" in err
    assert "ValueError" in err and "the disk is full" in err
