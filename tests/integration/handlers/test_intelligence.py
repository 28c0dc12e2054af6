"""The intelligence handlers against a real PostgreSQL: FSM state and history, FSM validation,
lease fencing, intelligence workflows, the history trigger's switch (migration 017), the schema
rejects, and the convergence property."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.store import batch
from handlers import registry
from handlers.base import Event
from handlers.envelope import FOREIGN_ID_NAMESPACE, Envelope
from handlers.intelligence_fsm import FSM_DEFINITIONS, INTELLIGENCE_FSM
from handlers.intelligence_workflows import INTELLIGENCE_WORKFLOWS
from tests.integration.handlers import support
from tests.integration.handlers.support import js

BASE = datetime(2025, 11, 14, 12, 0, tzinfo=UTC)
TABLES = (
    "intelligence.fsm_state, intelligence.fsm_state_history, "
    "intelligence.workflow_executions, event_logs"
)
HANDLERS = [INTELLIGENCE_FSM, INTELLIGENCE_WORKFLOWS]


def _topic(event_type: str, _: Envelope) -> str:
    slug = "fsm.state.changed" if "FSM" in event_type.upper() else "fsm.events"
    return f"dev.archon-intelligence.{slug}.v1"


make_event = support.EventMaker(BASE, _topic, source_node_id="reducer-1")
at = make_event.at


def transition(
    fsm_type: str,
    entity_id: str,
    from_state: str,
    action: str,
    to_state: str,
    *,
    when: datetime,
    metadata: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Event:
    payload: dict[str, Any] = {
        "fsm_type": fsm_type,
        "entity_id": entity_id,
        "from_state": from_state,
        "action": action,
        "to_state": to_state,
    }
    if metadata is not None:
        payload["metadata"] = metadata
    return make_event("FSM_STATE_TRANSITION", payload, when=when, **kwargs)


def acquire(
    entity_id: str,
    lease_id: str,
    epoch: int,
    *,
    when: datetime,
    fsm_type: str = "INGESTION",
    expires: datetime | None = None,
) -> Event:
    payload: dict[str, Any] = {
        "fsm_type": fsm_type,
        "entity_id": entity_id,
        "lease_id": lease_id,
        "lease_epoch": epoch,
    }
    if expires is not None:
        payload["lease_expires_at"] = expires.isoformat()
    return make_event("LEASE_ACQUIRED", payload, when=when)


def release(
    entity_id: str, lease_id: str, epoch: int, *, when: datetime, fsm_type: str = "INGESTION"
) -> Event:
    payload = {"fsm_type": fsm_type, "entity_id": entity_id, "lease_id": lease_id}
    return make_event("LEASE_RELEASED", {**payload, "lease_epoch": epoch}, when=when)


def wf_event(kind: str, workflow_id: str, *, when: datetime, **payload: Any) -> Event:
    correlation_id = payload.pop("correlation_id", None)
    return make_event(
        f"INTELLIGENCE_WORKFLOW_{kind}",
        {"workflow_id": workflow_id, **payload},
        when=when,
        correlation_id=correlation_id,
    )


async def write(db: asyncpg.Connection, *events: Event) -> batch.BatchResult:
    return await support.write_batch(db, events, HANDLERS)


async def fsm_row(db: asyncpg.Connection, fsm_type: str, entity_id: str) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT * FROM intelligence.fsm_state WHERE fsm_type = $1 AND entity_id = $2",
        fsm_type,
        entity_id,
    )
    assert row is not None
    return dict(row)


async def history(db: asyncpg.Connection, fsm_type: str, entity_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT * FROM intelligence.fsm_state_history WHERE fsm_type = $1 AND entity_id = $2 "
        "ORDER BY transitioned_at, id",
        fsm_type,
        entity_id,
    )
    return [dict(r) for r in rows]


async def wf_row(db: asyncpg.Connection, workflow_id: str) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT * FROM intelligence.workflow_executions WHERE workflow_id = $1", workflow_id
    )
    assert row is not None
    return dict(row)


def ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


async def count(db: asyncpg.Connection, table: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {table}"))


# --- FSM_STATE_TRANSITION ---------------------------------------------------------------------


async def test_transition_writes_state_and_one_history_row(db: asyncpg.Connection) -> None:
    event = transition(
        "ingestion",
        "doc_123",
        "received",
        "Start_Processing",
        "processing",
        when=at(1),
        metadata={"worker": "w-1", "omnisink_lease": "spoofed"},
        correlation_id="req-42",
    )
    result = await write(db, event)
    assert result.new == [event]
    assert not result.rejected

    row = await fsm_row(db, "INGESTION", "doc_123")
    assert row["id"] == uuid.uuid5(FOREIGN_ID_NAMESPACE, "fsm/INGESTION/doc_123")
    assert row["current_state"] == "PROCESSING"
    assert row["previous_state"] == "RECEIVED"
    assert row["transition_timestamp"] == at(1)
    assert row["transition_event_id"] == event.event_id
    # The producer's key named like the sink's former bookkeeping is plain data and spoofs no
    # lease; a non-UUID correlation is kept as sent.
    assert js(row["metadata"]) == {
        "worker": "w-1",
        "omnisink_lease": "spoofed",
        "last_action": "START_PROCESSING",
        "correlation_id": "req-42",
    }
    assert (row["lease_id"], row["lease_epoch"], row["lease_expires_at"]) == (None, None, None)
    assert (row["lease_event_id"], row["lease_top_id"], row["lease_released"]) == (None, None, None)
    assert row["created_at"] == at(1)

    [h] = await history(db, "INGESTION", "doc_123")
    assert (h["from_state"], h["to_state"], h["action"]) == (
        "RECEIVED",
        "PROCESSING",
        "START_PROCESSING",
    )
    assert h["transitioned_at"] == at(1)
    assert h["duration_ms"] is None
    assert h["correlation_id"] == "req-42"
    assert js(h["metadata"]) == {
        "worker": "w-1",
        "omnisink_lease": "spoofed",
        "last_action": "START_PROCESSING",
        "correlation_id": "req-42",
        "event_id": str(event.event_id),
    }
    assert h["success"] is True
    assert h["error_message"] is None
    assert h["partition_key"] == date(2025, 11, 14)


async def test_history_partition_key_is_the_utc_day_of_the_event(db: asyncpg.Connection) -> None:
    late = datetime(2025, 11, 14, 23, 30, tzinfo=UTC)
    await write(
        db, transition("QUALITY_ASSESSMENT", "q", "RAW", "START_ASSESSMENT", "ASSESSING", when=late)
    )
    [h] = await history(db, "QUALITY_ASSESSMENT", "q")
    assert h["partition_key"] == date(2025, 11, 14)
    assert h["correlation_id"] is None
    assert "correlation_id" not in js(h["metadata"])


WALKS: dict[str, list[tuple[str, str, str]]] = {
    "INGESTION": [
        ("RECEIVED", "START_PROCESSING", "PROCESSING"),
        ("PROCESSING", "FAIL", "FAILED"),
        ("FAILED", "RETRY", "PROCESSING"),
        ("PROCESSING", "COMPLETE_INDEXING", "INDEXED"),
        ("INDEXED", "REINDEX", "PROCESSING"),
        ("PROCESSING", "COMPLETE_INDEXING", "INDEXED"),
    ],
    "PATTERN_LEARNING": [
        ("FOUNDATION", "ADVANCE_TO_MATCHING", "MATCHING"),
        ("MATCHING", "ADVANCE_TO_VALIDATION", "VALIDATION"),
        ("VALIDATION", "FAIL", "FAILED"),
        ("FAILED", "RETRY", "FOUNDATION"),
        ("FOUNDATION", "ADVANCE_TO_MATCHING", "MATCHING"),
        ("MATCHING", "ADVANCE_TO_VALIDATION", "VALIDATION"),
        ("VALIDATION", "ADVANCE_TO_TRACEABILITY", "TRACEABILITY"),
        ("TRACEABILITY", "COMPLETE_LEARNING", "COMPLETED"),
        ("COMPLETED", "RELEARN", "FOUNDATION"),
    ],
    "QUALITY_ASSESSMENT": [
        ("RAW", "FAIL", "FAILED"),
        ("FAILED", "RETRY", "ASSESSING"),
        ("ASSESSING", "COMPLETE_SCORING", "SCORED"),
        ("SCORED", "STORE_RESULTS", "STORED"),
        ("STORED", "REASSESS", "ASSESSING"),
        ("ASSESSING", "FAIL", "FAILED"),
    ],
}


@pytest.mark.parametrize("fsm_type", sorted(WALKS))
async def test_a_valid_walk_through_each_fsm(db: asyncpg.Connection, fsm_type: str) -> None:
    gaps_s = [1.5, 2.25, 0.125, 7, 3, 11, 0.5, 2, 1]
    times = [at(sum(gaps_s[:i])) for i in range(len(WALKS[fsm_type]))]
    events = [
        transition(fsm_type, "e-1", f, a, t, when=when)
        for (f, a, t), when in zip(WALKS[fsm_type], times, strict=False)
    ]
    result = await write(db, *events)
    assert not result.rejected
    assert len(result.new) == len(events)

    row = await fsm_row(db, fsm_type, "e-1")
    last_from, last_action, last_to = WALKS[fsm_type][-1]
    assert (row["current_state"], row["previous_state"]) == (last_to, last_from)
    assert js(row["metadata"])["last_action"] == last_action
    assert row["transition_timestamp"] == times[-1]
    assert row["created_at"] == times[0]

    rows = await history(db, fsm_type, "e-1")
    assert [(h["from_state"], h["action"], h["to_state"]) for h in rows] == WALKS[fsm_type]
    assert [h["transitioned_at"] for h in rows] == times
    assert [h["duration_ms"] for h in rows] == [None] + [
        ms(b - a) for a, b in itertools.pairwise(times)
    ]


# Every (from, action, to) of the three FSMs that is not a transition: wrong source, wrong
# action, wrong target, terminal states, and the FAIL sources the contract does not list.
INVALID = [
    ("INGESTION", "RECEIVED", "COMPLETE_INDEXING", "INDEXED"),
    ("INGESTION", "INDEXED", "FAIL", "FAILED"),
    ("INGESTION", "RECEIVED", "START_PROCESSING", "INDEXED"),
    ("INGESTION", "FAILED", "RETRY", "RECEIVED"),
    ("INGESTION", "PROCESSING", "REINDEX", "PROCESSING"),
    ("PATTERN_LEARNING", "FOUNDATION", "ADVANCE_TO_VALIDATION", "VALIDATION"),
    ("PATTERN_LEARNING", "COMPLETED", "FAIL", "FAILED"),
    ("PATTERN_LEARNING", "FAILED", "FAIL", "FAILED"),
    ("PATTERN_LEARNING", "COMPLETED", "RELEARN", "MATCHING"),
    ("PATTERN_LEARNING", "MATCHING", "ADVANCE_TO_MATCHING", "MATCHING"),
    ("QUALITY_ASSESSMENT", "RAW", "COMPLETE_SCORING", "SCORED"),
    ("QUALITY_ASSESSMENT", "STORED", "FAIL", "FAILED"),
    ("QUALITY_ASSESSMENT", "FAILED", "RETRY", "RAW"),
    ("QUALITY_ASSESSMENT", "SCORED", "STORE_RESULTS", "ASSESSING"),
    # a transition of another FSM
    ("QUALITY_ASSESSMENT", "RECEIVED", "START_PROCESSING", "PROCESSING"),
    # an unknown FSM type
    ("SUMMARISATION", "RAW", "START", "RUNNING"),
]


@pytest.mark.parametrize(("fsm_type", "from_state", "action", "to_state"), INVALID)
async def test_an_invalid_transition_is_rejected(
    db: asyncpg.Connection, fsm_type: str, from_state: str, action: str, to_state: str
) -> None:
    bad = transition(fsm_type, "doc-9", from_state, action, to_state, when=at(1))
    good = transition(
        "INGESTION", "doc-1", "RECEIVED", "START_PROCESSING", "PROCESSING", when=at(2)
    )
    result = await write(db, bad, good)
    assert result.new == [good]
    [(event, reject)] = result.rejected
    assert event is bad
    assert reject.kind == "invalid_transition"
    assert f"{from_state} -{action}-> {to_state}" in reject.message
    assert fsm_type in reject.message
    assert await db.fetchval("SELECT count(*) FROM event_logs WHERE id = $1", bad.event_id) == 0
    assert (
        await db.fetchval("SELECT count(*) FROM intelligence.fsm_state WHERE entity_id = 'doc-9'")
        == 0
    )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM intelligence.fsm_state_history WHERE entity_id = 'doc-9'"
        )
        == 0
    )


def test_the_fsm_definitions_are_the_contracts() -> None:
    sizes = {name: len(d.transitions) for name, d in FSM_DEFINITIONS.items()}
    # chain + FAIL sources + the way back + RETRY
    assert sizes == {
        "INGESTION": 2 + 2 + 1 + 1,
        "PATTERN_LEARNING": 4 + 4 + 1 + 1,
        "QUALITY_ASSESSMENT": 3 + 3 + 1 + 1,
    }
    assert {name: d.initial for name, d in FSM_DEFINITIONS.items()} == {
        "INGESTION": "RECEIVED",
        "PATTERN_LEARNING": "FOUNDATION",
        "QUALITY_ASSESSMENT": "RAW",
    }


async def test_an_older_transition_arriving_late_never_moves_state_back(
    db: asyncpg.Connection,
) -> None:
    first = transition(
        "INGESTION",
        "d",
        "RECEIVED",
        "START_PROCESSING",
        "PROCESSING",
        when=at(1),
        metadata={"n": 1},
    )
    second = transition(
        "INGESTION",
        "d",
        "PROCESSING",
        "COMPLETE_INDEXING",
        "INDEXED",
        when=at(4),
        metadata={"n": 2},
    )
    await write(db, second)
    [only] = await history(db, "INGESTION", "d")
    assert only["duration_ms"] is None

    await write(db, first)
    row = await fsm_row(db, "INGESTION", "d")
    assert (row["current_state"], row["previous_state"]) == ("INDEXED", "PROCESSING")
    assert row["transition_event_id"] == second.event_id
    assert js(row["metadata"])["n"] == 2
    assert row["created_at"] == at(1)
    # The late predecessor gets its row, and its successor's duration is fixed.
    rows = await history(db, "INGESTION", "d")
    assert [(h["to_state"], h["duration_ms"]) for h in rows] == [
        ("PROCESSING", None),
        ("INDEXED", 3000.0),
    ]


async def test_equal_timestamps_are_ordered_by_event_id(db: asyncpg.Connection) -> None:
    low, high = sorted([uuid.uuid4(), uuid.uuid4()])
    a = transition(
        "INGESTION", "tie", "RECEIVED", "START_PROCESSING", "PROCESSING", when=at(1), event_id=high
    )
    b = transition("INGESTION", "tie", "RECEIVED", "FAIL", "FAILED", when=at(1), event_id=low)
    await write(db, a)
    await write(db, b)
    row = await fsm_row(db, "INGESTION", "tie")
    assert row["current_state"] == "PROCESSING"
    rows = await history(db, "INGESTION", "tie")
    assert sorted((h["to_state"], h["duration_ms"]) for h in rows) == [
        ("FAILED", None),
        ("PROCESSING", 0.0),
    ]


# --- the history trigger's switch (migration 017) ---------------------------------------------


async def test_other_writers_keep_the_history_trigger(db: asyncpg.Connection) -> None:
    await write(
        db,
        transition(
            "INGESTION",
            "doc_123",
            "RECEIVED",
            "START_PROCESSING",
            "PROCESSING",
            when=at(1),
            correlation_id="req-1",
        ),
    )
    assert await count(db, "intelligence.fsm_state_history") == 1

    # The seed's own application, outside the sink: its UPDATE is recorded by the trigger.
    await db.execute(
        """
        UPDATE intelligence.fsm_state
        SET current_state = 'INDEXED', previous_state = current_state,
            transition_timestamp = $1,
            metadata = metadata || '{"last_action": "COMPLETE_INDEXING"}'
        WHERE fsm_type = 'INGESTION' AND entity_id = 'doc_123'
        """,
        at(3),
    )
    rows = await history(db, "INGESTION", "doc_123")
    assert len(rows) == 2
    by_trigger = rows[1]
    assert (by_trigger["from_state"], by_trigger["to_state"], by_trigger["action"]) == (
        "PROCESSING",
        "INDEXED",
        "COMPLETE_INDEXING",
    )
    assert by_trigger["duration_ms"] == 2000.0
    assert by_trigger["correlation_id"] == "req-1"

    # And an insert by another writer in a transaction where the sink wrote before.
    async with db.transaction():
        await batch.write_events(
            db,
            [transition("INGESTION", "x", "RECEIVED", "FAIL", "FAILED", when=at(5))],
            HANDLERS,
        )
        assert await db.fetchval("SELECT current_setting('omnisink.fsm_history', true)") == "sink"
    assert await db.fetchval("SELECT current_setting('omnisink.fsm_history', true)") == ""
    await db.execute(
        "INSERT INTO intelligence.fsm_state (fsm_type, entity_id, current_state, metadata) "
        "VALUES ('INGESTION', 'manual', 'RECEIVED', '{\"last_action\": \"CREATE\"}')"
    )
    [manual] = await history(db, "INGESTION", "manual")
    assert (manual["to_state"], manual["action"]) == ("RECEIVED", "CREATE")
    assert len(await history(db, "INGESTION", "x")) == 1


# --- leases -------------------------------------------------------------------------------------


async def lease(db: asyncpg.Connection, entity_id: str) -> tuple[Any, Any, Any]:
    row = await fsm_row(db, "INGESTION", entity_id)
    return (row["lease_id"], row["lease_epoch"], row["lease_expires_at"])


async def test_lease_acquired_sets_the_lease_columns(db: asyncpg.Connection) -> None:
    await write(
        db, transition("INGESTION", "doc", "RECEIVED", "START_PROCESSING", "PROCESSING", when=at(1))
    )
    await write(db, acquire("doc", "lease_123", 1, when=at(2), expires=at(302)))
    assert await lease(db, "doc") == ("lease_123", 1, at(302))
    row = await fsm_row(db, "INGESTION", "doc")
    assert row["current_state"] == "PROCESSING"
    assert row["transition_timestamp"] == at(1)
    assert len(await history(db, "INGESTION", "doc")) == 1


async def test_lease_fencing(db: asyncpg.Connection) -> None:
    await write(db, acquire("doc", "L2", 2, when=at(1), expires=at(100)))
    # A lower epoch is ignored, whenever it happened.
    await write(db, acquire("doc", "L1", 1, when=at(5), expires=at(500)))
    assert await lease(db, "doc") == ("L2", 2, at(100))
    # A release with another lease id, or another epoch, is ignored.
    await write(db, release("doc", "L1", 1, when=at(6)), release("doc", "L2", 3, when=at(7)))
    await write(db, release("doc", "other", 2, when=at(8)))
    assert await lease(db, "doc") == ("L2", 2, at(100))
    # Same lease, same epoch: a renewal; the latest acquire's expiry holds.
    await write(db, acquire("doc", "L2", 2, when=at(9), expires=at(400)))
    await write(db, acquire("doc", "L2", 2, when=at(3), expires=at(200)))
    assert await lease(db, "doc") == ("L2", 2, at(400))
    # The matching release clears it.
    await write(db, release("doc", "L2", 2, when=at(10)))
    assert await lease(db, "doc") == (None, None, None)
    # A late acquire of a released lease, or of a lower epoch, does not bring it back.
    await write(db, acquire("doc", "L2", 2, when=at(2), expires=at(100)))
    await write(db, acquire("doc", "L1", 1, when=at(11), expires=at(600)))
    assert await lease(db, "doc") == (None, None, None)
    # A higher epoch does.
    await write(db, acquire("doc", "L3", 3, when=at(12), expires=at(700)))
    assert await lease(db, "doc") == ("L3", 3, at(700))


async def test_equal_epoch_with_another_lease_id_the_later_acquire_holds(
    db: asyncpg.Connection,
) -> None:
    await write(db, acquire("a", "new", 1, when=at(400), expires=at(700)))
    await write(db, acquire("a", "old", 1, when=at(1), expires=at(301)))
    assert await lease(db, "a") == ("new", 1, at(700))
    await write(db, release("a", "old", 1, when=at(302)))
    assert await lease(db, "a") == ("new", 1, at(700))


async def test_release_before_acquire(db: asyncpg.Connection) -> None:
    # The release topic was read first: a placeholder remembers the release.
    await write(db, release("doc", "L1", 1, when=at(60)))
    row = await fsm_row(db, "INGESTION", "doc")
    assert (row["current_state"], row["previous_state"]) == ("RECEIVED", None)
    assert row["transition_event_id"] is None
    assert row["transition_timestamp"] == at(60)
    assert await lease(db, "doc") == (None, None, None)
    await write(db, acquire("doc", "L1", 1, when=at(1), expires=at(301)))
    assert await lease(db, "doc") == (None, None, None)
    # The placeholder's time is the earliest lease event's, whatever the arrival order.
    assert (await fsm_row(db, "INGESTION", "doc"))["transition_timestamp"] == at(1)
    assert await history(db, "INGESTION", "doc") == []
    # In one batch too.
    await write(db, release("b", "L1", 1, when=at(60)), acquire("b", "L1", 1, when=at(1)))
    assert await lease(db, "b") == (None, None, None)


async def test_lease_placeholder_then_transition(db: asyncpg.Connection) -> None:
    await write(db, acquire("p", "L1", 1, when=at(5), fsm_type="pattern_learning", expires=at(305)))
    row = await fsm_row(db, "PATTERN_LEARNING", "p")
    assert row["current_state"] == "FOUNDATION"
    assert row["transition_event_id"] is None
    assert row["transition_timestamp"] == at(5)
    assert row["created_at"] == at(5)
    assert row["id"] == uuid.uuid5(FOREIGN_ID_NAMESPACE, "fsm/PATTERN_LEARNING/p")
    assert await history(db, "PATTERN_LEARNING", "p") == []

    # Any real transition wins over the placeholder, even one older than its lease event.
    moved = transition(
        "PATTERN_LEARNING",
        "p",
        "FOUNDATION",
        "ADVANCE_TO_MATCHING",
        "MATCHING",
        when=at(2),
        metadata={"k": "v"},
    )
    await write(db, moved)
    row = await fsm_row(db, "PATTERN_LEARNING", "p")
    assert (row["current_state"], row["previous_state"]) == ("MATCHING", "FOUNDATION")
    assert row["transition_timestamp"] == at(2)
    assert row["transition_event_id"] == moved.event_id
    assert row["created_at"] == at(2)
    assert (row["lease_id"], row["lease_epoch"]) == ("L1", 1)
    metadata = js(row["metadata"])
    assert metadata["k"] == "v"
    assert metadata["last_action"] == "ADVANCE_TO_MATCHING"
    assert row["lease_top_id"] == "L1"
    assert "omnisink_lease" not in metadata
    [h] = await history(db, "PATTERN_LEARNING", "p")
    assert "omnisink_lease" not in js(h["metadata"])


# --- what the intelligence producers really send (/work/shared/design/producers.md) -----------


def effect_wire(
    event_type: str, payload: dict[str, Any], *, seconds: float, correlation_id: str
) -> dict[str, Any]:
    """kafka_event_effect's envelope: time.time() as a float, a nested source, no metadata."""
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "correlation_id": correlation_id,
        "timestamp": at(seconds).timestamp(),
        "version": "1.0.0",
        "source": {
            "service": "omniintelligence",
            "node_type": "kafka_event_effect",
            "node_id": "kafka-event-effect-1",
        },
        "payload": payload,
    }


def state_changed(
    entity_id: str, previous: str, action: str, current: str, *, seconds: float
) -> dict[str, Any]:
    """The declared fsm.state.changed.v1 record of one transition (no from_state / to_state)."""
    return effect_wire(
        "FSM_STATE_CHANGED",
        {
            "fsm_type": "PATTERN_LEARNING",
            "entity_id": entity_id,
            "previous_state": previous,
            "current_state": current,
            "action": action,
            "transition_timestamp": at(seconds).isoformat(),
            "pattern_count": 3,
        },
        seconds=seconds,
        correlation_id=str(uuid.uuid4()),
    )


CHANGED_TOPIC = "dev.archon-intelligence.fsm.state.changed.v1"


async def test_the_reducers_state_changed_records_are_transitions(db: asyncpg.Connection) -> None:
    walk = [
        state_changed("doc_005_d8dbc7", "FOUNDATION", "ADVANCE_TO_MATCHING", "MATCHING", seconds=1),
        state_changed(
            "doc_005_d8dbc7", "MATCHING", "ADVANCE_TO_VALIDATION", "VALIDATION", seconds=3
        ),
    ]
    # The later transition first: the reducer's records are order-tolerant like any other.
    events = support.as_produced([(CHANGED_TOPIC, walk[1]), (CHANGED_TOPIC, walk[0])])
    assert {e.event_type for e in events} == {"FSM_STATE_TRANSITION"}
    for event in events:
        await write(db, event)
    row = await fsm_row(db, "PATTERN_LEARNING", "doc_005_d8dbc7")
    assert (row["previous_state"], row["current_state"]) == ("MATCHING", "VALIDATION")
    assert row["transition_timestamp"] == at(3)
    assert js(row["metadata"]) == {
        "last_action": "ADVANCE_TO_VALIDATION",
        "correlation_id": walk[1]["correlation_id"],
    }
    first, second = await history(db, "PATTERN_LEARNING", "doc_005_d8dbc7")
    assert (first["from_state"], first["to_state"], first["action"]) == (
        "FOUNDATION",
        "MATCHING",
        "ADVANCE_TO_MATCHING",
    )
    assert first["transitioned_at"] == at(1)
    assert (second["from_state"], second["to_state"]) == ("MATCHING", "VALIDATION")
    assert second["duration_ms"] == pytest.approx(2000)
    logged = await db.fetchrow("SELECT * FROM event_logs WHERE id = $1", events[0].event_id)
    assert logged["event_type"] == "FSM_STATE_TRANSITION"
    metadata = js(logged["metadata"])
    assert metadata["original_event_type"] == "FSM_STATE_CHANGED"
    assert metadata["envelope_extra"]["source"]["node_type"] == "kafka_event_effect"


async def test_a_state_changed_record_outside_its_fsm_is_an_invalid_transition(
    db: asyncpg.Connection,
) -> None:
    [event] = support.as_produced(
        [
            (
                CHANGED_TOPIC,
                state_changed("d", "FOUNDATION", "COMPLETE_LEARNING", "COMPLETED", seconds=1),
            )
        ]
    )
    result = await write(db, event)
    [(_, reject)] = result.rejected
    assert reject.kind == "invalid_transition"
    assert "FOUNDATION -COMPLETE_LEARNING-> COMPLETED" in reject.message
    assert await count(db, "intelligence.fsm_state") == 0


def adapter_wire(outcome: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The intelligence adapter's EventPublisher envelope: ISO time, metadata null."""
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": f"omninode.intelligence.event.code_analysis_{outcome}.v1",
        "correlation_id": str(uuid.uuid4()),
        "causation_id": str(uuid.uuid4()),
        "timestamp": at(9).isoformat(),
        "version": "1.0.0",
        "source": {
            "service": "archon-intelligence",
            "instance_id": "intelligence-adapter-0a1b2c3d",
            "hostname": None,
        },
        "metadata": None,
        "payload": payload,
    }


async def test_fsm_intents_and_code_analysis_results_are_logged_under_their_names(
    db: asyncpg.Connection,
) -> None:
    def intent(fsm_type: str, entity_id: str, previous: str, current: str) -> dict[str, Any]:
        return effect_wire(
            f"FSM_{current}",
            {
                "fsm_type": fsm_type,
                "entity_id": entity_id,
                "previous_state": previous,
                "current_state": current,
                "quality_score": 0.92,
            },
            seconds=5,
            correlation_id=str(uuid.uuid4()),
        )

    completed = {
        "source_path": "src/app.py",
        "quality_score": 0.87,
        "onex_compliance": 0.9,
        "issues_count": 2,
        "recommendations_count": 1,
        "processing_time_ms": 123.45678,
        "operation_type": "COMPREHENSIVE_ANALYSIS",
        "complexity_score": 0.4,
        "maintainability_score": 0.8,
        "results_summary": {"issues": 2},
        "cache_hit": False,
    }
    failed = {
        "operation_type": "COMPREHENSIVE_ANALYSIS",
        "source_path": "src/app.rs",
        "error_message": "language not supported",
        "error_code": "UNSUPPORTED_LANGUAGE",
        "retry_allowed": True,
        "retry_count": 0,
        "processing_time_ms": 2.5,
        "error_details": {"error": "language not supported"},
        "suggested_action": "Check the file's language.",
    }
    prefix = "dev.archon-intelligence"
    sent = [
        (f"{prefix}.ingestion.completed.v1", intent("INGESTION", "d1", "PROCESSING", "INDEXED")),
        (
            f"{prefix}.pattern_learning.completed.v1",
            intent("PATTERN_LEARNING", "d2", "TRACEABILITY", "COMPLETED"),
        ),
        (
            f"{prefix}.quality_assessment.completed.v1",
            intent("QUALITY_ASSESSMENT", "d3", "SCORED", "STORED"),
        ),
        (f"{prefix}.ingestion.failed.v1", intent("INGESTION", "d4", "RECEIVED", "FAILED")),
        (f"{prefix}.intelligence.code-analysis-completed.v1", adapter_wire("completed", completed)),
        (f"{prefix}.intelligence.code-analysis-failed.v1", adapter_wire("failed", failed)),
    ]
    # Known types: not dead-lettered even with OMNISINK_UNKNOWN_EVENTS=dlq.
    events = support.as_produced(sent, keep_unknown=False)
    assert [e.event_type for e in events] == [
        "FSM_INDEXED",
        "FSM_COMPLETED",
        "FSM_STORED",
        "FSM_FAILED",
        "CODE_ANALYSIS_COMPLETED",
        "CODE_ANALYSIS_FAILED",
    ]
    result = await support.write_batch(db, events, registry.HANDLERS)
    assert result.new == events
    assert not result.rejected
    rows = await db.fetch("SELECT * FROM event_logs ORDER BY event_type")
    assert len(rows) == len(events)
    for row in rows:
        metadata = js(row["metadata"])
        expected = "omninode.intelligence.event.code_analysis_"
        if row["event_type"].startswith("CODE_ANALYSIS"):
            assert metadata["original_event_type"].startswith(expected)
            assert "causation_id" in metadata
        else:
            assert "original_event_type" not in metadata
    # The intents are the reducer's notice of a state it already sent: they write no FSM row.
    assert await count(db, "intelligence.fsm_state") == 0
    assert await count(db, "intelligence.fsm_state_history") == 0
    assert await count(db, "intelligence.workflow_executions") == 0


# --- intelligence workflows -------------------------------------------------------------------


async def test_workflow_started(db: asyncpg.Connection) -> None:
    corr = uuid.uuid4()
    started = wf_event(
        "STARTED",
        "wf-1",
        when=at(1),
        operation_type="DOCUMENT_INGESTION",
        entity_id="doc-1",
        input={"path": "/a"},
        correlation_id=corr,
    )
    result = await write(db, started)
    assert result.new == [started]
    row = await wf_row(db, "wf-1")
    assert row["operation_type"] == "DOCUMENT_INGESTION"
    assert row["entity_id"] == "doc-1"
    assert row["status"] == "RUNNING"
    assert row["current_step"] is None
    assert js(row["completed_steps"]) == []
    assert row["failed_step"] is None
    assert row["started_at"] == at(1)
    assert row["completed_at"] is None
    assert row["duration_ms"] is None
    assert row["correlation_id"] == str(corr)
    assert js(row["input_payload"]) == {"path": "/a"}
    assert row["output_results"] is None
    assert row["error_message"] is None
    assert row["retry_count"] == 0
    assert (row["state_event_at"], row["state_event_id"]) == (at(1), started.event_id)
    assert row["created_at"] == at(1)
    assert (row["started_event_at"], row["started_event_id"]) == (at(1), started.event_id)
    assert (row["step_event_at"], row["step_event_id"]) == (None, None)
    assert row["metadata"] is None


async def test_workflow_without_correlation_uses_its_id_and_keeps_the_rest_as_input(
    db: asyncpg.Connection,
) -> None:
    await write(
        db,
        wf_event(
            "STARTED", "wf-2", when=at(1), operation_type="QA", entity_id="e", priority="high"
        ),
    )
    row = await wf_row(db, "wf-2")
    assert row["correlation_id"] == "wf-2"
    assert js(row["input_payload"]) == {"priority": "high"}


async def test_workflow_steps_completed_and_failed(db: asyncpg.Connection) -> None:
    common = {"operation_type": "DOCUMENT_INGESTION", "entity_id": "doc-1"}
    await write(
        db,
        wf_event("STARTED", "ok", when=at(0), **common),
        wf_event("STEP_COMPLETED", "ok", when=at(2), step="parse", **common),
        wf_event("STEP_COMPLETED", "ok", when=at(3), step="embed", **common),
        wf_event("STEP_COMPLETED", "ok", when=at(4), step_name="index", **common),
        wf_event("COMPLETED", "ok", when=at(5.5), results={"chunks": 4}, **common),
    )
    row = await wf_row(db, "ok")
    assert row["status"] == "COMPLETED"
    assert row["current_step"] == "index"
    assert js(row["completed_steps"]) == ["embed", "index", "parse"]
    assert row["completed_at"] == at(5.5)
    assert row["duration_ms"] == 5500.0
    assert js(row["output_results"]) == {"chunks": 4}
    assert row["error_message"] is None

    await write(
        db,
        wf_event("STARTED", "bad", when=at(0), **common),
        wf_event("STEP_COMPLETED", "bad", when=at(1), step="parse"),
        wf_event("FAILED", "bad", when=at(2), error="embedding service down", step="embed"),
    )
    row = await wf_row(db, "bad")
    assert row["status"] == "FAILED"
    assert row["error_message"] == "embedding service down"
    assert row["failed_step"] == "embed"
    assert row["current_step"] == "parse"
    assert row["completed_at"] == at(2)
    assert row["duration_ms"] == 2000.0
    assert row["output_results"] is None

    await write(
        db, wf_event("FAILED", "structured", when=at(2), error={"message": "boom", "code": 7})
    )
    row = await wf_row(db, "structured")
    assert js(row["error_message"]) == {"message": "boom", "code": 7}
    await write(db, wf_event("FAILED", "coded", when=at(2), error_message=503))
    assert (await wf_row(db, "coded"))["error_message"] == "503"


async def test_workflow_children_before_started_make_a_placeholder(
    db: asyncpg.Connection,
) -> None:
    step = wf_event("STEP_COMPLETED", "wf", when=at(5), step="embed", correlation_id="c-1")
    await write(db, step)
    row = await wf_row(db, "wf")
    assert row["operation_type"] == "UNKNOWN"
    assert row["entity_id"] == ""
    assert row["status"] == "RUNNING"
    assert row["state_event_at"] is None
    assert row["correlation_id"] == "c-1"
    assert row["started_at"] == at(5)
    assert row["current_step"] == "embed"
    assert row["input_payload"] is None

    done = wf_event("COMPLETED", "wf", when=at(9), results={"n": 1}, entity_id="doc-9")
    await write(db, done)
    row = await wf_row(db, "wf")
    assert row["status"] == "COMPLETED"
    assert row["entity_id"] == "doc-9"
    assert row["duration_ms"] == 4000.0  # from the earliest event known so far

    started = wf_event(
        "STARTED",
        "wf",
        when=at(1),
        operation_type="DOCUMENT_INGESTION",
        entity_id="doc-1",
        input={"a": 1},
        correlation_id="c-0",
    )
    await write(db, started)
    row = await wf_row(db, "wf")
    # STARTED's facts replace the stand-ins; it is older than COMPLETED, so status stays.
    assert row["operation_type"] == "DOCUMENT_INGESTION"
    assert row["entity_id"] == "doc-1"
    assert row["correlation_id"] == "c-0"
    assert js(row["input_payload"]) == {"a": 1}
    assert row["status"] == "COMPLETED"
    assert (row["state_event_at"], row["state_event_id"]) == (at(9), done.event_id)
    assert row["started_at"] == at(1)
    assert row["created_at"] == at(1)
    assert row["completed_at"] == at(9)
    # The duration trigger recomputes when started_at arrives after completed_at.
    assert row["duration_ms"] == 8000.0
    assert row["current_step"] == "embed"


async def test_workflow_newest_status_wins_and_a_restart_clears_completion(
    db: asyncpg.Connection,
) -> None:
    common = {"operation_type": "OP", "entity_id": "e"}
    failed = wf_event("FAILED", "r", when=at(3), error="x", step="s1")
    await write(db, failed)
    await write(db, wf_event("STEP_COMPLETED", "r", when=at(2), step="s0"))
    await write(db, wf_event("STARTED", "r", when=at(1), **common))
    row = await wf_row(db, "r")
    assert (row["status"], row["failed_step"], row["error_message"]) == ("FAILED", "s1", "x")
    assert row["duration_ms"] == 2000.0
    # An older step event does not move current_step back.
    await write(db, wf_event("STEP_COMPLETED", "r", when=at(2.5), step="s2"))
    await write(db, wf_event("STEP_COMPLETED", "r", when=at(1.5), step="s00"))
    row = await wf_row(db, "r")
    assert row["current_step"] == "s2"
    assert js(row["completed_steps"]) == ["s0", "s00", "s2"]
    # A newer STARTED (a restart) wins: running again, completion cleared.
    await write(db, wf_event("STARTED", "r", when=at(10), **common))
    row = await wf_row(db, "r")
    assert row["status"] == "RUNNING"
    assert (row["completed_at"], row["duration_ms"], row["error_message"]) == (None, None, None)
    assert row["failed_step"] is None
    assert row["started_at"] == at(1)


# --- schema rejects ---------------------------------------------------------------------------

REJECTS: list[tuple[str, dict[str, Any], str]] = [
    (
        "FSM_STATE_TRANSITION",
        {
            "fsm_type": "INGESTION",
            "from_state": "RECEIVED",
            "action": "START_PROCESSING",
            "to_state": "PROCESSING",
        },
        "entity_id",
    ),
    (
        "FSM_STATE_TRANSITION",
        {
            "fsm_type": "INGESTION",
            "entity_id": "d",
            "action": "START_PROCESSING",
            "to_state": "PROCESSING",
        },
        "from_state",
    ),
    (
        "FSM_STATE_TRANSITION",
        {
            "fsm_type": "INGESTION",
            "entity_id": "x" * 256,
            "from_state": "RECEIVED",
            "action": "START_PROCESSING",
            "to_state": "PROCESSING",
        },
        "entity_id",
    ),
    (
        "FSM_STATE_TRANSITION",
        {
            "fsm_type": "INGESTION",
            "entity_id": "d",
            "from_state": "RECEIVED",
            "action": "START_PROCESSING",
            "to_state": "PROCESSING",
            "metadata": ["not", "an", "object"],
        },
        "metadata",
    ),
    (
        "FSM_STATE_TRANSITION",
        {
            "fsm_type": 7,
            "entity_id": "d",
            "from_state": "RECEIVED",
            "action": "START_PROCESSING",
            "to_state": "PROCESSING",
        },
        "fsm_type",
    ),
    ("LEASE_ACQUIRED", {"fsm_type": "INGESTION", "entity_id": "d", "lease_epoch": 1}, "lease_id"),
    (
        "LEASE_ACQUIRED",
        {"fsm_type": "INGESTION", "entity_id": "d", "lease_id": "L", "lease_epoch": 2**31},
        "lease_epoch",
    ),
    (
        "LEASE_ACQUIRED",
        {"fsm_type": "INGESTION", "entity_id": "d", "lease_id": "L", "lease_epoch": True},
        "lease_epoch",
    ),
    (
        "LEASE_ACQUIRED",
        {
            "fsm_type": "INGESTION",
            "entity_id": "d",
            "lease_id": "L",
            "lease_epoch": 1,
            "lease_expires_at": "soon",
        },
        "lease_expires_at",
    ),
    (
        "LEASE_RELEASED",
        {"fsm_type": "UNKNOWN_FSM", "entity_id": "d", "lease_id": "L", "lease_epoch": 1},
        "fsm_type",
    ),
    (
        "LEASE_RELEASED",
        {"fsm_type": "INGESTION", "entity_id": "d", "lease_id": "L" * 256, "lease_epoch": 1},
        "lease_id",
    ),
    ("INTELLIGENCE_WORKFLOW_STARTED", {"operation_type": "OP", "entity_id": "e"}, "workflow_id"),
    ("INTELLIGENCE_WORKFLOW_STARTED", {"workflow_id": "w", "entity_id": "e"}, "operation_type"),
    (
        "INTELLIGENCE_WORKFLOW_STARTED",
        {"workflow_id": "w", "operation_type": "O" * 51, "entity_id": "e"},
        "operation_type",
    ),
    (
        "INTELLIGENCE_WORKFLOW_STARTED",
        {"workflow_id": "w" * 256, "operation_type": "OP", "entity_id": "e"},
        "workflow_id",
    ),
    ("INTELLIGENCE_WORKFLOW_STEP_COMPLETED", {"workflow_id": "w"}, "step"),
    ("INTELLIGENCE_WORKFLOW_STEP_COMPLETED", {"workflow_id": "w", "step": "s" * 101}, "step"),
    ("INTELLIGENCE_WORKFLOW_STEP_COMPLETED", {"workflow_id": "w", "step": "  "}, "step"),
    ("INTELLIGENCE_WORKFLOW_FAILED", {"workflow_id": "w", "failed_step": {"x": 1}}, "failed_step"),
    ("INTELLIGENCE_WORKFLOW_COMPLETED", {"workflow_id": ["w"]}, "workflow_id"),
]


@pytest.mark.parametrize(("event_type", "payload", "field"), REJECTS)
async def test_schema_rejects(
    db: asyncpg.Connection, event_type: str, payload: dict[str, Any], field: str
) -> None:
    bad = make_event(event_type, payload, when=at(1))
    result = await write(db, bad)
    [(event, reject)] = result.rejected
    assert event is bad
    assert reject.kind == "schema"
    assert reject.message.startswith(field), reject.message
    assert "x" * 60 not in reject.message
    assert await count(db, "event_logs") == 0
    assert await count(db, "intelligence.fsm_state") == 0
    assert await count(db, "intelligence.workflow_executions") == 0


async def test_lenient_types_are_coerced(db: asyncpg.Connection) -> None:
    result = await write(
        db,
        make_event(
            "LEASE_ACQUIRED",
            {
                "fsm_type": "ingestion",
                "entity_id": 42,
                "lease_id": 7,
                "lease_epoch": "3",
                "lease_expires_at": "2025-11-14T13:00:00",
                "extra": {"kept": "in event_logs"},
            },
            when=at(1),
        ),
        wf_event("STARTED", "9", when=at(1), operation_type="OP", entity_id=5),
    )
    assert not result.rejected
    row = await fsm_row(db, "INGESTION", "42")
    assert (row["lease_id"], row["lease_epoch"], row["lease_expires_at"]) == (
        "7",
        3,
        datetime(2025, 11, 14, 13, tzinfo=UTC),
    )
    assert (await wf_row(db, "9"))["entity_id"] == "5"


# --- the property: any order, any batching, any duplicates ---------------------------------------

LEASE_IDS = st.sampled_from(["L-a", "L-b", "L-c"])
STEPS = st.sampled_from(["parse", "embed", "index", "Notify", "ändern"])
CORRELATIONS = st.one_of(st.none(), st.uuids(), st.sampled_from(["req-1", "req-2"]))


@st.composite
def fsm_specs(draw: st.DrawFn, n: int) -> list[tuple[str, dict[str, Any], Any]]:
    """A valid path of one entity (increasing times come later) plus lease events."""
    fsm_type = draw(st.sampled_from(sorted(FSM_DEFINITIONS)))
    entity = f"entity-{n}"
    definition = FSM_DEFINITIONS[fsm_type]
    specs: list[tuple[str, dict[str, Any], Any]] = []
    state = draw(st.sampled_from(sorted({f for f, _, _ in definition.transitions})))
    for _ in range(draw(st.integers(0, 5))):
        choices = sorted(t for t in definition.transitions if t[0] == state)
        from_state, action, to_state = draw(st.sampled_from(choices))
        payload = {
            "fsm_type": fsm_type if draw(st.booleans()) else fsm_type.lower(),
            "entity_id": entity,
            "from_state": from_state,
            "action": action,
            "to_state": to_state,
        }
        if draw(st.booleans()):
            payload["metadata"] = {"step": len(specs), "worker": draw(st.sampled_from("ab"))}
        specs.append(("FSM_STATE_TRANSITION", payload, draw(CORRELATIONS)))
        state = to_state
    for _ in range(draw(st.integers(0, 4))):
        lease: dict[str, Any] = {
            "fsm_type": fsm_type,
            "entity_id": entity,
            "lease_id": draw(LEASE_IDS),
            "lease_epoch": draw(st.integers(0, 3)),
        }
        if draw(st.booleans()):
            if draw(st.booleans()):
                lease["lease_expires_at"] = BASE + timedelta(minutes=draw(st.integers(0, 9)))
                lease["lease_expires_at"] = lease["lease_expires_at"].isoformat()
            specs.append(("LEASE_ACQUIRED", lease, None))
        else:
            specs.append(("LEASE_RELEASED", lease, None))
    if not specs:
        lease = {"fsm_type": fsm_type, "entity_id": entity, "lease_id": "L-a", "lease_epoch": 1}
        specs.append(("LEASE_RELEASED", lease, None))
    return specs


@st.composite
def workflow_specs(draw: st.DrawFn, n: int) -> list[tuple[str, dict[str, Any], Any]]:
    workflow_id = f"wf-{n}"
    operation_type = draw(st.sampled_from(["DOCUMENT_INGESTION", "PATTERN_LEARNING"]))
    entity = f"doc-{n}"
    correlation = draw(CORRELATIONS)
    specs: list[tuple[str, dict[str, Any], Any]] = []

    def common() -> dict[str, Any]:
        # Children may or may not repeat the workflow's facts (conflict-free: same values).
        out: dict[str, Any] = {"workflow_id": workflow_id}
        if draw(st.booleans()):
            out["operation_type"] = operation_type
        if draw(st.booleans()):
            out["entity_id"] = entity
        return out

    if draw(st.booleans()):
        started = {
            "workflow_id": workflow_id,
            "operation_type": operation_type,
            "entity_id": entity,
        }
        if draw(st.booleans()):
            started["input"] = {"n": n}
        specs.append(("INTELLIGENCE_WORKFLOW_STARTED", started, correlation))
    for step in draw(st.lists(STEPS, max_size=4)):
        specs.append(
            (
                "INTELLIGENCE_WORKFLOW_STEP_COMPLETED",
                {**common(), "step": step},
                draw(st.sampled_from([None, correlation])),
            )
        )
    terminal = draw(st.sampled_from([None, "COMPLETED", "FAILED"]))
    if terminal == "COMPLETED":
        specs.append(
            ("INTELLIGENCE_WORKFLOW_COMPLETED", {**common(), "results": {"n": n}}, correlation)
        )
    elif terminal == "FAILED":
        specs.append(
            (
                "INTELLIGENCE_WORKFLOW_FAILED",
                {**common(), "error": "down", "step": draw(STEPS)},
                correlation,
            )
        )
    return specs


@st.composite
def scenarios(draw: st.DrawFn) -> list[Event]:
    groups = [draw(fsm_specs(i)) for i in range(draw(st.integers(1, 3)))]
    groups += [draw(workflow_specs(i)) for i in range(draw(st.integers(0, 2)))]
    events: list[Event] = []
    for group in groups:
        # Each entity's events in increasing time (its producer's order); a lease event may
        # share a transition's time with another entity's events.
        gaps_ms = draw(st.lists(st.integers(1, 5000), min_size=len(group), max_size=len(group)))
        when = BASE
        for (event_type, payload, correlation), gap in zip(group, gaps_ms, strict=True):
            when += timedelta(milliseconds=gap, microseconds=draw(st.integers(0, 999)))
            events.append(
                make_event(
                    event_type,
                    payload,
                    when=when,
                    event_id=draw(st.uuids()),
                    correlation_id=correlation,
                )
            )
    return events


SNAPSHOTS = {
    "fsm_state": """
        SELECT id, fsm_type, entity_id, current_state, previous_state, transition_timestamp,
            transition_event_id, metadata, lease_id, lease_epoch, lease_expires_at, created_at,
            lease_event_at, lease_event_id, lease_top_id, lease_top_epoch, lease_top_expires_at,
            lease_released::text
        FROM intelligence.fsm_state ORDER BY fsm_type, entity_id
    """,
    "fsm_state_history": """
        SELECT fsm_type, entity_id, from_state, to_state, action, transitioned_at, duration_ms,
            correlation_id, metadata, success, error_message, partition_key
        FROM intelligence.fsm_state_history
        ORDER BY fsm_type, entity_id, transitioned_at, metadata->>'event_id'
    """,
    "workflow_executions": """
        SELECT workflow_id, operation_type, entity_id, status, current_step, completed_steps,
            failed_step, started_at, completed_at, duration_ms, correlation_id, input_payload,
            output_results, error_message, retry_count, metadata, created_at, state_event_at,
            state_event_id, started_event_at, started_event_id, step_event_at, step_event_id
        FROM intelligence.workflow_executions ORDER BY workflow_id
    """,
}


async def snapshot(db: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    return await support.query_snapshot(db, SNAPSHOTS)


@support.property_settings(40)
@given(events=scenarios(), data=st.data())
async def test_property_any_order_batching_and_duplicates_converge(
    db: asyncpg.Connection, events: list[Event], data: st.DataObject
) -> None:
    await db.execute(f"TRUNCATE {TABLES}")
    in_order = sorted(events, key=lambda e: e.order_key)
    result = await write(db, *in_order)
    assert not result.rejected
    expected = await snapshot(db)
    transitions = [e for e in events if e.event_type == "FSM_STATE_TRANSITION"]
    assert len(expected["fsm_state_history"]) == len(transitions)

    await db.execute(f"TRUNCATE {TABLES}")
    for part in support.draw_batches(data, events):
        await write(db, *part)
    assert await snapshot(db) == expected
