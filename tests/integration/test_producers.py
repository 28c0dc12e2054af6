"""What the OmniNode producers really send (dev/producers.py), from Kafka record to rows.

One small scenario per producer, all produced once, interleaved across topics as they arrive
in production (per key in order, a few producer retries), then consumed by one in-process
worker subscribed with the **default topic pattern**: every row asserted here therefore also
proves the default subscription reads the topic its event came on.

The producers' topics carry fixed namespaces (``dev``, ``omninode.bridge``,
``omninode.bridge.reducer``) that other tests may use too, and a pattern subscription reads
every matching topic of a broker, so this module runs its own embedded broker: what the
worker reads is exactly what is produced here.

What must hold (docs/contract.md section 3, and the producers' issue): a stamp row once its
stamp_id and file_hash are both known, whichever event brought them; one row per file_hash,
held by the earliest stamp by (event time, event id), re-stamps kept in event_logs only; a
stamp's namespace from the payload, else the workflow, else the envelope metadata, else
OMNISINK_DEFAULT_NAMESPACE; the FSM effect's previous_state/current_state as transitions;
the reducer's duration_ms; the introspection's payload.metadata.version; a step's rank by
event time as its step_order; an unknown type's wire name kept in event_logs.metadata; and
no dead letter for any of it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from consumer.stats import Stats
from consumer.worker import Worker
from dev import producers
from dev.producers import (
    ORCHESTRATOR_NAMESPACE,
    REDUCER_NAMESPACE,
    TIMEOUT_ERROR,
    ProducerRecord,
    Scenario,
)
from dev.sample import interleave
from dev.services import Service, running, start_embedded_broker
from handlers.base import as_uuid
from handlers.envelope import EventType
from tests.support import create_database, drop_database, produce, sink_settings, with_database

SEED = 31
P = producers.Producers(seed=SEED)
T0 = producers.BASE_TIME
DEFAULT_NAMESPACE = "omnisink.producers-test"


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


# -- the scenarios, one per producer behaviour ------------------------------------------------

SHARED_FILE = P.document()  # stamped by a workflow, then again by the stamping service
LEGACY = P.legacy_workflow(
    T0, namespace=ORCHESTRATOR_NAMESPACE, intelligence=True, content=SHARED_FILE[0]
)
LEGACY_FAILED = P.legacy_workflow(T0 + seconds(1), fail_at="hash_generation")
EVENT_DRIVEN = P.event_driven_workflow(T0 + seconds(2), namespace=ORCHESTRATOR_NAMESPACE)
TIMED_OUT = P.event_driven_workflow(T0 + seconds(3), outcome="timeout")

AGGREGATED = P.aggregation(T0, namespace=REDUCER_NAMESPACE, batches=2)
AGGREGATION_FAILED = P.aggregation(T0 + seconds(1), failed=True)

REGISTRY = P.registry_rebroadcast(T0)
ORCHESTRATOR_NODE = P.node(T0 + seconds(1), "orchestrator", health=("healthy", "degraded"))
REDUCER_NODE = P.node(T0 + seconds(2), "reducer", node_id="reducer-bridge-1", version="1.0.3")

FILE = P.document()
STAMPED = P.stamp(T0 + seconds(5), content=FILE[0], file_path=FILE[1], validate=True)
# The same unchanged file stamped again by a second instance: a new stamp_id, later in event
# time, but produced first (so arrival order alone would pick the wrong stamp).
RESTAMPED = P.stamp(
    T0 + seconds(9), content=FILE[0], file_path=FILE[1], instance="metadata-stamping-2"
)
WORKFLOW_FILE_RESTAMPED = P.stamp(
    T0 + seconds(20), content=SHARED_FILE[0], file_path=SHARED_FILE[1]
)
BATCH = P.stamp_batch(T0 + seconds(6))

# INGESTION failing and retried, PATTERN_LEARNING to COMPLETED, QUALITY_ASSESSMENT with a retry
WALKS = {fsm_type: P.fsm_walk(T0, fsm_type, actions) for fsm_type, actions in producers.WALKS[3:6]}
CODE_ANALYSIS = [P.code_analysis(T0), P.code_analysis(T0 + seconds(1), failed=True)]

PRODUCERS: dict[str, list[Scenario]] = {
    "orchestrator": [LEGACY, LEGACY_FAILED, EVENT_DRIVEN, TIMED_OUT],
    "reducer": [AGGREGATED, AGGREGATION_FAILED],
    "registry": [REGISTRY],
    "nodes": [ORCHESTRATOR_NODE, REDUCER_NODE],
    # the re-stamp first: its records are produced before the original stamp's
    "stamping": [RESTAMPED, STAMPED, WORKFLOW_FILE_RESTAMPED, BATCH],
    "intelligence-fsm": list(WALKS.values()),
    "intelligence-adapter": CODE_ANALYSIS,
}
SENT: list[ProducerRecord] = [r for group in PRODUCERS.values() for s in group for r in s.records]
# Arrival: each (topic, key) in its producer's order, topics interleaved, a few retries.
ARRIVALS = interleave(SENT, P.rng, duplicate_share=0.03)


def _stamp_records() -> list[ProducerRecord]:
    return [r for r in SENT if r.event_type in {"metadata_stamp_created", "metadata.stamp.created"}]


# -- one run of the sink over all of them ----------------------------------------------------


@dataclass(frozen=True)
class Sunk:
    url: str
    stats: Stats


@pytest.fixture(scope="module")
def sunk(pg_server: Service, template_database: str) -> Iterator[Sunk]:
    """A database the sink has consumed every scenario into, from a broker of its own."""
    name = f"omnisink_producers_{uuid.uuid4().hex[:8]}"
    url = with_database(pg_server.url, name)

    async def setup(servers: str) -> Stats:
        await create_database(pg_server.url, name, template=template_database)
        await produce(servers, ARRIVALS, partitions=3)
        worker = Worker(
            sink_settings(url, servers, "omnisink-producers"),  # the default topic pattern
            until_caught_up=True,
            install_signal_handlers=False,
        )
        return await asyncio.wait_for(worker.run(), 120)

    with running(start_embedded_broker()) as broker, pytest.MonkeyPatch.context() as env:
        env.delenv("OMNISINK_TOPIC_PATTERN", raising=False)
        env.delenv("OMNISINK_TOPICS", raising=False)
        env.setenv("OMNISINK_DEFAULT_NAMESPACE", DEFAULT_NAMESPACE)
        stats = asyncio.run(setup(broker.url))
    try:
        yield Sunk(url, stats)
    finally:
        asyncio.run(drop_database(pg_server.url, name))


@pytest.fixture
async def conn(sunk: Sunk) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(sunk.url)
    try:
        yield c
    finally:
        await c.close()


async def _one(conn: asyncpg.Connection, query: str, *args: Any) -> asyncpg.Record:
    row = await conn.fetchrow(query, *args)
    assert row is not None, f"no row for {args}"
    return row


def _json(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


# -- every producer: read, logged, never a dead letter ----------------------------------------


async def test_the_default_pattern_reads_every_producer_topic(
    sunk: Sunk, conn: asyncpg.Connection
) -> None:
    read = {
        r["topic"]
        for r in await conn.fetch(
            "SELECT DISTINCT metadata->>'kafka_topic' AS topic FROM event_logs"
            " UNION SELECT DISTINCT topic FROM omnisink.dead_letters"
        )
    }
    assert sorted({r.topic for r in SENT} - read) == []
    assert sunk.stats.records == len(ARRIVALS)


@pytest.mark.parametrize("producer", sorted(PRODUCERS))
async def test_no_dead_letters(conn: asyncpg.Connection, producer: str) -> None:
    topics = sorted({r.topic for s in PRODUCERS[producer] for r in s.records})
    dead = await conn.fetch(
        "SELECT topic, event_type, error_kind, error_message FROM omnisink.dead_letters"
        " WHERE topic = ANY($1::text[]) ORDER BY id",
        topics,
    )
    assert [dict(d) for d in dead] == []


@pytest.mark.parametrize("producer", sorted(PRODUCERS))
async def test_every_event_is_logged_once(conn: asyncpg.Connection, producer: str) -> None:
    records = [r for s in PRODUCERS[producer] for r in s.records]
    rows = await conn.fetch(
        "SELECT id, created_at, payload, metadata->>'kafka_topic' AS topic FROM event_logs"
        " WHERE id = ANY($1::uuid[])",
        [r.event_id for r in records],
    )
    logged = {row["id"]: row for row in rows}
    assert sorted(str(r.event_id) for r in records if r.event_id not in logged) == []
    for record in records:
        row = logged[record.event_id]
        assert (row["created_at"], row["topic"]) == (record.at, record.topic)
        assert _json(row["payload"]) == record.payload


async def test_the_sink_counts_what_it_read(sunk: Sunk, conn: asyncpg.Connection) -> None:
    distinct = len({r.event_id for r in ARRIVALS})
    assert await conn.fetchval("SELECT count(*) FROM event_logs") == distinct
    assert (sunk.stats.written, sunk.stats.duplicates, sunk.stats.dead_letters) == (
        distinct,
        len(ARRIVALS) - distinct,
        0,
    )


def _strings(metadata: dict[str, Any]) -> set[str]:
    extra = metadata.get("envelope_extra") or {}
    return {v for v in (*metadata.values(), *extra.values()) if isinstance(v, str)}


async def test_an_unknown_type_keeps_its_wire_name(conn: asyncpg.Connection) -> None:
    """The sink has no canonical name for some producers' types (ACTION, FSM_<state>, the
    stamping service's validations and batches, the adapter's code analysis): the type as sent
    stays findable in event_logs.metadata."""
    rows = await conn.fetch(
        "SELECT id, event_type, metadata FROM event_logs WHERE id = ANY($1::uuid[])",
        [r.event_id for r in SENT],
    )
    wire = {r.event_id: r.event_type for r in SENT}
    unknown = [row for row in rows if row["event_type"] not in EventType.__members__]
    lost = sorted(
        {
            wire[row["id"]]
            for row in unknown
            if wire[row["id"]] not in _strings(_json(row["metadata"]))
        }
    )
    assert lost == []


# -- the bridge orchestrator ------------------------------------------------------------------


async def _workflow(conn: asyncpg.Connection, scenario: Scenario) -> asyncpg.Record:
    return await _one(
        conn,
        "SELECT * FROM workflow_executions WHERE id = $1",
        uuid.UUID(scenario.ids["workflow_id"]),
    )


async def _transitions(conn: asyncpg.Connection, scenario: Scenario) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT from_state, to_state FROM fsm_transitions WHERE workflow_id = $1"
        " ORDER BY transition_at",
        uuid.UUID(scenario.ids["workflow_id"]),
    )
    return [(r["from_state"], r["to_state"]) for r in rows]


async def test_legacy_workflow(conn: asyncpg.Connection) -> None:
    row = await _workflow(conn, LEGACY)
    assert row["state"] == "COMPLETED"
    assert row["correlation_id"] == uuid.UUID(LEGACY.ids["workflow_id"])
    assert row["started_at"] == LEGACY.one("stamp_workflow_started").at
    assert row["completed_at"] == LEGACY.one("stamp_workflow_completed").at
    assert row["namespace"] == ORCHESTRATOR_NAMESPACE
    assert (row["stamp_id"], row["file_hash"]) == (LEGACY.ids["stamp_id"], LEGACY.ids["file_hash"])
    generated = LEGACY.one("blake3_hash_generated").payload["generation_time_ms"]
    assert row["hash_generation_time_ms"] == round(generated)
    assert await _transitions(conn, LEGACY) == [
        ("PENDING", "PROCESSING"),
        ("PROCESSING", "COMPLETED"),
    ]


async def test_steps_are_ranked_by_event_time(conn: asyncpg.Connection) -> None:
    """The orchestrator sends no step_order: a step's order is its rank by event time within
    its workflow (from 0 or from 1, but without gaps)."""
    rows = await conn.fetch(
        "SELECT step_key, step_type, status, step_order FROM workflow_steps WHERE workflow_id = $1",
        uuid.UUID(LEGACY.ids["workflow_id"]),
    )
    steps = {r["step_key"]: r for r in rows}
    sent = LEGACY.of("workflow_step_completed")
    assert sorted(steps) == sorted(r.payload["step_id"] for r in sent)
    for record in sent:
        assert steps[record.payload["step_id"]]["step_type"] == record.payload["step_type"]
        assert steps[record.payload["step_id"]]["status"] == "COMPLETED"
    in_time_order = [
        steps[r.payload["step_id"]]["step_order"] for r in sorted(sent, key=lambda r: r.at)
    ]
    assert in_time_order in (list(range(len(sent))), list(range(1, len(sent) + 1)))


async def test_failed_legacy_workflow(conn: asyncpg.Connection) -> None:
    row = await _workflow(conn, LEGACY_FAILED)
    failed = LEGACY_FAILED.one("stamp_workflow_failed")
    assert row["state"] == "FAILED"
    assert row["completed_at"] == failed.at
    assert _json(row["error_info"]) == {"message": failed.payload["error"], "code": "OnexError"}
    # No payload names its namespace; the envelope metadata's is the orchestrator's own, not
    # the workflow's, and is not read (docs/contract.md, Known gaps).
    assert await _transitions(conn, LEGACY_FAILED) == [
        ("PENDING", "PROCESSING"),
        ("PROCESSING", "FAILED"),
    ]
    steps = await conn.fetch(
        "SELECT step_key, status FROM workflow_steps WHERE workflow_id = $1", row["id"]
    )
    assert [(s["step_key"], s["status"]) for s in steps] == [("validate_input", "COMPLETED")]


async def test_event_driven_workflow_takes_its_input_from_the_action(
    conn: asyncpg.Connection,
) -> None:
    row = await _workflow(conn, EVENT_DRIVEN)
    assert row["state"] == "COMPLETED"
    assert row["started_at"] == EVENT_DRIVEN.one("stamp_workflow_started").at
    assert row["completed_at"] == EVENT_DRIVEN.one("stamp_workflow_completed").at
    # the ACTION's inner payload, not its envelope metadata ({namespace: "dev"})
    assert _json(row["input_data"]) == EVENT_DRIVEN.ids["input_data"]
    assert row["namespace"] == ORCHESTRATOR_NAMESPACE


async def test_event_driven_workflow_timing_out(conn: asyncpg.Connection) -> None:
    row = await _workflow(conn, TIMED_OUT)
    assert row["state"] == "FAILED"
    assert row["completed_at"] == TIMED_OUT.one("stamp_workflow_failed").at
    assert _json(row["error_info"]) == {"message": TIMEOUT_ERROR, "code": "TimeoutError"}
    assert _json(row["input_data"]) == TIMED_OUT.ids["input_data"]
    assert row["namespace"] == producers.DEV


# -- stamps -------------------------------------------------------------------------------


async def _stamp(conn: asyncpg.Connection, file_hash: str) -> asyncpg.Record:
    return await _one(conn, "SELECT * FROM metadata_stamps WHERE file_hash = $1", file_hash)


async def test_a_workflow_stamp_is_assembled_from_its_events(conn: asyncpg.Connection) -> None:
    """metadata_stamp_created has the stamp_id only; the hash comes from the workflow's
    BLAKE3_HASH_GENERATED (and WORKFLOW_COMPLETED), the namespace from the workflow."""
    row = await _stamp(conn, LEGACY.ids["file_hash"])
    created = LEGACY.one("metadata_stamp_created")
    assert row["stamp_id"] == LEGACY.ids["stamp_id"]
    assert row["namespace"] == ORCHESTRATOR_NAMESPACE
    assert _json(row["stamp_data"]) == created.payload
    assert row["created_at"] == created.at


async def test_a_stamping_service_stamp(conn: asyncpg.Connection) -> None:
    """The earliest stamp of the file holds the row, though a later re-stamp arrived first; no
    namespace anywhere: the sink's default."""
    row = await _stamp(conn, STAMPED.ids["file_hash"])
    created = STAMPED.one("metadata.stamp.created")
    assert RESTAMPED.ids["file_hash"] == STAMPED.ids["file_hash"]
    assert row["stamp_id"] == STAMPED.ids["stamp_id"]
    assert row["created_at"] == created.at
    assert row["namespace"] == DEFAULT_NAMESPACE
    assert _json(row["stamp_data"]) == created.payload
    file_metadata = _json(row["file_metadata"])
    assert {STAMPED.ids["file_path"], STAMPED.ids["file_size_bytes"], "BLAKE3"} <= set(
        file_metadata.values()
    ), file_metadata


async def test_one_stamp_row_per_file_hash(conn: asyncpg.Connection) -> None:
    """Every file stamped has exactly one row, whoever stamped it and however often."""
    stamped = {r.payload["file_hash"] for r in _stamp_records() if "file_hash" in r.payload}
    stamped.add(LEGACY.ids["file_hash"])
    rows = await conn.fetch("SELECT file_hash, count(*) AS n FROM metadata_stamps GROUP BY 1")
    assert {r["file_hash"]: r["n"] for r in rows} == dict.fromkeys(stamped, 1)
    held = {r["stamp_id"] for r in await conn.fetch("SELECT stamp_id FROM metadata_stamps")}
    assert held == {LEGACY.ids["stamp_id"], STAMPED.ids["stamp_id"]}


# -- the bridge reducer -------------------------------------------------------------------------


async def _bridge_state(conn: asyncpg.Connection, scenario: Scenario) -> asyncpg.Record:
    return await _one(
        conn,
        "SELECT * FROM bridge_states WHERE node_type = 'REDUCER' AND correlation_id = $1",
        uuid.UUID(scenario.ids["aggregation_id"]),
    )


async def test_completed_aggregation(conn: asyncpg.Connection) -> None:
    row = await _bridge_state(conn, AGGREGATED)
    completed = AGGREGATED.one("aggregation_completed")
    assert row["state"] == "COMPLETED"
    assert row["aggregation_type"] == "namespace_grouping"
    assert row["total_size_bytes"] == completed.payload["total_size_bytes"]
    assert row["aggregation_duration_ms"] == round(completed.payload["duration_ms"])
    assert row["items_per_second"] is not None
    assert abs(float(row["items_per_second"]) - completed.payload["items_per_second"]) <= 0.005
    assert row["created_at"] == AGGREGATED.one("aggregation_started").at
    assert row["updated_at"] == completed.at


async def test_failed_aggregation(conn: asyncpg.Connection) -> None:
    row = await _bridge_state(conn, AGGREGATION_FAILED)
    assert row["state"] == "FAILED"
    assert row["updated_at"] == AGGREGATION_FAILED.one("aggregation_failed").at


# -- the registry and the nodes -----------------------------------------------------------------


async def test_registry_rebroadcast_is_logged_only(conn: asyncpg.Connection) -> None:
    record = REGISTRY.one("registry-request-introspection")
    assert (
        await conn.fetchval("SELECT event_type FROM event_logs WHERE id = $1", record.event_id)
        == "REGISTRY_REQUEST_INTROSPECTION"
    )
    assert not await conn.fetchval(
        "SELECT count(*) FROM node_registrations WHERE node_id = $1",
        as_uuid(REGISTRY.ids["registry_id"]),
    )


@pytest.mark.parametrize("node", [ORCHESTRATOR_NODE, REDUCER_NODE], ids=["orchestrator", "reducer"])
async def test_node_registration(conn: asyncpg.Connection, node: Scenario) -> None:
    row = await _one(
        conn, "SELECT * FROM node_registrations WHERE node_id = $1", as_uuid(node.ids["node_id"])
    )
    introspection = node.one("node_introspection")
    last_beat = node.of("node_heartbeat")[-1]
    assert row["node_type"] == node.ids["node_type"].upper()
    assert row["node_version"] == node.ids["version"]  # payload.metadata.version
    assert row["endpoint_url"] == introspection.payload["endpoints"]["api"]
    assert row["registered_at"] == introspection.at
    assert row["health_status"] == last_beat.payload["health_status"].upper()
    assert row["last_heartbeat"] == last_beat.at


# -- omniintelligence -----------------------------------------------------------------------------


@pytest.mark.parametrize("fsm_type", sorted(WALKS))
async def test_fsm_walk(conn: asyncpg.Connection, fsm_type: str) -> None:
    """FSM_STATE_CHANGED's previous_state/current_state are the transitions; the FSM_<state>
    notices of the same transitions add none."""
    walk = WALKS[fsm_type]
    changes = walk.of("FSM_STATE_CHANGED")
    state = await _one(
        conn,
        "SELECT * FROM intelligence.fsm_state WHERE fsm_type = $1 AND entity_id = $2",
        fsm_type,
        walk.ids["entity_id"],
    )
    last = changes[-1].payload
    assert (state["previous_state"], state["current_state"]) == (
        last["previous_state"],
        last["current_state"],
    )
    assert state["transition_timestamp"] == changes[-1].at
    history = await conn.fetch(
        "SELECT from_state, action, to_state, transitioned_at FROM intelligence.fsm_state_history"
        " WHERE fsm_type = $1 AND entity_id = $2 ORDER BY transitioned_at",
        fsm_type,
        walk.ids["entity_id"],
    )
    assert [tuple(h) for h in history] == [
        (c.payload["previous_state"], c.payload["action"], c.payload["current_state"], c.at)
        for c in changes
    ]
