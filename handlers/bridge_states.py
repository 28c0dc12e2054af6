"""bridge_states: the reducer's events, one row per (node_type, correlation_id).

Events: AGGREGATION_STARTED / _COMPLETED / _FAILED, BATCH_PROCESSED, STATE_PERSISTED,
FSM_STATE_INITIALIZED, FSM_STATE_TRANSITIONED (contract section 3, seed 000 table 4,
migrations 004, 010, 012 and 019).

The row:

- **Key.** ``node_type`` is the payload's, upper-cased (the seed's vocabulary: REDUCER,
  ORCHESTRATOR, ...; producers send ``reducer``), default ``REDUCER``. ``correlation_id`` is the
  payload's ``aggregation_id``, else its ``correlation_id``, else the envelope's; none at all is
  a ``schema`` reject. A payload id that is not a UUID maps to its stable uuid5
  (``handlers.base.as_uuid``), the text kept in ``metadata.original_correlation_id`` (the
  envelope's own mapping is kept the same way). ``id = uuid5(FOREIGN_ID_NAMESPACE,
  f"bridge/{node_type}/{correlation_id}")`` so ids match across runs.
- **state** (ordered by ``state_event_at`` / ``state_event_id``): the payload's ``state``
  (upper-cased) when given, else by type: AGGREGATION_STARTED -> AGGREGATING, _COMPLETED ->
  COMPLETED, _FAILED -> FAILED, FSM_STATE_TRANSITIONED -> its ``to_state`` (required),
  FSM_STATE_INITIALIZED -> its ``initial_state``, else IDLE (the reducer FSM's first state).
  BATCH_PROCESSED and STATE_PERSISTED say nothing about the state unless they give one: they
  keep it. A row first created by such an event holds ``UNKNOWN`` with a NULL ordering pair
  until an event that carries a state arrives (the column is NOT NULL and no state is known).
- **Every other value column** comes from the newest event that *carries* it: namespace,
  state_data, total_size_bytes, unique_file_types, unique_workflows, aggregation_type,
  window_start, window_end, aggregation_duration_ms, items_per_second, version,
  configuration. An event that does not carry a value leaves it alone, and an older event
  that carries one fills it in if no newer event set it, so the row is the same in every
  arrival order. Each of these columns has an ordering pair of its own, ``<column>_event_at`` /
  ``<column>_event_id`` (migration 019), holding the event that last set it and compared by
  ``omnisink.newer`` like state's; NULL until an event carries the column. Columns no event has
  set keep their defaults (0, '{}', 'namespace_grouping', 1, NULL).
- **aggregation_duration_ms** is the payload's ``aggregation_duration_ms``, else, for
  AGGREGATION_COMPLETED and _FAILED, its ``duration_ms`` (the name the reducer sends; then it
  is taken out of state_data). Other types' ``duration_ms`` is only state_data.
- **state_data** is the payload's ``state_data`` object when given, else the payload's other
  facts (what is left after the key, the state and the columns above are taken out: error,
  from_state / to_state, batch sizes, ...), carried only when that is not empty.
- ``created_at`` = LEAST of the event times, ``updated_at`` = the newest event time (GREATEST),
  never NOW(), so replays give identical rows.

Parsing: every value must fit its column and its CHECK (total_size_bytes >= 0 in BIGINT,
aggregation_duration_ms >= 0 in INTEGER, items_per_second >= 0 in NUMERIC(10, 2), version >= 1
in INTEGER, namespace VARCHAR(255), aggregation_type and state VARCHAR(50)); a value that does
not is a ``schema`` reject. Fractional milliseconds are rounded to the nearest integer and
items_per_second to 2 decimals (half up), as PostgreSQL would. unique_file_types and
unique_workflows are sets: stored sorted, without repeats, so a producer's set order does not
make replays differ; a workflow id that is not a UUID maps to its uuid5 like every other id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Final
from uuid import UUID, uuid5

import asyncpg
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from handlers import fields
from handlers.base import Event, Item, Reject, as_uuid, jsonb
from handlers.envelope import FOREIGN_ID_NAMESPACE, EventType
from handlers.sql import Unnest

# Column limits (migrations 004, 010, 012).
NODE_TYPE_MAX_CHARS: Final = 50
STATE_MAX_CHARS: Final = 50
NAMESPACE_MAX_CHARS: Final = 255
AGGREGATION_TYPE_MAX_CHARS: Final = 50
# NUMERIC(10, 2): 8 digits before the point.
ITEMS_PER_SECOND_LIMIT: Final = Decimal("100000000")
CENTS: Final = Decimal("0.01")

DEFAULT_NODE_TYPE: Final = "REDUCER"
PLACEHOLDER_STATE: Final = "UNKNOWN"
INITIAL_STATE: Final = "IDLE"
ORIGINAL_ID_KEY: Final = "original_correlation_id"

_STATE_OF: Final[Mapping[str, str]] = {
    EventType.AGGREGATION_STARTED: "AGGREGATING",
    EventType.AGGREGATION_COMPLETED: "COMPLETED",
    EventType.AGGREGATION_FAILED: "FAILED",
}

# The value columns set by the newest event that carries them, in table order.
FIELDS: Final = (
    "state_data",
    "namespace",
    "total_size_bytes",
    "unique_file_types",
    "unique_workflows",
    "aggregation_type",
    "window_start",
    "window_end",
    "aggregation_duration_ms",
    "items_per_second",
    "version",
    "configuration",
)
# Not part of state_data's "other facts": the key, the state and the columns of FIELDS.
_NOT_STATE_DATA: Final = frozenset(
    {"node_type", "aggregation_id", "correlation_id", "state", *FIELDS}
)


def bridge_row_id(node_type: str, correlation_id: UUID) -> UUID:
    """The ``id`` of a bridge state's row: stable across runs, replays and sinks."""
    return uuid5(FOREIGN_ID_NAMESPACE, f"bridge/{node_type}/{correlation_id}")


# --- payloads ----------------------------------------------------------------------------------


def _cents(value: Decimal) -> Decimal:
    rounded = value.quantize(CENTS, rounding=ROUND_HALF_UP)
    if rounded >= ITEMS_PER_SECOND_LIMIT:
        raise ValueError("must be less than 100000000 (NUMERIC(10, 2))")
    return rounded


State = Annotated[str, AfterValidator(fields.upper(STATE_MAX_CHARS))]
NodeType = Annotated[str, AfterValidator(fields.upper(NODE_TYPE_MAX_CHARS))]


class _BridgePayload(BaseModel):
    # Producers we do not control add fields: extra keys are allowed (and kept in state_data).
    model_config = ConfigDict(extra="allow")

    node_type: NodeType | None = None
    aggregation_id: fields.IdText | None = None
    correlation_id: fields.IdText | None = None
    state: State | None = None
    to_state: State | None = None
    initial_state: State | None = None
    state_data: dict[str, Any] | None = None
    namespace: Annotated[str, StringConstraints(max_length=NAMESPACE_MAX_CHARS)] | None = None
    total_size_bytes: Annotated[int, Field(ge=0, le=fields.INT8_MAX)] | None = None
    unique_file_types: list[fields.IdText] | None = None
    unique_workflows: list[fields.IdText] | None = None
    aggregation_type: (
        Annotated[str, StringConstraints(max_length=AGGREGATION_TYPE_MAX_CHARS)] | None
    ) = None
    window_start: fields.UtcDatetime | None = None
    window_end: fields.UtcDatetime | None = None
    aggregation_duration_ms: fields.NonNegativeMillis | None = None
    items_per_second: (
        Annotated[Decimal, Field(ge=0, allow_inf_nan=False), AfterValidator(_cents)] | None
    ) = None
    version: Annotated[int, Field(ge=1, le=fields.INT4_MAX)] | None = None
    configuration: dict[str, Any] | None = None


class _AggregationEndPayload(_BridgePayload):
    # The reducer's AGGREGATION_COMPLETED / _FAILED name the aggregation's duration duration_ms.
    duration_ms: fields.NonNegativeMillis | None = None


# The types whose duration_ms is aggregation_duration_ms (the reducer's two ends).
_ENDS: Final = frozenset({EventType.AGGREGATION_COMPLETED, EventType.AGGREGATION_FAILED})


@dataclass(frozen=True, slots=True)
class BridgeFacts:
    """What one event says about its bridge state row."""

    node_type: str
    correlation_id: UUID
    original_correlation_id: str | None
    # None: the event says nothing about the state (keeps it).
    state: str | None
    # The columns of FIELDS this event carries, as their SQL parameter values.
    fields: Mapping[str, Any]


def _correlation(model: _BridgePayload, event: Event) -> tuple[UUID, str | None]:
    text = fields.present(model.aggregation_id) or fields.present(model.correlation_id)
    if text is not None:
        try:
            return UUID(text), None
        except ValueError:
            return as_uuid(text), text
    envelope = event.envelope
    if envelope.correlation_id is None:
        raise Reject(
            "schema",
            "aggregation_id: missing (required, or a correlation_id in the payload or the "
            "envelope)",
        )
    return envelope.correlation_id, envelope.original_correlation_id


def _state_of(model: _BridgePayload, event_type: str) -> str | None:
    if model.state is not None:
        return model.state
    if event_type == EventType.FSM_STATE_TRANSITIONED:
        if model.to_state is None:
            raise Reject("schema", "to_state: missing (required)")
        return model.to_state
    if event_type == EventType.FSM_STATE_INITIALIZED:
        return model.initial_state or INITIAL_STATE
    return _STATE_OF.get(event_type)


def _fields_of(model: _BridgePayload, payload: dict[str, Any]) -> dict[str, Any]:
    duration = model.aggregation_duration_ms
    taken = _NOT_STATE_DATA
    if duration is None and isinstance(model, _AggregationEndPayload):
        duration = model.duration_ms
        taken = _NOT_STATE_DATA | {"duration_ms"}
    state_data = model.state_data
    if state_data is None:
        state_data = {k: v for k, v in payload.items() if k not in taken}
    values: dict[str, Any] = {
        "state_data": jsonb(state_data) if state_data else None,
        "namespace": model.namespace,
        "total_size_bytes": model.total_size_bytes,
        "unique_file_types": (
            jsonb(sorted(set(model.unique_file_types)))
            if model.unique_file_types is not None
            else None
        ),
        "unique_workflows": (
            jsonb([str(u) for u in sorted({as_uuid(w) for w in model.unique_workflows})])
            if model.unique_workflows is not None
            else None
        ),
        "aggregation_type": model.aggregation_type,
        "window_start": model.window_start,
        "window_end": model.window_end,
        "aggregation_duration_ms": duration,
        "items_per_second": model.items_per_second,
        "version": model.version,
        "configuration": jsonb(model.configuration),
    }
    return {name: value for name, value in values.items() if value is not None}


# --- SQL ---------------------------------------------------------------------------------------

# m says, once per conflicting row, which columns the input moves: a column moves when the input
# has an event that carries it (its pair is not NULL) newer than the stored pair (omnisink.newer:
# a NULL stored pair, a placeholder's state or a column no event set yet, is moved by any event).
# A value column the input does not carry keeps its value and its pair.
_UPSERT = Unnest(
    """
INSERT INTO bridge_states AS t (
    id, node_type, correlation_id, state, state_event_at, state_event_id, state_data, namespace,
    total_size_bytes, unique_file_types, unique_workflows, aggregation_type, window_start,
    window_end, aggregation_duration_ms, items_per_second, version, configuration, metadata,
    created_at, updated_at, state_data_event_at, state_data_event_id, namespace_event_at,
    namespace_event_id, total_size_bytes_event_at, total_size_bytes_event_id,
    unique_file_types_event_at, unique_file_types_event_id, unique_workflows_event_at,
    unique_workflows_event_id, aggregation_type_event_at, aggregation_type_event_id,
    window_start_event_at, window_start_event_id, window_end_event_at, window_end_event_id,
    aggregation_duration_ms_event_at, aggregation_duration_ms_event_id, items_per_second_event_at,
    items_per_second_event_id, version_event_at, version_event_id, configuration_event_at,
    configuration_event_id
)
SELECT v.id, v.node_type, v.correlation_id, v.state, v.state_event_at, v.state_event_id,
       COALESCE(v.state_data::jsonb, '{}'::jsonb),
       v.namespace,
       COALESCE(v.total_size_bytes, 0),
       ARRAY(SELECT e.x FROM jsonb_array_elements_text(v.unique_file_types::jsonb)
                 WITH ORDINALITY AS e(x, n) ORDER BY e.n),
       ARRAY(SELECT e.x::uuid FROM jsonb_array_elements_text(v.unique_workflows::jsonb)
                 WITH ORDINALITY AS e(x, n) ORDER BY e.n),
       COALESCE(v.aggregation_type, 'namespace_grouping'),
       v.window_start, v.window_end, v.aggregation_duration_ms, v.items_per_second,
       COALESCE(v.version, 1),
       COALESCE(v.configuration::jsonb, '{}'::jsonb),
       v.metadata::jsonb, v.created_at, v.updated_at,
       v.state_data_event_at, v.state_data_event_id, v.namespace_event_at, v.namespace_event_id,
       v.total_size_bytes_event_at, v.total_size_bytes_event_id, v.unique_file_types_event_at,
       v.unique_file_types_event_id, v.unique_workflows_event_at, v.unique_workflows_event_id,
       v.aggregation_type_event_at, v.aggregation_type_event_id, v.window_start_event_at,
       v.window_start_event_id, v.window_end_event_at, v.window_end_event_id,
       v.aggregation_duration_ms_event_at, v.aggregation_duration_ms_event_id,
       v.items_per_second_event_at, v.items_per_second_event_id, v.version_event_at,
       v.version_event_id, v.configuration_event_at, v.configuration_event_id
FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::timestamptz[], $6::uuid[],
            $7::text[], $8::text[], $9::int8[], $10::text[], $11::text[], $12::text[],
            $13::timestamptz[], $14::timestamptz[], $15::int4[], $16::numeric[], $17::int4[],
            $18::text[], $19::text[], $20::timestamptz[], $21::timestamptz[], $22::timestamptz[],
            $23::uuid[], $24::timestamptz[], $25::uuid[], $26::timestamptz[], $27::uuid[],
            $28::timestamptz[], $29::uuid[], $30::timestamptz[], $31::uuid[], $32::timestamptz[],
            $33::uuid[], $34::timestamptz[], $35::uuid[], $36::timestamptz[], $37::uuid[],
            $38::timestamptz[], $39::uuid[], $40::timestamptz[], $41::uuid[], $42::timestamptz[],
            $43::uuid[], $44::timestamptz[], $45::uuid[])
    AS v(id, node_type, correlation_id, state, state_event_at, state_event_id, state_data,
         namespace, total_size_bytes, unique_file_types, unique_workflows, aggregation_type,
         window_start, window_end, aggregation_duration_ms, items_per_second, version,
         configuration, metadata, created_at, updated_at, state_data_event_at, state_data_event_id,
         namespace_event_at, namespace_event_id, total_size_bytes_event_at,
         total_size_bytes_event_id, unique_file_types_event_at, unique_file_types_event_id,
         unique_workflows_event_at, unique_workflows_event_id, aggregation_type_event_at,
         aggregation_type_event_id, window_start_event_at, window_start_event_id,
         window_end_event_at, window_end_event_id, aggregation_duration_ms_event_at,
         aggregation_duration_ms_event_id, items_per_second_event_at, items_per_second_event_id,
         version_event_at, version_event_id, configuration_event_at, configuration_event_id)
ON CONFLICT (node_type, correlation_id) DO UPDATE SET
    (
        state, state_event_at, state_event_id, state_data, state_data_event_at, state_data_event_id,
        namespace, namespace_event_at, namespace_event_id, total_size_bytes,
        total_size_bytes_event_at, total_size_bytes_event_id, unique_file_types,
        unique_file_types_event_at, unique_file_types_event_id, unique_workflows,
        unique_workflows_event_at, unique_workflows_event_id, aggregation_type,
        aggregation_type_event_at, aggregation_type_event_id, window_start, window_start_event_at,
        window_start_event_id, window_end, window_end_event_at, window_end_event_id,
        aggregation_duration_ms, aggregation_duration_ms_event_at, aggregation_duration_ms_event_id,
        items_per_second, items_per_second_event_at, items_per_second_event_id, version,
        version_event_at, version_event_id, configuration, configuration_event_at,
        configuration_event_id
    ) = (
        SELECT CASE WHEN m.state THEN excluded.state ELSE t.state END,
               CASE WHEN m.state THEN excluded.state_event_at ELSE t.state_event_at END,
               CASE WHEN m.state THEN excluded.state_event_id ELSE t.state_event_id END,
               CASE WHEN m.state_data THEN excluded.state_data ELSE t.state_data END,
               CASE WHEN m.state_data THEN excluded.state_data_event_at
                    ELSE t.state_data_event_at END,
               CASE WHEN m.state_data THEN excluded.state_data_event_id
                    ELSE t.state_data_event_id END,
               CASE WHEN m.namespace THEN excluded.namespace ELSE t.namespace END,
               CASE WHEN m.namespace THEN excluded.namespace_event_at ELSE t.namespace_event_at END,
               CASE WHEN m.namespace THEN excluded.namespace_event_id ELSE t.namespace_event_id END,
               CASE WHEN m.total_size_bytes THEN excluded.total_size_bytes
                    ELSE t.total_size_bytes END,
               CASE WHEN m.total_size_bytes THEN excluded.total_size_bytes_event_at
                    ELSE t.total_size_bytes_event_at END,
               CASE WHEN m.total_size_bytes THEN excluded.total_size_bytes_event_id
                    ELSE t.total_size_bytes_event_id END,
               CASE WHEN m.unique_file_types THEN excluded.unique_file_types
                    ELSE t.unique_file_types END,
               CASE WHEN m.unique_file_types THEN excluded.unique_file_types_event_at
                    ELSE t.unique_file_types_event_at END,
               CASE WHEN m.unique_file_types THEN excluded.unique_file_types_event_id
                    ELSE t.unique_file_types_event_id END,
               CASE WHEN m.unique_workflows THEN excluded.unique_workflows
                    ELSE t.unique_workflows END,
               CASE WHEN m.unique_workflows THEN excluded.unique_workflows_event_at
                    ELSE t.unique_workflows_event_at END,
               CASE WHEN m.unique_workflows THEN excluded.unique_workflows_event_id
                    ELSE t.unique_workflows_event_id END,
               CASE WHEN m.aggregation_type THEN excluded.aggregation_type
                    ELSE t.aggregation_type END,
               CASE WHEN m.aggregation_type THEN excluded.aggregation_type_event_at
                    ELSE t.aggregation_type_event_at END,
               CASE WHEN m.aggregation_type THEN excluded.aggregation_type_event_id
                    ELSE t.aggregation_type_event_id END,
               CASE WHEN m.window_start THEN excluded.window_start ELSE t.window_start END,
               CASE WHEN m.window_start THEN excluded.window_start_event_at
                    ELSE t.window_start_event_at END,
               CASE WHEN m.window_start THEN excluded.window_start_event_id
                    ELSE t.window_start_event_id END,
               CASE WHEN m.window_end THEN excluded.window_end ELSE t.window_end END,
               CASE WHEN m.window_end THEN excluded.window_end_event_at
                    ELSE t.window_end_event_at END,
               CASE WHEN m.window_end THEN excluded.window_end_event_id
                    ELSE t.window_end_event_id END,
               CASE WHEN m.aggregation_duration_ms THEN excluded.aggregation_duration_ms
                    ELSE t.aggregation_duration_ms END,
               CASE WHEN m.aggregation_duration_ms THEN excluded.aggregation_duration_ms_event_at
                    ELSE t.aggregation_duration_ms_event_at END,
               CASE WHEN m.aggregation_duration_ms THEN excluded.aggregation_duration_ms_event_id
                    ELSE t.aggregation_duration_ms_event_id END,
               CASE WHEN m.items_per_second THEN excluded.items_per_second
                    ELSE t.items_per_second END,
               CASE WHEN m.items_per_second THEN excluded.items_per_second_event_at
                    ELSE t.items_per_second_event_at END,
               CASE WHEN m.items_per_second THEN excluded.items_per_second_event_id
                    ELSE t.items_per_second_event_id END,
               CASE WHEN m.version THEN excluded.version ELSE t.version END,
               CASE WHEN m.version THEN excluded.version_event_at ELSE t.version_event_at END,
               CASE WHEN m.version THEN excluded.version_event_id ELSE t.version_event_id END,
               CASE WHEN m.configuration THEN excluded.configuration ELSE t.configuration END,
               CASE WHEN m.configuration THEN excluded.configuration_event_at
                    ELSE t.configuration_event_at END,
               CASE WHEN m.configuration THEN excluded.configuration_event_id
                    ELSE t.configuration_event_id END
        FROM (
            SELECT excluded.state_event_at IS NOT NULL AND omnisink.newer(
                       excluded.state_event_at, excluded.state_event_id,
                       t.state_event_at, t.state_event_id) AS state,
                   excluded.state_data_event_at IS NOT NULL AND omnisink.newer(
                       excluded.state_data_event_at, excluded.state_data_event_id,
                       t.state_data_event_at, t.state_data_event_id) AS state_data,
                   excluded.namespace_event_at IS NOT NULL AND omnisink.newer(
                       excluded.namespace_event_at, excluded.namespace_event_id,
                       t.namespace_event_at, t.namespace_event_id) AS namespace,
                   excluded.total_size_bytes_event_at IS NOT NULL AND omnisink.newer(
                       excluded.total_size_bytes_event_at, excluded.total_size_bytes_event_id,
                       t.total_size_bytes_event_at, t.total_size_bytes_event_id
                   ) AS total_size_bytes,
                   excluded.unique_file_types_event_at IS NOT NULL AND omnisink.newer(
                       excluded.unique_file_types_event_at, excluded.unique_file_types_event_id,
                       t.unique_file_types_event_at, t.unique_file_types_event_id
                   ) AS unique_file_types,
                   excluded.unique_workflows_event_at IS NOT NULL AND omnisink.newer(
                       excluded.unique_workflows_event_at, excluded.unique_workflows_event_id,
                       t.unique_workflows_event_at, t.unique_workflows_event_id
                   ) AS unique_workflows,
                   excluded.aggregation_type_event_at IS NOT NULL AND omnisink.newer(
                       excluded.aggregation_type_event_at, excluded.aggregation_type_event_id,
                       t.aggregation_type_event_at, t.aggregation_type_event_id
                   ) AS aggregation_type,
                   excluded.window_start_event_at IS NOT NULL AND omnisink.newer(
                       excluded.window_start_event_at, excluded.window_start_event_id,
                       t.window_start_event_at, t.window_start_event_id) AS window_start,
                   excluded.window_end_event_at IS NOT NULL AND omnisink.newer(
                       excluded.window_end_event_at, excluded.window_end_event_id,
                       t.window_end_event_at, t.window_end_event_id) AS window_end,
                   excluded.aggregation_duration_ms_event_at IS NOT NULL AND omnisink.newer(
                       excluded.aggregation_duration_ms_event_at,
                       excluded.aggregation_duration_ms_event_id,
                       t.aggregation_duration_ms_event_at, t.aggregation_duration_ms_event_id
                   ) AS aggregation_duration_ms,
                   excluded.items_per_second_event_at IS NOT NULL AND omnisink.newer(
                       excluded.items_per_second_event_at, excluded.items_per_second_event_id,
                       t.items_per_second_event_at, t.items_per_second_event_id
                   ) AS items_per_second,
                   excluded.version_event_at IS NOT NULL AND omnisink.newer(
                       excluded.version_event_at, excluded.version_event_id,
                       t.version_event_at, t.version_event_id) AS version,
                   excluded.configuration_event_at IS NOT NULL AND omnisink.newer(
                       excluded.configuration_event_at, excluded.configuration_event_id,
                       t.configuration_event_at, t.configuration_event_id) AS configuration
        ) AS m
    ),
    metadata = t.metadata || excluded.metadata,
    created_at = LEAST(t.created_at, excluded.created_at),
    updated_at = GREATEST(t.updated_at, excluded.updated_at)
""",
    name="bridge_states.upsert",
)


# --- the batch reduced to one input row per bridge state ---------------------------------------


@dataclass
class _BridgeInput:
    facts: BridgeFacts
    created_at: datetime
    updated_at: datetime
    state: tuple[tuple[datetime, UUID], str] | None = None
    # Per column: (order key, value) of the newest event of the batch carrying it.
    fields: dict[str, tuple[tuple[datetime, UUID], Any]] = field(default_factory=dict)

    def add(self, item: Item[BridgeFacts]) -> None:
        event, facts = item.event, item.payload
        key = event.order_key
        self.created_at = min(self.created_at, event.at)
        self.updated_at = max(self.updated_at, event.at)
        if facts.state is not None and (self.state is None or key > self.state[0]):
            self.state = (key, facts.state)
        for name, value in facts.fields.items():
            held = self.fields.get(name)
            if held is None or key > held[0]:
                self.fields[name] = (key, value)

    def row(self) -> dict[str, Any]:
        """The upsert's ``v(...)`` row: each column of FIELDS with the pair of the event that
        gave it, or NULLs when no event of the batch carries it."""
        facts = self.facts
        metadata: dict[str, Any] = {}
        if facts.original_correlation_id is not None:
            metadata[ORIGINAL_ID_KEY] = facts.original_correlation_id
        state_at, state_id = self.state[0] if self.state is not None else (None, None)
        row: dict[str, Any] = {
            "id": bridge_row_id(facts.node_type, facts.correlation_id),
            "node_type": facts.node_type,
            "correlation_id": facts.correlation_id,
            "state": self.state[1] if self.state is not None else PLACEHOLDER_STATE,
            "state_event_at": state_at,
            "state_event_id": state_id,
            "metadata": jsonb(metadata),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        for name in FIELDS:
            (at, event_id), value = self.fields.get(name, ((None, None), None))
            row[name] = value
            row[f"{name}_event_at"] = at
            row[f"{name}_event_id"] = event_id
        return row


# --- handler -----------------------------------------------------------------------------------


class BridgeStatesHandler:
    """The reducer's aggregation and FSM events -> bridge_states."""

    name = "bridge_states"
    event_types = frozenset(
        {
            EventType.AGGREGATION_STARTED.value,
            EventType.AGGREGATION_COMPLETED.value,
            EventType.AGGREGATION_FAILED.value,
            EventType.BATCH_PROCESSED.value,
            EventType.STATE_PERSISTED.value,
            EventType.FSM_STATE_INITIALIZED.value,
            EventType.FSM_STATE_TRANSITIONED.value,
        }
    )

    def parse(self, event: Event) -> BridgeFacts:
        shape = _AggregationEndPayload if event.event_type in _ENDS else _BridgePayload
        model = fields.validate(shape, event.payload)
        correlation_id, original = _correlation(model, event)
        return BridgeFacts(
            node_type=model.node_type or DEFAULT_NODE_TYPE,
            correlation_id=correlation_id,
            original_correlation_id=original,
            state=_state_of(model, event.event_type),
            fields=_fields_of(model, event.payload),
        )

    async def apply(self, conn: asyncpg.Connection, items: Sequence[Item[BridgeFacts]]) -> None:
        inputs: dict[tuple[str, UUID], _BridgeInput] = {}
        for item in items:
            key = (item.payload.node_type, item.payload.correlation_id)
            held = inputs.get(key)
            if held is None:
                held = inputs[key] = _BridgeInput(item.payload, item.event.at, item.event.at)
            held.add(item)
        if not inputs:
            return
        rows = [inputs[key].row() for key in sorted(inputs)]  # sorted: a stable lock order
        await conn.execute(_UPSERT.sql, *_UPSERT.args(rows))


BRIDGE_STATES = BridgeStatesHandler()
