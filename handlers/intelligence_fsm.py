"""The intelligence FSMs (seed 003, schema ``intelligence``): FSM state and its history.

``INTELLIGENCE_FSM`` (FSM_STATE_TRANSITION, LEASE_ACQUIRED, LEASE_RELEASED) writes
``fsm_state`` (one row per (fsm_type, entity_id)) and ``fsm_state_history`` (one row per
transition event). What it shares with the intelligence workflows handler (correlation text,
payload rules, event time) is in ``handlers/intelligence_fields.py``.

Decisions (event contract sections 3 and 4):

- **FSM validation is static** (rule 4.3): the event's own (fsm_type, from_state, action,
  to_state) must be a transition of :data:`FSM_DEFINITIONS` (the reducer's FSM_STATE_CHANGED
  names the two states ``previous_state`` / ``current_state``: read alike); anything else, an
  unknown fsm_type included, is ``invalid_transition`` in ``parse``. It is not checked
  against the stored state: that would make the verdict depend on arrival order. Names are
  matched case-insensitively and stored upper case. "FAIL from any phase" of PATTERN_LEARNING
  is taken as the four phases FOUNDATION, MATCHING, VALIDATION, TRACEABILITY (not COMPLETED,
  not FAILED), like the other two FSMs, which fail only from their non-final states.
- **fsm_state** row id = ``uuid5(FOREIGN_ID_NAMESPACE, "fsm/{fsm_type}/{entity_id}")``. The
  state columns follow the newest transition by (event time, event id), kept in
  transition_timestamp / transition_event_id: current_state = its to_state, previous_state =
  its from_state, metadata = its payload ``metadata`` plus ``last_action`` and
  ``correlation_id``. A row that no sink transition has set (a placeholder, or a row another
  writer created) has transition_event_id NULL, so any sink transition wins. created_at =
  the earliest event time of the entity (LEAST), so it is the same in every order.
- **History is written by the sink**, one row per FSM_STATE_TRANSITION event (an event whose
  row is there already is not written again: ``omnisink replay --reapply``), because the
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
  seed's lease columns (NULL once released, and set by other writers too): the sink keeps it in
  columns of its own (migration 020): lease_event_at / lease_event_id (the top acquire's event)
  with its lease_top_id, lease_top_epoch and lease_top_expires_at, and lease_released (those
  releases, sorted; NULL when there are none). metadata is the producer's: a key named like the
  sink's former bookkeeping (``omnisink_lease``) is plain data. A batch's own lease state is
  reduced in Python; on conflict the SQL merges it with the stored one (the greater top, the
  union of the releases at or above its epoch), a commutative and associative merge, so any
  split of the events into batches, in any order, gives the same columns. A lease event for an
  entity without a row creates a placeholder: current_state = the FSM's initial state,
  transition_event_id NULL, transition_timestamp = the earliest of its lease events (LEAST)
  until a transition arrives.
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
from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, StringConstraints

from handlers import fields
from handlers.base import Event, Item, Reject, jsonb
from handlers.envelope import FOREIGN_ID_NAMESPACE, EventType
from handlers.intelligence_fields import EntityId, Payload, correlation_text, validate
from handlers.sql import Sql, Unnest

# Column limits (migration 014).
FSM_NAME_MAX_CHARS: Final = 50
LEASE_ID_MAX_CHARS: Final = 255

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
    # The reducer's own transition facts (FSM_STATE_CHANGED) name the states previous_state and
    # current_state; from_state / to_state are read first when both are sent.
    from_state: Name = Field(validation_alias=AliasChoices("from_state", "previous_state"))
    action: Name
    to_state: Name = Field(validation_alias=AliasChoices("to_state", "current_state"))
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
    state_metadata = dict(model.metadata or {})
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


# --- SQL -------------------------------------------------------------------------------------

# The transaction-local switch migration 017 reads: the sink writes the history itself.
_SINK_WRITES_HISTORY: Final = Sql(
    "SELECT set_config('omnisink.fsm_history', 'sink', true)",
    name="intelligence_fsm.sink_writes_history",
)

# One row per entity of the batch (the batch reduced in Python: the newest transition, the
# earliest event, the batch's own lease state with the lease columns it gives). On conflict the
# stored row is merged with the batch's (``excluded``): each aspect's columns are those of the
# row whose event wins it (``s``: the transition, ``l``: the top acquire), and the lease columns
# follow the merged top and releases (``m``). A row another writer created counts as having no
# sink transition and no lease state: any sink event wins.
_UPSERT_FSM_STATE: Final = Unnest(
    """
INSERT INTO intelligence.fsm_state AS t (
    id, fsm_type, entity_id, current_state, previous_state, transition_timestamp,
    transition_event_id, metadata, lease_id, lease_epoch, lease_expires_at, lease_event_at,
    lease_event_id, lease_top_id, lease_top_epoch, lease_top_expires_at, lease_released,
    created_at
)
SELECT v.id, v.fsm_type, v.entity_id, v.current_state, v.previous_state,
    v.transition_timestamp, v.transition_event_id, v.metadata, v.lease_id, v.lease_epoch,
    v.lease_expires_at, v.lease_event_at, v.lease_event_id, v.lease_top_id, v.lease_top_epoch,
    v.lease_top_expires_at,
    (
        SELECT array_agg(r ORDER BY r)
        FROM jsonb_populate_recordset(NULL::omnisink.lease_key, v.lease_released) AS r
    ),
    v.created_at
FROM unnest(
    $1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
    $7::uuid[], $8::jsonb[], $9::text[], $10::integer[], $11::timestamptz[],
    $12::timestamptz[], $13::uuid[], $14::text[], $15::integer[], $16::timestamptz[],
    $17::jsonb[], $18::timestamptz[]
) AS v(
    id, fsm_type, entity_id, current_state, previous_state, transition_timestamp,
    transition_event_id, metadata, lease_id, lease_epoch, lease_expires_at, lease_event_at,
    lease_event_id, lease_top_id, lease_top_epoch, lease_top_expires_at, lease_released,
    created_at
)
ORDER BY v.fsm_type, v.entity_id
ON CONFLICT (fsm_type, entity_id) DO UPDATE SET (
    current_state, previous_state, transition_timestamp, transition_event_id, metadata,
    lease_id, lease_epoch, lease_expires_at, lease_event_at, lease_event_id, lease_top_id,
    lease_top_epoch, lease_top_expires_at, lease_released, created_at
) = (
    SELECT s.current_state, s.previous_state,
        CASE
            -- Two placeholders: the earliest lease event, whichever arrived first.
            WHEN t.transition_event_id IS NULL AND excluded.transition_event_id IS NULL
                THEN LEAST(t.transition_timestamp, excluded.transition_timestamp)
            ELSE s.transition_timestamp
        END,
        s.transition_event_id, s.metadata,
        CASE WHEN m.held THEN l.lease_top_id END,
        CASE WHEN m.held THEN l.lease_top_epoch END,
        CASE WHEN m.held THEN l.lease_top_expires_at END,
        l.lease_event_at, l.lease_event_id, l.lease_top_id, l.lease_top_epoch,
        l.lease_top_expires_at, m.released,
        LEAST(t.created_at, excluded.created_at)
    FROM (
        -- A placeholder's transition_timestamp is its earliest lease event: only a sink
        -- transition (transition_event_id set) holds an event time.
        SELECT (CASE
            WHEN excluded.transition_event_id IS NOT NULL AND omnisink.newer(
                excluded.transition_timestamp, excluded.transition_event_id,
                CASE WHEN t.transition_event_id IS NOT NULL THEN t.transition_timestamp END,
                t.transition_event_id
            ) THEN excluded
            ELSE t
        END).*
    ) AS s, (
        -- The top acquire: the greater by (lease_epoch, event time, event id).
        SELECT (CASE
            WHEN excluded.lease_event_id IS NOT NULL AND (
                t.lease_event_id IS NULL
                OR excluded.lease_top_epoch > t.lease_top_epoch
                OR excluded.lease_top_epoch = t.lease_top_epoch AND omnisink.newer(
                    excluded.lease_event_at, excluded.lease_event_id,
                    t.lease_event_at, t.lease_event_id
                )
            ) THEN excluded
            ELSE t
        END).*
    ) AS l, LATERAL (
        SELECT r.released,
            l.lease_event_id IS NOT NULL
                AND ROW(l.lease_top_id, l.lease_top_epoch)::omnisink.lease_key
                    <> ALL (COALESCE(r.released, '{}')) AS held
        FROM (
            -- A release below the top's epoch matches no acquire that could still win.
            SELECT array_agg(DISTINCT k ORDER BY k) AS released
            FROM unnest(t.lease_released || excluded.lease_released) AS k
            WHERE l.lease_top_epoch IS NULL OR k.lease_epoch >= l.lease_top_epoch
        ) AS r
    ) AS m
)
""",
    name="intelligence_fsm.upsert_fsm_state",
)

# One history row per new transition event, and every duration of the touched entities
# recomputed in the same statement: the new rows' from the timeline they join, and the old
# rows' whose predecessor changed (a late older event). The fsm_state upsert before this
# statement locked each entity's row, so two transactions never interleave one entity's
# history (READ COMMITTED: this statement's snapshot sees the other's committed rows). A row
# is the sink's when its metadata.event_id is UUID-shaped.
_INSERT_HISTORY: Final = Unnest(
    """
WITH n AS (
    SELECT *
    FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
        $7::uuid[], $8::text[], $9::jsonb[]
    ) AS n(
        fsm_type, entity_id, from_state, to_state, action, transitioned_at, event_id,
        correlation_id, metadata
    )
), held AS (
    SELECT h.id, h.fsm_type, h.entity_id, h.transitioned_at,
        (h.metadata->>'event_id')::uuid AS event_id
    FROM intelligence.fsm_state_history AS h
    WHERE (h.fsm_type, h.entity_id) IN (SELECT DISTINCT n.fsm_type, n.entity_id FROM n)
        AND h.metadata->>'event_id'
            ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
), fresh AS (
    SELECT n.* FROM n
    WHERE NOT EXISTS (
        SELECT 1 FROM held
        WHERE held.fsm_type = n.fsm_type AND held.entity_id = n.entity_id
            AND held.event_id = n.event_id
    )
), timeline AS (
    SELECT * FROM held
    UNION ALL
    SELECT NULL, f.fsm_type, f.entity_id, f.transitioned_at, f.event_id FROM fresh AS f
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
    lagged.duration_ms, n.correlation_id, n.metadata, TRUE,
    (n.transitioned_at AT TIME ZONE 'UTC')::date
FROM fresh AS n JOIN lagged ON lagged.id IS NULL AND lagged.event_id = n.event_id
ORDER BY n.fsm_type, n.entity_id, n.transitioned_at, n.event_id
""",
    name="intelligence_fsm.insert_history",
)


# --- the batch reduced to one input row per entity -------------------------------------------


def _acquire_order(item: Item[LeaseAcquired]) -> tuple[int, datetime, UUID]:
    return (item.payload.lease_epoch, item.event.at, item.event.event_id)


@dataclass
class _EntityInput:
    """Everything a batch says about one fsm_state row."""

    first_at: datetime
    transition: Item[FsmTransition] | None = None
    first_lease_at: datetime | None = None
    top: Item[LeaseAcquired] | None = None
    released: set[tuple[str, int]] = field(default_factory=set)

    def add(self, item: Item[FsmFact]) -> None:
        fact = item.payload
        at = item.event.at
        self.first_at = min(self.first_at, at)
        if isinstance(fact, FsmTransition):
            if self.transition is None or item.event.order_key > self.transition.event.order_key:
                self.transition = Item(item.event, fact)
            return
        self.first_lease_at = at if self.first_lease_at is None else min(self.first_lease_at, at)
        if isinstance(fact, LeaseAcquired):
            acquired = Item(item.event, fact)
            if self.top is None or _acquire_order(acquired) > _acquire_order(self.top):
                self.top = acquired
        else:
            self.released.add((fact.lease_id, fact.lease_epoch))

    def state_columns(self, fsm_type: str) -> dict[str, Any]:
        """The state columns as the batch's newest transition sets them, else a placeholder's."""
        transition = self.transition
        if transition is None:
            return {
                "current_state": FSM_DEFINITIONS[fsm_type].initial,
                "previous_state": None,
                "transition_timestamp": self.first_lease_at,
                "transition_event_id": None,
                "metadata": None,
            }
        return {
            "current_state": transition.payload.to_state,
            "previous_state": transition.payload.from_state,
            "transition_timestamp": transition.event.at,
            "transition_event_id": transition.event.event_id,
            "metadata": jsonb(transition.payload.state_metadata),
        }

    def lease_columns(self) -> dict[str, Any]:
        """The batch's own lease state (the SQL merges it with the stored one): its top
        acquire, the releases at or above the top's epoch, and the lease columns they give."""
        top = self.top.payload if self.top else None
        released = sorted(p for p in self.released if top is None or p[1] >= top.lease_epoch)
        held = top if top and (top.lease_id, top.lease_epoch) not in self.released else None
        return {
            "lease_id": held.lease_id if held else None,
            "lease_epoch": held.lease_epoch if held else None,
            "lease_expires_at": held.lease_expires_at if held else None,
            "lease_event_at": self.top.event.at if self.top else None,
            "lease_event_id": self.top.event.event_id if self.top else None,
            "lease_top_id": top.lease_id if top else None,
            "lease_top_epoch": top.lease_epoch if top else None,
            "lease_top_expires_at": top.lease_expires_at if top else None,
            "lease_released": jsonb([{"lease_id": i, "lease_epoch": e} for i, e in released])
            if released
            else None,
        }


def _fsm_state_rows(items: Sequence[Item[FsmFact]]) -> list[dict[str, Any]]:
    entities: dict[tuple[str, str], _EntityInput] = {}
    for item in items:
        key = (item.payload.fsm_type, item.payload.entity_id)
        entity = entities.get(key)
        if entity is None:
            entity = entities[key] = _EntityInput(first_at=item.event.at)
        entity.add(item)
    return [
        {
            "id": fsm_state_id(fsm_type, entity_id),
            "fsm_type": fsm_type,
            "entity_id": entity_id,
            **entity.state_columns(fsm_type),
            **entity.lease_columns(),
            "created_at": entity.first_at,
        }
        for (fsm_type, entity_id), entity in sorted(entities.items())
    ]


def _history_rows(items: Sequence[Item[FsmFact]]) -> list[dict[str, Any]]:
    return [
        {
            "fsm_type": fact.fsm_type,
            "entity_id": fact.entity_id,
            "from_state": fact.from_state,
            "to_state": fact.to_state,
            "action": fact.action,
            "transitioned_at": item.event.at,
            "event_id": item.event.event_id,
            "correlation_id": fact.correlation_id,
            "metadata": jsonb({**fact.state_metadata, "event_id": str(item.event.event_id)}),
        }
        for item in items
        if isinstance(fact := item.payload, FsmTransition)
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
        await conn.execute(_SINK_WRITES_HISTORY.sql)
        rows = _fsm_state_rows(items)
        await conn.execute(_UPSERT_FSM_STATE.sql, *_UPSERT_FSM_STATE.args(rows))
        history = _history_rows(items)
        if history:
            await conn.execute(_INSERT_HISTORY.sql, *_INSERT_HISTORY.args(history))


INTELLIGENCE_FSM: Final = IntelligenceFsmHandler()
