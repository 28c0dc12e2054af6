"""Outages while a stream with poison in it is consumed: the database, then the broker, cut
away three times for several seconds through a TCP proxy.

Afterwards the tables equal a clean run's, the dead-letter table and topics hold exactly the
poison records, each once, and event_logs has no duplicate."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from consumer.worker import Worker
from dev import sample
from dev.services import (
    KAFKA_SERVERS_ENV,
    Service,
    free_port,
    running,
    start_embedded_broker,
)
from tests.support import (
    Proxy,
    postgres_target,
    produce,
    sink_settings,
    table_snapshot,
)

pytestmark = pytest.mark.timeout(900)

EVENTS = 100_000
POISON_SHARE = 0.01
CUTS = 3
CUT_S = 4.0


@dataclass
class Stream:
    records: list[sample.Record]
    poison: set[tuple[str, int, int]]  # where each poison record landed
    distinct_events: int

    @property
    def topics(self) -> list[str]:
        return sorted({r.topic for r in self.records})


def _poison_value(rng: random.Random) -> bytes:
    kind = rng.choice(["decode", "schema", "transition"])
    if kind == "decode":
        return b"\xff\xfe not json"
    if kind == "schema":
        return orjson.dumps({"event_type": "WORKFLOW_STARTED", "payload": {"x": 1}})
    return orjson.dumps(
        {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "event_type": "FSM_STATE_TRANSITION",
            "event_timestamp": "2026-01-01T00:00:00Z",
            "payload": {
                "fsm_type": "QUALITY_ASSESSMENT",
                "entity_id": "poison",
                "from_state": "RAW",
                "to_state": "STORED",
                "action": "STORE_RESULTS",
            },
        }
    )


async def _produce_with_poison(servers: str, seed: int) -> Stream:
    # Not `seed` itself: the sample stream's generator is seeded with it, and two generators on
    # one seed draw the same event ids at the same positions of their streams.
    rng = random.Random(f"poison-{seed}")  # noqa: S311 - test data
    base = sample.generate(EVENTS, env=f"f{uuid.uuid4().hex[:8]}", seed=seed)
    records = list(base.records)
    poison_indexes = set(rng.sample(range(len(records)), int(len(records) * POISON_SHARE)))
    mixed: list[sample.Record] = []
    for i, record in enumerate(records):
        mixed.append(record)
        if i in poison_indexes:
            mixed.append(
                sample.Record(record.topic, b"poison", _poison_value(rng), uuid.uuid4(), "POISON")
            )
    landed = await produce(servers, mixed)
    poison = {where for r, where in zip(mixed, landed, strict=True) if r.event_type == "POISON"}
    return Stream(mixed, poison, base.distinct_events)


async def _run(db_url: str, servers: str, topics: list[str], group: str) -> Worker:
    worker = Worker(
        sink_settings(
            db_url,
            servers,
            group,
            topics=topics,
            breaker_recovery_s=1.0,
            batch_max_wait_ms=100,
        ),
        until_caught_up=True,
        install_signal_handlers=False,
    )
    await asyncio.wait_for(worker.run(), 600)
    return worker


async def _cut_repeatedly(proxy: Proxy, db_url: str, total: int) -> None:
    """Cut at about 20%, 45% and 70% of the stream, CUT_S seconds each."""
    conn = await asyncpg.connect(db_url)
    try:
        for share in (0.2, 0.45, 0.7)[:CUTS]:
            # Polls the database itself (not through the proxy): no event to wait on.
            while await conn.fetchval("SELECT count(*) FROM event_logs") < total * share:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            proxy.cut()
            await asyncio.sleep(CUT_S)
            proxy.restore()
    finally:
        await conn.close()


async def _dlq_positions(servers: str, topics: list[str]) -> list[tuple[str, int, int]]:
    consumer = AIOKafkaConsumer(
        *[f"{t}.dlq" for t in topics],
        bootstrap_servers=servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    out: list[tuple[str, int, int]] = []
    try:
        idle = 0
        while idle < 3:
            got = await consumer.getmany(timeout_ms=1000)
            idle = 0 if got else idle + 1
            for records in got.values():
                for r in records:
                    headers = dict(r.headers)
                    out.append(
                        (
                            headers["__connect.errors.topic"].decode(),
                            int(headers["__connect.errors.partition"]),
                            int(headers["__connect.errors.offset"]),
                        )
                    )
    finally:
        await consumer.stop()
    return out


async def _assert_outcome(
    reference_url: str, tested_url: str, servers: str, stream: Stream
) -> None:
    ref = await asyncpg.connect(reference_url)
    tested = await asyncpg.connect(tested_url)
    try:
        expected = await table_snapshot(ref)
        got = await table_snapshot(tested)
        dead = await tested.fetch(
            "SELECT topic, kafka_partition, kafka_offset FROM omnisink.dead_letters"
        )
        ids = {r["id"] for r in await tested.fetch("SELECT id FROM event_logs")}
        ref_ids = {r["id"] for r in await ref.fetch("SELECT id FROM event_logs")}
    finally:
        await ref.close()
        await tested.close()
    produced = {r.event_id for r in stream.records if r.event_type != "POISON"}
    missing = produced - ids
    assert not missing, (
        f"{len(missing)} events lost (in the clean run: {len(missing & ref_ids)}): "
        + str([(r.topic, r.event_type) for r in stream.records if r.event_id in missing][:5])
    )
    assert len(got["event_logs"]) == stream.distinct_events
    for table in expected:
        assert got[table] == expected[table], f"{table} differs from the clean run"
    positions = [(d["topic"], d["kafka_partition"], d["kafka_offset"]) for d in dead]
    assert len(positions) == len(set(positions)) == len(stream.poison)
    assert set(positions) == stream.poison
    on_topics = await _dlq_positions(servers, stream.topics)
    # Each poison record once on the dead-letter topics (the clean run's group wrote its own
    # copies too: count this run's by group header is not needed, each run saw each once).
    assert sorted(set(on_topics)) == sorted(stream.poison)
    assert len(on_topics) == 2 * len(stream.poison), "each run dead-letters each poison once"


async def test_database_cut_three_times(kafka_server: Service, database_pair: list[str]) -> None:
    reference_url, tested_url = database_pair
    stream = await _produce_with_poison(kafka_server.url, seed=21)
    await _run(reference_url, kafka_server.url, stream.topics, "fault-ref")

    target, proxied = postgres_target(tested_url)
    proxy = Proxy(target)
    port = await proxy.start()
    try:
        run = asyncio.create_task(
            _run(proxied.format(port=port), kafka_server.url, stream.topics, "fault-db")
        )
        await _cut_repeatedly(proxy, tested_url, stream.distinct_events)
        worker = await run
    finally:
        await proxy.stop()
    assert proxy.cut_count == CUTS + 1  # three cuts and the final stop
    assert worker.stats.retries >= CUTS, "the outages must have been noticed"
    await _assert_outcome(reference_url, tested_url, kafka_server.url, stream)


@pytest.fixture
def proxied_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Proxy]]:
    """A broker of its own whose clients all go through a proxy (it advertises the proxy)."""
    import os

    if os.environ.get(KAFKA_SERVERS_ENV):
        pytest.skip("the broker under test must be embedded to sit behind a proxy")
    broker_port, proxy_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with running(start_embedded_broker(broker_port, log, advertised_port=proxy_port)) as svc:
        yield svc.url, Proxy(("127.0.0.1", broker_port))


async def test_broker_cut_three_times(
    proxied_broker: tuple[str, Proxy], database_pair: list[str]
) -> None:
    servers, proxy = proxied_broker
    await proxy.start(int(servers.rsplit(":", 1)[1]))
    reference_url, tested_url = database_pair
    try:
        stream = await _produce_with_poison(servers, seed=22)
        await _run(reference_url, servers, stream.topics, "fault-ref")
        run = asyncio.create_task(_run(tested_url, servers, stream.topics, "fault-broker"))
        await _cut_repeatedly(proxy, tested_url, stream.distinct_events)
        worker = await run
        await _assert_outcome(reference_url, tested_url, servers, stream)
    finally:
        await proxy.stop()
    assert worker.stats.records >= len(stream.records)
