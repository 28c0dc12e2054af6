"""node_registrations: NODE_INTROSPECTION and NODE_HEARTBEAT, one row per node.

What is written (contract section 3, seed 000 table 5, migrations 005 and 012):

- The row of a node is keyed by ``node_id``; ``id = uuid5(FOREIGN_ID_NAMESPACE, "node/" + node
  uuid)`` so ids match across runs. A node id that is not a UUID maps to its stable uuid5
  (``handlers.base.as_uuid``) and the text is kept in ``metadata.original_node_id``.
- **state aspect** (``state_event_at`` / ``state_event_id``): the newest NODE_INTROSPECTION sets
  node_type, node_version, endpoint_url and the node's facts in ``metadata`` (capabilities,
  endpoints and every other payload key not stored in a column). ``registered_at`` is the
  LEAST of the introspection times.
- **heartbeat aspect** (``heartbeat_event_at`` / ``heartbeat_event_id``): the newest NODE_HEARTBEAT
  sets ``metadata.last_heartbeat`` (uptime, resource usage, active operations and the rest of
  its payload). Heartbeats of one node in one batch are coalesced into one write.
- **health_status** is written by both aspects: it is the value of the newest event of either
  type, by (event_timestamp, event_id), whatever the arrival order. An introspection says
  ``HEALTHY`` unless its payload gives a health_status.

Decisions where the contract is silent:

- **Health values.** Stored upper case. Allowed: the seed's HEALTHY, DEGRADED, UNHEALTHY, plus
  CRITICAL and RECOVERING, which the bridge's own heartbeat model (``EnumNodeHealthStatus`` of
  omninode_bridge) sends; anything else is a ``schema`` reject naming the allowed values.
- **node_type** is stored upper case (the seed's vocabulary: ORCHESTRATOR, REDUCER, ...; the
  producers send ``reducer``), as bridge_states does, so one node type is one value.
- **last_heartbeat** is the newest time the node was heard from, introspection included
  (GREATEST of both types' event times): the seed's own registration sets it, and its
  "discover healthy nodes" query would otherwise skip a node registered but not yet beating.
- **A heartbeat before any introspection** creates a placeholder: node_type from the heartbeat
  (the newest heartbeat's while no introspection has arrived), node_version ``'unknown'``,
  endpoint_url ``''``, registered_at NULL and a NULL state ordering pair, so the introspection
  fills them in whenever it arrives.
- **node_version** may arrive as a semver object (``{"major", "minor", "patch"}``, as later
  producers send ``ModelSemVer``): it is stored as ``"major.minor.patch"``. The bridge's
  introspection sends no ``node_version``: its version is the payload's ``metadata.version``,
  read when ``node_version`` is missing. That one is the producer's metadata, not a claim on
  the column, so a value that does not fit (not text or semver, empty, over 20 characters)
  leaves ``'unknown'`` rather than refusing the registration; it stays in ``metadata``.
  Neither: ``'unknown'``.
- **endpoint_url**, when not given, is taken from the introspection's ``endpoints`` map
  (``api``, else ``health``, else the first name in sorted order); none: ``''``.
- ``metadata.last_heartbeat`` is reserved: an introspection key of that name is not kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final
from uuid import UUID, uuid5

import asyncpg
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from handlers import fields
from handlers.base import Event, Item, Reject, as_uuid, jsonb
from handlers.envelope import FOREIGN_ID_NAMESPACE, EventType
from handlers.sql import Unnest

# Column sizes of node_registrations (migration 005).
NODE_TYPE_MAX_CHARS: Final = 50
NODE_VERSION_MAX_CHARS: Final = 20
ENDPOINT_URL_MAX_CHARS: Final = 500

# The seed's values, and the two more the bridge's heartbeat producer sends.
HEALTH_VALUES: Final = ("HEALTHY", "DEGRADED", "UNHEALTHY", "CRITICAL", "RECOVERING")
INTROSPECTION_HEALTH: Final = "HEALTHY"
PLACEHOLDER_VERSION: Final = "unknown"
PLACEHOLDER_ENDPOINT: Final = ""
HEARTBEAT_KEY: Final = "last_heartbeat"
ORIGINAL_ID_KEY: Final = "original_node_id"

# Payload keys stored in columns (or identifying the node), not repeated in metadata.
_INTROSPECTION_COLUMNS: Final = frozenset(
    {"node_id", "node_type", "node_version", "endpoint_url", "health_status", HEARTBEAT_KEY}
)
_HEARTBEAT_COLUMNS: Final = frozenset({"node_id", "node_type", "health_status"})
_ENDPOINT_PREFERENCE: Final = ("api", "health")


def node_row_id(node: UUID) -> UUID:
    """The ``id`` of a node's row: stable across runs, replays and sinks."""
    return uuid5(FOREIGN_ID_NAMESPACE, f"node/{node}")


# --- payloads ----------------------------------------------------------------------------------


def _health(value: str) -> str:
    upper = value.strip().upper()
    if upper not in HEALTH_VALUES:
        raise ValueError(f"must be one of {', '.join(v.lower() for v in HEALTH_VALUES)}")
    return upper


def _semver_text(value: Any) -> Any:
    if isinstance(value, dict) and {"major", "minor", "patch"} <= value.keys():
        return f"{value['major']}.{value['minor']}.{value['patch']}"
    return value


NodeId = Annotated[str, AfterValidator(fields.not_blank)]
NodeType = Annotated[str, AfterValidator(fields.upper(NODE_TYPE_MAX_CHARS))]
Health = Annotated[str, AfterValidator(_health)]
NodeVersion = Annotated[
    str,
    BeforeValidator(_semver_text),
    StringConstraints(min_length=1, max_length=NODE_VERSION_MAX_CHARS),
]
EndpointUrl = Annotated[str, StringConstraints(max_length=ENDPOINT_URL_MAX_CHARS)]
_METADATA_VERSION: Final = TypeAdapter(NodeVersion, config=ConfigDict(coerce_numbers_to_str=True))


class _NodePayload(BaseModel):
    # Producers we do not control add fields: extra keys are allowed (and kept in metadata).
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    node_id: NodeId
    node_type: NodeType


class _IntrospectionPayload(_NodePayload):
    node_version: NodeVersion | None = None
    endpoint_url: EndpointUrl | None = None
    endpoints: dict[str, Any] | None = None
    capabilities: dict[str, Any] | None = None
    health_status: Health | None = None


class _HeartbeatPayload(_NodePayload):
    health_status: Health


@dataclass(frozen=True, slots=True)
class NodeRef:
    uuid: UUID
    # The producer's text when it was not a UUID (kept in metadata.original_node_id).
    original_id: str | None


@dataclass(frozen=True, slots=True)
class Introspection:
    node: NodeRef
    node_type: str
    node_version: str
    endpoint_url: str
    health_status: str
    facts: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    node: NodeRef
    node_type: str
    health_status: str
    facts: dict[str, Any]


NodePayload = Introspection | Heartbeat


def _node_ref(text: str) -> NodeRef:
    try:
        return NodeRef(uuid=UUID(text), original_id=None)
    except ValueError:
        return NodeRef(uuid=as_uuid(text), original_id=text)


def _version_of(model: _IntrospectionPayload, payload: dict[str, Any]) -> str:
    if model.node_version is not None:
        return model.node_version
    metadata = payload.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("version") is None:
        return PLACEHOLDER_VERSION
    try:
        return _METADATA_VERSION.validate_python(metadata["version"])
    except ValidationError:
        return PLACEHOLDER_VERSION


def _endpoint_of(model: _IntrospectionPayload) -> str:
    if model.endpoint_url is not None:
        return model.endpoint_url
    endpoints = {k: v for k, v in (model.endpoints or {}).items() if isinstance(v, str)}
    names: list[str] = [n for n in _ENDPOINT_PREFERENCE if n in endpoints] or sorted(endpoints)
    if not names:
        return PLACEHOLDER_ENDPOINT
    url = endpoints[names[0]]
    if len(url) > ENDPOINT_URL_MAX_CHARS:
        raise Reject(
            "schema",
            f"endpoints.{names[0]}: longer than {ENDPOINT_URL_MAX_CHARS} characters "
            "(endpoint_url is taken from it)",
        )
    return url


def _facts(payload: dict[str, Any], stored: frozenset[str], node: NodeRef) -> dict[str, Any]:
    facts = {k: v for k, v in payload.items() if k not in stored}
    if node.original_id is not None:
        facts[ORIGINAL_ID_KEY] = node.original_id
    return facts


# --- SQL ---------------------------------------------------------------------------------------

# m says, once per conflicting row, which aspects the input moves: an aspect moves when the input
# has an event of it (its pair is not NULL) newer than the stored pair (omnisink.newer: a NULL
# stored pair, a placeholder, is moved by any event). health_status belongs to the newest event
# of either aspect: it moves when the input's newest event of an aspect that moves is also
# newer than the other aspect's stored pair. 'last_heartbeat' is HEARTBEAT_KEY. The WHERE skips
# rows nothing moves (the same two rules once more: a WHERE cannot see m).
_UPSERT = Unnest(
    """
INSERT INTO node_registrations AS t (
    id, node_id, node_type, node_version, endpoint_url, health_status, last_heartbeat,
    registered_at, metadata, state_event_at, state_event_id, heartbeat_event_at,
    heartbeat_event_id
)
SELECT v.id, v.node_id, v.node_type, v.node_version, v.endpoint_url, v.health_status,
       v.last_heartbeat, v.registered_at, v.metadata::jsonb, v.state_event_at, v.state_event_id,
       v.heartbeat_event_at, v.heartbeat_event_id
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::timestamptz[], $8::timestamptz[], $9::text[], $10::timestamptz[], $11::uuid[],
            $12::timestamptz[], $13::uuid[])
    AS v(id, node_id, node_type, node_version, endpoint_url, health_status, last_heartbeat,
         registered_at, metadata, state_event_at, state_event_id, heartbeat_event_at,
         heartbeat_event_id)
ON CONFLICT (node_id) DO UPDATE SET
    (node_type, node_version, endpoint_url, health_status, metadata, state_event_at,
     state_event_id, heartbeat_event_at, heartbeat_event_id) = (
        SELECT CASE WHEN m.state THEN excluded.node_type
                    -- still a placeholder: the newest heartbeat's node_type
                    WHEN t.state_event_at IS NULL AND m.heartbeat THEN excluded.node_type
                    ELSE t.node_type END,
               CASE WHEN m.state THEN excluded.node_version ELSE t.node_version END,
               CASE WHEN m.state THEN excluded.endpoint_url ELSE t.endpoint_url END,
               CASE WHEN (m.state AND omnisink.newer(excluded.state_event_at,
                              excluded.state_event_id, t.heartbeat_event_at,
                              t.heartbeat_event_id))
                      OR (m.heartbeat AND omnisink.newer(excluded.heartbeat_event_at,
                              excluded.heartbeat_event_id, t.state_event_at, t.state_event_id))
                    THEN excluded.health_status ELSE t.health_status END,
               (CASE WHEN m.state THEN excluded.metadata ELSE t.metadata END - 'last_heartbeat')
               || CASE WHEN m.heartbeat
                       THEN jsonb_build_object('last_heartbeat',
                                               excluded.metadata -> 'last_heartbeat')
                       WHEN t.metadata ? 'last_heartbeat'
                       THEN jsonb_build_object('last_heartbeat', t.metadata -> 'last_heartbeat')
                       ELSE '{}'::jsonb END,
               CASE WHEN m.state THEN excluded.state_event_at ELSE t.state_event_at END,
               CASE WHEN m.state THEN excluded.state_event_id ELSE t.state_event_id END,
               CASE WHEN m.heartbeat THEN excluded.heartbeat_event_at
                    ELSE t.heartbeat_event_at END,
               CASE WHEN m.heartbeat THEN excluded.heartbeat_event_id
                    ELSE t.heartbeat_event_id END
        FROM (
            SELECT excluded.state_event_at IS NOT NULL
                       AND omnisink.newer(excluded.state_event_at, excluded.state_event_id,
                                          t.state_event_at, t.state_event_id) AS state,
                   excluded.heartbeat_event_at IS NOT NULL
                       AND omnisink.newer(excluded.heartbeat_event_at,
                                          excluded.heartbeat_event_id,
                                          t.heartbeat_event_at, t.heartbeat_event_id)
                       AS heartbeat
        ) AS m
    ),
    last_heartbeat = GREATEST(t.last_heartbeat, excluded.last_heartbeat),
    registered_at = LEAST(t.registered_at, excluded.registered_at)
WHERE (excluded.state_event_at IS NOT NULL
       AND omnisink.newer(excluded.state_event_at, excluded.state_event_id,
                          t.state_event_at, t.state_event_id))
   OR (excluded.heartbeat_event_at IS NOT NULL
       AND omnisink.newer(excluded.heartbeat_event_at, excluded.heartbeat_event_id,
                          t.heartbeat_event_at, t.heartbeat_event_id))
   OR LEAST(t.registered_at, excluded.registered_at) IS DISTINCT FROM t.registered_at
""",
    name="nodes.upsert",
)


# --- the batch reduced to one input row per node -------------------------------------------------


@dataclass
class _NodeInput:
    node: NodeRef
    introspection: Item[Introspection] | None = None
    heartbeat: Item[Heartbeat] | None = None
    registered_at: datetime | None = None
    last_seen: datetime | None = None

    def add(self, item: Item[NodePayload]) -> None:
        payload = item.payload
        at = item.event.at
        self.last_seen = at if self.last_seen is None else max(self.last_seen, at)
        if isinstance(payload, Introspection):
            self.registered_at = at if self.registered_at is None else min(self.registered_at, at)
            held_i = self.introspection
            if held_i is None or item.event.order_key > held_i.event.order_key:
                self.introspection = Item(item.event, payload)
        else:
            held_h = self.heartbeat
            if held_h is None or item.event.order_key > held_h.event.order_key:
                self.heartbeat = Item(item.event, payload)

    def row(self) -> dict[str, Any]:
        intro, beat = self.introspection, self.heartbeat
        # The input's newest event of either type gives health_status (and, without an
        # introspection, node_type).
        _, health_status, node_type = max(
            (i.event.order_key, i.payload.health_status, i.payload.node_type)
            for i in (intro, beat)
            if i is not None
        )
        metadata: dict[str, Any] = dict(intro.payload.facts) if intro is not None else {}
        if self.node.original_id is not None:
            metadata[ORIGINAL_ID_KEY] = self.node.original_id
        if beat is not None:
            metadata[HEARTBEAT_KEY] = beat.payload.facts
        row: dict[str, Any] = {
            "id": node_row_id(self.node.uuid),
            "node_id": self.node.uuid,
            "node_type": node_type,
            "node_version": PLACEHOLDER_VERSION,
            "endpoint_url": PLACEHOLDER_ENDPOINT,
            "health_status": health_status,
            "last_heartbeat": self.last_seen,
            "registered_at": self.registered_at,
            "metadata": jsonb(metadata),
            "state_event_at": None,
            "state_event_id": None,
            "heartbeat_event_at": None,
            "heartbeat_event_id": None,
        }
        if intro is not None:
            row["node_type"] = intro.payload.node_type
            row["node_version"] = intro.payload.node_version
            row["endpoint_url"] = intro.payload.endpoint_url
            row["state_event_at"], row["state_event_id"] = intro.event.order_key
        if beat is not None:
            row["heartbeat_event_at"], row["heartbeat_event_id"] = beat.event.order_key
        return row


# --- handler -----------------------------------------------------------------------------------


class NodesHandler:
    """NODE_INTROSPECTION and NODE_HEARTBEAT -> node_registrations."""

    name = "nodes"
    event_types = frozenset({EventType.NODE_INTROSPECTION.value, EventType.NODE_HEARTBEAT.value})

    def parse(self, event: Event) -> NodePayload:
        if event.event_type == EventType.NODE_HEARTBEAT:
            beat = fields.validate(_HeartbeatPayload, event.payload)
            node = _node_ref(beat.node_id)
            return Heartbeat(
                node=node,
                node_type=beat.node_type,
                health_status=beat.health_status,
                facts=_facts(event.payload, _HEARTBEAT_COLUMNS, node),
            )
        intro = fields.validate(_IntrospectionPayload, event.payload)
        node = _node_ref(intro.node_id)
        return Introspection(
            node=node,
            node_type=intro.node_type,
            node_version=_version_of(intro, event.payload),
            endpoint_url=_endpoint_of(intro),
            health_status=intro.health_status or INTROSPECTION_HEALTH,
            facts=_facts(event.payload, _INTROSPECTION_COLUMNS, node),
        )

    async def apply(self, conn: asyncpg.Connection, items: Sequence[Item[NodePayload]]) -> None:
        if not items:
            return
        inputs: dict[UUID, _NodeInput] = {}
        for item in items:
            node = item.payload.node
            inputs.setdefault(node.uuid, _NodeInput(node)).add(item)
        rows = [inputs[key].row() for key in sorted(inputs)]  # sorted: a stable lock order
        await conn.execute(_UPSERT.sql, *_UPSERT.args(rows))


NODES = NodesHandler()
