"""What every handler is: the event it receives, the contract it keeps, how it refuses an event.

The consumer drives a batch through the handlers in one PostgreSQL transaction:

1. ``parse`` every event of the handler's types (pure, no database). A payload that can never be
   written raises :class:`Reject`: the record is dead-lettered and nothing else about it is
   written, not even its ``event_logs`` row.
2. ``event_logs`` is written for the batch; only the events it did not already hold (the *new*
   events) go on. This is how every handler is idempotent, per-event tables included: an event
   that is in ``event_logs`` has had all its rows written in the same transaction.
3. ``apply`` once per handler, in the registry's order, with that handler's new events of the
   batch, in batch (offset) order, duplicates removed. One statement per table per batch: a
   handler reduces several events of one row to one input row first, because an
   ``INSERT ... ON CONFLICT DO UPDATE`` may not touch the same row twice. A check that needs
   the database (a stamp conflict) raises :class:`Rejected` naming the events: the consumer
   rolls the transaction back, dead-letters those events and runs the batch again without them.
   ``apply`` may return :class:`Counts`, what it saw besides its rows (a re-stamp); the
   consumer keeps the counts of the attempts that were written and counts them in its metrics.

Order tolerance (contract section 4.2) is each handler's job: a current-state column moves only
for an event newer by ``(event_timestamp, event_id)`` than the one that last moved it (the
``<aspect>_event_at`` / ``<aspect>_event_id`` columns), and a child whose parent row is missing
creates a placeholder parent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

import asyncpg
import orjson

from handlers.contract import RejectKind
from handlers.envelope import Envelope, foreign_id_to_uuid


@dataclass(frozen=True, slots=True)
class Event:
    """One valid event and where it was read."""

    envelope: Envelope
    topic: str
    partition: int
    offset: int

    @property
    def event_id(self) -> UUID:
        return self.envelope.event_id

    @property
    def event_type(self) -> str:
        return self.envelope.event_type

    @property
    def at(self) -> datetime:
        """The event's time (UTC): every time column an event fills takes this (rule 4.5)."""
        return self.envelope.event_timestamp

    @property
    def payload(self) -> dict[str, Any]:
        return self.envelope.payload

    @property
    def order_key(self) -> tuple[datetime, UUID]:
        """Newest wins by this key (rule 4.2); Python compares UUIDs as PostgreSQL does."""
        return (self.envelope.event_timestamp, self.envelope.event_id)


class Reject(Exception):  # noqa: N818 - a decision, not a failure of the sink
    """This event can never be written: dead-letter it with ``kind`` and ``message``."""

    def __init__(self, kind: RejectKind, message: str) -> None:
        super().__init__(kind, message)
        self.kind: RejectKind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message


class Rejected(Exception):  # noqa: N818 - carries Reject decisions out of a transaction
    """Raised by ``apply`` when the database shows some events can never be written."""

    def __init__(self, rejections: Mapping[UUID, Reject]) -> None:
        super().__init__(f"{len(rejections)} event(s) rejected")
        self.rejections = dict(rejections)


class Contended(Exception):  # noqa: N818 - a condition of the data, like Rejected
    """Raised by ``apply`` when concurrent writers changed the rows under it in a way it cannot
    resolve inside this transaction: the whole batch is run again (the consumer classifies
    this as transient). Handlers never raise a driver's exception class for this."""


@dataclass(frozen=True, slots=True)
class Counts:
    """What an ``apply`` reports besides its rows; the consumer adds them up per batch."""

    # STAMP_CREATED events that do not hold their file_hash's row: re-stamps (rule 4.6).
    restamps: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(restamps=self.restamps + other.restamps)


P = TypeVar("P")
T = TypeVar("T")
K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class Item(Generic[T]):
    """An event with its parsed payload."""

    event: Event
    payload: T


class Handler(Protocol[P]):
    """A table family's writer. See the module docstring for the contract."""

    name: str
    event_types: frozenset[str]

    def parse(self, event: Event) -> P:
        """Validate the payload (no I/O). Raise :class:`Reject` for a permanent error."""
        ...

    async def apply(self, conn: asyncpg.Connection, items: Sequence[Item[P]]) -> Counts | None:
        """Write the rows of these new events, set-based, inside the caller's transaction;
        return what it counted, if anything."""
        ...


def newest(items: Sequence[Item[T]], key: Any) -> dict[K, Item[T]]:
    """The newest item per ``key(item)``, by (event_timestamp, event_id)."""
    out: dict[K, Item[T]] = {}
    for item in items:
        k = key(item)
        held = out.get(k)
        if held is None or item.event.order_key > held.event.order_key:
            out[k] = item
    return out


def as_columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows of ``width`` values as ``width`` columns: the arrays of an ``unnest($1, $2, ...)``
    statement (a row of another width is a bug, and raises)."""
    columns: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def as_uuid(value: str | UUID) -> UUID:
    """A UUID given as text, or the stable UUID standing for a non-UUID id (contract section 3)."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except ValueError:
        return foreign_id_to_uuid(value)


def jsonb(value: Any) -> str | None:
    """A value as a jsonb parameter (asyncpg takes jsonb as text)."""
    if value is None:
        return None
    return orjson.dumps(value).decode()
