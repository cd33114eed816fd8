"""The `progressd` command line: serve, run projections, and the replay and audit tools."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from client import cli as worker_cli
from client.terminal import printable
from gateway.app import create_app
from gateway.auth import is_loopback, open_bind_refusal
from gateway.headlimit import BoundedHttpToolsProtocol
from gateway.ops import configure_logging
from gateway.watch import watch as watch_progress
from infra import replay
from infra.history_import import TraceError, import_history
from infra.notifyconfig import NotifySettings
from infra.projector import Projection, Projector
from infra.readside import BadCursor, parse_at
from infra.runtime import Runtime
from infra.settings import Settings, SettingsError
from infra.store import TaskNotFound, open_store
from infra.tokens import Role, TokenStore
from infra.views import open_view

cli = typer.Typer(
    help="progressd: an event-sourced progress backend. Know where your task is.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


@cli.command()
def serve(
    host: str | None = typer.Option(None, help="Address to bind (default PROGRESSD_HOST or 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port to bind (default PROGRESSD_PORT or 8000)."),
    demo: bool = typer.Option(
        False, "--demo", help="Create the demo CRM task and drive it in the background."
    ),
    projections: bool = typer.Option(
        True, "--projections/--no-projections", help="Run the read-model projections inside this process."
    ),
    relay: bool = typer.Option(
        True, "--relay/--no-relay", help="Publish the log to NATS JetStream (when PROGRESSD_NATS_URL is set)."
    ),
) -> None:
    """Serve the HTTP and WebSocket API."""
    settings = Settings.from_env().with_overrides(host=host, port=port)
    configure_logging(settings.log_level, {"json": True, "console": False}.get(settings.log_format))
    if not is_loopback(settings.host):  # said before serving, not as a failed startup's traceback
        refusal = open_bind_refusal(settings, not TokenStore(settings).any_active())
        if refusal:
            raise fail(refusal, code=3)
    notify = NotifySettings.from_env(settings=settings)
    app = create_app(settings, demo=demo, project=projections, relay=relay, notify=notify)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,
        lifespan="on",
        ws_max_size=64 * 1024,
        http=BoundedHttpToolsProtocol,  # a 431 past 64 KiB of headers; httptools alone takes any amount
    )


@cli.command()
def demo(
    host: str | None = typer.Option(None, help="Address to bind."),
    port: int | None = typer.Option(None, help="Port to bind."),
) -> None:
    """Serve with the demo task (same as `serve --demo`)."""
    serve(host=host, port=port, demo=True, projections=True, relay=True)


@cli.command()
def project(
    name: list[str] = typer.Option(None, "--name", "-n", help="Read model(s) to run; all when omitted."),
    poll: float = typer.Option(0.2, help="Seconds between looks at the log when nothing woke us."),
) -> None:
    """Run read-model projections in this process until stopped (SIGTERM or Ctrl-C)."""
    settings = Settings.from_env()
    try:
        chosen = replay.models(name)
    except replay.UnknownModel as exc:
        raise fail(str(exc)) from None
    app = open_store(settings)
    projector = Projector((Projection(app, open_view(settings, m)) for m in chosen), poll=poll)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    projector.start()
    console.print(f"projecting {', '.join(m.name for m in chosen)} from {app.head()} events")
    try:
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        projector.stop()
        app.close()


@cli.command()
def rebuild(
    name: list[str] = typer.Option(
        None, "--projection", "-p", help="Read model(s) to rebuild; all when omitted."
    ),
) -> None:
    """Drop read models and rebuild them from the event log, with a progress bar and events/s."""
    settings = Settings.from_env()
    try:
        chosen = replay.models(name)
    except replay.UnknownModel as exc:
        raise fail(str(exc)) from None
    app = open_store(settings)
    head = app.head()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} events/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        for model in chosen:
            job = bar.add_task(model.name, total=max(head, 1), rate="-")
            started = time.perf_counter()

            def report(position: int, total: int, job: Any = job, started: float = started) -> None:
                rate = position / max(time.perf_counter() - started, 1e-9)
                bar.update(job, completed=position, total=max(total, 1), rate=f"{rate:,.0f}")

            applied = replay.rebuild(app, open_view(settings, model), report)
            elapsed = time.perf_counter() - started
            bar.update(job, completed=max(head, 1), rate=f"{applied / max(elapsed, 1e-9):,.0f}")
    app.close()


@cli.command()
def verify(
    name: list[str] = typer.Option(
        None, "--projection", "-p", help="Read model(s) to check; all when omitted."
    ),
) -> None:
    """Recompute every view from the log and report any drift (exit 1 on drift)."""
    settings = Settings.from_env()
    app = open_store(settings)
    drifted = False
    try:
        for result in replay.verify(app, settings, name):
            if isinstance(result, str):
                console.print(f"[green]✓[/green] {result} equals a replay of the log")
                continue
            drifted = True
            console.print(f"[red]✕ {result.model}.{result.table} drifted[/red] at position {result.position}")
            for label, rows in (("missing", result.missing), ("unexpected", result.unexpected)):
                for row in rows:
                    console.print(f"    {label:<10} {str(row)[:160]}", markup=False)
    except (replay.UnknownModel, replay.VerifyError) as exc:
        raise fail(str(exc)) from None
    finally:
        app.close()
    if drifted:
        raise typer.Exit(1)


@cli.command()
def audit(
    task_id: str = typer.Argument(..., help="The task to audit."),
    at: str | None = typer.Option(None, "--at", help="Show the view as it stood at this instant (ISO 8601)."),
    position: int | None = typer.Option(None, "--position", help="Show the view as at this log position."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Print a task's event history and its progress view at a moment (time travel)."""
    settings = Settings.from_env()
    try:
        tid = UUID(task_id)
    except ValueError:
        raise fail(f"{task_id!r} is not a task id") from None
    app = open_store(settings)
    try:
        events = replay.history(app, tid)
        if not events:
            raise TaskNotFound(task_id)
        seq = events[-1]["seq"]
        if position is not None:
            found = replay.seq_at_position(app, tid, position)
            if found is None:
                raise fail(f"task {task_id} did not exist yet at position {position}")
            seq = found
        if at is not None:
            try:
                moment = parse_at(at)
            except BadCursor:
                raise fail(f"--at {at!r} is not an ISO 8601 instant") from None
            earlier = [e["seq"] for e in events if e["at"] <= moment and e["seq"] <= seq]
            if not earlier:
                raise fail(f"task {task_id} did not exist yet at {at}")
            seq = earlier[-1]
        view = replay.view_at(app, tid, seq)
    except TaskNotFound:
        raise fail(f"no task {task_id}", 1) from None
    finally:
        app.close()
    shown = [e for e in events if e["seq"] <= seq]
    if as_json:
        # ASCII: rich writes other characters as they are, C1 controls (a worker's text) included.
        console.print_json(json.dumps({"events": shown, "view": view}), ensure_ascii=True)
        return
    table = Table(title=Text(printable(f"events of {view['title']} ({task_id}) up to seq {seq}")))
    for column in ("seq", "at", "type", "data"):
        table.add_column(column)
    for e in shown:
        data = Text(printable(json.dumps(e["data"], ensure_ascii=False)))  # no markup, no control sequence
        table.add_row(str(e["seq"]), e["at"], e["type"], data)
    console.print(table)
    console.print_json(json.dumps(view), ensure_ascii=True)


@cli.command()
def status() -> None:
    """Each read model's position and lag behind the log, in events and seconds."""
    settings = Settings.from_env()
    app = open_store(settings)
    table = Table(title=f"read models (log head {app.head()})")
    for column in ("projection", "position", "lag (events)", "lag (s)"):
        table.add_column(column)
    for model in replay.models(None):
        position, behind, seconds = replay.lag(app, open_view(settings, model))
        table.add_row(model.name, str(position), str(behind), "-" if seconds is None else f"{seconds:.1f}")
    app.close()
    console.print(table)


token_cli = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
cli.add_typer(token_cli, name="token")


@token_cli.command("create")
def token_create(
    role: Role = typer.Option(..., help="worker (reports progress), owner (watches and controls), admin."),
    owner: str = typer.Option(..., help="The owner whose tasks this token sees and touches."),
    label: str | None = typer.Option(None, help="A note to recognise the token by."),
    expires_in: str | None = typer.Option(
        None,
        "--expires-in",
        help="Lifetime: a number and s, m, h, d or w (3600s, 12h, 30d); none by default.",
    ),
) -> None:
    """Create a token. It is printed once; only its hash is stored."""
    lifetime = None if expires_in is None else parse_lifetime(expires_in)
    store = TokenStore(Settings.from_env())
    token_id, token = store.create(role, owner, label, lifetime)
    until = "" if lifetime is None else f", valid for {expires_in}"
    err.print(f"created {role} token {token_id} for owner {owner!r}{until}; it is shown only now:")
    console.print(token, markup=False, highlight=False)


@token_cli.command("list")
def token_list() -> None:
    """List tokens (never the tokens themselves)."""
    table = Table(title="API tokens")
    for column in ("id", "role", "owner", "label", "created", "expires", "revoked"):
        table.add_column(column)
    keys = ("id", "role", "owner", "label", "created_at", "expires_at", "revoked_at")
    for row in TokenStore(Settings.from_env()).list():
        table.add_row(*(Text(printable(row[k] or "")) for k in keys))
    console.print(table)


LIFETIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_lifetime(raw: str) -> timedelta:
    """`3600s`, `90m`, `12h`, `30d` or `2w` as a timedelta; a usage error otherwise."""
    match = re.fullmatch(r"\s*(\d{1,9})\s*([smhdw])\s*", raw.lower())
    if match is None or int(match[1]) == 0:
        raise fail(f"--expires-in {raw!r} is not a lifetime such as 3600s, 90m, 12h, 30d or 2w")
    seconds = int(match[1]) * LIFETIME_UNITS[match[2]]
    if seconds > 100 * 365 * 86400:
        raise fail(f"--expires-in {raw!r} is over 100 years: leave it out for a token that does not expire")
    return timedelta(seconds=seconds)


@token_cli.command("revoke")
def token_revoke(token_id: str = typer.Argument(..., help="The id shown by `token list`.")) -> None:
    """Revoke a token; servers stop accepting it within seconds."""
    if not TokenStore(Settings.from_env()).revoke(token_id):
        raise fail(f"no active token {token_id}", 1)
    console.print(f"revoked {token_id}")


URL_HELP = "Server URL (default PROGRESSD_URL or http://127.0.0.1:8000); the token is PROGRESSD_TOKEN."
WORDS_HELP = (
    "step N start | progress P | substep K | complete [RESULT] | skip [REASON] | retry | fail MSG | "
    "approval MSG; log MSG; pause; resume; cancel [REASON]. Quote a message that has spaces."
)


@cli.command()
def report(
    task_id: str = typer.Argument(..., help="The task to report into."),
    words: list[str] = typer.Argument(..., help=WORDS_HELP),
    level: str = typer.Option("info", "--level", help="Level of a `log` line: debug, info, warning, error."),
    step: int | None = typer.Option(None, "--step", help="The step a `log` line is about."),
    as_json: bool = typer.Option(False, "--json", help="Print the task's progress JSON after the command."),
    url: str | None = typer.Option(None, "--url", help=URL_HELP),
) -> None:
    """Report one command into a task from a script: `progressd report T step 2 progress 40`.

    Step commands wait while the task is paused.
    Exit codes: 0 done, 1 refused or unreachable, 2 usage, 3 task cancelled, 4 approval rejected.
    """
    raise typer.Exit(worker_cli.report(task_id, words, url=url, level=level, step=step, as_json=as_json))


@cli.command()
def run(
    command: list[str] = typer.Argument(..., help="The command and its arguments, after `--`."),
    title: str | None = typer.Option(None, "--title", help="Task title (default: the command line)."),
    url: str | None = typer.Option(None, "--url", help=URL_HELP),
) -> None:
    """Run a command as a one-step task: `progressd run [--title T] -- CMD ARGS...`.

    Each output line becomes a log event; exit 0 completes the step, any other exit fails it.
    Cancelling the task terminates the command. Exits with the command's exit code.
    """
    raise typer.Exit(worker_cli.run(command, title=title, url=url))


@cli.command("import-history")
def import_history_command(
    path: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="Traces CSV: one row per finished step."
    ),
    owner: str | None = typer.Option(
        None, help="Owner of the imported tasks (default PROGRESSD_LOCAL_OWNER)."
    ),
) -> None:
    """Load recorded runs (a traces CSV) as history, so time estimates start from them."""
    rt = Runtime(Settings.from_env())
    try:
        imported = import_history(rt, path, owner=owner)
        rt.projector.run_once()  # step_stats (and every read model) learn from them now
    except TraceError as exc:
        raise fail(str(exc)) from None
    finally:
        rt.close()
    console.print(f"imported {imported} run(s) from {path} (runs imported before are kept as they were)")


@cli.command()
def watch(
    task_id: str | None = typer.Argument(None, help="The task to watch; all your tasks when omitted."),
    url: str | None = typer.Option(None, help="Server URL (default PROGRESSD_URL or http://127.0.0.1:8000)."),
) -> None:
    """Watch progress live in the terminal: p pause, r resume, c cancel (twice), q quit."""
    watch_progress(url or os.environ.get("PROGRESSD_URL") or "http://127.0.0.1:8000", task_id)


def main() -> None:
    try:
        cli()
    except SettingsError as exc:  # any command reading PROGRESSD_* settings: one line, not a traceback
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise SystemExit(2) from None
