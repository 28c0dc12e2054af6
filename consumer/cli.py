"""The ``omnisink`` command line."""

from __future__ import annotations

import asyncio
import sys

import typer
from pydantic import ValidationError

from consumer import __version__
from consumer.settings import Settings

app = typer.Typer(
    name="omnisink",
    help=(
        "OmniSink: effectively-once Kafka to PostgreSQL sink for OmniNode events. "
        "Every setting is an OMNISINK_* environment variable; `omnisink config` lists them."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        typer.echo(f"omnisink: invalid configuration:\n{exc}", err=True)
        raise typer.Exit(code=2) from exc


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def config() -> None:
    """Print every OMNISINK_* setting with its current value (secrets redacted)."""
    settings = _load_settings()
    for name, value in _flatten(settings.model_dump(mode="json")).items():
        shown = settings.database.redacted_url if name == "DATABASE_URL" else value
        typer.echo(f"OMNISINK_{name}={shown}")


def _flatten(values: dict[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in values.items():
        name = f"{prefix}{key}".upper()
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}_"))
        else:
            flat[name] = value
    return flat


@app.command()
def migrate(
    revision: str = typer.Argument("head", help="Target revision (default: head)."),
) -> None:
    """Upgrade the database at OMNISINK_DATABASE_URL to REVISION (default: head)."""
    from consumer import migrate as migrations  # Alembic is only imported when needed

    settings = _load_settings()
    try:
        migrations.upgrade(settings.database.url.get_secret_value(), revision)
    except OSError as exc:
        typer.echo(
            f"omnisink migrate: cannot reach PostgreSQL at {settings.database.redacted_url}: "
            f"{exc}. Check OMNISINK_DATABASE_URL and that the server is running.",
            err=True,
        )
        raise typer.Exit(code=2) from exc
    typer.echo(f"omnisink migrate: {settings.database.redacted_url} is at {revision}")


@app.command()
def run(
    until_caught_up: bool = typer.Option(
        False,
        "--until-caught-up",
        help="Exit 0 once every assigned partition is consumed to the end offsets seen at "
        "start (backfills, tests, the demo).",
    ),
) -> None:
    """Run the sink: consume the subscribed topics into PostgreSQL until SIGTERM/SIGINT."""
    from consumer import logs
    from consumer.errors import FatalError
    from consumer.worker import Worker

    settings = _load_settings()
    logs.configure(settings.log_level, settings.log_format)
    worker = Worker(settings, until_caught_up=until_caught_up)
    try:
        stats = asyncio.run(worker.run())
    except FatalError as exc:
        typer.echo(f"omnisink run: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    if stats.abandoned:
        typer.echo(
            "omnisink run: the shutdown grace period expired; the batch in hand was rolled "
            "back and will be consumed again (OMNISINK_SHUTDOWN_GRACE_S)",
            err=True,
        )
        raise typer.Exit(code=3)


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
