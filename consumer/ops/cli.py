"""``omnisink query`` and ``omnisink maintenance``'s arguments (registered by consumer/cli.py);
the work is in consumer/ops/commands.py. Exit 0 done (an empty result included), 2 bad
arguments, configuration, connection or a database that is not migrated."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any
from uuid import UUID

import typer
from pydantic import TypeAdapter, ValidationError

from consumer.dlq.model import DlqError
from consumer.ops import commands
from consumer.settings import Settings
from handlers.envelope import foreign_id_to_uuid

query_app = typer.Typer(
    name="query",
    help="Read what the sink wrote, as the bridge database guide's query patterns do: trace a "
    "correlation, a namespace's statistics, failed workflows, a session's events, and the "
    "intelligence FSMs' states. A table by default, --json for scripts.",
    no_args_is_help=True,
)

maintenance_app = typer.Typer(
    name="maintenance",
    help="The intelligence schema's maintenance: find stuck workflows and entities, delete "
    "old FSM history and finished workflows (--dry-run counts them first).",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="One JSON value, for scripts.")]


def _settings() -> Settings:
    from consumer.cli import _load_settings  # the one place settings errors are reported

    return _load_settings()


def _run(command: str, work: Coroutine[Any, Any, None]) -> None:
    """Run a command; its :class:`DlqError` (connection, schema) becomes the exit status it
    names, with its message (the URL redacted) on stderr."""
    try:
        asyncio.run(work)
    except DlqError as exc:
        typer.echo(f"omnisink {command}: {exc}", err=True)
        raise typer.Exit(code=exc.exit_code) from None


_UUID = TypeAdapter(UUID)


def _id(value: str, param: str) -> UUID:
    """An id as the sink stores an envelope's: a UUID (the envelope's parser), else the uuid5
    of the text (docs/contract.md section 2)."""
    if not value.strip():
        raise typer.BadParameter("must not be blank", param_hint=param)
    try:
        return _UUID.validate_python(value)
    except ValidationError:
        return foreign_id_to_uuid(value)


# -- query ----------------------------------------------------------------------------------


@query_app.command("trace")
def trace(
    correlation_id: Annotated[
        str,
        typer.Argument(
            metavar="CORRELATION_ID",
            help="A UUID, or the text a producer sent (looked up as its uuid5, as stored).",
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Every workflow of a correlation (steps, transitions) and every event of it, in time order."""
    wanted = _id(correlation_id, "'CORRELATION_ID'")
    settings = _settings()
    _run("query trace", commands.trace(settings, wanted, as_json=as_json))


@query_app.command("namespace")
def namespace(
    name: Annotated[str, typer.Argument(metavar="NS", help="The namespace, exactly.")],
    as_json: JsonOption = False,
) -> None:
    """A namespace's stamps (count, file types, bytes) and its workflows by state."""
    settings = _settings()
    _run("query namespace", commands.namespace(settings, name, as_json=as_json))


@query_app.command("failed")
def failed(
    hours: Annotated[
        int, typer.Option("--hours", min=1, help="Failed in the last this many hours.")
    ] = 24,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Bridge workflows that failed recently, newest first, with their error."""
    settings = _settings()
    _run("query failed", commands.failed(settings, hours, limit, as_json=as_json))


@query_app.command("session")
def session(
    session_id: Annotated[
        str,
        typer.Argument(
            metavar="SESSION_ID",
            help="A UUID, or the text a producer sent (looked up as its uuid5, as stored).",
        ),
    ],
    hours: Annotated[
        int, typer.Option("--hours", min=1, help="Events of the last this many hours.")
    ] = 24,
    as_json: JsonOption = False,
) -> None:
    """A session's events, oldest first, with the time since the one before."""
    wanted = _id(session_id, "'SESSION_ID'")
    settings = _settings()
    _run("query session", commands.session(settings, wanted, hours, as_json=as_json))


@query_app.command("fsm")
def fsm(
    fsm_type: Annotated[
        str | None,
        typer.Option(
            "--type",
            metavar="T",
            help="Only this FSM type (INGESTION, PATTERN_LEARNING, QUALITY_ASSESSMENT; any case).",
        ),
    ] = None,
    days: Annotated[
        int,
        typer.Option("--days", min=1, help="Time in state from transitions of the last N days."),
    ] = 7,
    as_json: JsonOption = False,
) -> None:
    """Intelligence FSM entities per type and state, and the average time spent in each."""
    settings = _settings()
    _run("query fsm", commands.fsm(settings, fsm_type, days, as_json=as_json))


# -- maintenance ------------------------------------------------------------------------------


@maintenance_app.command("stuck")
def stuck(
    hours: Annotated[
        int,
        typer.Option(
            "--hours", min=0, help="Workflows RUNNING without an update for this many hours."
        ),
    ] = 24,
    entity_hours: Annotated[
        int,
        typer.Option(
            "--entity-hours",
            min=0,
            help="Entities in PROCESSING, ASSESSING or MATCHING for this many hours.",
        ),
    ] = 1,
    as_json: JsonOption = False,
) -> None:
    """Workflows stuck RUNNING (find_stuck_workflows) and FSM entities stuck in a state."""
    settings = _settings()
    _run("maintenance stuck", commands.stuck(settings, hours, entity_hours, as_json=as_json))


@maintenance_app.command("cleanup")
def cleanup(
    history_days: Annotated[
        int,
        typer.Option("--history-days", min=1, help="Delete FSM history older than this."),
    ] = 90,
    workflow_days: Annotated[
        int,
        typer.Option(
            "--workflow-days",
            min=1,
            help="Delete COMPLETED or FAILED workflows completed longer ago than this.",
        ),
    ] = 30,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete old FSM history and finished workflows (the seed's cleanup functions)."""
    settings = _settings()
    _run(
        "maintenance cleanup",
        commands.cleanup(settings, history_days, workflow_days, dry_run=dry_run, as_json=as_json),
    )
