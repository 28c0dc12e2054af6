"""``omnisink query`` and ``omnisink maintenance`` against the real database.

Each test starts from a fresh migrated database, puts known rows in it (directly with SQL, or
through the sink's batch write for the trace), runs the command in-process (typer's
CliRunner, on a thread: the commands call ``asyncio.run``) and checks the exact rows of
``--json`` and that the table shows them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from typer.testing import CliRunner, Result

from consumer.cli import app
from consumer.store import batch
from dev.services import Service, free_port
from handlers.base import Event
from handlers.envelope import Envelope, foreign_id_to_uuid
from handlers.registry import HANDLERS
from tests.support import create_database, drop_database, with_database

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# -- helpers -------------------------------------------------------------------------------------


async def omnisink(db_url: str, *args: str) -> Result:
    """``omnisink ARGS`` in-process, with the database in its environment."""
    env = {"OMNISINK_DATABASE_URL": db_url}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout


async def as_json(db_url: str, *args: str) -> Any:
    return orjson.loads(ok(await omnisink(db_url, *args, "--json")))


def when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _event(
    event_type: str,
    payload: dict[str, Any],
    at: datetime,
    correlation_id: uuid.UUID | str | None = None,
    session_id: uuid.UUID | None = None,
) -> Event:
    wire: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "event_timestamp": at.isoformat(),
        "payload": payload,
    }
    if correlation_id is not None:
        wire["correlation_id"] = str(correlation_id)
    if session_id is not None:
        wire["session_id"] = str(session_id)
    return Event(Envelope.from_wire(wire), "test.omninode_bridge.onex.evt.ops.v1", 0, 0)


async def _write(db: asyncpg.Connection, events: list[Event]) -> None:
    async with db.transaction():
        result = await batch.write_events(db, events, HANDLERS)
    assert not result.rejected, result.rejected
    assert len(result.new) == len(events)


async def _workflow(
    db: asyncpg.Connection,
    state: str,
    *,
    started: datetime | None,
    completed: datetime | None = None,
    namespace: str | None = None,
    error: dict[str, str] | None = None,
) -> uuid.UUID:
    """A bridge workflow row as the sink writes them (id = workflow_id)."""
    workflow_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO workflow_executions (id, workflow_id, correlation_id, state, started_at, "
        "completed_at, namespace, error_info) VALUES ($1, $1, $2, $3, $4, $5, $6, $7::jsonb)",
        workflow_id,
        uuid.uuid4(),
        state,
        started,
        completed,
        namespace,
        orjson.dumps(error or {}).decode(),
    )
    return workflow_id


async def _event_log(
    db: asyncpg.Connection,
    event_type: str,
    at: datetime,
    session_id: uuid.UUID | None,
    payload: dict[str, Any] | None = None,
) -> uuid.UUID:
    event_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO event_logs (id, event_type, correlation_id, session_id, payload, created_at) "
        "VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
        event_id,
        event_type,
        uuid.uuid4(),
        session_id,
        orjson.dumps(payload or {"n": 1}).decode(),
        at,
    )
    return event_id


async def _intelligence_workflow(
    db: asyncpg.Connection,
    workflow_id: str,
    status: str,
    *,
    updated: datetime,
    completed: datetime | None = None,
    step: str | None = None,
) -> None:
    await db.execute(
        "INSERT INTO intelligence.workflow_executions (workflow_id, operation_type, entity_id, "
        "status, current_step, started_at, completed_at, correlation_id, updated_at) "
        "VALUES ($1, 'DOCUMENT_INGESTION', $2, $3, $4, $5, $6, $7, $5)",
        workflow_id,
        f"doc-of-{workflow_id}",
        status,
        step,
        updated,
        completed,
        f"corr-{workflow_id}",
    )


async def _fsm_state(
    db: asyncpg.Connection, fsm_type: str, entity_id: str, state: str, at: datetime
) -> None:
    await db.execute(
        "INSERT INTO intelligence.fsm_state (fsm_type, entity_id, current_state, "
        "transition_timestamp) VALUES ($1, $2, $3, $4)",
        fsm_type,
        entity_id,
        state,
        at,
    )


async def _history(
    db: asyncpg.Connection,
    fsm_type: str,
    entity_id: str,
    from_state: str | None,
    to_state: str,
    *,
    at: datetime,
    ms: float | None,
    success: bool = True,
) -> None:
    await db.execute(
        "INSERT INTO intelligence.fsm_state_history (fsm_type, entity_id, from_state, "
        "to_state, action, transitioned_at, duration_ms, success) "
        "VALUES ($1, $2, $3, $4, 'TEST', $5, $6, $7)",
        fsm_type,
        entity_id,
        from_state,
        to_state,
        at,
        ms,
        success,
    )


# -- query trace --------------------------------------------------------------------------------


async def test_trace_shows_the_correlations_workflow_steps_transitions_and_events_in_time_order(
    db_url: str, db: asyncpg.Connection
) -> None:
    corr, other = uuid.uuid4(), uuid.uuid4()
    wf, wf_other = str(uuid.uuid4()), str(uuid.uuid4())
    session = uuid.uuid4()
    s = timedelta(seconds=1)
    ours = [
        _event("WORKFLOW_STARTED", {"workflow_id": wf, "namespace": "docs"}, T0, corr, session),
        _event(
            "STATE_TRANSITION",
            {"workflow_id": wf, "from_state": "pending", "to_state": "processing"},
            T0 + s / 2,
            corr,
        ),
        _event("STEP_STARTED", {"workflow_id": wf, "step_name": "hash"}, T0 + s, corr),
        _event(
            "STEP_COMPLETED",
            {"workflow_id": wf, "step_name": "hash", "execution_time_ms": 900},
            T0 + 2 * s,
            corr,
        ),
        _event("STEP_STARTED", {"workflow_id": wf, "step_name": "stamp"}, T0 + 3 * s, corr),
        _event(
            "STEP_COMPLETED",
            {"workflow_id": wf, "step_name": "stamp", "execution_time_ms": 1000},
            T0 + 4 * s,
            corr,
        ),
        _event("INTELLIGENCE_REQUESTED", {"file_path": "a.md"}, T0 + 4.5 * s, corr),
        _event("WORKFLOW_COMPLETED", {"workflow_id": wf}, T0 + 5 * s, corr),
    ]
    theirs = [
        _event("WORKFLOW_STARTED", {"workflow_id": wf_other}, T0 + 1.5 * s, other),
        _event("WORKFLOW_FAILED", {"workflow_id": wf_other, "error": "x"}, T0 + 2.5 * s, other),
    ]
    # Written in another order than the one shown.
    await _write(db, [*reversed(ours[4:]), theirs[1], *ours[:4], theirs[0]])

    found = await as_json(db_url, "query", "trace", str(corr))

    assert found["correlation_id"] == str(corr)
    [workflow] = found["workflows"]
    assert (workflow["workflow_id"], workflow["state"], workflow["namespace"]) == (
        wf,
        "COMPLETED",
        "docs",
    )
    assert (when(workflow["started_at"]), when(workflow["completed_at"])) == (T0, T0 + 5 * s)
    assert workflow["duration_ms"] == 5000.0
    assert workflow["session_id"] == str(session)
    assert workflow["workflow_steps_executed"] == 2
    assert [
        (
            st["step_order"],
            st["step_name"],
            st["status"],
            st["execution_time_ms"],
            when(st["started_at"]),
            when(st["completed_at"]),
        )
        for st in workflow["steps"]
    ] == [
        (1, "hash", "COMPLETED", 900, T0 + s, T0 + 2 * s),
        (2, "stamp", "COMPLETED", 1000, T0 + 3 * s, T0 + 4 * s),
    ]
    assert [
        (t["id"], t["from_state"], t["to_state"], when(t["transition_at"]))
        for t in workflow["transitions"]
    ] == [(str(ours[1].event_id), "PENDING", "PROCESSING", T0 + s / 2)]
    assert [e["id"] for e in found["events"]] == [str(e.event_id) for e in ours]
    assert [e["event_type"] for e in found["events"]] == [e.event_type for e in ours]
    assert found["events"][6]["payload"] == {"file_path": "a.md"}

    table = ok(await omnisink(db_url, "query", "trace", str(corr)))
    for text in (wf, "COMPLETED", "hash", "stamp", "PENDING", "INTELLIGENCE_REQUESTED"):
        assert text in table
    assert "5000.0" in table
    for e in ours:
        assert str(e.event_id) in table
    assert wf_other not in table
    assert not any(str(e.event_id) in table for e in theirs)


async def test_trace_finds_a_text_correlation_as_the_sink_stored_it(
    db_url: str, db: asyncpg.Connection
) -> None:
    event = _event("INTELLIGENCE_REQUESTED", {"n": 1}, T0, "req-42")
    await _write(db, [event, _event("INTELLIGENCE_REQUESTED", {"n": 2}, T0, "req-43")])

    found = await as_json(db_url, "query", "trace", "req-42")

    assert found["correlation_id"] == str(foreign_id_to_uuid("req-42"))
    assert found["workflows"] == []
    assert [e["id"] for e in found["events"]] == [str(event.event_id)]


async def test_trace_of_an_unknown_correlation_is_empty(db_url: str) -> None:
    unknown = uuid.uuid4()
    assert await as_json(db_url, "query", "trace", str(unknown)) == {
        "correlation_id": str(unknown),
        "workflows": [],
        "events": [],
    }
    table = ok(await omnisink(db_url, "query", "trace", str(unknown)))
    assert f"no workflow or event has correlation id {unknown}" in table


# -- query namespace ------------------------------------------------------------------------------


async def test_namespace_counts_its_stamps_and_workflows_only(
    db_url: str, db: asyncpg.Connection
) -> None:
    stamps = [
        ("docs", {"content_type": "text/plain", "file_size_bytes": 100}, T0),
        ("docs", {"content_type": "application/pdf", "file_size_bytes": 250}, T0 + timedelta(1)),
        ("docs", {"content_type": "text/plain", "file_size_bytes": "12"}, T0 + timedelta(2)),
        ("docs", {}, T0 + timedelta(3)),
        ("other", {"content_type": "image/png", "file_size_bytes": 999}, T0 - timedelta(1)),
    ]
    for n, (namespace, file_metadata, created) in enumerate(stamps):
        await db.execute(
            "INSERT INTO metadata_stamps (stamp_id, file_hash, namespace, stamp_data, "
            "file_metadata, created_at) VALUES ($1, $2, $3, '{}', $4::jsonb, $5)",
            f"st-{n}",
            f"{n:064x}",
            namespace,
            orjson.dumps(file_metadata).decode(),
            created,
        )
    ms = timedelta(milliseconds=1)
    await _workflow(db, "COMPLETED", started=T0, completed=T0 + 1000 * ms, namespace="docs")
    await _workflow(db, "COMPLETED", started=T0, completed=T0 + 3000 * ms, namespace="docs")
    await _workflow(db, "FAILED", started=T0, completed=T0 + 500 * ms, namespace="docs")
    await _workflow(db, "PROCESSING", started=T0, namespace="docs")
    await _workflow(db, "COMPLETED", started=T0, completed=T0 + 10_000 * ms, namespace="other")

    stats = await as_json(db_url, "query", "namespace", "docs")

    assert stats == {
        "namespace": "docs",
        "total_stamps": 4,
        "unique_file_types": 2,
        "file_types": ["application/pdf", "text/plain"],
        "total_size_bytes": 350,  # the text "12" is no size
        "first_stamp_at": "2026-01-01T00:00:00Z",
        "last_stamp_at": "2026-01-04T00:00:00Z",
        "avg_processing_time_ms": 2000.0,
        "workflows": [
            {"state": "COMPLETED", "workflows": 2, "avg_duration_ms": 2000.0},
            {"state": "FAILED", "workflows": 1, "avg_duration_ms": 500.0},
            {"state": "PROCESSING", "workflows": 1, "avg_duration_ms": None},
        ],
    }
    table = ok(await omnisink(db_url, "query", "namespace", "docs"))
    for text in ("application/pdf", "text/plain", "350", "2000.0", "PROCESSING", "500.0"):
        assert text in table
    assert "image/png" not in table
    assert "10000.0" not in table

    assert await as_json(db_url, "query", "namespace", "nobody") == {
        "namespace": "nobody",
        "total_stamps": 0,
        "unique_file_types": 0,
        "file_types": [],
        "total_size_bytes": 0,
        "first_stamp_at": None,
        "last_stamp_at": None,
        "avg_processing_time_ms": None,
        "workflows": [],
    }


# -- query failed ---------------------------------------------------------------------------------


async def test_failed_lists_the_workflows_failed_in_the_window_newest_first(
    db_url: str, db: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    h = timedelta(hours=1)
    f1 = await _workflow(
        db,
        "FAILED",
        started=now - 2 * h,
        completed=now - h,
        namespace="docs",
        error={"message": "boom", "code": "E1"},
    )
    f2 = await _workflow(
        db, "FAILED", started=now - 3 * h, completed=now - 2 * h, error={"message": "bad hash"}
    )
    no_start = await _workflow(db, "FAILED", started=None, completed=now - 3 * h)
    started_before = await _workflow(db, "FAILED", started=now - 30 * h, completed=now - 1.5 * h)
    old = await _workflow(db, "FAILED", started=now - 31 * h, completed=now - 30 * h)
    completed = await _workflow(db, "COMPLETED", started=now - 2 * h, completed=now - h)
    running = await _workflow(db, "PROCESSING", started=now - h)

    rows = await as_json(db_url, "query", "failed")

    assert [r["workflow_id"] for r in rows] == [
        str(f1),
        str(started_before),
        str(f2),
        str(no_start),
    ]
    first = rows[0]
    assert (first["error_message"], first["error_code"], first["namespace"]) == (
        "boom",
        "E1",
        "docs",
    )
    assert when(first["failed_at"]) == now - h
    assert when(first["started_at"]) == now - 2 * h
    assert (rows[2]["error_message"], rows[2]["error_code"]) == ("bad hash", None)
    assert rows[3]["started_at"] is None

    wider = await as_json(db_url, "query", "failed", "--hours", "48")
    assert [r["workflow_id"] for r in wider] == [
        str(f1),
        str(started_before),
        str(f2),
        str(no_start),
        str(old),
    ]
    limited = await omnisink(db_url, "query", "failed", "--limit", "2", "--json")
    assert [r["workflow_id"] for r in orjson.loads(ok(limited))] == [str(f1), str(started_before)]

    table = await omnisink(db_url, "query", "failed", "--limit", "2")
    assert str(f1) in ok(table)
    assert "boom" in table.stdout
    assert str(started_before) in table.stdout
    for absent in (f2, no_start, old, completed, running):
        assert str(absent) not in table.stdout
    assert "(the newest 2 shown; --limit for more)" in table.stderr


async def test_failed_says_when_nothing_failed(db_url: str, db: asyncpg.Connection) -> None:
    await _workflow(db, "COMPLETED", started=datetime.now(UTC), completed=datetime.now(UTC))
    assert await as_json(db_url, "query", "failed") == []
    assert "no workflow failed in the last 24 hours" in ok(
        await omnisink(db_url, "query", "failed")
    )


# -- query session --------------------------------------------------------------------------------


async def test_session_is_the_sessions_timeline_in_the_window(
    db_url: str, db: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    h = timedelta(hours=1)
    session, elsewhere = uuid.uuid4(), uuid.uuid4()
    base = now - 3 * h
    old = await _event_log(db, "WORKFLOW_STARTED", now - 30 * h, session)
    s1 = await _event_log(db, "WORKFLOW_STARTED", base, session, {"workflow_id": "w-1"})
    s2 = await _event_log(db, "STEP_COMPLETED", base + h, session)
    s3 = await _event_log(db, "WORKFLOW_STARTED", base + 2 * h, session)
    other = await _event_log(db, "STEP_COMPLETED", base + h / 2, elsewhere)
    none = await _event_log(db, "STEP_COMPLETED", base + h / 2, None)

    found = await as_json(db_url, "query", "session", str(session))

    assert {k: v for k, v in found.items() if k != "timeline"} == {
        "session_id": str(session),
        "total_events": 3,
        "event_types": ["WORKFLOW_STARTED", "STEP_COMPLETED"],
        "duration_ms": 7_200_000.0,
    }
    assert [
        (e["id"], e["event_type"], when(e["created_at"]), e["time_diff_ms"])
        for e in found["timeline"]
    ] == [
        (str(s1), "WORKFLOW_STARTED", base, None),
        (str(s2), "STEP_COMPLETED", base + h, 3_600_000.0),
        (str(s3), "WORKFLOW_STARTED", base + 2 * h, 3_600_000.0),
    ]
    assert found["timeline"][0]["payload"] == {"workflow_id": "w-1"}

    wider = await as_json(db_url, "query", "session", str(session), "--hours", "48")
    assert [(e["id"], e["time_diff_ms"]) for e in wider["timeline"]] == [
        (str(old), None),
        (str(s1), 27 * 3_600_000.0),
        (str(s2), 3_600_000.0),
        (str(s3), 3_600_000.0),
    ]
    assert wider["duration_ms"] == 29 * 3_600_000.0

    table = ok(await omnisink(db_url, "query", "session", str(session)))
    for event_id in (s1, s2, s3):
        assert str(event_id) in table
    for event_id in (old, other, none):
        assert str(event_id) not in table
    assert "3600000.0" in table
    assert "3 events over 7200000.0 ms (WORKFLOW_STARTED, STEP_COMPLETED)" in table


async def test_session_finds_a_text_session_and_says_when_it_has_none(
    db_url: str, db: asyncpg.Connection
) -> None:
    event = await _event_log(db, "STAMP_CREATED", datetime.now(UTC), foreign_id_to_uuid("sess-7"))
    found = await as_json(db_url, "query", "session", "sess-7")
    assert [e["id"] for e in found["timeline"]] == [str(event)]

    unknown = uuid.uuid4()
    assert await as_json(db_url, "query", "session", str(unknown)) == {
        "session_id": str(unknown),
        "total_events": 0,
        "event_types": [],
        "timeline": [],
        "duration_ms": None,
    }
    table = ok(await omnisink(db_url, "query", "session", str(unknown)))
    assert f"no event of session {unknown} in the last 24 hours" in table


# -- query fsm -----------------------------------------------------------------------------------


async def test_fsm_counts_entities_per_state_and_the_time_spent_in_each(
    db_url: str, db: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    d = timedelta(days=1)
    async with db.transaction():
        # As the sink does: the seed's history trigger is off for this transaction, so the
        # history is exactly the rows below.
        await db.execute("SELECT set_config('omnisink.fsm_history', 'sink', true)")
        await _fsm_state(db, "INGESTION", "doc-1", "PROCESSING", now - d)
        await _fsm_state(db, "INGESTION", "doc-2", "PROCESSING", now - 2 * d)
        await _fsm_state(db, "INGESTION", "doc-3", "INDEXED", now - d)
        await _fsm_state(db, "QUALITY_ASSESSMENT", "q-1", "ASSESSING", now - d)
    await _history(db, "INGESTION", "doc-1", None, "RECEIVED", at=now - 3 * d, ms=None)
    await _history(db, "INGESTION", "doc-1", "RECEIVED", "PROCESSING", at=now - d, ms=1000)
    await _history(db, "INGESTION", "doc-2", "RECEIVED", "PROCESSING", at=now - 2 * d, ms=3000)
    await _history(db, "INGESTION", "doc-3", "PROCESSING", "INDEXED", at=now - d, ms=500)
    await _history(
        db, "INGESTION", "doc-3", "PROCESSING", "INDEXED", at=now - d, ms=9999, success=False
    )
    await _history(db, "INGESTION", "doc-3", "PROCESSING", "INDEXED", at=now - 10 * d, ms=7777)
    await _history(db, "QUALITY_ASSESSMENT", "q-1", "RAW", "ASSESSING", at=now - d, ms=2000)

    def rows(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [
            (r["fsm_type"], r["state"], r["entities"], r["avg_ms_in_state"], r["transitions_out"])
            for r in found
        ]

    assert rows(await as_json(db_url, "query", "fsm")) == [
        ("INGESTION", "INDEXED", 1, None, 0),
        ("INGESTION", "PROCESSING", 2, 500.0, 1),  # the failed and the old one left out
        ("INGESTION", "RECEIVED", 0, 2000.0, 2),
        ("QUALITY_ASSESSMENT", "ASSESSING", 1, None, 0),
        ("QUALITY_ASSESSMENT", "RAW", 0, 2000.0, 1),
    ]
    assert rows(await as_json(db_url, "query", "fsm", "--type", "ingestion")) == [
        ("INGESTION", "INDEXED", 1, None, 0),
        ("INGESTION", "PROCESSING", 2, 500.0, 1),
        ("INGESTION", "RECEIVED", 0, 2000.0, 2),
    ]
    assert rows(await as_json(db_url, "query", "fsm", "--type", "INGESTION", "--days", "30")) == [
        ("INGESTION", "INDEXED", 1, None, 0),
        ("INGESTION", "PROCESSING", 2, 4138.5, 2),
        ("INGESTION", "RECEIVED", 0, 2000.0, 2),
    ]

    table = ok(await omnisink(db_url, "query", "fsm", "--type", "QUALITY_ASSESSMENT"))
    for text in ("QUALITY_ASSESSMENT", "ASSESSING", "RAW", "2000.0"):
        assert text in table
    assert "INGESTION" not in table
    assert "no FSM state or history of type PATTERN_LEARNING" in ok(
        await omnisink(db_url, "query", "fsm", "--type", "PATTERN_LEARNING")
    )


# -- maintenance stuck ----------------------------------------------------------------------------


async def test_stuck_lists_running_workflows_and_entities_past_their_thresholds(
    db_url: str, db: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    h = timedelta(hours=1)
    await _intelligence_workflow(db, "wf-30h", "RUNNING", updated=now - 30 * h, step="index")
    await _intelligence_workflow(db, "wf-2h", "RUNNING", updated=now - 2 * h)
    await _intelligence_workflow(
        db, "wf-done", "COMPLETED", updated=now - 40 * h, completed=now - 40 * h
    )
    await _intelligence_workflow(db, "wf-50h", "RUNNING", updated=now - 50 * h)
    await _intelligence_workflow(db, "wf-paused", "PAUSED", updated=now - 60 * h)
    await _fsm_state(db, "INGESTION", "doc-proc", "PROCESSING", now - 2 * h)
    await _fsm_state(db, "QUALITY_ASSESSMENT", "q-assess", "ASSESSING", now - h / 2)
    await _fsm_state(db, "INGESTION", "doc-indexed", "INDEXED", now - 5 * h)
    await _fsm_state(db, "PATTERN_LEARNING", "p-match", "MATCHING", now - 3 * h)

    found = await as_json(db_url, "maintenance", "stuck")

    assert (found["hours"], found["entity_hours"]) == (24, 1)
    assert [
        (
            w["workflow_id"],
            w["operation_type"],
            w["current_step"],
            round(w["stuck_duration_hours"]),
            w["entity_id"],
            w["correlation_id"],
        )
        for w in found["workflows"]
    ] == [
        ("wf-50h", "DOCUMENT_INGESTION", None, 50, "doc-of-wf-50h", "corr-wf-50h"),
        ("wf-30h", "DOCUMENT_INGESTION", "index", 30, "doc-of-wf-30h", "corr-wf-30h"),
    ]
    assert [
        (e["fsm_type"], e["entity_id"], e["current_state"], round(e["stuck_duration_hours"]))
        for e in found["entities"]
    ] == [
        ("PATTERN_LEARNING", "p-match", "MATCHING", 3),
        ("INGESTION", "doc-proc", "PROCESSING", 2),
    ]

    wider = await as_json(db_url, "maintenance", "stuck", "--hours", "1", "--entity-hours", "0")
    assert [w["workflow_id"] for w in wider["workflows"]] == ["wf-50h", "wf-30h", "wf-2h"]
    assert [e["entity_id"] for e in wider["entities"]] == ["p-match", "doc-proc", "q-assess"]

    table = ok(await omnisink(db_url, "maintenance", "stuck"))
    for text in ("wf-50h", "wf-30h", "index", "p-match", "doc-proc"):
        assert text in table
    for text in ("wf-2h", "wf-done", "wf-paused", "q-assess", "doc-indexed"):
        assert text not in table


async def test_stuck_says_when_nothing_is_stuck(db_url: str) -> None:
    assert await as_json(db_url, "maintenance", "stuck") == {
        "hours": 24,
        "entity_hours": 1,
        "workflows": [],
        "entities": [],
    }
    table = ok(await omnisink(db_url, "maintenance", "stuck"))
    assert "no workflow has been RUNNING without an update for 24 hours" in table
    assert "no entity has been in PROCESSING, ASSESSING or MATCHING for 1 hour" in table


# -- maintenance cleanup --------------------------------------------------------------------------


async def test_cleanup_deletes_exactly_the_old_rows_and_dry_run_only_counts_them(
    db_url: str, db: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    d = timedelta(days=1)
    for entity, age in (
        ("h-100d", 100 * d),
        ("h-91d", 91 * d),
        ("h-10d", 10 * d),
        ("h-1h", d / 24),
    ):
        await _history(db, "INGESTION", entity, "RECEIVED", "PROCESSING", at=now - age, ms=1.0)
    await _intelligence_workflow(
        db, "done-40d", "COMPLETED", updated=now - 41 * d, completed=now - 40 * d
    )
    await _intelligence_workflow(
        db, "failed-35d", "FAILED", updated=now - 36 * d, completed=now - 35 * d
    )
    await _intelligence_workflow(
        db, "done-5d", "COMPLETED", updated=now - 6 * d, completed=now - 5 * d
    )
    await _intelligence_workflow(db, "running-60d", "RUNNING", updated=now - 60 * d)
    await _intelligence_workflow(
        db, "paused-50d", "PAUSED", updated=now - 51 * d, completed=now - 50 * d
    )

    async def left() -> tuple[list[str], list[str]]:
        history = await db.fetch(
            "SELECT entity_id FROM intelligence.fsm_state_history ORDER BY entity_id"
        )
        workflows = await db.fetch(
            "SELECT workflow_id FROM intelligence.workflow_executions ORDER BY workflow_id"
        )
        return [r["entity_id"] for r in history], [r["workflow_id"] for r in workflows]

    everything = await left()
    assert everything == (
        ["h-100d", "h-10d", "h-1h", "h-91d"],
        ["done-40d", "done-5d", "failed-35d", "paused-50d", "running-60d"],
    )

    def report(
        dry_run: bool, history: int, workflows: int, h_days: int = 90, w_days: int = 30
    ) -> Any:
        return {
            "dry_run": dry_run,
            "fsm_state_history": {"retention_days": h_days, "rows": history},
            "workflow_executions": {"retention_days": w_days, "rows": workflows},
        }

    assert await as_json(db_url, "maintenance", "cleanup", "--dry-run") == report(True, 2, 2)
    assert await left() == everything
    shorter = ("--history-days", "5", "--workflow-days", "1", "--dry-run")
    assert await as_json(db_url, "maintenance", "cleanup", *shorter) == report(True, 3, 3, 5, 1)
    assert await left() == everything
    table = ok(await omnisink(db_url, "maintenance", "cleanup", "--dry-run"))
    assert "would delete" in table
    assert "would delete 2 FSM history rows older than 90 days and 2 COMPLETED or FAILED" in table
    assert "dry run: nothing was deleted" in table
    assert await left() == everything

    assert await as_json(db_url, "maintenance", "cleanup") == report(False, 2, 2)
    assert await left() == (
        ["h-10d", "h-1h"],
        ["done-5d", "paused-50d", "running-60d"],
    )
    assert await as_json(db_url, "maintenance", "cleanup") == report(False, 0, 0)

    table = ok(await omnisink(db_url, "maintenance", "cleanup", "--history-days", "5"))
    assert "deleted 1 FSM history rows older than 5 days and 0 COMPLETED or FAILED" in table
    assert await left() == (["h-1h"], ["done-5d", "paused-50d", "running-60d"])


# -- failures -------------------------------------------------------------------------------------

COMMANDS = [
    pytest.param(("query", "trace", str(uuid.uuid4())), id="query trace"),
    pytest.param(("query", "namespace", "docs"), id="query namespace"),
    pytest.param(("query", "failed"), id="query failed"),
    pytest.param(("query", "session", str(uuid.uuid4())), id="query session"),
    pytest.param(("query", "fsm"), id="query fsm"),
    pytest.param(("maintenance", "stuck"), id="maintenance stuck"),
    pytest.param(("maintenance", "cleanup", "--dry-run"), id="maintenance cleanup dry run"),
    pytest.param(("maintenance", "cleanup"), id="maintenance cleanup"),
]


@pytest.mark.parametrize("command", COMMANDS)
async def test_a_database_that_cannot_be_reached_exits_2_without_the_password(
    command: tuple[str, ...],
) -> None:
    url = f"postgresql://sink:s3cr3t-pw@127.0.0.1:{free_port()}/omninode"
    result = await omnisink(url, *command)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "cannot connect to PostgreSQL" in result.stderr
    assert f"omnisink {command[0]} {command[1]}: " in result.stderr
    assert "s3cr3t-pw" not in result.stdout + result.stderr
    assert result.stdout == ""


@pytest.fixture
async def empty_db_url(pg_server: Service) -> AsyncIterator[str]:
    """A database with no schema at all (never migrated)."""
    name = f"omnisink_e_{uuid.uuid4().hex[:12]}"
    await create_database(pg_server.url, name)
    try:
        yield with_database(pg_server.url, name)
    finally:
        await drop_database(pg_server.url, name)


@pytest.mark.parametrize("command", COMMANDS)
async def test_a_database_that_is_not_migrated_exits_2_saying_to_migrate(
    empty_db_url: str, command: tuple[str, ...]
) -> None:
    result = await omnisink(empty_db_url, *command)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "run `omnisink migrate` first" in result.stderr
    assert result.stdout == ""


async def test_a_blank_id_is_a_bad_argument(db_url: str) -> None:
    result = await omnisink(db_url, "query", "trace", " ")
    assert result.exit_code == 2
    assert "must not be blank" in result.stderr
