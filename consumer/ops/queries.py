"""The statements of ``omnisink query`` and ``omnisink maintenance``, each written out whole.

Each is a seed's SQL (seed 000 "Query Patterns", seed 003 "Utility Functions", "FSM
Statistics", "Stuck Entities") with its literals made parameters and its names qualified
(``intelligence.`` for seed 003's tables and functions). An optional filter is a parameter
that is NULL when not given (``($1::text IS NULL OR ...)``), never SQL put together in Python.
Where a statement departs from its seed, the comment above it says how and why (and the
package docstring, consumer/ops/__init__.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from consumer.dlq.model import DlqError
from consumer.dlq.queries import connect
from consumer.settings import Settings
from handlers.sql import Sql

Row = dict[str, Any]

# -- query trace: seed 000 "Trace Workflow Execution" -----------------------------------------

# The workflows of a correlation (the seed reads one; a correlation may have several), each
# with its duration, oldest first.
TRACE_WORKFLOWS = Sql(
    """
    SELECT id, workflow_id, correlation_id, session_id, namespace, state,
           started_at, completed_at,
           (EXTRACT(EPOCH FROM (completed_at - started_at)) * 1000)::double precision
               AS duration_ms,
           workflow_steps_executed, stamp_id, file_hash,
           input_data, output_data, error_info, metadata
    FROM workflow_executions
    WHERE correlation_id = $1
    ORDER BY started_at ASC NULLS LAST, completed_at ASC NULLS LAST, id
""",
    name="ops.trace_workflows",
)

# The steps of those workflows, in step order (the seed's), then by start.
TRACE_STEPS = Sql(
    """
    SELECT s.id, s.workflow_id, s.step_order, s.step_name, s.step_type, s.status,
           s.started_at, s.completed_at, s.execution_time_ms, s.input_data, s.output_data
    FROM workflow_steps AS s
    JOIN workflow_executions AS w ON w.id = s.workflow_id
    WHERE w.correlation_id = $1
    ORDER BY s.workflow_id, s.step_order ASC, s.started_at ASC NULLS LAST, s.id
""",
    name="ops.trace_steps",
)

# Their state transitions, in time order (the seed's).
TRACE_TRANSITIONS = Sql(
    """
    SELECT t.id, t.workflow_id, t.from_state, t.to_state, t.transition_at, t.triggered_by,
           t.metadata
    FROM fsm_transitions AS t
    JOIN workflow_executions AS w ON w.id = t.workflow_id
    WHERE w.correlation_id = $1
    ORDER BY t.workflow_id, t.transition_at ASC, t.id
""",
    name="ops.trace_transitions",
)

# Every event of the correlation (seed 000, event_logs: "Query events by correlation_id").
TRACE_EVENTS = Sql(
    """
    SELECT id, created_at, event_type, correlation_id, session_id, payload, metadata
    FROM event_logs
    WHERE correlation_id = $1
    ORDER BY created_at ASC, id
""",
    name="ops.trace_events",
)

# -- query namespace: seed 000 "Get Namespace Statistics" -------------------------------------

# The seed's three aggregates, its jsonb_agg without the NULL of stamps that name no content
# type (COUNT(DISTINCT) already ignores them), and the total_size_bytes its docstring returns:
# the sum of file_metadata.file_size_bytes where it is a JSON number (what the sink stores
# from a stamp's file_size_bytes, docs/contract.md).
NAMESPACE_STAMPS = Sql(
    """
    SELECT COUNT(*) AS total_stamps,
           COUNT(DISTINCT file_metadata->>'content_type') AS unique_file_types,
           COALESCE(
               jsonb_agg(DISTINCT file_metadata->>'content_type')
                   FILTER (WHERE file_metadata->>'content_type' IS NOT NULL),
               '[]'::jsonb
           ) AS file_types,
           COALESCE(
               SUM((file_metadata->>'file_size_bytes')::numeric)
                   FILTER (WHERE jsonb_typeof(file_metadata->'file_size_bytes') = 'number'),
               0
           )::bigint AS total_size_bytes,
           MIN(created_at) AS first_stamp_at,
           MAX(created_at) AS last_stamp_at
    FROM metadata_stamps
    WHERE namespace = $1
""",
    name="ops.namespace_stamps",
)

# The namespace's workflows by state, with their average duration: the docstring's
# avg_processing_time_ms is that of the COMPLETED ones.
NAMESPACE_WORKFLOWS = Sql(
    """
    SELECT state,
           COUNT(*) AS workflows,
           AVG(EXTRACT(EPOCH FROM (completed_at - started_at)) * 1000)::double precision
               AS avg_duration_ms
    FROM workflow_executions
    WHERE namespace = $1
    GROUP BY state
    ORDER BY state
""",
    name="ops.namespace_workflows",
)

# -- query failed: seed 000 "Find Failed Workflows" -------------------------------------------

# Failed in the last $1 hours (when it failed: completed_at, else started_at; the seed filters
# on started_at, which a row built from a lone WORKFLOW_FAILED lacks), newest first, at most
# $2. original_workflow_id is the producer's id when it was not a UUID.
FAILED = Sql(
    """
    SELECT workflow_id,
           correlation_id,
           error_info->>'message' AS error_message,
           error_info->>'code' AS error_code,
           completed_at AS failed_at,
           started_at,
           namespace,
           metadata->>'original_workflow_id' AS original_workflow_id
    FROM workflow_executions
    WHERE state = 'FAILED'
      AND COALESCE(completed_at, started_at) > NOW() - make_interval(hours => $1)
    ORDER BY completed_at DESC NULLS LAST, workflow_id
    LIMIT $2
""",
    name="ops.failed",
)

# -- query session: seed 000 "Query Events by Session" ----------------------------------------

# The seed's timeline, with each event's id and correlation, ordered (and lagged) by time
# then id so that events of one instant keep one order.
SESSION = Sql(
    """
    SELECT id,
           event_type,
           correlation_id,
           created_at,
           (EXTRACT(EPOCH FROM (
               created_at - LAG(created_at) OVER (ORDER BY created_at, id)
           )) * 1000)::double precision AS time_diff_ms,
           payload
    FROM event_logs
    WHERE session_id = $1
      AND created_at > NOW() - make_interval(hours => $2)
    ORDER BY created_at ASC, id
""",
    name="ops.session",
)

# -- query fsm: seed 003 "FSM Statistics" -----------------------------------------------------

# Per (fsm_type, state): the entities in it now (the seed's first query, for every type or
# $1 in any case: types are stored upper case), and the time spent in it: the seed's second
# query grouped by from_state, whose time duration_ms is (package docstring), over successful
# transitions of the last $2 days.
FSM_STATS = Sql(
    """
    WITH in_state AS (
        SELECT fsm_type, current_state AS state, COUNT(*) AS entities
        FROM intelligence.fsm_state
        WHERE ($1::text IS NULL OR fsm_type = upper($1))
        GROUP BY fsm_type, current_state
    ),
    left_state AS (
        SELECT fsm_type, from_state AS state,
               AVG(duration_ms) AS avg_ms_in_state,
               COUNT(*) AS transitions_out
        FROM intelligence.fsm_state_history
        WHERE ($1::text IS NULL OR fsm_type = upper($1))
          AND success = true
          AND from_state IS NOT NULL
          AND duration_ms IS NOT NULL
          AND transitioned_at > NOW() - make_interval(days => $2)
        GROUP BY fsm_type, from_state
    )
    SELECT fsm_type, state,
           COALESCE(in_state.entities, 0) AS entities,
           left_state.avg_ms_in_state,
           COALESCE(left_state.transitions_out, 0) AS transitions_out
    FROM in_state FULL JOIN left_state USING (fsm_type, state)
    ORDER BY fsm_type, state
""",
    name="ops.fsm_stats",
)

# -- maintenance stuck: seed 003 find_stuck_workflows and "Stuck Entities" --------------------

# The seed's function (RUNNING, not updated for $1 hours, longest stuck first), with the
# entity and correlation of each workflow beside it.
STUCK_WORKFLOWS = Sql(
    """
    SELECT s.workflow_id, s.operation_type, s.current_step, s.stuck_duration_hours,
           w.entity_id, w.correlation_id, w.started_at, w.updated_at
    FROM intelligence.find_stuck_workflows($1) AS s
    JOIN intelligence.workflow_executions AS w ON w.workflow_id = s.workflow_id
    ORDER BY w.updated_at ASC, s.workflow_id
""",
    name="ops.stuck_workflows",
)

# The seed's transitional states, in one for longer than $1 hours (the seed's: 1).
STUCK_ENTITIES = Sql(
    """
    SELECT fsm_type, entity_id, current_state, transition_timestamp,
           (EXTRACT(EPOCH FROM (NOW() - transition_timestamp)) / 3600)::double precision
               AS stuck_duration_hours
    FROM intelligence.fsm_state
    WHERE current_state IN ('PROCESSING', 'ASSESSING', 'MATCHING')
      AND transition_timestamp < NOW() - make_interval(hours => $1)
    ORDER BY transition_timestamp ASC, fsm_type, entity_id
""",
    name="ops.stuck_entities",
)

# -- maintenance cleanup: seed 003 cleanup_old_fsm_history, cleanup_completed_workflows -------

# What the two functions would delete, by their own predicates (migrations 015 and 016):
# history older than $1 days, COMPLETED or FAILED workflows completed more than $2 days ago.
CLEANUP_COUNT = Sql(
    """
    SELECT
        (SELECT COUNT(*) FROM intelligence.fsm_state_history
         WHERE transitioned_at < NOW() - make_interval(days => $1)) AS fsm_state_history,
        (SELECT COUNT(*) FROM intelligence.workflow_executions
         WHERE status IN ('COMPLETED', 'FAILED')
           AND completed_at < NOW() - make_interval(days => $2)) AS workflow_executions
""",
    name="ops.cleanup_count",
)

# The seed's functions, in one statement (one transaction); each returns its deleted rows.
CLEANUP = Sql(
    """
    SELECT intelligence.cleanup_old_fsm_history($1) AS fsm_state_history,
           intelligence.cleanup_completed_workflows($2) AS workflow_executions
""",
    name="ops.cleanup",
)


# -- the connection -----------------------------------------------------------------------------


async def decoding(conn: asyncpg.Connection) -> None:
    """jsonb decoded into Python values, uuid into :class:`uuid.UUID`: Python's own, which
    orjson writes (asyncpg's subclass it does not)."""
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )
    await conn.set_type_codec("uuid", encoder=str, decoder=UUID, schema="pg_catalog")


@contextlib.asynccontextmanager
async def connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection (``consumer.dlq.queries.connect``: a failure is a :class:`DlqError`, exit
    2) that decodes jsonb into Python values and uuid into :class:`uuid.UUID`; a database
    without the tables or functions these statements read is a :class:`DlqError` (exit 2)
    saying to migrate it."""
    async with connect(settings) as conn:
        await decoding(conn)
        try:
            yield conn
        except (
            asyncpg.UndefinedTableError,
            asyncpg.UndefinedColumnError,
            asyncpg.UndefinedFunctionError,
            asyncpg.InvalidSchemaNameError,
        ) as exc:
            raise DlqError(
                f"the database at {settings.database.redacted_url} lacks what this command "
                f"reads ({exc}): run `omnisink migrate` first.",
                exit_code=2,
            ) from exc


def _rows(records: list[asyncpg.Record]) -> list[Row]:
    return [dict(record) for record in records]


# -- the queries ----------------------------------------------------------------------------------


async def trace(conn: asyncpg.Connection, correlation_id: UUID) -> Row:
    """The workflows of ``correlation_id`` (each with its ``steps`` and ``transitions``) and its
    ``events``; every list in time order."""
    workflows = _rows(await conn.fetch(TRACE_WORKFLOWS.sql, correlation_id))
    steps = _rows(await conn.fetch(TRACE_STEPS.sql, correlation_id))
    transitions = _rows(await conn.fetch(TRACE_TRANSITIONS.sql, correlation_id))
    events = _rows(await conn.fetch(TRACE_EVENTS.sql, correlation_id))
    for workflow in workflows:
        workflow["steps"] = [s for s in steps if s["workflow_id"] == workflow["id"]]
        workflow["transitions"] = [t for t in transitions if t["workflow_id"] == workflow["id"]]
    return {"correlation_id": correlation_id, "workflows": workflows, "events": events}


async def namespace(conn: asyncpg.Connection, name: str) -> Row:
    """The namespace's stamp statistics and its workflows by state."""
    stamps = await conn.fetchrow(NAMESPACE_STAMPS.sql, name)
    workflows = _rows(await conn.fetch(NAMESPACE_WORKFLOWS.sql, name))
    completed = [w["avg_duration_ms"] for w in workflows if w["state"] == "COMPLETED"]
    return {
        "namespace": name,
        **dict(stamps or {}),
        "avg_processing_time_ms": completed[0] if completed else None,
        "workflows": workflows,
    }


async def failed(conn: asyncpg.Connection, hours: int, limit: int) -> list[Row]:
    """Workflows that failed in the last ``hours``, newest first, at most ``limit``."""
    return _rows(await conn.fetch(FAILED.sql, hours, limit))


async def session_events(conn: asyncpg.Connection, session_id: UUID, hours: int) -> Row:
    """The session's events of the last ``hours`` as the seed's timeline."""
    timeline = _rows(await conn.fetch(SESSION.sql, session_id, hours))
    types = list(dict.fromkeys(e["event_type"] for e in timeline))  # by first appearance
    duration = (
        (timeline[-1]["created_at"] - timeline[0]["created_at"]).total_seconds() * 1000
        if timeline
        else None
    )
    return {
        "session_id": session_id,
        "total_events": len(timeline),
        "event_types": types,
        "timeline": timeline,
        "duration_ms": duration,
    }


async def fsm(conn: asyncpg.Connection, fsm_type: str | None, days: int) -> list[Row]:
    """Per FSM type and state: entities in it now, average time spent in it, transitions out."""
    return _rows(await conn.fetch(FSM_STATS.sql, fsm_type, days))


async def stuck(conn: asyncpg.Connection, hours: int, entity_hours: int) -> Row:
    """Workflows stuck RUNNING for ``hours`` and entities in a transitional state for
    ``entity_hours``."""
    workflows = _rows(await conn.fetch(STUCK_WORKFLOWS.sql, hours))
    entities = _rows(await conn.fetch(STUCK_ENTITIES.sql, entity_hours))
    return {"workflows": workflows, "entities": entities}


async def cleanup(
    conn: asyncpg.Connection, history_days: int, workflow_days: int, *, dry_run: bool
) -> Row:
    """Delete (or, with ``dry_run``, count) what the seed's cleanup functions delete; the
    rows per table."""
    statement = CLEANUP_COUNT if dry_run else CLEANUP
    rows = await conn.fetch(statement.sql, history_days, workflow_days)
    return dict(rows[0])  # a SELECT without FROM: one row
