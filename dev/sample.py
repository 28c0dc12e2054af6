"""A realistic OmniNode event stream, for the demo, the acceptance tests and the benchmark.

Deterministic for a seed. Every event type of the contract appears, under the producers'
topic names and some of their type aliases; the events of one entity are keyed to one
partition of a topic and are in time order there, but the topics are interleaved at random,
so a workflow's steps can arrive before it started (out of order across topics, as the
contract says producers do). A share of the events is sent twice with the same ``event_id``
(a producer retry), and a few are of a type the sink does not know.

The stream is conflict-free: replaying it in any order must give the same tables.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

BASE_TIME = datetime(2026, 11, 1, tzinfo=UTC)
BRIDGE = "omninode_bridge.onex.evt"
INTELLIGENCE = "archon-intelligence"

# topic slug (without env prefix and .v1) per family of events
SLUGS = {
    "action": f"{BRIDGE}.action",
    "workflow_started": f"{BRIDGE}.stamp-workflow-started",
    "workflow_completed": f"{BRIDGE}.stamp-workflow-completed",
    "workflow_failed": f"{BRIDGE}.stamp-workflow-failed",
    "step": f"{BRIDGE}.workflow-step-completed",
    "transition": f"{BRIDGE}.workflow-state-transition",
    "stamp": f"{BRIDGE}.metadata-stamp-created",
    "hash": f"{BRIDGE}.blake3-hash-generated",
    "intel_requested": f"{BRIDGE}.onextree-intelligence-requested",
    "intel_received": f"{BRIDGE}.onextree-intelligence-received",
    "introspection": f"{BRIDGE}.node-introspection",
    "heartbeat": f"{BRIDGE}.node-heartbeat",
    "registry": f"{BRIDGE}.registry-request-introspection",
    "aggregation_started": f"{BRIDGE}.aggregation-started",
    "aggregation_completed": f"{BRIDGE}.aggregation-completed",
    "aggregation_failed": f"{BRIDGE}.aggregation-failed",
    "batch_processed": f"{BRIDGE}.batch-processed",
    "state_persisted": f"{BRIDGE}.state-persisted",
    "fsm_initialized": f"{BRIDGE}.fsm-state-initialized",
    "fsm_transitioned": f"{BRIDGE}.fsm-state-transitioned",
    "intel_fsm": f"{INTELLIGENCE}.fsm.state.changed",
    "intel_lease": f"{INTELLIGENCE}.fsm.lease",
    "intel_workflow": f"{INTELLIGENCE}.workflow.events",
    "custom": f"{BRIDGE}.custom-audit",
}

# The intelligence FSMs' happy paths (contract section 4.3): (action, to_state) from the start.
FSM_PATHS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "INGESTION": (
        "RECEIVED",
        [("START_PROCESSING", "PROCESSING"), ("COMPLETE_INDEXING", "INDEXED")],
    ),
    "PATTERN_LEARNING": (
        "FOUNDATION",
        [
            ("ADVANCE_TO_MATCHING", "MATCHING"),
            ("ADVANCE_TO_VALIDATION", "VALIDATION"),
            ("ADVANCE_TO_TRACEABILITY", "TRACEABILITY"),
            ("COMPLETE_LEARNING", "COMPLETED"),
        ],
    ),
    "QUALITY_ASSESSMENT": (
        "RAW",
        [
            ("START_ASSESSMENT", "ASSESSING"),
            ("COMPLETE_SCORING", "SCORED"),
            ("STORE_RESULTS", "STORED"),
        ],
    ),
}


@dataclass(frozen=True, slots=True)
class Record:
    """One record to produce: topic (with env prefix and version), key (None: keyless), value."""

    topic: str
    key: bytes | None
    value: bytes | None
    event_id: uuid.UUID
    event_type: str


@dataclass
class Stream:
    """The records of a sample stream, in the order to produce them."""

    records: list[Record] = field(default_factory=list)

    @property
    def distinct_events(self) -> int:
        return len({r.event_id for r in self.records})

    @property
    def topics(self) -> list[str]:
        return sorted({r.topic for r in self.records})

    def counts_by_type(self) -> dict[str, int]:
        seen: dict[uuid.UUID, str] = {r.event_id: r.event_type for r in self.records}
        out: dict[str, int] = {}
        for event_type in seen.values():
            out[event_type] = out.get(event_type, 0) + 1
        return dict(sorted(out.items()))


class _Builder:
    def __init__(self, env: str, seed: int) -> None:
        self.env = env
        # Sample data, not secrets: a seeded PRNG makes the stream reproducible.
        self.rng = random.Random(seed)  # noqa: S311
        # every record in the order its producer sent it
        self.records: list[Record] = []

    def new_id(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def emit(
        self,
        family: str,
        event_type: str,
        at: datetime,
        payload: dict[str, Any],
        *,
        key: str,
        correlation_id: uuid.UUID | None = None,
        wire_type: str | None = None,
    ) -> None:
        topic = f"{self.env}.{SLUGS[family]}.v1"
        event_id = self.new_id()
        envelope = {
            "envelope_version": "1.0",
            "event_id": str(event_id),
            "event_type": wire_type or event_type,
            "event_version": "1.0",
            "event_timestamp": at.isoformat().replace("+00:00", "Z"),
            "source_node_id": f"{family.split('_', maxsplit=1)[0]}-{self.rng.randint(1, 3)}",
            "source_service": "omninode-bridge"
            if not family.startswith("intel_")
            else "archon-intelligence",
            "source_version": "1.0.0",
            "correlation_id": str(correlation_id) if correlation_id else None,
            "environment": self.env,
            "partition_key": key,
            "payload": payload,
            "metadata": {"sample": True},
        }
        self.records.append(
            Record(topic, key.encode(), orjson.dumps(envelope), event_id, event_type)
        )


R = TypeVar("R", bound=Record)


def interleave(records: Sequence[R], rng: random.Random, duplicate_share: float) -> list[R]:
    """The records as they arrive: one queue per (topic, key) keeps its producer's order, the
    queues are merged at random (so topics interleave), and a share of the records is sent
    again a little later on the same topic and key (producer retries, same event_id)."""
    by_key: dict[tuple[str, bytes | None], list[R]] = {}
    for record in records:
        by_key.setdefault((record.topic, record.key), []).append(record)
    queues = list(by_key.values())
    out: list[R] = []
    positions = [0] * len(queues)
    live = list(range(len(queues)))
    while live:
        # rng.choice(live), by index: deleting at that index is what list.remove did, without
        # searching the list for the value (quadratic on a 200,000-event stream).
        at = rng.randrange(len(live))
        i = live[at]
        record = queues[i][positions[i]]
        positions[i] += 1
        if positions[i] == len(queues[i]):
            del live[at]
        out.append(record)
    for index in sorted(rng.sample(range(len(out)), int(len(out) * duplicate_share)), reverse=True):
        later = min(len(out), index + rng.randint(1, 50))
        out.insert(later, out[index])
    return out


def generate(events: int = 10_000, *, seed: int = 7, env: str = "demo") -> Stream:
    """A stream of at least ``events`` distinct events (plus ~2% duplicates)."""
    b = _Builder(env, seed)
    # One unit (4 workflows, 2 FSM entities, an aggregation, an intelligence workflow, half a
    # node) is ~76 distinct events; scale the entity counts to the size asked for.
    unit = max(1, -(-events // 75))
    for w in range(unit * 4):
        _workflow(b, w)
    for n in range(max(2, unit // 2)):
        _node(b, n)
    for a in range(unit):
        _aggregation(b, a)
    for f in range(unit * 2):
        _fsm_entity(b, f)
    for i in range(unit):
        _intelligence_workflow(b, i)
    for c in range(max(1, unit // 4)):
        b.emit(
            "custom",
            "AUDIT_RECORDED",
            BASE_TIME + timedelta(seconds=c),
            {"actor": f"user-{c}", "action": "export"},
            key=f"audit-{c}",
            wire_type="audit.recorded",
        )
    return Stream(interleave(b.records, b.rng, duplicate_share=0.02))


def _workflow(b: _Builder, n: int) -> None:
    rng = b.rng
    wid = b.new_id()
    corr = b.new_id()
    key = str(corr)
    t = BASE_TIME + timedelta(seconds=n * 3, microseconds=rng.randint(0, 999_999))
    namespace = f"omninode.tenant-{n % 5}"
    file_hash = rng.getrandbits(256).to_bytes(32, "big").hex()
    stamp_id = f"stamp-{wid.hex[:16]}"
    started: dict[str, Any] = {
        "workflow_id": str(wid),
        "namespace": namespace,
        "input": {"path": f"/data/{n}.bin"},
    }
    if n % 4 == 3:
        # An event-driven workflow: its request (the orchestrator's ACTION) has the input and
        # the namespace, its STARTED neither.
        b.emit(
            "action",
            "ACTION",
            t - timedelta(milliseconds=2),
            {
                "correlation_id": str(wid),
                "action_type": "ORCHESTRATE_WORKFLOW",
                "payload": {
                    "workflow_id": str(wid),
                    "input_data": {"content": f"file {n}", "file_path": f"/data/{n}.bin"},
                    "namespace": namespace,
                    "workflow_type": "metadata_stamping",
                },
                "source_node": "orchestrator-1",
            },
            key=key,
            correlation_id=corr,
        )
        started = {"workflow_id": str(wid), "mode": "event_driven"}
    b.emit(
        "workflow_started",
        "WORKFLOW_STARTED",
        t,
        started,
        key=key,
        correlation_id=corr,
        wire_type="stamp_workflow_started",
    )
    t += timedelta(milliseconds=5)
    b.emit(
        "transition",
        "STATE_TRANSITION",
        t,
        {
            "workflow_id": str(wid),
            "from_state": "PENDING",
            "to_state": "PROCESSING",
            "triggered_by": "orchestrator",
        },
        key=key,
        correlation_id=corr,
    )
    t += timedelta(milliseconds=20)
    b.emit(
        "hash",
        "HASH_GENERATED",
        t,
        {"workflow_id": str(wid), "file_hash": file_hash, "generation_time_ms": rng.randint(1, 9)},
        key=key,
        correlation_id=corr,
        wire_type="blake3_hash_generated",
    )
    steps = rng.randint(2, 4)
    failed = n % 8 == 5  # by index, so even a small stream has failures
    for order in range(steps):
        name = ("hash", "stamp", "index", "notify")[order]
        t += timedelta(milliseconds=10)
        b.emit(
            "step",
            "STEP_STARTED",
            t,
            {
                "workflow_id": str(wid),
                "step_id": f"{name}-{order}",
                "step_name": name,
                "step_type": "task",
                "step_order": order,
            },
            key=key,
            correlation_id=corr,
        )
        t += timedelta(milliseconds=rng.randint(5, 50))
        last_failed = failed and order == steps - 1
        b.emit(
            "step",
            "STEP_FAILED" if last_failed else "STEP_COMPLETED",
            t,
            {
                "workflow_id": str(wid),
                "step_id": f"{name}-{order}",
                "step_name": name,
                "step_type": "task",
                "step_order": order,
                "execution_time_ms": rng.randint(5, 50),
                "output": {"ok": not last_failed},
            },
            key=key,
            correlation_id=corr,
            wire_type=None if last_failed else "workflow_step_completed",
        )
    t += timedelta(milliseconds=5)
    b.emit(
        "intel_requested",
        "INTELLIGENCE_REQUESTED",
        t,
        {"workflow_id": str(wid), "file_hash": file_hash},
        key=key,
        correlation_id=corr,
    )
    t += timedelta(milliseconds=30)
    b.emit(
        "intel_received",
        "INTELLIGENCE_RECEIVED",
        t,
        {
            "workflow_id": str(wid),
            "file_hash": file_hash,
            "intelligence_data": {"quality": round(rng.random(), 3), "tags": ["sample"]},
        },
        key=key,
        correlation_id=corr,
        wire_type="onextree_intelligence_received",
    )
    if failed:
        t += timedelta(milliseconds=5)
        b.emit(
            "workflow_failed",
            "WORKFLOW_FAILED",
            t,
            {"workflow_id": str(wid), "error": "indexer timed out", "error_type": "TIMEOUT"},
            key=key,
            correlation_id=corr,
        )
        return
    t += timedelta(milliseconds=5)
    b.emit(
        "stamp",
        "STAMP_CREATED",
        t,
        {
            "stamp_id": stamp_id,
            "file_hash": file_hash,
            "namespace": namespace,
            "stamp_data": {"stamp": f"ONEX:{file_hash[:12]}"},
            "file_metadata": {"size_bytes": rng.randint(100, 10**6)},
        },
        key=key,
        correlation_id=corr,
        wire_type="metadata.stamp.created",
    )
    t += timedelta(milliseconds=5)
    b.emit(
        "workflow_completed",
        "WORKFLOW_COMPLETED",
        t,
        {
            "workflow_id": str(wid),
            "stamp_id": stamp_id,
            "file_hash": file_hash,
            "namespace": namespace,
            "output": {"stamped": True},
        },
        key=key,
        correlation_id=corr,
        wire_type="stamp_workflow_completed",
    )


def _node(b: _Builder, n: int) -> None:
    rng = b.rng
    node_id = f"node-{n}" if n % 2 else str(b.new_id())  # some producers send non-UUID ids
    t = BASE_TIME + timedelta(seconds=n, microseconds=rng.randint(0, 999_999))
    node_type = ("ORCHESTRATOR", "REDUCER", "REGISTRY")[n % 3]
    b.emit(
        "introspection",
        "NODE_INTROSPECTION",
        t,
        {
            "node_id": node_id,
            "node_type": node_type,
            "node_version": "1.2.0",
            "endpoint_url": f"http://node-{n}:8080",
            "capabilities": {"stamping": True, "max_batch": 100},
        },
        key=node_id,
    )
    b.emit(
        "registry",
        "REGISTRY_REQUEST_INTROSPECTION",
        t - timedelta(seconds=1),
        {"requested_by": "registry-1"},
        key=node_id,
    )
    health = "healthy"
    for beat in range(rng.randint(6, 12)):
        t += timedelta(seconds=10, milliseconds=rng.randint(0, 999))
        health = rng.choices(["healthy", "degraded", "unhealthy"], [90, 8, 2])[0]
        b.emit(
            "heartbeat",
            "NODE_HEARTBEAT",
            t,
            {
                "node_id": node_id,
                "node_type": node_type,
                "health_status": health,
                "uptime_seconds": (beat + 1) * 10,
                "cpu_percent": round(rng.random() * 100, 1),
                "memory_mb": rng.randint(100, 2000),
            },
            key=node_id,
        )


def _aggregation(b: _Builder, n: int) -> None:
    rng = b.rng
    agg = b.new_id()
    key = str(agg)
    t = BASE_TIME + timedelta(seconds=n * 5, microseconds=rng.randint(0, 999_999))
    namespace = f"omninode.tenant-{n % 5}"
    common = {"aggregation_id": str(agg), "node_type": "REDUCER", "namespace": namespace}
    b.emit(
        "fsm_initialized", "FSM_STATE_INITIALIZED", t, {**common, "initial_state": "IDLE"}, key=key
    )
    t += timedelta(milliseconds=10)
    b.emit(
        "aggregation_started",
        "AGGREGATION_STARTED",
        t,
        {**common, "aggregation_type": "namespace_grouping", "window_start": t.isoformat()},
        key=key,
    )
    total = 0
    for batch in range(rng.randint(1, 3)):
        t += timedelta(milliseconds=100)
        size = rng.randint(1000, 100_000)
        total += size
        b.emit(
            "batch_processed",
            "BATCH_PROCESSED",
            t,
            {
                **common,
                "batch_number": batch,
                "items": rng.randint(1, 50),
                "total_size_bytes": total,
            },
            key=key,
        )
    t += timedelta(milliseconds=10)
    b.emit(
        "fsm_transitioned",
        "FSM_STATE_TRANSITIONED",
        t,
        {**common, "from_state": "AGGREGATING", "to_state": "PERSISTING"},
        key=key,
    )
    t += timedelta(milliseconds=10)
    b.emit("state_persisted", "STATE_PERSISTED", t, {**common, "total_size_bytes": total}, key=key)
    t += timedelta(milliseconds=10)
    if n % 10 == 1:
        b.emit(
            "aggregation_failed",
            "AGGREGATION_FAILED",
            t,
            {**common, "error": "store unavailable"},
            key=key,
        )
    else:
        b.emit(
            "aggregation_completed",
            "AGGREGATION_COMPLETED",
            t,
            {
                **common,
                "total_size_bytes": total,
                "unique_file_types": ["pdf", "txt"],
                "window_end": t.isoformat(),
                "aggregation_duration_ms": 250,
                "items_per_second": 123.45,
            },
            key=key,
        )


def _fsm_entity(b: _Builder, n: int) -> None:
    rng = b.rng
    fsm_type = list(FSM_PATHS)[n % 3]
    entity = f"{fsm_type.lower()}-doc-{n}"
    start, path = FSM_PATHS[fsm_type]
    t = BASE_TIME + timedelta(seconds=n * 2, microseconds=rng.randint(0, 999_999))
    lease_id = f"lease-{n}"
    b.emit(
        "intel_lease",
        "LEASE_ACQUIRED",
        t,
        {
            "fsm_type": fsm_type,
            "entity_id": entity,
            "lease_id": lease_id,
            "lease_epoch": 1,
            "lease_expires_at": (t + timedelta(minutes=5)).isoformat(),
        },
        key=entity,
        wire_type="lease.acquired",
    )
    state = start
    for action, to_state in path[: rng.randint(1, len(path))]:
        t += timedelta(milliseconds=rng.randint(10, 500))
        b.emit(
            "intel_fsm",
            "FSM_STATE_TRANSITION",
            t,
            {
                "fsm_type": fsm_type,
                "entity_id": entity,
                "from_state": state,
                "to_state": to_state,
                "action": action,
                "metadata": {"worker": f"w-{n % 4}"},
            },
            key=entity,
            correlation_id=b.new_id(),
            wire_type="fsm.state.changed",
        )
        state = to_state
    t += timedelta(milliseconds=5)
    if rng.random() < 0.7:
        b.emit(
            "intel_lease",
            "LEASE_RELEASED",
            t,
            {"fsm_type": fsm_type, "entity_id": entity, "lease_id": lease_id, "lease_epoch": 1},
            key=entity,
            wire_type="lease.released",
        )


def _intelligence_workflow(b: _Builder, n: int) -> None:
    rng = b.rng
    wid = f"intel-wf-{n}"
    t = BASE_TIME + timedelta(seconds=n * 4, microseconds=rng.randint(0, 999_999))
    common = {"workflow_id": wid, "operation_type": "DOCUMENT_INGESTION", "entity_id": f"doc-{n}"}
    b.emit(
        "intel_workflow",
        "INTELLIGENCE_WORKFLOW_STARTED",
        t,
        {**common, "input": {"n": n}},
        key=wid,
        wire_type="workflow.started",
    )
    steps = ["parse", "embed", "index"]
    for step in steps:
        t += timedelta(milliseconds=rng.randint(10, 200))
        b.emit(
            "intel_workflow",
            "INTELLIGENCE_WORKFLOW_STEP_COMPLETED",
            t,
            {**common, "step": step},
            key=wid,
            wire_type="workflow.step.completed",
        )
    t += timedelta(milliseconds=10)
    if n % 10 == 1:
        b.emit(
            "intel_workflow",
            "INTELLIGENCE_WORKFLOW_FAILED",
            t,
            {**common, "error": "embedding service down", "step": "embed"},
            key=wid,
            wire_type="workflow.failed",
        )
    else:
        b.emit(
            "intel_workflow",
            "INTELLIGENCE_WORKFLOW_COMPLETED",
            t,
            {**common, "results": {"chunks": rng.randint(1, 40)}},
            key=wid,
            wire_type="workflow.completed",
        )


async def produce(
    servers: str, records: Sequence[Record], *, partitions: int = 3
) -> list[tuple[str, int, int]]:
    """Create the records' topics (``partitions`` each) and produce the records in order,
    keyed as the producers key them; return where each landed as (topic, partition, offset).
    """
    topics = sorted({r.topic for r in records})
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=servers, acks="all", linger_ms=10, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        futures = [await producer.send(r.topic, r.value, key=r.key) for r in records]
        landed = [await f for f in futures]
    finally:
        await producer.stop()
    return [(m.topic, m.partition, m.offset) for m in landed]
