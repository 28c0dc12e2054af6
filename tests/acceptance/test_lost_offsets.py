"""A broker that loses its data: the offset PostgreSQL holds is no longer in the log. The sink
never passes over it in silence: with ``earliest`` it logs and counts the reset and consumes
what the log now holds; with ``fail`` it exits non-zero saying so.

The embedded broker keeps its log in memory, so restarting it on the same port is a broker
that lost every record (and every group)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from dev.services import KAFKA_SERVERS_ENV, free_port, start_embedded_broker
from tests.support import sink_env

pytestmark = pytest.mark.timeout(300)

TOPIC = "lost.omninode_bridge.onex.evt.lost-offsets-probe.v1"


def _event(i: int) -> bytes:
    """An event of a type the sink keeps in event_logs only."""
    return orjson.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "LOST_OFFSETS_PROBE",
            "event_timestamp": f"2026-03-01T10:00:{i % 60:02d}+00:00",
            "payload": {"i": i},
        }
    )


async def _produce(servers: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        for i in range(count):
            await producer.send_and_wait(TOPIC, _event(i), key=b"k", partition=0)
    finally:
        await producer.stop()


async def _rows(db_url: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM event_logs"))
    finally:
        await conn.close()


async def _until(what: str, check: object, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}:\n{_tail(log)}"
        await asyncio.sleep(0.2)


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


@pytest.mark.parametrize("policy", ["earliest", "fail"])
async def test_a_broker_that_lost_its_data_is_never_passed_over_in_silence(
    db_url: str, tmp_path: Path, policy: str
) -> None:
    if os.environ.get(KAFKA_SERVERS_ENV):
        pytest.skip("the broker under test must be embedded to be restarted empty")
    port = free_port()
    broker = start_embedded_broker(port, tmp_path / "broker.log")
    servers = f"127.0.0.1:{port}"
    log = tmp_path / "daemon.log"
    env = sink_env(
        db_url,
        servers,
        f"lost-{uuid.uuid4().hex[:6]}",
        OMNISINK_TOPICS=TOPIC,
        OMNISINK_OFFSET_RESET_POLICY=policy,
    )
    proc = None
    try:
        await _produce(servers, 30)
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "consumer.cli", "run", env=env, stdout=out, stderr=out
            )

        async def first_written() -> bool:
            return await _rows(db_url) == 30

        await _until("the first 30 records were not written", first_written, 90, log)
        broker.stop()
        broker = start_embedded_broker(port, tmp_path / "broker.log")
        await _produce(servers, 10)  # the log now ends at 10; PostgreSQL holds 30

        if policy == "fail":
            code = await asyncio.wait_for(proc.wait(), 120)
            text = log.read_text()
            assert code != 0, text[-3000:]
            assert "OMNISINK_OFFSET_RESET_POLICY=fail" in text
            assert "offset_out_of_range" in text
            assert await _rows(db_url) == 30
            return

        async def new_written() -> bool:
            return await _rows(db_url) == 40

        await _until("the records after the loss were not consumed", new_written, 120, log)
        text = log.read_text()
        assert '"event": "offset_out_of_range"' in text
        assert '"stored_offset": 30' in text
        assert proc.returncode is None, "the daemon must keep running"
        port_seen = re.search(r'"http_port": (\d+)', text)
        assert port_seen is not None
        url = f"http://127.0.0.1:{port_seen.group(1)}/metrics"
        metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())
        counted = f'omnisink_offset_resets_total{{policy="earliest",topic="{TOPIC}"}} 1.0'
        assert counted in metrics
    finally:
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
        broker.stop()
