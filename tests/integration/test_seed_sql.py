"""The seed documents' own SQL, run against the migrated schema with sample rows.

Every statement below is copied from one of the two seed documents in tests/fixtures/seeds/
and is checked to appear there verbatim (after collapsing whitespace) by
``test_statement_is_verbatim_from_seed``, so these tests run the seeds' SQL, not a
paraphrase. Each database test starts from a fresh database migrated to head, on every
server of ``migrated_any_database`` (the suite's own PostgreSQL and the local PostgreSQL 15).

The only adaptation: the bridge guide's monitoring and maintenance SQL names its database
literally (``metadata_stamping_dev``); it is run with the test database's actual name
substituted (``_for_database``). The verbatim check compares the statements as written here,
which still carry the seed's name, i.e. with that substitution reversed.

The intelligence seed's SQL is run with ``SET search_path TO intelligence, public`` so its
unqualified names resolve as the seed writes them (``workflow_executions`` is then
intelligence.workflow_executions). The tests' own set-up and checking SQL qualifies names.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from tests.support import BRIDGE_TABLES as BRIDGE_SEED_TABLES
from tests.support import SEEDS_DIR as SEEDS

pytestmark = pytest.mark.integration

BRIDGE_SEED = "bridge_database_guide.txt"
INTELLIGENCE_SEED = "intelligence_schema.txt"

# The database the bridge guide's monitoring SQL names; replaced by the test database's name.
SEED_DATABASE_NAME = "metadata_stamping_dev"

BRIDGE_TABLES = set(BRIDGE_SEED_TABLES)

_SEED_STATEMENTS: list[tuple[str, str, str]] = []  # (seed file, label, statement)


def _seed(seed: str, label: str, sql: str) -> str:
    """Registers a statement copied from ``seed`` for the verbatim check; returns it as is."""
    _SEED_STATEMENTS.append((seed, label, sql))
    return sql


def _bridge(label: str, sql: str) -> str:
    return _seed(BRIDGE_SEED, label, sql)


def _intelligence(label: str, sql: str) -> str:
    return _seed(INTELLIGENCE_SEED, label, sql)


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _for_database(sql: str, database: str) -> str:
    """The one allowed adaptation: the seed's literal database name -> the test database's."""
    assert SEED_DATABASE_NAME in sql
    return sql.replace(SEED_DATABASE_NAME, database)


# --- Bridge guide, "Table Definitions": the Usage Example blocks -------------------------

# 1. workflow_executions
WORKFLOW_INSERT = _bridge(
    "workflow_insert",
    """
    INSERT INTO workflow_executions (
        workflow_id, correlation_id, state, input_data, started_at
    ) VALUES ($1, $2, $3, $4, NOW())
    """,
)
WORKFLOW_UPDATE_STATE = _bridge(
    "workflow_update_state",
    """
    UPDATE workflow_executions
    SET state = $1, output_data = $2, completed_at = NOW()
    WHERE id = $3
    """,
)
WORKFLOWS_BY_CORRELATION = _bridge(
    "workflows_by_correlation",
    """
    SELECT * FROM workflow_executions
    WHERE correlation_id = $1
    ORDER BY started_at DESC
    """,
)

# 2. workflow_steps
STEP_INSERT = _bridge(
    "step_insert",
    """
    INSERT INTO workflow_steps (
        workflow_id, step_name, step_type, step_order,
        input_data, status, started_at
    ) VALUES ($1, $2, $3, $4, $5, $6, NOW())
    """,
)
STEP_COMPLETE = _bridge(
    "step_complete",
    """
    UPDATE workflow_steps
    SET status = $1, output_data = $2,
        completed_at = NOW(), execution_time_ms = $3
    WHERE id = $4
    """,
)
STEP_STATS = _bridge(
    "step_stats",
    """
    SELECT step_name, step_type,
           AVG(execution_time_ms) as avg_time,
           MIN(execution_time_ms) as min_time,
           MAX(execution_time_ms) as max_time,
           COUNT(*) as total_executions
    FROM workflow_steps
    WHERE status = 'COMPLETED'
    GROUP BY step_name, step_type
    ORDER BY avg_time DESC
    """,
)

# 3. fsm_transitions
TRANSITION_INSERT = _bridge(
    "transition_insert",
    """
    INSERT INTO fsm_transitions (
        workflow_id, from_state, to_state, triggered_by, transition_at
    ) VALUES ($1, $2, $3, $4, NOW())
    """,
)
TRANSITION_HISTORY = _bridge(
    "transition_history",
    """
    SELECT from_state, to_state, transition_at, triggered_by
    FROM fsm_transitions
    WHERE workflow_id = $1
    ORDER BY transition_at ASC
    """,
)
TRANSITION_FAILURES = _bridge(
    "transition_failures",
    """
    SELECT from_state, to_state, COUNT(*) as failure_count
    FROM fsm_transitions
    WHERE to_state = 'FAILED'
    GROUP BY from_state, to_state
    ORDER BY failure_count DESC
    LIMIT 10
    """,
)

# 4. bridge_states
BRIDGE_STATE_INSERT = _bridge(
    "bridge_state_insert",
    """
    INSERT INTO bridge_states (
        node_type, correlation_id, state, state_data
    ) VALUES ($1, $2, $3, $4)
    """,
)
BRIDGE_STATE_UPDATE = _bridge(
    "bridge_state_update",
    """
    UPDATE bridge_states
    SET state = $1, state_data = $2, updated_at = NOW()
    WHERE correlation_id = $3 AND node_type = $4
    """,
)
ACTIVE_BRIDGE_STATES = _bridge(
    "active_bridge_states",
    """
    SELECT node_type, state, COUNT(*) as count
    FROM bridge_states
    WHERE state NOT IN ('IDLE', 'COMPLETED')
    GROUP BY node_type, state
    """,
)

# 5. node_registrations
NODE_REGISTER = _bridge(
    "node_register",
    """
    INSERT INTO node_registrations (
        node_id, node_type, node_version, endpoint_url, health_status
    ) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (node_id) DO UPDATE
    SET last_heartbeat = NOW(), health_status = EXCLUDED.health_status
    """,
)
NODE_HEARTBEAT = _bridge(
    "node_heartbeat",
    """
    UPDATE node_registrations
    SET last_heartbeat = NOW(), health_status = $1
    WHERE node_id = $2
    """,
)
HEALTHY_NODES = _bridge(
    "healthy_nodes",
    """
    SELECT node_id, node_type, endpoint_url
    FROM node_registrations
    WHERE health_status = 'HEALTHY'
      AND last_heartbeat > NOW() - INTERVAL '1 minute'
    """,
)

# 6. metadata_stamps
STAMP_INSERT = _bridge(
    "stamp_insert",
    """
    INSERT INTO metadata_stamps (
        stamp_id, file_hash, namespace,
        stamp_data, file_metadata, intelligence_data,
        metadata_version
    ) VALUES ($1, $2, $3, $4, $5, $6, $7)
    """,
)
STAMP_BY_FILE_HASH = _bridge(
    "stamp_by_file_hash",
    """
    SELECT * FROM metadata_stamps
    WHERE file_hash = $1
    """,
)
STAMPS_BY_NAMESPACE = _bridge(
    "stamps_by_namespace",
    """
    SELECT stamp_id, file_hash, created_at
    FROM metadata_stamps
    WHERE namespace = $1
    ORDER BY created_at DESC
    LIMIT 100
    """,
)
SECURITY_STAMPS = _bridge(
    "security_stamps",
    """
    SELECT stamp_id, namespace,
           intelligence_data->'analysis_type' as analysis_type,
           intelligence_data->'confidence_score' as confidence
    FROM metadata_stamps
    WHERE intelligence_data ? 'analysis_type'
      AND intelligence_data->>'analysis_type' = 'security'
    ORDER BY (intelligence_data->>'confidence_score')::float DESC
    LIMIT 50
    """,
)

# 7. event_logs
EVENT_INSERT = _bridge(
    "event_insert",
    """
    INSERT INTO event_logs (
        event_type, correlation_id, session_id, payload
    ) VALUES ($1, $2, $3, $4)
    """,
)
EVENTS_BY_CORRELATION = _bridge(
    "events_by_correlation",
    """
    SELECT event_type, payload, created_at
    FROM event_logs
    WHERE correlation_id = $1
    ORDER BY created_at ASC
    """,
)
SESSION_TIMELINE = _bridge(
    "session_timeline",
    """
    SELECT event_type,
           created_at,
           EXTRACT(EPOCH FROM (created_at - LAG(created_at) OVER (ORDER BY created_at)))
               * 1000 as time_diff_ms
    FROM event_logs
    WHERE session_id = $1
    ORDER BY created_at ASC
    """,
)
FAILED_EVENTS = _bridge(
    "failed_events",
    """
    SELECT event_type, correlation_id, payload
    FROM event_logs
    WHERE payload ? 'error'
      AND event_type LIKE '%_FAILED'
    ORDER BY created_at DESC
    LIMIT 100
    """,
)

# --- Bridge guide, "Query Patterns" ----------------------------------------------------

TRACE_WORKFLOW = _bridge(
    "trace_workflow",
    """
    SELECT *,
           EXTRACT(EPOCH FROM (completed_at - started_at)) * 1000 as duration_ms
    FROM workflow_executions
    WHERE correlation_id = $1
    """,
)
TRACE_STEPS = _bridge(
    "trace_steps",
    """
    SELECT * FROM workflow_steps
    WHERE workflow_id = $1
    ORDER BY step_order ASC
    """,
)
TRACE_TRANSITIONS = _bridge(
    "trace_transitions",
    """
    SELECT * FROM fsm_transitions
    WHERE workflow_id = $1
    ORDER BY transition_at ASC
    """,
)
NAMESPACE_STATS = _bridge(
    "namespace_stats",
    """
    SELECT COUNT(*) as total_stamps,
           COUNT(DISTINCT file_metadata->>'content_type') as unique_file_types,
           jsonb_agg(DISTINCT file_metadata->>'content_type') as file_types
    FROM metadata_stamps
    WHERE namespace = $1
    """,
)
FAILED_WORKFLOWS = _bridge(
    "find_failed_workflows",
    """
    SELECT workflow_id,
           correlation_id,
           error_info->>'message' as error_message,
           error_info->>'code' as error_code,
           completed_at as failed_at
    FROM workflow_executions
    WHERE state = 'FAILED'
      AND started_at > NOW() - make_interval(hours => $1)
    ORDER BY completed_at DESC
    LIMIT $2
    """,
)
SESSION_EVENTS = _bridge(
    "get_session_events",
    """
    SELECT event_type,
           payload,
           created_at,
           EXTRACT(EPOCH FROM (
               created_at - LAG(created_at) OVER (ORDER BY created_at)
           )) * 1000 as time_diff_ms
    FROM event_logs
    WHERE session_id = $1
      AND created_at > NOW() - make_interval(hours => $2)
    ORDER BY created_at ASC
    """,
)

# --- Bridge guide, "Monitoring and Maintenance" (run via _for_database where named) -------

DATABASE_SIZE = _bridge(
    "database_size", "SELECT pg_size_pretty(pg_database_size('metadata_stamping_dev'));"
)
TABLE_SIZES = _bridge(
    "table_sizes",
    """
    SELECT schemaname,
           tablename,
           pg_size_pretty(pg_total_relation_size(schemaname||'.'||tablename)) AS size
    FROM pg_tables
    WHERE schemaname = 'public'
    ORDER BY pg_total_relation_size(schemaname||'.'||tablename) DESC;
    """,
)
INDEX_USAGE = _bridge(
    "index_usage",
    """
    SELECT schemaname,
           tablename,
           indexname,
           idx_scan,
           idx_tup_read,
           idx_tup_fetch
    FROM pg_stat_user_indexes
    ORDER BY idx_scan ASC;
    """,
)
CONNECTION_COUNT = _bridge(
    "connection_count",
    """
    SELECT COUNT(*) as connections,
           state
    FROM pg_stat_activity
    WHERE datname = 'metadata_stamping_dev'
    GROUP BY state;
    """,
)
SLOW_QUERIES = _bridge(
    "slow_queries",
    """
    SELECT pid,
           now() - query_start AS duration,
           query,
           state
    FROM pg_stat_activity
    WHERE (now() - query_start) > interval '5 seconds'
      AND state = 'active';
    """,
)
VACUUM_ANALYZE_DATABASE = _bridge("vacuum_analyze", "VACUUM ANALYZE;")
REINDEX_DATABASE = _bridge("reindex_database", "REINDEX DATABASE metadata_stamping_dev;")
ANALYZE_DATABASE = _bridge("analyze", "ANALYZE;")
BLOAT_CHECK = _bridge(
    "bloat_check",
    """
    SELECT schemaname, tablename,
           pg_size_pretty(pg_total_relation_size(schemaname||'.'||tablename)) as total_size,
           round(100 * pg_relation_size(schemaname||'.'||tablename)
                 / pg_total_relation_size(schemaname||'.'||tablename)) as table_percent
    FROM pg_tables
    WHERE schemaname = 'public'
    ORDER BY pg_total_relation_size(schemaname||'.'||tablename) DESC;
    """,
)

# --- Intelligence schema ------------------------------------------------------------------

CLEANUP_OLD_FSM_HISTORY = _intelligence(
    "cleanup_old_fsm_history", "SELECT cleanup_old_fsm_history(90);"
)
CLEANUP_COMPLETED_WORKFLOWS = _intelligence(
    "cleanup_completed_workflows", "SELECT cleanup_completed_workflows(30);"
)
FIND_STUCK_WORKFLOWS = _intelligence(
    "find_stuck_workflows", "SELECT * FROM find_stuck_workflows(24);"
)
ACQUIRE_LEASE = _intelligence(
    "acquire_lease",
    """
    UPDATE fsm_state
    SET lease_id = 'lease_123',
        lease_epoch = 1,
        lease_expires_at = NOW() + INTERVAL '5 minutes'
    WHERE fsm_type = 'INGESTION'
      AND entity_id = 'doc_123'
      AND (lease_id IS NULL OR lease_expires_at < NOW());
    """,
)
RELEASE_LEASE = _intelligence(
    "release_lease",
    """
    UPDATE fsm_state
    SET lease_id = NULL,
        lease_epoch = NULL,
        lease_expires_at = NULL
    WHERE fsm_type = 'INGESTION'
      AND entity_id = 'doc_123'
      AND lease_id = 'lease_123'
      AND lease_epoch = 1;
    """,
)
CURRENT_STATE = _intelligence(
    "current_state",
    """
    SELECT current_state, metadata
    FROM fsm_state
    WHERE fsm_type = 'INGESTION'
      AND entity_id = 'doc_123';
    """,
)
STATE_HISTORY = _intelligence(
    "state_history",
    """
    SELECT from_state, to_state, action, transitioned_at, duration_ms
    FROM fsm_state_history
    WHERE fsm_type = 'INGESTION'
      AND entity_id = 'doc_123'
    ORDER BY transitioned_at DESC;
    """,
)
ACTIVE_WORKFLOWS = _intelligence(
    "active_workflows",
    """
    SELECT workflow_id, operation_type, current_step, started_at
    FROM workflow_executions
    WHERE status = 'RUNNING'
    ORDER BY started_at DESC;
    """,
)
ENTITIES_BY_STATE = _intelligence(
    "entities_by_state",
    """
    SELECT current_state, COUNT(*)
    FROM fsm_state
    WHERE fsm_type = 'INGESTION'
    GROUP BY current_state;
    """,
)
AVERAGE_TIME_IN_STATE = _intelligence(
    "average_time_in_state",
    """
    SELECT
        to_state,
        AVG(duration_ms) as avg_duration_ms,
        COUNT(*) as transition_count
    FROM fsm_state_history
    WHERE fsm_type = 'PATTERN_LEARNING'
      AND success = true
      AND transitioned_at > NOW() - INTERVAL '7 days'
    GROUP BY to_state;
    """,
)
VACUUM_FSM_STATE = _intelligence("vacuum_fsm_state", "VACUUM ANALYZE fsm_state;")
VACUUM_FSM_STATE_HISTORY = _intelligence(
    "vacuum_fsm_state_history", "VACUUM ANALYZE fsm_state_history;"
)
VACUUM_WORKFLOW_EXECUTIONS = _intelligence(
    "vacuum_workflow_executions", "VACUUM ANALYZE workflow_executions;"
)
EXPIRED_LEASES = _intelligence(
    "expired_leases",
    """
    SELECT * FROM fsm_state
    WHERE lease_expires_at < NOW()
      AND lease_id IS NOT NULL;
    """,
)
CLEAR_EXPIRED_LEASES = _intelligence(
    "clear_expired_leases",
    """
    UPDATE fsm_state
    SET lease_id = NULL, lease_epoch = NULL, lease_expires_at = NULL
    WHERE lease_expires_at < NOW();
    """,
)
STUCK_ENTITIES = _intelligence(
    "stuck_entities",
    """
    SELECT fsm_type, entity_id, current_state, transition_timestamp
    FROM fsm_state
    WHERE current_state IN ('PROCESSING', 'ASSESSING', 'MATCHING')
      AND transition_timestamp < NOW() - INTERVAL '1 hour';
    """,
)


# --- The verbatim check -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "sql"),
    [
        pytest.param(seed, sql, id=f"{seed.split('_')[0]}-{label}")
        for seed, label, sql in _SEED_STATEMENTS
    ],
)
def test_statement_is_verbatim_from_seed(seed: str, sql: str) -> None:
    seed_text = _normalise((SEEDS / seed).read_text(encoding="utf-8"))
    assert _normalise(sql) in seed_text


def test_every_seed_statement_is_registered_once() -> None:
    labels = [label for _, label, _ in _SEED_STATEMENTS]
    assert len(labels) == len(set(labels))
    assert len(_SEED_STATEMENTS) == 54


# --- Fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
async def conn(migrated_any_database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(migrated_any_database)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def intel(conn: asyncpg.Connection) -> asyncpg.Connection:
    """A connection on which the intelligence seed's unqualified names resolve."""
    await conn.execute("SET search_path TO intelligence, public")
    return conn


def _now() -> datetime:
    return datetime.now(UTC)


async def _start_workflow(
    conn: asyncpg.Connection,
    correlation_id: uuid.UUID,
    state: str = "PENDING",
    input_data: dict[str, Any] | None = None,
) -> tuple[uuid.UUID, uuid.UUID]:
    """Inserts a workflow with the seed's INSERT; returns (workflow_id, row id)."""
    workflow_id = uuid.uuid4()
    status = await conn.execute(
        WORKFLOW_INSERT, workflow_id, correlation_id, state, json.dumps(input_data or {})
    )
    assert status == "INSERT 0 1"
    execution_id = await conn.fetchval(
        "SELECT id FROM workflow_executions WHERE workflow_id = $1", workflow_id
    )
    return workflow_id, execution_id


async def _pin_workflow_times(
    conn: asyncpg.Connection,
    execution_id: uuid.UUID,
    started_at: datetime,
    completed_at: datetime | None,
    error_info: dict[str, Any] | None = None,
) -> None:
    # The seed's INSERT/UPDATE stamp NOW(); pin the times (and error details) to known values.
    status = await conn.execute(
        "UPDATE workflow_executions SET started_at = $2, completed_at = $3,"
        " error_info = COALESCE($4::jsonb, error_info) WHERE id = $1",
        execution_id,
        started_at,
        completed_at,
        None if error_info is None else json.dumps(error_info),
    )
    assert status == "UPDATE 1"


async def _add_step(
    conn: asyncpg.Connection,
    execution_id: uuid.UUID,
    name: str,
    step_type: str,
    order: int,
) -> uuid.UUID:
    status = await conn.execute(
        STEP_INSERT, execution_id, name, step_type, order, json.dumps({"step": name}), "PENDING"
    )
    assert status == "INSERT 0 1"
    return await conn.fetchval(
        "SELECT id FROM workflow_steps WHERE workflow_id = $1 AND step_order = $2",
        execution_id,
        order,
    )


async def _log_event(
    conn: asyncpg.Connection,
    event_type: str,
    correlation_id: uuid.UUID | None,
    session_id: uuid.UUID | None,
    payload: dict[str, Any],
    *,
    created_at: datetime | None = None,
) -> str:
    """Inserts an event with the seed's INSERT, then pins created_at (the seed leaves it
    to its NOW() default) so the gaps between events are known. Returns the event id."""
    event_id = str(uuid.uuid4())
    body = {"event_id": event_id, **payload}
    status = await conn.execute(
        EVENT_INSERT, event_type, correlation_id, session_id, json.dumps(body)
    )
    assert status == "INSERT 0 1"
    if created_at is not None:
        status = await conn.execute(
            "UPDATE event_logs SET created_at = $2 WHERE payload->>'event_id' = $1",
            event_id,
            created_at,
        )
        assert status == "UPDATE 1"
    return event_id


async def _walk_fsm(
    conn: asyncpg.Connection,
    fsm_type: str,
    entity_id: str,
    steps: list[tuple[str, str, datetime]],
    correlation_id: str,
) -> None:
    """Inserts an intelligence FSM in its first (state, action, at), then moves it through
    the others, the way the reducer does: new current_state, transition time and metadata."""
    (state, action, at), *rest = steps
    await conn.execute(
        "INSERT INTO intelligence.fsm_state"
        " (fsm_type, entity_id, current_state, transition_timestamp, metadata)"
        " VALUES ($1, $2, $3, $4, $5)",
        fsm_type,
        entity_id,
        state,
        at,
        json.dumps({"last_action": action, "correlation_id": correlation_id}),
    )
    for state, action, at in rest:
        status = await conn.execute(
            "UPDATE intelligence.fsm_state SET previous_state = current_state,"
            " current_state = $3, transition_timestamp = $4, metadata = $5"
            " WHERE fsm_type = $1 AND entity_id = $2",
            fsm_type,
            entity_id,
            state,
            at,
            json.dumps({"last_action": action, "correlation_id": correlation_id}),
        )
        assert status == "UPDATE 1"


def _ms(delta: timedelta) -> float:
    return delta / timedelta(milliseconds=1)


# --- Bridge tables ------------------------------------------------------------------------


async def test_workflow_usage_examples(conn: asyncpg.Connection) -> None:
    """Sections 1-3: workflow_executions, workflow_steps and fsm_transitions examples."""
    correlation_id = uuid.uuid4()

    # workflow_executions: insert, update state, query by correlation_id.
    first_wf, first_id = await _start_workflow(
        conn, correlation_id, input_data={"file_path": "/docs/readme.md"}
    )
    row = await conn.fetchrow("SELECT * FROM workflow_executions WHERE id = $1", first_id)
    assert row["state"] == "PENDING"
    assert json.loads(row["input_data"]) == {"file_path": "/docs/readme.md"}
    assert json.loads(row["output_data"]) == {}
    assert row["completed_at"] is None

    status = await conn.execute(
        WORKFLOW_UPDATE_STATE, "COMPLETED", json.dumps({"stamp_id": "stamp_abc"}), first_id
    )
    assert status == "UPDATE 1"

    second_wf, second_id = await _start_workflow(conn, correlation_id)
    await _start_workflow(conn, uuid.uuid4())  # another correlation: not returned

    workflows = await conn.fetch(WORKFLOWS_BY_CORRELATION, correlation_id)
    assert [w["workflow_id"] for w in workflows] == [second_wf, first_wf]
    assert workflows[0]["started_at"] > workflows[1]["started_at"]
    completed = workflows[1]
    assert completed["state"] == "COMPLETED"
    assert json.loads(completed["output_data"]) == {"stamp_id": "stamp_abc"}
    assert completed["completed_at"] >= completed["started_at"]
    assert workflows[0]["state"] == "PENDING"
    assert workflows[0]["completed_at"] is None

    # workflow_steps: insert, complete with timing, step performance statistics.
    timings = [
        (first_id, "validate_input", "validation", 12),
        (first_id, "generate_hash", "compute", 150),
        (second_id, "validate_input", "validation", 20),
        (second_id, "generate_hash", "compute", 250),
        (second_id, "validate_input", "validation", 31),
    ]
    for order, (execution_id, name, step_type, ms) in enumerate(timings, start=1):
        step_id = await _add_step(conn, execution_id, name, step_type, order)
        status = await conn.execute(
            STEP_COMPLETE, "COMPLETED", json.dumps({"ok": True}), ms, step_id
        )
        assert status == "UPDATE 1"
    failed_step = await _add_step(conn, second_id, "persist_stamp", "effect", 10)
    await conn.execute(STEP_COMPLETE, "FAILED", json.dumps({"error": "db down"}), 9000, failed_step)
    await _add_step(conn, second_id, "publish_event", "effect", 11)  # still PENDING

    step = await conn.fetchrow(
        "SELECT * FROM workflow_steps WHERE workflow_id = $1 AND step_order = 1", first_id
    )
    assert step["status"] == "COMPLETED"
    assert step["execution_time_ms"] == 12
    assert step["completed_at"] >= step["started_at"]
    assert json.loads(step["input_data"]) == {"step": "validate_input"}
    assert json.loads(step["output_data"]) == {"ok": True}

    stats = await conn.fetch(STEP_STATS)
    assert [tuple(s.values()) for s in stats] == [
        ("generate_hash", "compute", Decimal(200), 150, 250, 2),
        ("validate_input", "validation", Decimal(21), 12, 31, 3),
    ]

    # fsm_transitions: record, history in order, failure analysis.
    for from_state, to_state, by in [
        ("PENDING", "PROCESSING", "start_workflow"),
        ("PROCESSING", "COMPLETED", "complete_workflow"),
    ]:
        status = await conn.execute(TRANSITION_INSERT, first_id, from_state, to_state, by)
        assert status == "INSERT 0 1"
    history = await conn.fetch(TRANSITION_HISTORY, first_id)
    assert [(t["from_state"], t["to_state"], t["triggered_by"]) for t in history] == [
        ("PENDING", "PROCESSING", "start_workflow"),
        ("PROCESSING", "COMPLETED", "complete_workflow"),
    ]
    assert history[0]["transition_at"] < history[1]["transition_at"]
    assert await conn.fetch(TRANSITION_HISTORY, uuid.uuid4()) == []

    for from_state in ["PROCESSING", "PROCESSING", "PENDING", "PROCESSING"]:
        _, failing_id = await _start_workflow(conn, uuid.uuid4())
        await conn.execute(TRANSITION_INSERT, failing_id, from_state, "FAILED", "error_handler")
    failures = await conn.fetch(TRANSITION_FAILURES)
    assert [tuple(f.values()) for f in failures] == [
        ("PROCESSING", "FAILED", 3),
        ("PENDING", "FAILED", 1),
    ]

    # The foreign keys hold: a step or transition of an unknown workflow is refused.
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await conn.execute(TRANSITION_INSERT, uuid.uuid4(), "PENDING", "PROCESSING", "x")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await conn.execute(STEP_INSERT, uuid.uuid4(), "s", "validation", 1, "{}", "PENDING")


async def test_bridge_states_and_node_registrations(conn: asyncpg.Connection) -> None:
    """Sections 4-5: bridge_states and node_registrations examples."""
    shared, idle, aggregating, done = (uuid.uuid4() for _ in range(4))
    for node_type, correlation_id, state, data in [
        ("REDUCER", shared, "AGGREGATING", {"items": 3}),
        ("ORCHESTRATOR", shared, "PROCESSING", {"step": "hash"}),
        ("REDUCER", idle, "IDLE", {}),
        ("REDUCER", aggregating, "AGGREGATING", {"items": 1}),
        ("REGISTRY", done, "COMPLETED", {}),
    ]:
        status = await conn.execute(
            BRIDGE_STATE_INSERT, node_type, correlation_id, state, json.dumps(data)
        )
        assert status == "INSERT 0 1"

    status = await conn.execute(
        BRIDGE_STATE_UPDATE, "PERSISTING", json.dumps({"items": 5}), shared, "REDUCER"
    )
    assert status == "UPDATE 1"
    updated = await conn.fetchrow(
        "SELECT * FROM bridge_states WHERE correlation_id = $1 AND node_type = 'REDUCER'", shared
    )
    assert updated["state"] == "PERSISTING"
    assert json.loads(updated["state_data"]) == {"items": 5}
    assert updated["updated_at"] > updated["created_at"]
    untouched = await conn.fetchrow(
        "SELECT * FROM bridge_states WHERE correlation_id = $1 AND node_type = 'ORCHESTRATOR'",
        shared,
    )
    assert untouched["state"] == "PROCESSING"

    active = await conn.fetch(ACTIVE_BRIDGE_STATES)
    assert {(a["node_type"], a["state"]): a["count"] for a in active} == {
        ("REDUCER", "PERSISTING"): 1,
        ("REDUCER", "AGGREGATING"): 1,
        ("ORCHESTRATOR", "PROCESSING"): 1,
    }

    # node_registrations: register (upsert), heartbeat, discover healthy nodes.
    nodes = {name: uuid.uuid4() for name in ["orch", "degraded", "unhealthy", "stale", "revived"]}

    async def register(name: str, node_type: str, url: str, health: str) -> None:
        status = await conn.execute(NODE_REGISTER, nodes[name], node_type, "1.0.0", url, health)
        assert status == "INSERT 0 1"

    async def heartbeat(name: str, health: str) -> None:
        assert await conn.execute(NODE_HEARTBEAT, health, nodes[name]) == "UPDATE 1"

    async def age_heartbeat(name: str, minutes: int) -> None:
        await conn.execute(
            "UPDATE node_registrations SET last_heartbeat = NOW() - make_interval(mins => $2)"
            " WHERE node_id = $1",
            nodes[name],
            minutes,
        )

    await register("orch", "ORCHESTRATOR", "http://orchestrator:8080", "HEALTHY")
    await register("degraded", "REDUCER", "http://reducer:8081", "HEALTHY")
    await heartbeat("degraded", "DEGRADED")
    await register("unhealthy", "REGISTRY", "http://registry:8082", "HEALTHY")
    await age_heartbeat("unhealthy", 10)
    await register("unhealthy", "REGISTRY", "http://registry:8082", "UNHEALTHY")  # conflict
    await register("stale", "REDUCER", "http://reducer-2:8081", "HEALTHY")
    await age_heartbeat("stale", 5)
    await register("revived", "REDUCER", "http://reducer-3:8081", "DEGRADED")
    await heartbeat("revived", "HEALTHY")

    assert await conn.fetchval("SELECT COUNT(*) FROM node_registrations") == 5
    re_registered = await conn.fetchrow(
        "SELECT health_status, NOW() - last_heartbeat AS age FROM node_registrations"
        " WHERE node_id = $1",
        nodes["unhealthy"],
    )
    assert re_registered["health_status"] == "UNHEALTHY"
    assert re_registered["age"] < timedelta(minutes=1)  # ON CONFLICT refreshed the heartbeat

    healthy = await conn.fetch(HEALTHY_NODES)
    assert {(h["node_id"], h["node_type"], h["endpoint_url"]) for h in healthy} == {
        (nodes["orch"], "ORCHESTRATOR", "http://orchestrator:8080"),
        (nodes["revived"], "REDUCER", "http://reducer-3:8081"),
    }

    await heartbeat("stale", "HEALTHY")  # a fresh heartbeat brings the stale node back
    healthy = await conn.fetch(HEALTHY_NODES)
    assert {h["node_id"] for h in healthy} == {nodes["orch"], nodes["revived"], nodes["stale"]}


async def test_stamps_and_events(conn: asyncpg.Connection) -> None:
    """Sections 6-7: metadata_stamps and event_logs examples."""
    base = _now() - timedelta(hours=1)
    stamps = [
        # stamp_id, namespace, content_type, intelligence_data
        (
            "stamp_sec_low",
            "omniclaude.docs",
            "text/markdown",
            {"analysis_type": "security", "confidence_score": 0.72},
        ),
        (
            "stamp_sec_high",
            "omniclaude.code",
            "text/x-python",
            {"analysis_type": "security", "confidence_score": 0.95},
        ),
        (
            "stamp_quality",
            "omniclaude.docs",
            "text/markdown",
            {"analysis_type": "quality", "confidence_score": 0.99},
        ),
        ("stamp_plain", "omniclaude.docs", "application/pdf", {}),
        ("stamp_score_only", "omniclaude.docs", "text/plain", {"confidence_score": 0.5}),
    ]
    hashes = {}
    for minutes, (stamp_id, namespace, content_type, intelligence) in enumerate(stamps):
        file_hash = hashlib.sha256(stamp_id.encode()).hexdigest()
        hashes[stamp_id] = file_hash
        stamp_data = {"stamp_id": stamp_id, "file_hash": file_hash, "namespace": namespace}
        file_metadata = {"content_type": content_type, "size_bytes": 1024 * (minutes + 1)}
        status = await conn.execute(
            STAMP_INSERT,
            stamp_id,
            file_hash,
            namespace,
            json.dumps(stamp_data),
            json.dumps(file_metadata),
            json.dumps(intelligence),
            "0.1",
        )
        assert status == "INSERT 0 1"
        # created_at defaults to NOW(); pin it so later stamps are strictly newer.
        await conn.execute(
            "UPDATE metadata_stamps SET created_at = $2 WHERE stamp_id = $1",
            stamp_id,
            base + timedelta(minutes=minutes),
        )

    stamp = await conn.fetchrow(STAMP_BY_FILE_HASH, hashes["stamp_quality"])
    assert stamp["stamp_id"] == "stamp_quality"
    assert stamp["namespace"] == "omniclaude.docs"
    assert json.loads(stamp["stamp_data"])["file_hash"] == hashes["stamp_quality"]
    assert json.loads(stamp["file_metadata"]) == {
        "content_type": "text/markdown",
        "size_bytes": 3072,
    }
    assert json.loads(stamp["intelligence_data"])["analysis_type"] == "quality"
    assert stamp["metadata_version"] == "0.1"
    assert await conn.fetchrow(STAMP_BY_FILE_HASH, "0" * 64) is None

    docs = await conn.fetch(STAMPS_BY_NAMESPACE, "omniclaude.docs")
    assert [d["stamp_id"] for d in docs] == [
        "stamp_score_only",
        "stamp_plain",
        "stamp_quality",
        "stamp_sec_low",
    ]
    assert docs[0]["file_hash"] == hashes["stamp_score_only"]
    assert docs[0]["created_at"] == base + timedelta(minutes=4)

    security = await conn.fetch(SECURITY_STAMPS)
    assert [
        (s["stamp_id"], s["namespace"], json.loads(s["analysis_type"]), json.loads(s["confidence"]))
        for s in security
    ] == [
        ("stamp_sec_high", "omniclaude.code", "security", 0.95),
        ("stamp_sec_low", "omniclaude.docs", "security", 0.72),
    ]

    # The schema's unique keys hold for the seed's INSERT.
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            STAMP_INSERT, "stamp_other", hashes["stamp_plain"], "ns", "{}", "{}", "{}", "0.1"
        )

    # event_logs: insert, query by correlation_id, failed events via the payload GIN index.
    correlation_id = uuid.uuid4()
    other = uuid.uuid4()
    events = [
        ("WORKFLOW_STARTED", correlation_id, {"file": "a.md"}),
        ("STAMP_CREATED", correlation_id, {"stamp_id": "stamp_sec_low"}),
        ("STAMP_FAILED", other, {"error": "hash mismatch"}),
        ("WORKFLOW_STARTED", other, {"error": None, "note": "error key, not a failure type"}),
        ("WORKFLOW_FAILED", other, {"reason": "no error key"}),
        ("WORKFLOW_FAILED", correlation_id, {"error": "timeout", "step": "persist"}),
        ("VALIDATION_FAILED", None, {"error": "bad schema"}),
    ]
    for seconds, (event_type, event_correlation, payload) in enumerate(events):
        await _log_event(
            conn,
            event_type,
            event_correlation,
            None,
            payload,
            created_at=base + timedelta(seconds=seconds),
        )

    by_correlation = await conn.fetch(EVENTS_BY_CORRELATION, correlation_id)
    assert [e["event_type"] for e in by_correlation] == [
        "WORKFLOW_STARTED",
        "STAMP_CREATED",
        "WORKFLOW_FAILED",
    ]
    assert json.loads(by_correlation[1]["payload"])["stamp_id"] == "stamp_sec_low"
    assert by_correlation[2]["created_at"] == base + timedelta(seconds=5)

    failed = await conn.fetch(FAILED_EVENTS)
    assert [
        (f["event_type"], f["correlation_id"], json.loads(f["payload"])["error"]) for f in failed
    ] == [
        ("VALIDATION_FAILED", None, "bad schema"),
        ("WORKFLOW_FAILED", correlation_id, "timeout"),
        ("STAMP_FAILED", other, "hash mismatch"),
    ]


async def test_query_patterns(conn: asyncpg.Connection) -> None:
    """The guide's "Query Patterns": trace_workflow, get_namespace_stats, find_failed_workflows and
    get_session_events (with section 7's session timeline)."""
    now = _now()

    # trace_workflow
    correlation_id = uuid.uuid4()
    workflow_id, execution_id = await _start_workflow(
        conn, correlation_id, input_data={"file_path": "/docs/guide.md"}
    )
    for order, name, step_type in [
        (3, "persist_stamp", "effect"),
        (1, "validate_input", "validation"),
        (2, "generate_hash", "compute"),
    ]:
        await _add_step(conn, execution_id, name, step_type, order)
    for from_state, to_state, by in [
        ("PROCESSING", "COMPLETED", "complete_workflow"),
        ("PENDING", "PROCESSING", "start_workflow"),
    ]:
        await conn.execute(TRANSITION_INSERT, execution_id, from_state, to_state, by)
    await conn.execute(
        WORKFLOW_UPDATE_STATE, "COMPLETED", json.dumps({"stamp_id": "stamp_1"}), execution_id
    )
    started = datetime(2025, 10, 15, 12, 0, tzinfo=UTC)
    completed = started + timedelta(milliseconds=1234.5)
    await _pin_workflow_times(conn, execution_id, started, completed)
    # Transitions inserted out of order; pin their times so ORDER BY transition_at matters.
    for to_state, at in [("PROCESSING", started), ("COMPLETED", completed)]:
        await conn.execute(
            "UPDATE fsm_transitions SET transition_at = $3"
            " WHERE workflow_id = $1 AND to_state = $2",
            execution_id,
            to_state,
            at,
        )
    _, distractor = await _start_workflow(conn, uuid.uuid4())
    await _add_step(conn, distractor, "validate_input", "validation", 1)
    await conn.execute(TRANSITION_INSERT, distractor, "PENDING", "PROCESSING", "start_workflow")

    workflow = await conn.fetchrow(TRACE_WORKFLOW, correlation_id)
    assert workflow["id"] == execution_id
    assert workflow["workflow_id"] == workflow_id
    assert workflow["state"] == "COMPLETED"
    assert json.loads(workflow["output_data"]) == {"stamp_id": "stamp_1"}
    assert workflow["duration_ms"] == Decimal("1234.5")
    assert float(workflow["duration_ms"]) == pytest.approx(
        _ms(workflow["completed_at"] - workflow["started_at"])
    )
    steps = await conn.fetch(TRACE_STEPS, workflow["id"])
    assert [(s["step_order"], s["step_name"]) for s in steps] == [
        (1, "validate_input"),
        (2, "generate_hash"),
        (3, "persist_stamp"),
    ]
    assert {s["workflow_id"] for s in steps} == {execution_id}
    transitions = await conn.fetch(TRACE_TRANSITIONS, workflow["id"])
    assert [(t["from_state"], t["to_state"], t["transition_at"]) for t in transitions] == [
        ("PENDING", "PROCESSING", started),
        ("PROCESSING", "COMPLETED", completed),
    ]
    running = await conn.fetchrow(TRACE_WORKFLOW, (await _start_workflow(conn, uuid.uuid4()))[0])
    assert running is None  # trace_workflow takes a correlation_id, not a workflow_id

    # get_namespace_stats
    for stamp_id, namespace, content_type in [
        ("stamp_a", "omniclaude.docs", "text/plain"),
        ("stamp_b", "omniclaude.docs", "text/plain"),
        ("stamp_c", "omniclaude.docs", "application/pdf"),
        ("stamp_d", "omniclaude.images", "image/png"),
    ]:
        await conn.execute(
            STAMP_INSERT,
            stamp_id,
            hashlib.sha256(stamp_id.encode()).hexdigest(),
            namespace,
            json.dumps({"stamp_id": stamp_id}),
            json.dumps({"content_type": content_type}),
            "{}",
            "0.1",
        )
    docs = await conn.fetchrow(NAMESPACE_STATS, "omniclaude.docs")
    assert docs["total_stamps"] == 3
    assert docs["unique_file_types"] == 2
    assert json.loads(docs["file_types"]) == ["application/pdf", "text/plain"]
    images = await conn.fetchrow(NAMESPACE_STATS, "omniclaude.images")
    assert (images["total_stamps"], json.loads(images["file_types"])) == (1, ["image/png"])
    empty = await conn.fetchrow(NAMESPACE_STATS, "nobody")
    assert tuple(empty.values()) == (0, 0, None)

    # find_failed_workflows
    failed_specs = [
        # key, started, completed, error_info
        (
            "hash",
            now - timedelta(hours=2),
            now - timedelta(minutes=90),
            {"message": "hash mismatch", "code": "E_HASH"},
        ),
        (
            "timeout",
            now - timedelta(hours=1),
            now - timedelta(minutes=10),
            {"message": "timeout", "code": "E_TIMEOUT"},
        ),
        (
            "old",
            now - timedelta(hours=30),
            now - timedelta(hours=29),
            {"message": "disk full", "code": "E_DISK"},
        ),
    ]
    failed_ids = {}
    for key, started_at, completed_at, error in failed_specs:
        wf, row_id = await _start_workflow(conn, uuid.uuid4(), state="PROCESSING")
        await conn.execute(WORKFLOW_UPDATE_STATE, "FAILED", "{}", row_id)
        await _pin_workflow_times(conn, row_id, started_at, completed_at, error)
        failed_ids[key] = wf
    _, ok_id = await _start_workflow(conn, uuid.uuid4())
    await conn.execute(WORKFLOW_UPDATE_STATE, "COMPLETED", "{}", ok_id)

    failed = await conn.fetch(FAILED_WORKFLOWS, 24, 100)
    assert [
        (f["workflow_id"], f["error_message"], f["error_code"], f["failed_at"]) for f in failed
    ] == [
        (failed_ids["timeout"], "timeout", "E_TIMEOUT", now - timedelta(minutes=10)),
        (failed_ids["hash"], "hash mismatch", "E_HASH", now - timedelta(minutes=90)),
    ]
    assert all(f["correlation_id"] is not None for f in failed)
    assert [f["workflow_id"] for f in await conn.fetch(FAILED_WORKFLOWS, 24, 1)] == [
        failed_ids["timeout"]
    ]
    assert [f["workflow_id"] for f in await conn.fetch(FAILED_WORKFLOWS, 48, 100)] == [
        failed_ids["timeout"],
        failed_ids["hash"],
        failed_ids["old"],
    ]

    # get_session_events, and section 7's session timeline (no time range)
    session_id = uuid.uuid4()
    start = now - timedelta(hours=1)
    old = now - timedelta(hours=30)
    session_events = [
        ("SESSION_OPENED", old, {"user": "dev"}),
        ("WORKFLOW_STARTED", start, {"file": "a.md"}),
        ("STAMP_CREATED", start + timedelta(milliseconds=1500), {"stamp_id": "stamp_a"}),
        ("WORKFLOW_COMPLETED", start + timedelta(seconds=4), {"duration_ms": 4000}),
    ]
    # Inserted newest first, so the answers' order comes from ORDER BY, not insertion.
    for event_type, created_at, payload in reversed(session_events):
        await _log_event(
            conn, event_type, correlation_id, session_id, payload, created_at=created_at
        )
    await _log_event(
        conn, "WORKFLOW_STARTED", None, uuid.uuid4(), {}, created_at=start + timedelta(seconds=1)
    )

    recent = await conn.fetch(SESSION_EVENTS, session_id, 24)
    assert [e["event_type"] for e in recent] == [
        "WORKFLOW_STARTED",
        "STAMP_CREATED",
        "WORKFLOW_COMPLETED",
    ]
    assert [e["time_diff_ms"] for e in recent] == [None, Decimal(1500), Decimal(2500)]
    assert json.loads(recent[1]["payload"])["stamp_id"] == "stamp_a"
    assert _ms(recent[-1]["created_at"] - recent[0]["created_at"]) == 4000  # duration_ms

    wider = await conn.fetch(SESSION_EVENTS, session_id, 48)
    assert [e["time_diff_ms"] for e in wider] == [
        None,
        Decimal(_ms(start - old)),
        Decimal(1500),
        Decimal(2500),
    ]
    assert await conn.fetch(SESSION_EVENTS, uuid.uuid4(), 24) == []

    timeline = await conn.fetch(SESSION_TIMELINE, session_id)
    assert [(e["event_type"], e["created_at"]) for e in timeline] == [
        (event_type, created_at) for event_type, created_at, _ in session_events
    ]
    assert [e["time_diff_ms"] for e in timeline] == [
        None,
        Decimal(29 * 3600 * 1000),
        Decimal(1500),
        Decimal(2500),
    ]


async def _public_table_sizes(conn: asyncpg.Connection) -> dict[str, int]:
    return dict(
        await conn.fetch(
            "SELECT tablename, pg_total_relation_size(schemaname||'.'||tablename)"
            " FROM pg_tables WHERE schemaname = 'public'"
        )
    )


def _largest_first(names: list[str], sizes: dict[str, int]) -> bool:
    ordered = [sizes[name] for name in names]
    return ordered == sorted(ordered, reverse=True)


async def test_monitoring_and_maintenance(
    conn: asyncpg.Connection, migrated_any_database: str
) -> None:
    """The guide's "Monitoring and Maintenance": health checks and maintenance."""
    database = await conn.fetchval("SELECT current_database()")
    assert database != SEED_DATABASE_NAME
    for i in range(5):
        await _log_event(conn, "WORKFLOW_STARTED", uuid.uuid4(), None, {"i": i})

    # A query that runs longer than 5 seconds, for the slow-query check.
    loop = asyncio.get_running_loop()
    sleeper = await asyncpg.connect(migrated_any_database)
    sleeper_pid = sleeper.get_server_pid()
    sleep_started = loop.time()
    sleeping = asyncio.create_task(sleeper.fetchval("SELECT pg_sleep(60)"))
    try:
        for _ in range(100):
            if (
                await conn.fetchval(
                    "SELECT state FROM pg_stat_activity WHERE pid = $1", sleeper_pid
                )
                == "active"
            ):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the sleeping query never showed as active")

        # Check database size
        size = await conn.fetchval(_for_database(DATABASE_SIZE, database))
        assert re.fullmatch(r"\d+ (kB|MB)", size), size

        # Check table sizes: the public tables, largest first.
        tables = await conn.fetch(TABLE_SIZES)
        assert {t["schemaname"] for t in tables} == {"public"}
        names = [t["tablename"] for t in tables]
        assert set(names) >= BRIDGE_TABLES
        assert "fsm_state" not in names
        assert all(re.fullmatch(r"\d+ (bytes|kB|MB)", t["size"]) for t in tables)
        assert _largest_first(names, await _public_table_sizes(conn))

        # Check index usage: as written, the seed's query cannot run on any PostgreSQL:
        # pg_stat_user_indexes names its columns relname and indexrelname (tablename and
        # indexname are pg_indexes' names). Shown here, then run with those two names fixed.
        with pytest.raises(asyncpg.UndefinedColumnError, match="tablename"):
            await conn.fetch(INDEX_USAGE)
        index_usage = await conn.fetch(
            INDEX_USAGE.replace("tablename", "relname AS tablename").replace(
                "indexname", "indexrelname AS indexname"
            )
        )
        by_index = {(i["schemaname"], i["tablename"], i["indexname"]) for i in index_usage}
        assert ("public", "event_logs", "idx_event_logs_payload_gin") in by_index
        assert ("public", "metadata_stamps", "idx_metadata_stamps_intelligence_gin") in by_index
        assert ("intelligence", "fsm_state", "idx_fsm_state_metadata") in by_index
        scans = [i["idx_scan"] for i in index_usage]
        assert scans == sorted(scans)

        # Check connection count: this connection and the sleeping one are active.
        connections = {
            c["state"]: c["connections"]
            for c in await conn.fetch(_for_database(CONNECTION_COUNT, database))
        }
        assert connections["active"] >= 2

        # Vacuum analyze: statistics now count the rows.
        await conn.execute(VACUUM_ANALYZE_DATABASE)
        reltuples = "SELECT reltuples FROM pg_class WHERE oid = 'public.event_logs'::regclass"
        assert await conn.fetchval(reltuples) == 5

        # Reindex all tables: the seed's literal name is refused (REINDEX DATABASE only
        # takes the current database), hence the substitution; every index is rebuilt.
        with pytest.raises(asyncpg.PostgresError, match="currently open database"):
            await conn.execute(REINDEX_DATABASE)
        filenode = "SELECT pg_relation_filenode('public.idx_event_logs_payload_gin')"
        before = await conn.fetchval(filenode)
        await conn.execute(_for_database(REINDEX_DATABASE, database))
        assert await conn.fetchval(filenode) != before
        assert await conn.fetchval(
            "SELECT bool_and(indisvalid) FROM pg_index"
            " WHERE indrelid = 'public.event_logs'::regclass"
        )

        # Update statistics
        for i in range(5, 8):
            await _log_event(conn, "WORKFLOW_COMPLETED", uuid.uuid4(), None, {"i": i})
        await conn.execute(ANALYZE_DATABASE)
        assert await conn.fetchval(reltuples) == 8

        # Check for bloat: the same tables, largest first, heap share as a percentage.
        bloat = await conn.fetch(BLOAT_CHECK)
        # (Sizes have moved since the first check: rows added, indexes rebuilt.)
        assert sorted(b["tablename"] for b in bloat) == sorted(names)
        assert _largest_first([b["tablename"] for b in bloat], await _public_table_sizes(conn))
        percent = {b["tablename"]: b["table_percent"] for b in bloat}
        assert all(0 <= p <= 100 for p in percent.values())
        assert percent["event_logs"] > 0
        assert percent["workflow_steps"] == 0  # empty heap: all of its size is indexes

        # Check slow queries: the sleeping query, once it has run for over 5 seconds.
        await asyncio.sleep(max(0.0, 5.5 - (loop.time() - sleep_started)))
        slow = {s["pid"]: s for s in await conn.fetch(SLOW_QUERIES)}
        assert sleeper_pid in slow
        assert slow[sleeper_pid]["query"] == "SELECT pg_sleep(60)"
        assert slow[sleeper_pid]["state"] == "active"
        assert slow[sleeper_pid]["duration"] > timedelta(seconds=5)
        assert conn.get_server_pid() not in slow

        assert await conn.fetchval("SELECT pg_cancel_backend($1)", sleeper_pid)
        with pytest.raises(asyncpg.QueryCanceledError):
            await sleeping
    finally:
        if not sleeping.done():
            sleeping.cancel()
        await asyncio.gather(sleeping, return_exceptions=True)
        await sleeper.close()


# --- Intelligence schema ------------------------------------------------------------------


async def _history(conn: asyncpg.Connection, fsm_type: str, entity_id: str) -> list[Any]:
    return await conn.fetch(
        "SELECT * FROM intelligence.fsm_state_history"
        " WHERE fsm_type = $1 AND entity_id = $2 ORDER BY id",
        fsm_type,
        entity_id,
    )


async def test_intelligence_fsm_state_history_and_queries(intel: asyncpg.Connection) -> None:
    """The history trigger, and the seed's current state, history, statistics and
    stuck-entity queries."""
    now = _now()
    t0 = now - timedelta(hours=3)
    t1 = t0 + timedelta(minutes=42, seconds=7, milliseconds=250)
    t2 = t1 + timedelta(minutes=30)

    await _walk_fsm(
        intel,
        "INGESTION",
        "doc_123",
        [("RECEIVED", "receive", t0), ("PROCESSING", "start_processing", t1)],
        "corr-123",
    )
    history = await _history(intel, "INGESTION", "doc_123")
    assert [
        (h["from_state"], h["to_state"], h["action"], h["correlation_id"], h["transitioned_at"])
        for h in history
    ] == [
        (None, "RECEIVED", "receive", "corr-123", t0),
        ("RECEIVED", "PROCESSING", "start_processing", "corr-123", t1),
    ]
    assert history[0]["duration_ms"] is None
    assert history[1]["duration_ms"] == _ms(t1 - t0) == 2_527_250
    assert all(h["success"] for h in history)
    assert json.loads(history[1]["metadata"])["last_action"] == "start_processing"

    # A change that leaves current_state alone records nothing.
    await intel.execute(
        "UPDATE intelligence.fsm_state SET metadata = metadata || '{\"progress\": 0.5}'"
        " WHERE entity_id = 'doc_123'"
    )
    assert len(await _history(intel, "INGESTION", "doc_123")) == 2

    status = await intel.execute(
        "UPDATE intelligence.fsm_state SET previous_state = current_state,"
        " current_state = 'INDEXED', transition_timestamp = $1, metadata = $2"
        " WHERE entity_id = 'doc_123'",
        t2,
        json.dumps({"last_action": "index", "correlation_id": "corr-123", "chunks": 12}),
    )
    assert status == "UPDATE 1"

    # Other entities, for the statistics and the stuck-entity check.
    await _walk_fsm(
        intel,
        "INGESTION",
        "doc_456",
        [
            ("RECEIVED", "receive", now - timedelta(hours=3)),
            ("PROCESSING", "start_processing", now - timedelta(hours=2)),
        ],
        "corr-456",
    )
    await _walk_fsm(
        intel,
        "INGESTION",
        "doc_789",
        [
            ("RECEIVED", "receive", now - timedelta(minutes=10)),
            ("PROCESSING", "start_processing", now - timedelta(minutes=5)),
        ],
        "corr-789",
    )
    await _walk_fsm(intel, "INGESTION", "doc_000", [("RECEIVED", "receive", now)], "corr-000")
    await _walk_fsm(
        intel,
        "QUALITY_ASSESSMENT",
        "q_1",
        [
            ("RAW", "receive", now - timedelta(hours=4)),
            ("ASSESSING", "assess", now - timedelta(hours=3)),
        ],
        "corr-q1",
    )
    pattern_walks = {
        "p_1": [
            ("FOUNDATION", "start", now - timedelta(minutes=60)),
            ("MATCHING", "match", now - timedelta(minutes=50)),
            ("VALIDATION", "validate", now - timedelta(minutes=20)),
        ],
        "p_2": [
            ("FOUNDATION", "start", now - timedelta(minutes=40)),
            ("MATCHING", "match", now - timedelta(minutes=35)),
        ],
        "p_3": [
            ("FOUNDATION", "start", now - timedelta(hours=6)),
            ("MATCHING", "match", now - timedelta(hours=5)),
        ],
    }
    for entity_id, walk in pattern_walks.items():
        await _walk_fsm(intel, "PATTERN_LEARNING", entity_id, walk, f"corr-{entity_id}")
    # Two history rows the average must leave out: a failed transition, and an old one.
    for success, at in [(False, now - timedelta(minutes=30)), (True, now - timedelta(days=8))]:
        await intel.execute(
            "INSERT INTO intelligence.fsm_state_history"
            " (fsm_type, entity_id, from_state, to_state, action, transitioned_at,"
            "  duration_ms, success)"
            " VALUES ('PATTERN_LEARNING', 'p_9', 'FOUNDATION', 'MATCHING', 'match', $1,"
            "  99999999, $2)",
            at,
            success,
        )

    # Get Current State
    current = await intel.fetchrow(CURRENT_STATE)
    assert current["current_state"] == "INDEXED"
    assert json.loads(current["metadata"]) == {
        "last_action": "index",
        "correlation_id": "corr-123",
        "chunks": 12,
    }

    # Get State History: newest first, with the time spent in the previous state.
    rows = await intel.fetch(STATE_HISTORY)
    assert [(r["from_state"], r["to_state"], r["action"], r["transitioned_at"]) for r in rows] == [
        ("PROCESSING", "INDEXED", "index", t2),
        ("RECEIVED", "PROCESSING", "start_processing", t1),
        (None, "RECEIVED", "receive", t0),
    ]
    assert [r["duration_ms"] for r in rows] == [_ms(t2 - t1), _ms(t1 - t0), None]

    # FSM Statistics: entities by state, and average time in each state.
    by_state = {r["current_state"]: r["count"] for r in await intel.fetch(ENTITIES_BY_STATE)}
    assert by_state == {"INDEXED": 1, "PROCESSING": 2, "RECEIVED": 1}

    averages = {
        r["to_state"]: (r["avg_duration_ms"], r["transition_count"])
        for r in await intel.fetch(AVERAGE_TIME_IN_STATE)
    }
    matching = [_ms(timedelta(minutes=10)), _ms(timedelta(minutes=5)), _ms(timedelta(hours=1))]
    assert averages == {
        "FOUNDATION": (None, 3),  # first states: no previous state to have spent time in
        "MATCHING": (pytest.approx(sum(matching) / 3), 3),
        "VALIDATION": (pytest.approx(_ms(timedelta(minutes=30))), 1),
    }

    # Stuck Entities: transitional states entered over an hour ago.
    stuck = await intel.fetch(STUCK_ENTITIES)
    assert {(s["fsm_type"], s["entity_id"], s["current_state"]) for s in stuck} == {
        ("INGESTION", "doc_456", "PROCESSING"),
        ("QUALITY_ASSESSMENT", "q_1", "ASSESSING"),
        ("PATTERN_LEARNING", "p_3", "MATCHING"),
    }
    by_entity = {s["entity_id"]: s["transition_timestamp"] for s in stuck}
    assert by_entity["doc_456"] == now - timedelta(hours=2)


async def test_intelligence_leases(intel: asyncpg.Connection) -> None:
    """Lease Management (acquire, release) and the Lease Conflicts troubleshooting SQL."""
    now = _now()
    await _walk_fsm(
        intel, "INGESTION", "doc_123", [("PROCESSING", "start_processing", now)], "corr-123"
    )
    history_rows = "SELECT COUNT(*) FROM intelligence.fsm_state_history"
    assert await intel.fetchval(history_rows) == 1
    lease = (
        "SELECT lease_id, lease_epoch, lease_expires_at - NOW() AS remaining"
        " FROM intelligence.fsm_state WHERE fsm_type = 'INGESTION' AND entity_id = 'doc_123'"
    )

    # Acquire: free entity -> the lease is taken for 5 minutes.
    assert await intel.execute(ACQUIRE_LEASE) == "UPDATE 1"
    held = await intel.fetchrow(lease)
    assert (held["lease_id"], held["lease_epoch"]) == ("lease_123", 1)
    assert timedelta(minutes=4) < held["remaining"] <= timedelta(minutes=5)
    # ... and cannot be taken again while it is unexpired.
    assert await intel.execute(ACQUIRE_LEASE) == "UPDATE 0"

    # Release: cleared; releasing again matches nothing.
    assert await intel.execute(RELEASE_LEASE) == "UPDATE 1"
    assert tuple(await intel.fetchrow(lease)) == (None, None, None)
    assert await intel.execute(RELEASE_LEASE) == "UPDATE 0"

    # Someone else's lease that has expired can be taken over.
    await intel.execute(
        "UPDATE intelligence.fsm_state SET lease_id = 'lease_old', lease_epoch = 7,"
        " lease_expires_at = NOW() - INTERVAL '1 minute' WHERE entity_id = 'doc_123'"
    )
    assert await intel.execute(ACQUIRE_LEASE) == "UPDATE 1"
    assert tuple(await intel.fetchrow(lease))[:2] == ("lease_123", 1)

    # Lease Conflicts: expired leases on other entities.
    for fsm_type, entity_id, lease_id, expires_at in [
        ("INGESTION", "doc_456", "lease_456", now - timedelta(minutes=10)),
        ("QUALITY_ASSESSMENT", "q_1", "lease_q1", now - timedelta(hours=1)),
        ("INGESTION", "doc_999", None, now - timedelta(minutes=3)),  # stale expiry, no lease
        ("INGESTION", "doc_789", "lease_789", now + timedelta(minutes=3)),  # still valid
    ]:
        await intel.execute(
            "INSERT INTO intelligence.fsm_state"
            " (fsm_type, entity_id, current_state, lease_id, lease_epoch, lease_expires_at)"
            " VALUES ($1, $2, 'PROCESSING', $3, $4, $5)",
            fsm_type,
            entity_id,
            lease_id,
            None if lease_id is None else 2,
            expires_at,
        )
    expired = await intel.fetch(EXPIRED_LEASES)
    assert {(e["fsm_type"], e["entity_id"], e["lease_id"]) for e in expired} == {
        ("INGESTION", "doc_456", "lease_456"),
        ("QUALITY_ASSESSMENT", "q_1", "lease_q1"),
    }
    assert await intel.execute(CLEAR_EXPIRED_LEASES) == "UPDATE 3"
    assert await intel.fetch(EXPIRED_LEASES) == []
    leases = dict(
        await intel.fetch(
            "SELECT entity_id, lease_id FROM intelligence.fsm_state WHERE lease_id IS NOT NULL"
        )
    )
    assert leases == {"doc_123": "lease_123", "doc_789": "lease_789"}
    assert (
        await intel.fetchval(
            "SELECT COUNT(*) FROM intelligence.fsm_state WHERE lease_expires_at IS NOT NULL"
            " AND lease_id IS NULL"
        )
        == 0
    )

    # Lease changes are not state transitions: only the 5 inserts are in the history.
    assert await intel.fetchval(history_rows) == 5


async def test_intelligence_workflows(intel: asyncpg.Connection) -> None:
    """Get Active Workflows, find_stuck_workflows(24), and the duration / updated_at triggers."""
    now = _now()
    insert = (
        "INSERT INTO intelligence.workflow_executions"
        " (workflow_id, operation_type, entity_id, status, current_step, started_at,"
        "  completed_at, correlation_id, updated_at)"
        " VALUES ($1, 'DOCUMENT_INGESTION', $2, $3, $4, $5, $6, $7, COALESCE($8, NOW()))"
    )
    workflows = [
        # workflow_id, status, current_step, started_at, completed_at, updated_at
        ("wf-recent", "RUNNING", "extract_entities", now - timedelta(minutes=10), None, None),
        ("wf-busy", "RUNNING", "generate_embeddings", now - timedelta(hours=2), None, None),
        # Started long ago but still making progress (updated_at now): not stuck.
        ("wf-long", "RUNNING", "index_vectors", now - timedelta(hours=48), None, None),
        # No progress for 26 hours: stuck. (INSERT does not fire the updated_at trigger.)
        (
            "wf-stuck",
            "RUNNING",
            "index_vectors",
            now - timedelta(hours=30),
            None,
            now - timedelta(hours=26),
        ),
        (
            "wf-paused",
            "PAUSED",
            "wait_for_quota",
            now - timedelta(hours=40),
            None,
            now - timedelta(hours=40),
        ),
        (
            "wf-done",
            "COMPLETED",
            "store_results",
            now - timedelta(minutes=5),
            now - timedelta(minutes=5) + timedelta(milliseconds=1500),
            None,
        ),
    ]
    for workflow_id, status, step, started_at, completed_at, updated_at in workflows:
        await intel.execute(
            insert,
            workflow_id,
            f"doc-{workflow_id}",
            status,
            step,
            started_at,
            completed_at,
            f"corr-{workflow_id}",
            updated_at,
        )

    # Get Active Workflows: RUNNING only, newest first.
    active = await intel.fetch(ACTIVE_WORKFLOWS)
    assert [(a["workflow_id"], a["current_step"]) for a in active] == [
        ("wf-recent", "extract_entities"),
        ("wf-busy", "generate_embeddings"),
        ("wf-stuck", "index_vectors"),
        ("wf-long", "index_vectors"),
    ]
    assert {a["operation_type"] for a in active} == {"DOCUMENT_INGESTION"}
    assert active[0]["started_at"] == now - timedelta(minutes=10)

    # find_stuck_workflows(24): RUNNING with no update for 24 hours.
    stuck = await intel.fetch(FIND_STUCK_WORKFLOWS)
    assert [(s["workflow_id"], s["operation_type"], s["current_step"]) for s in stuck] == [
        ("wf-stuck", "DOCUMENT_INGESTION", "index_vectors")
    ]
    assert stuck[0]["stuck_duration_hours"] == pytest.approx(26, abs=0.05)

    # Duration trigger: on insert with completed_at, and on the update that completes.
    duration = "SELECT duration_ms FROM intelligence.workflow_executions WHERE workflow_id = $1"
    assert await intel.fetchval(duration, "wf-done") == 1500
    assert await intel.fetchval(duration, "wf-recent") is None
    await intel.execute(
        "UPDATE intelligence.workflow_executions SET status = 'COMPLETED',"
        " completed_at = started_at + INTERVAL '2.5 seconds' WHERE workflow_id = 'wf-recent'"
    )
    assert await intel.fetchval(duration, "wf-recent") == 2500

    # updated_at trigger: any update counts as progress, so the stuck workflow is no more.
    await intel.execute(
        "UPDATE intelligence.workflow_executions SET current_step = 'index_vectors_retry',"
        " retry_count = retry_count + 1 WHERE workflow_id = 'wf-stuck'"
    )
    assert await intel.fetch(FIND_STUCK_WORKFLOWS) == []
    assert [a["workflow_id"] for a in await intel.fetch(ACTIVE_WORKFLOWS)] == [
        "wf-busy",
        "wf-stuck",
        "wf-long",
    ]


async def test_intelligence_maintenance(intel: asyncpg.Connection) -> None:
    """Regular Maintenance Tasks: the three functions and VACUUM ANALYZE of the three tables."""
    now = _now()

    # History: 4 rows older than 90 days (3 via the trigger, filed at their own transition
    # times, 1 direct), 1 row at 89 days and 2 recent ones.
    await _walk_fsm(
        intel,
        "INGESTION",
        "doc_old",
        [
            ("RECEIVED", "receive", now - timedelta(days=120)),
            ("PROCESSING", "start_processing", now - timedelta(days=100)),
            ("INDEXED", "index", now - timedelta(days=95)),
        ],
        "corr-old",
    )
    for days in [91, 89]:
        await intel.execute(
            "INSERT INTO intelligence.fsm_state_history"
            " (fsm_type, entity_id, from_state, to_state, action, transitioned_at)"
            " VALUES ('QUALITY_ASSESSMENT', 'q_old', 'RAW', 'ASSESSING', 'assess', $1)",
            now - timedelta(days=days),
        )
    await _walk_fsm(
        intel,
        "INGESTION",
        "doc_new",
        [
            ("RECEIVED", "receive", now - timedelta(minutes=2)),
            ("PROCESSING", "start_processing", now),
        ],
        "corr-new",
    )

    # Workflows: 2 completed more than 30 days ago; everything else stays.
    for workflow_id, status, started_at, completed_at, updated_at in [
        ("wf-done-40d", "COMPLETED", now - timedelta(days=40), now - timedelta(days=40), None),
        ("wf-done-31d", "COMPLETED", now - timedelta(days=32), now - timedelta(days=31), None),
        ("wf-done-3d", "COMPLETED", now - timedelta(days=3), now - timedelta(days=3), None),
        ("wf-paused-60d", "PAUSED", now - timedelta(days=60), None, now - timedelta(days=60)),
        ("wf-stuck", "RUNNING", now - timedelta(days=2), None, now - timedelta(days=2)),
        ("wf-running", "RUNNING", now - timedelta(hours=1), None, None),
    ]:
        await intel.execute(
            "INSERT INTO intelligence.workflow_executions"
            " (workflow_id, operation_type, entity_id, status, started_at, completed_at,"
            "  correlation_id, updated_at)"
            " VALUES ($1, 'DOCUMENT_INGESTION', $1, $2, $3, $4, $1, COALESCE($5, NOW()))",
            workflow_id,
            status,
            started_at,
            completed_at,
            updated_at,
        )

    # 1. Clean up old history
    assert await intel.fetchval(CLEANUP_OLD_FSM_HISTORY) == 4
    remaining = await intel.fetch(
        "SELECT entity_id, to_state FROM intelligence.fsm_state_history ORDER BY transitioned_at"
    )
    assert [tuple(r) for r in remaining] == [
        ("q_old", "ASSESSING"),
        ("doc_new", "RECEIVED"),
        ("doc_new", "PROCESSING"),
    ]
    assert await intel.fetchval(CLEANUP_OLD_FSM_HISTORY) == 0
    # The current state itself is not history: doc_old keeps its row in fsm_state.
    assert (
        await intel.fetchval(
            "SELECT current_state FROM intelligence.fsm_state WHERE entity_id = 'doc_old'"
        )
        == "INDEXED"
    )

    # 2. Clean up completed workflows
    assert await intel.fetchval(CLEANUP_COMPLETED_WORKFLOWS) == 2
    kept = await intel.fetch(
        "SELECT workflow_id FROM intelligence.workflow_executions ORDER BY workflow_id"
    )
    assert [k["workflow_id"] for k in kept] == [
        "wf-done-3d",
        "wf-paused-60d",
        "wf-running",
        "wf-stuck",
    ]
    assert await intel.fetchval(CLEANUP_COMPLETED_WORKFLOWS) == 0

    # 3. Find stuck workflows
    stuck = await intel.fetch(FIND_STUCK_WORKFLOWS)
    assert [s["workflow_id"] for s in stuck] == ["wf-stuck"]
    assert stuck[0]["stuck_duration_hours"] == pytest.approx(48, abs=0.05)

    # 4. Vacuum tables: the unqualified names are the intelligence tables, now analysed.
    for statement in [VACUUM_FSM_STATE, VACUUM_FSM_STATE_HISTORY, VACUUM_WORKFLOW_EXECUTIONS]:
        assert await intel.execute(statement) == "VACUUM"
    reltuples = dict(
        await intel.fetch(
            "SELECT relname, reltuples FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = 'intelligence' AND c.relkind = 'r'"
        )
    )
    assert reltuples == {"fsm_state": 2, "fsm_state_history": 3, "workflow_executions": 4}
