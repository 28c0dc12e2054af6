"""Write one batch: the one function the daemon (and every tool that writes events) calls.

When is an offset committed? Here, in :func:`write_batch`, and nowhere else: in the one
PostgreSQL transaction that writes the batch's

1. ``event_logs`` rows (one per distinct event; the ids it did not already hold are the
   batch's *new* events, and only they go on: that is what makes every handler idempotent),
2. domain rows, each handler family's set-based statements, in savepoints (below),
3. dead-letter rows, after the broker acknowledged their copies on ``<topic>.dlq``,
4. next offsets, fenced (consumer/store/offsets.py): the write succeeds only if the stored
   offset is still the one this member last saw, else the whole transaction rolls back.

Kafka is told afterwards, for lag tooling only (consumer/worker.py).

Records are decoded once (:meth:`Batch.decode`), before the first attempt: a batch retried
after a transient fault is written again from the same events and dead letters, so a dead
letter's facts (its ``failed_at``) are the same on the topic and in the table.

An error nobody classified, raised while one record is judged (decoding it, a handler's
``parse``, building its dead letter), is that record's alone: it becomes an ``internal`` dead
letter with the error's class, message and traceback (:class:`Internal`), and the rest of the
batch goes on, so a bug that trips on one record never stops its partition for good. Raised
anywhere else (a handler's ``apply``, the statements), it propagates: the transaction rolls
back and the worker stops (docs/failures.md).

A bad event never takes its batch with it. Each attempt runs in a savepoint: when a handler
names events it can never write (``Rejected``), the savepoint is rolled back and the batch is
written again without them; when PostgreSQL refuses the data itself (``classify`` says
*permanent*) without saying which event, the batch is split in halves, each in its own
savepoint, down to the one event that fails alone, which becomes a ``constraint`` dead letter.
Halves are written in order, so the rest of the batch still commits in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
from aiokafka import ConsumerRecord, TopicPartition

from consumer.deadletters import DeadLetter, Publisher, from_exception
from consumer.errors import classify
from consumer.store import dead_letters, offsets
from handlers import event_logs
from handlers.base import Counts, Event, Handler, Item, Reject, Rejected
from handlers.contract import DeadLetterKind
from handlers.envelope import DecodeError, decode
from handlers.registry import resolve

Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
Source = tuple[str, int, int]


@dataclass(frozen=True)
class Internal:
    """An error nobody classified, raised while a handler parsed one event: the event becomes
    an ``internal`` dead letter carrying the error itself (its class, message, traceback)."""

    error: Exception
    kind: DeadLetterKind = "internal"


# Why an event can never be written: a handler's decision, or an error nobody classified.
Reason = Reject | Internal


@dataclass
class BatchResult:
    """What happened to each event of a batch (the domain half of a batch)."""

    # Events written for the first time (event_logs row and domain rows).
    new: list[Event] = field(default_factory=list)
    # Events already in event_logs: duplicates, replays, redeliveries. Nothing was written,
    # unless their family is re-applied (below).
    duplicates: list[Event] = field(default_factory=list)
    # Duplicates whose domain rows were written again (``reapply``: a backfill after a fix).
    reapplied: list[Event] = field(default_factory=list)
    # Events that can never be written, with the reason; nothing about them was written.
    rejected: list[tuple[Event, Reason]] = field(default_factory=list)
    # What the handlers counted in the attempts that were written (re-stamps).
    counts: Counts = field(default_factory=Counts)


@dataclass
class Batch:
    """Fetched records, decoded once: the valid events and the records already refused."""

    records: Records
    events: list[Event]
    refused: list[DeadLetter]
    # Dead letters made for events the handlers or the database refused, by source position,
    # so a retried attempt reuses the letter (and its failed_at) it already published.
    _letters: dict[Source, DeadLetter] = field(default_factory=dict)

    @classmethod
    def decode(cls, records: Records, *, max_bytes: int, keep_unknown: bool) -> Batch:
        batch = cls(records, [], [])
        for record in _each(records):
            batch._add(_judged(record, max_bytes=max_bytes, keep_unknown=keep_unknown))
        return batch

    @classmethod
    async def decode_yielding(
        cls, records: Records, *, max_bytes: int, keep_unknown: bool, every: int = 200
    ) -> Batch:
        """:meth:`decode`, handing the event loop back every ``every`` records, so the batch
        written meanwhile (consumer/worker.py) gets PostgreSQL's answers as they come."""
        batch = cls(records, [], [])
        for n, record in enumerate(_each(records), 1):
            batch._add(_judged(record, max_bytes=max_bytes, keep_unknown=keep_unknown))
            if n % every == 0:
                await asyncio.sleep(0)
        return batch

    def _add(self, judged: Event | DeadLetter) -> None:
        if isinstance(judged, DeadLetter):
            self.refused.append(judged)
        else:
            self.events.append(judged)

    @property
    def size(self) -> int:
        return sum(len(rs) for rs in self.records.values())

    @property
    def next_offsets(self) -> dict[TopicPartition, int]:
        return {tp: rs[-1].offset + 1 for tp, rs in self.records.items() if rs}

    def keep_only(self, partitions: set[TopicPartition]) -> None:
        """Drop the records of every other partition (revoked, or to be sought again)."""
        if self.records.keys() <= partitions:
            return
        self.records = {tp: rs for tp, rs in self.records.items() if tp in partitions}
        owned = {(tp.topic, tp.partition) for tp in partitions}
        self.events = [e for e in self.events if (e.topic, e.partition) in owned]
        self.refused = [d for d in self.refused if d.source[:2] in owned]

    def letter(self, event: Event, reason: Reason) -> DeadLetter:
        source = (event.topic, event.partition, event.offset)
        held = self._letters.get(source)
        if held is None or held.kind != reason.kind:
            record = next(
                r
                for r in self.records[TopicPartition(event.topic, event.partition)]
                if r.offset == event.offset
            )
            error = reason.error if isinstance(reason, Internal) else reason
            held = from_exception(
                record, reason.kind, error, event_id=event.event_id, event_type=event.event_type
            )
            self._letters[source] = held
        return held


def _each(records: Records) -> Iterator[ConsumerRecord[bytes, bytes]]:
    for rs in records.values():
        yield from rs


def _judged(
    record: ConsumerRecord[bytes, bytes], *, max_bytes: int, keep_unknown: bool
) -> Event | DeadLetter:
    try:
        return _judge(record, max_bytes=max_bytes, keep_unknown=keep_unknown)
    except Exception as exc:  # noqa: BLE001 - nobody classified it: this record's alone
        return from_exception(record, "internal", exc)


def _judge(
    record: ConsumerRecord[bytes, bytes], *, max_bytes: int, keep_unknown: bool
) -> Event | DeadLetter:
    """The record's event, or its dead letter when it is not one the sink can write."""
    try:
        envelope = resolve(decode(record.value, max_bytes=max_bytes), record.topic)
    except DecodeError as exc:
        return from_exception(record, exc.kind, exc)
    if not keep_unknown and envelope.known_type is None:
        unknown = DecodeError("schema", f"unknown event type {envelope.event_type!r}")
        return from_exception(
            record,
            "unknown_type",
            unknown,
            event_id=envelope.event_id,
            event_type=envelope.event_type,
        )
    return Event(envelope, record.topic, record.partition, record.offset)


@dataclass(frozen=True)
class Outcome:
    """What one committed batch did: Stats and Metrics are both derived from this."""

    records: int
    records_by_topic: Mapping[str, int]
    written: list[Event]
    duplicates: list[Event]
    dead_letters: list[DeadLetter]
    next_offsets: Mapping[TopicPartition, int]
    took_s: float
    counts: Counts = field(default_factory=Counts)
    reapplied: list[Event] = field(default_factory=list)


async def write_batch(
    conn: asyncpg.Connection,
    batch: Batch,
    handlers: Sequence[Handler[Any]],
    *,
    group: str,
    expected: Mapping[TopicPartition, int],
    publisher: Publisher,
    reapply: Collection[str] = (),
) -> Outcome:
    """Write the batch and move its offsets, in one transaction (module docstring).

    ``group`` owns the offsets: the consumer group, or a replay's own name. ``reapply`` names
    handler families that are handed every event of the batch, not only the new ones, so
    their rows are written again from events ``event_logs`` already holds; every family is
    idempotent and order-tolerant, so this leaves the tables as a clean run would.

    ``expected`` is the next offset this member last saw per partition (the fence). Raises
    ``offsets.OffsetFenced`` when another member moved one (nothing is written), and whatever
    the database or the broker raised (nothing is written either; the caller classifies it).
    """
    started = time.monotonic()
    next_offsets = batch.next_offsets
    async with conn.transaction():
        result = await write_events(conn, batch.events, handlers, reapply)
        dead = batch.refused + [batch.letter(e, reject) for e, reject in result.rejected]
        if dead:
            # Durable on the broker before the offset can move past them.
            await publisher.publish(dead)
            await dead_letters.insert(conn, group, dead, publisher.landed)
        await offsets.store(conn, group, next_offsets, expected)
    publisher.forget([d.source for d in dead])
    by_topic: dict[str, int] = {}
    for tp, rs in batch.records.items():
        by_topic[tp.topic] = by_topic.get(tp.topic, 0) + len(rs)
    return Outcome(
        records=batch.size,
        records_by_topic=by_topic,
        written=result.new,
        duplicates=result.duplicates,
        dead_letters=dead,
        next_offsets=next_offsets,
        took_s=time.monotonic() - started,
        counts=result.counts,
        reapplied=result.reapplied,
    )


def route(
    events: Sequence[Event], handlers: Sequence[Handler[Any]]
) -> tuple[dict[int, list[Item[Any]]], list[tuple[Event, Reason]], list[Event], list[Event]]:
    """Parse every event for every handler of its type (pure).

    Returns the items per handler index, the events a handler rejected, the events left to
    write (in input order, first of each event_id only) and the repeats of an event_id
    within the batch. Only a *kept* event makes later records with its id repeats: a record
    whose first occurrence was rejected is judged on its own, so it lands in its tables or
    gets its own dead letter, never nowhere.
    """
    by_handler: dict[int, list[Item[Any]]] = {i: [] for i in range(len(handlers))}
    rejected: list[tuple[Event, Reason]] = []
    kept: list[Event] = []
    repeats: list[Event] = []
    seen: set[UUID] = set()
    for event in events:
        if event.event_id in seen:
            repeats.append(event)
            continue
        items: list[tuple[int, Item[Any]]] = []
        try:
            for index, handler in enumerate(handlers):
                if event.event_type in handler.event_types:
                    items.append((index, Item(event, handler.parse(event))))
        except Reject as reject:
            rejected.append((event, reject))
            continue
        except Exception as exc:  # noqa: BLE001 - nobody classified it: this event's alone
            rejected.append((event, Internal(exc)))
            continue
        seen.add(event.event_id)
        kept.append(event)
        for index, item in items:
            by_handler[index].append(item)
    return by_handler, rejected, kept, repeats


async def write_events(
    conn: asyncpg.Connection,
    events: Sequence[Event],
    handlers: Sequence[Handler[Any]],
    reapply: Collection[str] = (),
) -> BatchResult:
    """Write the events' ``event_logs`` and domain rows inside the caller's transaction, each
    attempt in a savepoint (module docstring); no dead letters, no offsets. The handlers
    named in ``reapply`` also get the events ``event_logs`` already held."""
    by_handler, rejected, kept, repeats = route(events, handlers)
    result = BatchResult(rejected=rejected)
    again = frozenset(i for i, h in enumerate(handlers) if h.name in reapply)
    new_ids = await _write_part(conn, kept, by_handler, handlers, result, again=again)
    # Records, not event ids: a refused record and a valid one may share an id (see route).
    refused = {id(e): reason for e, reason in result.rejected}
    reasons = {e.event_id: refused[id(e)] for e in kept if id(e) in refused}
    kept = [e for e in kept if id(e) not in refused]
    result.new = [e for e in kept if e.event_id in new_ids]
    result.duplicates = [e for e in kept if e.event_id not in new_ids]
    if again:
        types = frozenset().union(*(handlers[i].event_types for i in again))
        result.reapplied = [e for e in result.duplicates if e.event_type in types]
    for repeat in repeats:
        # A repeat of an event the database refused shares its fate, with its own dead letter.
        if repeat.event_id in reasons:
            result.rejected.append((repeat, reasons[repeat.event_id]))
        else:
            result.duplicates.append(repeat)
    return result


async def _write_part(
    conn: asyncpg.Connection,
    part: list[Event],
    by_handler: dict[int, list[Item[Any]]],
    handlers: Sequence[Handler[Any]],
    result: BatchResult,
    *,
    again: frozenset[int] = frozenset(),
) -> set[UUID]:
    """Write ``part`` in a savepoint; return the ids it wrote for the first time. The handlers'
    counts of an attempt that is rolled back are dropped with it. The handlers whose index is
    in ``again`` get every event of the part, new or not."""
    while part:
        ids = {e.event_id for e in part}
        counts = Counts()
        try:
            async with conn.transaction():
                new_ids = await event_logs.insert(conn, part)
                for index, handler in enumerate(handlers):
                    items = [
                        i
                        for i in by_handler[index]
                        if i.event.event_id in ids
                        and (index in again or i.event.event_id in new_ids)
                    ]
                    if items:
                        counts += await handler.apply(conn, items) or Counts()
        except Rejected as exc:
            if not exc.rejections or not exc.rejections.keys() <= ids:
                raise RuntimeError("a handler rejected events that are not in its batch") from exc
            result.rejected.extend(
                (e, exc.rejections[e.event_id]) for e in part if e.event_id in exc.rejections
            )
            part = [e for e in part if e.event_id not in exc.rejections]
        except asyncpg.PostgresError as exc:
            if classify(exc) != "permanent":
                raise
            if len(part) == 1:
                result.rejected.append((part[0], _constraint(exc)))
                return set()
            middle = len(part) // 2
            first = await _write_part(
                conn, part[:middle], by_handler, handlers, result, again=again
            )
            return first | await _write_part(
                conn, part[middle:], by_handler, handlers, result, again=again
            )
        else:
            result.counts += counts
            return new_ids
    return set()


def _constraint(exc: asyncpg.PostgresError) -> Reject:
    state = getattr(exc, "sqlstate", "?")
    where = [
        f"{name} {value}"
        for name, value in (
            ("table", getattr(exc, "table_name", None)),
            ("column", getattr(exc, "column_name", None)),
            ("constraint", getattr(exc, "constraint_name", None)),
        )
        if value
    ]
    suffix = f" ({', '.join(where)})" if where else ""
    return Reject("constraint", f"PostgreSQL refused the event's rows: {state} {exc}{suffix}")
