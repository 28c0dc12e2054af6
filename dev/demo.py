"""``make demo``: the sink end to end on embedded services, ending in a summary.

Starts PostgreSQL and a Kafka-protocol broker (dev/services.py: the environment's,
else embedded), migrates, produces what the OmniNode producers really send (dev/producers.py:
every producer, on its own topics and namespaces, in its own bytes) for at least 10,000
events with duplicates, out-of-order arrivals across topics and a few poison records, runs the
sink on its default subscription until it has caught up, prints what landed where (read back
from the database, and checked against what was produced), and stops what it started. Exit
status 0 only when every check holds.

The producers' topic names are fixed (``dev.…``, ``omninode.bridge.…``), so the broker must
not hold them yet: the embedded one or a fresh container does not.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.table import Table

from consumer import logs, migrate
from consumer.settings import DatabaseSettings, KafkaSettings, Settings
from consumer.stats import Stats
from consumer.worker import Worker
from dev import producers, sample
from dev.services import running, start_kafka, start_postgres
from handlers.registry import DATA_TABLES

TABLES = (*DATA_TABLES, "omnisink.dead_letters")
PARTITIONS = 3  # the bridge KafkaClient's default partition count
SEED = 1


@dataclass(frozen=True)
class Poison:
    """A record that can never be written, and the dead-letter kind it must get."""

    slug: str
    value: bytes | None
    kind: str


def poison_records() -> list[Poison]:
    """One of each kind of bad input a producer we don't control can send, on the producers'
    own topics."""
    bridge = producers.bridge_topic(producers.DEV, "stamp_workflow_started")
    fsm = f"{producers.INTELLIGENCE_PREFIX}.fsm.state.changed.v1"
    # The FSM effect's envelope, claiming a move INGESTION does not have.
    skipped_a_state = producers.encode(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "FSM_STATE_CHANGED",
            "correlation_id": str(uuid.uuid4()),
            "timestamp": producers.BASE_TIME.timestamp(),
            "version": "1.0.0",
            "source": {"service": "omniintelligence", "node_type": "kafka_event_effect"},
            "payload": {
                "fsm_type": "INGESTION",
                "entity_id": "doc_000_poison",
                "previous_state": "RECEIVED",
                "current_state": "INDEXED",
                "action": "COMPLETE_INDEXING",
                "transition_timestamp": producers.iso(producers.BASE_TIME),
            },
        }
    )
    return [
        Poison(bridge, b"{not json", "decode"),
        Poison(bridge, b'{"event_type": "stamp_workflow_started", "payload": {}}', "schema"),
        Poison(bridge, b'{"event_id": "x\\u0000"}', "decode"),
        Poison(fsm, skipped_a_state, "invalid_transition"),
    ]


async def _create_database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')  # name is generated, not input
    finally:
        await conn.close()
    base, _, query = server_url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return f"{base}?{query}" if query else base


async def _produce(servers: str, stream: sample.Stream, poison: list[Poison]) -> float:
    """The stream, with the poison records in its middle; returns the seconds it took."""
    middle = len(stream.records) // 2
    bad = [sample.Record(p.slug, b"poison", p.value, uuid.uuid4(), "POISON") for p in poison]
    started = time.monotonic()
    await sample.produce(
        servers, [*stream.records[:middle], *bad, *stream.records[middle:]], partitions=PARTITIONS
    )
    return time.monotonic() - started


async def _refuse_used_topics(servers: str, stream: sample.Stream) -> None:
    """Stop early on a broker that already holds the producers' topics: their old records
    would be read too, and no count would check out."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    used = sorted(existing & set(stream.topics))
    if used:
        raise SystemExit(f"demo: the broker already has the producers' topics {used}")


async def _dlq_count(servers: str, topics: list[str]) -> int:
    consumer = AIOKafkaConsumer(
        *[f"{t}.dlq" for t in topics],
        bootstrap_servers=servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    count = 0
    try:
        while True:
            got = await consumer.getmany(timeout_ms=1000)
            if not got:
                break
            count += sum(len(rs) for rs in got.values())
    finally:
        await consumer.stop()
    return count


async def _counts(db_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(db_url)
    try:
        # Table names come from the constant TABLES above, never from input.
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
    finally:
        await conn.close()


async def demo(events: int, console: Console) -> bool:
    """Run the demo; return whether every check held."""
    with running(start_postgres()) as pg, running(start_kafka()) as kafka:
        console.print(f"[bold]services[/]: PostgreSQL ({pg.kind}), broker ({kafka.kind})")
        db_url = await _create_database(pg.url, f"omnisink_demo_{uuid.uuid4().hex[:8]}")
        await asyncio.to_thread(migrate.upgrade, db_url)
        stream = producers.stream(events, seed=SEED)
        poison = poison_records()
        await _refuse_used_topics(kafka.url, stream)
        produce_s = await _produce(kafka.url, stream, poison)
        console.print(
            f"[bold]produced[/]: {len(stream.records):,} records ({stream.distinct_events:,} "
            f"distinct events, {len(stream.records) - stream.distinct_events:,} duplicates, "
            f"{len(poison)} poison) to {len(stream.topics)} topics in {produce_s:.1f} s"
        )
        settings = Settings(
            database=DatabaseSettings(url=db_url),
            kafka=KafkaSettings(
                bootstrap_servers=kafka.url, session_timeout_ms=6000, heartbeat_interval_ms=500
            ),
            group_id="omnisink-demo",
            http_enabled=False,
            log_format="console",
            log_level="WARNING",
        )
        worker = Worker(settings, until_caught_up=True, install_signal_handlers=False)
        stats = await worker.run()
        counts = await _counts(db_url)
        dlq = await _dlq_count(kafka.url, sorted({p.slug for p in poison}))
        return _report(console, stream, poison, stats, counts, dlq)


def _report(  # noqa: PLR0917 - private, called once
    console: Console,
    stream: sample.Stream,
    poison: list[Poison],
    stats: Stats,
    counts: dict[str, int],
    dlq: int,
) -> bool:
    table = Table(title="rows per table (read back from PostgreSQL)")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in counts.items():
        table.add_row(name, f"{count:,}")
    console.print(table)
    console.print(
        f"[bold]sink[/]: {stats.records:,} records in {stats.batches} batches, "
        f"{stats.written:,} events written, {stats.duplicates:,} duplicates skipped, "
        f"{stats.dead_letters} dead letters; {stats.events_per_s:,.0f} events/s from the "
        f"first record to the last commit ({stats.elapsed_s:.1f} s in all, group join "
        "included)"
    )
    checks = {
        "event_logs holds each distinct event once": counts["event_logs"] == stream.distinct_events,
        "every duplicate was skipped": stats.duplicates
        == len(stream.records) - stream.distinct_events,
        "dead-letter table holds exactly the poison records": counts["omnisink.dead_letters"]
        == len(poison),
        "dead-letter topics hold exactly the poison records": dlq == len(poison),
        "every record consumed": stats.records == len(stream.records) + len(poison),
        "the sink's own counts match the database": stats.written == counts["event_logs"]
        and stats.dead_letters == counts["omnisink.dead_letters"],
    }
    ok = True
    for label, held in checks.items():
        ok &= held
        console.print(f"  {'[green]ok[/]' if held else '[red]FAILED[/]'}  {label}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.demo", description=__doc__)
    parser.add_argument("--events", type=int, default=10_000, help="distinct events (>= 10000)")
    args = parser.parse_args(argv)
    logs.configure("WARNING", "console")
    console = Console()
    ok = asyncio.run(demo(args.events, console))
    console.print("[bold green]demo: all checks hold[/]" if ok else "[bold red]demo: FAILED[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
