"""node_registrations through the batch driver: NODE_INTROSPECTION and NODE_HEARTBEAT."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.store import batch
from handlers.base import Event
from handlers.envelope import FOREIGN_ID_NAMESPACE, Envelope
from handlers.nodes import NODES
from tests.integration.handlers import support

BASE = datetime(2025, 10, 15, 12, 0, tzinfo=UTC)
NODE = uuid.UUID("7d5c3b1a-0000-4000-8000-000000000001")
SLUG = {"NODE_INTROSPECTION": "node-introspection", "NODE_HEARTBEAT": "node-heartbeat"}


def _topic(_: str, envelope: Envelope) -> str:
    return f"dev.omninode_bridge.onex.evt.{SLUG[envelope.event_type]}.v1"


make_event = support.EventMaker(BASE, _topic)
at = make_event.at


def introspection(
    node_id: str = str(NODE),
    *,
    seconds: float = 0,
    event_id: uuid.UUID | None = None,
    **fields: Any,
) -> Event:
    payload: dict[str, Any] = {
        "node_id": node_id,
        "node_type": "orchestrator",
        "node_version": "1.0.0",
        "endpoint_url": "http://orchestrator:8080",
        "capabilities": {"supported_operations": ["coordinate_workflow"]},
        **fields,
    }
    return make_event("NODE_INTROSPECTION", payload, seconds=seconds, event_id=event_id)


def heartbeat(
    node_id: str = str(NODE),
    health: str = "healthy",
    *,
    seconds: float = 0,
    event_id: uuid.UUID | None = None,
    **fields: Any,
) -> Event:
    payload: dict[str, Any] = {
        "node_id": node_id,
        "node_type": "orchestrator",
        "health_status": health,
        "uptime_seconds": 120,
        "resource_usage": {"cpu_percent": 12.5},
        **fields,
    }
    return make_event("NODE_HEARTBEAT", payload, seconds=seconds, event_id=event_id)


async def write(conn: asyncpg.Connection, events: Sequence[Event]) -> batch.BatchResult:
    return await support.write_batch(conn, events, [NODES], renumber=True)


async def row(conn: asyncpg.Connection, node: uuid.UUID = NODE) -> dict[str, Any]:
    record = await conn.fetchrow("SELECT * FROM node_registrations WHERE node_id = $1", node)
    assert record is not None
    out = dict(record)
    out["metadata"] = orjson.loads(out["metadata"])
    return out


SNAPSHOT = """
SELECT id, node_id, node_type, node_version, endpoint_url, health_status, last_heartbeat,
       registered_at, metadata::text, state_event_at, state_event_id, heartbeat_event_at,
       heartbeat_event_id
FROM node_registrations ORDER BY node_id
"""


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    return await support.query_snapshot(conn, {"node_registrations": SNAPSHOT})


# --- per type --------------------------------------------------------------------------------


async def test_introspection_registers_the_node(db: asyncpg.Connection) -> None:
    event = introspection(seconds=5, endpoints={"health": "http://orchestrator:8080/health"})
    await write(db, [event])
    assert await row(db) == {
        "id": uuid.uuid5(FOREIGN_ID_NAMESPACE, f"node/{NODE}"),
        "node_id": NODE,
        "node_type": "ORCHESTRATOR",
        "node_version": "1.0.0",
        "endpoint_url": "http://orchestrator:8080",
        "health_status": "HEALTHY",
        "last_heartbeat": at(5),
        "registered_at": at(5),
        "metadata": {
            "capabilities": {"supported_operations": ["coordinate_workflow"]},
            "endpoints": {"health": "http://orchestrator:8080/health"},
        },
        "state_event_at": at(5),
        "state_event_id": event.event_id,
        "heartbeat_event_at": None,
        "heartbeat_event_id": None,
    }


async def test_heartbeat_updates_health_and_last_heartbeat(db: asyncpg.Connection) -> None:
    intro = introspection(seconds=5)
    await write(db, [intro])
    beat = heartbeat(health="degraded", seconds=35, active_operations=3)
    await write(db, [beat])
    got = await row(db)
    assert got["health_status"] == "DEGRADED"
    assert got["last_heartbeat"] == at(35)
    assert got["registered_at"] == at(5)
    assert got["metadata"] == {
        "capabilities": {"supported_operations": ["coordinate_workflow"]},
        "last_heartbeat": {
            "uptime_seconds": 120,
            "resource_usage": {"cpu_percent": 12.5},
            "active_operations": 3,
        },
    }
    assert (got["heartbeat_event_at"], got["heartbeat_event_id"]) == (at(35), beat.event_id)
    assert (got["state_event_at"], got["state_event_id"]) == (at(5), intro.event_id)
    assert (got["node_version"], got["endpoint_url"]) == ("1.0.0", "http://orchestrator:8080")


async def test_newer_introspection_replaces_the_state(db: asyncpg.Connection) -> None:
    await write(db, [introspection(seconds=5), heartbeat(seconds=6)])
    newer = introspection(
        seconds=60,
        node_version="1.1.0",
        endpoint_url="http://orchestrator:9090",
        capabilities={"v": 2},
        health_status="degraded",
    )
    await write(db, [newer])
    got = await row(db)
    assert (got["node_version"], got["endpoint_url"], got["health_status"]) == (
        "1.1.0",
        "http://orchestrator:9090",
        "DEGRADED",
    )
    assert got["metadata"]["capabilities"] == {"v": 2}
    assert "last_heartbeat" in got["metadata"]
    assert (got["registered_at"], got["last_heartbeat"]) == (at(5), at(60))


# --- out of order ----------------------------------------------------------------------------


async def test_heartbeat_before_introspection_makes_a_placeholder(
    db: asyncpg.Connection,
) -> None:
    beat = heartbeat(health="unhealthy", seconds=10, node_type="reducer")
    await write(db, [beat])
    got = await row(db)
    assert (got["node_type"], got["node_version"], got["endpoint_url"]) == (
        "REDUCER",
        "unknown",
        "",
    )
    assert (got["health_status"], got["last_heartbeat"], got["registered_at"]) == (
        "UNHEALTHY",
        at(10),
        None,
    )
    assert (got["state_event_at"], got["state_event_id"]) == (None, None)

    # The (older) introspection fills the state in; the newer heartbeat keeps the health.
    intro = introspection(seconds=4, node_type="reducer")
    await write(db, [intro])
    got = await row(db)
    assert (got["node_type"], got["node_version"], got["endpoint_url"]) == (
        "REDUCER",
        "1.0.0",
        "http://orchestrator:8080",
    )
    assert (got["health_status"], got["last_heartbeat"], got["registered_at"]) == (
        "UNHEALTHY",
        at(10),
        at(4),
    )
    assert (got["state_event_at"], got["state_event_id"]) == (at(4), intro.event_id)
    assert got["metadata"]["last_heartbeat"]["uptime_seconds"] == 120


async def test_older_events_never_move_state_back(db: asyncpg.Connection) -> None:
    await write(db, [introspection(seconds=50, node_version="2.0.0")])
    await write(db, [heartbeat(health="degraded", seconds=40)])  # older than the introspection
    got = await row(db)
    assert got["health_status"] == "HEALTHY"  # the introspection at 50 is the newest event
    await write(db, [introspection(seconds=20, node_version="1.0.0")])
    got = await row(db)
    assert (got["node_version"], got["registered_at"], got["health_status"]) == (
        "2.0.0",
        at(20),
        "HEALTHY",
    )
    assert got["last_heartbeat"] == at(50)


async def test_heartbeats_of_one_batch_are_coalesced(db: asyncpg.Connection) -> None:
    first = heartbeat(health="healthy", seconds=30, uptime_seconds=30)
    tie = heartbeat(
        health="critical",
        seconds=30,
        uptime_seconds=31,
        event_id=uuid.UUID(int=first.event_id.int + 1),
    )
    older = heartbeat(health="recovering", seconds=10, uptime_seconds=10)
    await write(db, [introspection(seconds=0), first, tie, older])
    got = await row(db)
    assert got["health_status"] == "CRITICAL"
    assert got["metadata"]["last_heartbeat"]["uptime_seconds"] == 31
    assert (got["heartbeat_event_at"], got["heartbeat_event_id"]) == (at(30), tie.event_id)


# --- ids, fallbacks, rejects -----------------------------------------------------------------


async def test_non_uuid_node_id_maps_to_a_stable_uuid(db: asyncpg.Connection) -> None:
    await write(db, [heartbeat("orchestrator-1", seconds=1), introspection("orchestrator-1")])
    node = uuid.uuid5(FOREIGN_ID_NAMESPACE, "orchestrator-1")
    got = await row(db, node)
    assert got["id"] == uuid.uuid5(FOREIGN_ID_NAMESPACE, f"node/{node}")
    assert got["metadata"]["original_node_id"] == "orchestrator-1"
    assert got["metadata"]["capabilities"] == {"supported_operations": ["coordinate_workflow"]}


async def test_version_object_and_endpoint_from_endpoints(db: asyncpg.Connection) -> None:
    payload = {
        "node_id": str(NODE),
        "node_type": "effect",
        "node_version": {"major": 1, "minor": 2, "patch": 3},
        "endpoints": {"metrics": "http://n:9000/metrics", "health": "http://n:8080/health"},
    }
    await write(db, [make_event("node_introspection", payload)])
    got = await row(db)
    assert (got["node_type"], got["node_version"], got["endpoint_url"]) == (
        "EFFECT",
        "1.2.3",
        "http://n:8080/health",
    )


def bridge_wire(
    event_type: str, node_id: str, payload: dict[str, Any], metadata: dict[str, Any], seconds: int
) -> dict[str, Any]:
    """The bridge helpers' introspection or heartbeat (producers.md, section 1): the node id is
    the partition key and the source instance, no correlation id."""
    return support.bridge_envelope(
        event_type,
        payload,
        when=at(seconds),
        source_node_id=node_id,
        source_instance=node_id,
        correlation_id=None,
        partition_key=node_id,
        metadata=metadata,
    )


async def test_the_bridges_introspection_and_heartbeat(db: asyncpg.Connection) -> None:
    node_id = "metadata-stamping-1"
    capabilities = {
        "node_type": "reducer",
        "supported_operations": ["aggregate_metadata"],
        "resource_limits": {"cpu_cores": 2},
        "fsm_states": ["IDLE", "AGGREGATING", "PERSISTING"],
    }
    introspected = bridge_wire(
        "NODE_INTROSPECTION",
        node_id,
        {
            "node_id": node_id,
            "node_type": "reducer",
            "node_role": "aggregator",
            "capabilities": capabilities,
            "endpoints": {"health": "http://reducer:8080/health"},
            "metadata": {"version": "1.0.0", "environment": "development"},
            "timestamp": at(1).isoformat(),
            "correlation_id": None,
            "network_id": "net-1",
            "deployment_id": "dep-1",
            "epoch": 1,
        },
        {
            "node_type": "reducer",
            "capabilities_count": 4,
            "endpoints_count": 1,
            "deployment_id": "dep-1",
            "epoch": 1,
        },
        1,
    )
    beat = bridge_wire(
        "NODE_HEARTBEAT",
        node_id,
        {
            "node_id": node_id,
            "node_type": "reducer",
            "health_status": "degraded",
            "uptime_seconds": 30,
            "last_activity_timestamp": at(30).isoformat(),
            "active_operations": 2,
            "resource_usage": {"cpu_percent": 41.5},
            "metadata": {},
            "timestamp": at(31).isoformat(),
            "correlation_id": None,
        },
        {"node_type": "reducer", "health_status": "degraded", "uptime_seconds": 30},
        31,
    )
    topic = "dev.omninode_bridge.onex.evt.{}.v1"
    events = support.as_produced(
        [(topic.format("node-heartbeat"), beat), (topic.format("node-introspection"), introspected)]
    )
    result = await write(db, events)
    assert not result.rejected
    node = uuid.uuid5(FOREIGN_ID_NAMESPACE, node_id)
    got = await row(db, node)
    # No node_version field: the version is the payload's metadata.version.
    assert got["node_version"] == "1.0.0"
    assert got["node_type"] == "REDUCER"
    assert got["endpoint_url"] == "http://reducer:8080/health"
    assert got["health_status"] == "DEGRADED"
    assert got["registered_at"] == at(1)
    assert got["last_heartbeat"] == at(31)
    assert got["metadata"]["capabilities"] == capabilities
    assert got["metadata"]["metadata"] == {"version": "1.0.0", "environment": "development"}
    assert got["metadata"]["last_heartbeat"]["active_operations"] == 2


@pytest.mark.parametrize(
    ("fields", "version"),
    [
        ({"node_version": "2.0.0", "metadata": {"version": "1.0.0"}}, "2.0.0"),
        ({"metadata": {"version": {"major": 1, "minor": 4, "patch": 0}}}, "1.4.0"),
        ({"metadata": {"version": "1.0.0-" + "9" * 20}}, "unknown"),
        ({"metadata": {"version": ""}}, "unknown"),
        ({"metadata": {"version": None}}, "unknown"),
        ({"metadata": ["1.0.0"]}, "unknown"),
        ({"metadata": {"environment": "dev"}}, "unknown"),
    ],
)
async def test_the_version_in_metadata_fills_node_version_when_it_fits(
    db: asyncpg.Connection, fields: dict[str, Any], version: str
) -> None:
    payload = {"node_id": str(NODE), "node_type": "effect", **fields}
    result = await write(db, [make_event("NODE_INTROSPECTION", payload)])
    assert not result.rejected
    got = await row(db)
    assert got["node_version"] == version
    assert got["metadata"]["metadata"] == fields["metadata"]


async def test_schema_rejects(db: asyncpg.Connection) -> None:
    intro = {"node_id": str(NODE), "node_type": "effect"}
    beat = {**intro, "health_status": "healthy"}
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        "node_id": ("NODE_INTROSPECTION", {"node_type": "effect"}),
        "node_id ": ("NODE_HEARTBEAT", {**beat, "node_id": "  "}),
        "node_type": ("NODE_INTROSPECTION", {**intro, "node_type": "x" * 51}),
        "node_version": ("NODE_INTROSPECTION", {**intro, "node_version": "1.0.0-" + "9" * 20}),
        "endpoint_url": ("NODE_INTROSPECTION", {**intro, "endpoint_url": "http://" + "a" * 500}),
        "endpoints.api": ("NODE_INTROSPECTION", {**intro, "endpoints": {"api": "h" * 501}}),
        "capabilities": ("NODE_INTROSPECTION", {**intro, "capabilities": ["a"]}),
        "health_status": ("NODE_HEARTBEAT", {**beat, "health_status": "sleepy"}),
        "health_status ": ("NODE_HEARTBEAT", intro),
        "node_type ": ("NODE_HEARTBEAT", {"node_id": "n", "health_status": "healthy"}),
    }
    events = {field: make_event(t, p) for field, (t, p) in cases.items()}
    result = await write(db, list(events.values()))
    assert not result.new
    by_id = {e.event_id: r for e, r in result.rejected}
    for field, event in events.items():
        reject = by_id[event.event_id]
        assert reject.kind == "schema"
        assert reject.message.startswith(field.strip() + ":"), (field, reject.message)
    assert "sleepy" not in by_id[events["health_status"].event_id].message
    assert await db.fetchval("SELECT count(*) FROM node_registrations") == 0


# --- any order, any batching, any duplicates ---------------------------------------------------


@st.composite
def node_histories(draw: st.DrawFn) -> list[Event]:
    """Introspections and heartbeats of a few nodes (UUID and free-text ids); times may tie.
    Conflict-free: a node keeps one node_type."""
    ids = draw(st.lists(st.uuids(), min_size=30, max_size=30, unique=True))
    events: list[Event] = []
    for n in range(draw(st.integers(1, 3))):
        node_id = str(uuid.UUID(int=n + 1)) if n % 2 == 0 else f"node-{n}"
        node_type = ["reducer", "orchestrator", "effect"][n]
        for k in range(draw(st.integers(1, 6))):
            seconds = draw(st.integers(0, 5))
            if draw(st.booleans()):
                events.append(
                    introspection(
                        node_id,
                        seconds=seconds,
                        event_id=ids.pop(),
                        node_type=node_type,
                        node_version=draw(st.sampled_from(["1.0.0", "1.1.0"])),
                        endpoint_url=draw(st.sampled_from(["http://a:1", "http://b:2"])),
                        capabilities={"k": k},
                    )
                )
            else:
                events.append(
                    heartbeat(
                        node_id,
                        draw(st.sampled_from(["healthy", "degraded", "unhealthy", "CRITICAL"])),
                        seconds=seconds,
                        event_id=ids.pop(),
                        node_type=node_type,
                        uptime_seconds=k,
                    )
                )
    return events


async def _reset(conn: asyncpg.Connection) -> None:
    await conn.execute("TRUNCATE node_registrations, event_logs")


@support.property_settings(40)
@given(events=node_histories(), data=st.data())
async def test_any_order_batching_and_duplicates_converge(
    db: asyncpg.Connection, events: list[Event], data: st.DataObject
) -> None:
    await _reset(db)
    await write(db, events)
    expected = await snapshot(db)

    await _reset(db)
    for part in support.draw_batches(data, events, max_duplicates=4, max_cuts=5):
        result = await write(db, part)
        assert not result.rejected
    assert await snapshot(db) == expected
