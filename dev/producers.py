"""What the OmniNode platform's producers really send, as Kafka records, byte for byte.

The facts are the producers' own, as their public sources publish them (the design note on
the producers lists them): omninode_bridge's orchestrator, reducer, registry and node
helpers, the metadata-stamping service, and omniintelligence's reducer FSMs (through
``kafka_event_effect``) and intelligence adapter. Each builder returns the records of one
producer scenario, in the order its producer sends them:

- **bytes**: Python's ``json.dumps`` with its default settings (``", "`` and ``": "``,
  non-ASCII escaped, unknown types through ``str()``), fields in the order the producers'
  models declare them, UTF-8, no headers;
- **times**: ``datetime.isoformat()`` of UTC datetimes (``+00:00``, microseconds); the one
  exception is the ``kafka_event_effect`` envelope, whose ``timestamp`` is a float of epoch
  seconds;
- **keys**: as each producer keys its records (the bridge: the first of ``partition_key``,
  ``correlation_id``, ``source_node_id``, ``event_id``; the stamping service: the file hash or
  the batch id; the FSM effect: the correlation id); the intelligence adapter sends none. The
  partition is left to the producing client: the sink must not depend on it;
- **topics**: the producers' own, under the shipped default namespaces ``omninode.bridge``
  (orchestrator) and ``omninode.bridge.reducer`` (reducer) as well as ``dev``.

Deterministic: a :class:`Producers` gives the same records for the same seed. Its random
source is derived from the seed under a name of its own, so it never replays the sample
stream's (dev/sample.py) for the same number. :func:`stream` is the demo's mix of all of it.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from dev.sample import Record, Stream, interleave

BASE_TIME = datetime(2025, 11, 13, 9, 0, tzinfo=UTC)

DEV = "dev"
ORCHESTRATOR_NAMESPACE = "omninode.bridge"  # the orchestrator's shipped default
REDUCER_NAMESPACE = "omninode.bridge.reducer"  # the reducer's shipped default
STAMPING_PREFIX = "dev.omninode-bridge.metadata"
INTELLIGENCE_PREFIX = "dev.archon-intelligence"

# The orchestrator's default steps (step_id, step_type), in the order it runs them.
VALIDATE_STEP = ("validate_input", "validation")
INTELLIGENCE_STEP = ("onextree_intelligence", "onextree_intelligence")
HASH_STEP = ("hash_generation", "hash_generation")
STAMP_STEP = ("stamp_creation", "stamp_creation")

TIMEOUT_ERROR = "Workflow timeout - no response from reducer"
SUGGESTED_ACTION = "Verify the source language is supported and resubmit the analysis request."

# The omniintelligence reducer's FSMs: the initial state, then each move as
# "FROM[,FROM...] ACTION TO", as the reducer declares them.
_FSM_RULES = {
    "INGESTION": (
        "RECEIVED",
        "RECEIVED START_PROCESSING PROCESSING; PROCESSING COMPLETE_INDEXING INDEXED;"
        " RECEIVED,PROCESSING FAIL FAILED; INDEXED REINDEX PROCESSING; FAILED RETRY PROCESSING",
    ),
    "PATTERN_LEARNING": (
        "FOUNDATION",
        "FOUNDATION ADVANCE_TO_MATCHING MATCHING; MATCHING ADVANCE_TO_VALIDATION VALIDATION;"
        " VALIDATION ADVANCE_TO_TRACEABILITY TRACEABILITY; TRACEABILITY COMPLETE_LEARNING"
        " COMPLETED; FOUNDATION,MATCHING,VALIDATION,TRACEABILITY FAIL FAILED;"
        " COMPLETED RELEARN FOUNDATION; FAILED RETRY FOUNDATION",
    ),
    "QUALITY_ASSESSMENT": (
        "RAW",
        "RAW START_ASSESSMENT ASSESSING; ASSESSING COMPLETE_SCORING SCORED;"
        " SCORED STORE_RESULTS STORED; RAW,ASSESSING,SCORED FAIL FAILED;"
        " STORED REASSESS ASSESSING; FAILED RETRY ASSESSING",
    ),
}


def _moves(rules: str) -> dict[tuple[str, str], str]:
    moves: dict[tuple[str, str], str] = {}
    for rule in rules.split(";"):
        sources, action, target = rule.split()
        moves.update({(source, action): target for source in sources.split(",")})
    return moves


# Per FSM type: the initial state, and (state, action) -> next state.
FSMS: dict[str, tuple[str, dict[tuple[str, str], str]]] = {
    fsm: (initial, _moves(rules)) for fsm, (initial, rules) in _FSM_RULES.items()
}
# Entering one of these, the reducer also emits FSM_<state> on <fsm_type lower>.completed|failed.
TERMINAL_STATES = frozenset({"INDEXED", "COMPLETED", "STORED", "FAILED"})

Outcome = Literal["completed", "failed", "timeout"]
NodeType = Literal["orchestrator", "reducer"]


def encode(envelope: dict[str, Any]) -> bytes:
    """The producers' encoding: ``json.dumps`` defaults, unknown types through ``str()``."""
    return json.dumps(envelope, default=str).encode("utf-8")


def iso(at: datetime) -> str:
    return at.isoformat()


def bridge_envelope(
    event_type: str,
    payload: dict[str, Any],
    *,
    event_id: str,
    at: datetime,
    source_node_id: str,
    correlation_id: str | None,
    partition_key: str | None,
    metadata: dict[str, Any],
    source_instance: str | None = None,
) -> dict[str, Any]:
    """The bridge's ModelOnexEnvelopeV1 as ``model_dump(mode="json")`` gives it, fields in
    declaration order (producers.md, section 1)."""
    return {
        "envelope_version": "1.0",
        "event_id": event_id,
        "event_type": event_type,
        "event_version": "1.0",
        "event_timestamp": iso(at),
        "source_node_id": source_node_id,
        "source_service": "omninode-bridge",
        "source_version": "1.0.0",
        "source_instance": source_instance,
        "correlation_id": correlation_id,
        "causation_id": None,
        "environment": "development",
        "region": None,
        "partition_key": partition_key,
        "payload": payload,
        "metadata": metadata,
    }


def content_hash(content: str) -> str:
    """64 hex digits standing for the content's BLAKE3 hash (not in the standard library):
    the same content always gives the same hash, as re-stamping unchanged files needs."""
    return hashlib.blake2s(content.encode("utf-8"), digest_size=32).hexdigest()


def bridge_topic(namespace: str, slug: str) -> str:
    """``<namespace>.omninode_bridge.onex.evt.<event_type with _ as ->.v1``."""
    return f"{namespace}.omninode_bridge.onex.evt.{slug.replace('_', '-')}.v1"


def stamping_topic(event_type: str) -> str:
    """``dev.omninode-bridge.metadata.<event_type with . as ->.v1``."""
    return f"{STAMPING_PREFIX}.{event_type.replace('.', '-')}.v1"


@dataclass(frozen=True, slots=True)
class ProducerRecord(Record):
    """One record as its producer sends it; ``at`` is the event's time as the sink reads it."""

    at: datetime

    @property
    def envelope(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.value or b"{}")
        return decoded

    @property
    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = self.envelope["payload"]
        return payload


class _Emitter:
    """Sends one entity's events from the orchestrator or the reducer, each a little after
    the one before; ``at`` is the time of the last one."""

    def __init__(
        self,
        producers: Producers,
        role: NodeType,
        namespace: str,
        entity: dict[str, str],
        at: datetime,
        *,
        gap_ms: tuple[float, float] = (1, 40),
    ) -> None:
        self.producers, self.role, self.namespace = producers, role, namespace
        self.entity, self.at, self.gap_ms = entity, at, gap_ms
        self.records: list[ProducerRecord] = []

    def __call__(self, event_type: str, **data: Any) -> None:
        self.at = self.producers.after(self.at, *self.gap_ms)
        self.records.append(
            self.producers.node_event(
                self.role, self.namespace, event_type, self.at, {**self.entity, **data}
            )
        )


@dataclass
class Scenario:
    """The records of one producer scenario, in the order sent, and the ids that tie them."""

    records: list[ProducerRecord]
    ids: dict[str, Any] = field(default_factory=dict)

    def of(self, event_type: str) -> list[ProducerRecord]:
        """The records whose wire event_type is ``event_type``, in the order sent."""
        return [r for r in self.records if r.event_type == event_type]

    def one(self, event_type: str) -> ProducerRecord:
        (record,) = self.of(event_type)
        return record


class Producers:
    """Every producer of the platform, deterministic for a seed.

    One instance stands for one deployment: one orchestrator, one reducer, one registry, one
    stamping service instance, one FSM effect node and one intelligence adapter, each with
    its own ids, so a node's introspection matches the node id its events carry.
    """

    def __init__(self, seed: int = 0) -> None:
        # Fixture data, not secrets: a seeded PRNG, under a name of its own.
        self.rng = random.Random(f"omninode-producers/{seed}")  # noqa: S311
        self.orchestrator_id = self.uuid()
        self.reducer_id = self.uuid()
        self.registry_id = f"registry-{self.hex(8)}"
        self.stamping_instance = f"metadata-stamping-{self.rng.randint(7, 32767)}"
        self.effect_node_id = f"kafka-event-effect-{self.hex(8)}"
        self.adapter_instance = f"intelligence-adapter-{self.hex(8)}"
        self._files = 0

    # -- ids, times, content --------------------------------------------------------------

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def hex(self, digits: int) -> str:
        return f"{self.rng.getrandbits(4 * digits):0{digits}x}"

    def after(self, at: datetime, low_ms: float = 1, high_ms: float = 40) -> datetime:
        """A moment between ``low_ms`` and ``high_ms`` after ``at``, to the microsecond."""
        return at + timedelta(
            microseconds=self.rng.randint(int(low_ms * 1000), int(high_ms * 1000))
        )

    def _soon(self, at: datetime) -> datetime:
        # the few microseconds between a producer's own timestamp and its envelope's
        return self.after(at, 0.02, 0.4)

    def ms(self, low: float, high: float) -> float:
        """A measured duration in milliseconds, unrounded as perf_counter gives it."""
        return self.rng.uniform(low, high)

    def document(self) -> tuple[str, str]:
        """A new file: (content, path), with non-ASCII text as real documents have."""
        self._files += 1
        n = self._files
        content = f"# Résumé {n}\n\nNaïve café notes {self.hex(12)} ☕\n"
        return content, f"/data/docs/résumé-{n}-{self.hex(4)}.md"

    # -- records --------------------------------------------------------------------------

    def _record(
        self, topic: str, key: str | None, envelope: dict[str, Any], at: datetime
    ) -> ProducerRecord:
        return ProducerRecord(
            topic,
            None if key is None else key.encode("utf-8"),
            encode(envelope),
            uuid.UUID(envelope["event_id"]),
            envelope["event_type"],
            at,
        )

    def _bridge(
        self,
        topic: str,
        event_type: str,
        at: datetime,
        payload: dict[str, Any],
        metadata: dict[str, Any],
        *,
        source_node_id: str,
        correlation_id: str | None = None,
        partition_key: str | None = None,
        source_instance: str | None = None,
    ) -> ProducerRecord:
        """A ModelOnexEnvelopeV1 through the bridge KafkaClient."""
        event_id = self.uuid()
        envelope = bridge_envelope(
            event_type,
            payload,
            event_id=event_id,
            at=at,
            source_node_id=source_node_id,
            correlation_id=correlation_id,
            partition_key=partition_key,
            metadata=metadata,
            source_instance=source_instance,
        )
        key = partition_key or correlation_id or source_node_id or event_id
        return self._record(topic, key, envelope, at)

    def node_event(
        self,
        role: NodeType,
        namespace: str,
        event_type: str,
        at: datetime,
        data: dict[str, Any],
    ) -> ProducerRecord:
        """An orchestrator or reducer event: the data (its ``timestamp`` is ``at``, placed
        where the data declares it, else last), then node_id and published_at."""
        node_id = self.orchestrator_id if role == "orchestrator" else self.reducer_id
        correlation_id = data.get("workflow_id") or data["aggregation_id"]
        data = dict(data)
        data["timestamp"] = iso(at)
        published = self._soon(at)
        payload = {**data, "node_id": node_id, "published_at": iso(published)}
        category = "workflow_orchestration" if role == "orchestrator" else "metadata_aggregation"
        metadata = {
            "event_category": category,
            "node_type": role,
            "namespace": namespace,
            "consul_service_id": f"omninode-bridge-{role}-{node_id}",
        }
        return self._bridge(
            bridge_topic(namespace, event_type),
            event_type,
            self._soon(published),
            payload,
            metadata,
            source_node_id=node_id,
            correlation_id=correlation_id,
        )

    # -- the bridge orchestrator ----------------------------------------------------------

    def legacy_workflow(
        self,
        at: datetime,
        *,
        namespace: str = DEV,
        intelligence: bool = False,
        fail_at: str | None = None,
        content: str | None = None,
    ) -> Scenario:
        """A legacy (synchronous) stamping workflow. ``fail_at``: the step_id that raises
        (it publishes nothing; the workflow then fails). ``content``: the file stamped."""
        steps = [VALIDATE_STEP, *([INTELLIGENCE_STEP] if intelligence else []), HASH_STEP]
        steps.append(STAMP_STEP)
        if fail_at is not None and fail_at not in {step_id for step_id, _ in steps}:
            raise ValueError(f"no step {fail_at!r} in this workflow")
        wid = self.uuid()
        file_hash = content_hash(content if content is not None else self.document()[0])
        stamp_id = self.uuid()
        ids: dict[str, Any] = {"workflow_id": wid, "namespace": namespace, "steps": []}
        send = _Emitter(self, "orchestrator", namespace, {"workflow_id": wid}, at)
        send("workflow_state_transition", from_state="pending", to_state="processing")
        send("stamp_workflow_started", timestamp=None, state="processing", mode="legacy")
        for step_id, step_type in steps:
            if step_id == fail_at:
                send("workflow_state_transition", from_state="processing", to_state="failed")
                send(
                    "stamp_workflow_failed",
                    error=f"Workflow step {step_id} failed: metadata stamping service timed out",
                    error_type="OnexError",
                )
                return Scenario(send.records, ids)
            if (step_id, step_type) == INTELLIGENCE_STEP:
                send("onextree_intelligence_requested")
                send("onextree_intelligence_received", analysis_time_ms=self.ms(40, 450))
            elif (step_id, step_type) == HASH_STEP:
                send("blake3_hash_generated", file_hash=file_hash, generation_time_ms=self.ms(1, 9))
                ids["file_hash"] = file_hash
            elif (step_id, step_type) == STAMP_STEP:
                send("metadata_stamp_created", stamp_id=stamp_id, creation_time_ms=self.ms(0, 2))
                ids["stamp_id"] = stamp_id
            send("workflow_step_completed", step_type=step_type, step_id=step_id)
            ids["steps"].append(step_id)
        send("workflow_state_transition", from_state="processing", to_state="completed")
        send(
            "stamp_workflow_completed", stamp_id=stamp_id, file_hash=file_hash, namespace=namespace
        )
        return Scenario(send.records, ids)

    def event_driven_workflow(
        self, at: datetime, *, namespace: str = DEV, outcome: Outcome = "completed"
    ) -> Scenario:
        """An event-driven workflow: STARTED, the ACTION on the EventBus's ``dev`` topic (its
        inner payload holds the input and the orchestrator's namespace), then the outcome."""
        wid = self.uuid()
        content, file_path = self.document()
        input_data = {"content": content, "file_path": file_path}
        send = _Emitter(self, "orchestrator", namespace, {"workflow_id": wid}, at)
        send("workflow_state_transition", from_state="pending", to_state="processing")
        send("stamp_workflow_started", timestamp=None, mode="event_driven")
        send.at = self.after(send.at)
        action = {
            "correlation_id": wid,
            "action_type": "ORCHESTRATE_WORKFLOW",
            "payload": {
                "workflow_id": wid,
                "input_data": input_data,
                "namespace": namespace,
                "workflow_type": "metadata_stamping",
            },
            "timestamp": iso(send.at),
            "source_node": self.orchestrator_id,
        }
        send.records.append(
            self._bridge(
                bridge_topic(DEV, "action"),
                "ACTION",
                self._soon(send.at),
                action,
                {"action_type": "ORCHESTRATE_WORKFLOW", "namespace": DEV},
                source_node_id=self.orchestrator_id,
                correlation_id=wid,
            )
        )
        if outcome == "completed":
            send("workflow_state_transition", from_state="processing", to_state="completed")
            send("stamp_workflow_completed", processing_time_ms=self.ms(80, 2500))
        else:
            send("workflow_state_transition", from_state="processing", to_state="failed")
            if outcome == "timeout":
                send("stamp_workflow_failed", error=TIMEOUT_ERROR, error_type="TimeoutError")
            else:
                send(
                    "stamp_workflow_failed",
                    error="Reducer gave up: store unavailable",
                    retry_count=3,
                )
        ids = {"workflow_id": wid, "namespace": namespace, "input_data": input_data}
        return Scenario(send.records, ids)

    # -- the bridge reducer ---------------------------------------------------------------

    def aggregation(
        self, at: datetime, *, namespace: str = DEV, batches: int = 2, failed: bool = False
    ) -> Scenario:
        """One aggregation: started, ``batches`` batches, then persisted and completed, or
        failed."""
        agg = self.uuid()
        send = _Emitter(self, "reducer", namespace, {"aggregation_id": agg}, at, gap_ms=(5, 120))
        batch_size = 100
        send(
            "aggregation_started",
            aggregation_type="namespace_grouping",
            batch_size=batch_size,
            window_size_ms=5000,
        )
        total = 0
        for number in range(1, batches + 1):
            size = self.rng.randint(10, batch_size)
            total += size
            send(
                "batch_processed", batch_number=number, batch_size=size, total_items_processed=total
            )
        duration_ms = self.ms(20, 4000)
        if failed:
            send(
                "aggregation_failed",
                error_type="DatabaseConnectionError",
                error_message="connection to the state store was refused",
                duration_ms=duration_ms,
                aggregation_type="namespace_grouping",
            )
        else:
            namespaces = self.rng.randint(1, 4)
            send("state_persisted", namespaces_count=namespaces, workflows_count=total)
            send(
                "aggregation_completed",
                total_items=total,
                batches_processed=batches,
                total_size_bytes=total * self.rng.randint(200, 9000),
                duration_ms=duration_ms,
                items_per_second=total / (duration_ms / 1000),
                namespaces_count=namespaces,
            )
        return Scenario(send.records, {"aggregation_id": agg, "namespace": namespace})

    # -- the registry and the nodes' own events -------------------------------------------

    def registry_rebroadcast(self, at: datetime) -> Scenario:
        """The registry asking every node to introspect again, at its start."""
        payload: dict[str, Any] = {
            "registry_id": self.registry_id,
            "request_timestamp": iso(at),
            "reason": "startup_rebroadcast",
            "target_node_types": None,
            "response_timeout_ms": 5000,
            "metadata": {},
            "correlation_id": None,
        }
        metadata = {
            "event_category": "registry_management",
            "node_type": "effect",
            "registry_id": self.registry_id,
        }
        event_type = "registry-request-introspection"
        record = self._bridge(
            bridge_topic(DEV, event_type),
            event_type,
            self._soon(at),
            payload,
            metadata,
            source_node_id=self.registry_id,
            correlation_id=self.uuid(),
        )
        return Scenario([record], {"registry_id": self.registry_id})

    def node(
        self,
        at: datetime,
        node_type: NodeType,
        *,
        node_id: str | None = None,
        version: str = "1.0.0",
        health: Sequence[str] = ("healthy",),
    ) -> Scenario:
        """A node's introspection at ``at``, then one heartbeat every 30 s per ``health``."""
        node_id = node_id or (
            self.orchestrator_id if node_type == "orchestrator" else self.reducer_id
        )
        host = f"omninode-bridge-{node_type}"
        port = 8060 if node_type == "orchestrator" else 8061
        fsm_states = (
            ["pending", "processing", "completed", "failed"]
            if node_type == "orchestrator"
            else ["idle", "aggregating", "persisting", "completed", "failed"]
        )
        operations = (
            ["stamp_workflow", "event_driven_workflow"]
            if node_type == "orchestrator"
            else ["namespace_grouping", "state_persistence"]
        )
        capabilities = {
            "node_type": node_type,
            "supported_operations": operations,
            "resource_limits": {"cpu_cores": 2, "memory_mb": 1024, "max_concurrent": 100},
            "fsm_states": fsm_states,
        }
        endpoints = {
            "health": f"http://{host}:{port}/health",
            "api": f"http://{host}:{port}",
            "metrics": f"http://{host}:{port}/metrics",
        }
        deployment_id = "dev-local-001"
        payload: dict[str, Any] = {
            "node_id": node_id,
            "node_type": node_type,
            "node_role": node_type,
            "capabilities": capabilities,
            "endpoints": endpoints,
            "metadata": {"version": version, "environment": "development"},
            "timestamp": iso(at),
            "correlation_id": None,
            "network_id": "omninode-bridge-network",
            "deployment_id": deployment_id,
            "epoch": 1,
        }
        metadata = {
            "node_type": node_type,
            "capabilities_count": len(capabilities),
            "endpoints_count": len(endpoints),
            "deployment_id": deployment_id,
            "epoch": 1,
        }
        sent = [("node_introspection", at, payload, metadata)]
        for beat, status in enumerate(health, 1):
            t = at + timedelta(seconds=30 * beat, microseconds=self.rng.randint(0, 999_999))
            active = self.rng.randint(0, 12)
            payload = {
                "node_id": node_id,
                "node_type": node_type,
                "health_status": status,
                "uptime_seconds": 30 * beat,
                "last_activity_timestamp": iso(
                    t - timedelta(milliseconds=self.rng.randint(5, 900))
                ),
                "active_operations": active,
                "resource_usage": {
                    "cpu_percent": round(self.rng.uniform(1, 95), 1),
                    "memory_mb": self.rng.randint(120, 900),
                },
                "metadata": {"version": version},
                "timestamp": iso(t),
                "correlation_id": None,
            }
            metadata = {
                "node_type": node_type,
                "health_status": status,
                "uptime_seconds": 30 * beat,
                "active_operations": active,
            }
            sent.append(("node_heartbeat", t, payload, metadata))
        # partition_key and source_instance are the node id, so the node id is the key
        records = [
            self._bridge(
                bridge_topic(DEV, event_type),
                event_type,
                self._soon(t),
                payload,
                metadata,
                source_node_id=node_id,
                partition_key=node_id,
                source_instance=node_id,
            )
            for event_type, t, payload, metadata in sent
        ]
        return Scenario(records, {"node_id": node_id, "node_type": node_type, "version": version})

    # -- the metadata-stamping service ----------------------------------------------------

    def _stamping(
        self,
        event_type: str,
        at: datetime,
        payload: dict[str, Any],
        *,
        partition_key: str,
        instance: str | None,
        correlation_id: str | None,
    ) -> ProducerRecord:
        """The service's older envelope (``publish_raw_event``): ``timestamp``, no
        ``event_timestamp``, a security context, empty metadata."""
        envelope = {
            "envelope_version": "1.0",
            "event_id": self.uuid(),
            "event_type": event_type,
            "event_version": "1.0",
            "timestamp": iso(at),
            "correlation_id": correlation_id,
            "causation_id": None,
            "source_service": "metadata-stamping-service",
            "source_version": "0.1.0",
            "source_instance": instance or self.stamping_instance,
            "source_node": None,
            "environment": "development",
            "region": None,
            "partition_key": partition_key,
            "security_context": {
                "actor_id": "system",
                "session_id": "system",
                "security_level": "standard",
                "hmac_signature": None,
                "signing_key_id": None,
            },
            "payload": payload,
            "metadata": {},
        }
        return self._record(stamping_topic(event_type), partition_key, envelope, at)

    def stamp(
        self,
        at: datetime,
        *,
        content: str | None = None,
        file_path: str | None = None,
        instance: str | None = None,
        validate: bool = False,
    ) -> Scenario:
        """The service stamping one file (a new stamp_id every time, even for unchanged
        content), then validating the stamp when ``validate``."""
        if content is None or file_path is None:
            new_content, new_path = self.document()
            content, file_path = content or new_content, file_path or new_path
        file_hash = content_hash(content)
        stamp_id = self.uuid()
        correlation_id = self.uuid() if self.rng.random() < 0.5 else None
        t = self._soon(at)
        payload = {
            "stamp_id": stamp_id,
            "file_hash": file_hash,
            "file_path": file_path,
            "file_size_bytes": len(content.encode("utf-8")),
            "execution_time_ms": self.ms(0.3, 6),
            "hash_algorithm": "BLAKE3",
            "created_at": iso(at),
        }
        records = [
            self._stamping(
                "metadata.stamp.created",
                t,
                payload,
                partition_key=file_hash,
                instance=instance,
                correlation_id=correlation_id,
            )
        ]
        if validate:
            validated = self.after(t, 5, 400)
            payload = {
                "file_hash": file_hash,
                "validation_result": True,
                "validation_time_ms": self.ms(0.2, 4),
                "hash_algorithm": "BLAKE3",
                "validated_at": iso(validated),
            }
            records.append(
                self._stamping(
                    "metadata.stamp.validated",
                    self._soon(validated),
                    payload,
                    partition_key=file_hash,
                    instance=instance,
                    correlation_id=correlation_id,
                )
            )
        ids = {"stamp_id": stamp_id, "file_hash": file_hash, "file_path": file_path}
        return Scenario(records, {**ids, "file_size_bytes": len(content.encode("utf-8"))})

    def stamp_batch(
        self, at: datetime, *, total_files: int = 10, failed_files: int = 1
    ) -> Scenario:
        """The service's summary of one batch stamping request."""
        batch_id = self.uuid()
        total_ms = self.ms(total_files * 0.5, total_files * 6)
        payload = {
            "batch_id": batch_id,
            "total_files": total_files,
            "successful_files": total_files - failed_files,
            "failed_files": failed_files,
            "success_rate": (total_files - failed_files) / total_files,
            "total_processing_time_ms": total_ms,
            "average_processing_time_ms": total_ms / total_files,
            "processed_at": iso(at),
        }
        record = self._stamping(
            "metadata.batch.processed",
            self._soon(at),
            payload,
            partition_key=batch_id,
            instance=None,
            correlation_id=None,
        )
        return Scenario([record], {"batch_id": batch_id})

    # -- omniintelligence -----------------------------------------------------------------

    def _effect(
        self, name: str, event_type: str, at: datetime, payload: dict[str, Any], correlation: str
    ) -> ProducerRecord:
        """A ``kafka_event_effect`` record: float epoch time, a source object, no metadata."""
        envelope = {
            "event_id": self.uuid(),
            "event_type": event_type,
            "correlation_id": correlation,
            "timestamp": at.timestamp(),
            "version": "1.0.0",
            "source": {
                "service": "omniintelligence",
                "node_type": "kafka_event_effect",
                "node_id": self.effect_node_id,
            },
            "payload": payload,
        }
        return self._record(f"{INTELLIGENCE_PREFIX}.{name}", correlation, envelope, at)

    def fsm_walk(
        self, at: datetime, fsm_type: str, actions: Sequence[str], *, entity_id: str | None = None
    ) -> Scenario:
        """One entity of ``fsm_type`` taken through ``actions`` from its initial state: one
        FSM_STATE_CHANGED per transition, and an FSM_<state> on entering a terminal state."""
        initial, moves = FSMS[fsm_type]
        entity = entity_id or f"doc_{self.rng.randint(1, 999):03d}_{self.hex(6)}"
        correlation = self.uuid()
        action_payload = {"source_path": f"docs/{entity}.md", "requested_by": "intelligence-api"}
        records: list[ProducerRecord] = []
        walk: list[tuple[str, str, str]] = []
        state, t = initial, at
        for action in actions:
            target = moves.get((state, action))
            if target is None:
                raise ValueError(f"{fsm_type} has no {action} from {state}")
            t = self.after(t, 2, 300)
            payload = {
                "fsm_type": fsm_type,
                "entity_id": entity,
                "previous_state": state,
                "current_state": target,
                "action": action,
                "transition_timestamp": iso(t),
                **action_payload,
            }
            records.append(
                self._effect("fsm.state.changed.v1", "FSM_STATE_CHANGED", t, payload, correlation)
            )
            walk.append((state, action, target))
            if target in TERMINAL_STATES:
                t = self._soon(t)
                outcome = "failed" if target == "FAILED" else "completed"
                payload = {
                    "fsm_type": fsm_type,
                    "entity_id": entity,
                    "previous_state": state,
                    "current_state": target,
                    **action_payload,
                }
                name = f"{fsm_type.lower()}.{outcome}.v1"
                records.append(self._effect(name, f"FSM_{target}", t, payload, correlation))
            state = target
        return Scenario(records, {"fsm_type": fsm_type, "entity_id": entity, "walk": walk})

    def code_analysis(self, at: datetime, *, failed: bool = False) -> Scenario:
        """The intelligence adapter's answer to one code-analysis request: no key, no
        metadata."""
        outcome = "failed" if failed else "completed"
        source_path = f"src/services/módulo_{self.hex(4)}.py"
        processing_ms = self.ms(15, 3000)
        if failed:
            message = "Language not supported for analysis: cobol"
            payload: dict[str, Any] = {
                "operation_type": "COMPREHENSIVE_ANALYSIS",
                "source_path": source_path,
                "error_message": message,
                "error_code": "UNSUPPORTED_LANGUAGE",
                "retry_allowed": True,
                "retry_count": 0,
                "processing_time_ms": processing_ms,
                "error_details": {"error": message},
                "suggested_action": SUGGESTED_ACTION,
            }
        else:
            issues = self.rng.randint(0, 14)
            payload = {
                "source_path": source_path,
                "quality_score": round(self.rng.uniform(0.4, 0.99), 4),
                "onex_compliance": round(self.rng.uniform(0.3, 1.0), 4),
                "issues_count": issues,
                "recommendations_count": self.rng.randint(0, issues + 3),
                "processing_time_ms": processing_ms,
                "operation_type": "COMPREHENSIVE_ANALYSIS",
                "complexity_score": round(self.rng.uniform(0.1, 0.9), 4),
                "maintainability_score": round(self.rng.uniform(0.3, 0.95), 4),
                "results_summary": {"language": "python", "functions": self.rng.randint(1, 40)},
                "cache_hit": self.rng.random() < 0.3,
            }
        envelope = {
            "event_id": self.uuid(),
            "event_type": f"omninode.intelligence.event.code_analysis_{outcome}.v1",
            "correlation_id": self.uuid(),
            "causation_id": self.uuid(),
            "timestamp": iso(at),
            "version": "1.0.0",
            "source": {
                "service": "archon-intelligence",
                "instance_id": self.adapter_instance,
                "hostname": None,
            },
            "metadata": None,
            "payload": payload,
        }
        topic = f"{INTELLIGENCE_PREFIX}.intelligence.code-analysis-{outcome}.v1"
        return Scenario([self._record(topic, None, envelope, at)], {"source_path": source_path})


# The FSM walks the demo cycles through: (fsm_type, actions).
WALKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("INGESTION", ("START_PROCESSING", "COMPLETE_INDEXING")),
    ("PATTERN_LEARNING", ("ADVANCE_TO_MATCHING", "ADVANCE_TO_VALIDATION", "FAIL", "RETRY")),
    ("QUALITY_ASSESSMENT", ("START_ASSESSMENT", "COMPLETE_SCORING", "STORE_RESULTS")),
    ("INGESTION", ("START_PROCESSING", "FAIL", "RETRY", "COMPLETE_INDEXING", "REINDEX")),
    (
        "PATTERN_LEARNING",
        (
            "ADVANCE_TO_MATCHING",
            "ADVANCE_TO_VALIDATION",
            "ADVANCE_TO_TRACEABILITY",
            "COMPLETE_LEARNING",
        ),
    ),
    ("QUALITY_ASSESSMENT", ("START_ASSESSMENT", "FAIL", "RETRY", "COMPLETE_SCORING")),
)
# Odd lengths, so each outcome lands on both namespaces the demo alternates.
OUTCOMES: tuple[Outcome, ...] = ("completed", "completed", "failed", "completed", "timeout")


def stream(events: int = 10_000, *, seed: int = 0, duplicate_share: float = 0.02) -> Stream:
    """At least ``events`` distinct events of every producer, as they arrive: each producer's
    per-key order kept, topics interleaved at random (a workflow's ACTION or a stamp can
    arrive before its STARTED), and ``duplicate_share`` of the records sent twice."""
    p = Producers(seed)
    records: list[ProducerRecord] = [*p.registry_rebroadcast(BASE_TIME).records]
    last_file: tuple[str, str] | None = None
    unit = 0
    while len(records) < events:
        at = BASE_TIME + timedelta(seconds=10 * unit, microseconds=p.rng.randint(0, 999_999))
        shipped = unit % 2 == 1
        scenarios = [
            p.legacy_workflow(
                at,
                namespace=ORCHESTRATOR_NAMESPACE if shipped else DEV,
                intelligence=unit % 3 == 0,
                fail_at="hash_generation" if unit % 7 == 5 else None,
            ),
            p.event_driven_workflow(
                p.after(at, 50, 900),
                namespace=DEV if shipped else ORCHESTRATOR_NAMESPACE,
                outcome=OUTCOMES[unit % len(OUTCOMES)],
            ),
            p.aggregation(
                p.after(at, 100, 2000),
                namespace=REDUCER_NAMESPACE if shipped else DEV,
                batches=1 + unit % 3,
                failed=unit % 9 == 7,
            ),
            p.fsm_walk(p.after(at, 10, 3000), *WALKS[unit % len(WALKS)]),
            p.code_analysis(p.after(at, 10, 9000), failed=unit % 4 == 3),
        ]
        content, path = p.document()
        scenarios.append(
            p.stamp(p.after(at, 10, 5000), content=content, file_path=path, validate=shipped)
        )
        if last_file is not None and unit % 3 == 2:
            # re-stamping unchanged content: a new stamp_id for the same file_hash
            scenarios.append(
                p.stamp(p.after(at, 5000, 9000), content=last_file[0], file_path=last_file[1])
            )
        if unit % 5 == 4:
            scenarios.append(p.stamp_batch(p.after(at, 10, 9000)))
        last_file = (content, path)
        records.extend(r for s in scenarios for r in s.records)
        unit += 1
    span = timedelta(seconds=10 * unit)
    beats = ["healthy"] * max(1, int(span.total_seconds() // 30))
    for n in range(len(beats) // 7, len(beats), 7):
        beats[n] = "degraded"
    for node_type in ("orchestrator", "reducer"):
        records.extend(p.node(BASE_TIME + timedelta(seconds=1), node_type, health=beats).records)
    arrived: list[Record] = list(interleave(records, p.rng, duplicate_share))
    return Stream(arrived)
