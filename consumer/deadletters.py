"""Dead letters: a record the sink can never write, kept on ``<topic>.dlq`` and in PostgreSQL.

Contract section 5. The record's key, value and headers go to the dead-letter topic
unchanged, plus the headers Kafka Connect sinks write (so existing tools show them) and the
sink's own (names: handlers/contract.py). The same facts go to ``omnisink.dead_letters``
(consumer/store/dead_letters.py), in the transaction that moves the offset past the record,
and only after the broker acknowledged the dead-letter record: the offset never moves past a
record whose dead letter is not durable in both places.

A crash between the broker's acknowledgement and the database commit re-publishes the record
when the batch is consumed again, so the topic is at-least-once; the table is exactly-once
(unique on the source position), and it records where the published copy landed.
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError

from consumer.errors import TransientError
from handlers import contract
from handlers.contract import DLQ_SUFFIX, DeadLetterKind


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record that can never be written, and why."""

    record: ConsumerRecord[bytes, bytes]
    kind: DeadLetterKind
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

    def headers(self, group: str) -> list[tuple[str, bytes | None]]:
        """The original headers, then Kafka Connect's error headers and the sink's own."""
        failed_at = (self.failed_at or datetime.now(UTC)).isoformat()
        added = {
            contract.CONNECT_TOPIC_HEADER: self.record.topic,
            contract.CONNECT_PARTITION_HEADER: str(self.record.partition),
            contract.CONNECT_OFFSET_HEADER: str(self.record.offset),
            contract.CONNECT_CLASS_HEADER: self.error_class,
            contract.CONNECT_MESSAGE_HEADER: self.message,
            contract.CONNECT_STACKTRACE_HEADER: self.stacktrace or "",
            contract.KIND_HEADER: self.kind,
            contract.ATTEMPTS_HEADER: str(self.attempts),
            contract.GROUP_HEADER: group,
            contract.FAILED_AT_HEADER: failed_at,
        }
        original = [(k, v) for k, v in (self.record.headers or ()) if k not in added]
        return original + [(k, v.encode()) for k, v in added.items()]


def from_exception(
    record: ConsumerRecord[bytes, bytes],
    kind: DeadLetterKind,
    exc: BaseException,
    *,
    event_id: UUID | None = None,
    event_type: str | None = None,
) -> DeadLetter:
    """A dead letter whose reason is ``exc`` (its class, message and stack). Never raises, even
    for an exception that cannot be printed: building a dead letter must not fail."""
    cls = type(exc)
    return DeadLetter(
        record=record,
        kind=kind,
        error_class=f"{cls.__module__}.{cls.__qualname__}",
        message=_text(lambda: str(exc), cls),
        stacktrace=_text(lambda: "".join(traceback.format_exception(exc)), cls)
        if exc.__traceback__
        else None,
        event_id=event_id,
        event_type=event_type,
        failed_at=datetime.now(UTC),
    )


def _text(render: Callable[[], str], cls: type[BaseException]) -> str:
    try:
        return render()
    except Exception as exc:  # noqa: BLE001 - a broken __str__ is no reason to stop
        return f"<{cls.__qualname__} that cannot be printed: {type(exc).__qualname__}>"


class DeadLetterUnavailable(TransientError):  # noqa: N818 - names the condition, like aiokafka's
    """The dead-letter topic did not take a record. The batch must not commit (its offsets
    would move past a record whose dead letter is not durable); the worker retries it like any
    transient fault, for as long as it lasts, and says so loudly."""


class Publisher:
    """Publishes dead letters and remembers where each landed, so a retried batch (same
    process) reuses the published copy instead of publishing it again."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        group: str,
        topics: Callable[[list[tuple[str, str]]], Awaitable[None]] | None = None,
    ) -> None:
        self._producer = producer
        self._group = group
        # Makes sure dead-letter topics exist (consumer/kafka.py:ensure_dead_letter_topics):
        # (dlq topic, source topic) pairs, asked once per topic per process.
        self._topics = topics
        self._ready: set[str] = set()
        self.landed: dict[tuple[str, int, int], tuple[str, int, int]] = {}

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Send every letter not yet sent and wait for the broker's acknowledgements."""
        pending = [d for d in letters if d.source not in self.landed]
        missing = sorted(
            {(d.dlq_topic, d.record.topic) for d in pending if d.dlq_topic not in self._ready}
        )
        if missing and self._topics is not None:
            try:
                await self._topics(missing)
            except KafkaError as exc:
                raise DeadLetterUnavailable(
                    f"cannot make sure the dead-letter topics {[m[0] for m in missing]} exist: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        self._ready.update(dlq for dlq, _ in missing)
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
