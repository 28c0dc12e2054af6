"""bridge_states: the reducer's events, one row per (node_type, correlation_id).

Events: AGGREGATION_STARTED / _COMPLETED / _FAILED, BATCH_PROCESSED, STATE_PERSISTED,
FSM_STATE_INITIALIZED, FSM_STATE_TRANSITIONED (contract section 3, seed 000 table 4,
migrations 004, 010 and 012).

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
  arrival order. The table has one ordering pair (state's), so the pair that last set each
  of these columns is kept in ``metadata.field_events`` (``{column: "<UTC time>|<event id>"}``,
  fixed-width text that sorts like (event_timestamp, event_id); compared with ``COLLATE "C"``).
  Columns no event has set keep their defaults (0, '{}', 'namespace_grouping', 1, NULL).
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
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Final
from uuid import UUID, uuid5

import asyncpg
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from handlers import fields
from handlers.base import Event, Item, Reject, as_uuid, jsonb
from handlers.envelope import FOREIGN_ID_NAMESPACE, EventType

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
FIELD_EVENTS_KEY: Final = "field_events"
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
    state_data = model.state_data
    if state_data is None:
        state_data = {k: v for k, v in payload.items() if k not in _NOT_STATE_DATA}
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
        "aggregation_duration_ms": model.aggregation_duration_ms,
        "items_per_second": model.items_per_second,
        "version": model.version,
        "configuration": jsonb(model.configuration),
    }
    return {name: value for name, value in values.items() if value is not None}


def order_text(event: Event) -> str:
    """(event_timestamp, event_id) as fixed-width text that sorts the same way."""
    naive_utc = event.at.astimezone(UTC).replace(tzinfo=None)
    return f"{naive_utc.isoformat(timespec='microseconds')}|{event.event_id}"


# --- SQL ---------------------------------------------------------------------------------------

_NIL = "'00000000-0000-0000-0000-000000000000'::uuid"


def _pair(row: str) -> str:
    return (
        f"(COALESCE({row}.state_event_at, '-infinity'::timestamptz), "
        f"COALESCE({row}.state_event_id, {_NIL}))"
    )


# A NULL pair (placeholder, or no state in this input) sorts below every real event.
_STATE_MOVES = f"{_pair('excluded')} > {_pair('t')}"


def _field_moves(name: str) -> str:
    # NULL (the input does not carry it) is not greater than anything: the column stays.
    return (
        f"(excluded.metadata -> '{FIELD_EVENTS_KEY}' ->> '{name}') COLLATE \"C\" > "
        f"COALESCE(t.metadata -> '{FIELD_EVENTS_KEY}' ->> '{name}', '') COLLATE \"C\""
    )


_FIELD_SETS = ",\n    ".join(
    f"{name} = CASE WHEN {_field_moves(name)} THEN excluded.{name} ELSE t.{name} END"
    for name in FIELDS
)

_UPSERT = f"""
INSERT INTO bridge_states AS t (
    id, node_type, correlation_id, state, state_event_at, state_event_id, state_data, namespace,
    total_size_bytes, unique_file_types, unique_workflows, aggregation_type, window_start,
    window_end, aggregation_duration_ms, items_per_second, version, configuration, metadata,
    created_at, updated_at
)
SELECT v.id, v.node_type, v.correlation_id, v.state, v.state_event_at, v.state_event_id,
       COALESCE(v.state_data::jsonb, '{{}}'::jsonb),
       v.namespace,
       COALESCE(v.total_size_bytes, 0),
       ARRAY(SELECT e.x FROM jsonb_array_elements_text(v.unique_file_types::jsonb)
                 WITH ORDINALITY AS e(x, n) ORDER BY e.n),
       ARRAY(SELECT e.x::uuid FROM jsonb_array_elements_text(v.unique_workflows::jsonb)
                 WITH ORDINALITY AS e(x, n) ORDER BY e.n),
       COALESCE(v.aggregation_type, 'namespace_grouping'),
       v.window_start, v.window_end, v.aggregation_duration_ms, v.items_per_second,
       COALESCE(v.version, 1),
       COALESCE(v.configuration::jsonb, '{{}}'::jsonb),
       v.metadata::jsonb, v.created_at, v.updated_at
FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::timestamptz[], $6::uuid[],
            $7::text[], $8::text[], $9::int8[], $10::text[], $11::text[], $12::text[],
            $13::timestamptz[], $14::timestamptz[], $15::int4[], $16::numeric[], $17::int4[],
            $18::text[], $19::text[], $20::timestamptz[], $21::timestamptz[])
    AS v(id, node_type, correlation_id, state, state_event_at, state_event_id, state_data,
         namespace, total_size_bytes, unique_file_types, unique_workflows, aggregation_type,
         window_start, window_end, aggregation_duration_ms, items_per_second, version,
         configuration, metadata, created_at, updated_at)
ON CONFLICT (node_type, correlation_id) DO UPDATE SET
    state = CASE WHEN {_STATE_MOVES} THEN excluded.state ELSE t.state END,
    state_event_at = CASE WHEN {_STATE_MOVES} THEN excluded.state_event_at
                          ELSE t.state_event_at END,
    state_event_id = CASE WHEN {_STATE_MOVES} THEN excluded.state_event_id
                          ELSE t.state_event_id END,
    {_FIELD_SETS},
    metadata = (t.metadata || excluded.metadata) - '{FIELD_EVENTS_KEY}'
        || jsonb_build_object('{FIELD_EVENTS_KEY}', (
            SELECT COALESCE(jsonb_object_agg(m.name, m.newest), '{{}}'::jsonb)
            FROM (
                SELECT u.name, max(u.event COLLATE "C") AS newest
                FROM (
                    SELECT key, value FROM jsonb_each_text(t.metadata -> '{FIELD_EVENTS_KEY}')
                    UNION ALL
                    SELECT key, value
                    FROM jsonb_each_text(excluded.metadata -> '{FIELD_EVENTS_KEY}')
                ) AS u(name, event)
                GROUP BY u.name
            ) AS m
        )),
    created_at = LEAST(t.created_at, excluded.created_at),
    updated_at = GREATEST(t.updated_at, excluded.updated_at)
"""


# --- the batch reduced to one input row per bridge state ---------------------------------------


@dataclass
class _BridgeInput:
    facts: BridgeFacts
    created_at: datetime
    updated_at: datetime
    state: tuple[tuple[datetime, UUID], str] | None = None
    # Per column: (order key, order text, value) of the newest event of the batch carrying it.
    fields: dict[str, tuple[tuple[datetime, UUID], str, Any]] = field(default_factory=dict)

    def add(self, item: Item[BridgeFacts]) -> None:
        event, facts = item.event, item.payload
        key = event.order_key
        self.created_at = min(self.created_at, event.at)
        self.updated_at = max(self.updated_at, event.at)
        if facts.state is not None and (self.state is None or key > self.state[0]):
            self.state = (key, facts.state)
        text = order_text(event)
        for name, value in facts.fields.items():
            held = self.fields.get(name)
            if held is None or key > held[0]:
                self.fields[name] = (key, text, value)

    def row(self) -> tuple[Any, ...]:
        facts = self.facts
        metadata: dict[str, Any] = {
            FIELD_EVENTS_KEY: {name: text for name, (_, text, _) in self.fields.items()}
        }
        if facts.original_correlation_id is not None:
            metadata[ORIGINAL_ID_KEY] = facts.original_correlation_id
        state_at, state_id = self.state[0] if self.state is not None else (None, None)
        return (
            bridge_row_id(facts.node_type, facts.correlation_id),
            facts.node_type,
            facts.correlation_id,
            self.state[1] if self.state is not None else PLACEHOLDER_STATE,
            state_at,
            state_id,
            *(self.fields[name][2] if name in self.fields else None for name in FIELDS),
            jsonb(metadata),
            self.created_at,
            self.updated_at,
        )


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
        model = fields.validate(_BridgePayload, event.payload)
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
        await conn.execute(_UPSERT, *(list(column) for column in zip(*rows, strict=True)))


BRIDGE_STATES = BridgeStatesHandler()
