"""metadata_stamps: STAMP_CREATED rows, and the stamp half of INTELLIGENCE_RECEIVED.

What is written (contract section 3, seed 000 table 6, migrations 006, 012 and 019):

- **STAMP_CREATED** inserts one row per ``stamp_id``: ``id`` is
  ``uuid5(FOREIGN_ID_NAMESPACE, "stamp/" + stamp_id)`` so ids match across runs and replays,
  ``created_at`` is the event time, ``metadata_version`` is ``'0.1'`` unless given.
- **INTELLIGENCE_RECEIVED** with a ``file_hash`` sets ``intelligence_data`` of the stamp with that
  hash; newest event wins by ``(intelligence_event_at, intelligence_event_id)``
  (``omnisink.newer``). Without a ``file_hash`` it is a no-op here (its workflow half belongs to
  the workflow handler). For a hash no stamp has (yet), nothing is written either: see order
  tolerance below.

Decisions:

- **Conflicts are explicit (rule 4.6).** A ``file_hash`` already stamped under another
  ``stamp_id``, or a ``stamp_id`` already stamped with another ``file_hash``, is
  ``Reject("conflict")``, never an overwrite. What is stored counts as earlier than the batch;
  within a batch the first event in offset order wins and the later one is rejected.
- **The same (stamp_id, file_hash) again** under another event_id is not a conflict. The row
  keeps the facts of the *oldest* STAMP_CREATED (``created_at`` = LEAST of the event times, and
  namespace, stamp_data, file_metadata, metadata_version of that same event), so the row never
  mixes the time of one event with the content of another, and any arrival order gives the same
  row. (Two such events with the same timestamp and different content are a conflicting set:
  the first stored is kept.)
- **Where the intelligence data is**, as the workflow handler reads it (handlers/workflows.py),
  so a workflow and its stamp show the same data: the payload's ``intelligence_data``, else its
  ``intelligence`` (JSON null counts as absent), else the payload minus its ids
  (``handlers.fields.INTELLIGENCE_NOT_DATA``, the keys the workflow handler drops too, bound as
  a parameter). The lookup and the extraction are one SQL function,
  ``omnisink.newest_intelligence`` (migration 019), which both paths below call, so they can
  never disagree.
- **Order tolerance.** An INTELLIGENCE_RECEIVED can arrive before its stamp exists, and nothing
  can be written to metadata_stamps then. So whenever a stamp row is created, its
  ``intelligence_data`` is filled in the same INSERT from the newest INTELLIGENCE_RECEIVED with
  that hash already in ``event_logs`` (GIN containment on ``payload``). ``event_logs`` of the
  current batch is written before ``apply`` runs, so the same batch is covered. For existing
  stamps, the batch's intelligence hashes are resolved the same way (newest in event_logs),
  which also makes both paths read one source.
- **Strict file_hash type.** ``file_hash`` must be a JSON string in both types: the intelligence
  lookup matches the JSON value, so a number coerced to text here would never find its stamp.

Races between consumers (several sink processes, different partitions):

- A conflicting stamp inserted concurrently: the INSERT is ``ON CONFLICT DO NOTHING RETURNING``;
  every row not inserted is looked up again afterwards (a fresh snapshot that sees the other
  transaction's commit) and classified as a duplicate or a conflict, so no event is dropped
  silently.
- A stamp created by one transaction while another one receives its intelligence: neither sees
  the other's uncommitted rows, and the intelligence would be lost. Both paths therefore take a
  transaction-scoped advisory lock per file_hash (in sorted order) before reading, so the second
  one always sees the first one's commit.
- A row that blocks the INSERT and is gone when looked up again, three times over (only a
  DELETE of stamps can do that; the sink never deletes them): ``Contended``, and the consumer
  runs the batch again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID, uuid5

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from handlers import fields
from handlers.base import Contended, Event, Item, Reject, Rejected, jsonb
from handlers.envelope import FOREIGN_ID_NAMESPACE, EventType
from handlers.sql import Sql, Unnest

# Column sizes of metadata_stamps (migration 006).
STAMP_ID_MAX_CHARS = 100
FILE_HASH_MAX_CHARS = 256
NAMESPACE_MAX_CHARS = 200
METADATA_VERSION_MAX_CHARS = 10
DEFAULT_METADATA_VERSION = "0.1"

_SHOWN_VALUE_MAX_CHARS = 80
# A concurrent transaction can make a row both block our INSERT and be gone by the time we look
# (only if something deletes stamps, which the sink never does). Bounded so that cannot spin.
_INSERT_ATTEMPTS = 3
# The payload keys that are not intelligence data, bound as the statements' not_data parameter.
_NOT_DATA = list(fields.INTELLIGENCE_NOT_DATA)


def stamp_row_id(stamp_id: str) -> UUID:
    """The ``id`` of a stamp's row: stable across runs, replays and sinks."""
    return uuid5(FOREIGN_ID_NAMESPACE, "stamp/" + stamp_id)


# --- payloads ----------------------------------------------------------------------------------

# Strict: the intelligence lookup matches the JSON string, so a number is not the same hash.
FileHash = Annotated[str, StringConstraints(max_length=FILE_HASH_MAX_CHARS), Field(strict=True)]


class _StampCreatedPayload(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    stamp_id: Annotated[str, StringConstraints(min_length=1, max_length=STAMP_ID_MAX_CHARS)]
    file_hash: Annotated[FileHash, StringConstraints(min_length=1)]
    namespace: Annotated[str, StringConstraints(max_length=NAMESPACE_MAX_CHARS)]
    stamp_data: dict[str, Any]
    file_metadata: dict[str, Any] | None = None
    metadata_version: (
        Annotated[str, StringConstraints(min_length=1, max_length=METADATA_VERSION_MAX_CHARS)]
        | None
    ) = None


class _IntelligencePayload(BaseModel):
    model_config = ConfigDict(extra="allow")

    file_hash: FileHash | None = None


@dataclass(frozen=True, slots=True)
class StampCreated:
    """A stamp's row as the statements' ``v(...)`` columns name it (JSON columns as text)."""

    stamp_id: str
    file_hash: str
    namespace: str
    stamp_data: str
    file_metadata: str
    metadata_version: str
    # The event time (rule 4.5).
    created_at: datetime

    @property
    def id(self) -> UUID:
        return stamp_row_id(self.stamp_id)


@dataclass(frozen=True, slots=True)
class StampIntelligence:
    """The stamp half of an INTELLIGENCE_RECEIVED; ``file_hash`` None means nothing to do."""

    file_hash: str | None


StampPayload = StampCreated | StampIntelligence


def _shown(value: str) -> str:
    if len(value) <= _SHOWN_VALUE_MAX_CHARS:
        return repr(value)
    return repr(value[: _SHOWN_VALUE_MAX_CHARS - 1] + "…")


# --- SQL ---------------------------------------------------------------------------------------

# One lock per file_hash, taken in sorted order so two sinks cannot deadlock on each other.
_LOCK_HASHES = Unnest(
    """
SELECT count(pg_advisory_xact_lock(lock_class, lock_key))
FROM (
    SELECT DISTINCT hashtext('omnisink.metadata_stamps.file_hash') AS lock_class,
                    hashtext(h.file_hash) AS lock_key
    FROM unnest($1::text[]) AS h(file_hash)
    ORDER BY lock_key
) AS keys
""",
    name="stamps.lock_hashes",
)

_CLAIMS = Sql(
    """
SELECT stamp_id, file_hash, created_at
FROM metadata_stamps
WHERE stamp_id = ANY($1::text[]) OR file_hash = ANY($2::text[])
""",
    name="stamps.claims",
)

# A new stamp takes the newest INTELLIGENCE_RECEIVED with its hash already in event_logs, read
# as the workflow handler reads it (omnisink.newest_intelligence, migration 019; $9 is
# fields.INTELLIGENCE_NOT_DATA).
_INSERT = Unnest(
    """
INSERT INTO metadata_stamps AS t (
    id, stamp_id, file_hash, namespace, stamp_data, file_metadata, metadata_version, created_at,
    intelligence_data, intelligence_event_at, intelligence_event_id
)
SELECT v.id, v.stamp_id, v.file_hash, v.namespace, v.stamp_data::jsonb, v.file_metadata::jsonb,
       v.metadata_version, v.created_at,
       COALESCE(i.data, '{}'::jsonb), i.event_at, i.event_id
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[])
    AS v(id, stamp_id, file_hash, namespace, stamp_data, file_metadata, metadata_version,
         created_at)
LEFT JOIN LATERAL omnisink.newest_intelligence(v.file_hash, $9::text[]) AS i ON true
ON CONFLICT DO NOTHING
RETURNING stamp_id
""",
    name="stamps.insert",
    extra=("not_data",),
)

# A duplicate (same stamp_id and file_hash) older than the stored one: the row takes its facts.
_OLDER_DUPLICATE = Unnest(
    """
UPDATE metadata_stamps AS t
SET namespace = v.namespace,
    stamp_data = v.stamp_data::jsonb,
    file_metadata = v.file_metadata::jsonb,
    metadata_version = v.metadata_version,
    created_at = v.created_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::timestamptz[])
    AS v(stamp_id, file_hash, namespace, stamp_data, file_metadata, metadata_version, created_at)
WHERE t.stamp_id = v.stamp_id AND t.file_hash = v.file_hash AND v.created_at < t.created_at
""",
    name="stamps.older_duplicate",
)

# Existing stamps of the batch's intelligence hashes: the same newest event, read the same way.
_APPLY_INTELLIGENCE = Unnest(
    """
UPDATE metadata_stamps AS t
SET intelligence_data = i.data,
    intelligence_event_at = i.event_at,
    intelligence_event_id = i.event_id
FROM unnest($1::text[]) AS h(file_hash)
CROSS JOIN LATERAL omnisink.newest_intelligence(h.file_hash, $2::text[]) AS i
WHERE t.file_hash = h.file_hash
  AND omnisink.newer(i.event_at, i.event_id, t.intelligence_event_at, t.intelligence_event_id)
""",
    name="stamps.apply_intelligence",
    extra=("not_data",),
)


# --- handler -----------------------------------------------------------------------------------


class _Claims:
    """Which stamp_id holds which file_hash: what is stored, then the batch in offset order."""

    def __init__(self, rows: Sequence[asyncpg.Record]) -> None:
        self.hash_of: dict[str, str] = {r["stamp_id"]: r["file_hash"] for r in rows}
        self.stamp_of: dict[str, str] = {r["file_hash"]: r["stamp_id"] for r in rows}

    def conflict(self, stamp: StampCreated) -> str | None:
        held_hash = self.hash_of.get(stamp.stamp_id)
        if held_hash is not None and held_hash != stamp.file_hash:
            return (
                f"stamp_id {_shown(stamp.stamp_id)} is already stamped with file_hash "
                f"{_shown(held_hash)}; this event gives file_hash {_shown(stamp.file_hash)}"
            )
        held_stamp = self.stamp_of.get(stamp.file_hash)
        if held_stamp is not None and held_stamp != stamp.stamp_id:
            return (
                f"file_hash {_shown(stamp.file_hash)} is already stamped under stamp_id "
                f"{_shown(held_stamp)}; this event gives stamp_id {_shown(stamp.stamp_id)}"
            )
        return None

    def claim(self, stamp: StampCreated) -> None:
        self.hash_of[stamp.stamp_id] = stamp.file_hash
        self.stamp_of[stamp.file_hash] = stamp.stamp_id


class StampsHandler:
    """STAMP_CREATED and the stamp half of INTELLIGENCE_RECEIVED -> metadata_stamps."""

    name = "stamps"
    event_types = frozenset({EventType.STAMP_CREATED.value, EventType.INTELLIGENCE_RECEIVED.value})

    def parse(self, event: Event) -> StampPayload:
        if event.event_type == EventType.INTELLIGENCE_RECEIVED:
            intelligence = fields.validate(_IntelligencePayload, event.payload)
            # An empty hash can match no stamp (stamps require one): nothing to do, like none.
            return StampIntelligence(file_hash=intelligence.file_hash or None)
        p = fields.validate(_StampCreatedPayload, event.payload)
        return StampCreated(
            stamp_id=p.stamp_id,
            file_hash=p.file_hash,
            namespace=p.namespace,
            stamp_data=jsonb(p.stamp_data) or "{}",
            file_metadata=jsonb(p.file_metadata) or "{}",
            metadata_version=p.metadata_version or DEFAULT_METADATA_VERSION,
            created_at=event.at,
        )

    async def apply(self, conn: asyncpg.Connection, items: Sequence[Item[StampPayload]]) -> None:
        created: list[Item[StampCreated]] = []
        intelligence_hashes: set[str] = set()
        for item in items:
            payload = item.payload
            if isinstance(payload, StampCreated):
                created.append(Item(item.event, payload))
            elif payload.file_hash is not None:
                intelligence_hashes.add(payload.file_hash)
        hashes = intelligence_hashes | {item.payload.file_hash for item in created}
        if not hashes:
            return
        await conn.fetchval(_LOCK_HASHES.sql, *_LOCK_HASHES.args(_hash_rows(hashes)))
        if created:
            await self._create(conn, created)
        if intelligence_hashes:
            await conn.execute(
                _APPLY_INTELLIGENCE.sql,
                *_APPLY_INTELLIGENCE.args(_hash_rows(intelligence_hashes), not_data=_NOT_DATA),
            )

    async def _create(self, conn: asyncpg.Connection, created: list[Item[StampCreated]]) -> None:
        stored = await conn.fetch(
            _CLAIMS.sql,
            sorted({i.payload.stamp_id for i in created}),
            sorted({i.payload.file_hash for i in created}),
        )
        oldest, rejections = _claim_in_order(_Claims(stored), created)
        if rejections:
            raise Rejected(rejections)
        duplicates, rejections = await _insert(conn, list(oldest.values()))
        if rejections:
            raise Rejected(rejections)
        if duplicates:
            await conn.execute(
                _OLDER_DUPLICATE.sql,
                *_OLDER_DUPLICATE.args([i.payload for i in duplicates]),
            )


def _claim_in_order(
    claims: _Claims, created: Sequence[Item[StampCreated]]
) -> tuple[dict[str, Item[StampCreated]], dict[UUID, Reject]]:
    """The oldest event per stamp_id among those that conflict with nothing before them.

    What is stored comes first, then the batch in offset order: the first claim wins. The oldest
    event's facts are the row's (see the module docstring).
    """
    rejections: dict[UUID, Reject] = {}
    oldest: dict[str, Item[StampCreated]] = {}
    for item in created:
        conflict = claims.conflict(item.payload)
        if conflict is not None:
            rejections[item.event.event_id] = Reject("conflict", conflict)
            continue
        claims.claim(item.payload)
        held = oldest.get(item.payload.stamp_id)
        if held is None or item.event.order_key < held.event.order_key:
            oldest[item.payload.stamp_id] = item
    return oldest, rejections


async def _insert(
    conn: asyncpg.Connection, rows: list[Item[StampCreated]]
) -> tuple[list[Item[StampCreated]], dict[UUID, Reject]]:
    """Insert new stamps; return the rows that were duplicates and the events that conflict."""
    duplicates: list[Item[StampCreated]] = []
    rejections: dict[UUID, Reject] = {}
    pending = rows
    for _ in range(_INSERT_ATTEMPTS):
        args = _INSERT.args([i.payload for i in pending], not_data=_NOT_DATA)
        inserted = {r["stamp_id"] for r in await conn.fetch(_INSERT.sql, *args)}
        missed = [i for i in pending if i.payload.stamp_id not in inserted]
        if not missed:
            return duplicates, rejections
        # Not inserted: a row with this stamp_id or file_hash exists, possibly committed by
        # another sink after our first look. This statement's snapshot sees it.
        stored = _Claims(
            await conn.fetch(
                _CLAIMS.sql,
                [i.payload.stamp_id for i in missed],
                [i.payload.file_hash for i in missed],
            )
        )
        pending = []
        for item in missed:
            conflict = stored.conflict(item.payload)
            if conflict is not None:
                rejections[item.event.event_id] = Reject("conflict", conflict)
            elif stored.hash_of.get(item.payload.stamp_id) == item.payload.file_hash:
                duplicates.append(item)
            else:
                pending.append(item)  # the row that blocked us is gone: insert again
        if not pending:
            return duplicates, rejections
    # Only a concurrent DELETE of stamps can get here (the sink never deletes them): the rows
    # changed under us, and the consumer runs the whole batch again.
    raise Contended(
        "metadata_stamps rows kept vanishing between INSERT and SELECT; retry the batch"
    )


def _hash_rows(hashes: set[str]) -> list[dict[str, str]]:
    return [{"file_hash": h} for h in sorted(hashes)]


STAMPS = StampsHandler()
