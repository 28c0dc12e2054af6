"""The daemon's loop: fetch a batch, write it with its offsets (consumer/store/batch.py), repeat.

Who owns what (docs/architecture.md): the partition table and the rebalance listener are in
consumer/partitions.py, retries and the circuit breaker in consumer/retry.py and
consumer/breaker.py, committing a batch with its retries in consumer/committer.py, the one
batch write (and so the one place an offset is committed) in consumer/store/batch.py, health
in consumer/health.py. This module only turns the loop.

Shutdown (SIGTERM/SIGINT, ``stop()``): stop fetching, finish and commit the batch in hand,
leave the group; if that takes longer than ``shutdown_grace_s`` the batch is cancelled (its
transaction rolls back, nothing is lost: the next owner reads it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consumer import committer, kafka, lifecycle, vitals
from consumer.committer import Committer, database_retrier
from consumer.drain import Drain
from consumer.health import Board, HealthServer
from consumer.lag import LagReporter
from consumer.metrics import Metrics
from consumer.partitions import Listener, Partitions
from consumer.settings import Settings
from consumer.stats import Stats
from consumer.store import database
from consumer.store.batch import Records
from handlers import registry
from handlers.base import Handler

log = structlog.get_logger("omnisink.worker")


T = TypeVar("T")


def _started(part: T | None) -> T:
    if part is None:
        raise RuntimeError("the worker is not started")
    return part


class Worker:
    """One consumer-group member. ``await run()``; ``stop()`` from anywhere."""

    def __init__(
        self,
        settings: Settings,
        *,
        handlers: Sequence[Handler[Any]] | None = None,
        until_caught_up: bool = False,
        drain_timeout_s: float | None = None,
        install_signal_handlers: bool = True,
    ) -> None:
        self.settings = settings
        # By default the registry's, configured from the settings.
        self.handlers = (
            handlers
            if handlers is not None
            else registry.configured(default_namespace=settings.default_namespace)
        )
        self.drain = Drain(settings, drain_timeout_s) if until_caught_up else None
        self.install_signal_handlers = install_signal_handlers
        self.stats = Stats()
        self.metrics = Metrics()
        self.partitions = Partitions()
        self.batch_lock = asyncio.Lock()
        self.caught_up = asyncio.Event()
        self._stopping = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._committer: Committer | None = None
        self._lag: LagReporter | None = None
        self._vitals: list[asyncio.Task[None]] = []
        # Between attempts of a retried call: partitions paused, the consumer polled. The loop
        # fetches the next batch while one is written, so polls take turns (poll_lock).
        self.poll_lock = asyncio.Lock()
        self.board = Board(
            settings.ready_stall_s, lambda: self.breaker.state.value, self._stopping.is_set
        )
        self._wait = kafka.PausedWait(
            lambda: self._consumer,
            stopping=self._stopping,
            beat=self.board.beat,
            unsought=self.partitions.unsought,
            lock=self.poll_lock,
        )
        self.http: HealthServer | None = None
        self.retrier = database_retrier(
            settings,
            self.stats,
            self.metrics,
            stopping=self._stopping,
            sleep=self._wait,
            on_breaker=lambda state: self.board.update(breaker=state),
            on_failing=lambda what: self.board.update(failing=what),  # not ready while it fails
            on_settled=self._wait.resume,
        )
        self.breaker = self.retrier.breaker

    @property
    def _kafka(self) -> AIOKafkaConsumer:
        return _started(self._consumer)

    @property
    def _writer(self) -> Committer:
        return _started(self._committer)

    def _connection(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        # A new session after a failed attempt: the pooled ones may be broken or read-only.
        return database.acquire(_started(self._pool), fresh=self.retrier.failing is not None)

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop: the batch in hand is finished and committed."""
        if not self._stopping.is_set():
            log.info("worker.stopping")
        self._stopping.set()
        self.board.update(stopping=True)

    async def run(self) -> Stats:
        """Run until stopped (or caught up). A cancel of ``run`` is a graceful stop."""
        self.stats.abandoned = await lifecycle.run_gracefully(
            self._main(),
            self._stopping,
            stop=self.stop,
            grace_s=self.settings.shutdown_grace_s,
            signals=self.install_signal_handlers,
        )
        return self.stats

    async def _main(self) -> None:
        try:
            with lifecycle.crashes_reported(
                self._stopping, lambda: self._committer.in_hand() if self._committer else {}
            ):
                await self._start()
                while not self._stopping.is_set() and await self._turn():
                    pass
                await self._settle()  # the last batch is committed before the member leaves
        finally:
            if self._committer is not None:
                await self._committer.abandon()
            await self._close()

    async def _turn(self) -> bool:
        """One turn of the loop; False when the drain is done. Every call into Kafka or
        PostgreSQL is retried while its faults are transient."""
        self.board.beat()
        start = self.settings.auto_offset_reset
        if self.partitions.unsought():
            await self._settle()  # positions move only between batches
            w = self._writer
            await self.retrier.run(
                "seek",
                lambda: self.partitions.seek(self._kafka, w.load_offsets, start, w.record_starts),
            )
        lost: set[TopicPartition] = set()
        unpositioned: set[TopicPartition] = set()
        records = await kafka.fetch_batch(
            self._kafka,
            self.settings,
            stopping=self._stopping.is_set,
            seek_pending=lambda: bool(self.partitions.unsought()),
            out_of_range=lost,
            unpositioned=unpositioned,
            lock=self.poll_lock,
            writer_idle=lambda: self._writer.idle,
        )
        if unpositioned:  # sought again from PostgreSQL on the next turn
            await self._settle()
            self.partitions.fenced(sorted(unpositioned))
            self._kafka.pause(*unpositioned)
        if records:
            if self.stats.first_record_at is None:
                self.stats.first_record_at = time.monotonic()
            await self._write_next(records)
        lost.update(
            await self.retrier.run(
                "log_bounds", lambda: self.partitions.beyond_the_log(self._kafka)
            )
        )
        if lost:
            await self._settle()
            # The offsets PostgreSQL holds for these are no longer in the log: never silent.
            policy, tps = self.settings.offset_reset_policy, sorted(lost)
            counted = lambda tp: self.metrics.offset_resets.labels(tp.topic, policy).inc()  # noqa: E731
            await self.retrier.run(
                "offset_reset", lambda: self.partitions.reset(self._kafka, tps, policy, counted)
            )
        return self.drain is None or not await self._drained(self.drain)

    async def _start(self) -> None:
        s = self.settings
        # First, so /health/live answers (and /health/ready says 503) while the start waits
        # for the database.
        if s.http_enabled:
            self.http = HealthServer.serve(self.metrics, lambda: self.board.snapshot, s)
        self._pool = pool = await database.open_checked(s, self.retrier)
        self._consumer, self._producer = await kafka.start_group_clients(
            s, Listener(self), self.retrier, created=self._created
        )
        self._committer = Committer(
            s,
            self.handlers,
            self.partitions,
            group=s.group_id,
            retrier=self.retrier,
            connection=self._connection,
            publisher=committer.publisher(self._producer, s.group_id, s),
            stats=self.stats,
            metrics=self.metrics,
            stopping=self._stopping,
            lock=self.batch_lock,
            on_fenced=lambda tps: self._kafka.pause(*tps),
            on_committed=lambda _: self.board.beat(last_commit_at=self.stats.last_commit_at),
            after_commit=self._after_commit,
        )
        self._lag = LagReporter(
            self._consumer,
            self.partitions,
            self.metrics,
            s.group_id,
            in_hand=lambda: self._committer.batch if self._committer else None,
            on_lag=self.board.waited,
        )
        self._vitals = vitals.watch(
            s, self._lag, pool, self.metrics, lambda ok: self.board.update(database_answers=ok)
        )
        self.board.beat(started=True)
        log.info(
            "worker.started",
            http_port=self.http.port if self.http else None,
            group=s.group_id,
            topics=len(s.topics) or None,
            pattern=None if s.topics else s.topic_pattern,
            database=s.database.redacted_url,
        )

    async def _close(self) -> None:
        await vitals.unwatch(self._vitals)
        if self.http is not None:
            self.http.stop()
        # Leaving the group hands the partitions to another member at once.
        await kafka.stop_clients(self._consumer, self._producer)
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.close()
        log.info("worker.stopped", **self.stats.summary())

    def _created(
        self, consumer: AIOKafkaConsumer | None, producer: AIOKafkaProducer | None
    ) -> None:
        # A start attempt's clients (None: it failed): the listener pauses partitions with them.
        self._consumer, self._producer = consumer, producer

    # -- rebalance (called by consumer.partitions.Listener) ------------------------------------

    def assign(self, assigned: set[TopicPartition]) -> None:
        """Pause new partitions until the loop has sought them to PostgreSQL's offsets."""
        fresh = self.partitions.assign(assigned)
        self.stats.assignments += 1
        if fresh:
            self._kafka.pause(*fresh)
        self.metrics.assigned.set(len(self.partitions))
        self.board.beat(joined=True, assigned=len(self.partitions))
        log.info("worker.assigned", partitions=len(assigned), new=len(fresh))

    def forget(self, revoked: set[TopicPartition]) -> None:
        lagged = self.partitions.forget(revoked)
        if self._lag is not None:
            # Another member reports these now; a stale series would show a frozen lag.
            self._lag.forget(lagged)
        self.metrics.assigned.set(len(self.partitions))
        self.board.beat(assigned=len(self.partitions))
        log.info("worker.revoked", partitions=len(revoked))

    async def _drained(self, drain: Drain) -> bool:
        """Whether the drain is over: done (consumer/drain.py), or out of time."""
        joined = self.partitions.joined
        load = self._writer.load_offsets
        if await self.retrier.run("drain", lambda: drain.done(self._kafka, joined, load)):
            log.info("worker.caught_up", **self.stats.summary())
            self.caught_up.set()
            return True
        return drain.expired

    # -- write (consumer/committer.py) ----------------------------------------------------

    async def _write_next(self, records: Records) -> None:
        """Decode ``records`` while the batch before them is written, then hand them to the
        committer, which writes them once that one has committed (consumer/committer.py)."""
        await self._writer.submit(await self._writer.prepare(records))

    async def _settle(self) -> None:
        if self._committer is not None:
            await self._committer.settle()

    async def _after_commit(self) -> None:
        if self._lag is not None:
            self._lag.report()
        await kafka.commit_best_effort(self._kafka, self.partitions.expected())
