"""The partitions this member owns: one state object per partition, and what happens to them.

- **Assignment** (the rebalance listener): new partitions are paused and left *unsought*; the
  loop, not the callback (which must not block on I/O), reads their offsets from PostgreSQL,
  seeks there and resumes them (:meth:`Partitions.seek`).
- **Revocation**: the listener waits for the write in hand (the batch lock), so a rebalance
  in the middle of a batch completes it instead of handing half of it to the next owner;
  then the partitions' states are dropped.
- **The fence**: ``expected`` is the next offset PostgreSQL holds for the partition as this
  member last saw it; the batch's offset write is conditional on it (consumer/store/offsets.py).
  A fenced partition goes back to unsought.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from consumer.errors import FatalError
from consumer.store.offsets import NO_OFFSET

log = structlog.get_logger("omnisink.partitions")


@dataclass
class Partition:
    """What this member knows of one owned partition."""

    # The next offset PostgreSQL holds (NO_OFFSET: no row); None until the loop has sought.
    expected: int | None = None
    # Whether this member exports a lag series for the partition.
    lag_reported: bool = False
    # The stored offset this member last moved away from because it had left the log: not
    # reported again until a batch moves PostgreSQL's offset.
    reset_from: int | None = None


class Partitions:
    """The partition table. Used from the event loop only."""

    def __init__(self) -> None:
        self._owned: dict[TopicPartition, Partition] = {}
        self.joined = False

    def __len__(self) -> int:
        return len(self._owned)

    def __iter__(self) -> Iterator[TopicPartition]:
        return iter(self._owned)

    def assign(self, assigned: set[TopicPartition]) -> list[TopicPartition]:
        """The listener's assignment; returns the partitions that are new to this member."""
        self.joined = True
        fresh = [tp for tp in assigned if tp not in self._owned]
        self._owned = {tp: self._owned.get(tp) or Partition() for tp in assigned}
        return fresh

    def forget(self, revoked: set[TopicPartition]) -> list[TopicPartition]:
        """Drop revoked partitions; returns those whose lag series must be removed."""
        lagged = []
        for tp in revoked:
            state = self._owned.pop(tp, None)
            if state is not None and state.lag_reported:
                lagged.append(tp)
        return lagged

    def unsought(self) -> list[TopicPartition]:
        return sorted(tp for tp, p in self._owned.items() if p.expected is None)

    def sought(self) -> set[TopicPartition]:
        """Owned partitions whose offset is known: the only ones a batch may write."""
        return {tp for tp, p in self._owned.items() if p.expected is not None}

    def expected(self) -> dict[TopicPartition, int]:
        """The fence of the next offset write."""
        return {tp: p.expected for tp, p in self._owned.items() if p.expected is not None}

    def committed(self, next_offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in next_offsets.items():
            if tp in self._owned:
                self._owned[tp].expected = offset

    def fenced(self, tps: list[TopicPartition]) -> None:
        """Another member moved these partitions' offsets: seek them again."""
        for tp in tps:
            if tp in self._owned:
                self._owned[tp].expected = None

    async def seek(
        self,
        kafka: AIOKafkaConsumer,
        load: Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]],
        start: str = "earliest",
        record: Callable[[dict[TopicPartition, int]], Awaitable[set[TopicPartition]]] | None = None,
    ) -> None:
        """Seek every unsought partition to the offset PostgreSQL holds, then resume it.

        Where PostgreSQL holds nothing, the partition starts at Kafka's committed offset (a
        group moving onto this sink), else per OMNISINK_AUTO_OFFSET_RESET, and ``record``
        writes that start to PostgreSQL at once (returning the partitions another member
        wrote first, sought again next turn): PostgreSQL then says where every owned
        partition stands even before its first record, which is what the drain and the lag
        read."""
        tps = self.unsought()
        if not tps:
            return
        stored = await load(tps)
        tps = [tp for tp in tps if tp in self._owned]  # a rebalance may run during the load
        starts: dict[TopicPartition, int] = {}
        for tp in tps:
            if tp in stored:
                kafka.seek(tp, stored[tp])
                self._owned[tp].expected = stored[tp]
                continue
            committed = await kafka.committed(tp)
            if committed is not None:
                kafka.seek(tp, committed)
            elif start == "latest":
                await kafka.seek_to_end(tp)
            else:
                await kafka.seek_to_beginning(tp)
            starts[tp] = await kafka.position(tp)
        if record is None:  # nothing written: the fence expects no row
            lost: set[TopicPartition] = set()
            fence = dict.fromkeys(starts, NO_OFFSET)
        else:
            lost = await record(starts) if starts else set()
            fence = starts
        for tp in starts:
            if tp in self._owned:
                self._owned[tp].expected = None if tp in lost else fence[tp]
        resumed = [tp for tp in tps if tp in self._owned and tp not in lost]
        if resumed:
            kafka.resume(*resumed)

    async def beyond_the_log(self, kafka: AIOKafkaConsumer) -> list[TopicPartition]:
        """Owned partitions whose log now ends before the offset PostgreSQL holds: the broker
        lost records or the topic was recreated. Kafka answers a fetch past the log's end with
        OFFSET_OUT_OF_RANGE (the caller handles that error); a broker that answers with no
        error still reports its high watermark, so a partition counts when both the fetch
        responses' high watermark and ListOffsets' end are below the offset held."""
        suspects = [
            tp
            for tp, p in self._owned.items()
            if p.expected is not None
            and p.expected != p.reset_from
            and (highwater := kafka.highwater(tp)) is not None
            and highwater < p.expected
        ]
        if not suspects:
            return []
        ends = await kafka.end_offsets(suspects)
        return [tp for tp in suspects if ends.get(tp, 0) < (self._owned[tp].expected or 0)]

    async def reset(
        self,
        kafka: AIOKafkaConsumer,
        tps: list[TopicPartition],
        policy: str,
        counted: Callable[[TopicPartition], None] = lambda tp: None,
    ) -> list[dict[str, object]]:
        """Move partitions whose offset has left the log per ``policy``: ``earliest`` to the
        log's start, ``latest`` to its end, ``fail`` nowhere; each logged and ``counted``.
        Returns the facts logged. The fence is unchanged: the next batch moves PostgreSQL's
        offset from what it holds to where the log now is."""
        tps = [tp for tp in tps if tp in self._owned]
        if not tps:
            return []
        starts = await kafka.beginning_offsets(tps)
        ends = await kafka.end_offsets(tps)
        facts = []
        for tp in tps:
            end = max(ends.get(tp, 0), kafka.highwater(tp) or 0)
            facts.append(
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "stored_offset": self._owned[tp].expected,
                    "log_start": starts.get(tp),
                    "log_end": end,
                }
            )
            log.error("offset_out_of_range", policy=policy, **facts[-1])
            counted(tp)
            if policy == "fail":
                raise FatalError(
                    f"the offset PostgreSQL holds for {tp.topic}[{tp.partition}] "
                    f"({self._owned[tp].expected}) is outside the log ({starts.get(tp)} to "
                    f"{end}): records were deleted or the topic recreated. "
                    "OMNISINK_OFFSET_RESET_POLICY=fail stops here; set it to earliest (read "
                    "what the log still has) or latest to go on."
                )
            self._owned[tp].reset_from = self._owned[tp].expected
            if policy == "latest":
                await kafka.seek_to_end(tp)
            elif policy == "earliest":
                kafka.seek(tp, starts.get(tp, 0))
        return facts

    def reported(self, tp: TopicPartition) -> None:
        """This member exports a lag series for ``tp`` (removed when it is revoked)."""
        if tp in self._owned:
            self._owned[tp].lag_reported = True


class Owner(Protocol):
    """What the rebalance listener needs of the worker."""

    batch_lock: asyncio.Lock

    def assign(self, assigned: set[TopicPartition]) -> None: ...

    def forget(self, revoked: set[TopicPartition]) -> None: ...


class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: Owner) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Wait for the batch in hand: it commits while we still own its partitions.
        async with self._owner.batch_lock:
            self._owner.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owner.assign(assigned)
