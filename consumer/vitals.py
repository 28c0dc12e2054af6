"""What the sink reports whether or not batches commit: every owned partition's lag
(consumer/lag.py), the PostgreSQL pool's statistics with the seed's exhaustion warning and
whether Kafka answers, on a timer (:class:`Vitals`); and whether PostgreSQL is there to write
to, the moment that changes (:class:`DatabaseWatch`). Both set ``omnisink_up{service}``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog

from consumer.errors import classify
from consumer.lag import LagReporter
from consumer.metrics import POOL_WARN_RATIO, Metrics
from consumer.settings import Settings
from consumer.store import database

log = structlog.get_logger("omnisink.vitals")

# How often lag, the pool's statistics and whether Kafka answers are reported, and the database
# watch's session probed, whether or not batches commit.
EVERY_S = 5.0
# How long the watch's connect or probe may take before PostgreSQL counts as not answering.
PROBE_TIMEOUT_S = 5.0
# The wait between the watch's attempts to open a session again. PostgreSQL counts as away for
# at least this long once the watch lost its session: until a new one says otherwise.
RECONNECT_S = 1.0


class Vitals:
    def __init__(self, lag: LagReporter, pool: asyncpg.Pool, metrics: Metrics) -> None:
        self.lag = lag
        self.pool = pool
        self.metrics = metrics

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
        self.pool_statistics()

    def pool_statistics(self) -> None:
        """Set the pool's gauges (seed 000's pool statistics); warn above 90 % used."""
        size, free, most = self.pool.get_size(), self.pool.get_idle_size(), self.pool.get_max_size()
        used = size - free
        for state, n in (("size", size), ("free", free), ("used", used), ("max", most)):
            self.metrics.pool_connections.labels(state).set(n)
        ratio = used / most if most else 0.0
        self.metrics.pool_utilisation.set(ratio)
        if ratio > POOL_WARN_RATIO:
            self.metrics.pool_exhaustion.inc()
            log.warning("database.pool_nearly_exhausted", used=used, max=most, size=size)


class DatabaseWatch:
    """One session of the daemon's own, outside the pool, held open so that PostgreSQL going
    away is noticed when it happens, between batches too. (asyncpg's pool replaces a session
    the server closed without telling anyone, and a restart can fall between two batches:
    nothing the sink writes would fail, and readiness would never say so.)

    PostgreSQL counts as not answering (readiness 503, ``omnisink_up{service="postgresql"}``
    0) from the moment that session is lost (the server ended it, or a probe on it failed or
    took longer than ``PROBE_TIMEOUT_S``) until a new one is open and may write: a read-only
    session (a failover onto a replica) does not count. The session is probed every
    ``interval_s`` while held, since a network partition closes nothing. It is one session
    more than ``OMNISINK_DATABASE_POOL_MAX_SIZE`` (docs/operations.md).
    """

    def __init__(
        self, settings: Settings, metrics: Metrics, on_database: Callable[[bool], None]
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.on_database = on_database
        self.answers: bool | None = None  # None until the first session says

    async def run(self, interval_s: float) -> None:
        """Watch until cancelled. Not tenacity: this loop never ends, it alternates holding a
        session and opening one again, with a constant wait. A bug met meanwhile is logged
        with its traceback and the watch goes on: watching never stops the sink."""
        while True:
            try:
                reason = await self._hold(interval_s)
            except Exception as exc:
                if classify(exc) == "unexpected":
                    log.exception("vitals.database_watch_failed")
                reason = self.settings.scrub(f"{type(exc).__name__}: {exc}")
            self._report(False, reason)
            await asyncio.sleep(RECONNECT_S)

    async def _hold(self, interval_s: float) -> str:
        """Open a session and hold it while it may write; why it stopped."""
        conn = await database.session(self.settings, PROBE_TIMEOUT_S)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            while True:
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    writable = await conn.fetchval(database.WRITABLE.sql)
                if not writable:
                    return "the database is read-only"
                self._report(True)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval_s):
                        await lost.wait()
                if lost.is_set():
                    return "the server closed the session"
        finally:
            if not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close(timeout=PROBE_TIMEOUT_S)

    def _report(self, answers: bool, reason: str | None = None) -> None:
        if answers != self.answers:
            if answers:
                log.info("database.available")
            elif self.answers is not None:
                log.warning("database.unavailable", reason=reason)
        self.answers = answers
        self.metrics.up.labels("postgresql").set(1 if answers else 0)
        self.on_database(answers)


def watch(
    settings: Settings,
    lag: LagReporter,
    pool: asyncpg.Pool,
    metrics: Metrics,
    on_database: Callable[[bool], None],
) -> list[asyncio.Task[None]]:
    """Start :class:`Vitals` and :class:`DatabaseWatch`, every ``EVERY_S``; :func:`unwatch`
    stops them."""
    return [
        asyncio.create_task(Vitals(lag, pool, metrics).run(EVERY_S), name="omnisink-vitals"),
        asyncio.create_task(
            DatabaseWatch(settings, metrics, on_database).run(EVERY_S), name="omnisink-watch"
        ),
    ]


async def unwatch(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)  # their CancelledErrors stay in the tasks
