"""``omnisink run --until-caught-up``: a drain that means it.

The drain is done when, for every partition of every topic the subscription matched when the
drain started, the offset PostgreSQL holds for the group is at or past the end offset seen at
that moment, whoever consumed it: partitions another member holds, live or dead (a killed
member stays in the group until its session times out, and keeps its partitions meanwhile),
are waited for, not declared done because this member has caught up on its own share.

The end offsets are taken from the brokers' fetch responses (their high watermark), not from
ListOffsets alone: some Kafka-compatible brokers answer ListOffsets short of the true end
(docs/testing.md). A probe consumer outside the group reads one fetch response per partition.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumer.kafka import kafka_options
from consumer.settings import Settings

log = structlog.get_logger("omnisink.drain")

# How often PostgreSQL is asked where the group stands, while draining.
CHECK_EVERY_S = 0.5
# How long the probe waits for a fetch response of every partition before it settles for
# ListOffsets' answer.
PROBE_TIMEOUT_S = 30.0

Offsets = dict[TopicPartition, int]


async def end_offsets(settings: Settings, tps: list[TopicPartition]) -> tuple[Offsets, Offsets]:
    """(log start, log end) of each partition, the end as the brokers' high watermark."""
    probe = AIOKafkaConsumer(
        **kafka_options(settings),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await probe.start()
    try:
        probe.assign(tps)
        starts = await probe.beginning_offsets(tps)
        listed = await probe.end_offsets(tps)
        for tp in tps:
            probe.seek(tp, listed.get(tp, 0))
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while any(probe.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
            await probe.getmany(timeout_ms=200)
        # No fallback to ListOffsets alone: it can answer short of the end. A partition whose
        # high watermark was not seen is left out, and probed again at the next check.
        unseen = [tp for tp in tps if probe.highwater(tp) is None]
        if unseen:
            log.warning("drain.no_high_watermark", partitions=[str(tp) for tp in unseen])
        ends = {
            tp: max(listed.get(tp, 0), highwater)
            for tp in tps
            if (highwater := probe.highwater(tp)) is not None
        }
        return starts, ends
    finally:
        await probe.stop()


class Drain:
    """Where the group must be for the drain to be done, and whether it is there."""

    def __init__(self, settings: Settings, timeout_s: float | None = None) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.started_at = time.monotonic()
        self.starts: Offsets = {}
        self.targets: Offsets | None = None
        self.stored: Offsets = {}
        self.planned: list[TopicPartition] = []
        self._checked_at = 0.0

    @property
    def expired(self) -> bool:
        return self.timeout_s is not None and time.monotonic() - self.started_at > self.timeout_s

    async def plan(self, consumer: AIOKafkaConsumer) -> None:
        """The partitions the subscription matched, and their ends now."""
        tps = sorted(
            TopicPartition(topic, partition)
            for topic in consumer.subscription()
            for partition in consumer.partitions_for_topic(topic) or ()
        )
        self.planned = tps
        self.starts, self.targets = await end_offsets(self.settings, tps)
        log.info(
            "drain.planned",
            topics=len(consumer.subscription()),
            partitions=len(tps),
            records=sum(max(0, self.targets[tp] - self.starts.get(tp, 0)) for tp in tps),
        )

    async def done(
        self,
        consumer: AIOKafkaConsumer,
        joined: bool,
        load: Callable[[list[TopicPartition]], Awaitable[Offsets]],
    ) -> bool:
        """Whether PostgreSQL holds every target (asked at most every CHECK_EVERY_S)."""
        if not joined:
            if self.expired:
                log.error("worker.drain_timeout", timeout_s=self.timeout_s, behind="no assignment")
            return False  # the subscription is resolved once the group has assigned
        if self.targets is None:
            await self.plan(consumer)
        elif unseen := [tp for tp in self.planned if tp not in self.targets]:
            starts, ends = await end_offsets(self.settings, unseen)
            self.starts.update(starts)
            self.targets.update(ends)
        if self.targets is None or len(self.targets) < len(self.planned):
            return False  # some partition's end is not known yet
        if time.monotonic() - self._checked_at < CHECK_EVERY_S:
            return False
        self._checked_at = time.monotonic()
        self.stored = await load(list(self.targets or {}))
        if not self.behind():
            return True
        if self.expired:
            behind = self.behind()
            log.error(
                "worker.drain_timeout",
                timeout_s=self.timeout_s,
                behind={str(tp): n for tp, n in behind},
            )
        return False

    def behind(self) -> list[tuple[TopicPartition, int]]:
        """(partition, records still to write) for each partition short of its target; a
        partition PostgreSQL holds nothing for counts from its log start."""
        out = []
        for tp, target in (self.targets or {}).items():
            at = self.stored.get(tp, self.starts.get(tp, 0))
            if at < target:
                out.append((tp, target - at))
        return out
