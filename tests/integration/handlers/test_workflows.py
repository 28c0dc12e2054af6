"""The workflows handler against a real PostgreSQL: what each event type leaves, the
out-of-order and placeholder cases, the schema rejects, and the convergence property."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.store import batch
from handlers.base import Event, as_uuid
from handlers.envelope import FOREIGN_ID_NAMESPACE, Envelope
from handlers.workflows import WORKFLOWS
from tests.integration.handlers import support
from tests.integration.handlers.support import js

BASE = datetime(2025, 10, 15, 12, 0, tzinfo=UTC)
SLUGS = {
    "WORKFLOW_STARTED": "stamp-workflow-started",
    "WORKFLOW_COMPLETED": "stamp-workflow-completed",
    "WORKFLOW_FAILED": "stamp-workflow-failed",
    "STEP_STARTED": "workflow-step-started",
    "STEP_COMPLETED": "workflow-step-completed",
    "STEP_FAILED": "workflow-step-failed",
    "STATE_TRANSITION": "workflow-state-transition",
    "HASH_GENERATED": "blake3-hash-generated",
    "INTELLIGENCE_RECEIVED": "onextree-intelligence-received",
    "ACTION": "action",
}
TABLES = "fsm_transitions, workflow_steps, workflow_executions, event_logs"


def _topic(event_type: str, _: Envelope) -> str:
    return f"dev.omninode_bridge.onex.evt.{SLUGS.get(event_type, 'other')}.v1"


make_event = support.EventMaker(BASE, _topic, source_node_id="orchestrator-1")
at = make_event.at


async def write(db: asyncpg.Connection, *events: Event) -> batch.BatchResult:
    return await support.write_batch(db, events, [WORKFLOWS])


async def workflow(db: asyncpg.Connection, workflow_id: uuid.UUID) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM workflow_executions WHERE id = $1", workflow_id)
    assert row is not None
    return dict(row)


async def steps(db: asyncpg.Connection, workflow_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT * FROM workflow_steps WHERE workflow_id = $1 ORDER BY step_key", workflow_id
    )
    return [dict(r) for r in rows]


async def transition_row(db: asyncpg.Connection, event_id: uuid.UUID) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM fsm_transitions WHERE id = $1", event_id)
    assert row is not None
    return dict(row)


def step_id_of(workflow_id: uuid.UUID, step_key: str) -> uuid.UUID:
    return uuid.uuid5(FOREIGN_ID_NAMESPACE, f"{workflow_id}/{step_key}")


# --- one event type at a time -----------------------------------------------------------------


async def test_started_writes_a_processing_workflow(db: asyncpg.Connection) -> None:
    wid, corr, session = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    started = make_event(
        "stamp_workflow_started",
        {"workflow_id": str(wid), "namespace": "omninode.bridge", "input": {"file": "a.py"}},
        when=at(1),
        correlation_id=corr,
        session_id=session,
    )
    result = await write(db, started)
    assert result.new == [started]
    row = await workflow(db, wid)
    assert row["workflow_id"] == wid
    assert row["correlation_id"] == corr
    assert row["session_id"] == session
    assert row["namespace"] == "omninode.bridge"
    assert row["state"] == "PROCESSING"
    assert (row["state_event_at"], row["state_event_id"]) == (at(1), started.event_id)
    assert js(row["input_data"]) == {"file": "a.py"}
    assert js(row["output_data"]) == {}
    assert js(row["error_info"]) == {}
    assert js(row["metadata"]) == {}
    assert row["started_at"] == at(1)
    assert row["completed_at"] is None
    assert row["workflow_steps_executed"] == 0
    assert row["file_hash"] is None
    assert row["hash_event_at"] is None
    assert row["intelligence_data"] is None


async def test_started_without_input_keeps_the_rest_of_the_payload(
    db: asyncpg.Connection,
) -> None:
    wid = uuid.uuid4()
    payload = {
        "workflow_id": str(wid),
        "status": "processing",
        "node_id": "orchestrator-instance-1",
        "timestamp": "2025-10-15T12:00:00Z",
    }
    await write(db, make_event("WORKFLOW_STARTED", payload, when=at(1)))
    row = await workflow(db, wid)
    assert js(row["input_data"]) == {"node_id": "orchestrator-instance-1"}
    # No correlation_id on the envelope: the workflow's own id stands in (NOT NULL).
    assert row["correlation_id"] == wid
    assert row["session_id"] is None
    assert row["namespace"] is None


async def test_completed_writes_output_stamp_hash_and_completion(db: asyncpg.Connection) -> None:
    wid = uuid.uuid4()
    started = make_event("WORKFLOW_STARTED", {"workflow_id": str(wid)}, when=at(1))
    completed = make_event(
        "WORKFLOW_COMPLETED",
        {
            "workflow_id": str(wid),
            "stamp_id": "stamp-1",
            "file_hash": "ab" * 32,
            "processing_time_ms": 45.5,
            "timestamp": "x",
        },
        when=at(2),
    )
    await write(db, started, completed)
    row = await workflow(db, wid)
    assert row["state"] == "COMPLETED"
    assert (row["state_event_at"], row["state_event_id"]) == (at(2), completed.event_id)
    assert js(row["output_data"]) == {"processing_time_ms": 45.5}
    assert row["stamp_id"] == "stamp-1"
    assert row["file_hash"] == "ab" * 32
    assert row["started_at"] == at(1)
    assert row["completed_at"] == at(2)


async def test_completed_output_key_wins_over_the_rest(db: asyncpg.Connection) -> None:
    wid = uuid.uuid4()
    completed = make_event(
        "WORKFLOW_COMPLETED",
        {"workflow_id": str(wid), "output": {"ok": True}, "other": 1},
        when=at(2),
    )
    await write(db, completed)
    assert js((await workflow(db, wid))["output_data"]) == {"ok": True}


async def test_failed_writes_error_info(db: asyncpg.Connection) -> None:
    wid = uuid.uuid4()
    failed = make_event(
        "stamp_workflow_failed",
        {"workflow_id": str(wid), "error": "boom", "error_type": "ValueError"},
        when=at(3),
    )
    await write(db, make_event("WORKFLOW_STARTED", {"workflow_id": str(wid)}, when=at(1)))
    await write(db, failed)
    row = await workflow(db, wid)
    assert row["state"] == "FAILED"
    assert js(row["error_info"]) == {"message": "boom", "code": "ValueError"}
    assert row["completed_at"] == at(3)
    assert row["started_at"] == at(1)


async def test_steps_write_one_row_per_step_and_count_completed(db: asyncpg.Connection) -> None:
    wid = uuid.uuid4()
    events = [
        make_event("WORKFLOW_STARTED", {"workflow_id": str(wid)}, when=at(1)),
        make_event(
            "STEP_STARTED",
            {
                "workflow_id": str(wid),
                "step_id": "validate_input",
                "step_name": "Validate input",
                "step_type": "validation",
                "step_order": 1,
                "input": {"size": 3},
            },
            when=at(2),
        ),
        make_event(
            "workflow_step_completed",
            {
                "workflow_id": str(wid),
                "step_id": "validate_input",
                "step_type": "validation",
                "output": {"valid": True},
                "execution_time_ms": 12.6,
            },
            when=at(3),
        ),
        make_event(
            "STEP_COMPLETED",
            {"workflow_id": str(wid), "step_id": "hash_generation", "step_type": "hashing"},
            when=at(4),
        ),
        make_event(
            "STEP_FAILED",
            {
                "workflow_id": str(wid),
                "step_name": "create_stamp",
                "error": "disk full",
                "error_type": "OSError",
            },
            when=at(5),
        ),
    ]
    await write(db, *events)
    rows = await steps(db, wid)
    assert [r["step_key"] for r in rows] == ["create_stamp", "hash_generation", "validate_input"]
    stamp, hashing, validate = rows
    assert validate["id"] == step_id_of(wid, "validate_input")
    assert validate["step_name"] == "Validate input"
    assert validate["step_type"] == "validation"
    assert validate["step_order"] == 1
    assert validate["status"] == "COMPLETED"
    assert (validate["status_event_at"], validate["status_event_id"]) == (
        at(3),
        events[2].event_id,
    )
    assert js(validate["input_data"]) == {"size": 3}
    assert js(validate["output_data"]) == {"valid": True}
    assert validate["started_at"] == at(2)
    assert validate["completed_at"] == at(3)
    assert validate["execution_time_ms"] == 13
    # Only a STEP_COMPLETED: no start time (not NOW()), stand-ins for what it did not say, and
    # its rank by event time among the workflow's steps for the order it did not say.
    assert hashing["step_name"] == "hash_generation"
    assert hashing["step_order"] == 2
    assert hashing["step_order_ranked"] is True
    assert hashing["started_at"] is None
    assert hashing["status"] == "COMPLETED"
    assert js(hashing["input_data"]) == {}
    assert stamp["status"] == "FAILED"
    assert stamp["step_name"] == "create_stamp"
    assert stamp["step_type"] == "unknown"
    assert (stamp["step_order"], validate["step_order_ranked"]) == (3, False)
    assert js(stamp["output_data"]) == {"error": "disk full", "error_type": "OSError"}
    assert stamp["completed_at"] == at(5)
    assert (await workflow(db, wid))["workflow_steps_executed"] == 2


async def test_step_fields_are_filled_by_a_later_event_that_has_them(
    db: asyncpg.Connection,
) -> None:
    wid = uuid.uuid4()
    completed = make_event("STEP_COMPLETED", {"workflow_id": str(wid), "step_id": "s1"}, when=at(5))
    await write(db, completed)
    (row,) = await steps(db, wid)
    assert (row["step_name"], row["step_type"], row["step_order"]) == ("s1", "unknown", 1)
    started = make_event(
        "STEP_STARTED",
        {
            "workflow_id": str(wid),
            "step_id": "s1",
            "step_name": "Validate",
            "step_type": "validation",
            "step_order": 2,
            "input_data": {"x": 1},
        },
        when=at(4),
    )
    await write(db, started)
    (row,) = await steps(db, wid)
    assert (row["step_name"], row["step_type"], row["step_order"]) == ("Validate", "validation", 2)
    assert js(row["input_data"]) == {"x": 1}
    # The older STEP_STARTED filled facts but did not move the status back.
    assert row["status"] == "COMPLETED"
    assert row["started_at"] == at(4)
    assert row["completed_at"] == at(5)


async def test_unordered_steps_are_ranked_by_their_earliest_event(db: asyncpg.Connection) -> None:
    wid = uuid.uuid4()

    def step(kind: str, step_id: str, seconds: float, **fields: Any) -> Event:
        payload = {"workflow_id": str(wid), "step_id": step_id, **fields}
        return make_event(kind, payload, when=at(seconds))

    await write(db, step("STEP_COMPLETED", "hash", 6), step("STEP_COMPLETED", "stamp", 9))
    assert [(r["step_key"], r["step_order"]) for r in await steps(db, wid)] == [
        ("hash", 1),
        ("stamp", 2),
    ]
    # A step that happened earlier arrives late: its successors move up. The hash step's own
    # start, earlier than its completion, is now its time.
    await write(db, step("STEP_COMPLETED", "validate", 4), step("STEP_STARTED", "hash", 3))
    assert [(r["step_key"], r["step_order"]) for r in await steps(db, wid)] == [
        ("hash", 1),
        ("stamp", 3),
        ("validate", 2),
    ]
    # A producer's step_order (0 too) replaces the rank whenever it arrives; the ranks of the
    # other steps still count every step.
    await write(db, step("STEP_FAILED", "stamp", 10, step_order=0))
    rows = {r["step_key"]: r for r in await steps(db, wid)}
    assert {k: (r["step_order"], r["step_order_ranked"]) for k, r in rows.items()} == {
        "hash": (1, True),
        "stamp": (0, False),
        "validate": (2, True),
    }
    assert (rows["hash"]["order_event_at"], rows["validate"]["order_event_at"]) == (at(3), at(4))
    await write(db, step("STEP_COMPLETED", "stamp", 11, step_order=7))
    assert (await steps(db, wid))[1]["step_order"] == 0  # the first real value holds


async def test_an_orchestrated_workflow_as_the_orchestrator_sends_it(
    db: asyncpg.Connection,
) -> None:
    """The legacy sequence of producers.md: lower-case states, steps without step_order."""
    wid = uuid.uuid4()
    file_hash = "c" * 64
    sent = [
        orchestrator_wire(
            "workflow_state_transition", wid, 1, from_state="pending", to_state="processing"
        ),
        orchestrator_wire("stamp_workflow_started", wid, 2, state="processing", mode="legacy"),
        orchestrator_wire(
            "workflow_step_completed", wid, 3, step_type="validation", step_id="validate_input"
        ),
        orchestrator_wire(
            "blake3_hash_generated", wid, 4, file_hash=file_hash, generation_time_ms=0.8731
        ),
        orchestrator_wire(
            "workflow_step_completed",
            wid,
            5,
            step_type="hash_generation",
            step_id="hash_generation",
        ),
        orchestrator_wire(
            "workflow_step_completed", wid, 6, step_type="stamp_creation", step_id="stamp_creation"
        ),
        orchestrator_wire(
            "workflow_state_transition", wid, 7, from_state="processing", to_state="completed"
        ),
        orchestrator_wire(
            "stamp_workflow_completed",
            wid,
            8,
            stamp_id="stamp-1",
            file_hash=file_hash,
            namespace="omninode.services.metadata",
        ),
    ]
    events = orchestrated(*sent)
    # Newest first, one event a batch: the worst order.
    for event in reversed(events):
        assert not (await write(db, event)).rejected
    row = await workflow(db, wid)
    assert row["state"] == "COMPLETED"
    assert (row["started_at"], row["completed_at"]) == (at(2), at(8))
    assert row["correlation_id"] == wid
    assert row["namespace"] == "omninode.services.metadata"
    assert (row["file_hash"], row["hash_generation_time_ms"], row["stamp_id"]) == (
        file_hash,
        1,
        "stamp-1",
    )
    assert row["workflow_steps_executed"] == 3
    assert [(s["step_key"], s["step_type"], s["step_order"]) for s in await steps(db, wid)] == [
        ("hash_generation", "hash_generation", 2),
        ("stamp_creation", "stamp_creation", 3),
        ("validate_input", "validation", 1),
    ]
    transitions = await db.fetch(
        "SELECT from_state, to_state FROM fsm_transitions WHERE workflow_id = $1 "
        "ORDER BY transition_at",
        wid,
    )
    assert [tuple(t) for t in transitions] == [
        ("PENDING", "PROCESSING"),
        ("PROCESSING", "COMPLETED"),
    ]


def action_wire(
    workflow_id: uuid.UUID,
    seconds: float,
    *,
    content: str = "print('hello')",
    namespace: str = "omninode.services.metadata",
    action_type: str = "ORCHESTRATE_WORKFLOW",
) -> dict[str, Any]:
    """The orchestrator's ACTION of an event-driven workflow, as the EventBus sends it."""
    wire = orchestrator_wire("ACTION", workflow_id, seconds)
    wire["payload"] = {
        "correlation_id": str(workflow_id),
        "action_type": action_type,
        "payload": {
            "workflow_id": str(workflow_id),
            "input_data": {"content": content, "file_path": "/repo/src/hello.py"},
            "namespace": namespace,
            "workflow_type": "metadata_stamping",
        },
        "timestamp": at(seconds).isoformat(),
        "source_node": "orchestrator-1",
    }
    wire["metadata"] = {"action_type": action_type, "namespace": "dev"}
    return wire


def on_action_topic(*sent: dict[str, Any]) -> list[Event]:
    return support.as_produced([("dev.omninode_bridge.onex.evt.action.v1", w) for w in sent])


@pytest.mark.parametrize("order", ["action first", "started first", "one batch"])
async def test_an_event_driven_workflows_input_and_namespace_come_from_its_action(
    db: asyncpg.Connection, order: str
) -> None:
    wid = uuid.uuid4()
    [action] = on_action_topic(action_wire(wid, 1))
    started, completed = orchestrated(
        orchestrator_wire("stamp_workflow_started", wid, 2, mode="event_driven"),
        orchestrator_wire("stamp_workflow_completed", wid, 9, processing_time_ms=812.4),
    )
    assert action.event_type == "ACTION"
    if order == "one batch":
        await write(db, completed, started, action)
    else:
        first, second = (action, started) if order == "action first" else (started, action)
        for event in (first, completed, second):
            assert not (await write(db, event)).rejected
    row = await workflow(db, wid)
    assert js(row["input_data"]) == {"content": "print('hello')", "file_path": "/repo/src/hello.py"}
    assert row["namespace"] == "omninode.services.metadata"
    assert (row["action_event_at"], row["action_event_id"]) == (at(1), action.event_id)
    assert (row["state"], row["started_at"], row["completed_at"]) == ("COMPLETED", at(2), at(9))
    assert js(row["output_data"]) == {
        "processing_time_ms": 812.4,
        "node_id": "orchestrator-1",
        "published_at": at(9).isoformat(),
    }


async def test_the_newest_action_holds_the_input(db: asyncpg.Connection) -> None:
    wid = uuid.uuid4()
    older, newer = on_action_topic(
        action_wire(wid, 1, content="first"), action_wire(wid, 5, content="retried")
    )
    await write(db, newer)
    await write(db, older)
    await write(db, *orchestrated(orchestrator_wire("stamp_workflow_started", wid, 6)))
    row = await workflow(db, wid)
    assert js(row["input_data"])["content"] == "retried"
    assert row["action_event_id"] == newer.event_id


async def test_other_actions_are_kept_in_event_logs_only(db: asyncpg.Connection) -> None:
    wid = uuid.uuid4()
    other = action_wire(wid, 1, action_type="CANCEL_WORKFLOW")
    unnamed = action_wire(uuid.uuid4(), 2)
    del unnamed["payload"]["payload"]["workflow_id"]
    flat = action_wire(uuid.uuid4(), 3)
    flat["payload"]["payload"] = "not an object"
    events = on_action_topic(other, unnamed, flat)
    result = await write(db, *events)
    assert result.new == events
    assert not result.rejected
    assert await db.fetchval("SELECT count(*) FROM workflow_executions") == 0
    assert await db.fetchval("SELECT count(*) FROM event_logs WHERE event_type = 'ACTION'") == 3


@pytest.mark.parametrize("state", ["pending", "processing", "completed", "failed"])
async def test_lower_case_workflow_states_are_accepted(db: asyncpg.Connection, state: str) -> None:
    wid = uuid.uuid4()
    [event] = orchestrated(
        orchestrator_wire("workflow_state_transition", wid, 1, from_state=state, to_state=state)
    )
    assert not (await write(db, event)).rejected
    assert (await workflow(db, wid))["state"] == state.upper()
    assert (await transition_row(db, event.event_id))["to_state"] == state.upper()


async def test_a_retried_step_shows_its_latest_attempt_in_any_order(
    db: asyncpg.Connection,
) -> None:
    wid = uuid.uuid4()
    failed = make_event(
        "STEP_FAILED",
        {"workflow_id": str(wid), "step_id": "s1", "execution_time_ms": 5, "error": "e"},
        when=at(2),
    )
    completed = make_event(
        "STEP_COMPLETED",
        {"workflow_id": str(wid), "step_id": "s1", "execution_time_ms": 9, "output": {"k": 1}},
        when=at(3),
    )
    await write(db, completed)
    await write(db, failed)
    (row,) = await steps(db, wid)
    assert row["status"] == "COMPLETED"
    assert row["execution_time_ms"] == 9
    assert js(row["output_data"]) == {"k": 1}
    assert row["completed_at"] == at(3)


async def test_state_transition_writes_a_row_and_moves_the_state(db: asyncpg.Connection) -> None:
    wid = uuid.uuid4()
    transition = make_event(
        "workflow_state_transition",
        {
            "workflow_id": str(wid),
            "from_state": "pending",
            "to_state": "processing",
            "triggered_by": "start_workflow",
            "metadata": {"reason": "go"},
        },
        when=at(2),
    )
    await write(db, transition)
    row = await transition_row(db, transition.event_id)
    assert row["workflow_id"] == wid
    assert (row["from_state"], row["to_state"]) == ("PENDING", "PROCESSING")
    assert row["transition_at"] == at(2)
    assert row["triggered_by"] == "start_workflow"
    assert js(row["metadata"]) == {"reason": "go"}
    wf = await workflow(db, wid)
    assert wf["state"] == "PROCESSING"
    assert (wf["state_event_at"], wf["state_event_id"]) == (at(2), transition.event_id)
    assert wf["started_at"] is None  # a placeholder: only a STARTED says when it started

    later = make_event(
        "STATE_TRANSITION",
        {"workflow_id": str(wid), "from_state": "processing", "to_state": "Completed"},
        when=at(4),
    )
    older = make_event(
        "STATE_TRANSITION",
        {"workflow_id": str(wid), "from_state": "pending", "to_state": "failed"},
        when=at(1),
    )
    await write(db, later, older)
    assert (await workflow(db, wid))["state"] == "COMPLETED"
    count = await db.fetchval("SELECT count(*) FROM fsm_transitions WHERE workflow_id = $1", wid)
    assert count == 3
    row = await transition_row(db, later.event_id)
    assert row["triggered_by"] is None
    assert js(row["metadata"]) == {}


async def test_hash_generated_newest_wins_over_completed_and_older_hashes(
    db: asyncpg.Connection,
) -> None:
    wid = uuid.uuid4()
    newer = make_event(
        "blake3_hash_generated",
        {"workflow_id": str(wid), "file_hash": "a" * 64, "generation_time_ms": 1.4},
        when=at(3),
    )
    older = make_event(
        "HASH_GENERATED",
        {"workflow_id": str(wid), "file_hash": "b" * 64, "generation_time_ms": 9},
        when=at(2),
    )
    completed = make_event(
        "WORKFLOW_COMPLETED", {"workflow_id": str(wid), "file_hash": "c" * 64}, when=at(4)
    )
    await write(db, completed)
    assert (await workflow(db, wid))["file_hash"] == "c" * 64
    await write(db, newer)
    await write(db, older)
    row = await workflow(db, wid)
    assert row["file_hash"] == "a" * 64
    assert row["hash_generation_time_ms"] == 1
    assert (row["hash_event_at"], row["hash_event_id"]) == (at(3), newer.event_id)
    assert row["state"] == "COMPLETED"


def orchestrator_wire(
    event_type: str, workflow_id: uuid.UUID, seconds: float, **data: Any
) -> dict[str, Any]:
    """NodeBridgeOrchestrator's record: the correlation id (and key) is the workflow id."""
    return support.node_record(
        event_type,
        data,
        node_type="orchestrator",
        category="workflow_orchestration",
        namespace="omninode.bridge",
        entity=("workflow_id", workflow_id),
        when=at(seconds),
    )


ORCHESTRATOR_TOPIC = "omninode.bridge.omninode_bridge.onex.evt.{}.v1"


def orchestrated(*sent: dict[str, Any]) -> list[Event]:
    """The orchestrator's records read from its topics (the slug is the wire type's)."""
    return support.as_produced(
        [(ORCHESTRATOR_TOPIC.format(w["event_type"].replace("_", "-")), w) for w in sent]
    )


async def test_a_hash_generation_time_is_rounded_to_the_nearest_millisecond(
    db: asyncpg.Connection,
) -> None:
    wid = uuid.uuid4()
    hashed = orchestrated(
        orchestrator_wire(
            "blake3_hash_generated", wid, 1, file_hash="a" * 64, generation_time_ms=2.5
        )
    )
    await write(db, *hashed)
    assert (await workflow(db, wid))["hash_generation_time_ms"] == 3
    for sent, stored in ((0.4999, 0), (0.5, 1), (12.3456, 12), (41.96, 42)):
        [event] = orchestrated(
            orchestrator_wire(
                "blake3_hash_generated", wid, 2 + sent, file_hash="b" * 64, generation_time_ms=sent
            )
        )
        await write(db, event)
        assert (await workflow(db, wid))["hash_generation_time_ms"] == stored, sent


async def test_intelligence_received_sets_the_workflows_intelligence(
    db: asyncpg.Connection,
) -> None:
    wid = uuid.uuid4()
    first = make_event(
        "onextree_intelligence_received",
        {"workflow_id": str(wid), "intelligence_data": {"quality": 0.9}},
        when=at(2),
    )
    second = make_event(
        "INTELLIGENCE_RECEIVED",
        {"workflow_id": str(wid), "file_hash": "f" * 64, "analysis": "ok", "score": 3},
        when=at(3),
    )
    await write(db, second, first)
    row = await workflow(db, wid)
    assert js(row["intelligence_data"]) == {"analysis": "ok", "score": 3}
    assert (row["intelligence_event_at"], row["intelligence_event_id"]) == (
        at(3),
        second.event_id,
    )
    assert row["state"] == "PENDING"


async def test_intelligence_without_workflow_id_is_not_this_handlers(
    db: asyncpg.Connection,
) -> None:
    event = make_event(
        "INTELLIGENCE_RECEIVED", {"file_hash": "f" * 64, "intelligence": {"a": 1}}, when=at(1)
    )
    result = await write(db, event)
    assert result.new == [event]
    assert result.rejected == []
    assert await db.fetchval("SELECT count(*) FROM workflow_executions") == 0


# --- out of order, placeholders -----------------------------------------------------------


async def test_child_before_workflow_creates_a_placeholder_the_start_fills(
    db: asyncpg.Connection,
) -> None:
    wid, corr, start_corr = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    step = make_event(
        "STEP_COMPLETED",
        {"workflow_id": str(wid), "step_id": "s1", "namespace": "ns.child"},
        when=at(5),
        correlation_id=corr,
    )
    await write(db, step)
    row = await workflow(db, wid)
    assert row["state"] == "PENDING"
    assert (row["state_event_at"], row["state_event_id"]) == (None, None)
    assert row["correlation_id"] == corr
    assert row["namespace"] == "ns.child"
    assert row["started_at"] is None
    assert row["workflow_steps_executed"] == 1

    started = make_event(
        "WORKFLOW_STARTED",
        {"workflow_id": str(wid), "namespace": "ns.start", "input": {"a": 1}},
        when=at(1),
        correlation_id=start_corr,
    )
    await write(db, started)
    row = await workflow(db, wid)
    assert row["state"] == "PROCESSING"
    assert row["correlation_id"] == start_corr
    assert row["namespace"] == "ns.start"
    assert row["started_at"] == at(1)
    assert js(row["input_data"]) == {"a": 1}
    assert row["workflow_steps_executed"] == 1


async def test_completed_before_started_keeps_completed(db: asyncpg.Connection) -> None:
    wid = uuid.uuid4()
    completed = make_event(
        "WORKFLOW_COMPLETED", {"workflow_id": str(wid), "stamp_id": "s"}, when=at(9)
    )
    started = make_event(
        "WORKFLOW_STARTED", {"workflow_id": str(wid), "input": {"a": 1}}, when=at(1)
    )
    await write(db, completed)
    assert (await workflow(db, wid))["started_at"] is None
    await write(db, started)
    row = await workflow(db, wid)
    assert row["state"] == "COMPLETED"
    assert (row["state_event_at"], row["state_event_id"]) == (at(9), completed.event_id)
    assert row["started_at"] == at(1)
    assert row["completed_at"] == at(9)
    assert js(row["input_data"]) == {"a": 1}
    assert row["stamp_id"] == "s"


async def test_non_uuid_workflow_id_maps_to_a_stable_uuid(db: asyncpg.Connection) -> None:
    text = "wf-2025-0001"
    mapped = uuid.uuid5(FOREIGN_ID_NAMESPACE, text)
    await write(db, make_event("STEP_STARTED", {"workflow_id": text, "step_id": 7}, when=at(1)))
    await write(db, make_event("WORKFLOW_STARTED", {"workflow_id": text}, when=at(0)))
    row = await workflow(db, mapped)
    assert row["workflow_id"] == mapped
    assert js(row["metadata"]) == {"original_workflow_id": text}
    (step,) = await steps(db, mapped)
    assert step["step_key"] == "7"
    assert step["id"] == step_id_of(mapped, "7")
    assert step["status"] == "RUNNING"


async def test_a_duplicate_event_writes_nothing_again(db: asyncpg.Connection) -> None:
    wid = uuid.uuid4()
    transition = make_event(
        "STATE_TRANSITION",
        {"workflow_id": str(wid), "from_state": "a", "to_state": "b"},
        when=at(1),
    )
    await write(db, transition)
    result = await write(db, transition)
    assert result.duplicates == [transition]
    assert await db.fetchval("SELECT count(*) FROM fsm_transitions") == 1


# --- rejects ------------------------------------------------------------------------------

REJECTS: list[tuple[str, dict[str, Any], str]] = [
    ("WORKFLOW_STARTED", {"namespace": "x"}, "workflow_id"),
    ("WORKFLOW_STARTED", {"workflow_id": "   "}, "workflow_id"),
    ("WORKFLOW_STARTED", {"workflow_id": ["a"]}, "workflow_id"),
    ("WORKFLOW_STARTED", {"workflow_id": "w", "namespace": "n" * 201}, "namespace"),
    ("WORKFLOW_COMPLETED", {"workflow_id": "w", "file_hash": "a" * 65}, "file_hash"),
    ("WORKFLOW_COMPLETED", {"workflow_id": "w", "stamp_id": "s" * 256}, "stamp_id"),
    ("HASH_GENERATED", {"workflow_id": "w"}, "file_hash"),
    ("HASH_GENERATED", {"workflow_id": "w", "file_hash": "a" * 65}, "file_hash"),
    (
        "HASH_GENERATED",
        {"workflow_id": "w", "file_hash": "a", "generation_time_ms": -1},
        "generation_time_ms",
    ),
    (
        "HASH_GENERATED",
        {"workflow_id": "w", "file_hash": "a", "generation_time_ms": 2**31},
        "generation_time_ms",
    ),
    ("STATE_TRANSITION", {"workflow_id": "w", "from_state": "a"}, "to_state"),
    ("STATE_TRANSITION", {"workflow_id": "w", "to_state": "a"}, "from_state"),
    ("STATE_TRANSITION", {"workflow_id": "w", "from_state": "a", "to_state": "b" * 51}, "to_state"),
    (
        "STATE_TRANSITION",
        {"workflow_id": "w", "from_state": "a", "to_state": "b", "metadata": [1]},
        "metadata",
    ),
    (
        "STATE_TRANSITION",
        {"workflow_id": "w", "from_state": "a", "to_state": "b", "triggered_by": "t" * 101},
        "triggered_by",
    ),
    ("STEP_COMPLETED", {"workflow_id": "w"}, "step_id"),
    ("STEP_COMPLETED", {"workflow_id": "w", "step_id": "s", "step_type": "t" * 51}, "step_type"),
    ("STEP_COMPLETED", {"workflow_id": "w", "step_name": "n" * 101}, "step_name"),
    ("STEP_COMPLETED", {"workflow_id": "w", "step_id": "i" * 101}, "step_name"),
    ("STEP_COMPLETED", {"workflow_id": "w", "step_id": "i" * 256, "step_name": "n"}, "step_id"),
    ("STEP_STARTED", {"workflow_id": "w", "step_id": "s", "step_order": 2**31}, "step_order"),
    ("STEP_STARTED", {"workflow_id": "w", "step_id": "s", "step_order": "x"}, "step_order"),
    (
        "STEP_FAILED",
        {"workflow_id": "w", "step_id": "s", "execution_time_ms": "slow"},
        "execution_time_ms",
    ),
    ("INTELLIGENCE_RECEIVED", {"workflow_id": {"id": 1}}, "workflow_id"),
    (
        "ACTION",
        {
            "action_type": "ORCHESTRATE_WORKFLOW",
            "payload": {"workflow_id": "w", "namespace": "n" * 201},
        },
        "payload.namespace",
    ),
    (
        "ACTION",
        {"action_type": "orchestrate_workflow", "payload": {"workflow_id": ["w"]}},
        "payload.workflow_id",
    ),
]


async def test_bad_payloads_are_schema_rejects_and_write_nothing(db: asyncpg.Connection) -> None:
    events = [
        make_event(event_type, payload, when=at(i), offset=i)
        for i, (event_type, payload, _) in enumerate(REJECTS)
    ]
    good = make_event("WORKFLOW_STARTED", {"workflow_id": "good"}, when=at(99))
    result = await write(db, *events, good)
    assert result.new == [good]
    assert [event for event, _ in result.rejected] == events
    for (_, reject), (_, _, field) in zip(result.rejected, REJECTS, strict=True):
        assert reject.kind == "schema"
        assert reject.message.startswith(field), reject.message
    assert await db.fetchval("SELECT count(*) FROM event_logs") == 1
    assert await db.fetchval("SELECT count(*) FROM workflow_executions") == 1


async def test_lenient_types_are_accepted(db: asyncpg.Connection) -> None:
    wid = uuid.uuid4()
    event = make_event(
        "STEP_COMPLETED",
        {
            "workflow_id": str(wid),
            "step_id": 3,
            "step_order": "4",
            "execution_time_ms": "12.4",
            "unknown_field": {"kept": "in event_logs"},
        },
        when=at(1),
    )
    result = await write(db, event)
    assert result.rejected == []
    (row,) = await steps(db, wid)
    assert (row["step_key"], row["step_order"], row["execution_time_ms"]) == ("3", 4, 12)


# --- the property: any order, any batching, any duplicates converge ----------------------------

WORDS = st.text(alphabet="abcdefg", min_size=1, max_size=5)
SMALL_JSON = st.dictionaries(WORDS, st.one_of(st.integers(-3, 3), WORDS), max_size=2)
HASHES = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
STATES = st.sampled_from(["pending", "processing", "completed", "failed", "Paused"])
Spec = tuple[str, dict[str, Any], uuid.UUID | None, uuid.UUID | None]


Payload = tuple[str, dict[str, Any]]


def maybe(draw: st.DrawFn, payload: dict[str, Any], key: str, value: Any) -> None:
    """Put ``key`` in ``payload`` or leave it out: events of one entity carry what they like."""
    if draw(st.booleans()):
        payload[key] = value


@st.composite
def workflow_payloads(draw: st.DrawFn) -> list[Payload]:
    """The workflow-level events of one workflow (no workflow_id yet)."""
    payloads: list[Payload] = []
    started_input = draw(SMALL_JSON)
    # Two STARTEDs with one content: a producer's retry, not a conflict.
    payloads += [("WORKFLOW_STARTED", {"input": started_input})] * draw(st.integers(0, 2))
    if draw(st.booleans()):
        completed: dict[str, Any] = {"stamp_id": draw(WORDS), "output": draw(SMALL_JSON)}
        maybe(draw, completed, "file_hash", draw(HASHES))
        payloads.append(("WORKFLOW_COMPLETED", completed))
    if draw(st.booleans()):
        payloads.append(("WORKFLOW_FAILED", {"error": draw(WORDS), "error_type": draw(WORDS)}))
    for _ in range(draw(st.integers(0, 3))):
        transition: dict[str, Any] = {"from_state": draw(STATES), "to_state": draw(STATES)}
        maybe(draw, transition, "triggered_by", draw(WORDS))
        maybe(draw, transition, "metadata", draw(SMALL_JSON))
        payloads.append(("STATE_TRANSITION", transition))
    for _ in range(draw(st.integers(0, 2))):
        hashed: dict[str, Any] = {"file_hash": draw(HASHES)}
        maybe(draw, hashed, "generation_time_ms", draw(st.floats(0, 50)))
        payloads.append(("HASH_GENERATED", hashed))
    for _ in range(draw(st.integers(0, 2))):
        payloads.append(("INTELLIGENCE_RECEIVED", {"intelligence_data": draw(SMALL_JSON)}))
    for _ in range(draw(st.integers(0, 2))):
        # An event-driven request: its input wins over any STARTED's, the newest request's.
        request: dict[str, Any] = {}
        maybe(draw, request, "input_data", draw(SMALL_JSON))
        payloads.append(("ACTION", {"action_type": "ORCHESTRATE_WORKFLOW", "payload": request}))
    return payloads


@st.composite
def step_payloads(draw: st.DrawFn, step: int) -> list[Payload]:
    """The events of one step: they agree on name, type, order and input when they carry them;
    each terminal event has its own output and duration, and a kind may repeat (a retried
    step, a producer's resend): neither is a conflict. Half the steps never send step_order,
    as the bridge's orchestrator does: theirs is their rank among the workflow's steps."""
    by_id = draw(st.booleans())
    sends_order = draw(st.booleans())
    name = f"{draw(WORDS)}-{step}"
    step_type = draw(st.sampled_from(["validation", "hashing", "unknown"]))
    order = draw(st.integers(0, 4))
    step_input = draw(SMALL_JSON)
    kinds = draw(
        st.lists(
            st.sampled_from(["STEP_STARTED", "STEP_COMPLETED", "STEP_FAILED"]),
            min_size=1,
            max_size=3,
        )
    )
    payloads: list[Payload] = []
    for kind in kinds:
        payload: dict[str, Any] = {"step_id": f"step-{step}"} if by_id else {"step_name": name}
        if by_id:
            maybe(draw, payload, "step_name", name)
        maybe(draw, payload, "step_type", step_type)
        if sends_order:
            maybe(draw, payload, "step_order", order)
        maybe(draw, payload, "input", step_input)
        if kind != "STEP_STARTED":
            maybe(draw, payload, "output", draw(SMALL_JSON))
            maybe(draw, payload, "execution_time_ms", draw(st.integers(0, 100)))
        if kind == "STEP_FAILED":
            maybe(draw, payload, "error", draw(WORDS))
        payloads.append((kind, payload))
    return payloads


@st.composite
def workflow_specs(draw: st.DrawFn, index: int, workflow_uuid: uuid.UUID) -> list[Spec]:
    """The events of one workflow: conflict-free (values that several events carry agree)."""
    wid = str(workflow_uuid) if draw(st.booleans()) else f"wf-{index}-{draw(WORDS)}"
    corr = draw(st.none() | st.uuids())
    session = draw(st.none() | st.uuids())
    namespace = draw(st.none() | WORDS.map(lambda w: f"ns.{w}"))
    payloads = draw(workflow_payloads())
    for step in range(draw(st.integers(0, 4))):
        payloads += draw(step_payloads(step))
    if not payloads:
        payloads.append(("WORKFLOW_STARTED", {}))
    specs: list[Spec] = []
    for event_type, fields in payloads:
        payload = {"workflow_id": wid, **fields}
        if event_type == "ACTION":  # the workflow is named by the request inside
            payload = {**fields, "payload": {"workflow_id": wid, **fields["payload"]}}
        if namespace is not None:
            maybe(draw, payload.get("payload", payload), "namespace", namespace)
        specs.append(
            (
                event_type,
                payload,
                corr if draw(st.booleans()) else None,
                session if draw(st.booleans()) else None,
            )
        )
    return specs


@st.composite
def scenarios(draw: st.DrawFn) -> list[Event]:
    count = draw(st.integers(1, 3))
    workflow_uuids = draw(st.lists(st.uuids(), min_size=count, max_size=count, unique=True))
    specs = [s for i, u in enumerate(workflow_uuids) for s in draw(workflow_specs(i, u))]
    if draw(st.booleans()):  # a stamp's intelligence: a no-op here
        specs.append(("INTELLIGENCE_RECEIVED", {"file_hash": draw(HASHES)}, None, None))
    n = len(specs)
    millis = draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n, unique=True))
    ids = draw(st.lists(st.uuids(), min_size=n, max_size=n, unique=True))
    return [
        make_event(
            event_type,
            payload,
            when=BASE + timedelta(milliseconds=ms),
            event_id=event_id,
            correlation_id=corr,
            session_id=session,
        )
        for (event_type, payload, corr, session), ms, event_id in zip(
            specs, millis, ids, strict=True
        )
    ]


SNAPSHOTS = {
    "workflow_executions": "SELECT * FROM workflow_executions ORDER BY id",
    "workflow_steps": "SELECT * FROM workflow_steps ORDER BY workflow_id, step_key",
    "fsm_transitions": "SELECT * FROM fsm_transitions ORDER BY id",
}


async def snapshot(db: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    return await support.query_snapshot(db, SNAPSHOTS)


def ranked_orders(events: list[Event]) -> dict[tuple[uuid.UUID, str], int]:
    """What step_order must be for each step no event sent one for: 1, 2, ... in the order of
    the steps' earliest events, among all steps of their workflow."""
    first: dict[tuple[uuid.UUID, str], tuple[datetime, uuid.UUID]] = {}
    sent_order: set[tuple[uuid.UUID, str]] = set()
    for event in events:
        if not event.event_type.startswith("STEP_"):
            continue
        key = (
            as_uuid(event.payload["workflow_id"]),
            str(event.payload.get("step_id") or event.payload["step_name"]),
        )
        first[key] = min(first.get(key, event.order_key), event.order_key)
        if "step_order" in event.payload:
            sent_order.add(key)
    ranks: dict[tuple[uuid.UUID, str], int] = {}
    for wid in {w for w, _ in first}:
        in_time = sorted((at_id, key) for key, at_id in first.items() if key[0] == wid)
        for rank, (_, key) in enumerate(in_time, start=1):
            if key not in sent_order:
                ranks[key] = rank
    return ranks


@support.property_settings(50)
@given(events=scenarios(), data=st.data())
async def test_property_any_order_batching_and_duplicates_converge(
    db: asyncpg.Connection, events: list[Event], data: st.DataObject
) -> None:
    await db.execute(f"TRUNCATE {TABLES}")
    in_order = sorted(events, key=lambda e: e.order_key)
    await write(db, *in_order)
    expected = await snapshot(db)
    named = [e.payload.get("payload", e.payload) for e in events]
    assert len(expected["workflow_executions"]) == len(
        {p["workflow_id"] for p in named if "workflow_id" in p}
    )
    ranked = {
        (r["workflow_id"], r["step_key"]): r["step_order"]
        for r in expected["workflow_steps"]
        if r["step_order_ranked"]
    }
    assert ranked == ranked_orders(events)

    await db.execute(f"TRUNCATE {TABLES}")
    for part in support.draw_batches(data, events):
        await write(db, *part)
    assert await snapshot(db) == expected
