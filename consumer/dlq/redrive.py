"""The redrive protocol: publish pending dead letters to their original topics with acks=all,
in id order, under row locks, and mark exactly the acknowledged ones redriven (the decisions
are in the package docstring, consumer/dlq/__init__.py)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

from consumer.dlq import queries
from consumer.dlq.model import DlqError, Filters
from consumer.settings import Settings
from handlers.contract import REDRIVE_HEADER

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

REDRIVE_CHUNK = 500


def redrive_headers(
    keys: Sequence[str], values: Sequence[bytes | None], dead_letter_id: int
) -> list[tuple[str, bytes | None]]:
    """The record's original headers (a null value stays null) plus ``omnisink.redrive.of``
    (replacing an earlier one, when a redriven record is redriven again)."""
    kept = [(k, v) for k, v in zip(keys, values, strict=True) if k != REDRIVE_HEADER]
    return [*kept, (REDRIVE_HEADER, str(dead_letter_id).encode())]


@dataclass
class RedriveResult:
    """What a redrive did: the dead letters published and marked, per topic; why it stopped."""

    redriven: list[int] = field(default_factory=list)
    topics: Counter[str] = field(default_factory=Counter)
    # The first record that could not be published, and why; the redrive stopped there.
    failed_id: int | None = None
    failed_topic: str | None = None
    error: BaseException | None = None
    # Published (acknowledged) but no longer pending when marked. The rows are locked while
    # published, so only a change that bypassed the lock could do this; reported if it happens.
    not_marked: list[int] = field(default_factory=list)


async def open_producer(settings: Settings) -> AIOKafkaProducer:
    """A started producer with acks=all; an unreachable broker is a :class:`DlqError` (exit 2)."""
    from aiokafka import AIOKafkaProducer

    from consumer.kafka import kafka_options

    producer = AIOKafkaProducer(
        **kafka_options(settings),
        acks="all",
        # The same cap as the dead-letter producer: what could be dead-lettered (an oversize
        # record included) can be sent back.
        max_request_size=settings.dlq_max_request_bytes,
    )
    try:
        await producer.start()
    except Exception as exc:
        with contextlib.suppress(Exception):
            await producer.stop()
        raise DlqError(
            f"cannot reach the Kafka brokers at {settings.kafka.bootstrap_servers}: {exc}. "
            "Check OMNISINK_KAFKA_BOOTSTRAP_SERVERS.",
            exit_code=2,
        ) from exc
    return producer


async def redrive(
    conn: asyncpg.Connection,
    producer: AIOKafkaProducer,
    filters: Filters,
    *,
    chunk: int = REDRIVE_CHUNK,
) -> RedriveResult:
    """Publish the pending dead letters matching ``filters`` to their original topics, in id
    order, and mark the acknowledged ones redriven (the package docstring)."""
    result = RedriveResult()
    last = await queries.last_id(conn)
    if last is None:
        return result
    after = 0
    while result.error is None:
        acked: list[asyncpg.Record] = []
        try:
            async with conn.transaction():
                rows = await queries.lock_chunk(conn, filters, after, last, chunk)
                if not rows:
                    break
                after = rows[-1]["id"]
                acked = await _publish(producer, rows, result)
                marked = await queries.mark_redriven(conn, [row["id"] for row in acked])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if not acked:
                raise
            ids = ", ".join(str(row["id"]) for row in acked)
            raise DlqError(
                f"{len(result.redriven)} redriven, then PostgreSQL failed ({exc}) after "
                f"{len(acked)} more were published (dead letters {ids}): those are still "
                "pending, so the next redrive publishes them again"
            ) from exc
        marked_set = set(marked)
        for row in acked:
            if row["id"] in marked_set:
                result.redriven.append(row["id"])
                result.topics[row["topic"]] += 1
            else:
                result.not_marked.append(row["id"])
    return result


async def _publish(
    producer: AIOKafkaProducer, rows: Sequence[asyncpg.Record], result: RedriveResult
) -> list[asyncpg.Record]:
    """Send ``rows`` in order and wait for the acknowledgements; stop sending at the first
    failure (recorded in ``result``). Returns the rows the broker acknowledged."""
    sent: list[tuple[asyncpg.Record, Any]] = []
    for row in rows:
        try:
            future = await producer.send(
                row["topic"],
                value=row["record_value"],
                key=row["record_key"],
                headers=redrive_headers(row["header_keys"], row["header_values"], row["id"]),
            )
        except Exception as exc:  # noqa: BLE001 - what was sent is still marked, then reported
            _failed(result, row, exc)
            break
        sent.append((row, future))
    acked: list[asyncpg.Record] = []
    for row, future in sent:
        try:
            await future
        except Exception as exc:  # noqa: BLE001 - the others may be acknowledged: mark them
            if result.failed_id is None or row["id"] < result.failed_id:
                _failed(result, row, exc)
            continue
        acked.append(row)
    return acked


def _failed(result: RedriveResult, row: asyncpg.Record, exc: BaseException) -> None:
    result.failed_id, result.failed_topic, result.error = row["id"], row["topic"], exc
