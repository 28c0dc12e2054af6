"""Where the sink's consumed offsets live: PostgreSQL, beside the rows they produced.

The next offset of each (consumer group, topic, partition) is written in the same transaction
as the batch's rows, so after a crash the sink resumes exactly after the last committed batch.
Kafka's own committed offset is written afterwards, for lag tooling only, and read only when
PostgreSQL holds nothing for a partition (a group moving onto this sink).

The write is fenced: a batch only moves a partition's offset from the value this consumer last
saw for it. Two consumers can briefly own the same partition during a rebalance (the old one
finishing its batch while the new one starts); the later of the two commits finds the offset
moved under it, its whole transaction rolls back, and it re-reads where to resume. Without the
fence the zombie could move an offset backwards (work redone) or forwards over a gap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import asyncpg
from aiokafka import TopicPartition

from handlers.sql import Sql

# The value that stands for "no row yet" in the fence: next_offset is CHECKed >= 0.
NO_OFFSET = -1

LOAD = Sql(
    """
SELECT topic, kafka_partition, next_offset
FROM omnisink.consumer_offsets
WHERE consumer_group = $1
  AND (topic, kafka_partition) IN (SELECT * FROM unnest($2::text[], $3::int[]))
""",
    name="offsets.load",
)

# One statement for every partition of the batch. A row is inserted when none exists and the
# caller expected none; updated only when it still holds what the caller expected. RETURNING
# names the partitions that moved: fewer than given means another consumer got there first.
STORE = Sql(
    """
WITH given AS (
    SELECT * FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[])
        AS g(topic, kafka_partition, next_offset, expected)
)
INSERT INTO omnisink.consumer_offsets AS o
    (consumer_group, topic, kafka_partition, next_offset, updated_at)
SELECT $1, topic, kafka_partition, next_offset, now()
FROM given
WHERE expected = -1
   OR EXISTS (SELECT 1 FROM omnisink.consumer_offsets c
              WHERE c.consumer_group = $1 AND c.topic = given.topic
                AND c.kafka_partition = given.kafka_partition)
ON CONFLICT (consumer_group, topic, kafka_partition) DO UPDATE
    SET next_offset = EXCLUDED.next_offset, updated_at = EXCLUDED.updated_at
    WHERE o.next_offset = (SELECT g.expected FROM given g
                           WHERE g.topic = o.topic AND g.kafka_partition = o.kafka_partition)
RETURNING topic, kafka_partition
""",
    name="offsets.store",
)


# ``omnisink offsets reset`` (consumer/replay/offsets.py): unconditional, with the group stopped.
RESET = Sql(
    """
INSERT INTO omnisink.consumer_offsets AS o
    (consumer_group, topic, kafka_partition, next_offset, updated_at)
SELECT $1, g.topic, g.kafka_partition, g.next_offset, now()
FROM unnest($2::text[], $3::int[], $4::bigint[]) AS g(topic, kafka_partition, next_offset)
ON CONFLICT (consumer_group, topic, kafka_partition) DO UPDATE
    SET next_offset = EXCLUDED.next_offset, updated_at = EXCLUDED.updated_at
""",
    name="offsets.reset",
)

GROUP_TOPICS = Sql(
    "SELECT DISTINCT topic FROM omnisink.consumer_offsets WHERE consumer_group = $1",
    name="offsets.group_topics",
)


class OffsetFenced(Exception):  # noqa: N818 - a normal outcome of a rebalance race
    """Another consumer moved these partitions' offsets; the batch must not commit."""

    def __init__(self, partitions: Iterable[TopicPartition]) -> None:
        self.partitions = sorted(partitions)
        names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in self.partitions)
        super().__init__(f"offsets moved by another consumer for {names}")


async def load(
    conn: asyncpg.Connection, group: str, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """The stored next offsets of these partitions (absent: PostgreSQL holds none)."""
    tps = list(partitions)
    if not tps:
        return {}
    rows = await conn.fetch(LOAD.sql, group, [tp.topic for tp in tps], [tp.partition for tp in tps])
    return {TopicPartition(r["topic"], r["kafka_partition"]): r["next_offset"] for r in rows}


async def store(
    conn: asyncpg.Connection,
    group: str,
    next_offsets: Mapping[TopicPartition, int],
    expected: Mapping[TopicPartition, int],
) -> None:
    """Move the partitions to ``next_offsets``, fenced on ``expected`` (NO_OFFSET: no row).

    Raises :class:`OffsetFenced` when any partition was moved by someone else; the caller's
    transaction must then roll back.
    """
    if not next_offsets:
        return
    tps = list(next_offsets)
    rows = await conn.fetch(
        STORE.sql,
        group,
        [tp.topic for tp in tps],
        [tp.partition for tp in tps],
        [next_offsets[tp] for tp in tps],
        [expected.get(tp, NO_OFFSET) for tp in tps],
    )
    moved = {TopicPartition(r["topic"], r["kafka_partition"]) for r in rows}
    if len(moved) != len(tps):
        raise OffsetFenced(set(tps) - moved)


async def reset(
    conn: asyncpg.Connection, group: str, next_offsets: Mapping[TopicPartition, int]
) -> None:
    """Set the group's next offsets, whatever they were (the group must be stopped)."""
    tps = list(next_offsets)
    await conn.execute(
        RESET.sql,
        group,
        [tp.topic for tp in tps],
        [tp.partition for tp in tps],
        [next_offsets[tp] for tp in tps],
    )
