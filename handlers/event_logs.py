"""event_logs: one row per distinct valid event, whatever its type (contract section 3).

The row's ``id`` is the ``event_id``, so a duplicate is a no-op, and the ids the insert
*returns* are the batch's new events: the only ones the domain handlers are given. That makes
every handler idempotent, the per-event tables included, because an event's ``event_logs`` row
and its domain rows commit in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from handlers.base import Event
from handlers.contract import ENVELOPE_EXTRA_KEY, KAFKA_METADATA_KEYS, ORIGINAL_EVENT_TYPE_KEY
from handlers.sql import Unnest

# Envelope fields copied into metadata (contract: "the envelope's metadata plus its source
# fields and the Kafka topic/partition/offset").
_ENVELOPE_FIELDS = (
    "source_node_id",
    "source_service",
    "source_version",
    "source_instance",
    "envelope_version",
    "event_version",
    "environment",
    "region",
    "partition_key",
    "causation_id",
    "original_correlation_id",
    "original_session_id",
)
# Where the record was read (handlers.contract.KAFKA_METADATA_KEYS) is not part of the event's
# identity: a replay from another offset keeps the first row (ON CONFLICT DO NOTHING), so
# comparisons across runs ignore those keys.

_INSERT = Unnest(
    """
INSERT INTO event_logs (id, event_type, correlation_id, session_id, payload, metadata, created_at)
SELECT id, event_type, correlation_id, session_id, payload::jsonb, metadata::jsonb, created_at
FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
            $7::timestamptz[])
    AS e(id, event_type, correlation_id, session_id, payload, metadata, created_at)
ON CONFLICT (id) DO NOTHING
RETURNING id
""",
    name="event_logs.insert",
)


def metadata_of(event: Event) -> dict[str, Any]:
    """The ``event_logs.metadata`` of an event.

    The producer's metadata first; the sink's facts (envelope fields, unknown top-level fields
    under ``envelope_extra``, the Kafka position) are written over keys of the same name, so
    the position can never be spoofed by a producer. The event_type as sent is kept under
    ``original_event_type`` when it is not the canonical name of the row's ``event_type``.
    """
    env = event.envelope
    meta: dict[str, Any] = dict(env.metadata)
    for name in _ENVELOPE_FIELDS:
        value = getattr(env, name)
        if value is not None:
            meta[name] = value
    if env.original_event_type is not None:
        meta[ORIGINAL_EVENT_TYPE_KEY] = env.original_event_type
    if env.extra:
        meta[ENVELOPE_EXTRA_KEY] = env.extra
    meta.update(zip(KAFKA_METADATA_KEYS, (event.topic, event.partition, event.offset), strict=True))
    return meta


async def insert(conn: asyncpg.Connection, events: Sequence[Event]) -> set[UUID]:
    """Insert the events' rows; return the ids that were not already there."""
    if not events:
        return set()
    rows = await conn.fetch(
        _INSERT.sql,
        *_INSERT.args(
            [
                {
                    "id": e.event_id,
                    "event_type": e.event_type,
                    "correlation_id": e.envelope.correlation_id,
                    "session_id": e.envelope.session_id,
                    "payload": orjson.dumps(e.payload).decode(),
                    "metadata": orjson.dumps(metadata_of(e)).decode(),
                    "created_at": e.at,
                }
                for e in events
            ]
        ),
    )
    return {row["id"] for row in rows}
