"""``omnisink replay``'s arguments (registered by consumer/cli.py); the work is in
consumer/replay/commands.py."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from consumer.replay import commands
from consumer.replay.plan import Bounds, PlanError, parse_time

_FAMILIES = ", ".join(commands.FAMILIES)

app = typer.Typer(
    name="replay",
    help=(
        "Read a range of offsets again and write it through the sink's batch write, beside the "
        "live daemon: partitions are assigned by hand, the consumer group is never joined and "
        "its offsets never move. Events already in event_logs are skipped unless --reapply. "
        "Resumable by name. Exit 0 done, 1 stopped or failed part-way (--resume NAME goes "
        "on), 2 bad arguments or configuration."
    ),
    invoke_without_command=True,
)


def _run(work: Coroutine[Any, Any, None], command: str = "replay") -> None:
    try:
        asyncio.run(work)
    except commands.ReplayError as exc:
        typer.echo(f"omnisink {command}: {exc}", err=True)
        raise typer.Exit(code=exc.exit_code) from exc


def _settings() -> Any:
    from consumer import logs
    from consumer.cli import _load_settings  # the one place settings errors are reported

    settings = _load_settings()
    # Logs on stderr, so stdout is only the result (--json).
    logs.configure(settings.log_level, settings.log_format)
    return settings


@app.callback()
def replay(
    ctx: typer.Context,
    *,
    topic: Annotated[
        list[str] | None, typer.Option("--topic", help="A topic to read (repeatable).")
    ] = None,
    all_topics: Annotated[
        bool, typer.Option("--all-topics", help="Every topic the daemon's subscription matches.")
    ] = False,
    partition: Annotated[
        list[int] | None,
        typer.Option("--partition", help="Only this partition of each topic (repeatable)."),
    ] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="From the start of each log.")
    ] = False,
    from_offset: Annotated[
        int | None, typer.Option("--from-offset", help="From this offset in each partition.")
    ] = None,
    from_time: Annotated[
        str | None,
        typer.Option(
            "--from-time",
            metavar="ISO8601",
            help="From the first record whose Kafka timestamp is at or after this time "
            "(UTC when it names no offset).",
        ),
    ] = None,
    to_offset: Annotated[
        int | None, typer.Option("--to-offset", help="Up to this offset (exclusive).")
    ] = None,
    to_time: Annotated[
        str | None,
        typer.Option(
            "--to-time",
            metavar="ISO8601",
            help="Up to the first record at or after this time (exclusive).",
        ),
    ] = None,
    reapply: Annotated[
        bool,
        typer.Option(
            "--reapply",
            help="Write the domain rows again from events event_logs already holds (a "
            "backfill after a fix): every family is idempotent and order-tolerant.",
        ),
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", metavar="FAMILY", help=f"With --reapply, only: {_FAMILIES}."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="The replay's name (default: replay-<time>-<4 hex>)."),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option("--resume", metavar="NAME", help="Go on with the replay NAME."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the ranges and record counts; read nothing."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One closing JSON object.")] = False,
) -> None:
    """Replay a range (see `omnisink replay --help`); `omnisink replay list` lists them."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings()
    if resume is not None:
        _run(commands.resume(settings, resume, as_json=as_json))
        return
    try:
        bounds = Bounds(
            from_beginning=from_beginning,
            from_offset=from_offset,
            from_time=parse_time(from_time) if from_time else None,
            to_offset=to_offset,
            to_time=parse_time(to_time) if to_time else None,
        )
        families = commands.families(reapply, only or [])
    except (PlanError, commands.ReplayError) as exc:
        typer.echo(f"omnisink replay: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    _run(
        commands.start(
            settings,
            topics=topic or [],
            all_topics=all_topics,
            partitions=partition or [],
            bounds=bounds,
            reapply=families,
            name=name,
            dry_run=dry_run,
            as_json=as_json,
        )
    )


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list.")] = False,
) -> None:
    """Every replay: its status, ranges and how far it read."""
    _run(commands.list_replays(_settings(), as_json=as_json))


# -- offsets (consumer/replay/offsets.py) ---------------------------------------------------

offsets_app = typer.Typer(
    name="offsets",
    help="Where a consumer group reads from: the offsets PostgreSQL holds (the sink's own), "
    "Kafka's committed offsets (lag tooling), the logs' bounds; reset both together.",
    no_args_is_help=True,
)


@offsets_app.command("show")
def offsets_show(
    group: Annotated[
        str | None, typer.Option("--group", help="The group (default: OMNISINK_GROUP_ID).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list.")] = False,
) -> None:
    """Per partition: PostgreSQL's offset, Kafka's committed offset, log start and end, lag."""
    from consumer.replay import offsets

    _run(offsets.show(_settings(), group, as_json=as_json), "offsets")


@offsets_app.command("reset")
def offsets_reset(
    *,
    group: Annotated[str, typer.Option("--group", help="The group to move.")],
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", help="Only this topic (repeatable; default: every topic)."),
    ] = None,
    to_earliest: Annotated[bool, typer.Option("--to-earliest", help="The log's start.")] = False,
    to_latest: Annotated[bool, typer.Option("--to-latest", help="The log's end.")] = False,
    to_offset: Annotated[int | None, typer.Option("--to-offset", help="This offset.")] = None,
    to_time: Annotated[
        str | None,
        typer.Option(
            "--to-time", metavar="ISO8601", help="The first record at or after this time."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would move.")] = False,
) -> None:
    """Move the group's offsets in PostgreSQL and Kafka together; refused (exit 1, naming
    them) while the group has members."""
    from consumer.replay import offsets

    try:
        target = offsets.Target(
            earliest=to_earliest,
            latest=to_latest,
            offset=to_offset,
            time=parse_time(to_time) if to_time else None,
        )
    except (PlanError, commands.ReplayError) as exc:
        typer.echo(f"omnisink offsets: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    _run(offsets.reset(_settings(), group, topic or [], target, dry_run=dry_run), "offsets")


# -- produce (consumer/replay/produce.py) ---------------------------------------------------


def produce(
    file: Annotated[
        Path, typer.Argument(help="JSON lines: envelopes, or {topic, key, value, headers}.")
    ],
    topic: Annotated[
        str | None, typer.Option("--topic", help="The topic of lines that are envelopes.")
    ] = None,
) -> None:
    """Publish records from a file (an archive restore, a demo), acks=all, keyed as the
    producers key theirs where a line gives no key."""
    from consumer.replay import produce as producing

    _run(producing.produce(_settings(), file, topic), "produce")
