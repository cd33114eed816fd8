"""The shell form: `report` one command into a task, or `run` a command as a one-step task.

Plain functions returning an exit code, so `progressd report` / `progressd run` (typer, in the gateway) and
`python -m client.cli` (argparse, needing nothing but the client) share them.
"""

from __future__ import annotations

import argparse
import json
import queue
import shlex
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from client.core import LEVELS, Options, clip
from client.errors import Cancelled, Interrupted, ProgressdError, Rejected
from client.terminal import printable
from client.tracker import Tracker

EXIT_OK = 0
EXIT_REFUSED = 1  # the server refused the command, or could not be reached
EXIT_USAGE = 2
EXIT_CANCELLED = 3  # the task is cancelled: a script should stop
EXIT_REJECTED = 4  # `step N approval MSG` was rejected

STEP_ACTIONS = ("start", "progress", "substep", "complete", "fail", "skip", "retry", "approval")
USAGE = """report TASK_ID WORDS...:
  step N start | complete [RESULT] | skip [REASON] | retry | fail MESSAGE | progress PERCENT
  step N substep K            mark substep K of step N done
  step N approval MESSAGE     ask a person to approve; waits (exit 4 when rejected)
  log MESSAGE [--level L] [--step N]
  pause | resume | cancel [REASON]"""
MAX_TITLE = 200
BACKLOG = 256  # queued output lines past which consecutive lines are sent as one log event


class UsageError(Exception):
    """The words do not make a report command."""


@dataclass(frozen=True)
class Report:
    """One parsed `report` command: a step action (with `order`), `log`, `pause`, `resume` or `cancel`."""

    action: str
    order: int | None = None
    text: str | None = None
    number: float | None = None


def parse_report(words: Sequence[str]) -> Report:
    """Parse `step 2 progress 40`, `log "msg"`, `cancel "why"`, ...; UsageError when they make no sense."""
    match list(words):
        case ["step", order, action, *rest]:
            n = _int(order, "step number")
            if action not in STEP_ACTIONS:
                raise UsageError(f"unknown step action {action!r}; one of {', '.join(STEP_ACTIONS)}")
            if action == "progress":
                percent = _one(rest, "progress needs a PERCENT")
                try:
                    value = float(percent)
                except ValueError:
                    raise UsageError(f"percent must be a number, not {percent!r}") from None
                if not 0 <= value <= 100:
                    raise UsageError(f"percent must be between 0 and 100, not {percent}")
                return Report("progress", n, number=value)
            if action == "substep":
                return Report("substep", n, number=_int(_one(rest, "substep needs K"), "substep number"))
            if action in ("fail", "approval"):
                return Report(action, n, text=_one(rest, f"{action} needs a MESSAGE"))
            if action in ("start", "retry"):
                if rest:
                    raise UsageError(f"{action} takes no argument")
                return Report(action, n)
            return Report(action, n, text=_optional(rest, action))
        case ["log", *rest]:
            return Report("log", text=_one(rest, "log needs a MESSAGE"))
        case ["pause" | "resume" as action]:
            return Report(action)
        case ["cancel", *rest]:
            return Report("cancel", text=_optional(rest, "cancel"))
    raise UsageError(f"cannot read {shlex.join(words)!r}\n{USAGE}")


def _int(word: str, what: str) -> int:
    if not word.isdigit() or int(word) < 1:
        raise UsageError(f"{what} must be a positive integer, not {word!r}")
    return int(word)


def _one(rest: list[str], message: str) -> str:
    if len(rest) != 1 or not rest[0].strip():
        raise UsageError(message + " (quote it if it has spaces)")
    return rest[0]


def _optional(rest: list[str], action: str) -> str | None:
    if len(rest) > 1:
        raise UsageError(f"{action} takes at most one argument (quote it if it has spaces)")
    return rest[0] if rest else None


def report(
    task_id: str,
    words: Sequence[str],
    *,
    url: str | None = None,
    token: str | None = None,
    level: str = "info",
    step: int | None = None,
    as_json: bool = False,
    options: Options | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Send one command to a task and print where it stands; returns the exit code.

    Step commands behave as in the SDK: they wait while the task is paused, and exit 3 once it is cancelled.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        command = parse_report(words)
        if level not in LEVELS:
            raise UsageError(f"--level must be one of {', '.join(LEVELS)}")
    except UsageError as exc:
        print(f"progressd: {exc}", file=err)
        return EXIT_USAGE
    try:
        with Tracker.attach(task_id, url, token, options=options) as tracker:
            _apply(tracker, command, level, step)
            view = tracker.view
    except Rejected as exc:
        print(printable(f"progressd: {exc}"), file=err)
        return EXIT_REJECTED
    except Cancelled as exc:
        reason = f": {exc.reason}" if exc.reason else ""
        print(printable(f"progressd: task {task_id} is cancelled{reason}"), file=err)
        return EXIT_CANCELLED
    except (ProgressdError, Interrupted) as exc:
        print(printable(f"progressd: {exc}"), file=err)
        return EXIT_REFUSED
    except ValueError as exc:
        print(f"progressd: {exc}", file=err)
        return EXIT_USAGE
    print(json.dumps(view) if as_json else printable(summary(view)), file=out)
    return EXIT_OK


def _apply(tracker: Tracker, command: Report, level: str, step: int | None) -> None:
    if command.order is None:
        if command.action == "log":
            assert command.text is not None
            tracker.log(command.text, level, step)
        elif command.action == "cancel":
            tracker.cancel(command.text)
        elif command.action == "pause":
            tracker.pause()
        else:
            tracker.resume()
        return
    target = tracker.step(command.order)
    match command.action:
        case "start":
            target.start()
        case "progress":
            assert command.number is not None
            target.progress(command.number)
        case "substep":
            assert command.number is not None
            target.substep_done(int(command.number))
        case "complete":
            target.complete(command.text)
        case "fail":
            assert command.text is not None
            target.fail(command.text)
        case "skip":
            target.skip(command.text)
        case "retry":
            target.retry()
        case "approval":
            assert command.text is not None
            target.await_approval(command.text)


def summary(view: dict[str, Any]) -> str:
    """One line about a task: `<id> running 40% step 2/4 Generate application UI`."""
    current = int(view.get("current_step") or 0)
    steps = view.get("steps") or []
    name = steps[current - 1]["name"] if 0 < current <= len(steps) else ""
    return (
        f"{view.get('task_id')} {view.get('status')} {view.get('progress')}% "
        f"step {current}/{view.get('total_steps')} {name}".rstrip()
    )


# ---- run --------------------------------------------------------------------------------------------------


def run(
    command: Sequence[str],
    *,
    title: str | None = None,
    url: str | None = None,
    token: str | None = None,
    tail: int = 20,
    options: Options | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Run a command as a one-step task and return its exit code.

    Each line it prints becomes a log event (stdout at info, stderr at warning) and is passed through; exit 0
    completes the step, anything else fails it with the exit status and the last `tail` stderr lines. When
    the task is cancelled the command is terminated. If the server cannot be reached the command still runs,
    unreported: the job matters more than its report.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if not command:
        print("progressd: run needs a command: progressd run -- CMD ARGS...", file=err)
        return EXIT_USAGE
    name = clip_title(title or shlex.join(command))
    tracker: Tracker | None = None
    try:
        tracker = Tracker.create(name, steps=[name], url=url, token=token, options=options)
        tracker.step(1).start()
        print(f"progressd: task {tracker.task_id}", file=err, flush=True)
    except (ProgressdError, Interrupted, ValueError) as exc:  # ValueError: a URL that cannot work
        print(printable(f"progressd: not reporting this run: {exc}"), file=err, flush=True)
        if tracker is not None:
            tracker.close()
            tracker = None
    try:
        return _supervise(command, tracker, tail, out, err)
    finally:
        if tracker is not None:
            tracker.close()


def clip_title(text: str) -> str:
    return text if len(text) <= MAX_TITLE else text[: MAX_TITLE - 1] + "…"


def _supervise(command: Sequence[str], tracker: Tracker | None, tail: int, out: IO[str], err: IO[str]) -> int:
    try:
        proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        rc = 127 if isinstance(exc, FileNotFoundError) else 126
        print(f"progressd: cannot run {command[0]!r}: {exc}", file=err)
        if tracker is not None:
            _report_end(tracker, rc, [f"cannot run {command[0]!r}: {exc}"], err)
        return rc
    lines: queue.Queue[tuple[str, str] | None] = queue.Queue()
    last_err: deque[str] = deque(maxlen=max(tail, 1))
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, "info", out, lines, None), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "warning", err, lines, last_err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    sender = _Sender(tracker, lines, proc, err)
    sender.start()
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.wait()  # the terminal sent SIGINT to the command too; let it finish on its own terms
    for reader in readers:
        reader.join()
    lines.put(None)
    sender.join()
    rc = proc.returncode
    if tracker is not None and not sender.cancelled:
        _report_end(tracker, rc, list(last_err)[-tail:] if tail > 0 else [], err)
    return 128 - rc if rc < 0 else rc


def _pump(
    stream: IO[bytes],
    level: str,
    echo: IO[str],
    lines: queue.Queue[tuple[str, str] | None],
    keep: deque[str] | None,
) -> None:
    """Copy a pipe line by line to our own stream and to the log queue."""
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", errors="replace")
        echo.write(text)
        echo.flush()
        line = text.rstrip("\r\n")
        if keep is not None:
            keep.append(line)
        if line.strip():
            lines.put((level, line))
    stream.close()


class _Sender(threading.Thread):
    """Sends queued output lines as log events, in order, and terminates the command on cancel."""

    def __init__(
        self,
        tracker: Tracker | None,
        lines: queue.Queue[tuple[str, str] | None],
        proc: subprocess.Popen[bytes],
        err: IO[str],
    ) -> None:
        super().__init__(daemon=True)
        self.tracker = tracker
        self.lines = lines
        self.proc = proc
        self.err = err
        self.cancelled = False
        self.warned = False

    def run(self) -> None:
        while True:
            try:
                item = self.lines.get(timeout=self.tracker.options.check_interval if self.tracker else None)
            except queue.Empty:
                self._send(None)  # nothing printed lately: look at the task's status
                continue
            if item is None:
                return
            level, line = item
            while self.lines.qsize() > BACKLOG and len(line) < 8000:
                more = self.lines.get_nowait()
                if more is None:
                    self.lines.put(None)
                    break
                line += "\n" + more[1]
            self._send((level, line))

    def _send(self, item: tuple[str, str] | None) -> None:
        if self.tracker is None:
            return
        try:
            if item is None:
                self.tracker.refresh()
            else:
                self.tracker.log(item[1], item[0], 1)
        except ProgressdError as exc:
            if not self.warned:
                self.warned = True
                print(printable(f"progressd: could not report output: {exc}"), file=self.err, flush=True)
            return
        if self.tracker.status == "cancelled" and not self.cancelled:
            self.cancelled = True
            print(
                f"progressd: task {self.tracker.task_id} was cancelled; stopping the command", file=self.err
            )
            self.proc.terminate()


def _report_end(tracker: Tracker, rc: int, last_err: list[str], err: IO[str]) -> None:
    step = tracker.step(1)
    try:
        if rc == 0:
            step.complete()
        else:
            why = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
            step.fail(clip("\n".join([why, *last_err])))
    except Cancelled:
        print(f"progressd: task {tracker.task_id} was cancelled", file=err)
    except (ProgressdError, Interrupted) as exc:
        print(printable(f"progressd: could not report the end of the run: {exc}"), file=err)


# ---- python -m client.cli ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m client.cli report ...` / `run ...`: the shell form without the server's CLI installed."""
    parser = argparse.ArgumentParser(prog="python -m client.cli", description=__doc__)
    parser.add_argument("--url", help="server URL (default PROGRESSD_URL or http://127.0.0.1:8000)")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="report one command into a task", usage=USAGE)
    rep.add_argument("task_id")
    rep.add_argument("words", nargs="+")
    rep.add_argument("--level", default="info", choices=LEVELS)
    rep.add_argument("--step", type=int, default=None)
    rep.add_argument("--json", action="store_true", dest="as_json")
    wrap = sub.add_parser("run", help="run a command as a one-step task: run [--title T] -- CMD ARGS...")
    wrap.add_argument("--title", default=None)
    wrap.add_argument("--tail", type=int, default=20)
    wrap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "report":
        return report(
            args.task_id, args.words, url=args.url, level=args.level, step=args.step, as_json=args.as_json
        )
    cmd = list(args.cmd)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    return run(cmd, title=args.title, url=args.url, tail=args.tail)


if __name__ == "__main__":
    raise SystemExit(main())
