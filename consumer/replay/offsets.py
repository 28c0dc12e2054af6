"""``omnisink offsets show|reset``: where a consumer group reads from.

The sink's offsets live in PostgreSQL (consumer/store/offsets.py); Kafka's committed offset is
written after each batch for lag tooling only, and read only where PostgreSQL holds nothing.
So Kafka's own reset tooling (``kafka-consumer-groups --reset-offsets``) is not enough: a reset
moves both, PostgreSQL's in a transaction that commits only once Kafka took its half. While
the group has members a reset is refused: a live member would overwrite it with its next
batch (and a dead one the broker still counts holds partitions until its session times out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata
from rich.table import Table

from consumer import drain
from consumer.dlq.render import console, dumps
from consumer.kafka import kafka_options
from consumer.replay import plan
from consumer.replay.commands import ReplayError, connection, start_client
from consumer.replay.run import replay_consumer
from consumer.settings import Settings
from consumer.store import offsets


@dataclass(frozen=True)
class Target:
    """Where a reset moves each partition: exactly one of these."""

    earliest: bool = False
    latest: bool = False
    offset: int | None = None
    time: datetime | None = None

    def __post_init__(self) -> None:
        given = (self.earliest, self.latest, self.offset is not None, self.time is not None)
        if sum(given) != 1:
            raise ReplayError(
                "give exactly one of --to-earliest, --to-latest, --to-offset, --to-time", 2
            )
        if self.offset is not None and self.offset < 0:
            raise ReplayError("--to-offset must be 0 or more", 2)


async def _partitions(
    consumer: AIOKafkaConsumer, settings: Settings, group: str, topics: Sequence[str]
) -> list[TopicPartition]:
    """The partitions of the topics named, else of what the subscription matches and what
    PostgreSQL holds offsets of for the group."""
    try:
        names = await plan.topics(consumer, settings, topics, all_topics=not topics)
    except plan.PlanError as exc:
        raise ReplayError(str(exc), 2) from exc
    if not topics:
        async with connection(settings) as conn:
            held = await conn.fetch(offsets.GROUP_TOPICS.sql, group)
        existing = await consumer.topics()
        names = sorted(set(names) | {r["topic"] for r in held if r["topic"] in existing})
    return sorted(
        TopicPartition(t, p) for t in names for p in consumer.partitions_for_topic(t) or ()
    )


async def _committed(
    settings: Settings, group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """Kafka's committed offsets of the group. Asked by a consumer of the group that never
    joins it, not the admin client: one Kafka-compatible broker breaks the admin client's
    OffsetFetch version, and the consumer's is the one the daemon already relies on."""
    consumer = _group_consumer(settings, group)
    await start_client(consumer, settings)
    try:
        consumer.assign(tps)
        found = {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()
    return {tp: offset for tp, offset in found.items() if offset is not None and offset >= 0}


def _group_consumer(settings: Settings, group: str) -> AIOKafkaConsumer:
    """A consumer of ``group`` that never joins it (partitions assigned by hand)."""
    return AIOKafkaConsumer(**kafka_options(settings), group_id=group, enable_auto_commit=False)


async def members(settings: Settings, group: str) -> list[str]:
    """The group's members as the broker counts them: ``client_id@host (member_id)``."""
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await start_client(admin, settings)
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    out = []
    for response in responses:
        for described in response.to_object()["groups"]:
            for m in described["members"]:
                out.append(f"{m['client_id']}@{m['client_host']} ({m['member_id']})")
    return out


async def show(settings: Settings, group: str | None, *, as_json: bool) -> None:
    group = group or settings.group_id
    consumer = replay_consumer(settings)
    await start_client(consumer, settings)
    try:
        tps = await _partitions(consumer, settings, group, [])
    finally:
        await consumer.stop()
    starts, ends = await drain.end_offsets(settings, tps) if tps else ({}, {})
    committed = await _committed(settings, group, tps) if tps else {}
    async with connection(settings) as conn:
        stored = await offsets.load(conn, group, tps)
    rows: list[dict[str, Any]] = []
    for tp in tps:
        end = ends.get(tp)
        held = stored.get(tp)
        rows.append(
            {
                "group": group,
                "topic": tp.topic,
                "partition": tp.partition,
                "stored_offset": held,
                "committed_offset": committed.get(tp),
                "log_start": starts.get(tp),
                "log_end": end,
                "lag": max(0, end - held) if end is not None and held is not None else None,
            }
        )
    if as_json:
        typer.echo(dumps(rows))
        return
    if not rows:
        typer.echo(f"no partitions for group {group}")
        return
    table = Table(title=f"group {group}", title_justify="left")
    columns = ("topic", "partition", "stored_offset", "committed_offset", "log_start")
    for column in (*columns, "log_end", "lag"):
        table.add_column(column, no_wrap=True, justify="left" if column == "topic" else "right")
    for row in rows:
        table.add_row(
            *("-" if row[c] is None else str(row[c]) for c in (*columns, "log_end", "lag"))
        )
    console().print(table)


async def reset(
    settings: Settings, group: str, topics: Sequence[str], target: Target, *, dry_run: bool
) -> None:
    """Move the group's offsets in PostgreSQL and Kafka to ``target``; refused (exit 1) while
    the group has members."""
    live = await members(settings, group)
    if live:
        raise ReplayError(
            f"group {group} has {len(live)} member(s): {', '.join(live)}. Stop them first (a "
            "member killed without leaving counts until its session times out).",
            1,
        )
    consumer = replay_consumer(settings)
    await start_client(consumer, settings)
    try:
        tps = await _partitions(consumer, settings, group, topics)
        if not tps:
            raise ReplayError(f"no partitions to reset for group {group}", 2)
        try:
            starts, ends = await plan.log_bounds(settings, tps)
        except plan.PlanError as exc:
            raise ReplayError(str(exc), 1) from exc
        moved = await _targets(consumer, tps, target, starts, ends)
    finally:
        await consumer.stop()
    async with connection(settings) as conn:
        before = await offsets.load(conn, group, tps)
        if not dry_run:
            async with conn.transaction():
                await offsets.reset(conn, group, moved)
                # Kafka's half inside PostgreSQL's transaction: if Kafka refuses, neither moves.
                await _commit_to_kafka(settings, group, moved)
    lines = [f"  {tp.topic}[{tp.partition}]: {before.get(tp, '-')} -> {moved[tp]}" for tp in tps]
    verb = "would move" if dry_run else "moved"
    typer.echo(f"omnisink offsets reset: {verb} group {group}:\n" + "\n".join(lines))


async def _targets(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    target: Target,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
) -> dict[TopicPartition, int]:
    if target.time is not None:
        return await plan.first_at(consumer, tps, target.time, starts, ends)
    out = {}
    for tp in tps:
        start, end = starts.get(tp, 0), ends[tp]
        if target.earliest:
            out[tp] = start
        elif target.latest:
            out[tp] = end
        else:
            out[tp] = min(max(target.offset or 0, start), end)
    return out


async def _commit_to_kafka(
    settings: Settings, group: str, moved: dict[TopicPartition, int]
) -> None:
    """Kafka's committed offsets of a group without members: a consumer of that group that
    never joins it (partitions assigned by hand) commits them."""
    consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=group, enable_auto_commit=False)
    await start_client(consumer, settings)
    try:
        consumer.assign(list(moved))
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in moved.items()})
    finally:
        await consumer.stop()
