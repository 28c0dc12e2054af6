"""The worker against the real broker and database: where it starts, what it commits where,
what it does with a record it can never write."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from consumer import __version__
from consumer.errors import FatalError
from consumer.kafka import without_dlq as _without_dlq
from consumer.settings import DEFAULT_TOPIC_PATTERN, KafkaSettings
from consumer.store import offsets
from consumer.worker import Worker
from dev.services import Service
from tests.conftest import TopicFactory
from tests.support import (
    Proxy,
    create_database,
    drop_database,
    postgres_target,
    sink_settings,
    with_database,
)


def _event(n: int, event_type: str = "NODE_HEARTBEAT") -> bytes:
    return orjson.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": event_type,
            "event_timestamp": f"2026-01-01T00:00:{n % 60:02d}Z",
            "payload": {"node_id": f"node-{n}", "node_type": "reducer", "health_status": "healthy"}
            if event_type == "NODE_HEARTBEAT"
            else {"n": n},
        }
    )


async def _send(
    servers: str,
    topic: str,
    values: list[bytes | None],
    partition: int = 0,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(
                topic, value, key=b"k1", partition=partition, headers=headers
            )
    finally:
        await producer.stop()


async def _drain(db_url: str, servers: str, group: str, topics: list[str], **kw: object) -> Worker:
    worker = Worker(
        sink_settings(db_url, servers, group, topics=topics, **kw),
        until_caught_up=True,
        install_signal_handlers=False,
    )
    await asyncio.wait_for(worker.run(), 90)
    return worker


async def _kafka_committed(servers: str, group: str, tps: list[TopicPartition]) -> dict:
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group)
    await consumer.start()
    try:
        return {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


async def test_resumes_from_postgres_offsets_and_falls_back_to_kafkas(
    kafka_server: Service, db_url: str, db: asyncpg.Connection, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("resume", partitions=2)
    group = f"resume-{uuid.uuid4().hex[:6]}"
    values = {p: [_event(p * 100 + i, "CUSTOM_EVENT") for i in range(10)] for p in (0, 1)}
    for p, vs in values.items():
        await _send(kafka_server.url, topic, list(vs), partition=p)
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    # PostgreSQL says partition 0 resumes at 4; Kafka says 8 for partition 0 and 3 for 1.
    await db.execute(
        "INSERT INTO omnisink.consumer_offsets (consumer_group, topic, kafka_partition, "
        "next_offset) VALUES ($1, $2, 0, 4)",
        group,
        topic,
    )
    committer = AIOKafkaConsumer(
        bootstrap_servers=kafka_server.url, group_id=group, enable_auto_commit=False
    )
    await committer.start()
    committer.assign([p0, p1])
    await committer.commit({p0: OffsetAndMetadata(8, ""), p1: OffsetAndMetadata(3, "")})
    await committer.stop()

    await _drain(db_url, kafka_server.url, group, [topic])

    got = {
        (r["p"], r["o"])
        for r in await db.fetch(
            "SELECT (metadata->>'kafka_partition')::int AS p, "
            "(metadata->>'kafka_offset')::int AS o FROM event_logs"
        )
    }
    # PostgreSQL's offset wins over Kafka's; Kafka's counts only where PostgreSQL has none.
    assert got == {(0, o) for o in range(4, 10)} | {(1, o) for o in range(3, 10)}
    stored = await offsets.load(db, group, [p0, p1])
    assert stored == {p0: 10, p1: 10}
    # Kafka is told what PostgreSQL committed, for lag tooling.
    assert await _kafka_committed(kafka_server.url, group, [p0, p1]) == {p0: 10, p1: 10}


async def test_a_group_whose_kafka_offsets_are_at_the_end_is_caught_up_at_once(
    kafka_server: Service, db_url: str, db: asyncpg.Connection, topic_factory: TopicFactory
) -> None:
    # A group moving onto this sink, its Kafka offsets at the end of each log: there is
    # nothing to read, and the drain must say so rather than wait for a record that never
    # comes to put an offset into PostgreSQL.
    topic = await topic_factory("moved", partitions=2)
    group = f"moved-{uuid.uuid4().hex[:6]}"
    for p in (0, 1):
        await _send(kafka_server.url, topic, [_event(i, "CUSTOM_EVENT") for i in range(5)], p)
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    committer = AIOKafkaConsumer(
        bootstrap_servers=kafka_server.url, group_id=group, enable_auto_commit=False
    )
    await committer.start()
    committer.assign([p0, p1])
    await committer.commit({p0: OffsetAndMetadata(5, ""), p1: OffsetAndMetadata(5, "")})
    await committer.stop()

    worker = Worker(
        sink_settings(db_url, kafka_server.url, group, topics=[topic]),
        until_caught_up=True,
        drain_timeout_s=60,
        install_signal_handlers=False,
    )
    await asyncio.wait_for(worker.run(), 90)
    assert worker.caught_up.is_set(), "the drain timed out"
    assert worker.stats.records == 0
    # Where the sink started is in PostgreSQL now, before any record.
    assert await offsets.load(db, group, [p0, p1]) == {p0: 5, p1: 5}


async def test_a_record_it_cannot_write_goes_to_the_dead_letter_topic_and_table(
    kafka_server: Service, db_url: str, db: asyncpg.Connection, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("poison", partitions=1)
    group = f"poison-{uuid.uuid4().hex[:6]}"
    await _send(kafka_server.url, topic, [_event(1)])
    await _send(kafka_server.url, topic, [b"{not json"], headers=[("trace", b"abc")])
    await _send(kafka_server.url, topic, [_event(2)])

    worker = await _drain(db_url, kafka_server.url, group, [topic])

    assert worker.stats.dead_letters == 1
    assert await db.fetchval("SELECT count(*) FROM event_logs") == 2
    row = await db.fetchrow("SELECT * FROM omnisink.dead_letters")
    assert (row["topic"], row["kafka_partition"], row["kafka_offset"]) == (topic, 0, 1)
    assert (row["error_kind"], row["status"]) == ("decode", "pending")
    assert row["record_key"] == b"k1"
    assert row["record_value"] == b"{not json"
    assert list(row["header_keys"]) == ["trace"]
    assert list(row["header_values"]) == [b"abc"]
    assert row["dlq_topic"] == f"{topic}.dlq"
    assert row["dlq_offset"] is not None
    assert "not valid JSON" in row["error_message"]
    assert await offsets.load(db, group, [TopicPartition(topic, 0)]) == {
        TopicPartition(topic, 0): 3
    }

    consumer = AIOKafkaConsumer(
        f"{topic}.dlq", bootstrap_servers=kafka_server.url, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        got = await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()
    records = [r for rs in got.values() for r in rs]
    assert len(records) == 1
    dead = records[0]
    assert (dead.key, dead.value) == (b"k1", b"{not json")
    headers = dict(dead.headers)
    assert headers["trace"] == b"abc"
    assert headers["__connect.errors.topic"] == topic.encode()
    assert headers["__connect.errors.partition"] == b"0"
    assert headers["__connect.errors.offset"] == b"1"
    assert headers["omnisink.error.kind"] == b"decode"
    assert headers["omnisink.consumer.group"] == group.encode()
    assert headers["__connect.errors.exception.class.name"].endswith(b"DecodeError")
    assert (row["dlq_partition"], row["dlq_offset"]) == (dead.partition, dead.offset)


@pytest.mark.parametrize("policy", ["keep", "dlq"])
async def test_unknown_event_types_are_kept_or_dead_lettered(
    kafka_server: Service,
    db_url: str,
    db: asyncpg.Connection,
    topic_factory: TopicFactory,
    policy: str,
) -> None:
    topic = await topic_factory("unknown", partitions=1)
    await _send(kafka_server.url, topic, [_event(1, "SOMETHING_NEW")])
    await _drain(
        db_url, kafka_server.url, f"u-{uuid.uuid4().hex[:6]}", [topic], unknown_events=policy
    )
    logged = await db.fetchval("SELECT count(*) FROM event_logs")
    dead = await db.fetchval("SELECT error_kind FROM omnisink.dead_letters")
    if policy == "keep":
        assert (logged, dead) == (1, None)
    else:
        assert (logged, dead) == (0, "unknown_type")


async def test_offset_write_is_fenced(db: asyncpg.Connection) -> None:
    tp = TopicPartition("t", 0)
    async with db.transaction():
        await offsets.store(db, "g", {tp: 5}, {})
    # Another member moved it to 5; this one still believes there is no row.
    with pytest.raises(offsets.OffsetFenced):
        async with db.transaction():
            await offsets.store(db, "g", {tp: 9}, {tp: offsets.NO_OFFSET})
    # ... or believes it is at 3.
    with pytest.raises(offsets.OffsetFenced):
        async with db.transaction():
            await offsets.store(db, "g", {tp: 9}, {tp: 3})
    assert await offsets.load(db, "g", [tp]) == {tp: 5}
    async with db.transaction():
        await offsets.store(db, "g", {tp: 9}, {tp: 5})
    assert await offsets.load(db, "g", [tp]) == {tp: 9}


@pytest.mark.parametrize("pattern", [DEFAULT_TOPIC_PATTERN, r".*", r"^dev\..*$"])
def test_the_subscription_never_matches_a_dead_letter_topic(pattern: str) -> None:
    compiled = re.compile(_without_dlq(pattern))
    assert compiled.fullmatch("dev.omninode_bridge.onex.evt.node-heartbeat.v1")
    assert not compiled.fullmatch("dev.omninode_bridge.onex.evt.node-heartbeat.v1.dlq")
    assert not compiled.fullmatch("dev.archon-intelligence.fsm.state.changed.v1.dlq")


async def test_an_unmigrated_database_is_fatal_with_a_fix(
    kafka_server: Service, pg_server: Service
) -> None:
    name = f"omnisink_empty_{uuid.uuid4().hex[:8]}"
    await create_database(pg_server.url, name)
    try:
        worker = Worker(
            sink_settings(
                with_database(pg_server.url, name), kafka_server.url, "g", startup_timeout_s=1
            ),
            install_signal_handlers=False,
        )
        with pytest.raises(FatalError, match="omnisink migrate"):
            await asyncio.wait_for(worker.run(), 30)
    finally:
        await drop_database(pg_server.url, name)


async def test_static_membership(
    kafka_server: Service, db_url: str, db: asyncpg.Connection, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("static", partitions=2)
    await _send(kafka_server.url, topic, [_event(i, "CUSTOM_EVENT") for i in range(5)])
    group = f"static-{uuid.uuid4().hex[:6]}"
    for _ in range(2):  # the same instance id twice: the second takes the member's place
        await _drain(db_url, kafka_server.url, group, [topic], group_instance_id="sink-0")
    assert await db.fetchval("SELECT count(*) FROM event_logs") == 5


async def test_the_offset_does_not_move_while_the_dead_letter_topic_refuses(
    kafka_server: Service, db_url: str, db: asyncpg.Connection, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("dlq-refuses", partitions=1)
    await _send(kafka_server.url, topic, [_event(1), b"{not json", _event(2)])
    group = f"refuses-{uuid.uuid4().hex[:6]}"
    # A producer limit below any dead letter's size: the broker never gets it.
    stuck = Worker(
        sink_settings(db_url, kafka_server.url, group, topics=[topic], dlq_max_request_bytes=64),
        install_signal_handlers=False,
    )
    run = asyncio.create_task(stuck.run())
    deadline = asyncio.get_running_loop().time() + 60
    while stuck.stats.retries < 3:
        assert asyncio.get_running_loop().time() < deadline, "no retries seen"
        assert not run.done(), run
        await asyncio.sleep(0.1)
    # Nothing of the batch committed: not the poison's offset, not its neighbours' rows. The
    # offset is where the sink started (stored by the seek), and stays there.
    start = {TopicPartition(topic, 0): 0}
    assert await offsets.load(db, group, [TopicPartition(topic, 0)]) == start
    assert await db.fetchval("SELECT count(*) FROM event_logs") == 0
    assert await db.fetchval("SELECT count(*) FROM omnisink.dead_letters") == 0
    stuck.stop()
    await asyncio.wait_for(run, 30)  # a graceful stop: the batch in hand is abandoned
    assert await offsets.load(db, group, [TopicPartition(topic, 0)]) == start

    # Once the dead-letter topic takes it, everything lands.
    await _drain(db_url, kafka_server.url, group, [topic])
    assert await db.fetchval("SELECT count(*) FROM event_logs") == 2
    assert await db.fetchval("SELECT count(*) FROM omnisink.dead_letters") == 1
    assert await offsets.load(db, group, [TopicPartition(topic, 0)]) == {
        TopicPartition(topic, 0): 3
    }


def _get(url: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local test URL
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def test_metrics_and_health_show_progress_and_the_circuit_breaker(
    kafka_server: Service, db_url: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("metrics", partitions=1)
    await _send(kafka_server.url, topic, [_event(i) for i in range(3)] + [b"{not json"])
    group = f"m-{uuid.uuid4().hex[:6]}"
    worker = Worker(
        sink_settings(db_url, kafka_server.url, group, topics=[topic]),
        install_signal_handlers=False,
    )
    run = asyncio.create_task(worker.run())
    try:
        while worker.stats.batches < 1:
            assert not run.done(), run
            await asyncio.sleep(0.1)
        assert worker.http is not None
        base = f"http://127.0.0.1:{worker.http.port}"
        conn = await asyncpg.connect(db_url)
        try:
            # The sink's sessions are named, and the server ends one it abandoned.
            sessions = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'omnisink' AND datname = current_database()"
            )
        finally:
            await conn.close()
        assert sessions >= 1
        async with worker._connection() as own:
            assert await own.fetchval("SHOW idle_in_transaction_session_timeout") == "1min"
        status, body = await asyncio.to_thread(_get, f"{base}/metrics")
        text = body.decode()
        assert status == 200
        assert 'omnisink_records_total{outcome="written"} 3.0' in text
        assert 'omnisink_dead_letters_total{kind="decode"} 1.0' in text
        assert 'omnisink_circuit_breaker_state{breaker="database"} 0.0' in text
        assert f'omnisink_consumer_lag{{group="{group}",partition="0",topic="{topic}"}} 0.0' in text
        status, body = await asyncio.to_thread(_get, f"{base}/health/ready")
        assert status == 200
        assert orjson.loads(body)["circuit_breaker"] == "closed"

        for _ in range(worker.breaker.failure_threshold):
            worker.breaker.failure()
        status, body = await asyncio.to_thread(_get, f"{base}/health/ready")
        assert (status, orjson.loads(body)["circuit_breaker"]) == (503, "open")
        status, _ = await asyncio.to_thread(_get, f"{base}/health/live")
        assert status == 200  # open breaker: not ready, but alive
        _, body = await asyncio.to_thread(_get, f"{base}/metrics")
        assert 'omnisink_circuit_breaker_state{breaker="database"} 2.0' in body.decode()
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)


@pytest.mark.parametrize("cut_when", ["assigned", "assigning"])
async def test_an_outage_longer_than_the_poll_interval_keeps_the_group(
    kafka_server: Service,
    db_url: str,
    db: asyncpg.Connection,
    topic_factory: TopicFactory,
    cut_when: str,
) -> None:
    # "assigning": the database goes away as the group assigns the partitions, so their
    # offsets cannot be read and they have no position while the sink waits.
    topic = await topic_factory("outage", partitions=2)
    target, proxied = postgres_target(db_url)
    proxy = Proxy(target)
    port = await proxy.start()

    class CutOnAssign(Worker):
        def assign(self, assigned: set[TopicPartition]) -> None:
            if cut_when == "assigning":
                proxy.cut()
            super().assign(assigned)

    worker = CutOnAssign(
        sink_settings(
            proxied.format(port=port),
            kafka_server.url,
            f"o-{uuid.uuid4().hex[:6]}",
            topics=[topic],
            breaker_recovery_s=1.0,
            kafka=KafkaSettings(
                bootstrap_servers=kafka_server.url,
                session_timeout_ms=6000,
                heartbeat_interval_ms=500,
                max_poll_interval_ms=3000,
            ),
        ),
        install_signal_handlers=False,
    )
    run = asyncio.create_task(worker.run())
    try:
        while worker.stats.assignments < 1:
            assert not run.done(), run
            await asyncio.sleep(0.1)
        proxy.cut()
        await _send(kafka_server.url, topic, [_event(i) for i in range(5)])
        # The batch (or the seek) is retried for three poll intervals while the database is away.
        await asyncio.sleep(9)
        assert worker.stats.retries >= 3
        assert await db.fetchval("SELECT count(*) FROM event_logs") == 0
        proxy.restore()
        deadline = asyncio.get_running_loop().time() + 30
        while await db.fetchval("SELECT count(*) FROM event_logs") < 5:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        # Never thrown out of the group: still the first assignment.
        assert worker.stats.assignments == 1
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)
        await proxy.stop()


async def test_a_missing_dead_letter_topic_is_created_like_its_source(
    kafka_server: Service, db_url: str, db: asyncpg.Connection, topic_factory: TopicFactory
) -> None:
    # The broker may create topics on first write with its own defaults; the sink creates
    # <topic>.dlq itself first, with the source's partition count.
    topic = await topic_factory("dlq-create", partitions=5)
    await _send(kafka_server.url, topic, [b"{not json"])
    worker = Worker(
        sink_settings(db_url, kafka_server.url, f"c-{uuid.uuid4().hex[:6]}", topics=[topic]),
        until_caught_up=True,
        install_signal_handlers=False,
    )
    await asyncio.wait_for(worker.run(), 60)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_server.url)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([f"{topic}.dlq"])
    finally:
        await admin.close()
    assert len(described["partitions"]) == 5
    assert await db.fetchval("SELECT count(*) FROM omnisink.dead_letters") == 1


async def test_lag_stays_true_while_a_batch_is_blocked(
    kafka_server: Service, db_url: str, db: asyncpg.Connection, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("lag", partitions=1)
    group = f"lag-{uuid.uuid4().hex[:6]}"
    worker = Worker(
        sink_settings(db_url, kafka_server.url, group, topics=[topic], ready_stall_s=2.0),
        install_signal_handlers=False,
    )
    labels = {"group": group, "topic": topic, "partition": "0"}

    def ready() -> int:
        assert worker.http is not None
        status, _ = _get(f"http://127.0.0.1:{worker.http.port}/health/ready")
        return status

    def lag() -> float | None:
        return worker.metrics.registry.get_sample_value("omnisink_consumer_lag", labels)

    def age() -> float | None:
        return worker.metrics.registry.get_sample_value(
            "omnisink_consumer_lag_seconds", {"group": group}
        )

    async def until(check: Callable[[], bool], what: str, within_s: float = 20) -> None:
        deadline = asyncio.get_running_loop().time() + within_s
        while not check():
            assert not run.done(), run
            assert asyncio.get_running_loop().time() < deadline, (what, lag(), age())
            await asyncio.sleep(0.1)

    run = asyncio.create_task(worker.run())
    try:
        await _send(kafka_server.url, topic, [_event(i, "STAMP_VALIDATED") for i in range(3)])
        await until(lambda: worker.stats.records >= 3 and lag() == 0, "caught up first")
        # A DBA's lock: the next batch blocks on it, nothing commits, records keep arriving.
        async with db.transaction():
            await db.execute("LOCK TABLE event_logs IN ACCESS EXCLUSIVE MODE")
            await _send(kafka_server.url, topic, [_event(i, "STAMP_VALIDATED") for i in range(10)])
            await until(lambda: lag() == 10, "the lag rises while the batch is blocked")
            await until(lambda: (age() or 0) > 0, "the records in hand have an age")
            await _send(kafka_server.url, topic, [_event(i, "STAMP_VALIDATED") for i in range(5)])
            await until(lambda: lag() == 15, "and goes on rising")
            assert worker.stats.records == 3, "nothing committed meanwhile"
            # Records waited longer than OMNISINK_READY_STALL_S with no commit: not ready.
            await until(lambda: ready() == 503, "not ready while commits stall")
        await until(lambda: worker.stats.records == 18 and lag() == 0, "falls to 0 when caught up")
        await until(lambda: age() == 0, "nothing waits")
        await until(lambda: ready() == 200, "ready again")
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)


async def test_the_exposition_reports_the_process_pool_and_services(
    kafka_server: Service, db_url: str, topic_factory: TopicFactory
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    topic = await topic_factory("vitals", partitions=1)
    await _send(kafka_server.url, topic, [_event(0, "NO_SUCH_TYPE")])
    worker = Worker(
        sink_settings(db_url, kafka_server.url, f"v-{uuid.uuid4().hex[:6]}", topics=[topic]),
        install_signal_handlers=False,
    )
    run = asyncio.create_task(worker.run())
    try:
        registry = worker.metrics.registry
        deadline = asyncio.get_running_loop().time() + 30
        while registry.get_sample_value("omnisink_up", {"service": "postgresql"}) is None:
            assert not run.done(), run
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        assert worker.http is not None
        status, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{worker.http.port}/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert registry.get_sample_value("omnisink_up", {"service": "kafka"}) == 1
        assert registry.get_sample_value("omnisink_up", {"service": "postgresql"}) == 1
        assert registry.get_sample_value("omnisink_build_info", {"version": __version__}) == 1
        assert "process_resident_memory_bytes" in families
        assert "python_gc_collections" in families
        size = registry.get_sample_value("omnisink_db_pool_connections", {"state": "size"})
        most = registry.get_sample_value("omnisink_db_pool_connections", {"state": "max"})
        assert size is not None
        assert most == worker.settings.database.pool_max_size
        # An event type a producer made up is counted under one label value, not its own.
        while worker.stats.records < 1:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        assert (
            registry.get_sample_value("omnisink_events_written_total", {"event_type": "other"}) == 1
        )
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)


def test_promtool_accepts_the_exposition() -> None:
    import shutil
    import subprocess

    from prometheus_client import generate_latest

    from consumer.metrics import Metrics

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed here; the exposition is parsed by the test above")
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=generate_latest(Metrics().registry),
        check=False,
        capture_output=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
