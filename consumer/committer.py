"""Commit fetched records: decode them once, write them with their offsets
(consumer/store/batch.py), retry while the faults are transient, count the outcome once.
The daemon submits each batch to be written in the background while it fetches and decodes
the next (:meth:`Committer.submit`); batches still commit one after the other, in order.

The daemon's loop (consumer/worker.py) and ``omnisink replay`` (consumer/replay/) both commit
through this class; they differ only in the offsets' owner (the consumer group, or the
replay's name) and in whether events already in ``event_logs`` are applied again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer, TopicPartition

from consumer import kafka
from consumer.breaker import CircuitBreaker, State
from consumer.deadletters import Publisher
from consumer.errors import is_transient
from consumer.metrics import BREAKER_STATES, Metrics
from consumer.partitions import Partitions
from consumer.retry import Retrier
from consumer.settings import Settings
from consumer.stats import Stats
from consumer.store import database, offsets
from consumer.store.batch import Batch, Outcome, Records, write_batch
from handlers.base import Handler

log = structlog.get_logger("omnisink.committer")


def database_retrier(
    settings: Settings,
    stats: Stats,
    metrics: Metrics,
    *,
    stopping: asyncio.Event,
    sleep: Callable[[float], Awaitable[None]],
    on_breaker: Callable[[str], None] = lambda state: None,
    on_failing: Callable[[str | None], None] = lambda what: None,
    on_settled: Callable[[], None] = lambda: None,
) -> Retrier:
    """The retrier every call into PostgreSQL and Kafka runs under, behind the database's
    circuit breaker (consumer/retry.py); retries and the breaker's state counted once."""

    def changed(name: str, state: State) -> None:
        metrics.breaker_state.labels(name).set(BREAKER_STATES[state.value])
        log.warning("circuit_breaker.changed", breaker=name, state=state.value)
        on_breaker(state.value)

    def retried(what: str) -> None:
        stats.retries += 1
        metrics.transient_errors.labels(what).inc()

    breaker = CircuitBreaker(
        "database",
        failure_threshold=settings.breaker_failure_threshold,
        recovery_s=settings.breaker_recovery_s,
        half_open_calls=settings.breaker_half_open_calls,
        on_change=changed,
    )
    metrics.breaker_state.labels("database").set(0)
    return Retrier(
        breaker,
        stopping=stopping,
        sleep=sleep,
        on_retry=retried,
        on_failing=on_failing,
        on_settled=on_settled,
        explain=lambda exc: database.explain(exc, settings),
    )


def publisher(producer: AIOKafkaProducer, owner: str, settings: Settings) -> Publisher:
    """The dead-letter publisher of ``owner`` (a group or a replay), creating the dead-letter
    topics it needs (consumer/kafka.py)."""
    return Publisher(
        producer, owner, topics=lambda wanted: kafka.ensure_dead_letter_topics(settings, wanted)
    )


class Committer:
    """Writes one batch at a time for the partitions in ``partitions`` (the fence)."""

    def __init__(
        self,
        settings: Settings,
        handlers: Sequence[Handler[Any]],
        partitions: Partitions,
        *,
        group: str,
        retrier: Retrier,
        connection: Callable[[], contextlib.AbstractAsyncContextManager[asyncpg.Connection]],
        publisher: Publisher,
        stats: Stats,
        metrics: Metrics,
        stopping: asyncio.Event,
        lock: asyncio.Lock,
        on_fenced: Callable[[list[TopicPartition]], None],
        on_committed: Callable[[Outcome], None],
        after_commit: Callable[[], Awaitable[None]] | None = None,
        reapply: Collection[str] = (),
    ) -> None:
        self.settings = settings
        self.handlers = handlers
        self.partitions = partitions
        self.group = group
        self.retrier = retrier
        self.connection = connection
        self.publisher = publisher
        self.stats = stats
        self.metrics = metrics
        self.stopping = stopping
        # Held per attempt, not across the waits between attempts, so a rebalance can revoke
        # partitions while the database is away (consumer/partitions.py).
        self.lock = lock
        self.on_fenced = on_fenced
        self.on_committed = on_committed
        self.after_commit = after_commit
        self.reapply = frozenset(reapply)
        # The batch being written (submit) while the caller fetches and decodes the next.
        self._writing: asyncio.Task[None] | None = None
        # The batch in hand, for the log line of a crash.
        self.batch: Batch | None = None

    async def load_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The offsets PostgreSQL holds for ``tps`` under this committer's owner."""

        async def load() -> dict[TopicPartition, int]:
            async with self.connection() as conn:
                return await offsets.load(conn, self.group, tps)

        return await self.retrier.run("load_offsets", load)

    async def record_starts(self, starts: dict[TopicPartition, int]) -> set[TopicPartition]:
        """Write where partitions PostgreSQL held nothing for start; those another member
        wrote first are returned (consumer/partitions.py seeks them again)."""

        async def store() -> set[TopicPartition]:
            async with self.connection() as conn:
                try:
                    await offsets.store(conn, self.group, starts, {})
                except offsets.OffsetFenced as fenced:
                    return set(fenced.partitions)
            return set()

        return await self.retrier.run("record_starts", store)

    def in_hand(self) -> dict[str, Any]:
        batch = self.batch
        if batch is None:
            return {}
        firsts = {
            f"{tp.topic}[{tp.partition}]": rs[0].offset for tp, rs in batch.records.items() if rs
        }
        return {"batch_records": batch.size, "batch_first_offsets": firsts}

    async def prepare(self, records: Records) -> Batch:
        """Decode ``records``, once (a retried batch reuses its events and dead letters)."""
        s = self.settings
        return await Batch.decode_yielding(
            records, max_bytes=s.max_message_bytes, keep_unknown=s.unknown_events == "keep"
        )

    @property
    def idle(self) -> bool:
        """No batch is being written."""
        return self._writing is None or self._writing.done()

    async def submit(self, batch: Batch) -> None:
        """Write ``batch`` in the background once the batch submitted before it has
        committed (batches commit in order); its failure is raised by the next
        :meth:`submit` or :meth:`settle`. PostgreSQL writes one batch while the caller
        fetches and decodes the next."""
        await self.settle()
        self._writing = asyncio.create_task(self._write(batch), name="omnisink-batch")

    async def _write(self, batch: Batch) -> None:
        if await self.commit_batch(batch) and self.after_commit is not None:
            await self.after_commit()

    async def settle(self) -> None:
        """Wait for the batch being written; its failure is raised here."""
        task, self._writing = self._writing, None
        if task is not None:
            await task

    async def abandon(self) -> None:
        """The caller failed or was cancelled: a write still running is cancelled (its
        transaction rolls back; its records are read again by the next owner)."""
        task, self._writing = self._writing, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.warning("batch.abandoned", error=str(task.exception()))

    async def commit(self, records: Records) -> bool:
        """:meth:`prepare` and :meth:`commit_batch`."""
        return await self.commit_batch(await self.prepare(records))

    async def commit_batch(self, batch: Batch) -> bool:
        """Write the batch and its offsets; False when abandoned because the sink is
        stopping while the database or the broker is away (nothing was written: the next
        owner reads the records again). Partitions fenced by another writer are handed to
        ``on_fenced`` (to be sought again) and the rest of the batch is written without them.
        """
        self.batch = batch
        while True:
            try:
                await self.retrier.run("commit_batch", lambda: self._attempt(batch))
                break
            except offsets.OffsetFenced as fenced:
                self.stats.fenced += 1
                log.warning("batch.fenced", partitions=[str(tp) for tp in fenced.partitions])
                self.partitions.fenced(fenced.partitions)
                self.on_fenced(fenced.partitions)
            except Exception as exc:
                if not (self.stopping.is_set() and is_transient(exc)):
                    raise
                log.warning("batch.abandoned_on_stop", error=str(exc))
                return False
        self.batch = None
        return True

    async def _attempt(self, batch: Batch) -> None:
        async with self.lock:
            # The records of partitions revoked (or to be sought again) since the fetch
            # belong to someone else now.
            batch.keep_only(self.partitions.sought())
            if not batch.records:
                return
            first = min(r.offset for rs in batch.records.values() for r in rs)
            with structlog.contextvars.bound_contextvars(
                batch_records=batch.size,
                batch_partitions=len(batch.records),
                batch_first_offset=first,
            ):
                async with self.connection() as conn:
                    outcome = await write_batch(
                        conn,
                        batch,
                        self.handlers,
                        group=self.group,
                        expected=self.partitions.expected(),
                        publisher=self.publisher,
                        reapply=self.reapply,
                    )
                self.partitions.committed(dict(outcome.next_offsets))
                self.stats.add(outcome)
                self.metrics.observe(outcome)
                self.on_committed(outcome)
                _log_committed(outcome)


def _log_committed(outcome: Outcome) -> None:
    log.info(
        "batch.committed",
        written=len(outcome.written),
        duplicates=len(outcome.duplicates),
        reapplied=len(outcome.reapplied),
        dead_letters=len(outcome.dead_letters),
        duration_ms=round(outcome.took_s * 1000, 1),
    )
    for letter in outcome.dead_letters:
        if letter.kind == "internal":
            # A bug met on one record, which moved on: loud, once per record.
            topic, partition, offset = letter.source
            log.error(
                "dead_letter.internal",
                topic=topic,
                partition=partition,
                offset=offset,
                error_class=letter.error_class,
                error=letter.message,
            )
