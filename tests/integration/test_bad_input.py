"""Every kind of bad input a producer we don't control can send, through the worker: each
gets a decision and a dead-letter kind, and nothing else about it is written. What is odd but
valid (SQL-like text) is stored verbatim."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from consumer.worker import Worker
from dev.services import Service
from tests.conftest import TopicFactory
from tests.support import sink_settings

MAX_BYTES = 4096


def _envelope(event_type: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "event_timestamp": "2026-02-01T10:00:00Z",
        "payload": payload,
        **extra,
    }


STAMP = {"stamp_id": "st-a", "file_hash": "aa" * 32, "namespace": "ns", "stamp_data": {}}
SQLISH = "Robert'); DROP TABLE event_logs; -- \\x00 $1 %s"

# (label, record value, expected dead-letter kind or None when it must be written)
CASES: list[tuple[str, bytes | None, str | None]] = [
    ("not JSON", b"{not json", "decode"),
    ("JSON that is not an object", b"[1, 2, 3]", "schema"),
    ("missing event_id", orjson.dumps({"event_type": "X", "payload": {}}), "schema"),
    (
        "mistyped payload",
        orjson.dumps({**_envelope("X", {}), "payload": "not an object"}),
        "schema",
    ),
    ("non-UTF-8 bytes", b'{"event_id": "\xff\xfe"}', "decode"),
    ("tombstone", None, "schema"),
    ("oversized", orjson.dumps(_envelope("X", {"blob": "x" * MAX_BYTES})), "oversize"),
    ("NUL in a string", orjson.dumps(_envelope("X", {"name": "a\u0000b"})), "decode"),
    ("unknown type (dlq policy)", orjson.dumps(_envelope("BRAND_NEW_THING", {})), "unknown_type"),
    (
        "invalid FSM transition",
        orjson.dumps(
            _envelope(
                "FSM_STATE_TRANSITION",
                {
                    "fsm_type": "PATTERN_LEARNING",
                    "entity_id": "e",
                    "from_state": "FOUNDATION",
                    "to_state": "COMPLETED",
                    "action": "COMPLETE_LEARNING",
                },
            )
        ),
        "invalid_transition",
    ),
    ("a stamp", orjson.dumps(_envelope("STAMP_CREATED", STAMP)), None),
    (
        "the same stamp id with another hash",
        orjson.dumps(_envelope("STAMP_CREATED", {**STAMP, "file_hash": "bb" * 32})),
        "conflict",
    ),
    (
        "SQL-like text",
        orjson.dumps(
            _envelope("NODE_INTROSPECTION", {"node_id": SQLISH, "node_type": SQLISH[:50]})
        ),
        None,
    ),
]


async def test_every_bad_input_gets_a_dead_letter_kind(
    kafka_server: Service, db_url: str, db: asyncpg.Connection, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("bad-input", partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_server.url, max_request_size=1 << 20)
    await producer.start()
    try:
        for _, value, _ in CASES:
            await producer.send_and_wait(topic, value, key=b"k", partition=0)
    finally:
        await producer.stop()

    worker = Worker(
        sink_settings(
            db_url,
            kafka_server.url,
            f"bad-{uuid.uuid4().hex[:6]}",
            topics=[topic],
            unknown_events="dlq",
            max_message_bytes=MAX_BYTES,
        ),
        until_caught_up=True,
        install_signal_handlers=False,
    )
    await asyncio.wait_for(worker.run(), 90)

    dead = {
        r["kafka_offset"]: r
        for r in await db.fetch("SELECT * FROM omnisink.dead_letters ORDER BY kafka_offset")
    }
    logged = {
        int(r["o"]): r
        for r in await db.fetch("SELECT (metadata->>'kafka_offset') AS o, payload FROM event_logs")
    }
    for offset, (label, value, kind) in enumerate(CASES):
        if kind is None:
            assert offset not in dead, f"{label}: must be written"
            assert offset in logged, f"{label}: must be in event_logs"
            continue
        assert offset in dead, f"{label}: must be dead-lettered"
        assert dead[offset]["error_kind"] == kind, label
        assert dead[offset]["record_value"] == value, f"{label}: kept unchanged"
        assert dead[offset]["error_message"], label
        assert offset not in logged, f"{label}: nothing else about it is written"
    assert len(dead) == sum(1 for *_, kind in CASES if kind is not None)

    # Stored verbatim, in event_logs and in the node's row.
    sqlish = orjson.loads(logged[len(CASES) - 1]["payload"])
    assert sqlish["node_id"] == SQLISH
    stored = await db.fetchval("SELECT metadata->>'original_node_id' FROM node_registrations")
    assert stored == SQLISH
    assert await db.fetchval("SELECT count(*) FROM metadata_stamps") == 1
