"""The `progressd` command line."""

from __future__ import annotations

import typer
import uvicorn

from gateway.app import create_app
from infra.settings import Settings

cli = typer.Typer(
    help="progressd: an event-sourced progress backend. Know where your task is.", no_args_is_help=True
)


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
) -> None:
    """Serve the HTTP and WebSocket API."""
    settings = Settings.from_env().with_overrides(host=host, port=port)
    app = create_app(settings, demo=demo, project=projections)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, lifespan="on")


@cli.command()
def demo(
    host: str | None = typer.Option(None, help="Address to bind."),
    port: int | None = typer.Option(None, help="Port to bind."),
) -> None:
    """Serve with the demo task (same as `serve --demo`)."""
    serve(host=host, port=port, demo=True, projections=True)


def main() -> None:
    cli()
