"""``make bench``: the sink against the raw COPY ceiling and a naive consumer, in one run.

One sample stream (dev/sample.py) is produced once; then, each into a fresh database:

1. **sink**: the worker drains the topics (set-based batches, one transaction per batch);
2. **naive**: a consumer that does what a first attempt does: one transaction per record
   (the same handlers, a batch of one) and a Kafka commit per record; timed on a prefix of
   the stream and reported as a rate;
3. **COPY ceiling**: every row the sink left, in every data table, written back with
   PostgreSQL's ``COPY`` into an empty database (no Kafka, no decoding, no conflict
   handling): the fastest those same rows can be written;
4. **replay**: ``omnisink replay`` of the same topics from the beginning (partitions assigned
   by hand, the daemon's commit), into a fresh database.

Rates are distinct events per second; the sink's is from its first record to its last
commit (the group join is excluded, and reported). Prints a table and a Markdown row block
to paste into BENCHMARKS.md with the machine's facts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from rich.console import Console
from rich.table import Table

from consumer import lifecycle, logs, migrate
from consumer.replay import plan, store
from consumer.replay.plan import Bounds
from consumer.replay.run import Replayer, replay_consumer
from consumer.replay.store import Replay
from consumer.settings import DatabaseSettings, KafkaSettings, Settings
from consumer.store import batch
from consumer.worker import Worker
from dev import sample
from dev.services import running, start_kafka, start_postgres
from handlers.base import Event
from handlers.envelope import DecodeError, decode
from handlers.registry import DATA_TABLES, HANDLERS, resolve


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def _database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')  # generated name, not input
    finally:
        await conn.close()
    base, _, query = server_url.partition("?")
    url = base.rsplit("/", 1)[0] + "/" + name
    url = f"{url}?{query}" if query else url
    await asyncio.to_thread(migrate.upgrade, url)
    return url


def _settings(db_url: str, servers: str, group: str, topics: list[str]) -> Settings:
    return Settings(
        database=DatabaseSettings(url=db_url),
        kafka=KafkaSettings(
            bootstrap_servers=servers, session_timeout_ms=6000, heartbeat_interval_ms=500
        ),
        group_id=group,
        topics=topics,
        http_enabled=False,
        log_level="WARNING",
        log_format="console",
    )


async def run_sink(db_url: str, servers: str, topics: list[str]) -> Result:
    worker = Worker(
        _settings(db_url, servers, f"bench-{uuid.uuid4().hex[:6]}", topics),
        until_caught_up=True,
        install_signal_handlers=False,
    )
    stats = await worker.run()
    first, last = stats.first_record_at or 0.0, stats.last_commit_at or 0.0
    join_s = first - stats.started_at
    return Result(
        "sink (set-based batches)",
        stats.written,
        last - first,
        f"{stats.batches} batches; group join {join_s:.1f} s not counted",
    )


async def run_naive(db_url: str, servers: str, topics: list[str], limit: int) -> Result:
    """One transaction and one Kafka commit per record, on the first ``limit`` records."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=servers,
        group_id=f"naive-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    conn = await asyncpg.connect(db_url)
    await consumer.start()
    written = 0
    started: float | None = None
    try:
        while written < limit:
            got = await consumer.getmany(timeout_ms=2000, max_records=1)
            if not got:
                break
            started = started or time.monotonic()
            for tp, records in got.items():
                for record in records:
                    try:
                        envelope = resolve(decode(record.value, max_bytes=1 << 20), record.topic)
                    except DecodeError:
                        continue
                    event = Event(envelope, record.topic, record.partition, record.offset)
                    async with conn.transaction():
                        result = await batch.write_events(conn, [event], HANDLERS)
                    written += len(result.new)
                    await consumer.commit(
                        {
                            TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(
                                record.offset + 1, ""
                            )
                        }
                    )
    finally:
        await consumer.stop()
        await conn.close()
    return Result(
        "naive (a transaction and a commit per record)",
        written,
        time.monotonic() - (started or time.monotonic()),
        f"first {written:,} events",
    )


async def run_copy_ceiling(source_url: str, target_url: str) -> Result:
    """COPY every row the sink left into an empty database; timed from the first COPY."""
    source = await asyncpg.connect(source_url)
    target = await asyncpg.connect(target_url)
    try:
        rows = {}
        for table in DATA_TABLES:
            schema, _, name = table.rpartition(".")
            rows[table] = (schema or "public", name, await source.fetch(f"SELECT * FROM {table}"))
        events = len(rows["event_logs"][2])
        # The history trigger is the seed's and would write rows of its own.
        await target.execute("SET session_replication_role = replica")
        started = time.monotonic()
        async with target.transaction():
            for schema, name, records in rows.values():
                if records:
                    await target.copy_records_to_table(
                        name,
                        records=[tuple(_plain(v) for v in r.values()) for r in records],
                        columns=list(records[0].keys()),
                        schema_name=schema,
                    )
        seconds = time.monotonic() - started
    finally:
        await source.close()
        await target.close()
    total = sum(len(r[2]) for r in rows.values())
    return Result("COPY ceiling (the same rows)", events, seconds, f"{total:,} rows in all")


async def run_replay(db_url: str, servers: str, topics: list[str]) -> Result:
    """A replay of every topic from the beginning, timed from its first record to its last
    commit, as the sink's is."""
    settings = _settings(db_url, servers, "unused", topics)
    consumer = replay_consumer(settings)
    await consumer.start()
    try:
        ranges = await plan.ranges(consumer, settings, topics, [], Bounds(from_beginning=True))
    finally:
        await consumer.stop()
    replay = Replay(name=f"bench-{uuid.uuid4().hex[:6]}", ranges=tuple(ranges))
    conn = await asyncpg.connect(db_url)
    try:
        await store.create(conn, replay)
    finally:
        await conn.close()
    replayer = Replayer(settings, replay, install_signal_handlers=False)
    progress = await replayer.run()
    stats = progress.stats
    first, last = stats.first_record_at or 0.0, stats.last_commit_at or 0.0
    return Result(
        "replay (omnisink replay)", stats.written, last - first, f"{stats.batches} batches"
    )


def _plain(value: object) -> object:
    """A value as COPY takes it back: an array of composites (``omnisink.lease_key[]``) comes
    out as asyncpg Records, which go back in as tuples (asyncpg reads a nested tuple as a
    composite and any other sequence as one more array dimension)."""
    if isinstance(value, list):
        return [tuple(v) if isinstance(v, asyncpg.Record) else v for v in value]
    return value


async def bench(
    pg_url: str, servers: str, events: int, naive_limit: int, console: Console
) -> list[Result]:
    """Produce a stream of ``events`` and measure [COPY ceiling, sink, naive, replay] on it."""
    stream = sample.generate(events, env=f"bench{uuid.uuid4().hex[:6]}")
    started = time.monotonic()
    await sample.produce(servers, stream.records)
    console.print(
        f"produced {len(stream.records):,} records ({stream.distinct_events:,} distinct "
        f"events) in {time.monotonic() - started:.1f} s"
    )
    kinds = ("sink", "naive", "copy", "replay")
    names = [f"bench_{what}_{uuid.uuid4().hex[:8]}" for what in kinds]
    sink_db, naive_db, copy_db, replay_db = [await _database(pg_url, name) for name in names]
    try:
        sink = await run_sink(sink_db, servers, stream.topics)
        naive = await run_naive(naive_db, servers, stream.topics, naive_limit)
        ceiling = await run_copy_ceiling(sink_db, copy_db)
        replayed = await run_replay(replay_db, servers, stream.topics)
    finally:
        conn = await asyncpg.connect(pg_url)
        try:
            for name in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
    return [ceiling, sink, naive, replayed]


async def _main(events: int, naive_limit: int, console: Console) -> list[Result]:
    with running(start_postgres()) as pg, running(start_kafka()) as kafka:
        console.print(f"PostgreSQL: {pg.kind}; broker: {kafka.kind}")
        return await bench(pg.url, kafka.url, events, naive_limit, console)


def _report(console: Console, results: list[Result], events: int) -> None:
    table = Table(title=f"{events:,} events")
    for column in ("what", "events", "seconds", "events/s", "of COPY", "note"):
        table.add_column(column, justify="left" if column in {"what", "note"} else "right")
    ceiling = results[0].rate
    for r in results:
        share = f"{r.rate / ceiling:.1%}" if ceiling else "-"
        table.add_row(r.name, f"{r.events:,}", f"{r.seconds:.2f}", f"{r.rate:,.0f}", share, r.note)
    console.print(table)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    console.print(f"machine: {platform.node()} ({machine})")
    for r in results:
        console.print(f"| {r.name} | {r.events:,} | {r.seconds:.2f} | {r.rate:,.0f} | {r.note} |")


def _write_json(results: list[Result], events: int, path: str) -> None:
    """bench-results.json: the figures this run measured (and only those)."""
    ceiling, sink, naive, replayed = results
    git = shutil.which("git")
    commit = ""
    if git:
        args = [git, "rev-parse", "--short", "HEAD"]  # a fixed command: the checkout's commit
        done = subprocess.run(args, capture_output=True, text=True, check=False)  # noqa: S603
        commit = done.stdout.strip()
    figures = {
        "events": events,
        "copy_events_per_s": round(ceiling.rate),
        "sink_events_per_s": round(sink.rate),
        "naive_events_per_s": round(naive.rate),
        "replay_events_per_s": round(replayed.rate),
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()})",
        "commit": commit or None,
    }
    with open(path, "wb") as f:
        f.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.bench", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--naive-events", type=int, default=5_000)
    parser.add_argument("--json", default="bench-results.json", help="where the figures go")
    parser.add_argument(
        "--gc",
        choices=("tuned", "default"),
        default="tuned",
        help="the collector as `omnisink run` sets it (consumer/lifecycle.py), or Python's",
    )
    args = parser.parse_args(argv)
    logs.configure("WARNING", "console")
    if args.gc == "tuned":
        lifecycle.tune_gc()
    console = Console()
    results = asyncio.run(_main(args.events, args.naive_events, console))
    _report(console, results, args.events)
    _write_json(results, args.events, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
