"""An error nobody classified, in-process against the real broker and database.

Raised while a handler parses one event, it makes that event an ``internal`` dead letter and
the stream goes on. Raised in the write path (a handler's apply), it stops the worker with one
error line and the batch rolled back; the next run completes the stream, nothing lost or
doubled."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
import structlog

from consumer.worker import Worker
from dev import sample
from dev.services import Service
from handlers.base import Event, Handler, Item
from handlers.registry import HANDLERS
from tests.support import assert_same_tables, produce, sink_settings


class ParseTrips:
    """A handler whose parse raises a plain error for the first ``limit`` events it sees
    whose id is in ``candidates``, and for them again whenever they come back."""

    def __init__(self, inner: Handler[Any], victims: set[uuid.UUID], candidates: set[uuid.UUID]):
        self.inner = inner
        self.name = inner.name
        self.event_types = inner.event_types
        self.victims = victims
        self.candidates = candidates

    def parse(self, event: Event) -> Any:
        if len(self.victims) < 5 and event.event_id in self.candidates:
            self.victims.add(event.event_id)
        if event.event_id in self.victims:
            raise RuntimeError(f"injected into parse of {event.event_type}")
        return self.inner.parse(event)

    async def apply(self, conn: asyncpg.Connection, items: Sequence[Item[Any]]) -> None:
        await self.inner.apply(conn, items)


class ApplyTripsOnce:
    """A handler whose apply raises a plain error once, after the worker committed batches."""

    def __init__(self, inner: Handler[Any], fuse: dict[str, Any]) -> None:
        self.inner = inner
        self.name = inner.name
        self.event_types = inner.event_types
        self.fuse = fuse

    def parse(self, event: Event) -> Any:
        return self.inner.parse(event)

    async def apply(self, conn: asyncpg.Connection, items: Sequence[Item[Any]]) -> None:
        worker: Worker | None = self.fuse.get("worker")
        if not self.fuse["fired"] and worker is not None and worker.stats.batches >= 2:
            self.fuse["fired"] = True
            raise RuntimeError("injected into apply")
        await self.inner.apply(conn, items)


def _worker(db_url: str, servers: str, group: str, stream: sample.Stream, **kw: Any) -> Worker:
    return Worker(
        sink_settings(db_url, servers, group, topics=stream.topics, batch_max_records=200),
        until_caught_up=True,
        install_signal_handlers=False,
        **kw,
    )


async def test_an_error_in_a_handlers_parse_dead_letters_that_event_only(
    kafka_server: Service, db_url: str
) -> None:
    stream = sample.generate(1_500, env=f"u{uuid.uuid4().hex[:8]}", seed=41)
    await produce(kafka_server.url, stream.records)
    once = {i for i, n in Counter(r.event_id for r in stream.records).items() if n == 1}
    victims: set[uuid.UUID] = set()
    handlers = [ParseTrips(h, victims, once) for h in HANDLERS]
    worker = _worker(db_url, kafka_server.url, "parse-trips", stream, handlers=handlers)
    await asyncio.wait_for(worker.run(), 120)

    assert len(victims) == 5
    conn = await asyncpg.connect(db_url)
    try:
        letters = await conn.fetch(
            "SELECT event_id, error_kind, error_class, error_message, error_stacktrace "
            "FROM omnisink.dead_letters"
        )
        ids = {r["id"] for r in await conn.fetch("SELECT id FROM event_logs")}
    finally:
        await conn.close()
    assert {r["event_id"] for r in letters} == victims
    for letter in letters:
        assert letter["error_kind"] == "internal"
        assert letter["error_class"] == "builtins.RuntimeError"
        assert letter["error_message"].startswith("injected into parse")
        assert "in parse" in letter["error_stacktrace"]
    # Everything else was written: the partitions moved past the dead letters.
    assert ids == {r.event_id for r in stream.records} - victims
    assert worker.stats.dead_letters == 5


async def test_an_error_in_the_write_path_stops_once_and_the_next_run_completes(
    kafka_server: Service, database_pair: list[str]
) -> None:
    reference_url, tested_url = database_pair
    stream = sample.generate(1_500, env=f"u{uuid.uuid4().hex[:8]}", seed=42)
    await produce(kafka_server.url, stream.records)
    await asyncio.wait_for(_worker(reference_url, kafka_server.url, "ref", stream).run(), 120)

    fuse: dict[str, Any] = {"fired": False}
    handlers = [ApplyTripsOnce(h, fuse) for h in HANDLERS]
    first = _worker(tested_url, kafka_server.url, "apply-trips", stream, handlers=handlers)
    fuse["worker"] = first
    with structlog.testing.capture_logs() as logged, pytest.raises(RuntimeError, match="apply"):
        await asyncio.wait_for(first.run(), 120)
    errors = [e for e in logged if e["log_level"] in {"error", "critical"}]
    assert [e["event"] for e in errors] == ["worker.crashed"], errors
    [crash] = errors
    assert crash["exc_info"] is True
    assert crash["error_class"] == "builtins.RuntimeError"
    assert crash["batch_records"] > 0
    assert first.stats.batches >= 2

    conn = await asyncpg.connect(tested_url)
    try:
        partial = await conn.fetchval("SELECT count(*) FROM event_logs")
    finally:
        await conn.close()
    assert 0 < partial < stream.distinct_events, "the crash must land mid-stream"

    second = _worker(tested_url, kafka_server.url, "apply-trips", stream)
    await asyncio.wait_for(second.run(), 120)
    await assert_same_tables(reference_url, tested_url, stream.distinct_events)
