"""What the sink reports on a timer, whether or not batches commit: every owned partition's
lag (consumer/lag.py), the PostgreSQL pool's statistics with the seed's exhaustion warning,
and whether PostgreSQL and Kafka answer (``omnisink_up{service}``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import structlog

from consumer.errors import classify
from consumer.lag import LagReporter
from consumer.metrics import POOL_WARN_RATIO, Metrics

log = structlog.get_logger("omnisink.vitals")

# How long the PostgreSQL probe may take before the database counts as not answering.
PROBE_TIMEOUT_S = 5.0


class Vitals:
    def __init__(
        self,
        lag: LagReporter,
        pool: asyncpg.Pool,
        metrics: Metrics,
        on_database: Callable[[bool], None] = lambda answered: None,
    ) -> None:
        self.lag = lag
        self.pool = pool
        self.metrics = metrics
        # Told whether PostgreSQL answered the probe: readiness follows it even while no
        # batch is written (a restart between batches is noticed).
        self.on_database = on_database

    async def run(self, interval_s: float) -> None:
        """Report every ``interval_s`` until cancelled. A bug met while reporting is logged
        with its traceback and the next tick tries again: reporting never stops the sink."""
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("vitals.failed")
            await asyncio.sleep(interval_s)

    async def tick(self) -> None:
        up = self.metrics.up
        try:
            await self.lag.refresh()
        except Exception as exc:
            if classify(exc) == "unexpected":
                raise
            up.labels("kafka").set(0)
            log.warning("vitals.kafka_unanswered", error=str(exc))
        else:
            up.labels("kafka").set(1)
        free = self.pool_statistics()
        if free == 0:
            return  # every session is in use: the batches say whether PostgreSQL answers
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                async with self.pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except Exception as exc:
            if classify(exc) == "unexpected":
                raise
            up.labels("postgresql").set(0)
            self.on_database(False)
        else:
            up.labels("postgresql").set(1)
            self.on_database(True)

    def pool_statistics(self) -> int:
        """Set the pool's gauges (seed 000's pool statistics); warn above 90 % used.
        Returns the free sessions."""
        size, free, most = self.pool.get_size(), self.pool.get_idle_size(), self.pool.get_max_size()
        used = size - free
        for state, n in (("size", size), ("free", free), ("used", used), ("max", most)):
            self.metrics.pool_connections.labels(state).set(n)
        ratio = used / most if most else 0.0
        self.metrics.pool_utilisation.set(ratio)
        if ratio > POOL_WARN_RATIO:
            self.metrics.pool_exhaustion.inc()
            log.warning("database.pool_nearly_exhausted", used=used, max=most, size=size)
        return free
