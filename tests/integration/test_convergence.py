"""Contract rule 4.2 over every handler at once: any order, any batching, any duplicates of a
conflict-free event set leave every current-state and per-event table identical.

The event set is the sample stream (dev/sample.py: every event type, realistic ids and
payloads), plus stamps as the producers send them (docs/producers.md): orchestrator stamps
assembled from their workflow's HASH_GENERATED / WORKFLOW_COMPLETED, and the stamping
service's re-stamps of content the sample already stamped, some older than the sample's stamp
(they take its row over), some newer. hypothesis chooses the permutation, the batch boundaries
and the duplicates. Each family's own property test (tests/integration/handlers/) covers its
edge cases; this one covers the families together, through the same batch driver and registry
the daemon uses.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.store import batch
from dev import sample
from handlers.base import Event
from handlers.envelope import decode
from handlers.registry import HANDLERS, resolve
from tests.integration.handlers import support
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


def _stamps_as_produced(sampled: list[Event]) -> list[Event]:
    """Producer-shaped stamps around the sample's own; ids derived from names, so the set is
    the same in every run."""

    def uid(name: str) -> uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"omnisink-convergence/{name}")

    stamps = [e for e in sampled if e.event_type == "STAMP_CREATED"]
    second = timedelta(seconds=1)
    out: list[Event] = []
    # The stamping service re-stamps the sample's content: odd ones before its stamp, even
    # ones after it.
    for n, original in enumerate(stamps[:4]):
        when = original.at - second if n % 2 else original.at + second
        file_hash = original.payload["file_hash"]
        out.append(support.service_stamp(f"restamp-{n}", file_hash, when, event_id=uid(f"r{n}")))
    # Orchestrator workflows: the stamp names no hash. The first re-stamps sample content
    # before the sample's stamp and has both workflow events; the next has only the hash, the
    # next only the legacy completion; the last neither, so its stamp waits.
    original = stamps[4]
    hashes = [original.payload["file_hash"], "c0" * 32, "c1" * 32, "c2" * 32]
    for n, file_hash in enumerate(hashes):
        workflow_id, stamp_id = str(uid(f"workflow-{n}")), f"assembled-{n}"
        when = original.at - 2 * second + n * second
        out.append(support.orchestrator_stamp(workflow_id, stamp_id, when, event_id=uid(f"s{n}")))
        if n in (0, 1):
            out.append(
                support.hash_generated(workflow_id, file_hash, when - second, event_id=uid(f"h{n}"))
            )
        if n in (0, 2):
            out.append(
                support.workflow_completed(
                    workflow_id,
                    stamp_id,
                    file_hash,
                    f"omninode.assembled-{n}",
                    when + second,
                    event_id=uid(f"c{n}"),
                )
            )
    return out


SAMPLED = _events()
# Read after the sample's records, each at an offset of its own.
EVENTS = SAMPLED + [
    Event(e.envelope, e.topic, 0, len(STREAM.records) + n)
    for n, e in enumerate(_stamps_as_produced(SAMPLED))
]


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


async def test_the_producers_stamps_are_assembled(db: asyncpg.Connection) -> None:
    await _reset(db)
    await _apply(db, [EVENTS])
    held = {
        r["stamp_id"]: r["namespace"]
        for r in await db.fetch("SELECT stamp_id, namespace FROM metadata_stamps")
    }
    # Assembled from the workflow's events (the last one still waits for its hash).
    assert held["assembled-0"] == "omninode.assembled-0"
    assert held["assembled-1"] == support.BRIDGE_NAMESPACE
    assert held["assembled-2"] == "omninode.assembled-2"
    assert "assembled-3" not in held
    # The older re-stamps hold their content's row, the newer ones do not.
    assert {"restamp-1", "restamp-3"} <= held.keys()
    assert not {"restamp-0", "restamp-2"} & held.keys()


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
