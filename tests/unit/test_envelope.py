from __future__ import annotations

import json
import math
import pickle
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from handlers.base import Event
from handlers.envelope import (
    FOREIGN_ID_NAMESPACE,
    DecodeError,
    Envelope,
    EventType,
    decode,
    is_known,
    normalize_event_type,
)
from handlers.event_logs import metadata_of
from handlers.registry import resolve

MAX_BYTES = 1 << 20
EVENT_ID = "6f1c2b1e-1234-4567-89ab-0123456789ab"
CORRELATION_ID = "0b8e4a4c-3a0e-4f4e-9d65-1b9c3f6f2a10"
SESSION_ID = "5a1d9c2e-7f3b-4c8d-a1e2-93b4c5d6e7f8"
INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1

# The canonical types of the contract (section 3), written out here, independently of the enum.
CANONICAL = [
    "WORKFLOW_STARTED",
    "WORKFLOW_COMPLETED",
    "WORKFLOW_FAILED",
    "STEP_STARTED",
    "STEP_COMPLETED",
    "STEP_FAILED",
    "STATE_TRANSITION",
    "STAMP_CREATED",
    "HASH_GENERATED",
    "INTELLIGENCE_REQUESTED",
    "INTELLIGENCE_RECEIVED",
    "NODE_INTROSPECTION",
    "NODE_HEARTBEAT",
    "REGISTRY_REQUEST_INTROSPECTION",
    "AGGREGATION_STARTED",
    "AGGREGATION_COMPLETED",
    "AGGREGATION_FAILED",
    "BATCH_PROCESSED",
    "STATE_PERSISTED",
    "FSM_STATE_INITIALIZED",
    "FSM_STATE_TRANSITIONED",
    "FSM_STATE_TRANSITION",
    "LEASE_ACQUIRED",
    "LEASE_RELEASED",
    "INTELLIGENCE_WORKFLOW_STARTED",
    "INTELLIGENCE_WORKFLOW_STEP_COMPLETED",
    "INTELLIGENCE_WORKFLOW_COMPLETED",
    "INTELLIGENCE_WORKFLOW_FAILED",
    "ACTION",
    "STAMP_VALIDATED",
    "STAMP_BATCH_PROCESSED",
    "CODE_ANALYSIS_COMPLETED",
    "CODE_ANALYSIS_FAILED",
    "FSM_INDEXED",
    "FSM_COMPLETED",
    "FSM_STORED",
    "FSM_FAILED",
]

ALIASES = [
    # producers' enum values
    ("stamp_workflow_started", "WORKFLOW_STARTED"),
    ("stamp_workflow_completed", "WORKFLOW_COMPLETED"),
    ("stamp_workflow_failed", "WORKFLOW_FAILED"),
    ("workflow_step_completed", "STEP_COMPLETED"),
    ("workflow_step_started", "STEP_STARTED"),
    ("workflow_step_failed", "STEP_FAILED"),
    ("workflow_state_transition", "STATE_TRANSITION"),
    ("metadata_stamp_created", "STAMP_CREATED"),
    ("blake3_hash_generated", "HASH_GENERATED"),
    ("onextree_intelligence_requested", "INTELLIGENCE_REQUESTED"),
    ("onextree_intelligence_received", "INTELLIGENCE_RECEIVED"),
    ("node_introspection", "NODE_INTROSPECTION"),
    ("node_heartbeat", "NODE_HEARTBEAT"),
    ("registry_request_introspection", "REGISTRY_REQUEST_INTROSPECTION"),
    ("aggregation_started", "AGGREGATION_STARTED"),
    ("aggregation_completed", "AGGREGATION_COMPLETED"),
    ("aggregation_failed", "AGGREGATION_FAILED"),
    ("batch_processed", "BATCH_PROCESSED"),
    ("state_persisted", "STATE_PERSISTED"),
    ("fsm_state_initialized", "FSM_STATE_INITIALIZED"),
    ("fsm_state_transitioned", "FSM_STATE_TRANSITIONED"),
    ("fsm.state.changed", "FSM_STATE_TRANSITION"),
    ("lease_acquired", "LEASE_ACQUIRED"),
    ("intelligence_workflow_step_completed", "INTELLIGENCE_WORKFLOW_STEP_COMPLETED"),
    # dotted legacy names
    ("metadata.stamp.created", "STAMP_CREATED"),
    ("stamp.workflow.started", "WORKFLOW_STARTED"),
    ("blake3.hash.generated", "HASH_GENERATED"),
    ("node.heartbeat", "NODE_HEARTBEAT"),
    ("lease.released", "LEASE_RELEASED"),
    ("intelligence.workflow.failed", "INTELLIGENCE_WORKFLOW_FAILED"),
    # topic slugs
    ("stamp-workflow-started", "WORKFLOW_STARTED"),
    ("stamp-workflow-completed", "WORKFLOW_COMPLETED"),
    ("workflow-step-completed", "STEP_COMPLETED"),
    ("workflow-state-transition", "STATE_TRANSITION"),
    ("metadata-stamp-created", "STAMP_CREATED"),
    ("onextree-intelligence-requested", "INTELLIGENCE_REQUESTED"),
    ("registry-request-introspection", "REGISTRY_REQUEST_INTROSPECTION"),
    ("fsm-state-transitioned", "FSM_STATE_TRANSITIONED"),
    ("fsm.state.changed.v1", "FSM_STATE_TRANSITION"),
    ("stamp-workflow-failed.v2", "WORKFLOW_FAILED"),
    # case and surrounding whitespace
    ("Stamp_Workflow_Started", "WORKFLOW_STARTED"),
    ("METADATA.STAMP.CREATED", "STAMP_CREATED"),
    ("Fsm.State.Changed", "FSM_STATE_TRANSITION"),
    ("workflow_started", "WORKFLOW_STARTED"),
    ("Node-Introspection", "NODE_INTROSPECTION"),
    ("  hash_generated\n", "HASH_GENERATED"),
    ("aggregation.Completed", "AGGREGATION_COMPLETED"),
    # the producers' own names (/work/shared/design/producers.md)
    ("FSM_STATE_CHANGED", "FSM_STATE_TRANSITION"),
    ("metadata.stamp.validated", "STAMP_VALIDATED"),
    ("metadata.batch.processed", "STAMP_BATCH_PROCESSED"),
    ("metadata-batch-processed.v1", "STAMP_BATCH_PROCESSED"),
    (
        "omninode.intelligence.event.code_analysis_completed.v1",
        "CODE_ANALYSIS_COMPLETED",
    ),
    ("omninode.intelligence.event.code_analysis_failed.v1", "CODE_ANALYSIS_FAILED"),
]

WIRE_FIELDS = {
    "envelope_version",
    "event_id",
    "event_type",
    "event_version",
    "event_timestamp",
    "timestamp",
    "source_node_id",
    "source_service",
    "source_version",
    "source_instance",
    "correlation_id",
    "causation_id",
    "session_id",
    "environment",
    "region",
    "partition_key",
    "payload",
    "metadata",
}


def minimal(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": EVENT_ID,
        "event_type": "WORKFLOW_STARTED",
        "event_timestamp": "2025-10-15T12:00:00.123Z",
        "payload": {"workflow_id": "wf-1"},
    }
    event.update(overrides)
    return event


def encode(obj: object) -> bytes:
    return orjson.dumps(obj)


def decode_error(value: bytes | None, max_bytes: int = MAX_BYTES) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(value, max_bytes=max_bytes)
    return info.value


# --- event types ------------------------------------------------------------------------------


def test_event_type_enum_is_the_contract_table() -> None:
    assert [member.value for member in EventType] == CANONICAL
    assert all(member.name == member.value for member in EventType)


@pytest.mark.parametrize("name", CANONICAL)
def test_canonical_names_are_their_own_canonical_form(name: str) -> None:
    assert normalize_event_type(name) == name
    assert normalize_event_type(name.lower()) == name
    assert normalize_event_type(name.lower().replace("_", "-")) == name
    assert normalize_event_type(name.lower().replace("_", ".")) == name
    assert is_known(name)


@pytest.mark.parametrize(("alias", "canonical"), ALIASES)
def test_alias_normalises_to_canonical(alias: str, canonical: str) -> None:
    assert normalize_event_type(alias) == canonical
    assert is_known(alias)
    event = decode(encode(minimal(event_type=alias)), max_bytes=MAX_BYTES)
    assert event.event_type == canonical
    assert event.known_type is EventType(canonical)


@pytest.mark.parametrize(
    ("raw", "folded"),
    [
        ("my.custom-event", "MY_CUSTOM_EVENT"),
        ("Order_Placed", "ORDER_PLACED"),
        ("stamp-workflow-exploded", "STAMP_WORKFLOW_EXPLODED"),
        ("something.v3", "SOMETHING_V3"),
        ("workflow", "WORKFLOW"),
    ],
)
def test_unknown_type_is_kept_folded(raw: str, folded: str) -> None:
    assert normalize_event_type(raw) == folded
    assert not is_known(raw)
    event = decode(encode(minimal(event_type=raw)), max_bytes=MAX_BYTES)
    assert event.event_type == folded
    assert event.known_type is None


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("stamp_workflow_started", "stamp_workflow_started"),
        ("FSM_STATE_CHANGED", "FSM_STATE_CHANGED"),
        ("registry-request-introspection", "registry-request-introspection"),
        ("metadata.batch.processed", "metadata.batch.processed"),
        ("audit.recorded", "audit.recorded"),
        (" NODE_HEARTBEAT", " NODE_HEARTBEAT"),
        ("WORKFLOW_STARTED", None),
        ("FSM_INDEXED", None),
        ("AUDIT_RECORDED", None),
    ],
)
def test_the_type_as_sent_is_kept_when_it_is_not_the_stored_name(
    sent: str, kept: str | None
) -> None:
    event = decode(encode(minimal(event_type=sent)), max_bytes=MAX_BYTES)
    assert event.original_event_type == kept
    assert normalize_event_type(sent) == event.event_type


def test_a_refinement_by_topic_keeps_the_type_as_sent() -> None:
    sent = decode(encode(minimal(event_type="WORKFLOW_STARTED")), max_bytes=MAX_BYTES)
    refined = resolve(sent, "dev.archon-intelligence.workflow.events.v1")
    assert refined.event_type == "INTELLIGENCE_WORKFLOW_STARTED"
    assert refined.original_event_type == "WORKFLOW_STARTED"
    alias = decode(encode(minimal(event_type="workflow.started")), max_bytes=MAX_BYTES)
    assert resolve(alias, "dev.archon-intelligence.x.v1").original_event_type == (
        "workflow.started"
    )


def test_the_type_as_sent_is_derived_never_read_from_the_wire() -> None:
    event = decode(
        encode(minimal(event_type="WORKFLOW_STARTED", original_event_type="spoof")),
        max_bytes=MAX_BYTES,
    )
    assert event.original_event_type is None
    assert event.extra == {"original_event_type": "spoof"}


# --- what the producers send (/work/shared/design/producers.md) --------------------------------


def producer_bytes(wire: dict[str, Any]) -> bytes:
    """The value as the producers encode it: Python's json with its default settings."""
    return json.dumps(wire).encode()


def logged_metadata(envelope: Envelope, topic: str) -> dict[str, Any]:
    return metadata_of(Event(resolve(envelope, topic), topic, 0, 7))


def bridge_wire(event_type: str, payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """ModelOnexEnvelopeV1.model_dump(mode="json"), its fields in declaration order."""
    wire: dict[str, Any] = {
        "envelope_version": "1.0",
        "event_id": EVENT_ID,
        "event_type": event_type,
        "event_version": "1.0",
        "event_timestamp": "2025-11-13T09:00:07.522135+00:00",
        "source_node_id": "orchestrator-1",
        "source_service": "omninode-bridge",
        "source_version": "1.0.0",
        "source_instance": None,
        "correlation_id": CORRELATION_ID,
        "causation_id": None,
        "environment": "development",
        "region": None,
        "partition_key": None,
        "payload": payload,
        "metadata": {},
    }
    wire.update(fields)
    return wire


def test_the_bridge_envelope() -> None:
    wire = bridge_wire(
        "ACTION",
        {"correlation_id": CORRELATION_ID, "action_type": "ORCHESTRATE_WORKFLOW"},
        metadata={"action_type": "ORCHESTRATE_WORKFLOW", "namespace": "dev"},
    )
    event = decode(producer_bytes(wire), max_bytes=MAX_BYTES)
    assert event.event_timestamp == datetime(2025, 11, 13, 9, 0, 7, 522135, tzinfo=UTC)
    assert event.correlation_id == uuid.UUID(CORRELATION_ID)
    assert event.extra == {}
    assert event.known_type is EventType.ACTION
    meta = logged_metadata(event, "dev.omninode_bridge.onex.evt.action.v1")
    assert meta["namespace"] == "dev"
    assert meta["source_service"] == "omninode-bridge"
    assert "original_event_type" not in meta


def test_the_registry_rebroadcast_is_its_canonical_type() -> None:
    wire = bridge_wire(
        "registry-request-introspection",
        {
            "registry_id": "registry-1a2b3c4d",
            "request_timestamp": "2025-11-13T09:00:07.522135+00:00",
            "reason": "startup_rebroadcast",
            "target_node_types": None,
            "response_timeout_ms": 5000,
            "metadata": {},
            "correlation_id": None,
        },
        source_node_id="registry-1a2b3c4d",
        metadata={
            "event_category": "registry_management",
            "node_type": "effect",
            "registry_id": "registry-1a2b3c4d",
        },
    )
    event = decode(producer_bytes(wire), max_bytes=MAX_BYTES)
    assert event.known_type is EventType.REGISTRY_REQUEST_INTROSPECTION
    meta = logged_metadata(event, "dev.omninode_bridge.onex.evt.registry-request-introspection.v1")
    assert meta["original_event_type"] == "registry-request-introspection"


@pytest.mark.parametrize(
    ("sent", "canonical", "payload"),
    [
        (
            "metadata.stamp.validated",
            EventType.STAMP_VALIDATED,
            {
                "file_hash": "ab" * 32,
                "validation_result": True,
                "validation_time_ms": 1.25,
                "hash_algorithm": "BLAKE3",
                "validated_at": "2025-11-13T09:00:07.522135+00:00",
            },
        ),
        (
            "metadata.batch.processed",
            EventType.STAMP_BATCH_PROCESSED,
            {
                "batch_id": "batch-7",
                "total_files": 3,
                "successful_files": 3,
                "failed_files": 0,
                "success_rate": 1.0,
                "total_processing_time_ms": 12.5,
                "average_processing_time_ms": 4.1666,
                "processed_at": "2025-11-13T09:00:07.522135+00:00",
            },
        ),
    ],
)
def test_the_stamping_services_envelope(
    sent: str, canonical: EventType, payload: dict[str, Any]
) -> None:
    wire = {
        "envelope_version": "1.0",
        "event_id": EVENT_ID,
        "event_type": sent,
        "event_version": "1.0",
        "timestamp": "2025-11-13T09:00:07+00:00",
        "correlation_id": None,
        "causation_id": None,
        "source_service": "metadata-stamping-service",
        "source_version": "0.1.0",
        "source_instance": "metadata-stamping-4242",
        "source_node": None,
        "environment": "development",
        "region": None,
        "partition_key": "ab" * 32,
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
    event = decode(producer_bytes(wire), max_bytes=MAX_BYTES)
    assert event.known_type is canonical
    assert event.event_timestamp == datetime(2025, 11, 13, 9, 0, 7, tzinfo=UTC)
    assert event.extra == {"source_node": None, "security_context": wire["security_context"]}
    slug = sent.replace(".", "-")
    meta = logged_metadata(event, f"dev.omninode-bridge.metadata.{slug}.v1")
    assert meta["original_event_type"] == sent
    assert event.payload == payload


def intelligence_fsm_wire(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """kafka_event_effect's envelope: a float epoch timestamp, a nested source, no metadata."""
    return {
        "event_id": EVENT_ID,
        "event_type": event_type,
        "correlation_id": CORRELATION_ID,
        "timestamp": 1763024416.7902794,
        "version": "1.0.0",
        "source": {
            "service": "omniintelligence",
            "node_type": "kafka_event_effect",
            "node_id": "effect-1",
        },
        "payload": payload,
    }


@pytest.mark.parametrize(
    ("sent", "canonical", "topic"),
    [
        ("FSM_STATE_CHANGED", EventType.FSM_STATE_TRANSITION, "fsm.state.changed.v1"),
        ("FSM_INDEXED", EventType.FSM_INDEXED, "ingestion.completed.v1"),
        ("FSM_COMPLETED", EventType.FSM_COMPLETED, "pattern_learning.completed.v1"),
        ("FSM_STORED", EventType.FSM_STORED, "quality_assessment.completed.v1"),
        ("FSM_FAILED", EventType.FSM_FAILED, "pattern_learning.failed.v1"),
    ],
)
def test_the_intelligence_fsm_envelope(sent: str, canonical: EventType, topic: str) -> None:
    payload = {
        "fsm_type": "PATTERN_LEARNING",
        "entity_id": "doc_005_d8dbc7",
        "previous_state": "TRACEABILITY",
        "current_state": "COMPLETED",
    }
    event = decode(producer_bytes(intelligence_fsm_wire(sent, payload)), max_bytes=MAX_BYTES)
    assert event.known_type is canonical
    # time.time()'s float: seconds since the epoch, to the microsecond.
    assert event.event_timestamp == datetime(2025, 11, 13, 9, 0, 16, 790279, tzinfo=UTC)
    assert event.metadata == {}
    meta = logged_metadata(event, f"dev.archon-intelligence.{topic}")
    assert meta["envelope_extra"] == {
        "version": "1.0.0",
        "source": {
            "service": "omniintelligence",
            "node_type": "kafka_event_effect",
            "node_id": "effect-1",
        },
    }
    assert meta.get("original_event_type") == (None if sent == canonical else sent)


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_the_intelligence_adapters_envelope(outcome: str) -> None:
    sent = f"omninode.intelligence.event.code_analysis_{outcome}.v1"
    wire = {
        "event_id": EVENT_ID,
        "event_type": sent,
        "correlation_id": CORRELATION_ID,
        "causation_id": "9c5e0d7a-1b2c-4d3e-8f4a-5b6c7d8e9f00",
        "timestamp": "2025-11-13T09:00:07.522135+00:00",
        "version": "1.0.0",
        "source": {
            "service": "archon-intelligence",
            "instance_id": "intelligence-adapter-1a2b3c4d",
            "hostname": None,
        },
        "metadata": None,
        "payload": {"source_path": "src/a.py", "processing_time_ms": 12.345678},
    }
    event = decode(producer_bytes(wire), max_bytes=MAX_BYTES)
    assert event.event_type == f"CODE_ANALYSIS_{outcome.upper()}"
    assert event.known_type is not None
    topic = f"dev.archon-intelligence.intelligence.code-analysis-{outcome}.v1"
    meta = logged_metadata(event, topic)
    assert meta["original_event_type"] == sent
    assert meta["causation_id"] == "9c5e0d7a-1b2c-4d3e-8f4a-5b6c7d8e9f00"
    assert meta["envelope_extra"]["source"]["instance_id"] == "intelligence-adapter-1a2b3c4d"


@pytest.mark.parametrize("text", ["doc_005_d8dbc7", "registry-1a2b3c4d", "metadata-stamping-1"])
def test_a_non_uuid_correlation_is_a_stable_uuid_and_its_text_is_logged(text: str) -> None:
    wire = intelligence_fsm_wire("FSM_STATE_CHANGED", {})
    wire["correlation_id"] = text
    wire["session_id"] = f"session-{text}"
    event = decode(producer_bytes(wire), max_bytes=MAX_BYTES)
    assert event.correlation_id == uuid.uuid5(FOREIGN_ID_NAMESPACE, text)
    assert event.session_id == uuid.uuid5(FOREIGN_ID_NAMESPACE, f"session-{text}")
    meta = logged_metadata(event, "dev.archon-intelligence.fsm.state.changed.v1")
    assert meta["original_correlation_id"] == text
    assert meta["original_session_id"] == f"session-{text}"
    # A UUID is stored as sent: nothing to keep.
    uuid_event = decode(
        producer_bytes(intelligence_fsm_wire("FSM_INDEXED", {})), max_bytes=MAX_BYTES
    )
    assert "original_correlation_id" not in logged_metadata(
        uuid_event, "dev.archon-intelligence.x.v1"
    )


# --- valid envelopes ----------------------------------------------------------------------------


def test_full_envelope_decodes_every_field() -> None:
    wire = {
        "envelope_version": "1.0",
        "event_id": EVENT_ID,
        "event_type": "stamp_workflow_completed",
        "event_version": "1.1",
        "event_timestamp": "2025-10-15T12:00:00.123+02:00",
        "source_node_id": "orchestrator-1",
        "source_service": "omninode-bridge",
        "source_version": "1.0.0",
        "source_instance": "pod-7",
        "correlation_id": CORRELATION_ID,
        "causation_id": "evt-41",
        "session_id": SESSION_ID,
        "environment": "dev",
        "region": None,
        "partition_key": "wf-1",
        "payload": {"workflow_id": "wf-1", "nested": {"list": [1, 2.5, True, None, "x"]}},
        "metadata": {"trace": "abc"},
    }
    event = decode(encode(wire), max_bytes=MAX_BYTES)
    assert event.event_id == uuid.UUID(EVENT_ID)
    assert event.event_type == "WORKFLOW_COMPLETED"
    assert event.event_timestamp == datetime(2025, 10, 15, 10, 0, 0, 123000, tzinfo=UTC)
    assert event.event_timestamp.utcoffset() == timedelta(0)
    assert event.envelope_version == "1.0"
    assert event.event_version == "1.1"
    assert event.source_node_id == "orchestrator-1"
    assert event.source_service == "omninode-bridge"
    assert event.source_version == "1.0.0"
    assert event.source_instance == "pod-7"
    assert event.correlation_id == uuid.UUID(CORRELATION_ID)
    assert event.original_correlation_id is None
    assert event.causation_id == "evt-41"
    assert event.session_id == uuid.UUID(SESSION_ID)
    assert event.original_session_id is None
    assert event.environment == "dev"
    assert event.region is None
    assert event.partition_key == "wf-1"
    assert event.payload == wire["payload"]
    assert event.metadata == {"trace": "abc"}
    assert event.extra == {}


def test_minimal_envelope_defaults() -> None:
    event = decode(encode(minimal()), max_bytes=MAX_BYTES)
    assert event.metadata == {}
    assert event.extra == {}
    assert event.correlation_id is None
    assert event.session_id is None
    assert event.source_node_id is None


def test_envelope_is_frozen() -> None:
    event = decode(encode(minimal()), max_bytes=MAX_BYTES)
    with pytest.raises(ValueError, match="frozen"):
        event.event_type = "OTHER"  # type: ignore[misc]


def test_legacy_timestamp_field() -> None:
    wire = minimal()
    del wire["event_timestamp"]
    wire["timestamp"] = "2025-10-15T12:00:00Z"
    event = decode(encode(wire), max_bytes=MAX_BYTES)
    assert event.event_timestamp == datetime(2025, 10, 15, 12, tzinfo=UTC)
    assert "timestamp" not in event.extra


def test_null_event_timestamp_falls_back_to_legacy_timestamp() -> None:
    wire = minimal(event_timestamp=None, timestamp="2025-10-15T12:00:00Z")
    event = decode(encode(wire), max_bytes=MAX_BYTES)
    assert event.event_timestamp == datetime(2025, 10, 15, 12, tzinfo=UTC)
    assert event.extra == {}


def test_event_timestamp_wins_over_timestamp_which_is_kept() -> None:
    wire = minimal(event_timestamp="2025-10-15T12:00:00Z", timestamp="1999-01-01T00:00:00Z")
    event = decode(encode(wire), max_bytes=MAX_BYTES)
    assert event.event_timestamp == datetime(2025, 10, 15, 12, tzinfo=UTC)
    assert event.extra == {"timestamp": "1999-01-01T00:00:00Z"}


def test_naive_timestamp_is_utc() -> None:
    event = decode(encode(minimal(event_timestamp="2025-10-15T12:00:00")), max_bytes=MAX_BYTES)
    assert event.event_timestamp == datetime(2025, 10, 15, 12, tzinfo=UTC)
    assert event.event_timestamp.tzinfo is UTC


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (1_700_000_000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (1_700_000_000.25, datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        # milliseconds, as Java/JavaScript producers send them
        (1_700_000_000_250, datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)),
    ],
)
def test_epoch_timestamps(sent: float, expected: datetime) -> None:
    event = decode(encode(minimal(event_timestamp=sent)), max_bytes=MAX_BYTES)
    assert event.event_timestamp == expected
    assert event.event_timestamp.tzinfo is UTC


def test_unknown_top_level_fields_land_in_extra() -> None:
    wire = minimal(
        trace_id="t-1",
        extra={"a": 1},
        original_correlation_id="spoof",
        nested={"k": [1, 2]},
    )
    event = decode(encode(wire), max_bytes=MAX_BYTES)
    assert event.extra == {
        "trace_id": "t-1",
        "extra": {"a": 1},
        "original_correlation_id": "spoof",
        "nested": {"k": [1, 2]},
    }
    assert event.original_correlation_id is None


def test_non_uuid_correlation_and_session_ids_map_to_stable_uuid5() -> None:
    wire = minimal(correlation_id="req-42", session_id="sess:abc")
    first = decode(encode(wire), max_bytes=MAX_BYTES)
    again = decode(encode(minimal(correlation_id="req-42")), max_bytes=MAX_BYTES)
    assert first.correlation_id == uuid.uuid5(FOREIGN_ID_NAMESPACE, "req-42")
    assert first.original_correlation_id == "req-42"
    assert first.session_id == uuid.uuid5(FOREIGN_ID_NAMESPACE, "sess:abc")
    assert first.original_session_id == "sess:abc"
    assert again.correlation_id == first.correlation_id


@pytest.mark.parametrize(
    "form",
    [
        CORRELATION_ID.upper(),
        CORRELATION_ID.replace("-", ""),
        "{" + CORRELATION_ID + "}",
        "urn:uuid:" + CORRELATION_ID,
    ],
)
def test_uuid_correlation_id_forms_are_uuids_not_foreign(form: str) -> None:
    event = decode(encode(minimal(correlation_id=form)), max_bytes=MAX_BYTES)
    assert event.correlation_id == uuid.UUID(CORRELATION_ID)
    assert event.original_correlation_id is None


@pytest.mark.parametrize("blank", ["", "   ", None])
def test_blank_correlation_id_is_absent(blank: str | None) -> None:
    event = decode(encode(minimal(correlation_id=blank, session_id=blank)), max_bytes=MAX_BYTES)
    assert event.correlation_id is None
    assert event.original_correlation_id is None
    assert event.session_id is None


def test_null_metadata_is_empty() -> None:
    event = decode(encode(minimal(metadata=None)), max_bytes=MAX_BYTES)
    assert event.metadata == {}


def test_utf8_bom_is_ignored() -> None:
    event = decode(b"\xef\xbb\xbf" + encode(minimal()), max_bytes=MAX_BYTES)
    assert event.event_id == uuid.UUID(EVENT_ID)


def test_unsigned_64_bit_ints_and_long_digit_strings_are_kept_exactly() -> None:
    payload = {
        "max": UINT64_MAX,
        "min": INT64_MIN,
        "ns": 1_700_000_000_123_456_789,
        "id": "123456789012345678901234567890",
        "f": 1.5e300,
    }
    # Long digit runs that are float literals (an exponent or a fraction) stay floats.
    raw = encode(minimal(payload=payload)).replace(
        b'"f":', b'"exp":10000000000000000000000000e0,"frac":0.1234567890123456789012,"f":'
    )
    event = decode(raw, max_bytes=MAX_BYTES)
    assert event.payload == payload | {"exp": 1e25, "frac": 0.1234567890123456789012}
    assert isinstance(event.payload["max"], int)
    assert isinstance(event.payload["exp"], float)


def test_value_exactly_at_the_limit_is_accepted() -> None:
    raw = encode(minimal())
    assert decode(raw, max_bytes=len(raw)).event_id == uuid.UUID(EVENT_ID)


# --- invalid input ------------------------------------------------------------------------------


def test_tombstone() -> None:
    error = decode_error(None)
    assert error.kind == "schema"
    assert "tombstone (null value)" in error.message


def test_oversize() -> None:
    raw = encode(minimal())
    error = decode_error(raw, max_bytes=len(raw) - 1)
    assert error.kind == "oversize"
    assert str(len(raw)) in error.message


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe{}",
        b'{"event_id": "\xc3\x28"}',
        '{"payload": {"s": "\ud800"}}'.encode("utf-8", "surrogatepass"),
    ],
)
def test_not_utf8(raw: bytes) -> None:
    error = decode_error(raw)
    assert error.kind == "decode"
    assert "UTF-8" in error.message


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"{",
        b'{"a": 1} trailing',
        b"{'a': 1}",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": 1e400}',
        b'{"s": "\\ud800"}',
        b'{"s": "\\udc00\\ud800"}',
        b'{"s": "a\x00b"}',
        b"[" * 2000 + b"]" * 2000,
    ],
)
def test_not_json(raw: bytes) -> None:
    error = decode_error(raw)
    assert error.kind == "decode"
    assert "not valid JSON" in error.message


@pytest.mark.parametrize(
    ("raw", "kind_name"),
    [
        (b"[1, 2]", "array"),
        (b'"event"', "string"),
        (b"42", "number"),
        (b"4.2", "number"),
        (b"true", "boolean"),
        (b"null", "null"),
    ],
)
def test_json_that_is_not_an_object(raw: bytes, kind_name: str) -> None:
    error = decode_error(raw)
    assert error.kind == "schema"
    assert f"JSON {kind_name}, not an object" in error.message


@pytest.mark.parametrize("field", ["event_id", "event_type", "event_timestamp", "payload"])
def test_missing_required_field(field: str) -> None:
    wire = minimal()
    del wire[field]
    error = decode_error(encode(wire))
    assert error.kind == "schema"
    assert f"{field}" in error.message
    assert "missing" in error.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("payload", [1, 2]),
        ("payload", "text"),
        ("payload", None),
        ("metadata", ["x"]),
        ("event_id", "not-a-uuid"),
        ("event_id", 42),
        ("event_id", None),
        ("event_type", 7),
        ("event_type", "   "),
        ("event_type", "x" * 101),
        ("event_timestamp", "yesterday"),
        ("event_timestamp", True),
        ("event_timestamp", 1e20),
        ("event_timestamp", "0001-01-01T00:00:00+01:00"),
        ("correlation_id", 12345),
        ("session_id", {"id": 1}),
        ("source_node_id", 5),
        ("causation_id", ["c"]),
    ],
)
def test_mistyped_field(field: str, value: object) -> None:
    error = decode_error(encode(minimal(**{field: value})))
    assert error.kind == "schema"
    assert error.message.startswith("not a valid event envelope: ")
    assert field in error.message


def test_event_type_of_exactly_100_characters_is_fine() -> None:
    event = decode(encode(minimal(event_type="x" * 100)), max_bytes=MAX_BYTES)
    assert event.event_type == "X" * 100


def test_schema_message_never_quotes_the_value() -> None:
    secret = "TOP-SECRET-" * 50
    error = decode_error(encode(minimal(event_id=secret, payload=secret, metadata=secret)))
    assert error.kind == "schema"
    assert "TOP-SECRET" not in error.message
    assert "event_id" in error.message
    assert "payload" in error.message


@pytest.mark.parametrize(
    ("wire", "path"),
    [
        (minimal(payload={"a": {"b": ["ok", "bad\x00"]}}), "$.payload.a.b[1]"),
        (minimal(metadata={"note": "\x00"}), "$.metadata.note"),
        (minimal(event_type="WORKFLOW\x00STARTED"), "$.event_type"),
        (minimal(custom_top="x\x00"), "$.custom_top"),
        (minimal(payload={"k" * 100: "\x00"}), "$.payload." + "k" * 40 + "…"),
    ],
)
def test_nul_in_a_string_value(wire: dict[str, Any], path: str) -> None:
    error = decode_error(encode(wire))
    assert error.kind == "decode"
    assert "NUL" in error.message
    assert f"at {path}:" in error.message


@pytest.mark.parametrize(
    ("wire", "path"),
    [
        (minimal(payload={"a": [{"k\x00ey": 1}]}), '$.payload.a[0]["k\\u0000ey"]'),
        (minimal(**{"top\x00": 1}), '$["top\\u0000"]'),
    ],
)
def test_nul_in_a_key(wire: dict[str, Any], path: str) -> None:
    error = decode_error(encode(wire))
    assert error.kind == "decode"
    assert f"NUL character (\\u0000) in a key at {path}:" in error.message


def test_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    wire = minimal(payload={"path": "C:\\u0000\\file"})
    raw = encode(wire)
    assert b"\\\\u0000" in raw
    assert decode(raw, max_bytes=MAX_BYTES).payload == {"path": "C:\\u0000\\file"}


@pytest.mark.parametrize(
    ("literal", "path"),
    [
        (str(UINT64_MAX + 1), "$.payload.n"),
        (str(INT64_MIN - 1), "$.payload.n"),
        ("1" + "0" * 40, "$.payload.n"),
        ("9" * 300, "$.payload.n"),
    ],
)
def test_integer_beyond_64_bits(literal: str, path: str) -> None:
    raw = encode(minimal(payload={"ok": 1, "n": 0})).replace(b'"n":0', f'"n":{literal}'.encode())
    error = decode_error(raw)
    assert error.kind == "decode"
    assert f"at {path} is outside the 64-bit range" in error.message
    assert literal[:19] not in error.message


def test_deep_nesting_is_walked_without_recursion() -> None:
    depth = 1000
    nul_raw = encode(minimal(payload={"x": 1})).replace(
        b'{"x":1}', b'{"x":' + b"[" * depth + b'"\\u0000"' + b"]" * depth + b"}"
    )
    error = decode_error(nul_raw)
    assert error.kind == "decode"
    assert "NUL" in error.message
    wide_raw = encode(minimal(payload={"x": 1})).replace(
        b'{"x":1}', b'{"x":' + b"[" * depth + b"1" + b"0" * 30 + b"]" * depth + b"}"
    )
    error = decode_error(wide_raw)
    assert error.kind == "decode"
    assert "64-bit range" in error.message


def test_decode_error_survives_pickling() -> None:
    error = decode_error(None)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert isinstance(copy, DecodeError)
    assert (copy.kind, copy.message, str(copy)) == (error.kind, error.message, error.message)


# --- properties ---------------------------------------------------------------------------------

PROPERTY = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

surrogates = st.integers(0xD800, 0xDFFF).map(chr)
nasty_text = st.lists(st.one_of(st.characters(), surrogates, st.just("\x00")), max_size=12).map(
    "".join
)
clean_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
wide_ints = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([UINT64_MAX, UINT64_MAX + 1, INT64_MIN, INT64_MIN - 1]),
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | wide_ints
    | st.floats()
    | nasty_text
    | st.sampled_from(["\x00", "a\x00", EVENT_ID]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.one_of(nasty_text, st.sampled_from(sorted(WIRE_FIELDS))), children, max_size=4
        )
    ),
    max_leaves=20,
)


offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
# Every datetime, with or without a zone, including those whose UTC instant is out of range.
any_timestamps = st.one_of(
    st.datetimes(timezones=st.none() | offsets).map(datetime.isoformat),
    st.integers(-(10**12), 10**14),
    st.floats(-1e11, 1e15),
    json_values,
)


@st.composite
def envelope_like(draw: st.DrawFn) -> dict[str, Any]:
    """A valid envelope with some fields replaced, removed or added by arbitrary values."""
    wire = minimal(event_timestamp=draw(any_timestamps))
    if draw(st.booleans()):
        wire["payload"] = {"value": draw(json_values)}
    for key in draw(st.lists(st.sampled_from(sorted(WIRE_FIELDS)), max_size=3)):
        if draw(st.booleans()):
            wire[key] = draw(json_values)
        else:
            wire.pop(key, None)
    wire.update(draw(st.dictionaries(clean_text | nasty_text, json_values, max_size=3)))
    return wire


def unstorable(value: object) -> bool:
    """Whether a decoded document holds what decode must refuse: NUL, surrogates, NaN/inf,
    integers outside the 64-bit range."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node or any(0xD800 <= ord(c) <= 0xDFFF for c in node):
                return True
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int):
            if not INT64_MIN <= node <= UINT64_MAX:
                return True
        elif isinstance(node, float):
            if not math.isfinite(node):
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def strings_of(event: Envelope) -> list[str]:
    found: list[str] = []
    stack: list[object] = [event.model_dump(mode="python")]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, dict):
            found.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def attempt(raw: bytes) -> Envelope | DecodeError:
    try:
        return decode(raw, max_bytes=MAX_BYTES)
    except DecodeError as error:
        return error


def mutate(raw: bytes, edits: list[tuple[int, int]]) -> bytes:
    data = bytearray(raw)
    for position, byte in edits:
        if not data:
            break
        index = position % len(data)
        if byte < 256:
            data[index] = byte
        elif byte < 384:
            del data[index]
        else:
            data.insert(index, byte % 256)
    return bytes(data)


@PROPERTY
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            mutate,
            st.just(encode(minimal(correlation_id="req-1", payload={"n": [1, 2.5, "x"]}))),
            st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 511)), max_size=6),
        ),
    )
)
def test_property_any_bytes_give_an_envelope_or_a_decode_error(raw: bytes) -> None:
    result = attempt(raw)  # any other exception fails the test
    if isinstance(result, DecodeError):
        assert result.kind in {"decode", "schema", "oversize"}
        assert result.message
    else:
        assert isinstance(result, Envelope)
        assert all("\x00" not in s for s in strings_of(result))


@PROPERTY
@given(st.one_of(json_values, envelope_like()), st.booleans(), st.booleans())
# An escaped surrogate pair in a key: valid JSON for U+10000 (hypothesis found it).
@example({**minimal(), "\ud800\udc00": None}, True, False)
def test_property_any_json_gives_an_envelope_or_a_decode_error(
    value: object, ensure_ascii: bool, sort_keys: bool
) -> None:
    raw = json.dumps(value, ensure_ascii=ensure_ascii, sort_keys=sort_keys).encode(
        "utf-8", "surrogatepass"
    )
    result = attempt(raw)  # any other exception fails the test
    # The document as a JSON reader sees it: two lone surrogates escaped side by side
    # ("\ud800\udc00") are one character, U+10000, which is storable.
    read = json.loads(raw)
    if isinstance(result, DecodeError):
        assert result.kind in {"decode", "schema"}
        assert result.message
        # An object is refused as undecodable exactly when it holds what PostgreSQL cannot
        # store (or what orjson cannot read); otherwise it is refused for its shape.
        if isinstance(value, dict):
            assert result.kind == ("decode" if unstorable(read) else "schema")
    else:
        assert isinstance(result, Envelope)
        assert isinstance(value, dict)
        assert not unstorable(read)
        assert len(result.event_type) <= 100
        assert result.event_timestamp.tzinfo is UTC
        assert all("\x00" not in s for s in strings_of(result))


# Values a valid event may carry: no NUL, no surrogates, finite floats, 64-bit integers.
storable_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=INT64_MIN, max_value=UINT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | clean_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(clean_text, children, max_size=4)
    ),
    max_leaves=10,
)
storable_objects = st.dictionaries(clean_text, storable_values, max_size=4)
optional_text = st.none() | clean_text
event_times = st.datetimes(
    min_value=datetime(2, 1, 1),
    max_value=datetime(9998, 12, 31),
    timezones=st.none() | offsets,
)
canonical_or_alias = st.sampled_from(
    [(name, name) for name in CANONICAL] + [(alias, canonical) for alias, canonical in ALIASES]
)
# A prefix no canonical name has keeps these unknown; 30 characters upper-case to at most 90.
unknown_types = clean_text.filter(lambda s: len(s) <= 30).map(
    lambda s: (
        f"x-custom.{s}",
        f"x-custom.{s}".strip().upper().replace(".", "_").replace("-", "_"),
    )
)
foreign_ids = clean_text.map(lambda s: f"req-{s}")


@st.composite
def valid_envelopes(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A wire envelope and the fields its Envelope must have."""
    event_id = draw(st.uuids())
    sent_type, expected_type = draw(canonical_or_alias | unknown_types)
    wire: dict[str, Any] = {"event_id": str(event_id), "event_type": sent_type}
    expected: dict[str, Any] = {"event_id": event_id, "event_type": expected_type}

    if draw(st.booleans()):
        when = draw(event_times)
        sent_when: object = when.isoformat()
        expected_when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
    else:
        seconds = draw(st.integers(0, 20_000_000_000))
        sent_when = seconds
        expected_when = datetime.fromtimestamp(seconds, UTC)
    wire["timestamp" if draw(st.booleans()) else "event_timestamp"] = sent_when
    expected["event_timestamp"] = expected_when

    for name in (
        "envelope_version",
        "event_version",
        "source_node_id",
        "source_service",
        "source_version",
        "source_instance",
        "environment",
        "region",
        "partition_key",
        "causation_id",
    ):
        if draw(st.booleans()):
            wire[name] = expected[name] = draw(optional_text)
        else:
            expected[name] = None

    for name in ("correlation_id", "session_id"):
        choice = draw(st.sampled_from(["absent", "uuid", "foreign"]))
        expected[name] = expected[f"original_{name}"] = None
        if choice == "uuid":
            value = draw(st.uuids())
            wire[name] = str(value)
            expected[name] = value
        elif choice == "foreign":
            text = draw(foreign_ids)
            wire[name] = text
            expected[name] = uuid.uuid5(FOREIGN_ID_NAMESPACE, text)
            expected[f"original_{name}"] = text

    wire["payload"] = expected["payload"] = draw(storable_objects)
    if draw(st.booleans()):
        wire["metadata"] = expected["metadata"] = draw(storable_objects)
    else:
        expected["metadata"] = {}
    extra = draw(
        st.dictionaries(
            clean_text.filter(lambda k: k not in WIRE_FIELDS), storable_values, max_size=3
        )
    )
    wire.update(extra)
    expected["extra"] = extra
    expected["original_event_type"] = sent_type if sent_type != expected_type else None
    return wire, expected


@PROPERTY
@given(valid_envelopes(), st.sampled_from(["orjson", "ascii", "utf8"]))
def test_property_valid_envelopes_round_trip(
    case: tuple[dict[str, Any], dict[str, Any]], serializer: str
) -> None:
    wire, expected = case
    if serializer == "orjson":
        raw = orjson.dumps(wire)
    else:
        raw = json.dumps(wire, ensure_ascii=serializer == "ascii").encode()
    assume(len(raw) <= MAX_BYTES)
    event = decode(raw, max_bytes=MAX_BYTES)
    assert event.model_dump() == expected
    assert event.event_timestamp.tzinfo is UTC


def _nested(depth: int) -> bytes:
    """An envelope whose payload holds arrays nested ``depth`` levels, as JSON text."""
    inner = b"[" * depth + b"1" + b"]" * depth
    return encode(minimal())[:-1] + b',"payload":{"deep":' + inner + b"}}"


def test_nesting_the_sink_can_store_is_accepted() -> None:
    event = decode(_nested(150), max_bytes=MAX_BYTES)
    orjson.dumps(event.payload)  # the sink re-encodes it: must not hit the encoder's limit


@pytest.mark.parametrize("depth", [260, 1000])
def test_nesting_deeper_than_the_sink_can_store_is_refused(depth: int) -> None:
    error = decode_error(_nested(depth))
    assert error.kind == "decode"
    assert "nested deeper than" in error.message
