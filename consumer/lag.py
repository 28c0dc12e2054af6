"""Consumer lag that stays true: refreshed on a timer, whether or not batches commit.

For every assigned partition whose offset in PostgreSQL this member knows, the lag is the end
of the log minus that offset (``omnisink_consumer_lag{group,topic,partition}``). The end is the
larger of the high watermark of the last fetch response and ListOffsets' answer, asked on each
tick: a paused partition (the database is away) or one blocked behind a slow batch gets no
fetch responses, so its high watermark alone would freeze, and some brokers answer ListOffsets
short of the end. A partition PostgreSQL holds nothing for lags from its log start.

``omnisink_consumer_lag_seconds{group}`` is the age of the oldest record fetched and not yet
committed (by its Kafka timestamp): how far behind in time the tables are while a batch is in
hand; 0 once nothing is waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from consumer.metrics import Metrics
from consumer.partitions import Partitions
from consumer.store.batch import Batch
from consumer.store.offsets import NO_OFFSET


class LagReporter:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        partitions: Partitions,
        metrics: Metrics,
        group: str,
        *,
        in_hand: Callable[[], Batch | None],
        on_lag: Callable[[int], None] = lambda total: None,
    ) -> None:
        self.consumer = consumer
        self.partitions = partitions
        self.metrics = metrics
        self.group = group
        self.in_hand = in_hand
        self.on_lag = on_lag
        self._ends: dict[TopicPartition, int] = {}
        self._starts: dict[TopicPartition, int] = {}

    async def refresh(self) -> None:
        """Ask the brokers for the logs' bounds, then report."""
        owned = sorted(self.partitions.sought())
        if owned:
            self._ends.update(await self.consumer.end_offsets(owned))
            fresh = [tp for tp in owned if tp not in self._starts]
            if fresh:
                self._starts.update(await self.consumer.beginning_offsets(fresh))
        self.report()

    def report(self) -> None:
        """Set every owned partition's lag from what is known now (no I/O)."""
        total = 0
        for tp, expected in self.partitions.expected().items():
            end = max(self._ends.get(tp, 0), self.consumer.highwater(tp) or 0)
            at = self._starts.get(tp, 0) if expected == NO_OFFSET else expected
            lag = max(0, end - at)
            total += lag
            self.partitions.reported(tp)
            self.metrics.lag.labels(self.group, tp.topic, str(tp.partition)).set(lag)
        batch = self.in_hand()
        oldest = (
            min(
                (r.timestamp for rs in batch.records.values() for r in rs if r.timestamp >= 0),
                default=None,
            )
            if batch is not None
            else None
        )
        age = max(0.0, time.time() - oldest / 1000) if oldest is not None else 0.0
        self.metrics.lag_seconds.labels(self.group).set(age)
        self.on_lag(total)

    def forget(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self._ends.pop(tp, None)
            self._starts.pop(tp, None)
            self.metrics.lag.remove(self.group, tp.topic, str(tp.partition))
