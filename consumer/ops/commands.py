"""The ``omnisink query`` and ``omnisink maintenance`` commands, from parsed arguments to what
the operator reads: a table by default, one JSON value with ``as_json``.

consumer/ops/cli.py parses the arguments and turns a :class:`~consumer.dlq.model.DlqError`
(connection, schema) into the exit status its ``exit_code`` says; everything in between is
here.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import typer

from consumer.ops import queries, render
from consumer.settings import Settings

Row = dict[str, Any]


def _json(value: Any) -> None:
    typer.echo(render.dumps(value))


def _print(rows: list[Row], columns: list[str], title: str | None = None) -> None:
    render.console().print(render.table(rows, columns, title))


def _hours(n: int) -> str:
    return f"{n} hour{'' if n == 1 else 's'}"


# -- query --------------------------------------------------------------------------------------


async def trace(settings: Settings, correlation_id: UUID, *, as_json: bool) -> None:
    """Every workflow of the correlation, with its steps and transitions, and every event."""
    async with queries.connection(settings) as conn:
        found = await queries.trace(conn, correlation_id)
    if as_json:
        _json(found)
        return
    workflows, events = found["workflows"], found["events"]
    if not workflows and not events:
        typer.echo(f"no workflow or event has correlation id {correlation_id}")
        return
    if workflows:
        _print(
            workflows,
            [
                "workflow_id",
                "state",
                "namespace",
                "started_at",
                "completed_at",
                "duration_ms",
                "workflow_steps_executed",
                "session_id",
            ],
            title=f"workflows of correlation {correlation_id}",
        )
    for workflow in workflows:
        if workflow["steps"]:
            _print(
                workflow["steps"],
                [
                    "step_order",
                    "step_name",
                    "step_type",
                    "status",
                    "started_at",
                    "completed_at",
                    "execution_time_ms",
                ],
                title=f"steps of workflow {workflow['workflow_id']}",
            )
        if workflow["transitions"]:
            _print(
                workflow["transitions"],
                ["transition_at", "from_state", "to_state", "triggered_by"],
                title=f"transitions of workflow {workflow['workflow_id']}",
            )
    if events:
        _print(
            events,
            ["created_at", "event_type", "id", "session_id"],
            title=f"events of correlation {correlation_id}",
        )


async def namespace(settings: Settings, name: str, *, as_json: bool) -> None:
    """The namespace's stamps and workflows."""
    async with queries.connection(settings) as conn:
        stats = await queries.namespace(conn, name)
    if as_json:
        _json(stats)
        return
    _print(
        [stats],
        [
            "total_stamps",
            "unique_file_types",
            "file_types",
            "total_size_bytes",
            "first_stamp_at",
            "last_stamp_at",
            "avg_processing_time_ms",
        ],
        title=f"namespace {name}",
    )
    if stats["workflows"]:
        _print(stats["workflows"], ["state", "workflows", "avg_duration_ms"], "workflows by state")
    else:
        typer.echo(f"no workflow of namespace {name}")


async def failed(settings: Settings, hours: int, limit: int, *, as_json: bool) -> None:
    """Workflows that failed in the last ``hours``, newest first."""
    async with queries.connection(settings) as conn:
        rows = await queries.failed(conn, hours, limit)
    if as_json:
        _json(rows)
        return
    if not rows:
        typer.echo(f"no workflow failed in the last {_hours(hours)}")
        return
    _print(
        rows,
        [
            "failed_at",
            "workflow_id",
            "error_code",
            "error_message",
            "namespace",
            "correlation_id",
            "started_at",
        ],
        title=f"failed in the last {_hours(hours)}, newest first",
    )
    if len(rows) == limit:
        typer.echo(f"(the newest {limit} shown; --limit for more)", err=True)


async def session(settings: Settings, session_id: UUID, hours: int, *, as_json: bool) -> None:
    """The session's events of the last ``hours``, oldest first."""
    async with queries.connection(settings) as conn:
        found = await queries.session_events(conn, session_id, hours)
    if as_json:
        _json(found)
        return
    if not found["timeline"]:
        typer.echo(f"no event of session {session_id} in the last {_hours(hours)}")
        return
    _print(
        found["timeline"],
        ["created_at", "time_diff_ms", "event_type", "correlation_id", "id"],
        title=f"session {session_id}: {found['total_events']} events over "
        f"{render.cell(found['duration_ms'])} ms ({', '.join(found['event_types'])})",
    )


async def fsm(settings: Settings, fsm_type: str | None, days: int, *, as_json: bool) -> None:
    """Entities per FSM type and state, and the average time spent in each state."""
    async with queries.connection(settings) as conn:
        rows = await queries.fsm(conn, fsm_type, days)
    if as_json:
        _json(rows)
        return
    if not rows:
        which = f" of type {fsm_type}" if fsm_type else ""
        typer.echo(f"no FSM state or history{which}")
        return
    _print(
        rows,
        ["fsm_type", "state", "entities", "avg_ms_in_state", "transitions_out"],
        title=f"FSM states (time in state: successful transitions of the last {days} days)",
    )


# -- maintenance ----------------------------------------------------------------------------------


async def stuck(settings: Settings, hours: int, entity_hours: int, *, as_json: bool) -> None:
    """Workflows stuck RUNNING and entities stuck in a transitional state."""
    async with queries.connection(settings) as conn:
        found = await queries.stuck(conn, hours, entity_hours)
    if as_json:
        _json({"hours": hours, "entity_hours": entity_hours, **found})
        return
    if found["workflows"]:
        _print(
            found["workflows"],
            [
                "workflow_id",
                "operation_type",
                "current_step",
                "stuck_duration_hours",
                "entity_id",
                "correlation_id",
                "updated_at",
            ],
            title=f"workflows RUNNING without an update for {_hours(hours)} or more",
        )
    else:
        typer.echo(f"no workflow has been RUNNING without an update for {_hours(hours)}")
    if found["entities"]:
        _print(
            found["entities"],
            [
                "fsm_type",
                "entity_id",
                "current_state",
                "transition_timestamp",
                "stuck_duration_hours",
            ],
            title=f"entities in PROCESSING, ASSESSING or MATCHING for {_hours(entity_hours)} "
            "or more",
        )
    else:
        typer.echo(
            f"no entity has been in PROCESSING, ASSESSING or MATCHING for {_hours(entity_hours)}"
        )


async def cleanup(
    settings: Settings, history_days: int, workflow_days: int, *, dry_run: bool, as_json: bool
) -> None:
    """Delete FSM history older than ``history_days`` and COMPLETED or FAILED workflows
    completed more than ``workflow_days`` ago; with ``dry_run``, count them only."""
    async with queries.connection(settings) as conn:
        counts = await queries.cleanup(conn, history_days, workflow_days, dry_run=dry_run)
    retention = {"fsm_state_history": history_days, "workflow_executions": workflow_days}
    if as_json:
        _json(
            {
                "dry_run": dry_run,
                **{
                    table: {"retention_days": days, "rows": counts[table]}
                    for table, days in retention.items()
                },
            }
        )
        return
    verb = "would delete" if dry_run else "deleted"
    _print(
        [
            {"table": f"intelligence.{table}", "retention_days": days, verb: counts[table]}
            for table, days in retention.items()
        ],
        ["table", "retention_days", verb],
    )
    typer.echo(
        f"omnisink maintenance cleanup: {verb} {counts['fsm_state_history']} FSM history rows "
        f"older than {history_days} days and {counts['workflow_executions']} COMPLETED or "
        f"FAILED workflows completed more than {workflow_days} days ago"
        + ("; dry run: nothing was deleted" if dry_run else "")
    )
