"""The harness works end to end: produce, consume in a group, write rows and offsets in one
transaction, commit to Kafka afterwards, and resume from what PostgreSQL holds."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from dev.services import Service

RECORDS = 300
GROUP = "omnisink-smoke"


async def _produce(servers: str, topic: str, count: int, start: int = 0) -> list[uuid.UUID]:
    ids = []
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await producer.start()
    try:
        for i in range(start, start + count):
            event_id = uuid.uuid4()
            ids.append(event_id)
            value = {"event_id": str(event_id), "event_type": "SMOKE", "payload": {"n": i}}
            await producer.send(topic, orjson.dumps(value), key=f"entity-{i % 11}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    return ids


async def _stored_offsets(conn: asyncpg.Connection, topic: str) -> dict[int, int]:
    rows = await conn.fetch(
        "SELECT kafka_partition, next_offset FROM omnisink.consumer_offsets "
        "WHERE consumer_group = $1 AND topic = $2",
        GROUP,
        topic,
    )
    return {row["kafka_partition"]: row["next_offset"] for row in rows}


async def _consume_into_db(
    servers: str, topic: str, db_url: str, expected: int, timeout_s: float = 60
) -> dict[int, int]:
    """Consume until `expected` records were written; return Kafka's committed offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    conn = await asyncpg.connect(db_url)
    consumer.subscribe([topic])
    await consumer.start()
    written = 0
    try:
        # Resume from PostgreSQL's offsets, as the sink does after any restart.
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        stored = await _stored_offsets(conn, topic)
        for tp in consumer.assignment():
            if tp.partition in stored:
                consumer.seek(tp, stored[tp.partition])

        async with asyncio.timeout(timeout_s):
            while written < expected:
                batches = await consumer.getmany(timeout_ms=500, max_records=100)
                if not batches:
                    continue
                async with conn.transaction():
                    for tp, records in batches.items():
                        rows = [
                            (
                                uuid.UUID(v["event_id"]),
                                v["event_type"],
                                orjson.dumps(v["payload"]).decode(),
                            )
                            for v in (orjson.loads(r.value) for r in records)
                        ]
                        await conn.executemany(
                            "INSERT INTO event_logs (id, event_type, payload) "
                            "VALUES ($1, $2, $3::jsonb) ON CONFLICT (id) DO NOTHING",
                            rows,
                        )
                        await conn.execute(
                            """
                            INSERT INTO omnisink.consumer_offsets
                                (consumer_group, topic, kafka_partition, next_offset)
                            VALUES ($1, $2, $3, $4)
                            ON CONFLICT (consumer_group, topic, kafka_partition)
                            DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = NOW()
                            """,
                            GROUP,
                            tp.topic,
                            tp.partition,
                            records[-1].offset + 1,
                        )
                        written += len(records)
                # Kafka hears about it only after PostgreSQL has it (for lag tooling).
                await consumer.commit(
                    {tp: records[-1].offset + 1 for tp, records in batches.items()}
                )
        return {tp.partition: await consumer.committed(tp) or 0 for tp in consumer.assignment()}
    finally:
        await consumer.stop()
        await conn.close()


async def test_produce_consume_commit_roundtrip(
    kafka_server: Service,
    topic_factory: Callable[..., Awaitable[str]],
    db_url: str,
    db: asyncpg.Connection,
) -> None:
    topic = await topic_factory("smoke", partitions=3)
    ids = await _produce(kafka_server.url, topic, RECORDS)

    committed = await _consume_into_db(kafka_server.url, topic, db_url, RECORDS)

    assert await db.fetchval("SELECT count(*) FROM event_logs") == RECORDS
    stored = set(await db.fetch("SELECT id FROM event_logs"))
    assert {row["id"] for row in stored} == set(ids)
    offsets = await _stored_offsets(db, topic)
    assert sum(offsets.values()) == RECORDS, "next offsets add up to every record consumed"
    assert committed == offsets, "Kafka's committed offsets follow PostgreSQL's"
    assert len(offsets) == 3, "records were spread over every partition"

    # A restart resumes from PostgreSQL's offsets: only the new records are read.
    more = await _produce(kafka_server.url, topic, 30, start=RECORDS)
    await _consume_into_db(kafka_server.url, topic, db_url, 30)
    assert await db.fetchval("SELECT count(*) FROM event_logs") == RECORDS + 30
    assert await db.fetchval("SELECT count(*) FROM event_logs WHERE id = ANY($1)", more) == 30

    # The high watermark of fetch responses agrees with what we stored.
    probe = AIOKafkaConsumer(bootstrap_servers=kafka_server.url, enable_auto_commit=False)
    await probe.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(3)]
        probe.assign(partitions)
        for tp in partitions:
            probe.seek(tp, 0)
        await probe.getmany(timeout_ms=2000)
        final = await _stored_offsets(db, topic)
        for tp in partitions:
            assert probe.highwater(tp) == final[tp.partition]
    finally:
        await probe.stop()


async def test_database_per_test_is_fresh(db: asyncpg.Connection) -> None:
    # Nothing leaks between tests: the round trip above wrote rows in its own database.
    assert await db.fetchval("SELECT count(*) FROM event_logs") == 0
    assert await db.fetchval("SELECT count(*) FROM omnisink.consumer_offsets") == 0
