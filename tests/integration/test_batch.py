"""Records that share an event_id inside one batch: a repeat of a written event is a
duplicate; a record whose twin was refused is judged on its own, so every record either
lands in its tables or gets its own dead letter, never nowhere."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from consumer.store import batch
from handlers.base import Event
from handlers.envelope import Envelope
from handlers.registry import HANDLERS

STAMP = {"stamp_id": "st-1", "file_hash": "ab" * 32, "namespace": "ns", "stamp_data": {}}


def _event(event_id: uuid.UUID, event_type: str, payload: dict[str, Any], offset: int) -> Event:
    envelope = Envelope.from_wire(
        {
            "event_id": str(event_id),
            "event_type": event_type,
            "event_timestamp": "2026-01-01T00:00:00Z",
            "payload": payload,
        }
    )
    return Event(envelope, "t", 0, offset)


async def _write(db: asyncpg.Connection, events: list[Event]) -> batch.BatchResult:
    async with db.transaction():
        return await batch.write_events(db, events, HANDLERS)


async def test_a_valid_record_after_its_refused_twin_is_written(db: asyncpg.Connection) -> None:
    same = uuid.uuid4()
    bad = _event(same, "STAMP_CREATED", {"stamp_id": "st-1"}, 0)  # no file_hash: refused
    good = _event(same, "STAMP_CREATED", STAMP, 1)
    result = await _write(db, [bad, good])
    assert [(e.offset, r.kind) for e, r in result.rejected] == [(0, "schema")]
    assert [e.offset for e in result.new] == [1]
    assert await db.fetchval("SELECT count(*) FROM metadata_stamps") == 1


async def test_every_record_of_a_refused_event_gets_its_own_dead_letter(
    db: asyncpg.Connection,
) -> None:
    same = uuid.uuid4()
    records = [_event(same, "STAMP_CREATED", {"stamp_id": "st-1"}, i) for i in range(2)]
    result = await _write(db, records)
    assert [(e.offset, r.kind) for e, r in result.rejected] == [(0, "schema"), (1, "schema")]
    assert not result.new
    assert not result.duplicates


async def test_a_repeat_of_an_event_refused_by_the_database_shares_its_fate(
    db: asyncpg.Connection,
) -> None:
    first = _event(uuid.uuid4(), "STAMP_CREATED", STAMP, 0)
    conflicting = uuid.uuid4()  # the same stamp id with another hash: a conflict
    other = {**STAMP, "file_hash": "cd" * 32}
    records = [
        first,
        _event(conflicting, "STAMP_CREATED", other, 1),
        _event(conflicting, "STAMP_CREATED", other, 2),
        _event(first.event_id, "STAMP_CREATED", STAMP, 3),  # a true duplicate
    ]
    result = await _write(db, records)
    assert [(e.offset, r.kind) for e, r in result.rejected] == [(1, "conflict"), (2, "conflict")]
    assert [e.offset for e in result.new] == [0]
    assert [e.offset for e in result.duplicates] == [3]
