"""The intelligence FSMs (seed 003, schema ``intelligence``): FSM state and its history.

``INTELLIGENCE_FSM`` (FSM_STATE_TRANSITION, LEASE_ACQUIRED, LEASE_RELEASED) writes
``fsm_state`` (one row per (fsm_type, entity_id)) and ``fsm_state_history`` (one row per
transition event). What it shares with the intelligence workflows handler (correlation text,
payload rules, event time) is in ``handlers/intelligence_fields.py``.

Decisions (event contract sections 3 and 4):

- **FSM validation is static** (rule 4.3): the event's own (fsm_type, from_state, action,
  to_state) must be a transition of :data:`FSM_DEFINITIONS`; anything else, an unknown fsm_type
  included, is ``invalid_transition`` in ``parse``. It is not checked against the stored state:
  that would make the verdict depend on arrival order. Names are matched case-insensitively
  and stored upper case. "FAIL from any phase" of PATTERN_LEARNING is taken as the four phases
  FOUNDATION, MATCHING, VALIDATION, TRACEABILITY (not COMPLETED, not FAILED), like the other
  two FSMs, which fail only from their non-final states.
- **fsm_state** row id = ``uuid5(FOREIGN_ID_NAMESPACE, "fsm/{fsm_type}/{entity_id}")``. The
  state columns follow the newest transition by (event time, event id), kept in
  transition_timestamp / transition_event_id: current_state = its to_state, previous_state =
  its from_state, metadata = its payload ``metadata`` plus ``last_action`` and
  ``correlation_id``. A row that no sink transition has set (a placeholder, or a row another
  writer created) has transition_event_id NULL, so any sink transition wins. created_at =
  the earliest event time of the entity (LEAST), so it is the same in every order.
- **History is written by the sink**, one row per new FSM_STATE_TRANSITION event, because the
  seed's trigger records changes of current_state and, with set-based writes and late events,
  those are not the transitions (migration 017 turns the trigger off for the sink's
  transaction only). from/to/action/correlation are the event's, transitioned_at its time,
  partition_key its UTC date, metadata the state metadata plus ``event_id``. duration_ms is the
  time since the previous transition of the entity in (transitioned_at, event_id) order,
  recomputed with ``lag()`` over every sink-written row of the entities a batch touches, so
  an older event arriving late also fixes its successor's duration. Rows are recognised as the
  sink's by a UUID-shaped ``metadata.event_id``; rows other writers' triggers recorded keep the
  duration their trigger gave.
- **Leases are fenced** (rule 4.4) and order-independent. The final lease columns are a
  function of the set of lease events of the entity: the *top* acquire is the greatest by
  (lease_epoch, event time, event id); the lease is held by it unless a LEASE_RELEASED with
  the same (lease_id, lease_epoch) exists, in which case the columns are NULL. So a lower
  epoch is ignored, a release with another id or epoch is ignored, a release may arrive before
  its acquire, and a late acquire of a released lease does not resurrect it. **Equal epoch,
  different lease_id**: the later acquire (by event time, then id) holds the lease -- the
  seed's own acquire statement reuses epoch 1 for a new lease_id once the old lease expired,
  so the same epoch is a takeover, not a conflict. Equal epoch and lease_id is the same lease
  (a renewal): the latest acquire's lease_expires_at holds. Remembering the top acquire while
  released and the releases that may still matter (epoch >= the top's) needs state beside the
  columns: it is kept in ``fsm_state.metadata.omnisink_lease`` (a key the sink owns; a
  producer's key of that name is dropped). A lease event for an entity without a row creates
  a placeholder: current_state = the FSM's initial state, transition_event_id NULL,
  transition_timestamp = the earliest of its lease events (LEAST) until a transition arrives.
- **Payloads**: a lease event's fsm_type must be a known FSM too, but an unknown one is
  ``schema`` (no transition is involved; its placeholder needs the FSM's initial state).
  lease_epoch is any INTEGER (no CHECK in the seed), lease_expires_at optional (a lease without
  expiry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final
from uuid import UUID, uuid5

import asyncpg
from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

from handlers import fields
from handlers.base import Event, Item, Reject, as_columns, jsonb
from handlers.envelope import FOREIGN_ID_NAMESPACE, EventType
from handlers.intelligence_fields import EntityId, Payload, correlation_text, validate

# Column limits (migration 014).
FSM_NAME_MAX_CHARS: Final = 50
LEASE_ID_MAX_CHARS: Final = 255

# The transaction-local switch migration 017 reads: the sink writes the history itself.
_SINK_WRITES_HISTORY: Final = "SELECT set_config('omnisink.fsm_history', 'sink', true)"

# fsm_state.metadata key holding the lease bookkeeping (module docstring).
LEASE_KEY: Final = "omnisink_lease"

_SHOWN_MAX_CHARS: Final = 50


# --- the FSMs (contract rule 4.3) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FsmDefinition:
    """One intelligence FSM: its initial state and its allowed (from, action, to) triples."""

    initial: str
    transitions: frozenset[tuple[str, str, str]]


def _fail_from(*states: str) -> set[tuple[str, str, str]]:
    return {(state, "FAIL", "FAILED") for state in states}


FSM_DEFINITIONS: Final[Mapping[str, FsmDefinition]] = {
    "INGESTION": FsmDefinition(
        initial="RECEIVED",
        transitions=frozenset(
            {
                ("RECEIVED", "START_PROCESSING", "PROCESSING"),
                ("PROCESSING", "COMPLETE_INDEXING", "INDEXED"),
                ("INDEXED", "REINDEX", "PROCESSING"),
                ("FAILED", "RETRY", "PROCESSING"),
            }
            | _fail_from("RECEIVED", "PROCESSING")
        ),
    ),
    "PATTERN_LEARNING": FsmDefinition(
        initial="FOUNDATION",
        transitions=frozenset(
            {
                ("FOUNDATION", "ADVANCE_TO_MATCHING", "MATCHING"),
                ("MATCHING", "ADVANCE_TO_VALIDATION", "VALIDATION"),
                ("VALIDATION", "ADVANCE_TO_TRACEABILITY", "TRACEABILITY"),
                ("TRACEABILITY", "COMPLETE_LEARNING", "COMPLETED"),
                ("COMPLETED", "RELEARN", "FOUNDATION"),
                ("FAILED", "RETRY", "FOUNDATION"),
            }
            | _fail_from("FOUNDATION", "MATCHING", "VALIDATION", "TRACEABILITY")
        ),
    ),
    "QUALITY_ASSESSMENT": FsmDefinition(
        initial="RAW",
        transitions=frozenset(
            {
                ("RAW", "START_ASSESSMENT", "ASSESSING"),
                ("ASSESSING", "COMPLETE_SCORING", "SCORED"),
                ("SCORED", "STORE_RESULTS", "STORED"),
                ("STORED", "REASSESS", "ASSESSING"),
                ("FAILED", "RETRY", "ASSESSING"),
            }
            | _fail_from("RAW", "ASSESSING", "SCORED")
        ),
    ),
}


def fsm_state_id(fsm_type: str, entity_id: str) -> UUID:
    """The id of an fsm_state row: the same entity gets the same id in every run."""
    return uuid5(FOREIGN_ID_NAMESPACE, f"fsm/{fsm_type}/{entity_id}")


# --- payload models --------------------------------------------------------------------------


def _not_bool(value: Any) -> Any:
    # pydantic's lax int takes true/false as 1/0; an epoch is never a boolean.
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")  # noqa: TRY004 - pydantic wants ValueError
    return value


# FSM types, states and actions: case-insensitive, stored upper case. Their length is not
# checked here: a name outside FSM_DEFINITIONS is rejected before it could reach SQL.
Name = Annotated[str, AfterValidator(fields.upper())]
LeaseId = Annotated[
    fields.NumberText,
    StringConstraints(max_length=LEASE_ID_MAX_CHARS),
    AfterValidator(fields.not_blank),
]
Epoch = Annotated[int, BeforeValidator(_not_bool), Field(ge=fields.INT4_MIN, le=fields.INT4_MAX)]


class _FsmPayload(Payload):
    fsm_type: Name
    entity_id: EntityId


class _TransitionPayload(_FsmPayload):
    from_state: Name
    action: Name
    to_state: Name
    metadata: dict[str, Any] | None = None


class _LeaseReleasedPayload(_FsmPayload):
    lease_id: LeaseId
    lease_epoch: Epoch


class _LeaseAcquiredPayload(_LeaseReleasedPayload):
    lease_expires_at: fields.UtcDatetime | None = None


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN_MAX_CHARS else text[:_SHOWN_MAX_CHARS] + "…"


# --- parsed events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FsmTransition:
    fsm_type: str
    entity_id: str
    from_state: str
    action: str
    to_state: str
    # fsm_state.metadata as this transition sets it: payload metadata, last_action, correlation.
    state_metadata: dict[str, Any]
    correlation_id: str | None


@dataclass(frozen=True, slots=True)
class LeaseAcquired:
    fsm_type: str
    entity_id: str
    lease_id: str
    lease_epoch: int
    lease_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class LeaseReleased:
    fsm_type: str
    entity_id: str
    lease_id: str
    lease_epoch: int


FsmFact = FsmTransition | LeaseAcquired | LeaseReleased


def _transition(event: Event) -> FsmTransition:
    model = validate(_TransitionPayload, event.payload)
    triple = f"{_shown(model.from_state)} -{_shown(model.action)}-> {_shown(model.to_state)}"
    definition = FSM_DEFINITIONS.get(model.fsm_type)
    if definition is None:
        raise Reject(
            "invalid_transition",
            f"{_shown(model.fsm_type)}: {triple}: unknown FSM type "
            f"(known: {', '.join(FSM_DEFINITIONS)})",
        )
    if (model.from_state, model.action, model.to_state) not in definition.transitions:
        raise Reject(
            "invalid_transition",
            f"{model.fsm_type}: {triple} is not a transition of the {model.fsm_type} FSM",
        )
    correlation = correlation_text(event.envelope)
    state_metadata = {k: v for k, v in (model.metadata or {}).items() if k != LEASE_KEY}
    state_metadata["last_action"] = model.action
    if correlation is not None:
        state_metadata["correlation_id"] = correlation
    return FsmTransition(
        fsm_type=model.fsm_type,
        entity_id=model.entity_id,
        from_state=model.from_state,
        action=model.action,
        to_state=model.to_state,
        state_metadata=state_metadata,
        correlation_id=correlation,
    )


def _known_fsm_type(fsm_type: str) -> str:
    if fsm_type not in FSM_DEFINITIONS:
        raise Reject(
            "schema",
            f"fsm_type: unknown FSM type {_shown(fsm_type)!r} "
            f"(known: {', '.join(FSM_DEFINITIONS)})",
        )
    return fsm_type


def parse_fsm(event: Event) -> FsmFact:
    """Validate an FSM transition or lease event."""
    kind = event.event_type
    if kind == EventType.FSM_STATE_TRANSITION:
        return _transition(event)
    if kind == EventType.LEASE_ACQUIRED:
        acquired = validate(_LeaseAcquiredPayload, event.payload)
        return LeaseAcquired(
            fsm_type=_known_fsm_type(acquired.fsm_type),
            entity_id=acquired.entity_id,
            lease_id=acquired.lease_id,
            lease_epoch=acquired.lease_epoch,
            lease_expires_at=acquired.lease_expires_at,
        )
    if kind == EventType.LEASE_RELEASED:
        released = validate(_LeaseReleasedPayload, event.payload)
        return LeaseReleased(
            fsm_type=_known_fsm_type(released.fsm_type),
            entity_id=released.entity_id,
            lease_id=released.lease_id,
            lease_epoch=released.lease_epoch,
        )
    raise ValueError(f"not an intelligence FSM event type: {kind}")


# --- SQL: fsm_state --------------------------------------------------------------------------


def _lease_order(top: str) -> str:
    return (
        f"(({top}->>'lease_epoch')::integer, ({top}->>'event_at')::timestamptz, "
        f"({top}->>'event_id')::uuid)"
    )


def _merge_leases(stored: str, incoming: str) -> str:
    """SQL: two lease bookkeeping objects merged (NULL when both are NULL).

    ``{"top": <greatest acquire by (epoch, time, id)> | null, "released": [[lease_id, epoch],
    ...]}``, releases with an epoch below the top's dropped (no acquire they could match can
    win any more) and the rest distinct and sorted, so that the merge is commutative and
    associative: any split of the events into batches, in any order, gives the same object.
    """
    return f"""(
        SELECT CASE WHEN {stored} IS NULL AND {incoming} IS NULL THEN NULL
            ELSE jsonb_build_object('top', m.top, 'released', COALESCE((
                SELECT jsonb_agg(r.pair ORDER BY (r.pair->>0) COLLATE "C", (r.pair->>1)::integer)
                FROM (
                    SELECT jsonb_array_elements(COALESCE({stored}->'released', '[]'::jsonb))
                    UNION
                    SELECT jsonb_array_elements(COALESCE({incoming}->'released', '[]'::jsonb))
                ) AS r(pair)
                WHERE m.top IS NULL
                    OR (r.pair->>1)::integer >= (m.top->>'lease_epoch')::integer
            ), '[]'::jsonb))
        END
        FROM (
            SELECT CASE
                WHEN tops.stored_top IS NULL THEN tops.incoming_top
                WHEN tops.incoming_top IS NULL THEN tops.stored_top
                WHEN {_lease_order("tops.incoming_top")} > {_lease_order("tops.stored_top")}
                    THEN tops.incoming_top
                ELSE tops.stored_top
            END AS top
            FROM (
                SELECT NULLIF({stored}->'top', 'null'::jsonb) AS stored_top,
                       NULLIF({incoming}->'top', 'null'::jsonb) AS incoming_top
            ) AS tops
        ) AS m
    )"""


def _lease_held(part: str) -> str:
    """SQL: whether the bookkeeping object's top acquire holds the lease (not released)."""
    return f"""(jsonb_typeof({part}->'top') = 'object' AND NOT EXISTS (
        SELECT 1 FROM jsonb_array_elements({part}->'released') AS r(pair)
        WHERE r.pair = jsonb_build_array({part}->'top'->'lease_id', {part}->'top'->'lease_epoch')
    ))"""


def _lease_columns(part: str) -> str:
    """SQL: lease_id, lease_epoch, lease_expires_at as the bookkeeping object says."""
    held = _lease_held(part)
    return f"""
        CASE WHEN {held} THEN {part}->'top'->>'lease_id' END,
        CASE WHEN {held} THEN ({part}->'top'->>'lease_epoch')::integer END,
        CASE WHEN {held} THEN ({part}->'top'->>'lease_expires_at')::timestamptz END"""


def _with_lease(base: str, part: str) -> str:
    """SQL: fsm_state.metadata from the state metadata and the lease bookkeeping."""
    return f"""CASE WHEN {part} IS NULL THEN {base}
        ELSE COALESCE({base}, '{{}}'::jsonb) || jsonb_build_object('{LEASE_KEY}', {part}) END"""


_TRANSITION_WINS: Final = """(excluded.transition_event_id IS NOT NULL
    AND (t.transition_event_id IS NULL
        OR (excluded.transition_timestamp, excluded.transition_event_id)
            > (t.transition_timestamp, t.transition_event_id)))"""

# The ON CONFLICT side: the stored row merged with the batch's row (``excluded``).
_LEASE_MERGED: Final = _merge_leases(
    f"t.metadata->'{LEASE_KEY}'", f"excluded.metadata->'{LEASE_KEY}'"
)
_METADATA_MERGED: Final = _with_lease(
    f"(CASE WHEN m.wins THEN excluded.metadata ELSE t.metadata END) - '{LEASE_KEY}'",
    "m.lease_part",
)

# One row per entity of the batch (the batch reduced in Python: the newest transition, the
# earliest event, the batch's own lease bookkeeping). The lease bookkeeping is normalised by
# the same SQL merge on insert as on conflict, so both paths store identical objects. A row
# another writer created counts as having no sink transition: any sink transition wins.
_UPSERT_FSM_STATE: Final = f"""
WITH i AS (
    SELECT u.*, {_merge_leases("NULL::jsonb", "u.lease::jsonb")} AS lease_part
    FROM unnest(
        $1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
        $7::uuid[], $8::text[], $9::text[], $10::timestamptz[]
    ) AS u(
        id, fsm_type, entity_id, current_state, previous_state, transition_timestamp,
        transition_event_id, state_metadata, lease, created_at
    )
)
INSERT INTO intelligence.fsm_state AS t (
    id, fsm_type, entity_id, current_state, previous_state, transition_timestamp,
    transition_event_id, metadata, lease_id, lease_epoch, lease_expires_at, created_at
)
SELECT i.id, i.fsm_type, i.entity_id, i.current_state, i.previous_state,
    i.transition_timestamp, i.transition_event_id,
    {_with_lease("i.state_metadata::jsonb", "i.lease_part")},
    {_lease_columns("i.lease_part")},
    i.created_at
FROM i
ORDER BY i.fsm_type, i.entity_id
ON CONFLICT (fsm_type, entity_id) DO UPDATE SET (
    current_state, previous_state, transition_timestamp, transition_event_id, metadata,
    lease_id, lease_epoch, lease_expires_at, created_at
) = (
    SELECT
        CASE WHEN m.wins THEN excluded.current_state ELSE t.current_state END,
        CASE WHEN m.wins THEN excluded.previous_state ELSE t.previous_state END,
        CASE
            WHEN m.wins THEN excluded.transition_timestamp
            -- Two placeholders: the earliest lease event, whichever arrived first.
            WHEN t.transition_event_id IS NULL AND excluded.transition_event_id IS NULL
                THEN LEAST(t.transition_timestamp, excluded.transition_timestamp)
            ELSE t.transition_timestamp
        END,
        CASE WHEN m.wins THEN excluded.transition_event_id ELSE t.transition_event_id END,
        {_METADATA_MERGED},
        {_lease_columns("m.lease_part")},
        LEAST(t.created_at, excluded.created_at)
    FROM (SELECT {_TRANSITION_WINS} AS wins, {_LEASE_MERGED} AS lease_part) AS m
)
"""

_UUID_PATTERN: Final = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

# One history row per new transition event, and every duration of the touched entities
# recomputed in the same statement: the new rows' from the timeline they join, and the old
# rows' whose predecessor changed (a late older event). The fsm_state upsert before this
# statement locked each entity's row, so two transactions never interleave one entity's
# history (READ COMMITTED: this statement's snapshot sees the other's committed rows).
_INSERT_HISTORY: Final = f"""
WITH n AS (
    SELECT *
    FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
        $7::uuid[], $8::text[], $9::text[]
    ) AS n(
        fsm_type, entity_id, from_state, to_state, action, transitioned_at, event_id,
        correlation_id, metadata
    )
), timeline AS (
    SELECT h.id, h.fsm_type, h.entity_id, h.transitioned_at,
        (h.metadata->>'event_id')::uuid AS event_id
    FROM intelligence.fsm_state_history AS h
    WHERE (h.fsm_type, h.entity_id) IN (SELECT DISTINCT n.fsm_type, n.entity_id FROM n)
        AND h.metadata->>'event_id' ~ '{_UUID_PATTERN}'
    UNION ALL
    SELECT NULL, n.fsm_type, n.entity_id, n.transitioned_at, n.event_id FROM n
), lagged AS (
    SELECT timeline.*,
        (EXTRACT(EPOCH FROM timeline.transitioned_at - lag(timeline.transitioned_at) OVER (
            PARTITION BY timeline.fsm_type, timeline.entity_id
            ORDER BY timeline.transitioned_at, timeline.event_id
        )) * 1000)::double precision AS duration_ms
    FROM timeline
), fixed AS (
    UPDATE intelligence.fsm_state_history AS h
    SET duration_ms = lagged.duration_ms
    FROM lagged
    WHERE lagged.id = h.id AND h.duration_ms IS DISTINCT FROM lagged.duration_ms
)
INSERT INTO intelligence.fsm_state_history (
    fsm_type, entity_id, from_state, to_state, action, transitioned_at, duration_ms,
    correlation_id, metadata, success, partition_key
)
SELECT n.fsm_type, n.entity_id, n.from_state, n.to_state, n.action, n.transitioned_at,
    lagged.duration_ms, n.correlation_id, n.metadata::jsonb, TRUE,
    (n.transitioned_at AT TIME ZONE 'UTC')::date
FROM n JOIN lagged ON lagged.id IS NULL AND lagged.event_id = n.event_id
ORDER BY n.fsm_type, n.entity_id, n.transitioned_at, n.event_id
"""


# --- the FSM batch reduced to one input row per entity ---------------------------------------


@dataclass
class _EntityInput:
    """Everything a batch says about one fsm_state row."""

    first_at: datetime
    transition: Item[FsmTransition] | None = None
    first_lease_at: datetime | None = None
    top: Item[LeaseAcquired] | None = None
    released: set[tuple[str, int]] = field(default_factory=set)

    def lease_part(self) -> dict[str, Any] | None:
        """The batch's own lease bookkeeping (SQL normalises and merges it)."""
        if self.first_lease_at is None:
            return None
        top = None
        if self.top is not None:
            acquired = self.top.payload
            top = {
                "lease_id": acquired.lease_id,
                "lease_epoch": acquired.lease_epoch,
                "lease_expires_at": acquired.lease_expires_at.isoformat()
                if acquired.lease_expires_at is not None
                else None,
                "event_at": self.top.event.at.isoformat(),
                "event_id": str(self.top.event.event_id),
            }
        return {"top": top, "released": [list(pair) for pair in sorted(self.released)]}


def _acquire_order(item: Item[LeaseAcquired]) -> tuple[int, datetime, UUID]:
    return (item.payload.lease_epoch, item.event.at, item.event.event_id)


def _reduce_fsm(items: Sequence[Item[FsmFact]]) -> dict[tuple[str, str], _EntityInput]:
    entities: dict[tuple[str, str], _EntityInput] = {}
    for item in items:
        fact = item.payload
        at = item.event.at
        row = entities.get((fact.fsm_type, fact.entity_id))
        if row is None:
            row = entities[(fact.fsm_type, fact.entity_id)] = _EntityInput(first_at=at)
        row.first_at = min(row.first_at, at)
        if isinstance(fact, FsmTransition):
            if row.transition is None or item.event.order_key > row.transition.event.order_key:
                row.transition = Item(item.event, fact)
            continue
        row.first_lease_at = at if row.first_lease_at is None else min(row.first_lease_at, at)
        if isinstance(fact, LeaseAcquired):
            acquired = Item(item.event, fact)
            if row.top is None or _acquire_order(acquired) > _acquire_order(row.top):
                row.top = acquired
        else:
            row.released.add((fact.lease_id, fact.lease_epoch))
    return entities


def _fsm_state_columns(entities: dict[tuple[str, str], _EntityInput]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for (fsm_type, entity_id), row in sorted(entities.items()):
        transition = row.transition
        values: list[Any] = [
            fsm_state_id(fsm_type, entity_id),
            fsm_type,
            entity_id,
            transition.payload.to_state if transition else FSM_DEFINITIONS[fsm_type].initial,
            transition.payload.from_state if transition else None,
            transition.event.at if transition else row.first_lease_at,
            transition.event.event_id if transition else None,
            jsonb(transition.payload.state_metadata) if transition else None,
            jsonb(row.lease_part()),
            row.first_at,
        ]
        rows.append(values)
    return as_columns(rows, width=10)


def _history_columns(transitions: list[Item[FsmTransition]]) -> list[list[Any]]:
    return [
        [t.payload.fsm_type for t in transitions],
        [t.payload.entity_id for t in transitions],
        [t.payload.from_state for t in transitions],
        [t.payload.to_state for t in transitions],
        [t.payload.action for t in transitions],
        [t.event.at for t in transitions],
        [t.event.event_id for t in transitions],
        [t.payload.correlation_id for t in transitions],
        [
            jsonb({**t.payload.state_metadata, "event_id": str(t.event.event_id)})
            for t in transitions
        ],
    ]


class IntelligenceFsmHandler:
    """Writes intelligence.fsm_state and fsm_state_history. See the module docstring."""

    name = "intelligence_fsm"
    event_types = frozenset(
        {
            EventType.FSM_STATE_TRANSITION.value,
            EventType.LEASE_ACQUIRED.value,
            EventType.LEASE_RELEASED.value,
        }
    )

    def parse(self, event: Event) -> FsmFact:
        return parse_fsm(event)

    async def apply(self, conn: asyncpg.Connection, items: Sequence[Item[FsmFact]]) -> None:
        # Before any fsm_state write: a placeholder insert would fire the trigger too.
        await conn.execute(_SINK_WRITES_HISTORY)
        entities = _reduce_fsm(items)
        await conn.execute(_UPSERT_FSM_STATE, *_fsm_state_columns(entities))
        transitions = [
            Item(i.event, i.payload) for i in items if isinstance(i.payload, FsmTransition)
        ]
        if transitions:
            await conn.execute(_INSERT_HISTORY, *_history_columns(transitions))


INTELLIGENCE_FSM: Final = IntelligenceFsmHandler()
