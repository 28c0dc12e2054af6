"""bridge_states through the batch driver: the reducer's aggregation and FSM events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from hypothesis import given
from hypothesis import strategies as st

from consumer.store import batch
from handlers.base import Event
from handlers.bridge_states import BRIDGE_STATES, FIELDS
from handlers.envelope import FOREIGN_ID_NAMESPACE, Envelope
from tests.integration.handlers import support

BASE = datetime(2025, 10, 15, 12, 0, tzinfo=UTC)
AGG = uuid.UUID("a9900000-0000-4000-8000-000000000001")
WF1 = uuid.UUID("f1000000-0000-4000-8000-000000000001")
WF2 = uuid.UUID("f2000000-0000-4000-8000-000000000002")


def _topic(_: str, envelope: Envelope) -> str:
    return f"dev.omninode_bridge.onex.evt.{envelope.event_type.lower().replace('_', '-')}.v1"


make_event = support.EventMaker(BASE, _topic)
at = make_event.at


def agg(event_type: str, *, seconds: float = 0, **payload: Any) -> Event:
    return make_event(event_type, {"aggregation_id": str(AGG), **payload}, seconds=seconds)


async def write(conn: asyncpg.Connection, events: Sequence[Event]) -> batch.BatchResult:
    return await support.write_batch(conn, events, [BRIDGE_STATES], renumber=True)


async def row(
    conn: asyncpg.Connection, correlation_id: uuid.UUID = AGG, node_type: str = "REDUCER"
) -> dict[str, Any]:
    record = await conn.fetchrow(
        "SELECT * FROM bridge_states WHERE node_type = $1 AND correlation_id = $2",
        node_type,
        correlation_id,
    )
    assert record is not None
    out = dict(record)
    for column in ("state_data", "metadata", "configuration"):
        out[column] = orjson.loads(out[column])
    return out


def pairs(events: dict[str, Event]) -> dict[str, Any]:
    """The ordering pair of every column of FIELDS: the event given for it, else NULLs."""
    out: dict[str, Any] = {}
    for name in FIELDS:
        event = events.get(name)
        out[f"{name}_event_at"] = event.at if event is not None else None
        out[f"{name}_event_id"] = event.event_id if event is not None else None
    return out


SNAPSHOT = """
SELECT id, node_type, correlation_id, state, state_data::text, metadata::text, created_at,
       updated_at, total_size_bytes, unique_file_types, unique_workflows, aggregation_type,
       window_start, window_end, aggregation_duration_ms, items_per_second, version,
       configuration::text, state_event_at, state_event_id, namespace,
       state_data_event_at, state_data_event_id, namespace_event_at, namespace_event_id,
       total_size_bytes_event_at, total_size_bytes_event_id, unique_file_types_event_at,
       unique_file_types_event_id, unique_workflows_event_at, unique_workflows_event_id,
       aggregation_type_event_at, aggregation_type_event_id, window_start_event_at,
       window_start_event_id, window_end_event_at, window_end_event_id,
       aggregation_duration_ms_event_at, aggregation_duration_ms_event_id,
       items_per_second_event_at, items_per_second_event_id, version_event_at, version_event_id,
       configuration_event_at, configuration_event_id
FROM bridge_states ORDER BY node_type, correlation_id
"""


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    return await support.query_snapshot(conn, {"bridge_states": SNAPSHOT})


# --- per type --------------------------------------------------------------------------------


async def test_aggregation_started_creates_the_row(db: asyncpg.Connection) -> None:
    started = agg(
        "aggregation_started",
        seconds=1,
        namespace="omninode.services.metadata",
        aggregation_type="namespace_grouping",
        window_start=at(0).isoformat(),
        batch_size=100,
    )
    await write(db, [started])
    assert await row(db) == {
        "id": uuid.uuid5(FOREIGN_ID_NAMESPACE, f"bridge/REDUCER/{AGG}"),
        "node_type": "REDUCER",
        "correlation_id": AGG,
        "state": "AGGREGATING",
        "state_data": {"batch_size": 100},
        "metadata": {},
        "created_at": at(1),
        "updated_at": at(1),
        "total_size_bytes": 0,
        "unique_file_types": [],
        "unique_workflows": [],
        "aggregation_type": "namespace_grouping",
        "window_start": at(0),
        "window_end": None,
        "aggregation_duration_ms": None,
        "items_per_second": None,
        "version": 1,
        "configuration": {},
        "state_event_at": at(1),
        "state_event_id": started.event_id,
        "namespace": "omninode.services.metadata",
        **pairs(
            {
                "state_data": started,
                "namespace": started,
                "aggregation_type": started,
                "window_start": started,
            }
        ),
    }


async def test_aggregation_completed_sets_the_figures(db: asyncpg.Connection) -> None:
    await write(db, [agg("AGGREGATION_STARTED", seconds=1, namespace="ns", batch_size=100)])
    completed = agg(
        "AGGREGATION_COMPLETED",
        seconds=9,
        total_size_bytes=10485760,
        unique_file_types=["text/plain", "application/pdf", "text/plain"],
        unique_workflows=[str(WF2), str(WF1), "wf-legacy-7"],
        window_end=at(8).isoformat(),
        aggregation_duration_ms=45.6,
        items_per_second="2222.225",
        version=3,
        configuration={"window_size_ms": 5000},
        total_items=100,
    )
    await write(db, [completed])
    got = await row(db)
    assert (got["state"], got["state_event_id"]) == ("COMPLETED", completed.event_id)
    assert got["total_size_bytes"] == 10485760
    assert got["unique_file_types"] == ["application/pdf", "text/plain"]
    assert got["unique_workflows"] == sorted(
        [WF1, WF2, uuid.uuid5(FOREIGN_ID_NAMESPACE, "wf-legacy-7")]
    )
    assert (got["window_end"], got["aggregation_duration_ms"]) == (at(8), 46)
    assert got["items_per_second"] == Decimal("2222.23")
    assert (got["version"], got["configuration"]) == (3, {"window_size_ms": 5000})
    assert got["state_data"] == {"total_items": 100}
    assert got["namespace"] == "ns"  # from the STARTED: the COMPLETED does not carry one
    assert (got["created_at"], got["updated_at"]) == (at(1), at(9))


async def test_aggregation_failed_keeps_the_error_in_state_data(db: asyncpg.Connection) -> None:
    await write(db, [agg("AGGREGATION_STARTED", seconds=1)])
    await write(
        db,
        [agg("AGGREGATION_FAILED", seconds=2, error="disk full", error_type="IOError")],
    )
    got = await row(db)
    assert got["state"] == "FAILED"
    assert got["state_data"] == {"error": "disk full", "error_type": "IOError"}


def reducer_wire(event_type: str, aggregation: uuid.UUID, seconds: float, **data: Any) -> Any:
    """NodeBridgeReducer's record: the correlation id (and key) is the aggregation id."""
    return support.node_record(
        event_type,
        data,
        node_type="reducer",
        category="metadata_aggregation",
        namespace="omninode.bridge.reducer",
        entity=("aggregation_id", aggregation),
        when=at(seconds),
    )


REDUCER_TOPIC = "omninode.bridge.reducer.omninode_bridge.onex.evt.{}.v1"


async def test_the_reducers_events_fill_duration_and_throughput(db: asyncpg.Connection) -> None:
    sent = [
        reducer_wire(
            "aggregation_started",
            AGG,
            1,
            aggregation_type="namespace_grouping",
            batch_size=100,
            window_size_ms=5000,
        ),
        reducer_wire(
            "batch_processed", AGG, 2, batch_number=1, batch_size=100, total_items_processed=100
        ),
        reducer_wire("state_persisted", AGG, 3, namespaces_count=2, workflows_count=40),
        reducer_wire(
            "aggregation_completed",
            AGG,
            4,
            total_items=100,
            batches_processed=1,
            total_size_bytes=52428,
            duration_ms=1234.5678,
            items_per_second=81.00531,
            namespaces_count=2,
        ),
    ]
    slugs = ["aggregation-started", "batch-processed", "state-persisted", "aggregation-completed"]
    events = support.as_produced(
        [(REDUCER_TOPIC.format(slug), wire) for slug, wire in zip(slugs, sent, strict=True)]
    )
    # The completion first: the columns are the same in any order.
    await write(db, events[3:])
    await write(db, events[:3])
    got = await row(db)
    assert got["state"] == "COMPLETED"
    assert got["aggregation_duration_ms"] == 1235
    assert got["items_per_second"] == Decimal("81.01")
    assert got["total_size_bytes"] == 52428
    assert got["aggregation_type"] == "namespace_grouping"
    # duration_ms went to its column; the rest of the completion's facts are state_data.
    assert got["state_data"] == {
        "total_items": 100,
        "batches_processed": 1,
        "namespaces_count": 2,
        "timestamp": at(4).isoformat(),
        "node_id": "reducer-1",
        "published_at": at(4).isoformat(),
    }
    assert (got["created_at"], got["updated_at"]) == (at(1), at(4))


async def test_a_failed_aggregations_duration_is_its_duration(db: asyncpg.Connection) -> None:
    failing = uuid.uuid4()
    [event] = support.as_produced(
        [
            (
                REDUCER_TOPIC.format("aggregation-failed"),
                reducer_wire(
                    "aggregation_failed",
                    failing,
                    5,
                    error_type="DatabaseError",
                    error_message="store unavailable",
                    duration_ms=310.5,
                    aggregation_type="namespace_grouping",
                ),
            )
        ]
    )
    await write(db, [event])
    got = await row(db, failing)
    assert got["state"] == "FAILED"
    assert got["aggregation_duration_ms"] == 311
    assert "duration_ms" not in got["state_data"]
    assert got["state_data"]["error_message"] == "store unavailable"


async def test_duration_ms_of_other_types_is_only_state_data(db: asyncpg.Connection) -> None:
    await write(db, [agg("BATCH_PROCESSED", seconds=1, duration_ms=-3)])
    got = await row(db)
    assert got["aggregation_duration_ms"] is None
    assert got["state_data"] == {"duration_ms": -3}
    both = agg("AGGREGATION_COMPLETED", seconds=2, aggregation_duration_ms=7, duration_ms=9)
    await write(db, [both])
    got = await row(db)
    assert got["aggregation_duration_ms"] == 7
    assert got["state_data"] == {"duration_ms": 9}


async def test_batch_processed_and_state_persisted_keep_the_state(db: asyncpg.Connection) -> None:
    await write(db, [agg("AGGREGATION_STARTED", seconds=1)])
    await write(
        db,
        [
            agg("BATCH_PROCESSED", seconds=2, total_size_bytes=500, batch_number=1),
            agg("STATE_PERSISTED", seconds=3, version=2),
        ],
    )
    got = await row(db)
    assert (got["state"], got["total_size_bytes"], got["version"]) == ("AGGREGATING", 500, 2)
    assert got["state_data"] == {"batch_number": 1}
    assert (got["updated_at"], got["state_event_at"]) == (at(3), at(1))
    # A STATE_PERSISTED that gives a state moves it.
    await write(db, [agg("STATE_PERSISTED", seconds=4, state="persisting")])
    assert (await row(db))["state"] == "PERSISTING"


async def test_fsm_events_and_the_envelope_correlation(db: asyncpg.Connection) -> None:
    correlation = str(uuid.uuid4())
    initialized = make_event(
        "fsm_state_initialized", {"workflow_id": str(WF1)}, seconds=1, correlation_id=correlation
    )
    await write(db, [initialized])
    got = await row(db, uuid.UUID(correlation))
    assert (got["state"], got["state_data"]) == ("IDLE", {"workflow_id": str(WF1)})

    transitioned = make_event(
        "FSM_STATE_TRANSITIONED",
        {"workflow_id": str(WF1), "from_state": "idle", "to_state": "processing"},
        seconds=2,
        correlation_id=correlation,
    )
    await write(db, [transitioned])
    got = await row(db, uuid.UUID(correlation))
    assert (got["state"], got["state_event_id"]) == ("PROCESSING", transitioned.event_id)
    assert got["state_data"] == {
        "workflow_id": str(WF1),
        "from_state": "idle",
        "to_state": "processing",
    }
    # initial_state when given.
    other = make_event("FSM_STATE_INITIALIZED", {"correlation_id": "run-9", "initial_state": "new"})
    await write(db, [other])
    got = await row(db, uuid.uuid5(FOREIGN_ID_NAMESPACE, "run-9"))
    assert got["state"] == "NEW"
    assert got["metadata"]["original_correlation_id"] == "run-9"


async def test_node_type_is_part_of_the_key(db: asyncpg.Connection) -> None:
    await write(db, [agg("AGGREGATION_STARTED", node_type="orchestrator"), agg("BATCH_PROCESSED")])
    orchestrator = await row(db, node_type="ORCHESTRATOR")
    reducer = await row(db)
    assert (orchestrator["state"], reducer["state"]) == ("AGGREGATING", "UNKNOWN")
    assert orchestrator["id"] == uuid.uuid5(FOREIGN_ID_NAMESPACE, f"bridge/ORCHESTRATOR/{AGG}")


# --- out of order ----------------------------------------------------------------------------


async def test_child_before_start_makes_a_placeholder(db: asyncpg.Connection) -> None:
    await write(db, [agg("BATCH_PROCESSED", seconds=5, total_size_bytes=10)])
    got = await row(db)
    assert (got["state"], got["state_event_at"], got["state_event_id"]) == ("UNKNOWN", None, None)
    started = agg("AGGREGATION_STARTED", seconds=1, namespace="ns", total_size_bytes=0)
    await write(db, [started])
    got = await row(db)
    assert (got["state"], got["state_event_id"]) == ("AGGREGATING", started.event_id)
    # The older STARTED's total does not replace the newer BATCH_PROCESSED's; its namespace
    # (carried by no newer event) fills in.
    assert (got["total_size_bytes"], got["namespace"]) == (10, "ns")
    assert (got["created_at"], got["updated_at"]) == (at(1), at(5))


async def test_older_state_never_moves_it_back(db: asyncpg.Connection) -> None:
    await write(db, [agg("AGGREGATION_COMPLETED", seconds=9)])
    await write(db, [agg("AGGREGATION_STARTED", seconds=1)])
    assert (await row(db))["state"] == "COMPLETED"


async def test_each_value_comes_from_the_newest_event_carrying_it(db: asyncpg.Connection) -> None:
    first = agg("BATCH_PROCESSED", seconds=1, total_size_bytes=10)
    second = agg("BATCH_PROCESSED", seconds=3, total_size_bytes=20)
    persisted = agg("STATE_PERSISTED", seconds=5, version=2)
    await write(db, [persisted])
    await write(db, [second])
    await write(db, [first])
    got = await row(db)
    assert (got["total_size_bytes"], got["version"]) == (20, 2)
    assert (got["total_size_bytes_event_at"], got["total_size_bytes_event_id"]) == (
        second.at,
        second.event_id,
    )


# --- rejects ---------------------------------------------------------------------------------


async def test_schema_rejects(db: asyncpg.Connection) -> None:
    key = {"aggregation_id": str(AGG)}
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        "aggregation_id": ("AGGREGATION_STARTED", {"namespace": "ns"}),
        "total_size_bytes": ("BATCH_PROCESSED", {**key, "total_size_bytes": -1}),
        "total_size_bytes ": ("BATCH_PROCESSED", {**key, "total_size_bytes": 2**63}),
        "version": ("STATE_PERSISTED", {**key, "version": 0}),
        "items_per_second": ("AGGREGATION_COMPLETED", {**key, "items_per_second": 99999999.996}),
        "items_per_second ": ("AGGREGATION_COMPLETED", {**key, "items_per_second": -0.5}),
        "aggregation_duration_ms": (
            "AGGREGATION_COMPLETED",
            {**key, "aggregation_duration_ms": -1},
        ),
        "duration_ms": ("AGGREGATION_FAILED", {**key, "duration_ms": -1}),
        "duration_ms ": ("AGGREGATION_COMPLETED", {**key, "duration_ms": "slow"}),
        "namespace": ("AGGREGATION_STARTED", {**key, "namespace": "n" * 256}),
        "aggregation_type": ("AGGREGATION_STARTED", {**key, "aggregation_type": "t" * 51}),
        "state": ("STATE_PERSISTED", {**key, "state": "s" * 51}),
        "node_type": ("STATE_PERSISTED", {**key, "node_type": ""}),
        "unique_workflows": ("AGGREGATION_COMPLETED", {**key, "unique_workflows": "wf-1"}),
        "window_start": ("AGGREGATION_STARTED", {**key, "window_start": "yesterday"}),
        "configuration": ("AGGREGATION_STARTED", {**key, "configuration": [1]}),
        "to_state": ("FSM_STATE_TRANSITIONED", {**key, "from_state": "IDLE"}),
    }
    events = {name: make_event(t, p) for name, (t, p) in cases.items()}
    result = await write(db, list(events.values()))
    assert not result.new
    by_id = {e.event_id: r for e, r in result.rejected}
    for name, event in events.items():
        reject = by_id[event.event_id]
        assert reject.kind == "schema"
        assert reject.message.startswith(name.strip() + ":"), (name, reject.message)
    assert await db.fetchval("SELECT count(*) FROM bridge_states") == 0
    assert await db.fetchval("SELECT count(*) FROM event_logs") == 0


# --- any order, any batching, any duplicates ---------------------------------------------------

TYPES = [
    "AGGREGATION_STARTED",
    "AGGREGATION_COMPLETED",
    "AGGREGATION_FAILED",
    "BATCH_PROCESSED",
    "STATE_PERSISTED",
    "FSM_STATE_INITIALIZED",
    "FSM_STATE_TRANSITIONED",
]
OPTIONAL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "namespace": st.sampled_from(["ns.a", "ns.b"]),
    "total_size_bytes": st.integers(0, 10**12),
    "unique_file_types": st.lists(st.sampled_from(["text/plain", "image/png", "pdf"])),
    "unique_workflows": st.lists(st.sampled_from([str(WF1), str(WF2), "wf-text"])),
    "aggregation_type": st.sampled_from(["namespace_grouping", "time_window"]),
    "window_start": st.integers(0, 100).map(lambda s: at(s).isoformat()),
    "window_end": st.integers(0, 100).map(lambda s: at(s).isoformat()),
    "aggregation_duration_ms": st.floats(0, 10**6),
    "items_per_second": st.floats(0, 10**6),
    "version": st.integers(1, 5),
    "configuration": st.fixed_dictionaries({"w": st.integers(0, 3)}),
    "state": st.sampled_from(["idle", "aggregating", "persisting"]),
    "state_data": st.fixed_dictionaries({"d": st.integers(0, 3)}),
    "batch_number": st.integers(0, 3),
}


@st.composite
def bridge_histories(draw: st.DrawFn) -> list[Event]:
    """Events of a few bridge states (payload ids, free-text ids, envelope correlation, two
    node types); any subset of the value columns per event; times may tie."""
    ids = draw(st.lists(st.uuids(), min_size=24, max_size=24, unique=True))
    keys: list[tuple[dict[str, Any], str | None]] = [
        ({"aggregation_id": str(AGG)}, None),
        ({"correlation_id": "agg-text"}, None),
        ({}, str(WF1)),
        ({"aggregation_id": str(AGG), "node_type": "orchestrator"}, None),
    ]
    events: list[Event] = []
    for _ in range(draw(st.integers(1, 12))):
        key, envelope_correlation = draw(st.sampled_from(keys))
        event_type = draw(st.sampled_from(TYPES))
        payload: dict[str, Any] = dict(key)
        for name in draw(st.sets(st.sampled_from(sorted(OPTIONAL_FIELDS)), max_size=5)):
            payload[name] = draw(OPTIONAL_FIELDS[name])
        if event_type == "FSM_STATE_TRANSITIONED":
            payload["to_state"] = draw(st.sampled_from(["processing", "completed"]))
        events.append(
            make_event(
                event_type,
                payload,
                seconds=draw(st.integers(0, 5)),
                event_id=ids.pop(),
                correlation_id=envelope_correlation,
            )
        )
    return events


async def _reset(conn: asyncpg.Connection) -> None:
    await conn.execute("TRUNCATE bridge_states, event_logs")


@support.property_settings(40)
@given(events=bridge_histories(), data=st.data())
async def test_any_order_batching_and_duplicates_converge(
    db: asyncpg.Connection, events: list[Event], data: st.DataObject
) -> None:
    await _reset(db)
    result = await write(db, events)
    assert not result.rejected
    expected = await snapshot(db)

    await _reset(db)
    for part in support.draw_batches(data, events, max_duplicates=4, max_cuts=5):
        result = await write(db, part)
        assert not result.rejected
    assert await snapshot(db) == expected
