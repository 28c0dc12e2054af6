"""``omnisink replay`` against the real broker and database: a replay of what was applied
changes nothing, a wiped or truncated table is rebuilt equal, ``--from-time`` starts at the
first record at or after the time, a replay SIGKILLed midway and resumed ends equal, and the
live daemon goes on beside a replay with its group's offsets untouched.

The CLI runs as a process, as an operator runs it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consumer.worker import Worker
from dev import sample
from dev.services import Service
from tests.conftest import TopicFactory
from tests.support import (
    DATA_TABLES,
    produce,
    run_omnisink,
    sink_env,
    sink_settings,
    table_snapshot,
)

pytestmark = pytest.mark.timeout(600)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


async def omnisink(db_url: str, servers: str, *args: str, **extra: str) -> Result:
    """``omnisink ARGS`` in a process of its own (as an operator runs it)."""
    env = sink_env(db_url, servers, "unused", OMNISINK_BATCH_MAX_RECORDS="300", **extra)
    return Result(*await run_omnisink(env, *args))


def summary(result: Result) -> Any:
    """The command's JSON output, once it exited 0."""
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr[-3000:])
    return orjson.loads(result.stdout)


async def consume(db_url: str, servers: str, topics: list[str], group: str) -> None:
    settings = sink_settings(db_url, servers, group, topics=topics)
    worker = Worker(settings, until_caught_up=True, install_signal_handlers=False)
    await asyncio.wait_for(worker.run(), timeout=300)


async def dump(db_url: str) -> dict[str, list[str]]:
    """Every data table whole, every column: byte-for-byte."""
    conn = await asyncpg.connect(db_url)
    try:
        return {
            table: [
                r["r"]
                for r in await conn.fetch(
                    f"SELECT to_jsonb(t)::text AS r FROM {table} t ORDER BY 1"
                )
            ]
            for table in DATA_TABLES
        }
    finally:
        await conn.close()


async def snapshot(db_url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(db_url)
    try:
        return await table_snapshot(conn)
    finally:
        await conn.close()


async def group_offsets(db_url: str, servers: str, group: str, topics: list[str]) -> Any:
    conn = await asyncpg.connect(db_url)
    try:
        stored = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT topic, kafka_partition, next_offset, updated_at "
                "FROM omnisink.consumer_offsets WHERE consumer_group = $1 ORDER BY 1, 2",
                group,
            )
        ]
    finally:
        await conn.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        committed = {str(tp): await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()
    return stored, committed


async def test_replaying_what_was_applied_changes_nothing_and_rebuilds_what_was_wiped(
    kafka_server: Service, db_url: str
) -> None:
    stream = sample.generate(1_500, env=f"r{uuid.uuid4().hex[:8]}", seed=31)
    await produce(kafka_server.url, stream.records, partitions=2)
    group = f"live-{uuid.uuid4().hex[:6]}"
    await consume(db_url, kafka_server.url, stream.topics, group)
    before = await dump(db_url)
    applied = await snapshot(db_url)
    offsets_before = await group_offsets(db_url, kafka_server.url, group, stream.topics)
    topics = [a for t in stream.topics for a in ("--topic", t)]

    # Already applied: every record is a duplicate, and nothing changes, to the byte.
    again = summary(
        await omnisink(db_url, kafka_server.url, "replay", *topics, "--from-beginning", "--json")
    )
    assert again["records"] == len(stream.records)
    assert again["duplicates"] == len(stream.records)
    assert again["written"] == again["dead_letters"] == again["reapplied"] == 0
    assert sum(p["to_offset"] - p["from_offset"] for p in again["partitions"]) == len(
        stream.records
    )
    assert await dump(db_url) == before
    # The live group's offsets, in PostgreSQL and in Kafka, are the replay's business not.
    assert await group_offsets(db_url, kafka_server.url, group, stream.topics) == offsets_before

    # --reapply over full tables: the rows are written again and come out the same.
    reapplied = summary(
        await omnisink(
            db_url, kafka_server.url, "replay", *topics, "--from-beginning", "--reapply", "--json"
        )
    )
    assert reapplied["reapplied"] > 0
    assert reapplied["written"] == 0
    assert await snapshot(db_url) == applied

    # One domain table truncated: --reapply --only its family rebuilds it equal.
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("TRUNCATE node_registrations")
    finally:
        await conn.close()
    assert (await snapshot(db_url))["node_registrations"] == []
    summary(
        await omnisink(
            db_url,
            kafka_server.url,
            "replay",
            *topics,
            "--from-beginning",
            "--reapply",
            "--only",
            "nodes",
            "--json",
        )
    )
    assert await snapshot(db_url) == applied

    # Every data table wiped: a replay from the beginning rebuilds them all.
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(f"TRUNCATE {', '.join(DATA_TABLES)} CASCADE")
    finally:
        await conn.close()
    rebuilt = summary(
        await omnisink(db_url, kafka_server.url, "replay", *topics, "--from-beginning", "--json")
    )
    assert rebuilt["written"] == stream.distinct_events
    assert await snapshot(db_url) == applied
    listed = orjson.loads(
        (await omnisink(db_url, kafka_server.url, "replay", "list", "--json")).stdout
    )
    assert len(listed) == 4
    assert all(r["status"] == "done" and r["read"] == r["records"] for r in listed)


async def test_from_time_starts_at_the_first_record_at_or_after_it(
    kafka_server: Service, db_url: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("replay-time", partitions=2)
    base = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp() * 1000)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_server.url, acks="all")
    await producer.start()
    firsts: dict[int, int] = {}
    late = 0
    try:
        for n in range(40):
            event = {
                "event_id": str(uuid.uuid4()),
                "event_type": "STAMP_VALIDATED",  # kept in event_logs only
                "event_timestamp": "2026-06-01T00:00:00Z",
                "payload": {"n": n},
            }
            # Timestamps one minute apart, alternating partitions; T is the 25th minute.
            at = base + n * 60_000
            meta = await producer.send_and_wait(
                topic, orjson.dumps(event), partition=n % 2, timestamp_ms=at
            )
            if n >= 25:
                late += 1
                firsts.setdefault(meta.partition, meta.offset)
    finally:
        await producer.stop()
    when = datetime.fromtimestamp((base + 25 * 60_000) / 1000, tz=UTC).isoformat()

    planned = summary(
        await omnisink(
            db_url,
            kafka_server.url,
            "replay",
            "--topic",
            topic,
            "--from-time",
            when,
            "--dry-run",
            "--json",
        )
    )
    starts = {p["partition"]: p["from_offset"] for p in planned["partitions"]}
    assert starts == firsts
    assert planned["records"] == late
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM omnisink.replays") == 0, "a dry run"
        assert await conn.fetchval("SELECT count(*) FROM event_logs") == 0
    finally:
        await conn.close()

    done = summary(
        await omnisink(
            db_url, kafka_server.url, "replay", "--topic", topic, "--from-time", when, "--json"
        )
    )
    assert done["records"] == done["written"] == late


def _spawn(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "replay", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_a_replay_killed_midway_and_resumed_ends_equal(
    kafka_server: Service, database_pair: list[str], tmp_path: Path
) -> None:
    reference_url, tested_url = database_pair
    stream = sample.generate(6_000, env=f"r{uuid.uuid4().hex[:8]}", seed=32)
    await produce(kafka_server.url, stream.records, partitions=3)
    await consume(reference_url, kafka_server.url, stream.topics, f"ref-{uuid.uuid4().hex[:6]}")

    env = sink_env(tested_url, kafka_server.url, "unused", OMNISINK_BATCH_MAX_RECORDS="100")
    name = f"killed-{uuid.uuid4().hex[:6]}"
    topics = [a for t in stream.topics for a in ("--topic", t)]
    log = tmp_path / "replay.log"
    proc = _spawn(env, log, *topics, "--from-beginning", "--name", name)
    conn = await asyncpg.connect(tested_url)
    try:
        deadline = time.monotonic() + 240
        while await conn.fetchval("SELECT count(*) FROM event_logs") < 2_000:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no progress"
            await asyncio.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert await conn.fetchval("SELECT count(*) FROM event_logs") < stream.distinct_events
        assert (
            await conn.fetchval("SELECT status FROM omnisink.replays WHERE name = $1", name)
            == "running"
        )
    finally:
        await conn.close()

    resumed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "consumer.cli", "replay", "--resume", name, "--json"],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    closing = orjson.loads(resumed.stdout)
    assert closing["dead_letters"] == 0
    assert await snapshot(tested_url) == await snapshot(reference_url)
    conn = await asyncpg.connect(tested_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM event_logs") == stream.distinct_events
        assert (
            await conn.fetchval("SELECT status FROM omnisink.replays WHERE name = $1", name)
            == "done"
        )
    finally:
        await conn.close()


async def test_the_live_daemon_goes_on_beside_a_replay(kafka_server: Service, db_url: str) -> None:
    first = sample.generate(1_500, env=f"r{uuid.uuid4().hex[:8]}", seed=33)
    await produce(kafka_server.url, first.records, partitions=2)
    group = f"live-{uuid.uuid4().hex[:6]}"
    settings = sink_settings(db_url, kafka_server.url, group, topics=first.topics)
    worker = Worker(settings, install_signal_handlers=False)
    run = asyncio.create_task(worker.run())
    try:
        conn = await asyncpg.connect(db_url)
        try:
            deadline = time.monotonic() + 120
            while await conn.fetchval("SELECT count(*) FROM event_logs") < first.distinct_events:
                assert not run.done(), run
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            topics = [a for t in first.topics for a in ("--topic", t)]
            replay = asyncio.create_task(
                omnisink(
                    db_url,
                    kafka_server.url,
                    "replay",
                    *topics,
                    "--from-beginning",
                    "--reapply",
                    "--json",
                )
            )
            # More of the same producers' traffic while the replay runs: the daemon takes it.
            producer = AIOKafkaProducer(bootstrap_servers=kafka_server.url, acks="all")
            await producer.start()
            extra = 0
            try:
                for record in first.records[:300]:
                    event = orjson.loads(record.value)
                    event["event_id"] = str(uuid.uuid4())
                    await producer.send_and_wait(record.topic, orjson.dumps(event), key=record.key)
                    extra += 1
            finally:
                await producer.stop()
            result = summary(await replay)
            assert result["records"] >= len(first.records)
            deadline = time.monotonic() + 120
            while worker.stats.records < len(first.records) + extra:
                assert not run.done(), run
                assert time.monotonic() < deadline, "the daemon stopped consuming"
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        assert worker.stats.assignments == 1, "the replay moved the group"
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)


async def test_offsets_reset_to_earliest_rereads_everything_and_refuses_a_live_group(
    kafka_server: Service, db_url: str
) -> None:
    stream = sample.generate(800, env=f"r{uuid.uuid4().hex[:8]}", seed=34)
    await produce(kafka_server.url, stream.records, partitions=2)
    group = f"reset-{uuid.uuid4().hex[:6]}"
    topics = {"OMNISINK_TOPICS": ",".join(stream.topics)}
    await consume(db_url, kafka_server.url, stream.topics, group)
    before = await dump(db_url)

    shown = summary(
        await omnisink(
            db_url, kafka_server.url, "offsets", "show", "--group", group, "--json", **topics
        )
    )
    assert {r["topic"] for r in shown} == set(stream.topics)
    assert len(shown) == 2 * len(stream.topics)
    assert sum(r["log_end"] for r in shown) == len(stream.records)
    for r in shown:  # a partition no record went to holds its start (0) in PostgreSQL
        assert (r["stored_offset"], r["lag"]) == (r["log_end"], 0), r

    # A live member would overwrite a reset with its next batch: refused, naming it.
    settings = sink_settings(db_url, kafka_server.url, group, topics=stream.topics)
    worker = Worker(settings, install_signal_handlers=False)
    run = asyncio.create_task(worker.run())
    try:
        while worker.stats.assignments < 1:
            assert not run.done(), run
            await asyncio.sleep(0.1)
        refused = await omnisink(
            db_url,
            kafka_server.url,
            "offsets",
            "reset",
            "--group",
            group,
            "--to-earliest",
            **topics,
        )
        assert refused.exit_code == 1, (refused.stdout, refused.stderr)
        assert "member" in refused.stderr
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)
    conn = await asyncpg.connect(db_url)
    try:
        held = await conn.fetchval(
            "SELECT sum(next_offset) FROM omnisink.consumer_offsets WHERE consumer_group = $1",
            group,
        )
        assert held == len(stream.records), "the refused reset moved nothing"
    finally:
        await conn.close()

    deadline = time.monotonic() + 60
    while True:  # the member has left the group (a graceful stop leaves at once)
        moved = await omnisink(
            db_url,
            kafka_server.url,
            "offsets",
            "reset",
            "--group",
            group,
            "--to-earliest",
            **topics,
        )
        if moved.exit_code != 1 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert moved.exit_code == 0, (moved.stdout, moved.stderr)
    shown = summary(
        await omnisink(
            db_url, kafka_server.url, "offsets", "show", "--group", group, "--json", **topics
        )
    )
    assert all(r["stored_offset"] == r["log_start"] == r["committed_offset"] for r in shown), shown

    # The daemon re-reads everything and changes no table.
    again = Worker(
        sink_settings(db_url, kafka_server.url, group, topics=stream.topics),
        until_caught_up=True,
        install_signal_handlers=False,
    )
    await asyncio.wait_for(again.run(), 300)
    assert again.stats.records == len(stream.records)
    assert again.stats.duplicates == len(stream.records)
    assert await dump(db_url) == before
