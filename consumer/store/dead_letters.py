"""``omnisink.dead_letters``: one row per record the sink can never write (contract section 5).

Written in the batch's transaction, after the broker acknowledged the record's copy on
``<topic>.dlq`` (consumer/deadletters.py), and unique on the source position, so a batch
retried or consumed again after a crash never doubles a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord

from consumer.deadletters import DeadLetter
from handlers.sql import Unnest

# Header arrays travel as text (a PostgreSQL array literal per row) because a parameter cannot
# be an array of arrays of differing lengths; see _array_literal.
INSERT = Unnest(
    """
INSERT INTO omnisink.dead_letters (
    consumer_group, topic, kafka_partition, kafka_offset, record_timestamp, record_key,
    record_value, header_keys, header_values, event_id, event_type, error_kind, error_class,
    error_message, error_stacktrace, attempts, dlq_topic, dlq_partition, dlq_offset, failed_at)
SELECT $20, topic, kafka_partition, kafka_offset, record_timestamp, record_key, record_value,
    header_keys::text[], header_values::bytea[], event_id, event_type, error_kind, error_class,
    error_message, error_stacktrace, attempts, dlq_topic, dlq_partition, dlq_offset, failed_at
FROM unnest($1::text[], $2::int[], $3::bigint[], $4::timestamptz[], $5::bytea[], $6::bytea[], $7::text[], $8::text[], $9::uuid[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::int[], $16::text[], $17::int[], $18::bigint[], $19::timestamptz[])
    AS d(topic, kafka_partition, kafka_offset, record_timestamp, record_key, record_value, header_keys, header_values, event_id, event_type, error_kind, error_class, error_message, error_stacktrace, attempts, dlq_topic, dlq_partition, dlq_offset, failed_at)
ON CONFLICT ON CONSTRAINT uq_dead_letters_source DO NOTHING
""",  # noqa: E501 - one column list per line, so the spec reads straight
    name="dead_letters.insert",
    extra=("consumer_group",),
)
# event_type VARCHAR(100) (migration 013); the full text stays in the record's value.
_EVENT_TYPE_MAX_CHARS = 100


async def insert(
    conn: asyncpg.Connection,
    group: str,
    letters: Sequence[DeadLetter],
    landed: dict[tuple[str, int, int], tuple[str, int, int]],
) -> None:
    """Insert the dead letters (one statement), with where their published copies landed."""
    if letters:
        rows = [_row(d, landed.get(d.source)) for d in letters]
        await conn.execute(INSERT.sql, *INSERT.args(rows, consumer_group=group))


def _text(value: str) -> str:
    """PostgreSQL text cannot hold NUL: it is stored as the six characters ``\\u0000`` (the
    copy on ``<topic>.dlq`` keeps the original)."""
    return value.replace("\x00", "\\u0000")


def _row(d: DeadLetter, where: tuple[str, int, int] | None) -> dict[str, Any]:
    headers = d.record.headers or ()
    return {
        "topic": _text(d.record.topic),
        "kafka_partition": d.record.partition,
        "kafka_offset": d.record.offset,
        "record_timestamp": _record_time(d.record),
        "record_key": d.record.key,
        "record_value": d.record.value,
        "header_keys": _array_literal([_text(k) for k, _ in headers]),
        # A null header value (legal in Kafka) stays NULL.
        "header_values": _array_literal(
            [None if v is None else "\\x" + v.hex() for _, v in headers]
        ),
        "event_id": d.event_id,
        "event_type": _text(d.event_type)[:_EVENT_TYPE_MAX_CHARS] if d.event_type else None,
        "error_kind": d.kind,
        "error_class": d.error_class,
        "error_message": _text(d.message),
        "error_stacktrace": _text(d.stacktrace) if d.stacktrace else None,
        "attempts": d.attempts,
        "dlq_topic": _text(d.dlq_topic),
        "dlq_partition": where[1] if where else None,
        "dlq_offset": where[2] if where else None,
        "failed_at": d.failed_at or datetime.now(UTC),
    }


def _record_time(record: ConsumerRecord[bytes, bytes]) -> datetime | None:
    if record.timestamp is None or record.timestamp < 0:
        return None
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


def _array_literal(values: Sequence[str | None]) -> str:
    """A PostgreSQL array literal of text (double-quoted, backslash-escaped; None is NULL)."""
    quoted = (
        "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for v in values
    )
    return "{" + ",".join(quoted) + "}"
