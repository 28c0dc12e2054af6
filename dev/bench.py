"""``make bench``: every figure of BENCHMARKS.md, in one run.

One sample stream (dev/sample.py) is produced once; then, each into a fresh database:

1. **sink**: ``omnisink run --until-caught-up`` in a process of its own (dev/bench_daemon.py)
   drains the topics (set-based batches, one transaction per batch); its rate, from its
   summary, and its peak RSS (the kernel's ``ru_maxrss`` of the process);
2. **naive**: a consumer that does what a first attempt does: one transaction per record
   (the same handlers, a batch of one) and a Kafka commit per record; timed on a prefix of
   the stream and reported as a rate;
3. **COPY ceiling**: every row the sink left, in every data table, written back with
   PostgreSQL's ``COPY`` into an empty database (no Kafka, no decoding, no conflict
   handling): the fastest those same rows can be written;
4. **replay**: ``omnisink replay`` of the same topics from the beginning (partitions assigned
   by hand, the daemon's commit);
5. **two members**: two ``omnisink run --until-caught-up`` of one group share the partitions;
6. **latency**: produce -> committed in PostgreSQL, at a steady rate into a running daemon
   (dev/bench_latency.py);
7. **queries and CRUD**: the seeds' query patterns as ``omnisink query``/``maintenance stuck``
   run them, and the seeds' single-row statements, on a large corpus loaded with COPY
   (dev/bench_corpus.py, dev/bench_queries.py).

Rates are distinct events per second, from the first record to the last commit (the group
join is excluded, and reported). Prints one table of every figure with its target and whether
it meets it, Markdown rows to paste into BENCHMARKS.md, and writes bench-results.json.
"""

from __future__ import annotations

import argparse
import asyncio
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

from consumer import lifecycle, logs, migrate
from consumer.replay import plan, store
from consumer.replay.plan import Bounds
from consumer.replay.run import Replayer, replay_consumer
from consumer.replay.store import Replay
from consumer.settings import DatabaseSettings, KafkaSettings, Settings
from consumer.store import batch
from dev import bench_corpus, bench_daemon, bench_latency, bench_queries, sample
from dev.bench_report import Figures, Result, report
from dev.services import running, start_kafka, start_postgres
from handlers.base import Event
from handlers.envelope import DecodeError, decode
from handlers.registry import DATA_TABLES, HANDLERS, resolve


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


async def run_sink(db_url: str, servers: str, topics: list[str]) -> tuple[Result, float]:
    """``omnisink run --until-caught-up`` in a process of its own: its rate (first record to
    last commit, from its summary) and its peak RSS in MB."""
    group = f"bench-{uuid.uuid4().hex[:6]}"
    (summary,), (rss_kib,) = await bench_daemon.drain(db_url, servers, group, topics)
    join_s = summary.elapsed_s - summary.active_s
    result = Result(
        "sink (omnisink run, set-based batches)",
        summary.written,
        summary.active_s,
        f"{summary.batches} batches; group join and drain check {join_s:.1f} s not counted",
    )
    return result, rss_kib / 1024


async def run_two_members(db_url: str, servers: str, topics: list[str]) -> Result:
    """Two ``omnisink run --until-caught-up`` of one group sharing the partitions: every
    distinct event over the first record either took to the last commit either made."""
    group = f"bench2-{uuid.uuid4().hex[:6]}"
    summaries, _ = await bench_daemon.drain(db_url, servers, group, topics, members=2)
    firsts = [s.first_record_at for s in summaries if s.written and s.first_record_at]
    lasts = [s.last_commit_at for s in summaries if s.written and s.last_commit_at]
    written = sum(s.written for s in summaries)
    seconds = max(lasts) - min(firsts) if firsts and lasts else 0.0
    shares = " + ".join(f"{s.written:,}" for s in summaries)
    return Result(
        "two members (one group)",
        written,
        seconds,
        f"{shares} events; the first join not counted, the rebalance as the second joins is",
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


@dataclass
class Options:
    """What to measure, and how much of it (the defaults are the figures of BENCHMARKS.md)."""

    events: int = 200_000
    naive_events: int = 5_000
    # The latency run: seconds at a steady rate (0: not measured).
    latency_s: float = 60.0
    latency_rate: float = 2_000.0
    # OMNISINK_BATCH_MAX_WAIT_MS of the latency run's daemon (None: the setting's default).
    latency_batch_wait_ms: int | None = None
    # The query benchmark's event_logs rows, and a tenth as many workflows (0: not measured).
    query_rows: int = 1_000_000
    query_iterations: int = 100
    crud_iterations: int = 100
    two_members: bool = True


async def bench(pg_url: str, servers: str, options: Options, console: Console) -> Figures:
    """Produce a stream of ``options.events`` and measure every figure on it (and on its own
    streams: the latency run, the query corpus), each into a fresh database."""
    stream = sample.generate(options.events, env=f"bench{uuid.uuid4().hex[:6]}")
    started = time.monotonic()
    await sample.produce(servers, stream.records)
    console.print(
        f"produced {len(stream.records):,} records ({stream.distinct_events:,} distinct "
        f"events) in {time.monotonic() - started:.1f} s"
    )
    kinds = ("sink", "naive", "copy", "replay", "two", "latency", "queries")
    names = [f"bench_{what}_{uuid.uuid4().hex[:8]}" for what in kinds]
    dbs = dict(zip(kinds, [await _database(pg_url, name) for name in names], strict=True))
    figures = Figures(
        events=options.events,
        latency_s=options.latency_s,
        latency_rate=options.latency_rate,
        latency_batch_wait_ms=options.latency_batch_wait_ms,
        query_rows=options.query_rows,
    )
    topics = stream.topics
    try:
        sink, figures.peak_rss_mb = await run_sink(dbs["sink"], servers, topics)
        console.print(f"sink: {sink.rate:,.0f} events/s, peak RSS {figures.peak_rss_mb:.0f} MB")
        naive = await run_naive(dbs["naive"], servers, topics, options.naive_events)
        ceiling = await run_copy_ceiling(dbs["sink"], dbs["copy"])
        replayed = await run_replay(dbs["replay"], servers, topics)
        figures.results = [ceiling, sink, naive, replayed]
        if options.two_members:
            figures.two_members = await run_two_members(dbs["two"], servers, topics)
            console.print(f"two members: {figures.two_members.rate:,.0f} events/s")
        if options.latency_s > 0:
            wait = None
            if options.latency_batch_wait_ms is not None:
                wait = {"OMNISINK_BATCH_MAX_WAIT_MS": str(options.latency_batch_wait_ms)}
            figures.latency = await bench_latency.measure(
                dbs["latency"],
                servers,
                duration_s=options.latency_s,
                rate=options.latency_rate,
                settings=wait,
            )
            console.print(f"latency: p99 {figures.latency.p99_ms:.0f} ms")
        if options.query_rows > 0:
            started = time.monotonic()
            corpus = await bench_corpus.load(dbs["queries"], options.query_rows)
            console.print(
                "query corpus: "
                + ", ".join(f"{table} {n:,}" for table, n in corpus.rows.items())
                + f" rows, loaded in {time.monotonic() - started:.0f} s"
            )
            figures.queries = await bench_queries.time_patterns(
                dbs["queries"], corpus, options.query_iterations
            )
            figures.crud = await bench_queries.time_crud(
                dbs["queries"], corpus, options.crud_iterations
            )
    finally:
        conn = await asyncpg.connect(pg_url)
        try:
            for name in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
    return figures


async def _main(options: Options, console: Console) -> Figures:
    with running(start_postgres()) as pg, running(start_kafka()) as kafka:
        console.print(f"PostgreSQL: {pg.kind}; broker: {kafka.kind}")
        return await bench(pg.url, kafka.url, options, console)


def _commit() -> str | None:
    git = shutil.which("git")
    if not git:
        return None
    args = [git, "rev-parse", "--short", "HEAD"]  # a fixed command: the checkout's commit
    done = subprocess.run(args, capture_output=True, text=True, check=False)  # noqa: S603
    return done.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.bench", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    defaults = Options()
    parser.add_argument("--events", type=int, default=defaults.events)
    parser.add_argument("--naive-events", type=int, default=defaults.naive_events)
    parser.add_argument(
        "--latency-s",
        type=float,
        default=defaults.latency_s,
        help="seconds of the steady-rate latency run (0: skip it)",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=defaults.latency_rate,
        help="records per second of the latency run",
    )
    parser.add_argument(
        "--latency-batch-wait-ms",
        type=int,
        default=None,
        help="OMNISINK_BATCH_MAX_WAIT_MS of the latency run's daemon (default: the setting's)",
    )
    parser.add_argument(
        "--query-rows",
        type=int,
        default=defaults.query_rows,
        help="event_logs rows of the query and CRUD corpus, a tenth as many workflows (0: skip)",
    )
    parser.add_argument("--query-iterations", type=int, default=defaults.query_iterations)
    parser.add_argument("--crud-iterations", type=int, default=defaults.crud_iterations)
    parser.add_argument("--no-two-members", action="store_true", help="skip the two-member drain")
    parser.add_argument("--json", default="bench-results.json", help="where the figures go")
    parser.add_argument(
        "--gc",
        choices=("tuned", "default"),
        default="tuned",
        help="the collector of the in-process measurements (naive, replay) as `omnisink run` "
        "sets it (consumer/lifecycle.py), or Python's; the daemons always tune it",
    )
    args = parser.parse_args(argv)
    options = Options(
        events=args.events,
        naive_events=args.naive_events,
        latency_s=args.latency_s,
        latency_rate=args.latency_rate,
        latency_batch_wait_ms=args.latency_batch_wait_ms,
        query_rows=args.query_rows,
        query_iterations=args.query_iterations,
        crud_iterations=args.crud_iterations,
        two_members=not args.no_two_members,
    )
    logs.configure("WARNING", "console")
    if args.gc == "tuned":
        lifecycle.tune_gc()
    console = Console()
    commit = _commit()  # the code that runs, whatever is committed meanwhile
    figures = asyncio.run(_main(options, console))
    report(console, figures)
    with open(args.json, "wb") as f:
        f.write(orjson.dumps(figures.as_json(commit), option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
