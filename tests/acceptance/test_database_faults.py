"""The database misbehaving under a running daemon, as a DBA or a failover makes it.

A PostgreSQL cluster of the test's own (the machine's server binaries: ``pg_config --bindir``),
on a free loopback port, migrated to head. ``omnisink run`` runs as a subprocess during one
stream of sample events, produced in parts so that records keep arriving while the server:

0. is down while the daemon starts, and comes up during its start-up retries;
1. refuses connections for 8 s (``ALTER DATABASE ... ALLOW_CONNECTIONS false`` and the
   sink's sessions terminated, then allowed again);
2. is read-only for 8 s (``ALTER DATABASE ... SET default_transaction_read_only = on`` and
   the sessions terminated so new ones pick it up, then reset);
3. restarts (``pg_ctl restart -m fast``);
4. crashes (SIGKILL of the postmaster and its children, then started again).

The daemon never exits; ``/health/ready`` turns 503 during each fault and 200 after it; the
daemon finishes the stream by itself; and the tables equal a clean reference run's.

And an error nobody classified in the write path (a DBA's trigger raising P0001 once the first
batches are in): ``omnisink run`` exits 1 with one structured error line carrying the
traceback; once the trigger is gone, the next run completes the stream, nothing lost or
doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumer import migrate
from consumer.worker import Worker
from dev import sample
from dev.services import Service, free_port
from tests.support import (
    Cluster,
    assert_same_tables,
    produce,
    sink_env,
    sink_settings,
)

pytestmark = pytest.mark.timeout(600)

EVENTS = 3_000
OUTAGE_S = 8.0
SINK_DB = "sink"
REFERENCE_DB = "reference"


async def _admin(cluster: Cluster, *statements: str) -> list[asyncpg.Record]:
    """Run statements as the DBA, from the maintenance database."""
    conn = await asyncpg.connect(cluster.url("postgres"), timeout=10)
    try:
        rows: list[asyncpg.Record] = []
        for statement in statements:
            rows = await conn.fetch(statement)
        return rows
    finally:
        await conn.close()


TERMINATE_SINK = (
    f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    f"WHERE datname = '{SINK_DB}' AND application_name = 'omnisink'"
)


# -- the faults ----------------------------------------------------------------------------


async def refuse_connections(cluster: Cluster) -> None:
    await _admin(cluster, f"ALTER DATABASE {SINK_DB} ALLOW_CONNECTIONS false", TERMINATE_SINK)
    await asyncio.sleep(OUTAGE_S)
    await _admin(cluster, f"ALTER DATABASE {SINK_DB} ALLOW_CONNECTIONS true")


async def read_only(cluster: Cluster) -> None:
    await _admin(
        cluster, f"ALTER DATABASE {SINK_DB} SET default_transaction_read_only = on", TERMINATE_SINK
    )
    await asyncio.sleep(OUTAGE_S)
    # Sessions opened meanwhile stay read-only: the sink must not keep them.
    await _admin(cluster, f"ALTER DATABASE {SINK_DB} RESET default_transaction_read_only")


async def restart(cluster: Cluster) -> None:
    await asyncio.to_thread(cluster.restart)


async def crash(cluster: Cluster) -> None:
    await asyncio.to_thread(cluster.crash)


FAULTS: list[tuple[Callable[[Cluster], Awaitable[None]], float]] = [
    # (fault, seconds over which its part of the stream is produced, while it lasts)
    (refuse_connections, OUTAGE_S),
    (read_only, OUTAGE_S),
    (restart, 2.0),
    (crash, 2.0),
]


# -- the stream, the daemon, its readiness ------------------------------------------------


class Trickle:
    """Produces parts of a stream over a given time, keyed as dev/sample.py keys them."""

    def __init__(self, servers: str) -> None:
        self.servers = servers
        self.producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=10)
        self.ends: dict[tuple[str, int], int] = {}

    async def start(self, topics: Sequence[str]) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.servers)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, 3, 1) for t in topics])
        finally:
            await admin.close()
        await self.producer.start()

    async def send(self, records: Sequence[sample.Record], over_s: float = 0.0) -> None:
        steps = 10
        size = -(-len(records) // steps)
        for i in range(0, len(records), size):
            futures = [
                await self.producer.send(r.topic, r.value, key=r.key) for r in records[i : i + size]
            ]
            for meta in [await f for f in futures]:
                where = (meta.topic, meta.partition)
                self.ends[where] = max(self.ends.get(where, 0), meta.offset + 1)
            await asyncio.sleep(over_s / steps)

    async def stop(self) -> None:
        await self.producer.stop()


@dataclass
class Readiness:
    """``/health/ready`` polled every 0.1 s: (monotonic time, status; 0 when nothing answers)."""

    url: str
    polls: list[tuple[float, int]] = field(default_factory=list)

    @staticmethod
    def _get(url: str) -> int:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except OSError:
            return 0

    async def poll(self) -> None:
        while True:
            self.polls.append((time.monotonic(), await asyncio.to_thread(self._get, self.url)))
            await asyncio.sleep(0.1)

    async def back_after_503(self, since: int, timeout_s: float) -> float:
        """Wait for a 200 after a 503 seen since poll ``since``; the 503 spell's length."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen = self.polls[since:]
            down = [t for t, code in seen if code == 503]
            if down and any(code == 200 and t > down[-1] for t, code in seen):
                return down[-1] - down[0]
            await asyncio.sleep(0.1)
        raise AssertionError(f"readiness did not go 503 then 200: {self.polls[since:][-20:]}")


async def _count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM event_logs"))
    finally:
        await conn.close()


async def _offsets(url: str, group: str) -> dict[tuple[str, int], int]:
    """The group's offsets in PostgreSQL, but for partitions no record went to: the sink
    stores where those start (0) too, which the stream's ends do not list."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT topic, kafka_partition, next_offset FROM omnisink.consumer_offsets "
            "WHERE consumer_group = $1",
            group,
        )
    finally:
        await conn.close()
    return {(r["topic"], r["kafka_partition"]): r["next_offset"] for r in rows if r["next_offset"]}


def _alive(proc: subprocess.Popen[bytes], log: Path) -> None:
    assert proc.poll() is None, f"the daemon exited {proc.returncode}:\n{log.read_text()[-4000:]}"


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "run"], env=env, stdout=out, stderr=out
        )


@contextlib.asynccontextmanager
async def _daemon(env: dict[str, str], log: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    proc = _spawn(env, log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _wait_for(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        await asyncio.sleep(0.1)


async def _migrated(cluster: Cluster) -> tuple[str, str]:
    """The sink's database at head, and a reference database like it."""
    await _admin(cluster, f"CREATE DATABASE {SINK_DB}")
    await asyncio.to_thread(migrate.upgrade, cluster.url(SINK_DB))
    await _admin(cluster, f"CREATE DATABASE {REFERENCE_DB} TEMPLATE {SINK_DB}")
    return cluster.url(SINK_DB), cluster.url(REFERENCE_DB)


async def _same_as_a_clean_run(
    reference_url: str, tested_url: str, servers: str, stream: sample.Stream
) -> None:
    """A clean run of the same records into the reference database gives the same tables."""
    reference = Worker(
        sink_settings(reference_url, servers, f"ref-{uuid.uuid4().hex[:6]}", topics=stream.topics),
        until_caught_up=True,
        install_signal_handlers=False,
    )
    await asyncio.wait_for(reference.run(), 300)
    await assert_same_tables(reference_url, tested_url, stream.distinct_events)


async def test_the_daemon_outlives_the_database_misbehaving(
    kafka_server: Service, cluster: Cluster, tmp_path: Path
) -> None:
    timings: dict[str, float] = {}
    began = time.monotonic()
    sink_url, reference_url = await _migrated(cluster)
    timings["cluster and migrations"] = time.monotonic() - began

    stream = sample.generate(EVENTS, env=f"d{uuid.uuid4().hex[:8]}", seed=31)
    # Consecutive parts: one before the daemon starts, one during each fault, one after.
    bounds = [len(stream.records) * i // (len(FAULTS) + 2) for i in range(len(FAULTS) + 3)]
    parts = [stream.records[a:b] for a, b in itertools.pairwise(bounds)]
    trickle = Trickle(kafka_server.url)
    await trickle.start(stream.topics)
    await trickle.send(parts[0])

    http_port = free_port()
    group = "dbfaults"
    env = sink_env(
        sink_url,
        kafka_server.url,
        group,
        OMNISINK_TOPICS=",".join(stream.topics),
        OMNISINK_HTTP_HOST="127.0.0.1",
        OMNISINK_HTTP_PORT=str(http_port),
        # The breaker's default 60 s open spell would outlast the test's faults.
        OMNISINK_BREAKER_RECOVERY_S="1",
    )
    log = tmp_path / "daemon.log"
    readiness = Readiness(f"http://127.0.0.1:{http_port}/health/ready")
    poller: asyncio.Task[None] | None = None
    try:
        # 0. The server is down while the daemon starts, and comes up during its start-up.
        await asyncio.to_thread(cluster.stop)
        started = time.monotonic()
        async with _daemon(env, log) as proc:
            poller = asyncio.create_task(readiness.poll())

            async def retrying_at_start() -> bool:
                _alive(proc, log)
                return '"operation": "connect"' in log.read_text()

            await _wait_for("a retried connect at start-up", retrying_at_start, 60)
            await asyncio.to_thread(cluster.start)

            async def ready() -> bool:
                _alive(proc, log)
                return bool(readiness.polls) and readiness.polls[-1][1] == 200

            await _wait_for("ready after the start", ready, 90)
            timings["0 start while the server is down"] = time.monotonic() - started

            for n, (fault, over_s) in enumerate(FAULTS, start=1):
                written = await _count(sink_url)
                assert written < stream.distinct_events, "the fault must hit mid-stream"
                since = len(readiness.polls)
                at = time.monotonic()
                sending = asyncio.create_task(trickle.send(parts[n], over_s=over_s))
                await fault(cluster)
                await sending
                down_s = await readiness.back_after_503(since, timeout_s=120)
                _alive(proc, log)
                timings[f"{n} {fault.__name__} (not ready {down_s:.1f} s)"] = time.monotonic() - at

            at = time.monotonic()
            await trickle.send(parts[-1])

            async def finished() -> bool:
                _alive(proc, log)
                return await _offsets(sink_url, group) == trickle.ends

            await _wait_for("the whole stream in PostgreSQL", finished, 120)
            timings["rest of the stream"] = time.monotonic() - at
            served = [code for _, code in readiness.polls]
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0, log.read_text()[-4000:]
    finally:
        if poller is not None:
            poller.cancel()
        await trickle.stop()
    assert "worker.crashed" not in log.read_text()
    answering = served[next(i for i, code in enumerate(served) if code) :]
    assert 0 not in answering, "once up, /health answered throughout"

    at = time.monotonic()
    await _same_as_a_clean_run(reference_url, sink_url, kafka_server.url, stream)
    timings["reference run"] = time.monotonic() - at
    timings["total"] = time.monotonic() - began
    print("timings:", {k: round(v, 1) for k, v in timings.items()})


# A DBA's trigger refusing the sink's writes with an error nobody classified (P0001), once the
# first batches are in.
REFUSE_WRITES = (
    """
    CREATE FUNCTION public.refuse_sink_writes() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF (SELECT count(*) FROM public.event_logs) >= 300 THEN
            RAISE EXCEPTION 'writes to event_logs are refused';
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER refuse_sink_writes BEFORE INSERT ON public.event_logs
    FOR EACH STATEMENT EXECUTE FUNCTION public.refuse_sink_writes()
    """,
)
ALLOW_WRITES = (
    "DROP TRIGGER refuse_sink_writes ON public.event_logs",
    "DROP FUNCTION public.refuse_sink_writes()",
)


async def _execute(url: str, statements: Sequence[str]) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _drain(env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", "run", "--until-caught-up"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )


async def test_an_unclassified_write_error_exits_1_with_one_line_and_a_restart_completes(
    kafka_server: Service, cluster: Cluster
) -> None:
    sink_url, reference_url = await _migrated(cluster)
    stream = sample.generate(1_000, env=f"d{uuid.uuid4().hex[:8]}", seed=32)
    await produce(kafka_server.url, stream.records)
    env = sink_env(
        sink_url,
        kafka_server.url,
        "unclassified",
        OMNISINK_TOPICS=",".join(stream.topics),
        OMNISINK_HTTP_HOST="127.0.0.1",
        OMNISINK_BATCH_MAX_RECORDS="100",
    )
    await _execute(sink_url, REFUSE_WRITES)
    done = await asyncio.to_thread(_drain, env)
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 1, output[-4000:]
    lines = output.splitlines()
    events = [orjson.loads(line) for line in lines]  # every line is one JSON object
    errors = [e for e in events if e["level"] in {"error", "critical"}]
    assert [e["event"] for e in errors] == ["worker.crashed"], errors
    [crash] = errors
    assert crash["error_class"] == "asyncpg.exceptions.RaiseError"
    assert "writes to event_logs are refused" in crash["error"]
    assert crash["exception"].startswith("Traceback"), "the traceback, inside the one line"
    assert crash["batch_records"] > 0
    written = await _count(sink_url)
    assert 0 < written < stream.distinct_events, "the failure must land mid-stream"

    await _execute(sink_url, ALLOW_WRITES)
    again = await asyncio.to_thread(_drain, env)
    assert again.returncode == 0, again.stderr.decode()[-4000:]
    await _same_as_a_clean_run(reference_url, sink_url, kafka_server.url, stream)
