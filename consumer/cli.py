"""The ``omnisink`` command line."""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from collections.abc import Callable, Coroutine
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from consumer import __version__
from consumer.dlq import commands
from consumer.dlq.model import DlqError, Filters, parse_since
from consumer.ops import cli as ops_cli
from consumer.replay import cli as replay_cli
from consumer.settings import ConfigurationError, Settings, describe, unknown_variables
from handlers.contract import DEAD_LETTER_KINDS

app = typer.Typer(
    name="omnisink",
    help=(
        "OmniSink: effectively-once Kafka to PostgreSQL sink for OmniNode events. "
        "Every setting is an OMNISINK_* environment variable; `omnisink config` lists them."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit


@app.callback()
def _options(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Options of every command."""


def _load_settings() -> Settings:
    """The settings, or exit 2 saying what is wrong, without a value (a secret stays out of
    the message); an OMNISINK_* variable no setting reads is named on stderr (a typo)."""
    for name, close in unknown_variables(os.environ):
        hint = f" (did you mean {close}?)" if close else ""
        typer.echo(f"omnisink: warning: {name} is not a setting; ignored{hint}", err=True)
    try:
        settings = Settings()
    except ValidationError as exc:
        typer.echo(f"omnisink: invalid configuration:\n{describe(exc)}", err=True)
        raise typer.Exit(code=2) from None
    except (ConfigurationError, SettingsError) as exc:
        # SettingsError: a value pydantic-settings could not parse; it names the field only.
        typer.echo(f"omnisink: invalid configuration: {exc}", err=True)
        raise typer.Exit(code=2) from None
    from consumer import logs

    # Whatever is logged from here on (a library's exception text) is scrubbed of them.
    logs.hide(settings.secret_texts())
    return settings


def _crash(command: str, exc: BaseException, settings: Settings) -> typer.Exit:
    """An error nobody classified: its traceback, scrubbed of every secret; exit 1."""
    text = "".join(traceback.format_exception(exc))
    typer.echo(f"omnisink {command}: unexpected error:\n{settings.scrub(text)}", err=True)
    return typer.Exit(code=1)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def config(
    env: Annotated[
        bool,
        typer.Option(
            "--env",
            help="As a .env file that loads back (pydantic-settings, python-dotenv): values "
            "quoted where needed, unset settings commented out, secrets redacted (***).",
        ),
    ] = False,
) -> None:
    """Print every OMNISINK_* setting with its current value (secrets redacted)."""
    settings = _load_settings()
    if env:
        from consumer.check import dotenv

        typer.echo(dotenv(settings, os.environ), nl=False)
        return
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
def check(
    timeout_s: Annotated[
        float,
        typer.Option(
            "--timeout-s", min=0.1, help="How long each check waits for PostgreSQL or Kafka."
        ),
    ] = 5.0,
) -> None:
    """Check what the sink needs, one line each, changing nothing: the configuration loads,
    PostgreSQL answers and is at the migrations' head, Kafka answers, the subscription matches
    topics, their dead-letter topics exist or may be created. Exit 0 all passed, 1 one failed,
    2 invalid configuration."""
    from consumer import check as checks

    raise typer.Exit(code=checks.main(timeout_s))


@app.command()
def migrate(
    revision: str = typer.Argument("head", help="Target revision (default: head)."),
) -> None:
    """Upgrade the database at OMNISINK_DATABASE_URL to REVISION (default: head)."""
    from consumer import migrate as migrations  # Alembic is only imported when needed
    from consumer.store import database

    settings = _load_settings()
    try:
        # One session first, as the sink opens them: a server that cannot be reached, a
        # login or TLS refused, a missing database is said plainly, before Alembic starts.
        asyncio.run(database.probe(settings))
    except Exception as exc:  # noqa: BLE001 - whatever stops a session is exit 2
        typer.echo(f"omnisink migrate: {database.explain(exc, settings)}", err=True)
        raise typer.Exit(code=2) from None
    try:
        migrations.upgrade(settings.database.url.get_secret_value(), revision)
    except Exception as exc:  # noqa: BLE001 - every error is said, never with a secret
        if not database.is_connection_failure(exc):
            raise _crash("migrate", exc, settings) from None
        cause = database.root_cause(exc)
        typer.echo(f"omnisink migrate: {database.explain(cause, settings)}", err=True)
        raise typer.Exit(code=2) from None
    # Alembic's upgrade never goes down: to a revision older than the database's it does
    # nothing, and says nothing. Say where the database is, and fail if it is not there.
    wanted = migrations.resolve(revision)
    current = asyncio.run(database.revision(settings))
    url = settings.database.redacted_url
    if wanted is not None and current != wanted:
        typer.echo(
            f"omnisink migrate: {url} is at {current or 'none'}, not {revision}: migrate only "
            f"upgrades. To go down, run `alembic downgrade {revision}` with the image's "
            "alembic.ini (OMNISINK_DATABASE_URL names the database).",
            err=True,
        )
        raise typer.Exit(code=1)
    typer.echo(f"omnisink migrate: {url} is at {current or revision}")


@app.command()
def run(
    until_caught_up: bool = typer.Option(
        False,
        "--until-caught-up",
        help="Exit 0 once PostgreSQL holds, for every partition of every subscribed topic, an "
        "offset at or past the end seen at start, whichever member consumed it (backfills, "
        "tests, the demo).",
    ),
    timeout_s: float | None = typer.Option(
        None,
        "--timeout-s",
        min=0,
        help="With --until-caught-up: exit 4 after this many seconds, naming the partitions "
        "still behind and by how much.",
    ),
) -> None:
    """Run the sink: consume the subscribed topics into PostgreSQL until SIGTERM/SIGINT."""
    from consumer import lifecycle, logs
    from consumer.errors import FatalError
    from consumer.worker import Worker

    settings = _load_settings()
    logs.configure(settings.log_level, settings.log_format)
    lifecycle.tune_gc()
    worker = Worker(settings, until_caught_up=until_caught_up, drain_timeout_s=timeout_s)
    try:
        stats = asyncio.run(worker.run())
    except FatalError as exc:
        typer.echo(f"omnisink run: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    except Exception as exc:
        # An error nobody classified: the worker logged it once (`worker.crashed`, with the
        # traceback) and its batch rolled back; the next start consumes that batch again.
        raise typer.Exit(code=1) from exc
    if stats.abandoned:
        typer.echo(
            "omnisink run: the shutdown grace period expired; the batch in hand was rolled "
            "back and will be consumed again (OMNISINK_SHUTDOWN_GRACE_S)",
            err=True,
        )
        raise typer.Exit(code=3)
    if worker.drain is None:
        return
    topics = ", ".join(f"{t} {n:,}" for t, n in sorted(stats.by_topic.items())) or "none"
    if worker.caught_up.is_set():
        typer.echo(f"omnisink run: caught up; records written by this member: {topics}")
        return
    if not worker.drain.expired:
        return  # stopped (SIGTERM) before the drain was done: a graceful stop, exit 0
    behind = worker.drain.behind() if worker.drain.targets is not None else []
    lines = "\n".join(f"  {tp.topic}[{tp.partition}]: {n:,} records behind" for tp, n in behind)
    typer.echo(
        f"omnisink run: not caught up within --timeout-s {timeout_s:g}"
        + (f"; still behind:\n{lines}" if behind else " (the group never assigned partitions)"),
        err=True,
    )
    raise typer.Exit(code=4)


# -- dead letters ----------------------------------------------------------------------------

dlq_app = typer.Typer(
    name="dlq",
    help="Dead letters (omnisink.dead_letters): list them, show one, redrive them to their "
    "original topics once the cause is fixed, or discard them.",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")

# -- replay (consumer/replay/cli.py) ----------------------------------------------------------

app.add_typer(replay_cli.app, name="replay")
app.add_typer(replay_cli.offsets_app, name="offsets")
app.command("produce")(replay_cli.produce)
app.add_typer(ops_cli.query_app, name="query")
app.add_typer(ops_cli.maintenance_app, name="maintenance")

_KINDS = ", ".join(DEAD_LETTER_KINDS)
TopicOption = Annotated[str | None, typer.Option("--topic", help="Only this original topic.")]
KindOption = Annotated[str | None, typer.Option("--kind", help=f"Only this error kind: {_KINDS}.")]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="WHEN",
        help="Failed at or after WHEN: an ISO 8601 timestamp (UTC when it has no offset) or "
        "a duration back from now: 30m, 2h, 7d.",
    ),
]


class StatusChoice(StrEnum):
    pending = "pending"
    redriven = "redriven"
    discarded = "discarded"
    all = "all"


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--since'") from exc


def _kind(value: str | None) -> str | None:
    if value is not None and value not in DEAD_LETTER_KINDS:
        raise typer.BadParameter(f"{value!r} is not one of {_KINDS}", param_hint="'--kind'")
    return value


def _run_dlq(command: str, settings: Settings, work: Coroutine[Any, Any, None]) -> None:
    """Run a dead-letter command; its :class:`DlqError` becomes the exit status it names.
    Either message is scrubbed of every secret (it may quote a driver's or a broker's)."""
    try:
        asyncio.run(work)
    except DlqError as exc:
        typer.echo(f"omnisink dlq {command}: {settings.scrub(str(exc))}", err=True)
        raise typer.Exit(code=exc.exit_code) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # noqa: BLE001 - every error is said, never with a secret
        raise _crash(f"dlq {command}", exc, settings) from None


@dlq_app.command("list")
def dlq_list(
    *,
    topic: TopicOption = None,
    kind: KindOption = None,
    since: SinceOption = None,
    status: Annotated[
        StatusChoice, typer.Option("--status", help="Only dead letters in this status.")
    ] = StatusChoice.pending,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="At most this many, newest first.")
    ] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
) -> None:
    """List dead letters, newest first (pending ones unless --status says otherwise)."""
    filters = Filters(topic=topic, kind=_kind(kind), since=_since(since))
    wanted = None if status is StatusChoice.all else status.value
    settings = _load_settings()
    _run_dlq(
        "list",
        settings,
        commands.list_dead_letters(settings, filters, wanted, limit, as_json=as_json),
    )


@dlq_app.command("show")
def dlq_show(
    dead_letter_id: Annotated[int, typer.Argument(metavar="ID", help="The dead letter's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Show every fact of one dead letter: source, record, headers, error, status."""
    settings = _load_settings()
    _run_dlq("show", settings, commands.show_dead_letter(settings, dead_letter_id, as_json=as_json))


IdsOption = Annotated[
    list[int] | None,
    typer.Option("--id", metavar="ID", help="This dead letter (repeat for more)."),
]
EveryOption = Annotated[
    bool, typer.Option("--all", help="Every pending dead letter (no other filter needed).")
]


def _selection(
    command: str,
    ids: list[int] | None,
    kind: str | None,
    topic: str | None,
    since: str | None,
    *,
    every: bool,
) -> Filters:
    """The pending dead letters ``redrive`` or ``discard`` acts on; exit 2 without a filter
    or ``--all``."""
    filters = Filters(topic=topic, kind=_kind(kind), since=_since(since), ids=tuple(ids or ()))
    if filters.empty and not every:
        typer.echo(
            f"omnisink dlq {command}: say which dead letters: --id, --kind, --topic, --since, "
            "or --all for every pending one (--dry-run to see them first)",
            err=True,
        )
        raise typer.Exit(code=2)
    return filters


DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="List the dead letters selected; change nothing.")
]


def _selected(command: str, work: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """A dead-letter command acting on a selection (redrive, discard): the same options, the
    same refusal without one."""

    def act(
        *,
        ids: IdsOption = None,
        kind: KindOption = None,
        topic: TopicOption = None,
        since: SinceOption = None,
        every: EveryOption = False,
        dry_run: DryRunOption = False,
    ) -> None:
        filters = _selection(command, ids, kind, topic, since, every=every)
        settings = _load_settings()
        _run_dlq(command, settings, work(settings, filters, dry_run=dry_run))

    return act


dlq_app.command(
    "redrive",
    help="Publish pending dead letters again to their original topics and mark them redriven. "
    "Each record keeps its key, value and headers and gains the header omnisink.redrive.of "
    "(the dead letter's id); they are published in id order with acks=all. The sink consumes "
    "them as new records: one that fails again becomes a new dead letter.",
)(_selected("redrive", commands.redrive_dead_letters))
dlq_app.command(
    "discard",
    help="Mark pending dead letters discarded: their records are given up on. They stay in "
    "omnisink.dead_letters (`dlq list --status discarded`) and are never redriven; nothing is "
    "published or deleted.",
)(_selected("discard", commands.discard_dead_letters))


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
