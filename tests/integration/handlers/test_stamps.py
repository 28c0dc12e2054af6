"""metadata_stamps through the batch driver: STAMP_CREATED, stamps assembled from their
workflow's HASH_GENERATED / WORKFLOW_COMPLETED, re-stamps, the stamp half of
INTELLIGENCE_RECEIVED, conflicts, order tolerance, races between two sinks.

The producers' events are built as docs/producers.md gives them (the orchestrator's through
the bridge envelope, the stamping service's through its older one)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from hypothesis import given
from hypothesis import strategies as st

from consumer.store import batch
from handlers.base import Event, Handler
from handlers.envelope import FOREIGN_ID_NAMESPACE, Envelope
from handlers.stamps import STAMPS, StampsHandler
from tests.integration.handlers import support
from tests.integration.handlers.support import js

BASE = datetime(2025, 10, 15, 12, 0, tzinfo=UTC)
SLUG = {
    "STAMP_CREATED": "metadata-stamp-created",
    "INTELLIGENCE_RECEIVED": "onextree-intelligence-received",
}


def _topic(_: str, envelope: Envelope) -> str:
    return f"dev.omninode_bridge.onex.evt.{SLUG.get(envelope.event_type, 'test-event')}.v1"


make_event = support.EventMaker(BASE, _topic, source_node_id="orchestrator-1")
at = make_event.at


def stamp(
    stamp_id: str,
    file_hash: str,
    *,
    seconds: float = 0,
    event_id: uuid.UUID | None = None,
    **extra: Any,
) -> Event:
    payload: dict[str, Any] = {
        "stamp_id": stamp_id,
        "file_hash": file_hash,
        "namespace": "omniclaude.docs",
        "stamp_data": {"stamp": f"data of {stamp_id}"},
        **extra,
    }
    return make_event("STAMP_CREATED", payload, seconds=seconds, event_id=event_id)


def intelligence(
    payload: dict[str, Any], *, seconds: float = 0, event_id: uuid.UUID | None = None
) -> Event:
    return make_event("INTELLIGENCE_RECEIVED", payload, seconds=seconds, event_id=event_id)


HASH_A = "8f" * 32
HASH_B = "4c" * 32
HASH_C = "e1" * 32
BRIDGE_NAMESPACE = support.BRIDGE_NAMESPACE


def orchestrator_stamp(
    workflow_id: str,
    stamp_id: str,
    *,
    seconds: float = 0,
    event_id: uuid.UUID | None = None,
    namespace: str | None = BRIDGE_NAMESPACE,
) -> Event:
    return support.orchestrator_stamp(
        workflow_id, stamp_id, at(seconds), event_id=event_id, namespace=namespace
    )


def hash_generated(
    workflow_id: str, file_hash: str, *, seconds: float = 0, event_id: uuid.UUID | None = None
) -> Event:
    return support.hash_generated(workflow_id, file_hash, at(seconds), event_id=event_id)


def workflow_completed(
    workflow_id: str,
    stamp_id: str,
    file_hash: str,
    namespace: str,
    *,
    seconds: float = 0,
    event_id: uuid.UUID | None = None,
) -> Event:
    return support.workflow_completed(
        workflow_id, stamp_id, file_hash, namespace, at(seconds), event_id=event_id
    )


def service_stamp(
    stamp_id: str,
    file_hash: str,
    *,
    seconds: float = 0,
    event_id: uuid.UUID | None = None,
    file_path: str = support.STAMPED_FILE,
) -> Event:
    return support.service_stamp(
        stamp_id, file_hash, at(seconds), event_id=event_id, file_path=file_path
    )


async def write(
    conn: asyncpg.Connection, events: Sequence[Event], handler: Handler[Any] = STAMPS
) -> batch.BatchResult:
    return await support.write_batch(conn, events, [handler], renumber=True)


async def row(conn: asyncpg.Connection, stamp_id: str) -> dict[str, Any] | None:
    record = await conn.fetchrow("SELECT * FROM metadata_stamps WHERE stamp_id = $1", stamp_id)
    if record is None:
        return None
    out = dict(record)
    for column in ("stamp_data", "file_metadata", "intelligence_data"):
        out[column] = js(out[column])
    return out


SNAPSHOT = """
SELECT id, stamp_id, file_hash, namespace, stamp_data::text, file_metadata::text,
       intelligence_data::text, created_at, metadata_version, intelligence_event_at,
       intelligence_event_id, stamp_event_at, stamp_event_id
FROM metadata_stamps ORDER BY stamp_id
"""


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    return await support.query_snapshot(conn, {"metadata_stamps": SNAPSHOT})


# --- STAMP_CREATED ---------------------------------------------------------------------------


async def test_stamp_created_writes_its_row(db: asyncpg.Connection) -> None:
    event = stamp(
        "stamp_abc123",
        "b3" + "0" * 62,
        seconds=5,
        file_metadata={"content_type": "text/plain", "size": 12},
    )
    result = await write(db, [event])
    assert [e.event_id for e in result.new] == [event.event_id]
    assert await row(db, "stamp_abc123") == {
        "id": uuid.uuid5(FOREIGN_ID_NAMESPACE, "stamp/stamp_abc123"),
        "stamp_id": "stamp_abc123",
        "file_hash": "b3" + "0" * 62,
        "namespace": "omniclaude.docs",
        "stamp_data": {"stamp": "data of stamp_abc123"},
        "file_metadata": {"content_type": "text/plain", "size": 12},
        "intelligence_data": {},
        "created_at": at(5),
        "metadata_version": "0.1",
        "intelligence_event_at": None,
        "intelligence_event_id": None,
        "stamp_event_at": at(5),
        "stamp_event_id": event.event_id,
    }


async def test_stamp_created_by_alias_with_version_and_numeric_id(db: asyncpg.Connection) -> None:
    event = make_event(
        "metadata.stamp.created",
        {
            "stamp_id": 42,
            "file_hash": "h42",
            "namespace": "ns",
            "stamp_data": {},
            "metadata_version": "1.0",
            "producer_extra": [1, 2],
        },
    )
    await write(db, [event])
    got = await row(db, "42")
    assert got is not None
    assert got["metadata_version"] == "1.0"
    assert got["file_metadata"] == {}
    assert got["stamp_data"] == {}


async def test_same_stamp_again_keeps_the_oldest_event(db: asyncpg.Connection) -> None:
    await write(db, [stamp("s1", "h1", seconds=10, stamp_data={"v": "newer"})])
    # An older STAMP_CREATED of the same (stamp_id, file_hash): not a conflict; its facts win.
    result = await write(db, [stamp("s1", "h1", seconds=3, stamp_data={"v": "older"})])
    assert len(result.new) == 1
    assert not result.rejected
    got = await row(db, "s1")
    assert got is not None
    assert (got["created_at"], got["stamp_data"]) == (at(3), {"v": "older"})
    # A newer one changes nothing.
    await write(db, [stamp("s1", "h1", seconds=20, stamp_data={"v": "newest"})])
    again = await row(db, "s1")
    assert again == got
    assert await db.fetchval("SELECT count(*) FROM metadata_stamps") == 1


async def test_same_stamp_twice_in_one_batch_keeps_the_oldest(db: asyncpg.Connection) -> None:
    result = await write(
        db,
        [
            stamp("s1", "h1", seconds=10, stamp_data={"v": "newer"}),
            stamp("s1", "h1", seconds=3, stamp_data={"v": "older"}),
        ],
    )
    assert len(result.new) == 2
    got = await row(db, "s1")
    assert got is not None
    assert (got["created_at"], got["stamp_data"]) == (at(3), {"v": "older"})


# --- stamps assembled from the producers' events ----------------------------------------------


async def test_orchestrator_stamp_waits_for_its_workflows_hash(db: asyncpg.Connection) -> None:
    workflow_id, stamp_id = str(uuid.uuid4()), str(uuid.uuid4())
    created = orchestrator_stamp(workflow_id, stamp_id, seconds=3.5)
    result = await write(db, [created])
    # It waits: kept in event_logs, never a dead letter.
    assert [e.event_id for e in result.new] == [created.event_id]
    assert not result.rejected
    assert await db.fetchval("SELECT count(*) FROM metadata_stamps") == 0
    assert await db.fetchval("SELECT count(*) FROM event_logs") == 1

    result = await write(db, [hash_generated(workflow_id, HASH_A, seconds=2.5)])
    assert not result.rejected
    assert result.counts.restamps == 0
    assert await row(db, stamp_id) == {
        "id": uuid.uuid5(FOREIGN_ID_NAMESPACE, "stamp/" + stamp_id),
        "stamp_id": stamp_id,
        "file_hash": HASH_A,
        "namespace": BRIDGE_NAMESPACE,  # the envelope metadata's: nothing else names one
        "stamp_data": created.payload,
        "file_metadata": {},
        "intelligence_data": {},
        "created_at": created.at,
        "metadata_version": "0.1",
        "intelligence_event_at": None,
        "intelligence_event_id": None,
        "stamp_event_at": created.at,
        "stamp_event_id": created.event_id,
    }


async def test_a_legacy_workflow_assembles_one_row_in_any_order(db: asyncpg.Connection) -> None:
    workflow_id, stamp_id = str(uuid.uuid4()), str(uuid.uuid4())
    events = [
        orchestrator_stamp(workflow_id, stamp_id, seconds=3),
        hash_generated(workflow_id, HASH_A, seconds=2),
        workflow_completed(workflow_id, stamp_id, HASH_A, "omniclaude.docs", seconds=5),
    ]
    snapshots = []
    for order in itertools.permutations(events):
        await _reset(db)
        for event in order:  # one batch each: every event arrives after the others' commit
            result = await write(db, [event])
            assert not result.rejected
            assert result.counts.restamps == 0
        snapshots.append(await snapshot(db))
    assert all(s == snapshots[0] for s in snapshots)
    got = await row(db, stamp_id)
    assert got is not None
    # The workflow's namespace wins over the envelope metadata's, whenever it arrives.
    assert (got["file_hash"], got["namespace"]) == (HASH_A, "omniclaude.docs")
    assert (got["created_at"], got["stamp_event_id"]) == (events[0].at, events[0].event_id)


async def test_workflow_completed_alone_brings_the_hash(db: asyncpg.Connection) -> None:
    workflow_id, stamp_id = str(uuid.uuid4()), str(uuid.uuid4())
    await write(db, [orchestrator_stamp(workflow_id, stamp_id, seconds=1)])
    # An event-driven completion names no hash: the stamp still waits.
    event_driven = support.orchestrator(
        "stamp_workflow_completed",
        {"workflow_id": workflow_id, "processing_time_ms": 12.5},
        at(2),
    )
    await write(db, [event_driven])
    assert await db.fetchval("SELECT count(*) FROM metadata_stamps") == 0
    await write(db, [workflow_completed(workflow_id, stamp_id, HASH_B, "ns.b", seconds=3)])
    got = await row(db, stamp_id)
    assert got is not None
    assert (got["file_hash"], got["namespace"]) == (HASH_B, "ns.b")


async def test_stamping_service_stamp_writes_its_row(db: asyncpg.Connection) -> None:
    created = service_stamp("st-1", HASH_A, seconds=4.25)
    result = await write(db, [created])
    assert [e.event_id for e in result.new] == [created.event_id]
    got = await row(db, "st-1")
    assert got is not None
    assert got["namespace"] == "default"  # no payload, workflow or metadata namespace
    assert got["stamp_data"] == created.payload
    assert got["file_metadata"] == {
        "file_path": "/srv/repo/docs/guide.md",
        "file_size_bytes": 2048,
        "hash_algorithm": "BLAKE3",
    }
    assert (got["created_at"], got["file_hash"]) == (at(4.25), HASH_A)


async def test_the_default_namespace_is_the_handlers(db: asyncpg.Connection) -> None:
    handler = StampsHandler(default_namespace="tenant-x")
    await write(db, [service_stamp("st-1", HASH_A)], handler)
    workflow_id = str(uuid.uuid4())
    await write(db, [orchestrator_stamp(workflow_id, "st-2", namespace=None)], handler)
    await write(db, [hash_generated(workflow_id, HASH_B)], handler)
    namespaces = await db.fetch("SELECT stamp_id, namespace FROM metadata_stamps ORDER BY 1")
    assert [tuple(r) for r in namespaces] == [("st-1", "tenant-x"), ("st-2", "tenant-x")]


# --- re-stamps: one row per file_hash, the earliest stamp holds it ---------------------------


async def row_of(conn: asyncpg.Connection, file_hash: str) -> dict[str, Any] | None:
    stamp_id = await conn.fetchval(
        "SELECT stamp_id FROM metadata_stamps WHERE file_hash = $1", file_hash
    )
    return None if stamp_id is None else await row(conn, stamp_id)


async def test_restamping_unchanged_content_keeps_the_earliest(db: asyncpg.Connection) -> None:
    first = service_stamp("st-1", HASH_A, seconds=10)
    assert (await write(db, [first])).counts.restamps == 0
    again = service_stamp("st-2", HASH_A, seconds=20)
    result = await write(db, [again])
    # Normal traffic: kept in event_logs, counted, not a dead letter; the row stays the first's.
    assert [e.event_id for e in result.new] == [again.event_id]
    assert not result.rejected
    assert result.counts.restamps == 1
    held = await row_of(db, HASH_A)
    assert held is not None
    assert (held["stamp_id"], held["stamp_event_id"]) == ("st-1", first.event_id)

    info = intelligence({"file_hash": HASH_A, "intelligence_data": {"v": 1}}, seconds=15)
    await write(db, [info])
    # An older stamp arriving late takes the row over; the hash's intelligence stays.
    earlier = service_stamp("st-0", HASH_A, seconds=5, file_path="/srv/repo/old/guide.md")
    result = await write(db, [earlier])
    assert result.counts.restamps == 1  # st-1 no longer holds the row
    got = await row_of(db, HASH_A)
    assert got is not None
    assert got == {
        **held,
        "id": uuid.uuid5(FOREIGN_ID_NAMESPACE, "stamp/st-0"),
        "stamp_id": "st-0",
        "stamp_data": earlier.payload,
        "file_metadata": {**held["file_metadata"], "file_path": "/srv/repo/old/guide.md"},
        "created_at": at(5),
        "stamp_event_at": at(5),
        "stamp_event_id": earlier.event_id,
        "intelligence_data": {"v": 1},
        "intelligence_event_at": at(15),
        "intelligence_event_id": info.event_id,
    }
    assert await db.fetchval("SELECT count(*) FROM metadata_stamps") == 1
    assert await db.fetchval("SELECT count(*) FROM event_logs") == 4


async def test_restamps_in_one_batch(db: asyncpg.Connection) -> None:
    stamps = [service_stamp(f"st-{n}", HASH_A, seconds=s) for n, s in enumerate([3, 1, 2])]
    result = await write(db, stamps)
    assert len(result.new) == 3
    assert not result.rejected
    assert result.counts.restamps == 2
    got = await row_of(db, HASH_A)
    assert got is not None
    assert (got["stamp_id"], got["created_at"]) == ("st-1", at(1))


async def test_a_waiting_stamp_completed_later_can_take_the_row(db: asyncpg.Connection) -> None:
    await write(db, [service_stamp("st-late", HASH_A, seconds=10)])
    workflow_id = str(uuid.uuid4())
    await write(db, [orchestrator_stamp(workflow_id, "st-early", seconds=2)])
    result = await write(db, [hash_generated(workflow_id, HASH_A, seconds=1)])
    assert result.counts.restamps == 1
    got = await row_of(db, HASH_A)
    assert got is not None
    assert (got["stamp_id"], got["namespace"]) == ("st-early", BRIDGE_NAMESPACE)
    # The workflow's completion read again later is not counted again.
    completed = workflow_completed(workflow_id, "st-early", HASH_A, "omniclaude.docs", seconds=3)
    result = await write(db, [completed])
    assert result.counts.restamps == 0
    got = await row_of(db, HASH_A)
    assert got is not None
    assert (got["stamp_id"], got["namespace"]) == ("st-early", "omniclaude.docs")


async def test_a_stamp_id_used_for_another_hash_is_a_conflict_or_stays_unwritten(
    db: asyncpg.Connection,
) -> None:
    await write(db, [service_stamp("st-1", HASH_A)])
    known = str(uuid.uuid4())
    await write(db, [hash_generated(known, HASH_B)])
    # Its hash is known when it arrives: a conflict, dead-lettered.
    late = orchestrator_stamp(known, "st-1", seconds=1)
    result = await write(db, [late])
    assert [(e.event_id, r.kind) for e, r in result.rejected] == [(late.event_id, "conflict")]
    # Its hash is not known yet: it waits; when its workflow's hash conflicts, the stamp stays
    # unwritten (the event that completes it is the workflow's, never a dead letter).
    unknown = str(uuid.uuid4())
    result = await write(db, [orchestrator_stamp(unknown, "st-1", seconds=2)])
    assert not result.rejected
    result = await write(db, [hash_generated(unknown, HASH_C, seconds=3)])
    assert not result.rejected
    stored = await db.fetch("SELECT stamp_id, file_hash FROM metadata_stamps")
    assert [tuple(r) for r in stored] == [("st-1", HASH_A)]


# --- conflicts -------------------------------------------------------------------------------


async def test_conflict_in_one_batch_rejects_the_later_event(db: asyncpg.Connection) -> None:
    first = stamp("s1", "h1", seconds=10)
    same_hash = stamp("s2", "h1", seconds=1)  # a re-stamp, older: it holds the row
    same_stamp = stamp("s1", "h9", seconds=2)  # older, but later in offset order: rejected
    other = stamp("s3", "h3", seconds=3)
    result = await write(db, [first, same_hash, same_stamp, other])

    assert {e.event_id for e in result.new} == {first.event_id, same_hash.event_id, other.event_id}
    rejected = {e.event_id: r for e, r in result.rejected}
    assert rejected.keys() == {same_stamp.event_id}
    assert {r.kind for r in rejected.values()} == {"conflict"}
    assert "'s1'" in rejected[same_stamp.event_id].message
    assert "'h1'" in rejected[same_stamp.event_id].message
    assert "'h9'" in rejected[same_stamp.event_id].message

    stored = await db.fetch("SELECT stamp_id, file_hash FROM metadata_stamps ORDER BY stamp_id")
    assert [tuple(r) for r in stored] == [("s2", "h1"), ("s3", "h3")]
    logged = {r["id"] for r in await db.fetch("SELECT id FROM event_logs")}
    assert logged == {first.event_id, same_hash.event_id, other.event_id}
    assert result.counts.restamps == 1


async def test_conflict_with_a_stored_stamp(db: asyncpg.Connection) -> None:
    await write(db, [stamp("s1", "h1")])
    same_hash = stamp("s2", "h1", seconds=5)  # a re-stamp, not a conflict
    same_stamp = stamp("s1", "h2")
    fine = stamp("s3", "h3")
    result = await write(db, [same_hash, same_stamp, fine])
    assert [e.event_id for e in result.new] == [same_hash.event_id, fine.event_id]
    assert {(e.event_id, r.kind) for e, r in result.rejected} == {
        (same_stamp.event_id, "conflict"),
    }
    stored = await db.fetch("SELECT stamp_id, file_hash FROM metadata_stamps ORDER BY stamp_id")
    assert [tuple(r) for r in stored] == [("s1", "h1"), ("s3", "h3")]
    assert result.counts.restamps == 1


async def test_stored_stamp_counts_before_the_batch(db: asyncpg.Connection) -> None:
    # The batch's first claim of h2 conflicts with what is stored (s1 is h1's), so it claims
    # nothing, although it is older, and the batch's next event for h2 is judged on its own.
    await write(db, [stamp("s1", "h1")])
    loses = stamp("s1", "h2")
    wins = stamp("s2", "h2", seconds=5)
    result = await write(db, [loses, wins])
    assert [e.event_id for e in result.new] == [wins.event_id]
    assert [e.event_id for e, _ in result.rejected] == [loses.event_id]
    stored = await db.fetch("SELECT stamp_id, file_hash FROM metadata_stamps ORDER BY stamp_id")
    assert [tuple(r) for r in stored] == [("s1", "h1"), ("s2", "h2")]


# --- INTELLIGENCE_RECEIVED -------------------------------------------------------------------


async def test_intelligence_sets_the_stamp_newest_wins(db: asyncpg.Connection) -> None:
    await write(db, [stamp("s1", "h1", seconds=1)])
    newest = intelligence(
        {"file_hash": "h1", "intelligence_data": {"analysis_type": "security", "score": 0.9}},
        seconds=20,
    )
    await write(db, [newest])
    got = await row(db, "s1")
    assert got is not None
    assert got["intelligence_data"] == {"analysis_type": "security", "score": 0.9}
    assert (got["intelligence_event_at"], got["intelligence_event_id"]) == (
        at(20),
        newest.event_id,
    )
    # An older one arriving later (a replay, another partition) does not move it back.
    await write(db, [intelligence({"file_hash": "h1", "intelligence_data": {"old": 1}}, seconds=9)])
    assert await row(db, "s1") == got
    # Same time, larger event id: newer by (event_timestamp, event_id).
    tie = intelligence(
        {"file_hash": "h1", "intelligence_data": {"tie": 1}},
        seconds=20,
        event_id=uuid.UUID(int=newest.event_id.int + 1),
    )
    await write(db, [tie])
    got = await row(db, "s1")
    assert got is not None
    assert got["intelligence_data"] == {"tie": 1}
    assert got["intelligence_event_id"] == tie.event_id


async def test_intelligence_data_is_read_like_the_workflow_handler(
    db: asyncpg.Connection,
) -> None:
    await write(db, [stamp("a", "ha"), stamp("b", "hb"), stamp("c", "hc")])
    await write(
        db,
        [
            intelligence({"file_hash": "ha", "intelligence_data": None, "intelligence": [1, 2]}),
            intelligence(
                {
                    "file_hash": "hb",
                    "workflow_id": str(uuid.uuid4()),
                    "namespace": "ns",
                    "timestamp": "x",
                    "analysis": "ok",
                }
            ),
            intelligence({"file_hash": "hc", "intelligence_data": "plain text"}),
        ],
    )
    assert [r["intelligence_data"] for r in await db.fetch(SNAPSHOT)] == [
        "[1, 2]",
        '{"analysis": "ok"}',
        '"plain text"',
    ]


async def test_intelligence_without_a_stamp_or_hash_writes_nothing(db: asyncpg.Connection) -> None:
    no_hash = intelligence({"workflow_id": str(uuid.uuid4()), "intelligence_data": {"a": 1}})
    unknown = intelligence({"file_hash": "nobody", "intelligence_data": {"a": 1}})
    blank = intelligence({"file_hash": "", "intelligence_data": {"a": 1}})
    result = await write(db, [no_hash, unknown, blank])
    assert len(result.new) == 3
    assert not result.rejected
    assert await db.fetchval("SELECT count(*) FROM metadata_stamps") == 0


async def test_intelligence_before_its_stamp_in_earlier_batches(db: asyncpg.Connection) -> None:
    older = intelligence({"file_hash": "h1", "intelligence_data": {"v": "older"}}, seconds=5)
    newer = intelligence({"file_hash": "h1", "intelligence_data": {"v": "newer"}}, seconds=8)
    other_hash = intelligence({"file_hash": "h2", "intelligence_data": {"v": "other"}}, seconds=9)
    await write(db, [newer])
    await write(db, [older, other_hash])
    await write(db, [stamp("s1", "h1", seconds=1)])
    got = await row(db, "s1")
    assert got is not None
    assert got["intelligence_data"] == {"v": "newer"}
    assert (got["intelligence_event_at"], got["intelligence_event_id"]) == (at(8), newer.event_id)


async def test_intelligence_before_its_stamp_in_the_same_batch(db: asyncpg.Connection) -> None:
    first = intelligence({"file_hash": "h1", "intelligence_data": {"v": 1}}, seconds=5)
    created = stamp("s1", "h1", seconds=1)
    after = intelligence({"file_hash": "h1", "intelligence_data": {"v": 2}}, seconds=3)
    await write(db, [first, created, after])
    got = await row(db, "s1")
    assert got is not None
    assert got["intelligence_data"] == {"v": 1}
    assert got["intelligence_event_id"] == first.event_id


async def test_rejected_stamp_leaves_intelligence_for_the_right_one(
    db: asyncpg.Connection,
) -> None:
    # The conflicting event's retry must not lose the batch's intelligence for the winner.
    info = intelligence({"file_hash": "h1", "intelligence_data": {"v": 1}}, seconds=2)
    result = await write(db, [stamp("s1", "h1"), stamp("s1", "h2"), info])
    assert len(result.rejected) == 1
    got = await row(db, "s1")
    assert got is not None
    assert got["intelligence_data"] == {"v": 1}


# --- rejects from parse ----------------------------------------------------------------------


async def test_schema_rejects(db: asyncpg.Connection) -> None:
    good: dict[str, Any] = {
        "stamp_id": "s",
        "file_hash": "h",
        "namespace": "ns",
        "stamp_data": {"a": 1},
    }
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        "stamp_id": ("STAMP_CREATED", {k: v for k, v in good.items() if k != "stamp_id"}),
        "stamp_id ": ("STAMP_CREATED", {**good, "stamp_id": "x" * 101}),
        "file_hash": ("STAMP_CREATED", {**good, "file_hash": 1234}),
        "file_hash ": ("STAMP_CREATED", {**good, "file_hash": "h" * 257}),
        "namespace": ("STAMP_CREATED", {**good, "namespace": "n" * 201}),
        "stamp_data": ("STAMP_CREATED", {**good, "stamp_data": [1, 2]}),
        "file_metadata": ("STAMP_CREATED", {**good, "file_metadata": "big"}),
        "metadata_version": ("STAMP_CREATED", {**good, "metadata_version": "0.1.0-rc.1234"}),
        "file_hash  ": ("INTELLIGENCE_RECEIVED", {"file_hash": {"nested": 1}}),
        # Neither a hash nor a workflow to find it by: it could never be written.
        "file_hash   ": ("STAMP_CREATED", {k: v for k, v in good.items() if k != "file_hash"}),
    }
    events = {field: make_event(t, p) for field, (t, p) in cases.items()}
    result = await write(db, list(events.values()))
    assert not result.new
    by_id = {e.event_id: r for e, r in result.rejected}
    for field, event in events.items():
        reject = by_id[event.event_id]
        assert reject.kind == "schema"
        assert reject.message.startswith(field.strip() + ":"), (field, reject.message)
    assert "x" * 50 not in " ".join(r.message for r in by_id.values())
    assert await db.fetchval("SELECT count(*) FROM event_logs") == 0
    assert await db.fetchval("SELECT count(*) FROM metadata_stamps") == 0


# --- races between two sinks -----------------------------------------------------------------


async def _wait_until_blocked(observer: asyncpg.Connection, pid: int) -> None:
    for _ in range(200):
        waiting = await observer.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        )
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the other sink never blocked")


async def _concurrently(
    db: asyncpg.Connection, db_url: str, first: list[Event], second: list[Event]
) -> tuple[batch.BatchResult, batch.BatchResult]:
    """``first`` written and left uncommitted; ``second`` started on another connection; then
    ``first`` commits and ``second`` finishes."""
    other = await asyncpg.connect(db_url)
    try:
        tx = db.transaction()
        await tx.start()
        first_result = await batch.write_events(db, first, [STAMPS])

        async def second_sink() -> batch.BatchResult:
            async with other.transaction():
                return await batch.write_events(other, second, [STAMPS])

        task = asyncio.create_task(second_sink())
        await _wait_until_blocked(db, other.get_server_pid())
        await tx.commit()
        return first_result, await asyncio.wait_for(task, 10)
    finally:
        await other.close()


async def test_race_on_a_stamp_id_is_a_conflict(db: asyncpg.Connection, db_url: str) -> None:
    # Different hashes: no shared lock; the second sink's INSERT waits on the first's row and
    # then finds it in its second look.
    loser = stamp("s1", "h2")
    _, second = await _concurrently(db, db_url, [stamp("s1", "h1")], [loser])
    assert [(e.event_id, r.kind) for e, r in second.rejected] == [(loser.event_id, "conflict")]
    assert await db.fetchval("SELECT count(*) FROM event_logs WHERE id = $1", loser.event_id) == 0
    stored = await db.fetch("SELECT stamp_id, file_hash FROM metadata_stamps")
    assert [tuple(r) for r in stored] == [("s1", "h1")]


async def test_race_on_a_file_hash_is_a_restamp(db: asyncpg.Connection, db_url: str) -> None:
    # The second sink waits on the hash's lock, then sees the first's row: its older stamp
    # takes the row over.
    older = stamp("s2", "h1", seconds=1, stamp_data={"v": "older"})
    _, second = await _concurrently(db, db_url, [stamp("s1", "h1", seconds=5)], [older])
    assert not second.rejected
    assert second.counts.restamps == 1
    stored = await db.fetch("SELECT stamp_id, file_hash, stamp_data FROM metadata_stamps")
    assert [tuple(r) for r in stored] == [("s2", "h1", '{"v": "older"}')]


async def test_race_on_the_same_stamp_is_a_duplicate(db: asyncpg.Connection, db_url: str) -> None:
    older = stamp("s1", "h1", seconds=1, stamp_data={"v": "older"})
    _, second = await _concurrently(
        db, db_url, [stamp("s1", "h1", seconds=9, stamp_data={"v": "newer"})], [older]
    )
    assert not second.rejected
    got = await row(db, "s1")
    assert got is not None
    assert (got["created_at"], got["stamp_data"]) == (at(1), {"v": "older"})


async def test_race_stamp_then_intelligence(db: asyncpg.Connection, db_url: str) -> None:
    info = intelligence({"file_hash": "h1", "intelligence_data": {"v": 1}}, seconds=4)
    await _concurrently(db, db_url, [stamp("s1", "h1")], [info])
    got = await row(db, "s1")
    assert got is not None
    assert got["intelligence_data"] == {"v": 1}


async def test_race_intelligence_then_stamp(db: asyncpg.Connection, db_url: str) -> None:
    info = intelligence({"file_hash": "h1", "intelligence_data": {"v": 1}}, seconds=4)
    await _concurrently(db, db_url, [info], [stamp("s1", "h1")])
    got = await row(db, "s1")
    assert got is not None
    assert got["intelligence_data"] == {"v": 1}


async def test_race_stamp_then_its_workflows_hash(db: asyncpg.Connection, db_url: str) -> None:
    # The second sink waits on the workflow's lock, so it sees the stamp the first committed.
    workflow_id = str(uuid.uuid4())
    await _concurrently(
        db, db_url, [orchestrator_stamp(workflow_id, "st-1")], [hash_generated(workflow_id, HASH_A)]
    )
    got = await row(db, "st-1")
    assert got is not None
    assert got["file_hash"] == HASH_A


async def test_race_hash_then_its_stamp(db: asyncpg.Connection, db_url: str) -> None:
    workflow_id = str(uuid.uuid4())
    await _concurrently(
        db, db_url, [hash_generated(workflow_id, HASH_A)], [orchestrator_stamp(workflow_id, "st-1")]
    )
    got = await row(db, "st-1")
    assert got is not None
    assert got["file_hash"] == HASH_A


# --- any order, any batching, any duplicates ---------------------------------------------------


@st.composite
def stamp_histories(draw: st.DrawFn) -> list[Event]:
    """A conflict-free set: each stamp_id has one hash, and several stamp_ids may share one
    (re-stamps). A stamp_id may have two STAMP_CREATED events, times may tie. Orchestrator
    stamps name no hash and take their workflow's, from its HASH_GENERATED, its legacy
    WORKFLOW_COMPLETED (which names the workflow's namespace), both, or neither (the stamp
    waits); their envelope metadata names a namespace or none. Intelligence for stamped,
    unstamped and no hashes."""
    events: list[Event] = []
    ids = draw(st.lists(st.uuids(), min_size=60, max_size=60, unique=True))
    hashes = st.sampled_from(["hash-0", "hash-1", "hash-2"])
    for n in range(draw(st.integers(1, 3))):
        file_hash = draw(hashes)
        times = draw(st.lists(st.integers(0, 9), min_size=1, max_size=2))
        for k, seconds in enumerate(times):
            events.append(
                stamp(
                    f"stamp-{n}",
                    file_hash,
                    seconds=seconds,
                    event_id=ids.pop(),
                    stamp_data={"version": k},
                    file_metadata={"n": n},
                )
            )
    for n in range(draw(st.integers(0, 3))):
        workflow_id, stamp_id, file_hash = str(ids.pop()), f"wf-stamp-{n}", draw(hashes)
        events.append(
            orchestrator_stamp(
                workflow_id,
                stamp_id,
                seconds=draw(st.integers(0, 9)),
                event_id=ids.pop(),
                namespace=draw(st.sampled_from([BRIDGE_NAMESPACE, None])),
            )
        )
        if draw(st.booleans()):
            events.append(
                hash_generated(
                    workflow_id, file_hash, seconds=draw(st.integers(0, 9)), event_id=ids.pop()
                )
            )
        if draw(st.booleans()):
            events.append(
                workflow_completed(
                    workflow_id,
                    stamp_id,
                    file_hash,
                    f"ns.workflow-{n}",
                    seconds=draw(st.integers(0, 9)),
                    event_id=ids.pop(),
                )
            )
    for k in range(draw(st.integers(0, 6))):
        target = draw(st.sampled_from(["hash-0", "hash-1", "hash-2", "hash-9", None]))
        payload: dict[str, Any] = {"intelligence_data": {"k": k}}
        if target is not None:
            payload["file_hash"] = target
        events.append(intelligence(payload, seconds=draw(st.integers(0, 9)), event_id=ids.pop()))
    return events


async def _reset(conn: asyncpg.Connection) -> None:
    await conn.execute("TRUNCATE metadata_stamps, event_logs")


@support.property_settings(40)
@given(events=stamp_histories(), data=st.data())
async def test_any_order_batching_and_duplicates_converge(
    db: asyncpg.Connection, events: list[Event], data: st.DataObject
) -> None:
    await _reset(db)
    result = await write(db, events)
    assert not result.rejected
    expected = await snapshot(db)
    restamps = result.counts.restamps

    await _reset(db)
    counted = 0
    for part in support.draw_batches(data, events, max_duplicates=4, max_cuts=4):
        result = await write(db, part)
        assert not result.rejected
        counted += result.counts.restamps
    assert await snapshot(db) == expected
    # Each stamp event that does not hold its row is counted once, in any order.
    assert counted == restamps
