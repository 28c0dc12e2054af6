"""Contract rule 4.2 over every handler at once: any order, any batching, any duplicates of a
conflict-free event set leave every current-state and per-event table identical.

The event set is the sample stream (dev/sample.py: every event type, realistic ids and
payloads); hypothesis chooses the permutation, the batch boundaries and the duplicates. Each
family's own property test (tests/integration/handlers/) covers its edge cases; this one
covers the families together, through the same batch driver and registry the daemon uses.
"""

from __future__ import annotations

import itertools

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.store import batch
from dev import sample
from handlers.base import Event
from handlers.envelope import decode
from handlers.registry import HANDLERS, resolve
from tests.support import DATA_TABLES, table_snapshot

STREAM = sample.generate(120, seed=3, env="conv")


def _events() -> list[Event]:
    out: list[Event] = []
    seen = set()
    for index, record in enumerate(STREAM.records):
        if record.event_id in seen:
            continue  # the property adds its own duplicates
        seen.add(record.event_id)
        envelope = resolve(decode(record.value, max_bytes=1 << 20), record.topic)
        # Where an event was read is fixed per event, whatever the order of the run.
        out.append(Event(envelope, record.topic, 0, index))
    return out


EVENTS = _events()


async def _reset(conn: asyncpg.Connection) -> None:
    await conn.execute(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE")


async def _apply(conn: asyncpg.Connection, batches: list[list[Event]]) -> None:
    for events in batches:
        async with conn.transaction():
            result = await batch.write_events(conn, events, HANDLERS)
        assert not result.rejected, [(e.event_type, str(r)) for e, r in result.rejected]


def test_the_sample_stream_covers_every_handled_type() -> None:
    handled = set().union(*(h.event_types for h in HANDLERS))
    assert handled <= {e.event_type for e in EVENTS}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_any_order_batching_and_duplication_converges(
    db: asyncpg.Connection, data: st.DataObject
) -> None:
    await _reset(db)
    await _apply(db, [EVENTS])
    expected = await table_snapshot(db)
    assert len(expected["event_logs"]) == len(EVENTS)

    order = data.draw(st.permutations(EVENTS), label="order")
    repeats = data.draw(
        st.lists(st.sampled_from(EVENTS), max_size=len(EVENTS) // 4), label="duplicates"
    )
    sequence = list(order)
    for i, event in enumerate(repeats):
        sequence.insert((i * 7919) % (len(sequence) + 1), event)
    cuts = sorted(
        data.draw(
            st.sets(st.integers(1, len(sequence) - 1), max_size=len(sequence) // 5), label="cuts"
        )
    )
    bounds = [0, *cuts, len(sequence)]
    batches = [sequence[a:b] for a, b in itertools.pairwise(bounds)]

    await _reset(db)
    await _apply(db, batches)
    got = await table_snapshot(db)
    for table in expected:
        assert got[table] == expected[table], f"{table} depends on arrival order"
