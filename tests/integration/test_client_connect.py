"""The worker SDK's first contact: a URL that cannot work, or a server that is not there, said plainly."""

from __future__ import annotations

import sys

import pytest

from client import Tracker


def test_report_and_run_say_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from client.cli import main as cli_main

    code = cli_main(
        ["--url", "localhost", "report", "7d0b5e9c-0000-4000-8000-000000000001", "step", "1", "start"]
    )
    assert code == 2
    assert "must be http://host" in capsys.readouterr().err
    code = cli_main(["--url", "localhost:8000", "run", "--", sys.executable, "-c", "print('work done')"])
    captured = capsys.readouterr()
    assert code == 0 and "not reporting this run" in captured.err


def test_an_unreachable_nats_server_is_named_with_what_the_connection_met() -> None:
    import socket

    from client import Options, RetryPolicy, Unavailable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    with pytest.raises(Unavailable) as info:
        Tracker.create(
            "x", steps=["a"], url=f"nats://127.0.0.1:{port}", options=Options(retry=RetryPolicy(deadline=2.0))
        )
    text = str(info.value)
    assert f"cannot reach NATS at nats://127.0.0.1:{port}" in text
    assert "ConnectionRefusedError" in text  # not a bare "TimeoutError"
