"""Which offsets a replay reads: the topics and partitions asked for, each from its start
(the log's beginning, an offset, or the first record at or after a time) to its end (an
offset, the first record at or after a time, or the end of the log as the replay starts).

The end of the log is the brokers' high watermark, taken as the daemon's drain takes it
(consumer/drain.py): ListOffsets alone can answer short of it on some brokers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from consumer import drain
from consumer.kafka import without_dlq
from consumer.replay.store import Range
from consumer.settings import Settings
from handlers.contract import DLQ_SUFFIX

log = structlog.get_logger("omnisink.replay")


class PlanError(Exception):
    """The arguments name nothing that can be read (exit 2)."""


@dataclass(frozen=True)
class Bounds:
    """Where each partition's range starts and ends, as the operator gave it."""

    from_beginning: bool = False
    from_offset: int | None = None
    from_time: datetime | None = None
    to_offset: int | None = None
    to_time: datetime | None = None

    def __post_init__(self) -> None:
        starts = sum(
            (self.from_beginning, self.from_offset is not None, self.from_time is not None)
        )
        if starts != 1:
            raise PlanError("give exactly one of --from-beginning, --from-offset, --from-time")
        if self.to_offset is not None and self.to_time is not None:
            raise PlanError("give at most one of --to-offset, --to-time")
        if self.from_offset is not None and self.from_offset < 0:
            raise PlanError("--from-offset must be 0 or more")
        if self.to_offset is not None and self.to_offset < 0:
            raise PlanError("--to-offset must be 0 or more")
        if self.from_time and self.to_time and self.to_time < self.from_time:
            raise PlanError("--to-time is before --from-time")


def parse_time(value: str) -> datetime:
    """An ISO 8601 timestamp; UTC when it names no offset."""
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise PlanError(f"{value!r} is not an ISO 8601 timestamp") from exc
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


async def topics(
    consumer: AIOKafkaConsumer, settings: Settings, named: Sequence[str], *, all_topics: bool
) -> list[str]:
    """The topics to read: those named (each must exist), or with ``all_topics`` what the
    daemon's subscription matches (never a dead-letter topic)."""
    existing = await consumer.topics()
    if not all_topics:
        missing = sorted(set(named) - existing)
        if missing:
            raise PlanError(f"no such topic: {', '.join(missing)}")
        return sorted(set(named))
    if settings.topics:
        return sorted(t for t in settings.topics if t in existing)
    pattern = re.compile(without_dlq(settings.topic_pattern))
    return sorted(t for t in existing if pattern.fullmatch(t) and not t.endswith(DLQ_SUFFIX))


async def ranges(
    consumer: AIOKafkaConsumer,
    settings: Settings,
    names: Sequence[str],
    partitions: Sequence[int],
    bounds: Bounds,
) -> list[Range]:
    """Each partition's ``[from, to)``, clamped to what the log holds now."""
    tps: list[TopicPartition] = []
    for topic in names:
        known = consumer.partitions_for_topic(topic) or set()
        wanted = sorted(known) if not partitions else sorted(set(partitions))
        unknown = [p for p in wanted if p not in known]
        if unknown:
            raise PlanError(f"{topic} has no partition {', '.join(map(str, unknown))}")
        tps.extend(TopicPartition(topic, p) for p in wanted)
    if not tps:
        raise PlanError("no partitions to read")
    starts, ends = await log_bounds(settings, tps)
    first = (
        await first_at(consumer, tps, bounds.from_time, starts, ends) if bounds.from_time else {}
    )
    last = await first_at(consumer, tps, bounds.to_time, starts, ends) if bounds.to_time else {}
    out = []
    for tp in tps:
        begin, end = starts.get(tp, 0), ends[tp]
        if bounds.from_offset is not None:
            lo = bounds.from_offset
        elif bounds.from_time is not None:
            lo = first[tp]
        else:
            lo = begin
        if bounds.to_offset is not None:
            hi = bounds.to_offset
        elif bounds.to_time is not None:
            hi = last[tp]
        else:
            hi = end
        lo = min(max(lo, begin), end)
        hi = min(max(hi, lo), end)
        out.append(Range(tp.topic, tp.partition, lo, hi))
    return out


async def log_bounds(
    settings: Settings, tps: list[TopicPartition]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(log start, log end) of every partition, the end as the daemon's drain takes it;
    :class:`PlanError` when the brokers did not report the end of some."""
    starts, ends = await drain.end_offsets(settings, tps)
    unseen = [tp for tp in tps if tp not in ends]
    if unseen:
        raise PlanError(
            "the brokers did not report the end of "
            + ", ".join(f"{tp.topic}[{tp.partition}]" for tp in unseen)
        )
    return starts, ends


async def first_at(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    at: datetime,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """The first offset whose record timestamp is at or after ``at``; the end of the log when
    no record is that late.

    ListOffsets by time answers it, where the broker implements it; its answer is checked
    against the records around it (the one it names is that late, the one before it is not),
    because a broker can answer wrongly (one Kafka-compatible broker answers the log start
    for any time). A wrong answer is logged, and the partition read from its start instead.
    """
    ms = int(at.timestamp() * 1000)
    found = await consumer.offsets_for_times(dict.fromkeys(tps, ms))
    consumer.assign(tps)
    out = {}
    for tp in tps:
        hit = found.get(tp)
        hint = hit.offset if hit is not None else ends[tp]
        if await _agrees(consumer, tp, hint, ms, start=starts.get(tp, 0), end=ends[tp]):
            out[tp] = hint
            continue
        log.warning(
            "replay.offsets_for_times_wrong", partition=f"{tp.topic}[{tp.partition}]", answer=hint
        )
        out[tp] = await _scan(consumer, tp, ms, starts.get(tp, 0), ends[tp])
    return out


async def _record_at(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int
) -> ConsumerRecord[bytes, bytes] | None:
    """The first record at or after ``offset`` (None if the fetch returns none)."""
    consumer.seek(tp, offset)
    for _ in range(10):
        got = await consumer.getmany(tp, timeout_ms=500, max_records=1)
        if got.get(tp):
            return got[tp][0]
    return None


async def _agrees(
    consumer: AIOKafkaConsumer, tp: TopicPartition, hint: int, ms: int, *, start: int, end: int
) -> bool:
    if hint < end:
        record = await _record_at(consumer, tp, hint)
        if record is None or record.timestamp < ms:
            return False
    if hint > start:
        before = await _record_at(consumer, tp, hint - 1)
        if before is not None and before.offset < hint and before.timestamp >= ms:
            return False
    return True


async def _scan(
    consumer: AIOKafkaConsumer, tp: TopicPartition, ms: int, start: int, end: int
) -> int:
    consumer.seek(tp, start)
    while await consumer.position(tp) < end:
        got = await consumer.getmany(tp, timeout_ms=500)
        for record in got.get(tp, []):
            if record.timestamp >= ms:
                return min(int(record.offset), end)
    return end
