"""``omnisink run --until-caught-up`` exits 0 only when the whole group is done: after members
were SIGKILLed (the broker keeps a dead member, and its partitions, until its session times
out) and while another live member still holds partitions."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from dev import sample
from dev.services import Service
from tests.acceptance.test_daemon import (
    _assert_same_tables,
    _count,
    _reference,
    _spawn,
    _wait_exit,
    _wait_for_rows,
)
from tests.support import produce, sink_env

pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize("session_timeout_ms", [10_000, 3_000], ids=["default", "short"])
async def test_the_drain_after_three_sigkills_waits_for_every_partition(
    kafka_server: Service, database_pair: list[str], tmp_path: Path, session_timeout_ms: int
) -> None:
    reference_url, tested_url = database_pair
    stream = sample.generate(12_000, env=f"d{uuid.uuid4().hex[:8]}", seed=21)
    await produce(kafka_server.url, stream.records, partitions=3)
    await _reference(reference_url, kafka_server.url, stream.topics)

    env = sink_env(
        tested_url,
        kafka_server.url,
        f"drain-{uuid.uuid4().hex[:6]}",
        OMNISINK_TOPICS=",".join(stream.topics),
        OMNISINK_KAFKA_SESSION_TIMEOUT_MS=str(session_timeout_ms),
        OMNISINK_KAFKA_HEARTBEAT_INTERVAL_MS=str(session_timeout_ms // 6),
        OMNISINK_BATCH_MAX_RECORDS="200",
    )
    log = tmp_path / "daemon.log"
    for threshold in (1_000, 3_000, 5_000):
        proc = _spawn(env, log, "--until-caught-up")
        await _wait_for_rows(tested_url, threshold, proc)
        assert proc.poll() is None, "the daemon finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # At once: the group still counts the dead member and gives it partitions meanwhile.
    drain = _spawn(env, log, "--until-caught-up")
    assert await _wait_exit(drain, 300) == 0, log.read_text()[-3000:]
    assert await _count(tested_url) == stream.distinct_events, "exited 0 before the end"
    await _assert_same_tables(reference_url, tested_url, stream.distinct_events)


async def test_the_drain_waits_for_a_live_member_to_commit_its_partitions(
    kafka_server: Service, database_pair: list[str], tmp_path: Path
) -> None:
    reference_url, tested_url = database_pair
    stream = sample.generate(4_000, env=f"d{uuid.uuid4().hex[:8]}", seed=22)
    await produce(kafka_server.url, stream.records, partitions=4)
    await _reference(reference_url, kafka_server.url, stream.topics)
    group = f"live-{uuid.uuid4().hex[:6]}"
    # A live member that holds partitions and writes nothing (a member stuck, or slower than
    # this one): the drain must not call its own share the whole.
    holder = AIOKafkaConsumer(
        *stream.topics,
        bootstrap_servers=kafka_server.url,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    await holder.start()
    try:
        while not holder.assignment():
            await holder.getmany(timeout_ms=200)
        holder.pause(*holder.assignment())
        drain_log = tmp_path / "drain.log"
        drain = _spawn(
            sink_env(tested_url, kafka_server.url, group, OMNISINK_TOPICS=",".join(stream.topics)),
            drain_log,
            "--until-caught-up",
        )
        await _wait_for_rows(tested_url, 1, drain)
        polls = 0
        while polls < 100:  # ten seconds of the holder keeping its partitions
            await holder.getmany(timeout_ms=100)
            polls += 1
            assert drain.poll() is None, (
                "exited before the holder's partitions were written:\n"
                + (drain_log.read_text()[-3000:])
            )
        assert holder.assignment(), "the holder must still hold partitions"
        assert await _count(tested_url) < stream.distinct_events
    finally:
        await holder.stop()  # leaves the group: its partitions move to the drain
    assert await _wait_exit(drain, 300) == 0, drain_log.read_text()[-3000:]
    assert await _count(tested_url) == stream.distinct_events
    await _assert_same_tables(reference_url, tested_url, stream.distinct_events)


async def test_a_drain_that_runs_out_of_time_exits_4_naming_the_partitions_behind(
    kafka_server: Service, database_pair: list[str], tmp_path: Path
) -> None:
    _, tested_url = database_pair
    stream = sample.generate(3_000, env=f"d{uuid.uuid4().hex[:8]}", seed=23)
    await produce(kafka_server.url, stream.records, partitions=2)
    log = tmp_path / "drain.log"
    # No time to write anything: the group's join alone takes longer.
    drain = _spawn(
        sink_env(
            tested_url,
            kafka_server.url,
            f"t-{uuid.uuid4().hex[:6]}",
            OMNISINK_TOPICS=",".join(stream.topics),
        ),
        log,
        "--until-caught-up",
        "--timeout-s",
        "0.5",
    )
    assert await _wait_exit(drain, 120) == 4, log.read_text()[-3000:]
    assert "not caught up within --timeout-s 0.5" in log.read_text()
