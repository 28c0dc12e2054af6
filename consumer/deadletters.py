"""Dead letters: a record the sink can never write, kept on ``<topic>.dlq`` and in PostgreSQL.

Contract section 5. The record's key, value and headers go to the dead-letter topic
unchanged, plus the headers Kafka Connect sinks write (so existing tools show them) and the
sink's own. The same facts go to ``omnisink.dead_letters``, in the transaction that moves the
offset past the record, and only after the broker acknowledged the dead-letter record: the
offset never moves past a record whose dead letter is not durable in both places.

A crash between the broker's acknowledgement and the database commit re-publishes the record
when the batch is consumed again, so the topic is at-least-once; the table is exactly-once
(unique on the source position), and it records where the published copy landed.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError

DLQ_SUFFIX = ".dlq"

_INSERT = """
INSERT INTO omnisink.dead_letters (
    consumer_group, topic, kafka_partition, kafka_offset, record_timestamp, record_key,
    record_value, header_keys, header_values, event_id, event_type, error_kind, error_class,
    error_message, error_stacktrace, attempts, dlq_topic, dlq_partition, dlq_offset, failed_at)
SELECT $1, topic, kafka_partition, kafka_offset, record_timestamp, record_key, record_value,
    header_keys::text[], header_values::bytea[], event_id, event_type, error_kind, error_class,
    error_message, error_stacktrace, attempts, dlq_topic, dlq_partition, dlq_offset, failed_at
FROM unnest(
    $2::text[], $3::int[], $4::bigint[], $5::timestamptz[], $6::bytea[], $7::bytea[],
    $8::text[], $9::text[], $10::uuid[], $11::text[], $12::text[], $13::text[], $14::text[],
    $15::text[], $16::int[], $17::text[], $18::int[], $19::bigint[], $20::timestamptz[])
    AS d(topic, kafka_partition, kafka_offset, record_timestamp, record_key, record_value,
         header_keys, header_values, event_id, event_type, error_kind, error_class,
         error_message, error_stacktrace, attempts, dlq_topic, dlq_partition, dlq_offset,
         failed_at)
ON CONFLICT ON CONSTRAINT uq_dead_letters_source DO NOTHING
"""
# Header arrays travel as text (a PostgreSQL array literal per row) because a parameter cannot
# be an array of arrays of differing lengths; see _array_literal.


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record that can never be written, and why."""

    record: ConsumerRecord[bytes, bytes]
    kind: str
    error_class: str
    message: str
    stacktrace: str | None = None
    event_id: UUID | None = None
    event_type: str | None = None
    attempts: int = 1
    failed_at: datetime | None = None

    @property
    def source(self) -> tuple[str, int, int]:
        return (self.record.topic, self.record.partition, self.record.offset)

    @property
    def dlq_topic(self) -> str:
        return f"{self.record.topic}{DLQ_SUFFIX}"

    def headers(self, group: str) -> list[tuple[str, bytes]]:
        """The original headers, then Kafka Connect's error headers and the sink's own."""
        failed_at = (self.failed_at or datetime.now(UTC)).isoformat()
        added = {
            "__connect.errors.topic": self.record.topic,
            "__connect.errors.partition": str(self.record.partition),
            "__connect.errors.offset": str(self.record.offset),
            "__connect.errors.exception.class.name": self.error_class,
            "__connect.errors.exception.message": self.message,
            "__connect.errors.exception.stacktrace": self.stacktrace or "",
            "omnisink.error.kind": self.kind,
            "omnisink.error.attempts": str(self.attempts),
            "omnisink.consumer.group": group,
            "omnisink.failed_at": failed_at,
        }
        original = [(k, v) for k, v in (self.record.headers or ()) if k not in added]
        return original + [(k, v.encode()) for k, v in added.items()]


def from_exception(
    record: ConsumerRecord[bytes, bytes],
    kind: str,
    exc: BaseException,
    *,
    event_id: UUID | None = None,
    event_type: str | None = None,
) -> DeadLetter:
    """A dead letter whose reason is ``exc`` (its class, message and stack)."""
    cls = type(exc)
    return DeadLetter(
        record=record,
        kind=kind,
        error_class=f"{cls.__module__}.{cls.__qualname__}",
        message=str(exc),
        stacktrace="".join(traceback.format_exception(exc)) if exc.__traceback__ else None,
        event_id=event_id,
        event_type=event_type,
        failed_at=datetime.now(UTC),
    )


class DeadLetterUnavailable(Exception):  # noqa: N818 - names the condition, like aiokafka's
    """The dead-letter topic did not take a record. The batch must not commit (its offsets
    would move past a record whose dead letter is not durable); the worker retries it like any
    transient fault, for as long as it lasts, and says so loudly."""


class Publisher:
    """Publishes dead letters and remembers where each landed, so a retried batch (same
    process) reuses the published copy instead of publishing it again."""

    def __init__(self, producer: AIOKafkaProducer, group: str) -> None:
        self._producer = producer
        self._group = group
        self.landed: dict[tuple[str, int, int], tuple[str, int, int]] = {}

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Send every letter not yet sent and wait for the broker's acknowledgements."""
        pending = [d for d in letters if d.source not in self.landed]
        for letter in pending:
            try:
                future = await self._producer.send(
                    letter.dlq_topic,
                    value=letter.record.value,
                    key=letter.record.key,
                    headers=letter.headers(self._group),
                )
                meta = await future
            except KafkaError as exc:
                raise DeadLetterUnavailable(
                    f"cannot write the dead letter of {letter.record.topic}"
                    f"[{letter.record.partition}]@{letter.record.offset} to "
                    f"{letter.dlq_topic}: {type(exc).__name__}: {exc}"
                ) from exc
            self.landed[letter.source] = (meta.topic, meta.partition, meta.offset)

    def forget(self, sources: Sequence[tuple[str, int, int]]) -> None:
        """Drop what was remembered for committed dead letters."""
        for source in sources:
            self.landed.pop(source, None)


async def record(
    conn: asyncpg.Connection,
    group: str,
    letters: Sequence[DeadLetter],
    landed: dict[tuple[str, int, int], tuple[str, int, int]],
) -> None:
    """Insert the dead letters (one statement), with where their published copies landed."""
    if not letters:
        return
    where = [landed.get(d.source) for d in letters]
    await conn.execute(
        _INSERT,
        group,
        [d.record.topic for d in letters],
        [d.record.partition for d in letters],
        [d.record.offset for d in letters],
        [_record_time(d.record) for d in letters],
        [d.record.key for d in letters],
        [d.record.value for d in letters],
        [_array_literal([k for k, _ in d.record.headers or ()]) for d in letters],
        [_array_literal(["\\x" + v.hex() for _, v in d.record.headers or ()]) for d in letters],
        [d.event_id for d in letters],
        [d.event_type[:100] if d.event_type else None for d in letters],
        [d.kind for d in letters],
        [d.error_class for d in letters],
        [d.message for d in letters],
        [d.stacktrace for d in letters],
        [d.attempts for d in letters],
        [d.dlq_topic for d in letters],
        [w[1] if w else None for w in where],
        [w[2] if w else None for w in where],
        [d.failed_at or datetime.now(UTC) for d in letters],
    )


def _record_time(record: ConsumerRecord[bytes, bytes]) -> datetime | None:
    if record.timestamp is None or record.timestamp < 0:
        return None
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


def _array_literal(values: Sequence[str]) -> str:
    """A PostgreSQL array literal of text (double-quoted, backslash-escaped)."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"
