"""What the handler tests share: events built from dict envelopes (the producers' stamp events
among them: the stamps tests and the all-families convergence test both use them), batches
written the way the consumer writes them, the convergence property's batching, and table
snapshots.

Each test module keeps what is its family's own: the topics its events are read from, its
payload builders, its row readers and the queries of its snapshot.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
from aiokafka.structs import ConsumerRecord, TopicPartition
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from consumer.store import batch
from dev import producers
from handlers.base import Event, Handler
from handlers.envelope import Envelope
from handlers.registry import resolve

# A redelivered event is the same envelope read again from a later offset.
REDELIVERY_OFFSET = 1000


@dataclass(frozen=True)
class EventMaker:
    """Builds an :class:`Event` from a dict envelope, as a producer sends it.

    ``topic`` names the topic an event is read from, given the event type as passed and the
    decoded envelope; the event is read at ``offset`` of partition 0. Times are ``when``, or
    ``seconds`` after ``base``.
    """

    base: datetime
    topic: Callable[[str, Envelope], str]
    source_node_id: str | None = None

    def at(self, seconds: float) -> datetime:
        return self.base + timedelta(seconds=seconds)

    def __call__(
        self,
        event_type: str,
        payload: dict[str, Any],
        *,
        seconds: float = 0,
        when: datetime | None = None,
        event_id: uuid.UUID | None = None,
        correlation_id: uuid.UUID | str | None = None,
        session_id: uuid.UUID | None = None,
        offset: int = 0,
    ) -> Event:
        wire: dict[str, Any] = {
            "event_id": str(event_id or uuid.uuid4()),
            "event_type": event_type,
            "event_timestamp": (self.at(seconds) if when is None else when).isoformat(),
            "payload": payload,
        }
        if self.source_node_id is not None:
            wire["source_node_id"] = self.source_node_id
        if correlation_id is not None:
            wire["correlation_id"] = str(correlation_id)
        if session_id is not None:
            wire["session_id"] = str(session_id)
        envelope = Envelope.from_wire(wire)
        return Event(envelope, self.topic(event_type, envelope), 0, offset)


def bridge_envelope(
    event_type: str,
    payload: dict[str, Any],
    *,
    when: datetime,
    source_node_id: str,
    correlation_id: str | None,
    partition_key: str | None,
    metadata: dict[str, Any],
    source_instance: str | None = None,
) -> dict[str, Any]:
    """The bridge's envelope (dev/producers.py), with a fresh event id."""
    return producers.bridge_envelope(
        event_type,
        payload,
        event_id=str(uuid.uuid4()),
        at=when,
        source_node_id=source_node_id,
        correlation_id=correlation_id,
        partition_key=partition_key,
        metadata=metadata,
        source_instance=source_instance,
    )


def node_record(
    event_type: str,
    data: dict[str, Any],
    *,
    node_type: str,
    category: str,
    namespace: str,
    entity: tuple[str, uuid.UUID],
    when: datetime,
) -> dict[str, Any]:
    """A record of the bridge's orchestrator or reducer (producers.md, section 1): the payload
    is the event's data after the entity's id, then node_id and published_at; the correlation
    id, and so the key, is that id (``entity``: its payload name and value)."""
    node = f"{node_type}-1"
    name, entity_id = entity
    at = when.isoformat()
    return bridge_envelope(
        event_type,
        {name: str(entity_id), **data, "timestamp": at, "node_id": node, "published_at": at},
        when=when,
        source_node_id=node,
        correlation_id=str(entity_id),
        partition_key=str(entity_id),
        metadata={
            "event_category": category,
            "node_type": node_type,
            "namespace": namespace,
            "consul_service_id": f"omninode-bridge-{node_type}-{node}",
        },
    )


def as_produced(
    sent: Sequence[tuple[str, dict[str, Any]]], *, keep_unknown: bool = False
) -> list[Event]:
    """Events read as the consumer reads them: each (topic, wire envelope) encoded the way the
    producers encode it (Python's json, default settings), decoded and refined by topic by
    the consumer's own code, at offsets 0, 1, ... of partition 0 of its topic. With
    ``keep_unknown`` False (OMNISINK_UNKNOWN_EVENTS=dlq) nothing may be refused."""
    records: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
    for offset, (topic, wire) in enumerate(sent):
        value = json.dumps(wire).encode()
        records.setdefault(TopicPartition(topic, 0), []).append(
            ConsumerRecord(topic, 0, offset, 0, 0, None, value, None, 0, len(value), [])
        )
    decoded = batch.Batch.decode(records, max_bytes=1 << 20, keep_unknown=keep_unknown)
    assert decoded.refused == [], [d.message for d in decoded.refused]
    return sorted(decoded.events, key=lambda e: e.offset)


async def write_batch(
    conn: asyncpg.Connection,
    events: Sequence[Event],
    handlers: Sequence[Handler[Any]],
    *,
    renumber: bool = False,
) -> batch.BatchResult:
    """One batch through ``event_logs`` and ``handlers``, in its own transaction.

    ``renumber``: the events are read at offsets 0, 1, ... in the order given.
    """
    if renumber:
        events = [Event(e.envelope, e.topic, e.partition, i) for i, e in enumerate(events)]
    async with conn.transaction():
        return await batch.write_events(conn, list(events), handlers)


def js(text: str | None) -> Any:
    """A json/jsonb column as asyncpg returns it (text), decoded; NULL as None."""
    return None if text is None else orjson.loads(text)


async def query_snapshot(
    conn: asyncpg.Connection, queries: Mapping[str, str]
) -> dict[str, list[dict[str, Any]]]:
    """The rows of each query (as dicts), by name: what two runs must leave identical."""
    return {name: [dict(r) for r in await conn.fetch(sql)] for name, sql in queries.items()}


# --- the convergence property: any order, any batching, any duplicates -----------------------


def property_settings(max_examples: int) -> settings:
    """A property over the database: no deadline, and the function-scoped ``db`` fixture is
    shared by the examples (each one resets its tables)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


def draw_batches(
    data: st.DataObject,
    events: Sequence[Event],
    *,
    max_duplicates: int = 6,
    max_cuts: int = 6,
) -> list[list[Event]]:
    """The events as a sink may read them: up to ``max_duplicates`` of them again (redelivered
    from a later offset), everything in any order, cut into at most ``max_cuts + 1``
    consecutive non-empty batches."""
    duplicates = data.draw(
        st.lists(st.sampled_from(events), max_size=max_duplicates), label="duplicates"
    )
    redelivered = [
        Event(e.envelope, e.topic, e.partition, e.offset + REDELIVERY_OFFSET) for e in duplicates
    ]
    sequence = data.draw(st.permutations([*events, *redelivered]), label="sequence")
    cuts = data.draw(
        st.lists(st.integers(1, max(1, len(sequence) - 1)), max_size=max_cuts, unique=True),
        label="cuts",
    )
    bounds = [0, *sorted(cuts), len(sequence)]
    return [sequence[start:end] for start, end in itertools.pairwise(bounds) if start < end]


# --- the producers' stamp events, as docs/producers.md gives them ------------------------------

BRIDGE_NAMESPACE = "dev"
ORCHESTRATOR_NODE = "orchestrator-1"
STAMPED_FILE = "/srv/repo/docs/guide.md"
_ORCHESTRATOR_SLUGS = {
    "metadata_stamp_created": "metadata-stamp-created",
    "blake3_hash_generated": "blake3-hash-generated",
    "stamp_workflow_completed": "stamp-workflow-completed",
}


def _read(wire: dict[str, Any], topic: str) -> Event:
    return Event(resolve(Envelope.from_wire(wire), topic), topic, 0, 0)


def orchestrator(
    wire_type: str,
    data: dict[str, Any],
    when: datetime,
    *,
    event_id: uuid.UUID | None = None,
    namespace: str | None = BRIDGE_NAMESPACE,
) -> Event:
    """An orchestrator event through the bridge envelope: the data with its timestamp, then
    node_id and published_at; the workflow id as correlation id; the orchestrator's envelope
    metadata (its ``namespace`` left out when None)."""
    payload = {
        **data,
        "timestamp": when.isoformat(),
        "node_id": ORCHESTRATOR_NODE,
        "published_at": (when + timedelta(microseconds=250)).isoformat(),
    }
    metadata: dict[str, Any] = {
        "event_category": "workflow_orchestration",
        "node_type": "orchestrator",
        "namespace": namespace,
        "consul_service_id": f"omninode-bridge-orchestrator-{ORCHESTRATOR_NODE}",
    }
    if namespace is None:
        del metadata["namespace"]
    wire = {
        "envelope_version": "1.0",
        "event_id": str(event_id or uuid.uuid4()),
        "event_type": wire_type,
        "event_version": "1.0",
        "event_timestamp": when.isoformat(),
        "source_node_id": ORCHESTRATOR_NODE,
        "source_service": "omninode-bridge",
        "source_version": "1.0.0",
        "source_instance": None,
        "correlation_id": data["workflow_id"],
        "causation_id": None,
        "environment": "development",
        "region": None,
        "partition_key": None,
        "payload": payload,
        "metadata": metadata,
    }
    slug = _ORCHESTRATOR_SLUGS[wire_type]
    return _read(wire, f"{BRIDGE_NAMESPACE}.omninode_bridge.onex.evt.{slug}.v1")


def orchestrator_stamp(
    workflow_id: str,
    stamp_id: str,
    when: datetime,
    *,
    event_id: uuid.UUID | None = None,
    namespace: str | None = BRIDGE_NAMESPACE,
) -> Event:
    """``metadata_stamp_created``: no file_hash, no namespace, no stamp_data."""
    data = {"workflow_id": workflow_id, "stamp_id": stamp_id, "creation_time_ms": 1.93}
    return orchestrator(
        "metadata_stamp_created", data, when, event_id=event_id, namespace=namespace
    )


def hash_generated(
    workflow_id: str, file_hash: str, when: datetime, *, event_id: uuid.UUID | None = None
) -> Event:
    """``blake3_hash_generated``."""
    data = {"workflow_id": workflow_id, "file_hash": file_hash, "generation_time_ms": 0.412}
    return orchestrator("blake3_hash_generated", data, when, event_id=event_id)


def workflow_completed(
    workflow_id: str,
    stamp_id: str,
    file_hash: str,
    namespace: str,
    when: datetime,
    *,
    event_id: uuid.UUID | None = None,
) -> Event:
    """The legacy ``stamp_workflow_completed``."""
    data = {
        "workflow_id": workflow_id,
        "stamp_id": stamp_id,
        "file_hash": file_hash,
        "namespace": namespace,
    }
    return orchestrator("stamp_workflow_completed", data, when, event_id=event_id)


def service_stamp(
    stamp_id: str,
    file_hash: str,
    when: datetime,
    *,
    event_id: uuid.UUID | None = None,
    file_path: str = STAMPED_FILE,
) -> Event:
    """The metadata-stamping service's ``metadata.stamp.created`` through its older envelope:
    no namespace, no stamp_data, no workflow."""
    wire = {
        "envelope_version": "1.0",
        "event_id": str(event_id or uuid.uuid4()),
        "event_type": "metadata.stamp.created",
        "event_version": "1.0",
        "timestamp": when.isoformat(),
        "correlation_id": None,
        "causation_id": None,
        "source_service": "metadata-stamping-service",
        "source_version": "0.1.0",
        "source_instance": "metadata-stamping-4242",
        "source_node": None,
        "environment": "development",
        "region": None,
        "partition_key": file_hash,
        "security_context": {
            "actor_id": "system",
            "session_id": "system",
            "security_level": "standard",
            "hmac_signature": None,
            "signing_key_id": None,
        },
        "payload": {
            "stamp_id": stamp_id,
            "file_hash": file_hash,
            "file_path": file_path,
            "file_size_bytes": 2048,
            "execution_time_ms": 1.7,
            "hash_algorithm": "BLAKE3",
            "created_at": when.isoformat(),
        },
        "metadata": {},
    }
    return _read(wire, "dev.omninode-bridge.metadata.metadata-stamp-created.v1")
