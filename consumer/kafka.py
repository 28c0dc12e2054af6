"""The Kafka clients of the sink: the options every part uses (the daemon, dead letters,
redrive), the daemon's group member and its dead-letter producer."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.structs import OffsetAndMetadata

from consumer.errors import FatalError, classify
from consumer.retry import Deadline, Retrier
from consumer.settings import Settings
from handlers.contract import DLQ_SUFFIX

log = structlog.get_logger("omnisink.kafka")

# Kafka protocol error codes of CreateTopics.
_TOPIC_ALREADY_EXISTS = 36
_TOPIC_AUTHORIZATION_FAILED = 29
_CLUSTER_AUTHORIZATION_FAILED = 31

Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


def kafka_options(settings: Settings) -> dict[str, Any]:
    k = settings.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": k.bootstrap_servers,
        "client_id": k.client_id,
        "security_protocol": k.security_protocol,
        "request_timeout_ms": k.request_timeout_ms,
    }
    if k.security_protocol in {"SSL", "SASL_SSL"}:
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context()
    if k.sasl_mechanism is not None:
        options["sasl_mechanism"] = k.sasl_mechanism
        options["sasl_plain_username"] = k.sasl_username
        options["sasl_plain_password"] = (
            k.sasl_password.get_secret_value() if k.sasl_password else None
        )
    return options


def group_consumer(settings: Settings) -> AIOKafkaConsumer:
    """The daemon's group member. Offsets live in PostgreSQL: no auto-commit, ever."""
    s = settings
    return AIOKafkaConsumer(
        **kafka_options(s),
        group_id=s.group_id,
        group_instance_id=s.group_instance_id,
        enable_auto_commit=False,
        # Never reset silently: where a partition starts, and what happens when its offset has
        # left the log, is decided by consumer/partitions.py (OMNISINK_AUTO_OFFSET_RESET,
        # OMNISINK_OFFSET_RESET_POLICY), and logged.
        auto_offset_reset="none",
        isolation_level="read_committed",
        session_timeout_ms=s.kafka.session_timeout_ms,
        heartbeat_interval_ms=s.kafka.heartbeat_interval_ms,
        max_poll_interval_ms=s.kafka.max_poll_interval_ms,
        metadata_max_age_ms=s.kafka.metadata_max_age_ms,
        max_partition_fetch_bytes=max(1024 * 1024, s.max_message_bytes + 64 * 1024),
    )


def group_clients(settings: Settings, listener: Any) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """The daemon's group member, subscribed, and its dead-letter producer (not started)."""
    consumer = group_consumer(settings)
    subscribe(consumer, settings, listener)
    return consumer, dead_letter_producer(settings)


async def start(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, settings: Settings) -> None:
    """Start both; brokers that cannot be reached are a FatalError naming the setting."""
    try:
        await producer.start()
        await consumer.start()
    except Exception as exc:
        if classify(exc) == "transient":
            raise FatalError(
                f"cannot reach the Kafka brokers at {settings.kafka.bootstrap_servers}: {exc}. "
                "Check OMNISINK_KAFKA_BOOTSTRAP_SERVERS."
            ) from exc
        raise


async def start_group_clients(
    settings: Settings,
    listener: Any,
    retrier: Retrier,
    created: Callable[[AIOKafkaConsumer | None, AIOKafkaProducer | None], None],
) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """:func:`group_clients`, started. Brokers that cannot be reached are retried, each
    attempt with new clients, within the start-up's budget (``OMNISINK_STARTUP_TIMEOUT_S``):
    a broker restarting while the sink starts is waited out, one still unreachable past it is
    the FatalError of :func:`start`. Each attempt's clients are ``created`` before they start:
    the group may assign partitions (the listener runs) before the start returns; a failed
    attempt's are stopped and taken back (``created(None, None)``) before the wait."""

    async def attempt() -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
        consumer, producer = group_clients(settings, listener)
        created(consumer, producer)
        try:
            await start(consumer, producer, settings)
        except BaseException:
            created(None, None)
            await stop_clients(consumer, producer)
            raise
        return consumer, producer

    deadline = Deadline.after(settings.startup_timeout_s, lambda exc: settings.scrub(str(exc)))
    return await retrier.run("kafka_start", attempt, deadline=deadline)


def dead_letter_producer(settings: Settings) -> AIOKafkaProducer:
    """acks=all: a dead letter is durable before its offset moves. Not idempotent: not every
    Kafka-compatible broker grants producer ids, and the dead-letter topic is at-least-once
    anyway (consumer/deadletters.py); the table is the exact record."""
    return AIOKafkaProducer(
        **kafka_options(settings), acks="all", max_request_size=settings.dlq_max_request_bytes
    )


def subscribe(consumer: AIOKafkaConsumer, settings: Settings, listener: Any) -> None:
    """The explicit topic list, else the pattern, made unable to match a dead-letter topic."""
    if settings.topics:
        consumer.subscribe(topics=settings.topics, listener=listener)
    else:
        consumer.subscribe(pattern=without_dlq(settings.topic_pattern), listener=listener)


def without_dlq(pattern: str) -> str:
    """The subscription pattern, made unable to match a dead-letter topic."""
    return rf"(?!.*{re.escape(DLQ_SUFFIX)}$)(?:{pattern})"


async def fetch_batch(
    consumer: AIOKafkaConsumer,
    settings: Settings,
    *,
    stopping: Callable[[], bool],
    seek_pending: Callable[[], bool],
    out_of_range: set[TopicPartition],
    unpositioned: set[TopicPartition],
    lock: asyncio.Lock,
    writer_idle: Callable[[], bool] = lambda: False,
) -> Records:
    """Records until the batch is full (records or bytes) or the wait is over, or, once there
    are records, as soon as ``writer_idle`` says nothing is being written: waiting longer to
    fill the batch would only add latency (while a batch is written, the next one fills, so
    under load batches stay full). Nothing once stopping, and no more waiting while
    partitions wait for their seek. Partitions the broker
    says are fetched past their log (OFFSET_OUT_OF_RANGE) are added to ``out_of_range``, and
    the records already fetched are returned (their positions have moved on). Partitions the
    client found without a position before the sink sought them (it never resets one by itself)
    are added to ``unpositioned``. ``lock`` is held around each poll: the wait of a batch
    being retried meanwhile polls the same consumer (:class:`PausedWait`)."""
    s = settings
    loop = asyncio.get_running_loop()
    deadline = loop.time() + s.batch_max_wait_ms / 1000
    out: Records = {}
    count = size = 0
    while not stopping():
        remaining_ms = max(0, int((deadline - loop.time()) * 1000))
        try:
            async with lock:
                got = await consumer.getmany(
                    timeout_ms=remaining_ms, max_records=s.batch_max_records - count
                )
        except OffsetOutOfRangeError as exc:
            out_of_range.update(exc.args[0] if exc.args and isinstance(exc.args[0], dict) else ())
            break
        except NoOffsetForPartitionError as exc:
            unpositioned.update(a for a in exc.args if isinstance(a, TopicPartition))
            break
        for tp, records in got.items():
            out.setdefault(tp, []).extend(records)
            count += len(records)
            size += sum(len(r.value or b"") + len(r.key or b"") for r in records)
        if count >= s.batch_max_records or size >= s.batch_max_bytes:
            break
        if remaining_ms == 0 or seek_pending() or (count and writer_idle()):
            break
    return out


async def commit_best_effort(
    consumer: AIOKafkaConsumer, offsets: Mapping[TopicPartition, int]
) -> None:
    """Tell Kafka what PostgreSQL committed: for lag tooling only, so best effort (the sink
    reads Kafka's committed offset back only where PostgreSQL holds none)."""
    owned = {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items() if offset >= 0}
    if not owned:
        return
    try:
        await asyncio.wait_for(consumer.commit(owned), timeout=5)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - PostgreSQL already holds the truth
        log.debug("kafka.commit_skipped", error=str(exc))


async def ensure_dead_letter_topics(settings: Settings, wanted: list[tuple[str, str]]) -> None:
    """Create each missing ``<topic>.dlq`` with its source topic's partition count, where the
    broker does not create topics on first write. The topic list is read whole (a metadata
    request naming a missing topic would make such a broker create it with its defaults).
    A broker that refuses the sink the right to create topics is a FatalError naming what to
    create; anything else propagates (the batch is retried)."""
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [(dlq, source) for dlq, source in wanted if dlq not in existing]
        if not missing:
            return
        brokers = len((await admin.describe_cluster()).get("brokers", [])) or 1
        sources = {
            t["topic"]: len(t["partitions"])
            for t in await admin.describe_topics(sorted({source for _, source in missing}))
        }
        new = [
            NewTopic(dlq, max(1, sources.get(source, 1)), min(3, brokers))
            for dlq, source in missing
        ]
        response = await admin.create_topics(new)
    finally:
        await admin.close()
    for topic, code, *_ in response.topic_errors:  # (name, error_code, [message])
        if code == 0:
            log.info("dead_letter_topic.created", topic=topic)
        if code in (0, _TOPIC_ALREADY_EXISTS):
            continue
        if code in (_TOPIC_AUTHORIZATION_FAILED, _CLUSTER_AUTHORIZATION_FAILED):
            raise FatalError(
                f"the sink may not create the dead-letter topic {topic}: create it (with the "
                "partition count of its source topic) or allow this principal to create "
                "topics. The sink stops here rather than move past a record it cannot keep."
            )
        raise KafkaError(f"creating the dead-letter topic {topic} failed: error code {code}")


def pause_all(consumer: AIOKafkaConsumer) -> bool:
    """Pause every assigned partition; whether there was any."""
    owned = consumer.assignment()
    if owned:
        consumer.pause(*owned)
    return bool(owned)


def resume_except(consumer: AIOKafkaConsumer, held: Iterable[TopicPartition]) -> None:
    resumable = consumer.assignment() - set(held)
    if resumable:
        consumer.resume(*resumable)


async def poll_paused(
    consumer: AIOKafkaConsumer,
    seconds: float,
    *,
    stopping: Callable[[], bool],
    beat: Callable[[], None],
    lock: asyncio.Lock,
) -> None:
    """Poll for ``seconds`` with the partitions paused: returns nothing, but keeps the member
    inside ``max.poll.interval.ms`` and lets rebalances run.

    A partition assigned while the fault lasts has no position yet (its offset is in
    PostgreSQL, which may be the thing that is away), and the client says so on every poll;
    that is expected here and waited out. The same goes for a partition found past its log:
    both are raised again by the first fetch after the wait, where the sink handles them."""
    deadline = time.monotonic() + seconds
    while not stopping():
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            break
        try:
            async with lock:
                # Paused again before every poll: another call's retry may have resumed them
                # meanwhile, and a record returned here would be dropped.
                pause_all(consumer)
                got = await consumer.getmany(timeout_ms=min(remaining_ms, 500))
            for tp, records in got.items():
                # Resumed during the poll after all: read them again later, never drop them.
                if records:
                    consumer.seek(tp, records[0].offset)
                    log.warning("poll_paused.records_put_back", partition=str(tp))
        except (NoOffsetForPartitionError, OffsetOutOfRangeError):
            # Returned at once: wait out the poll's share of the time instead of spinning.
            await asyncio.sleep(min(remaining_ms, 500) / 1000)
        beat()


class PausedWait:
    """The wait between attempts of a retried call (consumer/retry.py) for a group member:
    every partition paused and the consumer polled (:func:`poll_paused`), so a long outage
    neither loses the records in hand nor gets the member thrown out of the group; then
    :meth:`resume` resumes what was paused for it, except the partitions still to be sought."""

    def __init__(
        self,
        consumer: Callable[[], AIOKafkaConsumer | None],
        *,
        stopping: asyncio.Event,
        beat: Callable[[], None],
        unsought: Callable[[], Iterable[TopicPartition]],
        lock: asyncio.Lock,
    ) -> None:
        self._consumer = consumer
        self._lock = lock
        self._stopping = stopping
        self._beat = beat
        self._unsought = unsought
        self._paused = False
        # Calls waiting now: the batch being written and the loop's own (a drain check, a
        # seek) can be retried at once; the partitions stay paused until none waits.
        self._waiting = 0

    async def __call__(self, seconds: float) -> None:
        consumer = self._consumer()
        if consumer is None:  # starting: nothing to poll yet
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)
            return
        self._paused |= pause_all(consumer)
        self._waiting += 1
        try:
            await poll_paused(
                consumer, seconds, stopping=self._stopping.is_set, beat=self._beat, lock=self._lock
            )
        finally:
            self._waiting -= 1

    def resume(self) -> None:
        """A retried call is over: resume what the waits paused, unless another call is
        waiting (its own end resumes them)."""
        consumer = self._consumer()
        if self._paused and self._waiting == 0 and consumer is not None:
            self._paused = False
            resume_except(consumer, self._unsought())


async def stop_clients(*clients: AIOKafkaConsumer | AIOKafkaProducer | None) -> None:
    """Stop each client that exists, whatever the others do (a consumer leaves its group)."""
    for client in clients:
        if client is not None:
            with contextlib.suppress(Exception):
                await client.stop()
