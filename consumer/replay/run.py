"""Run a replay: read its ranges with manually assigned partitions (it never joins or moves
the consumer group) and write them through the daemon's own commit (consumer/committer.py).

Its position per partition is stored under its own owner (consumer/replay/store.py), in each
batch's transaction, so a replay stopped (Ctrl-C, SIGTERM) or killed part-way goes on with
``--resume NAME`` from exactly where its last batch committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from consumer import kafka, lifecycle
from consumer.committer import Committer, database_retrier, publisher
from consumer.errors import FatalError
from consumer.metrics import Metrics
from consumer.partitions import Partitions
from consumer.replay import store
from consumer.replay.store import Range, Replay, owner
from consumer.settings import Settings
from consumer.stats import Stats
from consumer.store import database, offsets
from consumer.store.batch import Outcome, Records
from handlers import registry
from handlers.base import Handler

log = structlog.get_logger("omnisink.replay")


class ReplayFailed(Exception):  # noqa: N818 - a stop part-way, resumable
    """The replay stopped part-way (exit 1); ``--resume`` goes on from its last commit."""


@dataclass
class Progress:
    """What a replay has read and written so far, per partition and in all."""

    ranges: Sequence[Range]
    # The next offset to read per partition (starts at its resume position).
    at: dict[TopicPartition, int]
    stats: Stats = field(default_factory=Stats)
    started_at: float = field(default_factory=time.monotonic)

    def left(self, tp: TopicPartition) -> int:
        r = next(r for r in self.ranges if r.tp == tp)
        return max(0, r.to_offset - self.at.get(tp, r.from_offset))

    @property
    def total(self) -> int:
        return sum(r.records for r in self.ranges)

    @property
    def read(self) -> int:
        return self.total - sum(self.left(r.tp) for r in self.ranges)

    def summary(self, name: str) -> dict[str, Any]:
        s = self.stats
        return {
            "name": name,
            "records": s.records,
            "written": s.written,
            "duplicates": s.duplicates,
            "reapplied": s.reapplied,
            "dead_letters": s.dead_letters,
            "partitions": [
                {
                    "topic": r.topic,
                    "partition": r.partition,
                    "from_offset": r.from_offset,
                    "to_offset": min(r.to_offset, self.at.get(r.tp, r.from_offset)),
                }
                for r in self.ranges
            ],
        }


class Replayer:
    """One replay's run. ``await run()``; ``stop()`` from anywhere (the batch in hand is
    finished and committed, then the replay stops, resumable)."""

    def __init__(
        self,
        settings: Settings,
        replay: Replay,
        *,
        handlers: Sequence[Handler[Any]] | None = None,
        on_progress: Callable[[Progress], None] = lambda progress: None,
        install_signal_handlers: bool = True,
    ) -> None:
        self.settings = settings
        self.replay = replay
        self.owner = owner(replay.name)
        self.handlers = (
            handlers
            if handlers is not None
            else registry.configured(default_namespace=settings.default_namespace)
        )
        self.on_progress = on_progress
        self.install_signal_handlers = install_signal_handlers
        self.stats = Stats()
        self.partitions = Partitions()
        self.progress = Progress(replay.ranges, {r.tp: r.from_offset for r in replay.ranges})
        self.progress.stats = self.stats
        self._stopping = asyncio.Event()
        self.retrier = database_retrier(
            settings, self.stats, Metrics(), stopping=self._stopping, sleep=self._sleep
        )
        self._pool: asyncpg.Pool | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> Progress:
        """Read every range to its end; ReplayFailed when stopped or failed part-way."""
        abandoned = await lifecycle.run_gracefully(
            self._main(),
            self._stopping,
            stop=self.stop,
            grace_s=self.settings.shutdown_grace_s,
            signals=self.install_signal_handlers,
        )
        if abandoned or self.progress.read < self.progress.total:
            raise ReplayFailed(
                f"replay {self.replay.name} stopped after {self.stats.records:,} records; "
                f"`omnisink replay --resume {self.replay.name}` goes on from its last commit"
            )
        return self.progress

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _connection(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        if self._pool is None:
            raise RuntimeError("the replay is not started")
        return database.acquire(self._pool, fresh=self.retrier.failing is not None)

    async def _main(self) -> None:
        s = self.settings
        self._pool = pool = await database.open_checked(s, self.retrier)
        consumer: AIOKafkaConsumer | None = None
        producer: AIOKafkaProducer | None = None
        try:
            todo = await self._resume_positions()
            if not todo:
                return
            consumer = replay_consumer(s)
            producer = kafka.dead_letter_producer(s)
            await kafka.start(consumer, producer, s)
            consumer.assign(list(todo))
            for tp, offset in todo.items():
                consumer.seek(tp, offset)
            committer = self._committer(producer)
            await self._read(consumer, committer, todo)
        finally:
            if self.progress.read >= self.progress.total and not self._stopping.is_set():
                await self.retrier.run("finish", self._finish)

            await kafka.stop_clients(consumer, producer)
            with contextlib.suppress(Exception):
                await pool.close()

    async def _finish(self) -> None:
        async with self._connection() as conn:
            await store.finish(conn, self.replay.name)

    async def _resume_positions(self) -> dict[TopicPartition, int]:
        """Where each partition resumes (its stored position, else its range's start); the
        partitions still to read."""

        async def load() -> dict[TopicPartition, int]:
            async with self._connection() as conn:
                return await offsets.load(conn, self.owner, [r.tp for r in self.replay.ranges])

        stored = await self.retrier.run("load_offsets", load)
        self.partitions.assign({r.tp for r in self.replay.ranges})
        self.partitions.committed(
            {r.tp: stored.get(r.tp, offsets.NO_OFFSET) for r in self.replay.ranges}
        )
        todo = {}
        for r in self.replay.ranges:
            at = stored.get(r.tp, r.from_offset)
            self.progress.at[r.tp] = at
            if at < r.to_offset:
                todo[r.tp] = at
        self.on_progress(self.progress)
        return todo

    def _committer(self, producer: AIOKafkaProducer) -> Committer:
        s = self.settings

        def fenced(tps: list[TopicPartition]) -> None:
            raise FatalError(
                f"another process moved replay {self.replay.name}'s position on "
                + ", ".join(f"{tp.topic}[{tp.partition}]" for tp in tps)
                + ": the same replay runs twice; stop the other one"
            )

        def committed(outcome: Outcome) -> None:
            self.progress.at.update(outcome.next_offsets)
            self.on_progress(self.progress)

        return Committer(
            s,
            self.handlers,
            self.partitions,
            group=self.owner,
            retrier=self.retrier,
            connection=self._connection,
            publisher=publisher(producer, self.owner, s),
            stats=self.stats,
            metrics=Metrics(),
            stopping=self._stopping,
            lock=asyncio.Lock(),
            on_fenced=fenced,
            on_committed=committed,
            reapply=self.replay.reapply,
        )

    async def _read(
        self,
        consumer: AIOKafkaConsumer,
        committer: Committer,
        todo: dict[TopicPartition, int],
    ) -> None:
        ends = {r.tp: r.to_offset for r in self.replay.ranges}
        left = set(todo)
        s = self.settings
        while left and not self._stopping.is_set():
            try:
                got = await consumer.getmany(
                    *left, timeout_ms=s.batch_max_wait_ms, max_records=s.batch_max_records
                )
            except OffsetOutOfRangeError as exc:
                raise FatalError(
                    f"records of the replay's range are no longer in the log ({exc}): the "
                    "broker deleted them (retention) after the replay planned its range"
                ) from exc
            records: Records = {}
            for tp, rs in got.items():
                kept = [r for r in rs if r.offset < ends[tp]]
                if kept:
                    records[tp] = kept
            if records:
                if self.stats.first_record_at is None:
                    self.stats.first_record_at = time.monotonic()
                if not await committer.commit(records):
                    return
            for tp in list(left):
                position = await consumer.position(tp)
                if position >= ends[tp]:
                    # Read to its end (what lies between its last record and the end, if
                    # anything, is transaction markers): nothing more to read from it.
                    self.progress.at[tp] = ends[tp]
                    left.discard(tp)
                    consumer.pause(tp)
        self.on_progress(self.progress)


def replay_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A consumer outside any group: partitions assigned by hand, positions set by hand."""
    return AIOKafkaConsumer(
        **kafka.kafka_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
        isolation_level="read_committed",
        max_partition_fetch_bytes=max(1024 * 1024, settings.max_message_bytes + 64 * 1024),
    )
