"""A broker that is not there yet when the daemon starts (restarting, or still coming up
beside it) is waited for within ``OMNISINK_STARTUP_TIMEOUT_S``, like the database; only one
that stays away past it exits 2, naming the settings to check."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from dev.services import KAFKA_SERVERS_ENV, free_port, start_embedded_broker
from tests.acceptance.test_daemon import _spawn
from tests.acceptance.test_lost_offsets import TOPIC, _produce, _rows
from tests.support import sink_env

pytestmark = pytest.mark.timeout(300)


async def test_a_broker_that_comes_up_during_the_start_is_waited_for(
    db_url: str, tmp_path: Path
) -> None:
    if os.environ.get(KAFKA_SERVERS_ENV):
        pytest.skip("the broker under test must be embedded, to start it after the daemon")
    port = free_port()
    servers = f"127.0.0.1:{port}"
    log = tmp_path / "daemon.log"
    env = sink_env(db_url, servers, f"late-{uuid.uuid4().hex[:6]}", OMNISINK_TOPICS=TOPIC)
    proc = _spawn(env, log)
    broker = None
    try:
        deadline = time.monotonic() + 60
        while '"operation": "kafka_start"' not in log.read_text():
            assert proc.poll() is None, f"the daemon exited {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.2)
        broker = start_embedded_broker(port, tmp_path / "broker.log")
        await _produce(servers, 20)
        deadline = time.monotonic() + 120
        while await _rows(db_url) < 20:
            assert proc.poll() is None, f"the daemon exited {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0, log.read_text()[-3000:]
        assert await _rows(db_url) == 20
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if broker is not None:
            broker.stop()


async def test_a_broker_that_stays_away_exits_2_after_the_start_up_budget(db_url: str) -> None:
    env = sink_env(
        db_url,
        f"127.0.0.1:{free_port()}",
        f"away-{uuid.uuid4().hex[:6]}",
        OMNISINK_TOPICS=TOPIC,
        OMNISINK_STARTUP_TIMEOUT_S="3",
    )
    began = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "consumer.cli", "run"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    took = time.monotonic() - began
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr[-3000:]
    assert took >= 3, f"gave up after {took:.1f} s, before the start-up budget"
    assert "cannot reach the Kafka brokers" in stderr
    assert "OMNISINK_KAFKA_BOOTSTRAP_SERVERS" in stderr
    assert "OMNISINK_STARTUP_TIMEOUT_S" in stderr
    assert "Traceback" not in stderr
