"""One bad record never takes the rest of its batch with it (issue: failures).

A batch of 1,000 records with one poison record in the middle commits the 999 and
dead-letters the one, whatever the poison: undecodable, not an envelope, an invalid FSM
transition (decided by a handler), or rows PostgreSQL itself refuses without saying which
event they came from (found by bisection)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from consumer.store import offsets
from consumer.worker import Worker
from dev.services import Service
from handlers.base import Event, Item
from handlers.registry import HANDLERS
from tests.conftest import TopicFactory
from tests.support import sink_settings

BATCH = 1000
POISON_AT = 500


class RefusalProbe:
    """A handler whose table refuses negative values: one set-based statement per batch,
    so PostgreSQL's CHECK violation does not say which event caused it."""

    name = "refusal_probe"
    event_types = frozenset({"REFUSAL_PROBE"})

    def parse(self, event: Event) -> int:
        return int(event.payload["value"])

    async def apply(self, conn: asyncpg.Connection, items: Sequence[Item[int]]) -> None:
        await conn.execute(
            "INSERT INTO refusals SELECT * FROM unnest($1::uuid[], $2::int[])",
            [i.event.event_id for i in items],
            [i.payload for i in items],
        )


def _probe(value: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "REFUSAL_PROBE",
            "event_timestamp": "2026-01-01T00:00:00Z",
            "payload": {"value": value},
        }
    )


POISONS: dict[str, bytes] = {
    "decode": b"{not json",
    "schema": b'{"event_type": "REFUSAL_PROBE", "payload": {}}',
    "invalid_transition": orjson.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "FSM_STATE_TRANSITION",
            "event_timestamp": "2026-01-01T00:00:00Z",
            "payload": {
                "fsm_type": "INGESTION",
                "entity_id": "doc-1",
                "from_state": "RECEIVED",
                "to_state": "INDEXED",
                "action": "COMPLETE_INDEXING",
            },
        }
    ),
    "constraint": _probe(-1),
}


@pytest.mark.parametrize("kind", sorted(POISONS))
async def test_a_poison_record_in_a_batch_of_1000(
    kafka_server: Service,
    db_url: str,
    db: asyncpg.Connection,
    topic_factory: TopicFactory,
    kind: str,
) -> None:
    await db.execute(
        "CREATE TABLE refusals (event_id uuid PRIMARY KEY, value int "
        "CONSTRAINT refusals_value_not_negative CHECK (value >= 0))"
    )
    topic = await topic_factory("isolation", partitions=1)
    values = [_probe(i) for i in range(BATCH)]
    values[POISON_AT] = POISONS[kind]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_server.url, linger_ms=20)
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, value, partition=0)
        await producer.flush()
    finally:
        await producer.stop()

    group = f"iso-{uuid.uuid4().hex[:6]}"
    worker = Worker(
        sink_settings(
            db_url,
            kafka_server.url,
            group,
            topics=[topic],
            batch_max_records=BATCH,
            batch_max_wait_ms=3000,
        ),
        handlers=(*HANDLERS, RefusalProbe()),
        until_caught_up=True,
        install_signal_handlers=False,
    )
    await asyncio.wait_for(worker.run(), 90)

    assert worker.stats.batches == 1, "the 1,000 records must be one batch"
    assert await db.fetchval("SELECT count(*) FROM event_logs") == BATCH - 1
    # Every probe but the poison's place wrote its row, in the one transaction.
    assert await db.fetchval("SELECT count(*) FROM refusals") == BATCH - 1
    dead: list[Any] = await db.fetch("SELECT * FROM omnisink.dead_letters")
    assert [(d["kafka_offset"], d["error_kind"]) for d in dead] == [(POISON_AT, kind)]
    if kind == "constraint":
        assert "refusals_value_not_negative" in dead[0]["error_message"]
    stored = await offsets.load(db, group, [TopicPartition(topic, 0)])
    assert stored == {TopicPartition(topic, 0): BATCH}
