"""The ``omnisink replay`` commands, from parsed arguments to what the operator reads.

consumer/cli.py parses the arguments; :class:`ReplayError` carries the exit status (README,
"Replay"): 1 stopped or failed part-way (resumable), 2 bad arguments or configuration.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime

import asyncpg
import typer
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from consumer import lifecycle
from consumer.dlq import queries
from consumer.dlq.model import DlqError
from consumer.dlq.render import console, dumps
from consumer.errors import FatalError
from consumer.replay import plan, store
from consumer.replay.plan import Bounds, PlanError
from consumer.replay.run import Progress as ReplayProgress
from consumer.replay.run import Replayer, ReplayFailed, replay_consumer
from consumer.replay.store import Replay, ReplayExists
from consumer.settings import Settings
from handlers.registry import HANDLERS

FAMILIES: tuple[str, ...] = tuple(h.name for h in HANDLERS)


class ReplayError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def families(reapply: bool, only: Sequence[str]) -> tuple[str, ...]:
    """The handler families a replay re-applies: none, the named ones, or (``--reapply``
    alone) every one."""
    if only and not reapply:
        raise ReplayError("--only needs --reapply", 2)
    unknown = sorted(set(only) - set(FAMILIES))
    if unknown:
        raise ReplayError(
            f"no handler family {', '.join(unknown)}; the families: {', '.join(FAMILIES)}", 2
        )
    if not reapply:
        return ()
    return tuple(f for f in FAMILIES if not only or f in only)


async def start(
    settings: Settings,
    *,
    topics: Sequence[str],
    all_topics: bool,
    partitions: Sequence[int],
    bounds: Bounds,
    reapply: tuple[str, ...],
    name: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Plan a new replay and run it (or, with ``dry_run``, say what it would read)."""
    if bool(topics) == all_topics:
        raise ReplayError("give --topic T (one or more) or --all-topics", 2)
    # Unique without --name: two replays started in the same second get different names.
    name = name or f"replay-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:4]}"
    consumer = replay_consumer(settings)
    await start_client(consumer, settings)
    try:
        names = await plan.topics(consumer, settings, topics, all_topics=all_topics)
        ranges = await plan.ranges(consumer, settings, names, partitions, bounds)
    except PlanError as exc:
        raise ReplayError(str(exc), 2) from exc
    finally:
        await consumer.stop()
    replay = Replay(name=name, ranges=tuple(ranges), reapply=reapply)
    if dry_run:
        _report(replay, None, as_json=as_json, dry_run=True)
        return
    async with connection(settings) as conn:
        try:
            await store.create(conn, replay)
        except ReplayExists as exc:
            raise ReplayError(
                f"a replay named {name} exists: `omnisink replay --resume {name}` goes on with "
                "it, or give another --name",
                2,
            ) from exc
    await _run(settings, replay, as_json=as_json)


async def resume(settings: Settings, name: str, *, as_json: bool) -> None:
    async with connection(settings) as conn:
        found = await store.load(conn, name)
    if not found:
        raise ReplayError(f"no replay named {name} (`omnisink replay list`)", 2)
    await _run(settings, found[0], as_json=as_json)


async def list_replays(settings: Settings, *, as_json: bool) -> None:
    async with connection(settings) as conn:
        replays = await store.load(conn)
        at = await store.positions(conn)
    rows = []
    for replay in replays:
        progress = store.progress(replay, at.get(replay.name, {}))
        rows.append(
            {
                "name": replay.name,
                "status": replay.status,
                "started_at": replay.started_at,
                "finished_at": replay.finished_at,
                "reapply": list(replay.reapply),
                "records": sum(r.records for r in replay.ranges),
                "read": sum(offset - r.from_offset for r, offset in progress),
                "partitions": [
                    {
                        "topic": r.topic,
                        "partition": r.partition,
                        "from_offset": r.from_offset,
                        "to_offset": r.to_offset,
                        "next_offset": offset,
                    }
                    for r, offset in progress
                ],
            }
        )
    if as_json:
        typer.echo(dumps(rows))
        return
    if not rows:
        typer.echo("no replays")
        return
    table = Table()
    for column in ("name", "status", "started_at", "partitions", "read", "reapply"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            str(row["name"]),
            str(row["status"]),
            f"{row['started_at']:%Y-%m-%d %H:%M:%S}",
            str(len(row["partitions"])),  # type: ignore[arg-type]
            f"{row['read']:,} / {row['records']:,}",
            ", ".join(row["reapply"]) or "-",  # type: ignore[arg-type]
        )
    console().print(table)


async def _run(settings: Settings, replay: Replay, *, as_json: bool) -> None:
    if replay.status == "done":
        typer.echo(f"replay {replay.name} is done (`omnisink replay list`)", err=True)
        _report(replay, None, as_json=as_json)
        return
    with _progress_bar(replay, enabled=not as_json) as on_progress:
        # Ctrl-C and SIGTERM stop it after the batch in hand, where a process has signals.
        signals = threading.current_thread() is threading.main_thread()
        lifecycle.tune_gc()
        replayer = Replayer(
            settings, replay, on_progress=on_progress, install_signal_handlers=signals
        )
        try:
            progress = await replayer.run()
        except FatalError as exc:
            raise ReplayError(f"{exc}", 2) from exc
        except ReplayFailed as exc:
            _report(replay, replayer.progress, as_json=as_json)
            raise ReplayError(str(exc), 1) from exc
    _report(replay, progress, as_json=as_json)


async def start_client(client: AIOKafkaConsumer | AIOKafkaAdminClient, settings: Settings) -> None:
    """Start a Kafka client of an operator command; brokers that cannot be reached exit 2,
    naming the setting."""
    try:
        await client.start()
    except Exception as exc:
        raise ReplayError(
            f"cannot reach the Kafka brokers at {settings.kafka.bootstrap_servers} "
            f"(OMNISINK_KAFKA_BOOTSTRAP_SERVERS): {exc}",
            2,
        ) from exc


@contextlib.asynccontextmanager
async def connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """The operator commands' connection (consumer/dlq/queries.py), its failures exit 2."""
    try:
        async with queries.connect(settings) as conn:
            yield conn
    except DlqError as exc:
        raise ReplayError(str(exc), exc.exit_code) from exc


@contextlib.contextmanager
def _progress_bar(replay: Replay, *, enabled: bool) -> Iterator[Callable[[ReplayProgress], None]]:
    """A progress bar per topic on a terminal (stderr); nothing otherwise."""
    out = Console(stderr=True)
    if not enabled or not out.is_terminal:
        yield lambda progress: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} ev/s"),
        TimeRemainingColumn(),
    )
    topics = sorted({r.topic for r in replay.ranges})
    with Progress(*columns, console=out, transient=False) as bar:
        tasks: dict[str, TaskID] = {
            t: bar.add_task(
                t, total=sum(r.records for r in replay.ranges if r.topic == t), rate="-"
            )
            for t in topics
        }

        def update(progress: ReplayProgress) -> None:
            rate = progress.stats.events_per_s
            for topic, task in tasks.items():
                done = sum(
                    r.records - progress.left(r.tp) for r in progress.ranges if r.topic == topic
                )
                bar.update(task, completed=done, rate=f"{rate:,.0f}" if rate else "-")

        yield update


def _report(
    replay: Replay, progress: ReplayProgress | None, *, as_json: bool, dry_run: bool = False
) -> None:
    if progress is None:
        # A dry run reports every range as read to its end; a replay already done, nothing read.
        at = {r.tp: r.to_offset if dry_run else r.from_offset for r in replay.ranges}
        progress = ReplayProgress(replay.ranges, at)
    summary = progress.summary(replay.name)
    if dry_run:
        summary["records"] = progress.read
        summary["dry_run"] = True
    if as_json:
        typer.echo(dumps(summary))
        return
    table = Table(title=f"replay {replay.name}" + (" (dry run)" if dry_run else ""))
    for column in ("topic", "partition", "from_offset", "to_offset", "records"):
        table.add_column(column, no_wrap=True, justify="left" if column == "topic" else "right")
    for p in summary["partitions"]:
        table.add_row(
            p["topic"],
            str(p["partition"]),
            str(p["from_offset"]),
            str(p["to_offset"]),
            f"{p['to_offset'] - p['from_offset']:,}",
        )
    console().print(table)
    if not dry_run:
        typer.echo(
            f"records {summary['records']:,}, written {summary['written']:,}, duplicates "
            f"{summary['duplicates']:,}, reapplied {summary['reapplied']:,}, dead letters "
            f"{summary['dead_letters']:,}"
        )
