"""metadata_stamps: stamps assembled from what arrives, and the stamp half of INTELLIGENCE_RECEIVED.

What is written (contract section 3 and rule 4.6, seed 000 table 6, migrations 006, 012, 019
and 022):

- **A stamp** is a STAMP_CREATED event. Its ``stamp_id`` is its own; its ``file_hash`` is its
  payload's, else its workflow's (the payload's ``workflow_id``): the newest
  HASH_GENERATED of that workflow, else its newest WORKFLOW_COMPLETED that carries one. The
  orchestrator's ``metadata_stamp_created`` carries no hash; the stamping service's
  ``metadata.stamp.created`` carries no workflow. A stamp with neither a hash nor a workflow
  can never be written: ``schema``.
- **A row per file_hash**, written once a stamp's ``stamp_id`` and ``file_hash`` are both
  known, whichever event brought the last of them: ``id`` is
  ``uuid5(FOREIGN_ID_NAMESPACE, "stamp/" + stamp_id)`` of the stamp that holds the row, so ids
  match across runs and replays. The row holds the facts of the *earliest* stamp of that
  hash by (event time, event id), kept in ``stamp_event_at`` / ``stamp_event_id``
  (``omnisink.newer``): ``created_at`` is its event time, ``stamp_data`` its payload's
  ``stamp_data``, else its whole payload; ``file_metadata`` its payload's ``file_metadata``,
  else what it says of the file (``file_path``, ``file_size_bytes``, ``hash_algorithm``,
  where sent); ``metadata_version`` ``'0.1'`` unless given.
- **namespace**: the stamp's payload's (blank is none), else its workflow's (its newest
  WORKFLOW_COMPLETED that carries one), else its envelope metadata's ``namespace`` (a text of
  1-200 characters, anything else is no namespace), else the handler's ``default_namespace``
  (``OMNISINK_DEFAULT_NAMESPACE``: handlers read no settings, so the daemon builds this
  handler with it, handlers.registry.configured). A row's namespace follows its stamp's
  workflow when a WORKFLOW_COMPLETED arrives after the row.
- **INTELLIGENCE_RECEIVED** with a ``file_hash`` sets ``intelligence_data`` of the stamp with that
  hash; newest event wins by ``(intelligence_event_at, intelligence_event_id)``
  (``omnisink.newer``). Without a ``file_hash`` it is a no-op here (its workflow half belongs to
  the workflow handler). The intelligence belongs to the hash: a stamp that takes the row
  over keeps it.

Decisions:

- **A stamp waits, never a dead letter.** A stamp whose hash is not known yet writes its
  ``event_logs`` row only. Every HASH_GENERATED and WORKFLOW_COMPLETED (this handler's too;
  their workflow columns are the workflow handler's) reads the STAMP_CREATED events of its
  workflow back from ``event_logs`` and writes them again, so the later event completes the
  stamp (or moves its row's namespace). A stamp and its workflow's events find each other by
  the payload's ``workflow_id`` (its text; an integer as its decimal text): one statement per
  batch, one probe per workflow of the partial index of migration 022. ``event_logs`` of the
  current batch is written before ``apply`` runs, so the same batch is covered.
- **Re-stamps are normal traffic (rule 4.6).** The stamping service gives every stamping a
  fresh ``stamp_id``: another stamp of a hash that has a row is not a conflict. It stays in
  ``event_logs``; the earliest stamp holds the row, so a stamp older than the holder takes
  the row over (``id``, ``stamp_id`` and its facts), and any order gives the same row. The
  same (stamp_id, file_hash) under another event is the same stamp, not a conflict either:
  the row shows the oldest event's facts. Every STAMP_CREATED that does not hold its row is
  counted once, when its hash becomes known or when it loses the row, so the count is the
  same in any order (:class:`~handlers.base.Counts` ``restamps``, the consumer's
  ``omnisink_restamps_total``).
- **A stamp_id already used for another file_hash is a conflict**: ``Reject("conflict")``,
  never an overwrite. What is stored counts as earlier than the batch; within a batch the
  stamps read back from ``event_logs`` come first, then the batch in offset order, and the
  later one is rejected. Only an event of this batch can be dead-lettered: a waiting stamp
  whose completion conflicts stays in ``event_logs`` and is not written.
- **A row another writer made** (``stamp_event_at`` NULL) is held by it: stamps of its hash
  are re-stamps and never take it over.
- **Where the intelligence data is**, as the workflow handler reads it (handlers/workflows.py),
  so a workflow and its stamp show the same data: the payload's ``intelligence_data``, else its
  ``intelligence`` (JSON null counts as absent), else the payload minus its ids
  (``handlers.fields.INTELLIGENCE_NOT_DATA``, the keys the workflow handler drops too, bound as
  a parameter). The lookup and the extraction are one SQL function,
  ``omnisink.newest_intelligence`` (migration 019), which both paths below call, so they can
  never disagree.
- **Intelligence before its stamp.** Whenever a row is created, its ``intelligence_data`` is
  filled in the same INSERT from the newest INTELLIGENCE_RECEIVED with that hash already in
  ``event_logs``. For existing rows, the batch's intelligence hashes are resolved the same way
  (newest in event_logs), which also makes both paths read one source.
- **Strict file_hash type.** ``file_hash`` must be a JSON string in both types: the intelligence
  lookup matches the JSON value, so a number coerced to text here would never find its stamp.

Races between consumers (several sink processes, different partitions):

- Every path takes transaction-scoped advisory locks before it reads: first one per workflow
  of the batch's stamps and workflow events (sorted), then one per stamp_id and file_hash
  (sorted). A stamp and the workflow event that completes it, a stamp and another stamp of its
  hash or its stamp_id, a stamp and its intelligence: whichever transaction waits sees the
  other's commit, so nothing is lost between two snapshots.
- A row inserted concurrently by another writer: the INSERT is ``ON CONFLICT DO NOTHING
  RETURNING``; every row not inserted is looked up again afterwards (a fresh snapshot that sees
  the other transaction's commit) and judged against it (a re-stamp, a take-over or a
  conflict), so no event is dropped silently.
- A row that blocks the INSERT and is gone when looked up again, three times over (only a
  DELETE of stamps can do that; the sink never deletes them): ``Contended``, and the consumer
  runs the batch again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID, uuid5

import asyncpg
import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from handlers import fields
from handlers.base import Contended, Counts, Event, Item, Reject, Rejected, jsonb
from handlers.envelope import FOREIGN_ID_NAMESPACE, EventType
from handlers.sql import Sql, Unnest

# Column sizes of metadata_stamps (migration 006).
STAMP_ID_MAX_CHARS = 100
FILE_HASH_MAX_CHARS = 256
NAMESPACE_MAX_CHARS = 200
METADATA_VERSION_MAX_CHARS = 10
DEFAULT_METADATA_VERSION = "0.1"
# The namespace of a stamp that nothing names one for (OMNISINK_DEFAULT_NAMESPACE).
DEFAULT_NAMESPACE = "default"
# What a stamp without file_metadata says of its file, kept under the producer's names.
FILE_FACTS = ("file_path", "file_size_bytes", "hash_algorithm")

_SHOWN_VALUE_MAX_CHARS = 80
# A concurrent transaction can make a row both block our INSERT and be gone by the time we look
# (only if something deletes stamps, which the sink never does). Bounded so that cannot spin.
_INSERT_ATTEMPTS = 3
# The payload keys that are not intelligence data, bound as the statements' not_data parameter.
_NOT_DATA = list(fields.INTELLIGENCE_NOT_DATA)
# The advisory lock classes (hashtext of these names); the file_hash one is older than the rest.
_LOCK_WORKFLOW = "omnisink.metadata_stamps.workflow_id"
_LOCK_STAMP_ID = "omnisink.metadata_stamps.stamp_id"
_LOCK_FILE_HASH = "omnisink.metadata_stamps.file_hash"


def stamp_row_id(stamp_id: str) -> UUID:
    """The ``id`` of a stamp's row: stable across runs, replays and sinks."""
    return uuid5(FOREIGN_ID_NAMESPACE, "stamp/" + stamp_id)


# --- payloads ----------------------------------------------------------------------------------

# Strict: the intelligence lookup matches the JSON string, so a number is not the same hash.
FileHash = Annotated[str, StringConstraints(max_length=FILE_HASH_MAX_CHARS), Field(strict=True)]


class _StampCreatedPayload(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    stamp_id: Annotated[str, StringConstraints(min_length=1, max_length=STAMP_ID_MAX_CHARS)]
    file_hash: Annotated[FileHash, StringConstraints(min_length=1)] | None = None
    namespace: Annotated[str, StringConstraints(max_length=NAMESPACE_MAX_CHARS)] | None = None
    stamp_data: dict[str, Any] | None = None
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
    """A STAMP_CREATED as far as its own event tells (JSON columns as text)."""

    stamp_id: str
    # None: the workflow's events tell it.
    file_hash: str | None
    # The workflow whose events complete it: the payload's ``workflow_id`` text, as sent.
    workflow_id: str | None
    # The payload's namespace and the envelope metadata's (section "namespace" above).
    namespace: str | None
    metadata_namespace: str | None
    stamp_data: str
    file_metadata: str
    metadata_version: str
    # The event time (rule 4.5).
    created_at: datetime

    @property
    def reads_workflow(self) -> bool:
        """Its workflow's events tell what it lacks: its hash, or its namespace."""
        return self.workflow_id is not None and (self.file_hash is None or self.namespace is None)


@dataclass(frozen=True, slots=True)
class StampIntelligence:
    """The stamp half of an INTELLIGENCE_RECEIVED; ``file_hash`` None means nothing to do."""

    file_hash: str | None


@dataclass(frozen=True, slots=True)
class StampWorkflow:
    """A HASH_GENERATED or WORKFLOW_COMPLETED: the workflow whose stamps it may complete."""

    workflow_id: str


# None: a workflow event without a workflow_id text, nothing for this handler to do.
StampPayload = StampCreated | StampIntelligence | StampWorkflow | None


def _link(value: Any) -> str | None:
    """A ``workflow_id`` as ``payload ->> 'workflow_id'`` reads it (an integer as its decimal
    text, as every handler takes an id), or None when blank or of another type."""
    text = fields.int_as_text(value)
    return text if isinstance(text, str) and text.strip() else None


def _metadata_namespace(metadata: Mapping[str, Any]) -> str | None:
    value = metadata.get("namespace")
    if isinstance(value, str) and value.strip() and len(value) <= NAMESPACE_MAX_CHARS:
        return value
    return None


def stamp_created(
    payload: dict[str, Any], metadata: Mapping[str, Any], at: datetime
) -> StampCreated:
    """A STAMP_CREATED's own facts, from its payload, its envelope's metadata and its time: the
    one reading of a stamp, for the batch's events and for those read back from event_logs."""
    p = fields.validate(_StampCreatedPayload, payload)
    workflow_id = _link(payload.get("workflow_id"))
    if p.file_hash is None and workflow_id is None:
        raise Reject("schema", "file_hash: missing (required, or a workflow_id to find it by)")
    file_metadata = (
        p.file_metadata
        if p.file_metadata is not None
        else {k: payload[k] for k in FILE_FACTS if payload.get(k) is not None}
    )
    return StampCreated(
        stamp_id=p.stamp_id,
        file_hash=p.file_hash,
        workflow_id=workflow_id,
        namespace=fields.present(p.namespace),
        metadata_namespace=_metadata_namespace(metadata),
        stamp_data=jsonb(p.stamp_data if p.stamp_data is not None else payload) or "{}",
        file_metadata=jsonb(file_metadata) or "{}",
        metadata_version=p.metadata_version or DEFAULT_METADATA_VERSION,
        created_at=at,
    )


@dataclass(frozen=True, slots=True)
class _Workflow:
    """What a workflow's events in event_logs say of its stamps."""

    file_hash: str | None
    namespace: str | None
    # The events file_hash is read from: a stamp waited until this batch if all are new.
    hash_event_ids: frozenset[UUID]
    # Its STAMP_CREATED events, oldest first.
    stamps: tuple[_Claim, ...]


@dataclass(frozen=True, slots=True)
class _Stamp:
    """A stamp whose stamp_id and file_hash are known: its row as the statements' ``v(...)``
    columns name it."""

    id: UUID
    stamp_id: str
    file_hash: str
    namespace: str
    stamp_data: str
    file_metadata: str
    metadata_version: str
    created_at: datetime
    event_id: UUID
    # An event of this batch, which a conflict dead-letters; not one read back from event_logs.
    new: bool
    # Its file_hash became known in this batch: it is counted now, as a re-stamp or not.
    fresh: bool

    @property
    def order_key(self) -> tuple[datetime, UUID]:
        return (self.created_at, self.event_id)


def _shown(value: str) -> str:
    if len(value) <= _SHOWN_VALUE_MAX_CHARS:
        return repr(value)
    return repr(value[: _SHOWN_VALUE_MAX_CHARS - 1] + "…")


# --- SQL ---------------------------------------------------------------------------------------

# Locks (lock class, key) in sorted order, so two sinks cannot deadlock on each other.
_LOCK = Unnest(
    """
SELECT count(pg_advisory_xact_lock(lock_class, lock_key))
FROM (
    SELECT DISTINCT hashtext(k.lock_class) AS lock_class, hashtext(k.lock_key) AS lock_key
    FROM unnest($1::text[], $2::text[]) AS k(lock_class, lock_key)
    ORDER BY lock_class, lock_key
) AS keys
""",
    name="stamps.lock",
)

# What each workflow's events in event_logs say of its stamps, one index probe per workflow
# (idx_event_logs_workflow_stamp_events, migration 022; the aggregate keeps the probe inside the
# loop): the file_hash of its newest HASH_GENERATED, else of its newest WORKFLOW_COMPLETED that
# has one, and the ids of the events that have one; the namespace of its newest
# WORKFLOW_COMPLETED that has one; its STAMP_CREATED events, oldest first.
_WORKFLOWS = Unnest(
    """
SELECT w.workflow_id, f.file_hash, f.hash_event_ids, f.namespace, f.stamp_event_ids,
       f.stamp_event_ats, f.stamp_payloads, f.stamp_metadata
FROM unnest($1::text[]) AS w(workflow_id)
CROSS JOIN LATERAL (
    SELECT (array_agg(e.payload ->> 'file_hash'
                      ORDER BY e.event_type = 'HASH_GENERATED' DESC, e.created_at DESC, e.id DESC)
                FILTER (WHERE e.has_hash))[1] AS file_hash,
           array_agg(e.id) FILTER (WHERE e.has_hash) AS hash_event_ids,
           (array_agg(e.payload ->> 'namespace' ORDER BY e.created_at DESC, e.id DESC)
                FILTER (WHERE e.has_namespace))[1] AS namespace,
           array_agg(e.id ORDER BY e.created_at, e.id) FILTER (WHERE e.is_stamp)
               AS stamp_event_ids,
           array_agg(e.created_at ORDER BY e.created_at, e.id) FILTER (WHERE e.is_stamp)
               AS stamp_event_ats,
           array_agg(e.payload ORDER BY e.created_at, e.id) FILTER (WHERE e.is_stamp)
               AS stamp_payloads,
           array_agg(e.metadata ORDER BY e.created_at, e.id) FILTER (WHERE e.is_stamp)
               AS stamp_metadata
    FROM (
        SELECT l.id, l.created_at, l.event_type, l.payload, l.metadata,
               l.event_type = 'STAMP_CREATED' AS is_stamp,
               l.event_type <> 'STAMP_CREATED'
                   AND jsonb_typeof(l.payload -> 'file_hash') = 'string'
                   AND btrim(l.payload ->> 'file_hash') <> '' AS has_hash,
               l.event_type = 'WORKFLOW_COMPLETED'
                   AND jsonb_typeof(l.payload -> 'namespace') = 'string'
                   AND btrim(l.payload ->> 'namespace') <> '' AS has_namespace
        FROM event_logs AS l
        WHERE l.payload ->> 'workflow_id' = w.workflow_id
          AND l.event_type IN ('STAMP_CREATED', 'HASH_GENERATED', 'WORKFLOW_COMPLETED')
    ) AS e
) AS f
""",
    name="stamps.workflows",
)

_CLAIMS = Sql(
    """
SELECT stamp_id, file_hash, stamp_event_id
FROM metadata_stamps
WHERE stamp_id = ANY($1::text[]) OR file_hash = ANY($2::text[])
""",
    name="stamps.claims",
)

# A new row takes the newest INTELLIGENCE_RECEIVED with its hash already in event_logs, read
# as the workflow handler reads it (omnisink.newest_intelligence, migration 019; $10 is
# fields.INTELLIGENCE_NOT_DATA).
_INSERT = Unnest(
    """
INSERT INTO metadata_stamps AS t (
    id, stamp_id, file_hash, namespace, stamp_data, file_metadata, metadata_version, created_at,
    stamp_event_at, stamp_event_id, intelligence_data, intelligence_event_at,
    intelligence_event_id
)
SELECT v.id, v.stamp_id, v.file_hash, v.namespace, v.stamp_data::jsonb, v.file_metadata::jsonb,
       v.metadata_version, v.created_at, v.created_at, v.event_id,
       COALESCE(i.data, '{}'::jsonb), i.event_at, i.event_id
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[], $9::uuid[])
    AS v(id, stamp_id, file_hash, namespace, stamp_data, file_metadata, metadata_version,
         created_at, event_id)
LEFT JOIN LATERAL omnisink.newest_intelligence(v.file_hash, $10::text[]) AS i ON true
ON CONFLICT DO NOTHING
RETURNING file_hash
""",
    name="stamps.insert",
    extra=("not_data",),
)

# The earliest stamp of a hash holds its row: one older than the holder takes the row over,
# the holder's own event read again refreshes it (its workflow may name its namespace now). A
# row no event holds (another writer's) is never taken over. The intelligence stays.
_HOLD = Unnest(
    """
UPDATE metadata_stamps AS t
SET id = v.id,
    stamp_id = v.stamp_id,
    namespace = v.namespace,
    stamp_data = v.stamp_data::jsonb,
    file_metadata = v.file_metadata::jsonb,
    metadata_version = v.metadata_version,
    created_at = v.created_at,
    stamp_event_at = v.created_at,
    stamp_event_id = v.event_id
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[], $9::uuid[])
    AS v(id, stamp_id, file_hash, namespace, stamp_data, file_metadata, metadata_version,
         created_at, event_id)
WHERE t.file_hash = v.file_hash
  AND t.stamp_event_at IS NOT NULL
  -- the holder is newer than this stamp
  AND (omnisink.newer(t.stamp_event_at, t.stamp_event_id, v.created_at, v.event_id)
       OR (t.stamp_event_id = v.event_id AND t.namespace IS DISTINCT FROM v.namespace))
RETURNING t.file_hash
""",
    name="stamps.hold",
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
    """Which stamp_id is used for which file_hash (what is stored, then the stamps in claim
    order), and which event holds each stored row (None: no event, another writer's row)."""

    def __init__(self, rows: Sequence[asyncpg.Record]) -> None:
        self.hash_of: dict[str, str] = {r["stamp_id"]: r["file_hash"] for r in rows}
        self.holder: dict[str, UUID | None] = {r["file_hash"]: r["stamp_event_id"] for r in rows}

    def conflict(self, stamp: _Stamp) -> str | None:
        used = self.hash_of.get(stamp.stamp_id)
        if used is None or used == stamp.file_hash:
            return None
        return (
            f"stamp_id {_shown(stamp.stamp_id)} is already stamped with file_hash "
            f"{_shown(used)}; this event gives file_hash {_shown(stamp.file_hash)}"
        )


@dataclass(frozen=True, slots=True)
class _Claim:
    """A STAMP_CREATED to write, by its event id: the batch's, or one read back from event_logs."""

    event_id: UUID
    stamp: StampCreated
    # An event of this batch (a conflict dead-letters it).
    new: bool


@dataclass
class _Batch:
    """The stamps handler's part of a batch."""

    stamps: list[_Claim] = field(default_factory=list)
    # The workflows of the batch's HASH_GENERATED / WORKFLOW_COMPLETED, and those events' ids.
    workflows: set[str] = field(default_factory=set)
    workflow_event_ids: set[UUID] = field(default_factory=set)
    intelligence_hashes: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, items: Sequence[Item[StampPayload]]) -> _Batch:
        batch = cls()
        for item in items:
            payload = item.payload
            if isinstance(payload, StampCreated):
                batch.stamps.append(_Claim(item.event.event_id, payload, new=True))
            elif isinstance(payload, StampWorkflow):
                batch.workflows.add(payload.workflow_id)
                batch.workflow_event_ids.add(item.event.event_id)
            elif isinstance(payload, StampIntelligence) and payload.file_hash is not None:
                batch.intelligence_hashes.add(payload.file_hash)
        return batch


class StampsHandler:
    """STAMP_CREATED, the stamp half of INTELLIGENCE_RECEIVED, and the workflow events that
    complete a stamp -> metadata_stamps. See the module docstring for the decisions."""

    name = "stamps"
    event_types = frozenset(
        {
            EventType.STAMP_CREATED.value,
            EventType.INTELLIGENCE_RECEIVED.value,
            EventType.HASH_GENERATED.value,
            EventType.WORKFLOW_COMPLETED.value,
        }
    )

    def __init__(self, default_namespace: str = DEFAULT_NAMESPACE) -> None:
        self.default_namespace = default_namespace

    def parse(self, event: Event) -> StampPayload:
        if event.event_type == EventType.INTELLIGENCE_RECEIVED:
            intelligence = fields.validate(_IntelligencePayload, event.payload)
            # An empty hash can match no stamp (stamps require one): nothing to do, like none.
            return StampIntelligence(file_hash=intelligence.file_hash or None)
        if event.event_type == EventType.STAMP_CREATED:
            return stamp_created(event.payload, event.envelope.metadata, event.at)
        # The workflow handler validates these events; here they only name their workflow.
        workflow_id = _link(event.payload.get("workflow_id"))
        return None if workflow_id is None else StampWorkflow(workflow_id)

    async def apply(
        self, conn: asyncpg.Connection, items: Sequence[Item[StampPayload]]
    ) -> Counts | None:
        batch = _Batch.of(items)
        # The workflows whose events are read: those of the batch's workflow events, whose
        # stamps they may complete, and those of its stamps that lack a hash or a namespace.
        linked = batch.workflows | {
            c.stamp.workflow_id
            for c in batch.stamps
            if c.stamp.workflow_id is not None and c.stamp.reads_workflow
        }
        workflows: dict[str, _Workflow] = {}
        if linked:
            await _lock(conn, [(_LOCK_WORKFLOW, w) for w in linked])
            workflows = await _workflows(conn, linked)
        stamps = self._resolve(batch, workflows)
        hashes = {s.file_hash for s in stamps} | batch.intelligence_hashes
        if not hashes:
            return None
        await _lock(
            conn,
            [(_LOCK_STAMP_ID, s.stamp_id) for s in stamps] + [(_LOCK_FILE_HASH, h) for h in hashes],
        )
        counts = await _write(conn, stamps) if stamps else None
        if batch.intelligence_hashes:
            await conn.execute(
                _APPLY_INTELLIGENCE.sql,
                *_APPLY_INTELLIGENCE.args(
                    [{"file_hash": h} for h in sorted(batch.intelligence_hashes)],
                    not_data=_NOT_DATA,
                ),
            )
        return counts

    def _resolve(self, batch: _Batch, workflows: Mapping[str, _Workflow]) -> list[_Stamp]:
        """The stamps whose stamp_id and file_hash are known, in claim order: those of the
        workflows read back from event_logs first (oldest first), then the batch's in offset
        order."""
        in_batch = {c.event_id for c in batch.stamps}
        read_back = sorted(
            (c for w in workflows.values() for c in w.stamps if c.event_id not in in_batch),
            key=lambda c: (c.stamp.created_at, c.event_id),
        )
        out: list[_Stamp] = []
        for claim in read_back + batch.stamps:
            stamp = claim.stamp
            workflow = workflows.get(stamp.workflow_id) if stamp.workflow_id else None
            file_hash = stamp.file_hash or (workflow.file_hash if workflow else None)
            if file_hash is None:
                continue  # it waits for its workflow's hash
            # Read back, it is counted now only if its hash became known now: every event that
            # tells it is of this batch.
            fresh = claim.new or (
                stamp.file_hash is None
                and workflow is not None
                and workflow.hash_event_ids <= batch.workflow_event_ids
            )
            namespace = (
                stamp.namespace
                or (workflow.namespace if workflow else None)
                or stamp.metadata_namespace
                or self.default_namespace
            )
            out.append(
                _Stamp(
                    id=stamp_row_id(stamp.stamp_id),
                    stamp_id=stamp.stamp_id,
                    file_hash=file_hash,
                    namespace=namespace,
                    stamp_data=stamp.stamp_data,
                    file_metadata=stamp.file_metadata,
                    metadata_version=stamp.metadata_version,
                    created_at=stamp.created_at,
                    event_id=claim.event_id,
                    new=claim.new,
                    fresh=fresh,
                )
            )
        return out


async def _lock(conn: asyncpg.Connection, keys: list[tuple[str, str]]) -> None:
    rows = [{"lock_class": c, "lock_key": k} for c, k in sorted(set(keys))]
    await conn.fetchval(_LOCK.sql, *_LOCK.args(rows))


async def _workflows(conn: asyncpg.Connection, workflow_ids: set[str]) -> dict[str, _Workflow]:
    rows = await conn.fetch(
        _WORKFLOWS.sql, *_WORKFLOWS.args([{"workflow_id": w} for w in sorted(workflow_ids)])
    )
    return {r["workflow_id"]: _workflow(r) for r in rows}


def _workflow(row: asyncpg.Record) -> _Workflow:
    stamps = []
    for event_id, at, payload, metadata in zip(
        row["stamp_event_ids"] or (),
        row["stamp_event_ats"] or (),
        row["stamp_payloads"] or (),
        row["stamp_metadata"] or (),
        strict=True,
    ):
        try:
            stamp = stamp_created(
                orjson.loads(payload), orjson.loads(metadata) if metadata else {}, at
            )
        except Reject:
            continue  # accepted under other rules than today's: there is nothing to complete
        stamps.append(_Claim(event_id, stamp, new=False))
    return _Workflow(
        file_hash=_fitting(row["file_hash"], FILE_HASH_MAX_CHARS),
        namespace=_fitting(row["namespace"], NAMESPACE_MAX_CHARS),
        hash_event_ids=frozenset(row["hash_event_ids"] or ()),
        stamps=tuple(stamps),
    )


def _fitting(text: str | None, limit: int) -> str | None:
    # The workflow handler refuses longer ones; other handler sets may not have.
    return text if text is not None and len(text) <= limit else None


async def _write(conn: asyncpg.Connection, stamps: list[_Stamp]) -> Counts:
    """Write the rows of these stamps; return how many stamp events do not hold their row and
    did not before: those whose hash became known now, and the holders they replace."""
    stored = _Claims(
        await conn.fetch(
            _CLAIMS.sql,
            sorted({s.stamp_id for s in stamps}),
            sorted({s.file_hash for s in stamps}),
        )
    )
    held = dict(stored.holder)
    oldest, counted, rejections = _claim_in_order(stored, stamps)
    inserted, found, more = await _insert(conn, [s for h, s in oldest.items() if h not in held])
    rejections |= more
    if rejections:
        raise Rejected(rejections)
    held |= found
    holding = [s for h, s in oldest.items() if h in held and h not in inserted]
    took: set[str] = set()
    if holding:
        took = {r["file_hash"] for r in await conn.fetch(_HOLD.sql, *_HOLD.args(holding))}
    restamps = 0
    for file_hash, stamp in oldest.items():
        mine = file_hash not in held or file_hash in inserted or file_hash in took
        holder = stamp.event_id if mine else held[file_hash]
        before = held.get(file_hash)
        seen = counted.get(file_hash, set()) | ({before} if before is not None else set())
        restamps += len(seen - {holder})
    return Counts(restamps=restamps)


def _claim_in_order(
    claims: _Claims, stamps: Sequence[_Stamp]
) -> tuple[dict[str, _Stamp], dict[str, set[UUID]], dict[UUID, Reject]]:
    """The oldest stamp per file_hash among those that conflict with nothing before them, the
    events per file_hash whose hash became known in this batch, and the batch's conflicting
    events.

    What is stored comes first, then the stamps in claim order: the first use of a stamp_id
    wins. The oldest stamp's facts are the row's (see the module docstring).
    """
    rejections: dict[UUID, Reject] = {}
    oldest: dict[str, _Stamp] = {}
    counted: dict[str, set[UUID]] = {}
    for stamp in stamps:
        conflict = claims.conflict(stamp)
        if conflict is not None:
            if stamp.new:
                rejections[stamp.event_id] = Reject("conflict", conflict)
            continue  # a stamp read back that conflicts is not written
        claims.hash_of[stamp.stamp_id] = stamp.file_hash
        held = oldest.get(stamp.file_hash)
        if held is None or stamp.order_key < held.order_key:
            oldest[stamp.file_hash] = stamp
        if stamp.fresh:
            counted.setdefault(stamp.file_hash, set()).add(stamp.event_id)
    return oldest, counted, rejections


async def _insert(
    conn: asyncpg.Connection, rows: list[_Stamp]
) -> tuple[set[str], dict[str, UUID | None], dict[UUID, Reject]]:
    """Insert the rows of hashes that have none; return the hashes inserted, the rows found
    instead (another writer's, committed since the first look) and the events that conflict."""
    inserted: set[str] = set()
    found: dict[str, UUID | None] = {}
    rejections: dict[UUID, Reject] = {}
    pending = rows
    for _ in range(_INSERT_ATTEMPTS):
        if not pending:
            return inserted, found, rejections
        args = _INSERT.args(pending, not_data=_NOT_DATA)
        done = {r["file_hash"] for r in await conn.fetch(_INSERT.sql, *args)}
        inserted |= done
        missed = [s for s in pending if s.file_hash not in done]
        if not missed:
            return inserted, found, rejections
        # Not inserted: a row with this stamp_id or file_hash exists, committed by another
        # writer after our first look. This statement's snapshot sees it.
        stored = _Claims(
            await conn.fetch(
                _CLAIMS.sql, [s.stamp_id for s in missed], [s.file_hash for s in missed]
            )
        )
        pending = []
        for stamp in missed:
            conflict = stored.conflict(stamp)
            if conflict is not None:
                if stamp.new:
                    rejections[stamp.event_id] = Reject("conflict", conflict)
            elif stamp.file_hash in stored.holder:
                found[stamp.file_hash] = stored.holder[stamp.file_hash]
            else:
                pending.append(stamp)  # the row that blocked us is gone: insert again
    if not pending:
        return inserted, found, rejections
    # Only a concurrent DELETE of stamps can get here (the sink never deletes them): the rows
    # changed under us, and the consumer runs the whole batch again.
    raise Contended(
        "metadata_stamps rows kept vanishing between INSERT and SELECT; retry the batch"
    )


STAMPS = StampsHandler()
