"""Any record gets a decision: whatever a producer we don't control puts on a topic (keys,
values, header lists, null values, odd JSON), the worker keeps running, and every record either
lands (its event in event_logs) or is dead-lettered, exactly once, with its key, value and
headers preserved exactly (a null header value stays null in the table and on ``.dlq``)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.worker import Worker
from dev import sample
from dev.services import Service
from tests.support import sink_settings

pytestmark = pytest.mark.integration

MAX_BYTES = 64 * 1024
# A few real events (every type), so that valid records, duplicates and bad ones mix.
REAL = [orjson.loads(r.value) for r in sample.generate(150, seed=41, env="any").records if r.value]
IDS = [uuid.UUID(int=i) for i in range(1, 6)]

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.integers(min_value=300, max_value=2000).map(lambda n: "y" * n),  # longer than columns
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
timestamps = st.one_of(
    st.just("2026-03-01T10:00:00Z"),
    st.sampled_from(
        [
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999+00:00",
            "1969-12-31T23:59:59-14:00",
            "2026-02-30T00:00:00Z",
            "not a time",
            "",
        ]
    ),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    base: dict[str, Any] = dict(draw(st.sampled_from(REAL)))
    mutation = draw(st.integers(min_value=0, max_value=7))
    if mutation == 1:
        base["event_id"] = str(draw(st.sampled_from(IDS)))  # duplicates and twins
    elif mutation == 2:
        base["event_timestamp"] = draw(timestamps)
    elif mutation == 3:
        base["payload"] = {**base.get("payload", {}), draw(st.text(max_size=12)): draw(json_value)}
    elif mutation == 4:
        key = draw(st.sampled_from(sorted(base.get("payload", {})) or ["x"]))
        base["payload"] = {**base.get("payload", {}), key: draw(json_value)}
    elif mutation == 5:  # nested deeper than a JSON encoder goes, as JSON text
        depth = draw(st.integers(min_value=50, max_value=2000))
        return orjson.dumps(base)[:-1] + b', "deep": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
    elif mutation == 6:
        base[draw(st.sampled_from(["event_type", "correlation_id", "metadata"]))] = draw(json_value)
    if mutation == 7:  # a number no 64-bit integer holds, as JSON text
        return orjson.dumps(base)[:-1] + b', "huge": 1' + b"0" * draw(st.integers(19, 400)) + b"}"
    return orjson.dumps(base)


values = st.one_of(
    envelopes(),
    st.none(),
    st.binary(max_size=40),
    st.integers(min_value=MAX_BYTES + 1, max_value=MAX_BYTES + 10).map(lambda n: b"x" * n),
    json_value.map(orjson.dumps),
)
keys = st.one_of(
    st.none(),
    st.just(b""),
    st.binary(max_size=20),
    st.integers(min_value=4000, max_value=5000).map(lambda n: b"k" * n),
)
header_lists = st.one_of(
    st.just([]),
    st.lists(
        st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=12))), max_size=6
    ),
    st.integers(min_value=200, max_value=300).map(lambda n: [("h", None)] * n),
    st.just([("big", b"v" * 3000)]),
)


class Records(list[tuple[Any, Any, Any]]):
    """The drawn records, shown short (a failing example's full repr can be megabytes)."""

    def __repr__(self) -> str:
        return (
            "Records("
            + ", ".join(f"({_short(k)}, {_short(v)}, {len(h)} headers)" for k, v, h in self)
            + ")"
        )


def _short(data: bytes | None) -> str:
    if data is None or len(data) <= 60:
        return repr(data)
    return f"{data[:40]!r}...<{len(data)} bytes>"


# aiokafka's producer will not send a record with neither key nor value.
records = st.lists(
    st.tuples(keys, values, header_lists).filter(lambda r: r[0] is not None or r[1] is not None),
    min_size=20,
    max_size=40,
).map(Records)


async def _run(
    kafka_url: str, db_url: str, topic: str, batch: list[tuple[Any, Any, Any]]
) -> list[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_url, max_request_size=1 << 21)
    await producer.start()
    sent = []
    try:
        for key, value, headers in batch:
            meta = await producer.send_and_wait(topic, value, key=key, headers=headers, partition=0)
            sent.append((meta.offset, key, value, headers))
    finally:
        await producer.stop()
    worker = Worker(
        sink_settings(
            db_url,
            kafka_url,
            f"any-{uuid.uuid4().hex[:6]}",
            topics=[topic],
            max_message_bytes=MAX_BYTES,
            batch_max_records=25,
        ),
        until_caught_up=True,
        install_signal_handlers=False,
    )
    await asyncio.wait_for(worker.run(), 120)
    return sent


async def _dlq_copies(kafka_url: str, topic: str, count: int) -> dict[int, list[Any]]:
    consumer = AIOKafkaConsumer(
        f"{topic}.dlq", bootstrap_servers=kafka_url, auto_offset_reset="earliest"
    )
    await consumer.start()
    copies: dict[int, list[Any]] = {}
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(copies) < count and asyncio.get_running_loop().time() < deadline:
            for rs in (await consumer.getmany(timeout_ms=500)).values():
                for r in rs:
                    headers = dict(r.headers)
                    copies[int(headers["__connect.errors.offset"])] = list(r.headers)
    finally:
        await consumer.stop()
    return copies


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=records)
def test_any_record_lands_or_is_dead_lettered_exactly_once(
    kafka_server: Service, pg_server: Service, template_database: str, batch: list[Any]
) -> None:
    asyncio.run(_example(kafka_server, pg_server, template_database, batch))


async def _example(
    kafka_server: Service, pg_server: Service, template: str, batch: list[Any]
) -> None:
    from tests.support import create_database, drop_database, with_database

    name = f"omnisink_any_{uuid.uuid4().hex[:10]}"
    await create_database(pg_server.url, name, template=template)
    db_url = with_database(pg_server.url, name)
    admin_topic = f"any-{uuid.uuid4().hex[:10]}"
    try:
        sent = await _run(kafka_server.url, db_url, admin_topic, batch)
        conn = await asyncpg.connect(db_url)
        try:
            dead = {
                r["kafka_offset"]: r
                for r in await conn.fetch(
                    "SELECT kafka_offset, record_key, record_value, header_keys, header_values "
                    "FROM omnisink.dead_letters"
                )
            }
            dead_count = await conn.fetchval("SELECT count(*) FROM omnisink.dead_letters")
            logged = {r["id"] for r in await conn.fetch("SELECT id FROM event_logs")}
            stored = await conn.fetchval(
                "SELECT next_offset FROM omnisink.consumer_offsets "
                "WHERE topic = $1 AND kafka_partition = 0",
                admin_topic,
            )
        finally:
            await conn.close()
        assert dead_count == len(dead), "one dead letter per record at most"
        assert stored == sent[-1][0] + 1, "the worker consumed to the end"
        for offset, key, value, headers in sent:
            if offset in dead:
                row = dead[offset]
                assert row["record_key"] == key
                assert row["record_value"] == value
                # Exact, but for NUL, which PostgreSQL text cannot hold (the topic copy has it).
                assert list(zip(row["header_keys"], row["header_values"], strict=True)) == [
                    (k.replace("\x00", "\\u0000"), v) for k, v in headers
                ]
                continue
            event_id = uuid.UUID(orjson.loads(value)["event_id"])
            assert event_id in logged, f"offset {offset} landed nowhere"
        copies = await _dlq_copies(kafka_server.url, admin_topic, len(dead))
        assert copies.keys() == dead.keys()
        for offset, _, _, headers in sent:
            if offset in dead:
                assert copies[offset][: len(headers)] == list(headers), "headers kept exactly"
    finally:
        await drop_database(pg_server.url, name)
