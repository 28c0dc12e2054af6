"""A replay's record in PostgreSQL (migration 025): its ranges, what it re-applies, whether
it is done. Its position per partition is ``omnisink.consumer_offsets`` under
:func:`owner` (consumer/store/offsets.py), written in each batch's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from aiokafka import TopicPartition

from handlers.sql import Sql

# The owner of a replay's offsets and dead letters; group ids starting with it are reserved.
OWNER_PREFIX = "omnisink-replay:"


def owner(name: str) -> str:
    return f"{OWNER_PREFIX}{name}"


@dataclass(frozen=True)
class Range:
    """The offsets a replay reads from one partition: ``[from_offset, to_offset)``."""

    topic: str
    partition: int
    from_offset: int
    to_offset: int

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    @property
    def records(self) -> int:
        return max(0, self.to_offset - self.from_offset)


@dataclass(frozen=True)
class Replay:
    name: str
    ranges: tuple[Range, ...]
    reapply: tuple[str, ...] = ()
    status: str = "running"
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ReplayExists(Exception):  # noqa: N818 - a refusal, not a fault
    pass


CREATE = Sql(
    """
INSERT INTO omnisink.replays (name, reapply) VALUES ($1, $2::text[])
ON CONFLICT (name) DO NOTHING
RETURNING name
""",
    name="replay.create",
)

CREATE_RANGES = Sql(
    """
INSERT INTO omnisink.replay_ranges (name, topic, kafka_partition, from_offset, to_offset)
SELECT $1, v.topic, v.kafka_partition, v.from_offset, v.to_offset
FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[])
    AS v(topic, kafka_partition, from_offset, to_offset)
""",
    name="replay.create_ranges",
)

LOAD = Sql(
    """
SELECT r.name, r.reapply, r.status, r.started_at, r.finished_at,
       g.topic, g.kafka_partition, g.from_offset, g.to_offset
FROM omnisink.replays AS r
LEFT JOIN omnisink.replay_ranges AS g ON g.name = r.name
WHERE ($1::text IS NULL OR r.name = $1)
ORDER BY r.started_at, r.name, g.topic, g.kafka_partition
""",
    name="replay.load",
)

FINISH = Sql(
    """
UPDATE omnisink.replays SET status = 'done', finished_at = now()
WHERE name = $1 AND status = 'running'
""",
    name="replay.finish",
)

POSITIONS = Sql(
    """
SELECT consumer_group, topic, kafka_partition, next_offset
FROM omnisink.consumer_offsets
WHERE consumer_group LIKE 'omnisink-replay:%'
""",
    name="replay.positions",
)


async def create(conn: asyncpg.Connection, replay: Replay) -> None:
    """Record a new replay; :class:`ReplayExists` when the name is taken."""
    async with conn.transaction():
        if await conn.fetchval(CREATE.sql, replay.name, list(replay.reapply)) is None:
            raise ReplayExists(replay.name)
        rs = replay.ranges
        await conn.execute(
            CREATE_RANGES.sql,
            replay.name,
            [r.topic for r in rs],
            [r.partition for r in rs],
            [r.from_offset for r in rs],
            [r.to_offset for r in rs],
        )


async def load(conn: asyncpg.Connection, name: str | None = None) -> list[Replay]:
    """The replay named ``name``, or every replay, oldest first."""
    found: dict[str, tuple[asyncpg.Record, list[Range]]] = {}
    for row in await conn.fetch(LOAD.sql, name):
        _, ranges = found.setdefault(row["name"], (row, []))
        if row["topic"] is not None:
            ranges.append(
                Range(row["topic"], row["kafka_partition"], row["from_offset"], row["to_offset"])
            )
    return [
        Replay(
            name=row["name"],
            ranges=tuple(ranges),
            reapply=tuple(row["reapply"]),
            status=row["status"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )
        for row, ranges in found.values()
    ]


async def finish(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(FINISH.sql, name)


async def positions(conn: asyncpg.Connection) -> dict[str, dict[TopicPartition, int]]:
    """Every replay's stored next offset per partition, by replay name."""
    out: dict[str, dict[TopicPartition, int]] = {}
    for row in await conn.fetch(POSITIONS.sql):
        name = row["consumer_group"].removeprefix(OWNER_PREFIX)
        out.setdefault(name, {})[TopicPartition(row["topic"], row["kafka_partition"])] = row[
            "next_offset"
        ]
    return out


def progress(replay: Replay, at: dict[TopicPartition, int]) -> Sequence[tuple[Range, int]]:
    """(range, next offset to read) per range: the stored position, else its start."""
    return [
        (r, min(r.to_offset, max(r.from_offset, at.get(r.tp, r.from_offset))))
        for r in replay.ranges
    ]
