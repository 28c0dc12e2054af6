"""The daemon as operators run it: ``omnisink run`` in a subprocess, killed, stopped, joined.

Each test produces a sample stream (dev/sample.py) to fresh topics, runs a *reference*
sink in-process into one database, runs the daemon under test into another, and requires the
two databases' tables to be identical, with exactly one event_logs row per distinct event.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from consumer.worker import Worker
from dev import sample
from dev.services import Service
from tests.support import (
    create_database,
    drop_database,
    produce,
    sink_env,
    sink_settings,
    table_snapshot,
    with_database,
)

pytestmark = pytest.mark.timeout(600)


def _env_name() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


async def _reference(db_url: str, servers: str, topics: list[str]) -> None:
    settings = sink_settings(db_url, servers, f"ref-{uuid.uuid4().hex[:6]}", topics=topics)
    worker = Worker(settings, until_caught_up=True, install_signal_handlers=False)
    await asyncio.wait_for(worker.run(), timeout=300)


def _spawn(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "run", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _count(db_url: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM event_logs"))
    finally:
        await conn.close()


async def _wait_for_rows(db_url: str, at_least: int, proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        count = await _count(db_url)
        if count >= at_least or proc.poll() is not None:
            return count
        await asyncio.sleep(0.05)
    raise AssertionError(f"no progress to {at_least} rows within 240 s")


async def _wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the daemon did not exit within {timeout_s} s")
        await asyncio.sleep(0.05)
    return proc.returncode


async def _assert_same_tables(reference_url: str, tested_url: str, distinct: int) -> None:
    ref = await asyncpg.connect(reference_url)
    tested = await asyncpg.connect(tested_url)
    try:
        expected = await table_snapshot(ref)
        got = await table_snapshot(tested)
        dup = await tested.fetchval(
            "SELECT count(*) - count(DISTINCT id) FROM event_logs"  # the PK makes this 0;
        )  # asserted anyway: it is the claim
    finally:
        await ref.close()
        await tested.close()
    assert len(got["event_logs"]) == distinct, "event_logs must hold each distinct event once"
    assert dup == 0
    for table in expected:
        assert got[table] == expected[table], f"{table} differs from the reference run"


async def test_sigkill_three_times_loses_nothing_and_doubles_nothing(
    kafka_server: Service, database_pair: list[str], tmp_path: Path
) -> None:
    reference_url, tested_url = database_pair
    stream = sample.generate(50_000, env=_env_name(), seed=11)
    await produce(kafka_server.url, stream.records)
    await _reference(reference_url, kafka_server.url, stream.topics)

    rng = random.Random()  # noqa: S311 - test randomness, printed for reproduction
    seed = rng.randrange(2**32)
    rng.seed(seed)
    print(f"kill points seed: {seed}")
    env = sink_env(tested_url, kafka_server.url, "crash", OMNISINK_TOPICS=",".join(stream.topics))
    log = tmp_path / "daemon.log"
    thresholds = sorted(rng.sample(range(2_000, stream.distinct_events - 2_000), 3))
    kills = 0
    for threshold in thresholds:
        proc = _spawn(env, log, "--until-caught-up")
        reached = await _wait_for_rows(tested_url, threshold, proc)
        # A little later still, so some kills land inside a transaction.
        await asyncio.sleep(rng.uniform(0, 0.3))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        print(f"killed at {reached} rows (threshold {threshold})")
    assert kills == 3, "the daemon finished before it could be killed three times"
    proc = _spawn(env, log, "--until-caught-up")
    assert await _wait_exit(proc, 300) == 0, log.read_text()[-3000:]
    await _assert_same_tables(reference_url, tested_url, stream.distinct_events)


async def test_sigterm_exits_zero_within_grace_with_offsets_matching_rows(
    kafka_server: Service, db_url: str, tmp_path: Path
) -> None:
    stream = sample.generate(20_000, env=_env_name(), seed=12)
    landed = await produce(kafka_server.url, stream.records)
    grace_s = 15
    env = sink_env(
        db_url,
        kafka_server.url,
        "shutdown",
        OMNISINK_TOPICS=",".join(stream.topics),
        OMNISINK_SHUTDOWN_GRACE_S=str(grace_s),
    )
    log = tmp_path / "daemon.log"
    proc = _spawn(env, log)
    await _wait_for_rows(db_url, stream.distinct_events // 3, proc)
    assert proc.poll() is None, "the daemon stopped by itself"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = await _wait_exit(proc, grace_s + 10)
    took = time.monotonic() - sent
    assert code == 0, log.read_text()[-3000:]
    assert took < grace_s, f"took {took:.1f} s to stop"

    conn = await asyncpg.connect(db_url)
    try:
        stored = {
            (r["topic"], r["kafka_partition"]): r["next_offset"]
            for r in await conn.fetch(
                "SELECT topic, kafka_partition, next_offset FROM omnisink.consumer_offsets "
                "WHERE consumer_group = 'shutdown'"
            )
        }
        rows = {r["id"] for r in await conn.fetch("SELECT id FROM event_logs")}
    finally:
        await conn.close()
    consumed = {
        rec.event_id
        for rec, (topic, partition, offset) in zip(stream.records, landed, strict=True)
        if offset < stored.get((topic, partition), 0)
    }
    assert 0 < len(rows) < stream.distinct_events, "SIGTERM must land mid-stream"
    # Exactly the events before the stored offsets were written: nothing beyond, nothing less.
    assert rows == consumed


async def test_member_joining_and_leaving_mid_stream_keeps_exactness(
    kafka_server: Service, database_pair: list[str], tmp_path: Path
) -> None:
    reference_url, tested_url = database_pair
    stream = sample.generate(30_000, env=_env_name(), seed=13)
    await produce(kafka_server.url, stream.records, partitions=4)
    await _reference(reference_url, kafka_server.url, stream.topics)

    # Small batches, so the stream lasts long enough for a member to join and leave.
    env = sink_env(
        tested_url,
        kafka_server.url,
        "rebalance",
        OMNISINK_TOPICS=",".join(stream.topics),
        OMNISINK_BATCH_MAX_RECORDS="100",
    )
    first = _spawn(env, tmp_path / "first.log")
    await _wait_for_rows(tested_url, stream.distinct_events // 10, first)
    second_log = tmp_path / "second.log"
    second = _spawn(env, second_log)
    # The second member joins (a rebalance), takes partitions, and commits batches of them.
    deadline = time.monotonic() + 120
    while second_log.read_text().count("batch.committed") < 3:
        assert time.monotonic() < deadline, second_log.read_text()[-3000:]
        assert second.poll() is None, second_log.read_text()[-3000:]
        await asyncio.sleep(0.1)
    assert await _count(tested_url) < stream.distinct_events, "the join must land mid-stream"
    second.send_signal(signal.SIGTERM)  # leaves the group: another rebalance
    assert await _wait_exit(second, 30) == 0, second_log.read_text()[-3000:]
    await asyncio.sleep(1)
    first.send_signal(signal.SIGTERM)
    assert await _wait_exit(first, 30) == 0
    # Whatever is left is finished by a drain run of the same group.
    last = _spawn(env, tmp_path / "last.log", "--until-caught-up")
    assert await _wait_exit(last, 300) == 0, (tmp_path / "last.log").read_text()[-3000:]
    await _assert_same_tables(reference_url, tested_url, stream.distinct_events)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://sink:s3cret@127.0.0.1:1/omnisink", "cannot connect to PostgreSQL"),
        (None, "run `omnisink migrate` first"),
    ],
    ids=["unreachable", "unmigrated"],
)
async def test_a_fatal_problem_exits_2_with_what_to_do(
    kafka_server: Service, pg_server: Service, tmp_path: Path, url: str | None, says: str
) -> None:
    name = f"omnisink_e_{uuid.uuid4().hex[:8]}"
    await create_database(pg_server.url, name)
    try:
        # A short start-up budget: what persists past it is fatal (the default waits 60 s).
        env = sink_env(
            url or with_database(pg_server.url, name),
            kafka_server.url,
            "fatal",
            OMNISINK_STARTUP_TIMEOUT_S="2",
        )
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "consumer.cli", "run"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    finally:
        await drop_database(pg_server.url, name)
    assert done.returncode == 2, done.stderr.decode()[-2000:]
    stderr = done.stderr.decode()
    assert says in stderr
    assert "OMNISINK_STARTUP_TIMEOUT_S" in stderr
    assert "Traceback" not in stderr
    assert "s3cret" not in stderr + done.stdout.decode()


async def test_sigterm_with_a_batch_blocked_past_the_grace_period_exits_3_cleanly(
    kafka_server: Service, db_url: str, tmp_path: Path
) -> None:
    stream = sample.generate(200, env=_env_name(), seed=14)
    await produce(kafka_server.url, stream.records)
    grace_s = 3
    env = sink_env(
        db_url,
        kafka_server.url,
        "blocked",
        OMNISINK_TOPICS=",".join(stream.topics),
        OMNISINK_SHUTDOWN_GRACE_S=str(grace_s),
    )
    log = tmp_path / "daemon.log"
    holder = await asyncpg.connect(db_url)
    try:
        # A DBA's lock: the batch's INSERT into event_logs waits behind it.
        tx = holder.transaction()
        await tx.start()
        await holder.execute("LOCK TABLE event_logs IN ACCESS EXCLUSIVE MODE")
        proc = _spawn(env, log)
        deadline = time.monotonic() + 120
        # Polled from a connection of its own: pg_stat_activity is a snapshot per transaction.
        while not await _waiting_on_a_lock(db_url):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the batch never reached the lock"
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        code = await _wait_exit(proc, grace_s + 20)
        await tx.rollback()
    finally:
        await holder.close()
    text = log.read_text()
    assert code == 3, text[-3000:]
    assert "the shutdown grace period expired" in text
    assert "Traceback" not in text, text[-3000:]
    assert await _count(db_url) == 0, "the abandoned batch must have rolled back"


async def _waiting_on_a_lock(db_url: str) -> bool:
    conn = await asyncpg.connect(db_url)
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'omnisink' "
                "AND datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    finally:
        await conn.close()
