"""Every event type of the contract, from a produced Kafka record to the rows it must leave.

One scenario per type, each on its own entities, produced to the producers' topic names
(with the producers' aliases for the type); the daemon's worker consumes them all in one run
(a group join costs seconds on the embedded broker), and each type's test then reads back the
rows of its scenario.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from consumer.worker import Worker
from dev.sample import Record
from dev.services import Service
from handlers.base import as_uuid
from tests.support import create_database, drop_database, produce, sink_settings, with_database

ENV = f"types{uuid.uuid4().hex[:6]}"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BRIDGE = f"{ENV}.omninode_bridge.onex.evt"
INTEL = f"{ENV}.archon-intelligence"


@dataclass
class Sent:
    event_id: uuid.UUID
    topic: str
    at: datetime
    payload: dict[str, Any]


SENT: dict[str, list[Sent]] = {}
RECORDS: list[Record] = []


def send(
    case: str,
    topic: str,
    event_type: str,
    payload: dict[str, Any],
    *,
    seconds: float = 0,
    correlation_id: uuid.UUID | None = None,
) -> Sent:
    at = T0 + timedelta(seconds=seconds)
    event_id = uuid.uuid4()
    value = {
        "event_id": str(event_id),
        "event_type": event_type,
        "event_timestamp": at.isoformat(),
        "source_node_id": "test-producer",
        "correlation_id": str(correlation_id) if correlation_id else None,
        "payload": payload,
    }
    sent = Sent(event_id, topic, at, payload)
    SENT.setdefault(case, []).append(sent)
    RECORDS.append(Record(topic, case.encode(), orjson.dumps(value), event_id, event_type.upper()))
    return sent


# -- the scenarios ---------------------------------------------------------------------------

WF = {name: uuid.uuid4() for name in ("started", "completed", "failed", "steps", "transition")}
WF_HASH = uuid.uuid4()
WF_INTEL = uuid.uuid4()
HASH = "ab" * 32
INTEL_HASH = "cd" * 32
STAMP_HASH = "ef" * 32
CORR = uuid.uuid4()

send(
    "WORKFLOW_STARTED",
    f"{BRIDGE}.stamp-workflow-started.v1",
    "stamp_workflow_started",
    {"workflow_id": str(WF["started"]), "namespace": "ns.a", "input": {"path": "/a"}},
    correlation_id=CORR,
)
send(
    "WORKFLOW_COMPLETED",
    f"{BRIDGE}.stamp-workflow-completed.v1",
    "stamp_workflow_completed",
    {
        "workflow_id": str(WF["completed"]),
        "stamp_id": "st-1",
        "file_hash": HASH,
        "namespace": "ns.a",
        "output": {"stamped": True},
    },
    seconds=5,
)
send(
    "WORKFLOW_FAILED",
    f"{BRIDGE}.stamp-workflow-failed.v1",
    "stamp_workflow_failed",
    {"workflow_id": str(WF["failed"]), "error": "disk full", "error_type": "IO_ERROR"},
    seconds=6,
)
for case, wire, seconds in (
    ("STEP_STARTED", "STEP_STARTED", 1),
    ("STEP_COMPLETED", "workflow_step_completed", 2),
    ("STEP_FAILED", "STEP_FAILED", 3),
):
    send(
        case,
        f"{BRIDGE}.workflow-step-completed.v1",
        wire,
        {
            "workflow_id": str(WF["steps"]),
            "step_id": case.lower(),
            "step_name": case.lower(),
            "step_type": "task",
            "step_order": seconds,
            "execution_time_ms": 12,
        },
        seconds=seconds,
    )
send(
    "STATE_TRANSITION",
    f"{BRIDGE}.workflow-state-transition.v1",
    "workflow_state_transition",
    {
        "workflow_id": str(WF["transition"]),
        "from_state": "pending",
        "to_state": "processing",
        "triggered_by": "orchestrator",
    },
    seconds=2,
)
send(
    "STAMP_CREATED",
    f"{BRIDGE}.metadata-stamp-created.v1",
    "metadata.stamp.created",
    {
        "stamp_id": "st-created",
        "file_hash": STAMP_HASH,
        "namespace": "ns.b",
        "stamp_data": {"stamp": "ONEX:ef"},
        "file_metadata": {"size": 3},
    },
    seconds=4,
)
send(
    "HASH_GENERATED",
    f"{BRIDGE}.blake3-hash-generated.v1",
    "blake3_hash_generated",
    {"workflow_id": str(WF_HASH), "file_hash": HASH, "generation_time_ms": 7},
    seconds=3,
)
send(
    "INTELLIGENCE_REQUESTED",
    f"{BRIDGE}.onextree-intelligence-requested.v1",
    "onextree_intelligence_requested",
    {"workflow_id": str(WF_INTEL), "file_hash": INTEL_HASH},
    seconds=1,
)
send(
    "INTELLIGENCE_RECEIVED",
    f"{BRIDGE}.metadata-stamp-created.v1",
    "metadata_stamp_created",
    {
        "stamp_id": "st-intel",
        "file_hash": INTEL_HASH,
        "namespace": "ns.c",
        "stamp_data": {"stamp": "ONEX:cd"},
    },
    seconds=1,
)
send(
    "INTELLIGENCE_RECEIVED",
    f"{BRIDGE}.onextree-intelligence-received.v1",
    "onextree_intelligence_received",
    {
        "workflow_id": str(WF_INTEL),
        "file_hash": INTEL_HASH,
        "intelligence_data": {"quality": 0.9},
    },
    seconds=2,
)
send(
    "NODE_INTROSPECTION",
    f"{BRIDGE}.node-introspection.v1",
    "NODE_INTROSPECTION",
    {
        "node_id": "orchestrator-7",
        "node_type": "orchestrator",
        "node_version": "1.4.2",
        "endpoint_url": "http://orchestrator-7:8080",
        "capabilities": {"stamping": True},
    },
)
send(
    "NODE_HEARTBEAT",
    f"{BRIDGE}.node-heartbeat.v1",
    "node_heartbeat",
    {"node_id": "reducer-3", "node_type": "reducer", "health_status": "degraded", "uptime": 5},
    seconds=8,
)
send(
    "REGISTRY_REQUEST_INTROSPECTION",
    f"{BRIDGE}.registry-request-introspection.v1",
    "registry-request-introspection",
    {"requested_by": "registry-1"},
)
REDUCER_CASES = {
    "AGGREGATION_STARTED": ({}, "AGGREGATING"),
    "AGGREGATION_COMPLETED": ({"total_size_bytes": 2048, "aggregation_duration_ms": 9}, None),
    "AGGREGATION_FAILED": ({"error": "store unavailable"}, None),
    "BATCH_PROCESSED": ({"total_size_bytes": 10}, None),
    "STATE_PERSISTED": ({"state": "persisted"}, "PERSISTED"),
    "FSM_STATE_INITIALIZED": ({"initial_state": "IDLE"}, "IDLE"),
    "FSM_STATE_TRANSITIONED": ({"from_state": "IDLE", "to_state": "AGGREGATING"}, "AGGREGATING"),
}
AGG = {case: uuid.uuid4() for case in REDUCER_CASES}
for case, (extra, _) in REDUCER_CASES.items():
    send(
        case,
        f"{BRIDGE}.{case.lower().replace('_', '-')}.v1",
        case.lower(),
        {"aggregation_id": str(AGG[case]), "namespace": "ns.r", **extra},
        seconds=4,
    )
send(
    "FSM_STATE_TRANSITION",
    f"{INTEL}.fsm.state.changed.v1",
    "fsm.state.changed",
    {
        "fsm_type": "ingestion",
        "entity_id": "doc-1",
        "from_state": "RECEIVED",
        "to_state": "PROCESSING",
        "action": "START_PROCESSING",
    },
    seconds=3,
)
send(
    "LEASE_ACQUIRED",
    f"{INTEL}.fsm.lease.v1",
    "lease.acquired",
    {
        "fsm_type": "QUALITY_ASSESSMENT",
        "entity_id": "doc-lease",
        "lease_id": "lease-a",
        "lease_epoch": 4,
        "lease_expires_at": (T0 + timedelta(minutes=5)).isoformat(),
    },
)
send(
    "LEASE_RELEASED",
    f"{INTEL}.fsm.lease.v1",
    "lease.acquired",
    {
        "fsm_type": "PATTERN_LEARNING",
        "entity_id": "doc-released",
        "lease_id": "lease-b",
        "lease_epoch": 2,
        "lease_expires_at": (T0 + timedelta(minutes=5)).isoformat(),
    },
)
send(
    "LEASE_RELEASED",
    f"{INTEL}.fsm.lease.v1",
    "lease.released",
    {
        "fsm_type": "PATTERN_LEARNING",
        "entity_id": "doc-released",
        "lease_id": "lease-b",
        "lease_epoch": 2,
    },
    seconds=1,
)
for case, wire, payload, seconds in (
    ("INTELLIGENCE_WORKFLOW_STARTED", "workflow.started", {"input": {"n": 1}}, 0),
    ("INTELLIGENCE_WORKFLOW_STEP_COMPLETED", "workflow.step.completed", {"step": "parse"}, 1),
    ("INTELLIGENCE_WORKFLOW_COMPLETED", "workflow.completed", {"results": {"chunks": 3}}, 2),
    ("INTELLIGENCE_WORKFLOW_FAILED", "workflow.failed", {"error": "boom", "step": "embed"}, 2),
):
    send(
        case,
        f"{INTEL}.workflow.events.v1",
        wire,
        {
            "workflow_id": f"iwf-{case.lower()}",
            "operation_type": "DOCUMENT_INGESTION",
            "entity_id": "doc-9",
            **payload,
        },
        seconds=seconds,
    )
WF_ACTION = uuid.uuid4()
send(
    "ACTION",
    f"{BRIDGE}.action.v1",
    "ACTION",
    {
        "correlation_id": str(WF_ACTION),
        "action_type": "ORCHESTRATE_WORKFLOW",
        "payload": {
            "workflow_id": str(WF_ACTION),
            "input_data": {"content": "x = 1", "file_path": "/src/x.py"},
            "namespace": "ns.action",
            "workflow_type": "metadata_stamping",
        },
        "source_node": "orchestrator-1",
    },
    correlation_id=WF_ACTION,
)
STAMPING = f"{ENV}.omninode-bridge.metadata"
LOGGED_ONLY = {
    "STAMP_VALIDATED": (
        f"{STAMPING}.metadata-stamp-validated.v1",
        "metadata.stamp.validated",
        {"file_hash": STAMP_HASH, "validation_result": True, "validation_time_ms": 0.4},
    ),
    "STAMP_BATCH_PROCESSED": (
        f"{STAMPING}.metadata-batch-processed.v1",
        "metadata.batch.processed",
        {"batch_id": "b-1", "total_files": 2, "successful_files": 2, "failed_files": 0},
    ),
    "CODE_ANALYSIS_COMPLETED": (
        f"{INTEL}.intelligence.code-analysis-completed.v1",
        "omninode.intelligence.event.code_analysis_completed.v1",
        {"source_path": "src/x.py", "quality_score": 0.9},
    ),
    "CODE_ANALYSIS_FAILED": (
        f"{INTEL}.intelligence.code-analysis-failed.v1",
        "omninode.intelligence.event.code_analysis_failed.v1",
        {"source_path": "src/x.rs", "error_code": "UNSUPPORTED_LANGUAGE"},
    ),
    "FSM_COMPLETED": (
        f"{INTEL}.pattern_learning.completed.v1",
        "FSM_COMPLETED",
        {
            "fsm_type": "PATTERN_LEARNING",
            "entity_id": "doc-intent",
            "previous_state": "TRACEABILITY",
            "current_state": "COMPLETED",
        },
    ),
}
for case, (topic, wire, payload) in LOGGED_ONLY.items():
    send(case, topic, wire, payload, seconds=9)
send("UNKNOWN", f"{BRIDGE}.custom-audit.v1", "audit.recorded", {"actor": "u"})


# -- one run of the sink over all of them ----------------------------------------------------


@pytest.fixture(scope="module")
def sunk(pg_server: Service, kafka_server: Service, template_database: str) -> Iterator[str]:
    """A database the sink has consumed every scenario into."""
    name = f"omnisink_types_{uuid.uuid4().hex[:8]}"

    async def setup() -> str:
        await create_database(pg_server.url, name, template=template_database)
        url = with_database(pg_server.url, name)
        await produce(kafka_server.url, RECORDS, partitions=2)
        topics = sorted({r.topic for r in RECORDS})
        worker = Worker(
            sink_settings(url, kafka_server.url, f"types-{ENV}", topics=topics),
            until_caught_up=True,
            install_signal_handlers=False,
        )
        stats = await asyncio.wait_for(worker.run(), 120)
        assert stats.dead_letters == 0
        assert stats.written == len(RECORDS)
        return url

    url = asyncio.run(setup())
    try:
        yield url
    finally:
        asyncio.run(drop_database(pg_server.url, name))


@pytest.fixture
async def conn(sunk: str) -> Any:
    c = await asyncpg.connect(sunk)
    try:
        yield c
    finally:
        await c.close()


async def _logged(conn: asyncpg.Connection, case: str, event_type: str) -> None:
    """Every event of the case has its event_logs row: canonical type, event time, source."""
    for sent in SENT[case]:
        row = await conn.fetchrow("SELECT * FROM event_logs WHERE id = $1", sent.event_id)
        assert row is not None
        assert row["created_at"] == sent.at
        assert orjson.loads(row["payload"]) == sent.payload
        meta = orjson.loads(row["metadata"])
        assert meta["kafka_topic"] == sent.topic
        assert meta["source_node_id"] == "test-producer"
    last = SENT[case][-1]
    assert (
        await conn.fetchval("SELECT event_type FROM event_logs WHERE id = $1", last.event_id)
        == event_type
    )


async def test_workflow_started(conn: asyncpg.Connection) -> None:
    await _logged(conn, "WORKFLOW_STARTED", "WORKFLOW_STARTED")
    row = await conn.fetchrow("SELECT * FROM workflow_executions WHERE id = $1", WF["started"])
    assert row["state"] == "PROCESSING"
    assert row["started_at"] == T0
    assert row["namespace"] == "ns.a"
    assert row["correlation_id"] == CORR
    assert orjson.loads(row["input_data"]) == {"path": "/a"}


async def test_workflow_completed(conn: asyncpg.Connection) -> None:
    await _logged(conn, "WORKFLOW_COMPLETED", "WORKFLOW_COMPLETED")
    row = await conn.fetchrow("SELECT * FROM workflow_executions WHERE id = $1", WF["completed"])
    assert row["state"] == "COMPLETED"
    assert row["completed_at"] == T0 + timedelta(seconds=5)
    assert row["stamp_id"] == "st-1"
    assert row["file_hash"] == HASH
    assert orjson.loads(row["output_data"]) == {"stamped": True}


async def test_workflow_failed(conn: asyncpg.Connection) -> None:
    await _logged(conn, "WORKFLOW_FAILED", "WORKFLOW_FAILED")
    row = await conn.fetchrow("SELECT * FROM workflow_executions WHERE id = $1", WF["failed"])
    assert row["state"] == "FAILED"
    assert row["completed_at"] == T0 + timedelta(seconds=6)
    assert orjson.loads(row["error_info"]) == {"message": "disk full", "code": "IO_ERROR"}


@pytest.mark.parametrize(
    ("case", "status"),
    [("STEP_STARTED", "RUNNING"), ("STEP_COMPLETED", "COMPLETED"), ("STEP_FAILED", "FAILED")],
)
async def test_steps(conn: asyncpg.Connection, case: str, status: str) -> None:
    await _logged(conn, case, case)
    row = await conn.fetchrow(
        "SELECT * FROM workflow_steps WHERE workflow_id = $1 AND step_key = $2",
        WF["steps"],
        case.lower(),
    )
    assert row["status"] == status
    assert row["step_type"] == "task"
    # The steps arrived before (without) their workflow: a placeholder parent holds them.
    parent = await conn.fetchrow("SELECT * FROM workflow_executions WHERE id = $1", WF["steps"])
    assert parent is not None
    assert parent["workflow_steps_executed"] == 1  # one COMPLETED step


async def test_state_transition(conn: asyncpg.Connection) -> None:
    await _logged(conn, "STATE_TRANSITION", "STATE_TRANSITION")
    sent = SENT["STATE_TRANSITION"][0]
    row = await conn.fetchrow("SELECT * FROM fsm_transitions WHERE id = $1", sent.event_id)
    assert (row["from_state"], row["to_state"]) == ("PENDING", "PROCESSING")
    assert row["transition_at"] == sent.at
    assert row["workflow_id"] == WF["transition"]
    state = await conn.fetchval(
        "SELECT state FROM workflow_executions WHERE id = $1", WF["transition"]
    )
    assert state == "PROCESSING"


async def test_stamp_created(conn: asyncpg.Connection) -> None:
    await _logged(conn, "STAMP_CREATED", "STAMP_CREATED")
    row = await conn.fetchrow("SELECT * FROM metadata_stamps WHERE stamp_id = 'st-created'")
    assert row["file_hash"] == STAMP_HASH
    assert row["namespace"] == "ns.b"
    assert row["metadata_version"] == "0.1"
    assert row["created_at"] == T0 + timedelta(seconds=4)
    assert orjson.loads(row["stamp_data"]) == {"stamp": "ONEX:ef"}


async def test_hash_generated(conn: asyncpg.Connection) -> None:
    await _logged(conn, "HASH_GENERATED", "HASH_GENERATED")
    row = await conn.fetchrow("SELECT * FROM workflow_executions WHERE id = $1", WF_HASH)
    assert row["file_hash"] == HASH
    assert row["hash_generation_time_ms"] == 7


async def test_intelligence_requested_is_logged_only(conn: asyncpg.Connection) -> None:
    await _logged(conn, "INTELLIGENCE_REQUESTED", "INTELLIGENCE_REQUESTED")


async def test_intelligence_received(conn: asyncpg.Connection) -> None:
    await _logged(conn, "INTELLIGENCE_RECEIVED", "INTELLIGENCE_RECEIVED")
    workflow = await conn.fetchval(
        "SELECT intelligence_data FROM workflow_executions WHERE id = $1", WF_INTEL
    )
    stamp = await conn.fetchval(
        "SELECT intelligence_data FROM metadata_stamps WHERE file_hash = $1", INTEL_HASH
    )
    assert orjson.loads(workflow) == {"quality": 0.9}
    assert orjson.loads(stamp) == {"quality": 0.9}


async def test_node_introspection(conn: asyncpg.Connection) -> None:
    await _logged(conn, "NODE_INTROSPECTION", "NODE_INTROSPECTION")
    row = await conn.fetchrow(
        "SELECT * FROM node_registrations WHERE node_id = $1", as_uuid("orchestrator-7")
    )
    assert row["health_status"] == "HEALTHY"
    assert row["node_version"] == "1.4.2"
    assert row["endpoint_url"] == "http://orchestrator-7:8080"
    assert row["registered_at"] == T0
    assert orjson.loads(row["metadata"])["original_node_id"] == "orchestrator-7"


async def test_node_heartbeat(conn: asyncpg.Connection) -> None:
    await _logged(conn, "NODE_HEARTBEAT", "NODE_HEARTBEAT")
    row = await conn.fetchrow(
        "SELECT * FROM node_registrations WHERE node_id = $1", as_uuid("reducer-3")
    )
    assert row["health_status"] == "DEGRADED"
    assert row["last_heartbeat"] == T0 + timedelta(seconds=8)


async def test_registry_request_is_logged_only(conn: asyncpg.Connection) -> None:
    await _logged(conn, "REGISTRY_REQUEST_INTROSPECTION", "REGISTRY_REQUEST_INTROSPECTION")


@pytest.mark.parametrize("case", sorted(REDUCER_CASES))
async def test_reducer_events(conn: asyncpg.Connection, case: str) -> None:
    await _logged(conn, case, case)
    row = await conn.fetchrow(
        "SELECT * FROM bridge_states WHERE node_type = 'REDUCER' AND correlation_id = $1",
        AGG[case],
    )
    assert row is not None
    assert row["namespace"] == "ns.r"
    assert row["updated_at"] == T0 + timedelta(seconds=4)
    expected_state = REDUCER_CASES[case][1]
    if expected_state is not None:
        assert row["state"] == expected_state
    if case == "AGGREGATION_COMPLETED":
        assert row["total_size_bytes"] == 2048
        assert row["aggregation_duration_ms"] == 9


async def test_fsm_state_transition(conn: asyncpg.Connection) -> None:
    await _logged(conn, "FSM_STATE_TRANSITION", "FSM_STATE_TRANSITION")
    row = await conn.fetchrow(
        "SELECT * FROM intelligence.fsm_state WHERE fsm_type = 'INGESTION' AND entity_id = 'doc-1'"
    )
    assert (row["previous_state"], row["current_state"]) == ("RECEIVED", "PROCESSING")
    assert row["transition_timestamp"] == T0 + timedelta(seconds=3)
    history = await conn.fetch(
        "SELECT * FROM intelligence.fsm_state_history WHERE entity_id = 'doc-1'"
    )
    assert [(h["from_state"], h["to_state"], h["action"]) for h in history] == [
        ("RECEIVED", "PROCESSING", "START_PROCESSING")
    ]


async def test_lease_acquired(conn: asyncpg.Connection) -> None:
    await _logged(conn, "LEASE_ACQUIRED", "LEASE_ACQUIRED")
    row = await conn.fetchrow("SELECT * FROM intelligence.fsm_state WHERE entity_id = 'doc-lease'")
    assert (row["lease_id"], row["lease_epoch"]) == ("lease-a", 4)
    assert row["lease_expires_at"] == T0 + timedelta(minutes=5)


async def test_lease_released(conn: asyncpg.Connection) -> None:
    await _logged(conn, "LEASE_RELEASED", "LEASE_RELEASED")
    row = await conn.fetchrow(
        "SELECT * FROM intelligence.fsm_state WHERE entity_id = 'doc-released'"
    )
    assert (row["lease_id"], row["lease_epoch"], row["lease_expires_at"]) == (None, None, None)


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("INTELLIGENCE_WORKFLOW_STARTED", "RUNNING"),
        ("INTELLIGENCE_WORKFLOW_STEP_COMPLETED", None),
        ("INTELLIGENCE_WORKFLOW_COMPLETED", "COMPLETED"),
        ("INTELLIGENCE_WORKFLOW_FAILED", "FAILED"),
    ],
)
async def test_intelligence_workflows(
    conn: asyncpg.Connection, case: str, status: str | None
) -> None:
    # Sent as `workflow.started` etc. on an intelligence topic: the topic decides the type.
    await _logged(conn, case, case)
    row = await conn.fetchrow(
        "SELECT * FROM intelligence.workflow_executions WHERE workflow_id = $1",
        f"iwf-{case.lower()}",
    )
    assert row is not None
    assert row["operation_type"] in {"DOCUMENT_INGESTION", "UNKNOWN"}
    if status is not None:
        assert row["status"] == status
    if case == "INTELLIGENCE_WORKFLOW_STARTED":
        assert row["started_at"] == T0
    if case == "INTELLIGENCE_WORKFLOW_STEP_COMPLETED":
        assert orjson.loads(row["completed_steps"]) == ["parse"]
    if case == "INTELLIGENCE_WORKFLOW_FAILED":
        assert row["error_message"] == "boom"
        assert row["completed_at"] == T0 + timedelta(seconds=2)


async def test_action(conn: asyncpg.Connection) -> None:
    await _logged(conn, "ACTION", "ACTION")
    row = await conn.fetchrow("SELECT * FROM workflow_executions WHERE id = $1", WF_ACTION)
    assert orjson.loads(row["input_data"]) == {"content": "x = 1", "file_path": "/src/x.py"}
    assert row["namespace"] == "ns.action"
    assert row["state"] == "PENDING"  # no STARTED yet: a placeholder


@pytest.mark.parametrize("case", sorted(LOGGED_ONLY))
async def test_producer_types_kept_in_event_logs_only(conn: asyncpg.Connection, case: str) -> None:
    await _logged(conn, case, case)
    sent = SENT[case][0]
    meta = orjson.loads(
        await conn.fetchval("SELECT metadata FROM event_logs WHERE id = $1", sent.event_id)
    )
    wire = LOGGED_ONLY[case][1]
    assert meta.get("original_event_type") == (None if wire == case else wire)


async def test_unknown_type_is_kept_in_event_logs_only(conn: asyncpg.Connection) -> None:
    await _logged(conn, "UNKNOWN", "AUDIT_RECORDED")
