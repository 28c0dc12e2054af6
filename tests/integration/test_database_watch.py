"""The database watch (consumer/vitals.py) against a PostgreSQL cluster of the test's own: it
says at once when the server goes away, restarts or turns read-only, though nothing else
calls the database meanwhile (a restart between two batches), and says so again when the
server is back and writable."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from consumer.metrics import Metrics
from consumer.vitals import DatabaseWatch
from tests.support import Cluster, sink_settings

pytestmark = pytest.mark.timeout(180)


class Said:
    """What the watch said, with when (monotonic clock)."""

    def __init__(self) -> None:
        self.said: list[tuple[float, bool]] = []

    def __call__(self, answers: bool) -> None:
        if not self.said or self.said[-1][1] != answers:
            self.said.append((time.monotonic(), answers))

    async def until(self, answers: bool, after: float, timeout_s: float = 30) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, said in self.said:
                if at >= after and said is answers:
                    return at
            await asyncio.sleep(0.02)
        raise AssertionError(f"the watch did not say {answers} after {after}: {self.said}")


async def _admin(cluster: Cluster, statement: str) -> None:
    conn = await asyncpg.connect(cluster.url("postgres"), timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def test_the_watch_notices_restarts_crashes_and_read_only_between_batches(
    cluster: Cluster,
) -> None:
    await _admin(cluster, "CREATE DATABASE sink")
    settings = sink_settings(cluster.url("sink"), "127.0.0.1:9", "unused")
    metrics = Metrics()
    said = Said()
    watch = asyncio.create_task(DatabaseWatch(settings, metrics, said).run(interval_s=5))
    up = lambda: metrics.registry.get_sample_value("omnisink_up", {"service": "postgresql"})  # noqa: E731
    try:
        await said.until(True, after=0)
        assert up() == 1

        for fault in (cluster.restart, cluster.crash):
            at = time.monotonic()
            await asyncio.to_thread(fault)
            gone = await said.until(False, after=at)
            back = await said.until(True, after=gone)
            # Away from the moment the session was lost until a new one answered.
            assert back - gone >= 0.5, said.said
            assert up() == 1

        # A failover onto a read-only server: a session that cannot write does not count.
        at = time.monotonic()
        await _admin(cluster, "ALTER DATABASE sink SET default_transaction_read_only = on")
        await _admin(
            cluster,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'omnisink'",
        )
        gone = await said.until(False, after=at)
        await asyncio.sleep(2)
        assert said.said[-1][1] is False, "a read-only database is not there to write to"
        assert up() == 0
        await _admin(cluster, "ALTER DATABASE sink RESET default_transaction_read_only")
        await said.until(True, after=gone)
    finally:
        watch.cancel()
        await asyncio.wait([watch])
    assert watch.cancelled(), "cancelling the watch is not swallowed"
