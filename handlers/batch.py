"""One batch of valid events through ``event_logs`` and the domain handlers.

This is the domain half of a batch; the consumer wraps it in the transaction that also moves
the offsets and records the dead letters (consumer/worker.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg

from handlers import event_logs
from handlers.base import Event, Handler, Item, Reject, Rejected


@dataclass
class BatchResult:
    """What happened to each event of a batch."""

    # Events written for the first time (event_logs row and domain rows).
    new: list[Event] = field(default_factory=list)
    # Events already in event_logs: duplicates, replays, redeliveries. Nothing was written.
    duplicates: list[Event] = field(default_factory=list)
    # Events that can never be written, with the reason; nothing about them was written.
    rejected: list[tuple[Event, Reject]] = field(default_factory=list)


def route(
    events: Sequence[Event], handlers: Sequence[Handler[Any]]
) -> tuple[dict[int, list[Item[Any]]], list[tuple[Event, Reject]], list[Event], list[Event]]:
    """Parse every event for every handler of its type (pure).

    Returns the items per handler index, the events a handler rejected, the events left to
    write (in input order, first of each event_id only) and the repeats of an event_id
    within the batch. Only a *kept* event makes later records with its id repeats: a record
    whose first occurrence was rejected is judged on its own, so it lands in its tables or
    gets its own dead letter, never nowhere.
    """
    by_handler: dict[int, list[Item[Any]]] = {i: [] for i in range(len(handlers))}
    rejected: list[tuple[Event, Reject]] = []
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
        seen.add(event.event_id)
        kept.append(event)
        for index, item in items:
            by_handler[index].append(item)
    return by_handler, rejected, kept, repeats


# Errors of the data itself: the same rows can never be written (23 integrity constraint,
# 22 data exception, 54 program limit such as an index row too large). Anything else from the
# database is the consumer's to classify (transient or fatal), never a reason to drop data.
PERMANENT_SQL_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.DataError,
    asyncpg.ProgramLimitExceededError,
)


async def write(
    conn: asyncpg.Connection, events: Sequence[Event], handlers: Sequence[Handler[Any]]
) -> BatchResult:
    """Write a batch inside the caller's transaction.

    Each attempt runs in a savepoint, so one bad event never takes the rest of its batch with
    it: when a handler names events it can never write (:class:`Rejected`), the savepoint is
    rolled back and the batch is written again without them; when the database refuses the
    data itself (``PERMANENT_SQL_ERRORS``) without saying which event, the batch is split in
    halves, each written in its own savepoint, down to the one event that fails alone, which
    is rejected as ``constraint``. Halves are written in order, so the rest of the batch
    still commits in order.
    """
    by_handler, rejected, kept, repeats = route(events, handlers)
    result = BatchResult(rejected=rejected)
    new_ids = await _write_part(conn, kept, by_handler, handlers, result)
    # Records, not event ids: a refused record and a valid one may share an id (see route).
    refused = {id(e): reason for e, reason in result.rejected}
    reasons = {e.event_id: refused[id(e)] for e in kept if id(e) in refused}
    kept = [e for e in kept if id(e) not in refused]
    result.new = [e for e in kept if e.event_id in new_ids]
    result.duplicates = [e for e in kept if e.event_id not in new_ids]
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
) -> set[UUID]:
    """Write ``part`` in a savepoint; return the ids it wrote for the first time."""
    while part:
        ids = {e.event_id for e in part}
        try:
            async with conn.transaction():
                new_ids = await event_logs.insert(conn, part)
                for index, handler in enumerate(handlers):
                    items = [
                        i
                        for i in by_handler[index]
                        if i.event.event_id in new_ids and i.event.event_id in ids
                    ]
                    if items:
                        await handler.apply(conn, items)
        except Rejected as exc:
            if not exc.rejections or not exc.rejections.keys() <= ids:
                raise RuntimeError("a handler rejected events that are not in its batch") from exc
            result.rejected.extend(
                (e, exc.rejections[e.event_id]) for e in part if e.event_id in exc.rejections
            )
            part = [e for e in part if e.event_id not in exc.rejections]
        except PERMANENT_SQL_ERRORS as exc:
            if len(part) == 1:
                result.rejected.append((part[0], _constraint(exc)))
                return set()
            middle = len(part) // 2
            first = await _write_part(conn, part[:middle], by_handler, handlers, result)
            return first | await _write_part(conn, part[middle:], by_handler, handlers, result)
        else:
            return new_ids
    return set()


def _constraint(exc: Exception) -> Reject:
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
