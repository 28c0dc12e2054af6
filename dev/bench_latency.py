"""Produce → committed latency of a running sink, at a steady rate.

A daemon (``omnisink run``, dev/bench_daemon.py, the settings' defaults but for the group's
session) consumes fresh topics of a sample stream. Once it has joined (PostgreSQL holds a start
offset for every partition), records are sent at ``rate`` per second for ``duration_s``; the
moment each is handed to the producer is noted, and the send result says where it landed
(topic, partition, offset). Meanwhile ``omnisink.consumer_offsets`` is read every
``POLL_EVERY_S``: a record is committed once its partition's ``next_offset`` is past its offset,
and its latency is the first poll that saw it so minus the moment it was sent. The producer
does not linger (``linger_ms=0``), so its own batching adds little; the poll adds up to its
interval.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import RecordMetadata

from dev import sample
from dev.bench_daemon import Daemon
from dev.bench_queries import percentile

POLL_EVERY_S = 0.01
PARTITIONS = 3
JOIN_TIMEOUT_S = 90.0
# After the last send, how long the sink has to commit everything.
SETTLE_TIMEOUT_S = 60.0

TP = tuple[str, int]


@dataclass
class Latency:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    sent: int
    committed: int
    send_rate: float  # the rate achieved, records per second
    # The p50 of the first and of the last tenth of the records sent: a sink that keeps up
    # has the same latency at the end as at the start; one that does not falls behind.
    first_tenth_p50_ms: float
    last_tenth_p50_ms: float

    @property
    def figures(self) -> dict[str, float]:
        return {"p50": self.p50_ms, "p95": self.p95_ms, "p99": self.p99_ms}


class _Poller:
    """Where the group's offsets stood, each time one moved: (seen at, next_offset) per
    partition, in time order."""

    def __init__(self, conn: asyncpg.Connection, group: str) -> None:
        self.conn = conn
        self.group = group
        self.history: dict[TP, list[tuple[float, int]]] = {}
        # Set once every partition's next offset is past its end here (the last offsets sent).
        self.ends: dict[TP, int] | None = None
        self.settled = asyncio.Event()

    async def poll(self) -> None:
        rows = await self.conn.fetch(
            "SELECT topic, kafka_partition, next_offset FROM omnisink.consumer_offsets"
            " WHERE consumer_group = $1",
            self.group,
        )
        seen = time.monotonic()
        for row in rows:
            moves = self.history.setdefault((row["topic"], row["kafka_partition"]), [])
            if not moves or moves[-1][1] != row["next_offset"]:
                moves.append((seen, row["next_offset"]))
        if self.ends is not None and self.past(self.ends):
            self.settled.set()

    async def run(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(POLL_EVERY_S)

    def committed_at(self, tp: TP, offset: int) -> float | None:
        """The first time the partition's next offset was seen past ``offset``."""
        moves = self.history.get(tp, [])
        offsets = [next_offset for _, next_offset in moves]
        at = bisect.bisect_right(offsets, offset)  # next offsets only grow
        return moves[at][0] if at < len(moves) else None

    def past(self, ends: dict[TP, int]) -> bool:
        """Whether every partition's next offset is past its ``ends`` offset."""
        return all(
            (moves := self.history.get(tp)) and moves[-1][1] > end for tp, end in ends.items()
        )


async def _create_topics(servers: str, topics: Sequence[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    finally:
        await admin.close()


async def measure(
    db_url: str,
    servers: str,
    *,
    duration_s: float,
    rate: float,
    settings: dict[str, str] | None = None,
) -> Latency:
    """Latency percentiles of ``rate`` records/s for ``duration_s`` into a running daemon
    (``settings``: more OMNISINK_* variables for it, e.g. OMNISINK_BATCH_MAX_WAIT_MS)."""
    wanted = max(1, int(duration_s * rate))
    stream = sample.generate(wanted, env=f"lat{uuid.uuid4().hex[:6]}")
    records = stream.records[:wanted]
    topics = sorted({r.topic for r in records})
    await _create_topics(servers, topics)
    group = f"latency-{uuid.uuid4().hex[:6]}"
    daemon = Daemon(db_url, servers, group, topics, until_caught_up=False, settings=settings)
    conn = await asyncpg.connect(db_url)
    poller = _Poller(conn, group)
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=0)
    polling: asyncio.Task[None] | None = None
    daemon.start()
    try:
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while len(poller.history) < len(topics) * PARTITIONS:  # every start offset stored
            if time.monotonic() > deadline:
                raise TimeoutError(f"the latency daemon did not join in {JOIN_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.1)
            await poller.poll()
        await producer.start()
        polling = asyncio.create_task(poller.run(), name="bench-latency-poller")
        sent_at, futures = await _send_paced(producer, records, rate)
        landed = [await f for f in futures]
        send_rate = len(records) / max(sent_at[-1] - sent_at[0], 1e-6)
        ends: dict[TP, int] = {}
        for meta in landed:
            tp = (meta.topic, meta.partition)
            ends[tp] = max(ends.get(tp, -1), meta.offset)
        poller.ends = ends
        with contextlib.suppress(TimeoutError):  # what was not committed by then is counted
            await asyncio.wait_for(poller.settled.wait(), SETTLE_TIMEOUT_S)
    finally:
        if polling is not None:
            polling.cancel()
            await asyncio.wait([polling])
        await producer.stop()
        await conn.close()
        daemon.stop()
        await daemon.wait()
    by_send: list[float | None] = []  # in the order sent; None: never seen committed
    for meta, sent in zip(landed, sent_at, strict=True):
        at = poller.committed_at((meta.topic, meta.partition), meta.offset)
        by_send.append(None if at is None else (at - sent) * 1000)
    latencies = [ms for ms in by_send if ms is not None]
    if not latencies:
        raise RuntimeError("no record produced for the latency measurement was committed")
    tenth = max(1, len(by_send) // 10)
    first = [ms for ms in by_send[:tenth] if ms is not None] or [0.0]
    last = [ms for ms in by_send[-tenth:] if ms is not None] or [0.0]
    return Latency(
        p50_ms=percentile(latencies, 0.50),
        p95_ms=percentile(latencies, 0.95),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies),
        sent=len(records),
        committed=len(latencies),
        send_rate=send_rate,
        first_tenth_p50_ms=percentile(first, 0.5),
        last_tenth_p50_ms=percentile(last, 0.5),
    )


async def _send_paced(
    producer: AIOKafkaProducer, records: Sequence[sample.Record], rate: float
) -> tuple[list[float], list[asyncio.Future[RecordMetadata]]]:
    """Send ``records`` at ``rate`` per second (a few milliseconds' worth at a time); the moment
    each was handed to the producer, and its send result."""
    sent_at: list[float] = []
    futures: list[asyncio.Future[RecordMetadata]] = []
    started = time.monotonic()
    i = 0
    while i < len(records):
        due = min(len(records), int((time.monotonic() - started) * rate) + 1)
        while i < due:
            record = records[i]
            sent_at.append(time.monotonic())
            futures.append(await producer.send(record.topic, record.value, key=record.key))
            i += 1
        await asyncio.sleep(0.002)
    return sent_at, futures
