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
    within the batch.
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
        seen.add(event.event_id)
        items: list[tuple[int, Item[Any]]] = []
        try:
            for index, handler in enumerate(handlers):
                if event.event_type in handler.event_types:
                    items.append((index, Item(event, handler.parse(event))))
        except Reject as reject:
            rejected.append((event, reject))
            continue
        kept.append(event)
        for index, item in items:
            by_handler[index].append(item)
    return by_handler, rejected, kept, repeats


async def write(
    conn: asyncpg.Connection, events: Sequence[Event], handlers: Sequence[Handler[Any]]
) -> BatchResult:
    """Write a batch inside the caller's transaction.

    Each attempt runs in a savepoint: when a handler finds events it can never write
    (:class:`Rejected`), the savepoint is rolled back and the batch is written again without
    them, so one bad event never takes the rest of its batch with it.
    """
    by_handler, rejected, kept, repeats = route(events, handlers)
    result = BatchResult(rejected=rejected)
    while True:
        try:
            async with conn.transaction():
                new_ids = await event_logs.insert(conn, kept)
                for index, handler in enumerate(handlers):
                    items = [i for i in by_handler[index] if i.event.event_id in new_ids]
                    if items:
                        await handler.apply(conn, items)
        except Rejected as exc:
            if not exc.rejections or not exc.rejections.keys() <= {e.event_id for e in kept}:
                raise RuntimeError("a handler rejected events that are not in its batch") from exc
            result.rejected.extend(
                (e, exc.rejections[e.event_id]) for e in kept if e.event_id in exc.rejections
            )
            kept = [e for e in kept if e.event_id not in exc.rejections]
            by_handler = {
                index: [i for i in items if i.event.event_id not in exc.rejections]
                for index, items in by_handler.items()
            }
            continue
        break
    result.new = [e for e in kept if e.event_id in new_ids]
    result.duplicates = [e for e in kept if e.event_id not in new_ids] + repeats
    return result
