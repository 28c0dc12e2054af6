"""The daemon: consume a batch, write it in one transaction with its offsets, repeat.

When is an offset committed? Here, and only here (``_commit_batch``): in the PostgreSQL
transaction that writes the batch's ``event_logs`` rows, domain rows and dead letters. Kafka
is told afterwards, for lag tooling; the sink never reads Kafka's committed offset back unless
PostgreSQL holds none for a partition.

On assignment the partitions are paused and marked for a seek; the loop (not the rebalance
callback, which must not block on I/O) reads their offsets from PostgreSQL, seeks, resumes.
On revocation the callback waits for the write in hand to finish, so a rebalance in the
middle of a batch completes it instead of handing half of it to the next owner; between the
attempts of a retried batch the lock is free, and the next attempt drops the records of
partitions it lost. A consumer that still commits after losing a partition is stopped by the
offsets fence (consumer/offsets.py). Transient faults, the circuit breaker and dead letters:
docs/failures.md.

Shutdown (SIGTERM/SIGINT, ``stop()``): stop fetching, finish and commit the batch in hand,
leave the group; if that takes longer than ``shutdown_grace_s`` the batch is cancelled (its
transaction rolls back, nothing is lost: the next owner reads it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.structs import OffsetAndMetadata
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_random_exponential,
)

from consumer import deadletters, offsets
from consumer.breaker import CircuitBreaker, State
from consumer.deadletters import DLQ_SUFFIX, DeadLetter
from consumer.errors import FatalError, is_fatal, is_transient
from consumer.kafka import kafka_options
from consumer.metrics import BREAKER_STATES, HealthServer, Metrics
from consumer.settings import Settings
from handlers import batch as batches
from handlers.base import Event, Handler
from handlers.envelope import DecodeError, decode
from handlers.registry import HANDLED_TYPES, HANDLERS, resolve

log = structlog.get_logger("omnisink.worker")

Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


@dataclass
class Stats:
    """What the worker did since it started."""

    started_at: float = field(default_factory=time.monotonic)
    batches: int = 0
    records: int = 0
    written: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    unknown_types: int = 0
    retries: int = 0
    fenced: int = 0
    assignments: int = 0
    # The grace period expired and the batch in hand was rolled back.
    abandoned: bool = False
    by_type: Counter[str] = field(default_factory=Counter)

    # When the first record arrived and the last batch committed (monotonic clock): the rate
    # excludes the group join and the final wait for the end of the stream.
    first_record_at: float | None = None
    last_commit_at: float | None = None

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at

    @property
    def events_per_s(self) -> float:
        """Events written per second between the first record and the last commit."""
        if self.first_record_at is None or self.last_commit_at is None:
            return 0.0
        return self.written / max(self.last_commit_at - self.first_record_at, 1e-6)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Wait for the batch in hand: it commits while we still own its partitions.
        async with self._worker.batch_lock:
            self._worker.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._worker.assign(assigned)


class Worker:
    """One consumer-group member. ``await run()``; ``stop()`` from anywhere."""

    def __init__(
        self,
        settings: Settings,
        *,
        handlers: Sequence[Handler[Any]] = HANDLERS,
        until_caught_up: bool = False,
        install_signal_handlers: bool = True,
    ) -> None:
        self.settings = settings
        self.handlers = handlers
        self.until_caught_up = until_caught_up
        self.install_signal_handlers = install_signal_handlers
        self.stats = Stats()
        self.batch_lock = asyncio.Lock()
        self.caught_up = asyncio.Event()
        self._stopping = asyncio.Event()
        self._group = settings.group_id
        self._pool: asyncpg.Pool | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._dlq: deadletters.Publisher | None = None
        self._assigned: set[TopicPartition] = set()
        self._to_seek: set[TopicPartition] = set()
        # The next offset PostgreSQL holds per owned partition (offsets.NO_OFFSET: no row):
        # the fence of the next batch's offset write.
        self._expected: dict[TopicPartition, int] = {}
        # --until-caught-up: the end offset to reach per partition.
        self._targets: dict[TopicPartition, int] = {}
        self._first_highwater: dict[TopicPartition, int] = {}
        self._paused_for_retry = False
        self.metrics = Metrics()
        self._lag_reported: set[TopicPartition] = set()
        self.http: HealthServer | None = None
        self._started = False
        self._last_beat = time.monotonic()
        self.breaker = CircuitBreaker(
            "database",
            failure_threshold=settings.breaker_failure_threshold,
            recovery_s=settings.breaker_recovery_s,
            half_open_calls=settings.breaker_half_open_calls,
            on_change=self._breaker_changed,
        )
        self.metrics.breaker_state.labels("database").set(0)
        self._joined = False

    @property
    def _kafka(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the worker is not started")
        return self._consumer

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise RuntimeError("the worker is not started")
        async with self._pool.acquire() as conn:
            # The pool's proxy forwards every Connection method; the handlers type against
            # Connection.
            yield cast("asyncpg.Connection", conn)

    # -- health ----------------------------------------------------------------------------

    def _breaker_changed(self, name: str, state: State) -> None:
        self.metrics.breaker_state.labels(name).set(BREAKER_STATES[state.value])
        log.warning("circuit_breaker.changed", breaker=name, state=state.value)

    # A loop turn (or a poll while retrying) at least this often, or the worker is stuck.
    LIVENESS_S = 120.0

    def health(self) -> tuple[bool, bool, dict[str, Any]]:
        """(live, ready, facts) for the health endpoints; read from the HTTP thread."""
        since_beat = time.monotonic() - self._last_beat
        breaker = self.breaker.state.value
        live = since_beat < self.LIVENESS_S and not self._stopping.is_set()
        ready = live and self._started and self._joined and breaker != "open"
        last = self.stats.last_commit_at
        return (
            live,
            ready,
            {
                "circuit_breaker": breaker,
                "group_member": self._joined,
                "assigned_partitions": len(self._assigned),
                "seconds_since_last_commit": None
                if last is None
                else round(time.monotonic() - last, 3),
                "stopping": self._stopping.is_set(),
            },
        )

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop: the batch in hand is finished and committed."""
        if not self._stopping.is_set():
            log.info("worker.stopping")
        self._stopping.set()

    async def run(self) -> Stats:
        """Run until stopped (or caught up). A cancel of ``run`` is a graceful stop."""
        loop = asyncio.get_running_loop()
        if self.install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        main = asyncio.create_task(self._main(), name="omnisink-worker")
        stopping = asyncio.create_task(self._stopping.wait(), name="omnisink-stop-signal")
        try:
            await asyncio.wait({main, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not main.done():
                await self._await_with_grace(main)
            main.result()  # the worker's own failure, if any
        except asyncio.CancelledError:
            # Cancelled from outside: become a graceful stop, then let the cancel go on.
            self.stop()
            await self._await_with_grace(main)
            raise
        finally:
            stopping.cancel()
            if self.install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        return self.stats

    async def _await_with_grace(self, main: asyncio.Task[None]) -> None:
        """Let the batch in hand finish within the grace period, else cancel it (it rolls
        back; its records are read again by the next owner, so nothing is lost)."""
        try:
            await asyncio.wait_for(asyncio.shield(main), self.settings.shutdown_grace_s)
        except TimeoutError:
            log.warning("worker.grace_expired", grace_s=self.settings.shutdown_grace_s)
            self.stats.abandoned = True
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await main

    async def _main(self) -> None:
        try:
            await self._start()
            while not self._stopping.is_set():
                self._last_beat = time.monotonic()
                await self._seek_assigned()
                records = await self._fetch()
                if records:
                    if self.stats.first_record_at is None:
                        self.stats.first_record_at = time.monotonic()
                    await self._process(records)
                if self.until_caught_up and await self._is_caught_up():
                    log.info("worker.caught_up", **self._summary())
                    self.caught_up.set()
                    break
        finally:
            await self._close()

    async def _start(self) -> None:
        s = self.settings
        try:
            self._pool = await asyncpg.create_pool(
                s.database.dsn,
                min_size=min(s.database.pool_min_size, s.database.pool_max_size),
                max_size=s.database.pool_max_size,
                command_timeout=s.database.command_timeout_s,
                statement_cache_size=s.database.statement_cache_size,
                server_settings={
                    "application_name": "omnisink",
                    # A transaction whose client vanished (a network partition, not a clean
                    # close) would hold its row and advisory locks until TCP noticed, and the
                    # reconnected sink would wait on them; the server ends it instead.
                    "idle_in_transaction_session_timeout": str(
                        int(s.database.idle_in_transaction_timeout_s * 1000)
                    ),
                },
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise FatalError(
                f"cannot connect to PostgreSQL at {s.database.redacted_url}: {exc}. "
                "Check OMNISINK_DATABASE_URL and that the server is running."
            ) from exc
        await self._check_schema()
        if s.http_enabled:
            try:
                self.http = HealthServer(self.metrics, self.health, s.http_host, s.http_port)
            except OSError as exc:
                raise FatalError(
                    f"cannot serve /metrics and /health on {s.http_host}:{s.http_port}: {exc}. "
                    "Set OMNISINK_HTTP_PORT (0: any free port) or OMNISINK_HTTP_ENABLED=false."
                ) from exc
            self.http.start()
        kafka = kafka_options(s)
        self._consumer = AIOKafkaConsumer(
            **kafka,
            group_id=self._group,
            group_instance_id=s.group_instance_id,
            enable_auto_commit=False,  # offsets live in PostgreSQL (module docstring)
            auto_offset_reset=s.auto_offset_reset,
            isolation_level="read_committed",
            session_timeout_ms=s.kafka.session_timeout_ms,
            heartbeat_interval_ms=s.kafka.heartbeat_interval_ms,
            max_poll_interval_ms=s.kafka.max_poll_interval_ms,
            metadata_max_age_ms=s.kafka.metadata_max_age_ms,
            max_partition_fetch_bytes=max(1024 * 1024, s.max_message_bytes + 64 * 1024),
        )
        # acks=all: a dead letter is durable before its offset moves. Not idempotent: not every
        # Kafka-compatible broker grants producer ids, and the dead-letter topic is
        # at-least-once anyway (see consumer/deadletters.py); the table is the exact record.
        self._producer = AIOKafkaProducer(
            **kafka, acks="all", max_request_size=s.dlq_max_request_bytes
        )
        self._dlq = deadletters.Publisher(self._producer, self._group)
        listener = _Listener(self)
        if s.topics:
            self._consumer.subscribe(topics=s.topics, listener=listener)
        else:
            self._consumer.subscribe(pattern=_without_dlq(s.topic_pattern), listener=listener)
        try:
            await self._producer.start()
            await self._consumer.start()
        except Exception as exc:
            if is_transient(exc):
                raise FatalError(
                    f"cannot reach the Kafka brokers at {s.kafka.bootstrap_servers}: {exc}. "
                    "Check OMNISINK_KAFKA_BOOTSTRAP_SERVERS."
                ) from exc
            raise
        self._started = True
        log.info(
            "worker.started",
            http_port=self.http.port if self.http else None,
            group=self._group,
            topics=len(s.topics) or None,
            pattern=None if s.topics else s.topic_pattern,
            database=s.database.redacted_url,
        )

    async def _check_schema(self) -> None:
        from consumer.migrate import head_revision  # Alembic only when starting

        head = head_revision()
        try:
            async with self._connection() as conn:
                current = await conn.fetchval("SELECT version_num FROM alembic_version")
        except asyncpg.UndefinedTableError:
            current = None
        if current != head:
            raise FatalError(
                f"the database at {self.settings.database.redacted_url} is at schema revision "
                f"{current or 'none'}, the sink needs {head}: run `omnisink migrate` first."
            )

    async def _close(self) -> None:
        if self.http is not None:
            self.http.stop()
        if self._consumer is not None:
            # Leaves the group, so the partitions move to another member at once.
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.close()
        log.info("worker.stopped", **self._summary())

    # -- rebalance ---------------------------------------------------------------------------

    def assign(self, assigned: set[TopicPartition]) -> None:
        """The listener's assignment: pause until the loop has sought to PostgreSQL's offsets."""
        self._assigned = set(assigned)
        self._joined = True
        self.stats.assignments += 1
        fresh = self._assigned - set(self._expected)
        self._to_seek |= fresh
        if fresh:
            self._kafka.pause(*fresh)
        self.metrics.assigned.set(len(self._assigned))
        log.info("worker.assigned", partitions=len(assigned), new=len(fresh))

    def forget(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self._expected.pop(tp, None)
            self._targets.pop(tp, None)
            self._first_highwater.pop(tp, None)
            self._to_seek.discard(tp)
        self._assigned -= revoked
        self.metrics.assigned.set(len(self._assigned))
        for tp in revoked & self._lag_reported:
            # Another member reports these now; a stale series would show a frozen lag.
            self.metrics.lag.remove(tp.topic, str(tp.partition))
        self._lag_reported -= revoked
        log.info("worker.revoked", partitions=len(revoked))

    async def _seek_assigned(self) -> None:
        tps = sorted(self._to_seek & self._assigned)
        self._to_seek &= self._assigned
        if not tps:
            return
        stored: dict[TopicPartition, int] = await self._retrying(
            "load_offsets", lambda: self._load_offsets(tps)
        )
        for tp in tps:
            if tp in stored:
                self._kafka.seek(tp, stored[tp])
                self._expected[tp] = stored[tp]
                continue
            # PostgreSQL holds nothing: a group moving onto this sink resumes from Kafka's
            # committed offset; a new group starts per OMNISINK_AUTO_OFFSET_RESET.
            committed = await self._kafka.committed(tp)
            if committed is not None:
                self._kafka.seek(tp, committed)
            self._expected[tp] = offsets.NO_OFFSET
        if self.until_caught_up:
            ends = await self._kafka.end_offsets(tps)
            for tp in tps:
                self._targets[tp] = ends.get(tp, 0)
        self._to_seek -= set(tps)
        self._kafka.resume(*tps)

    # -- fetch and process -------------------------------------------------------------------

    async def _fetch(self) -> Records:
        """Records until the batch is full (records or bytes) or the wait is over."""
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.batch_max_wait_ms / 1000
        out: Records = {}
        count = size = 0
        while not self._stopping.is_set():
            remaining_ms = max(0, int((deadline - loop.time()) * 1000))
            got = await self._kafka.getmany(
                timeout_ms=remaining_ms, max_records=s.batch_max_records - count
            )
            for tp, records in got.items():
                out.setdefault(tp, []).extend(records)
                count += len(records)
                size += sum(len(r.value or b"") + len(r.key or b"") for r in records)
            if count >= s.batch_max_records or size >= s.batch_max_bytes:
                break
            if remaining_ms == 0 or self._to_seek:
                break
        return out

    async def _process(self, records: Records) -> None:
        while True:
            try:
                await self._retrying("commit_batch", lambda: self._commit_batch(records))
                break
            except offsets.OffsetFenced as fenced:
                self.stats.fenced += 1
                log.warning("batch.fenced", partitions=[str(tp) for tp in fenced.partitions])
                for tp in fenced.partitions:
                    records.pop(tp, None)
                    self._expected.pop(tp, None)
                    self._to_seek.add(tp)
                    self._kafka.pause(tp)
            except Exception as exc:
                if not (self._stopping.is_set() and is_transient(exc)):
                    raise
                # Stopping while the database or broker is away: the batch rolled back and
                # its records are read again by the next owner; nothing is lost.
                log.warning("batch.abandoned_on_stop", error=str(exc))
                return
            finally:
                self._resume_after_retry()
        await self._commit_to_kafka()

    async def _commit_batch(self, records: Records) -> None:
        # The lock is held per attempt, not across the waits between attempts, so a rebalance
        # can revoke partitions while the database is away instead of timing out.
        async with self.batch_lock:
            # Partitions revoked (or to be sought again) since the records were fetched belong
            # to someone else now, or will be read again from the stored offset.
            for tp in [tp for tp in records if tp not in self._expected or tp in self._to_seek]:
                del records[tp]
            if records:
                await self._commit_owned(records)

    async def _commit_owned(self, records: Records) -> None:
        if self._dlq is None:
            raise RuntimeError("the worker is not started")
        events, dead = self._decode(records)
        next_offsets = {tp: rs[-1].offset + 1 for tp, rs in records.items()}
        first = min(r.offset for rs in records.values() for r in rs)
        structlog.contextvars.bind_contextvars(
            batch_records=sum(len(rs) for rs in records.values()),
            batch_partitions=len(records),
            batch_first_offset=first,
        )
        try:
            started = time.monotonic()
            async with self._connection() as conn, conn.transaction():
                result = await batches.write(conn, events, self.handlers)
                by_id = {(r.topic, r.partition, r.offset): r for rs in records.values() for r in rs}
                for event, reject in result.rejected:
                    dead.append(
                        deadletters.from_exception(
                            by_id[(event.topic, event.partition, event.offset)],
                            reject.kind,
                            reject,
                            event_id=event.event_id,
                            event_type=event.event_type,
                        )
                    )
                if dead:
                    # Durable on the broker before the offset can move past them.
                    await self._dlq.publish(dead)
                    await deadletters.record(conn, self._group, dead, self._dlq.landed)
                await offsets.store(conn, self._group, next_offsets, self._expected)
            self._dlq.forget([d.source for d in dead])
            self._expected.update(next_offsets)
            self.stats.last_commit_at = time.monotonic()
            self._count(result, dead, time.monotonic() - started)
            self.stats.batches += 1
            self.stats.records += sum(len(rs) for rs in records.values())
            self.stats.written += len(result.new)
            self.stats.duplicates += len(result.duplicates)
            self.stats.dead_letters += len(dead)
            self.stats.by_type.update(e.event_type for e in result.new)
            self.stats.unknown_types += sum(
                1 for e in result.new if e.event_type not in HANDLED_TYPES
            )
            log.info(
                "batch.committed",
                written=len(result.new),
                duplicates=len(result.duplicates),
                dead_letters=len(dead),
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )
        finally:
            structlog.contextvars.unbind_contextvars(
                "batch_records", "batch_partitions", "batch_first_offset"
            )

    def _count(self, result: batches.BatchResult, dead: list[DeadLetter], took_s: float) -> None:
        m = self.metrics
        m.batches.inc()
        m.batch_seconds.observe(took_s)
        m.last_commit.set(time.time())
        m.records.labels("written").inc(len(result.new))
        m.records.labels("duplicate").inc(len(result.duplicates))
        m.records.labels("dead_letter").inc(len(dead))
        for event_type, n in Counter(e.event_type for e in result.new).items():
            m.events.labels(event_type).inc(n)
        for kind, n in Counter(d.kind for d in dead).items():
            m.dead_letters.labels(kind).inc(n)

    def _decode(self, records: Records) -> tuple[list[Event], list[DeadLetter]]:
        events: list[Event] = []
        dead: list[DeadLetter] = []
        max_bytes = self.settings.max_message_bytes
        keep_unknown = self.settings.unknown_events == "keep"
        for rs in records.values():
            for record in rs:
                try:
                    envelope = resolve(decode(record.value, max_bytes=max_bytes), record.topic)
                except DecodeError as exc:
                    dead.append(deadletters.from_exception(record, exc.kind, exc))
                    continue
                if not keep_unknown and envelope.known_type is None:
                    unknown = DecodeError("schema", f"unknown event type {envelope.event_type!r}")
                    dead.append(
                        deadletters.from_exception(
                            record,
                            "unknown_type",
                            unknown,
                            event_id=envelope.event_id,
                            event_type=envelope.event_type,
                        )
                    )
                    continue
                events.append(Event(envelope, record.topic, record.partition, record.offset))
        return events, dead

    def _update_lag(self) -> None:
        for tp in self._assigned:
            highwater = self._kafka.highwater(tp)
            done = self._expected.get(tp, offsets.NO_OFFSET)
            if highwater is not None and done >= 0:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - done))
                self._lag_reported.add(tp)

    async def _commit_to_kafka(self) -> None:
        """Tell Kafka what PostgreSQL committed: for lag tooling only, so best effort."""
        self._update_lag()
        owned = {
            tp: OffsetAndMetadata(offset, "")
            for tp, offset in self._expected.items()
            if offset >= 0 and tp in self._assigned
        }
        if not owned:
            return
        try:
            await asyncio.wait_for(self._kafka.commit(owned), timeout=5)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - PostgreSQL already holds the truth
            log.debug("kafka.commit_skipped", error=str(exc))

    async def _retrying(self, what: str, fn: Any) -> Any:
        """Run ``fn`` until it succeeds, retrying transient errors with backoff and jitter.

        Between attempts the worker pauses its partitions and keeps polling Kafka, so a long
        outage neither loses the records in hand nor gets the member thrown out of the group
        (``max.poll.interval.ms``); the circuit breaker stretches the wait while it is open.
        A fatal error stops the worker; a permanent one propagates to the caller.
        """
        jitter = wait_random_exponential(multiplier=0.2, max=30)

        def _wait(state: RetryCallState) -> float:
            return max(jitter(state), self.breaker.wait_s())

        def _before_sleep(state: RetryCallState) -> None:
            self.stats.retries += 1
            self.metrics.transient_errors.labels(what).inc()
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "transient_error",
                operation=what,
                attempt=state.attempt_number,
                error_class=type(exc).__name__,
                error=str(exc),
                breaker=self.breaker.state.value,
                wait_s=round(state.upcoming_sleep, 2),
            )

        async for attempt in AsyncRetrying(
            retry=retry_if_exception(lambda e: is_transient(e) and not self._stopping.is_set()),
            wait=_wait,
            sleep=self._sleep_polling,
            before_sleep=_before_sleep,
            reraise=True,
        ):
            with attempt:
                try:
                    result = await fn()
                except Exception as exc:
                    if is_fatal(exc):
                        raise FatalError(f"{what}: {exc}") from exc
                    if is_transient(exc):
                        self.breaker.failure()
                    raise
                self.breaker.success()
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _sleep_polling(self, seconds: float) -> None:
        """Wait between attempts while polling Kafka with every partition paused."""
        if self._consumer is None:
            await asyncio.sleep(seconds)
            return
        owned = self._kafka.assignment()
        if owned:
            self._kafka.pause(*owned)
            self._paused_for_retry = True
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            # Paused: returns nothing, but keeps the member alive and rebalances running.
            await self._kafka.getmany(timeout_ms=min(remaining_ms, 500))
            self._last_beat = time.monotonic()

    def _resume_after_retry(self) -> None:
        if not self._paused_for_retry or self._consumer is None:
            return
        self._paused_for_retry = False
        # Partitions still waiting for their seek stay paused until _seek_assigned.
        resumable = self._kafka.assignment() - self._to_seek
        if resumable:
            self._kafka.resume(*resumable)

    # -- drain mode --------------------------------------------------------------------------

    async def _is_caught_up(self) -> bool:
        """Every assigned partition consumed to the end offset seen when it was assigned.

        The target is the larger of ListOffsets' end offset and the first high watermark a
        fetch reported: some Kafka-compatible brokers answer ListOffsets with less than the
        true end, while the high watermark in fetch responses is always exact.
        """
        if not self._joined or self._to_seek:
            return False
        for tp in self._assigned:
            if tp not in self._expected or tp not in self._targets:
                return False
            highwater = self._kafka.highwater(tp)
            if highwater is None:
                return False
            target = max(self._targets[tp], self._first_highwater.setdefault(tp, highwater))
            done = self._expected[tp]
            if done < 0:
                done = await self._kafka.position(tp)
            if done < target:
                return False
        return True

    async def _load_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        async with self._connection() as conn:
            return await offsets.load(conn, self._group, tps)

    def _summary(self) -> dict[str, Any]:
        s = self.stats
        return {
            "batches": s.batches,
            "records": s.records,
            "written": s.written,
            "duplicates": s.duplicates,
            "dead_letters": s.dead_letters,
            "elapsed_s": round(s.elapsed_s, 2),
            "events_per_s": round(s.events_per_s),
        }


def _without_dlq(pattern: str) -> str:
    """The subscription pattern, made unable to match a dead-letter topic."""
    return rf"(?!.*{re.escape(DLQ_SUFFIX)}$)(?:{pattern})"
