"""``omnisink dlq``: list, show and redrive dead letters, against the real database and broker.

Dead letters are made by running the worker on poison records; the CLI runs in-process
(typer's CliRunner) on a thread, because its commands call ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from typer.testing import CliRunner, Result

from consumer.cli import app
from consumer.dlq.model import parse_since
from consumer.dlq.queries import mark_redriven
from consumer.worker import Worker
from dev.services import Service, free_port
from handlers.contract import DEAD_LETTER_KINDS
from tests.conftest import TopicFactory
from tests.support import create_database, drop_database, sink_settings, with_database

Headers = list[tuple[str, bytes]]


# -- helpers -------------------------------------------------------------------------------


async def omnisink(db_url: str, servers: str, *args: str, **more_env: str) -> Result:
    """``omnisink dlq ARGS`` in-process, with the database and broker in its environment."""
    env = {"OMNISINK_DATABASE_URL": db_url, "OMNISINK_KAFKA_BOOTSTRAP_SERVERS": servers}
    env.update(more_env)
    return await asyncio.to_thread(CliRunner().invoke, app, ["dlq", *args], env=env)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout


def as_json(result: Result) -> Any:
    return orjson.loads(ok(result))


def _event(event_type: str, payload: dict[str, Any] | None = None) -> tuple[bytes, str]:
    event_id = str(uuid.uuid4())
    value = {
        "event_id": event_id,
        "event_type": event_type,
        "event_timestamp": "2026-01-01T00:00:00Z",
        "payload": payload or {"n": 1},
    }
    return orjson.dumps(value), event_id


async def _send(
    servers: str, topic: str, records: list[tuple[bytes | None, bytes, Headers]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, partition=0, headers=headers)
    finally:
        await producer.stop()


async def _read(servers: str, topic: str, expected: int) -> list[ConsumerRecord[bytes, bytes]]:
    """Partition 0 of ``topic`` from the start: ``expected`` records, and then no more."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        records: list[ConsumerRecord[bytes, bytes]] = []
        for _ in range(40):
            records.extend((await consumer.getmany(tp, timeout_ms=250)).get(tp, []))
            if len(records) >= expected:
                break
        records.extend((await consumer.getmany(tp, timeout_ms=300)).get(tp, []))
    finally:
        await consumer.stop()
    assert len(records) == expected, [(r.offset, r.value) for r in records]
    return records


async def _drain(
    db_url: str,
    db: asyncpg.Connection,
    servers: str,
    topics: list[str],
    *,
    resume: str | None = None,
    **settings: Any,
) -> str:
    """Run the sink until caught up, as a new consumer group; return the group's name.

    With ``resume``, the new group starts where that group stopped: the sink resumes from the
    offsets PostgreSQL holds, so this is the same as running that group again, and a new group
    joins the embedded broker in ~3 s where a rejoin waits out the old member's session.
    """
    group = f"dlq-{uuid.uuid4().hex[:8]}"
    if resume is not None:
        await db.execute(
            "INSERT INTO omnisink.consumer_offsets (consumer_group, topic, kafka_partition, "
            "next_offset) SELECT $1, topic, kafka_partition, next_offset "
            "FROM omnisink.consumer_offsets WHERE consumer_group = $2",
            group,
            resume,
        )
    worker = Worker(
        sink_settings(db_url, servers, group, topics=topics, **settings),
        until_caught_up=True,
        install_signal_handlers=False,
    )
    await asyncio.wait_for(worker.run(), 90)
    return group


async def _insert_dead_letter(db: asyncpg.Connection, topic: str, offset: int, value: bytes) -> int:
    """A dead letter as the worker writes it (for failures the worker cannot be made to hit)."""
    return int(
        await db.fetchval(
            "INSERT INTO omnisink.dead_letters (consumer_group, topic, kafka_partition, "
            "kafka_offset, record_key, record_value, error_kind, error_class, error_message, "
            "dlq_topic) VALUES ('g', $1, 0, $2, 'k', $3, 'decode', 'x.DecodeError', 'bad', $4) "
            "RETURNING id",
            topic,
            offset,
            value,
            f"{topic}.dlq",
        )
    )


def _by_kind(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["kind"]: row for row in rows}


# -- list and show -------------------------------------------------------------------------


async def test_list_and_show_with_filters(
    kafka_server: Service, db_url: str, db: asyncpg.Connection, topic_factory: TopicFactory
) -> None:
    servers = kafka_server.url
    bridge = await topic_factory("dlq-list", partitions=1)
    intel = f"test.archon-intelligence.fsm.state.changed-{uuid.uuid4().hex[:10]}.v1"
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(intel, 1, 1)])
    finally:
        await admin.close()
    good, _ = _event(
        "NODE_HEARTBEAT", {"node_id": "n1", "node_type": "reducer", "health_status": "healthy"}
    )
    unknown, unknown_id = _event("SOMETHING_NEW")
    invalid, _ = _event(
        "FSM_STATE_TRANSITION",
        {
            "fsm_type": "INGESTION",
            "entity_id": "doc-1",
            "from_state": "RECEIVED",
            "action": "COMPLETE_INDEXING",  # RECEIVED -COMPLETE_INDEXING-> is not a transition
            "to_state": "INDEXED",
        },
    )
    headers = [("trace", b"abc"), ("bin", b"\x00\xff")]
    await _send(
        servers,
        bridge,
        [(b"k0", good, []), (b"\xff\x01", b"{not json", headers), (b"k2", unknown, [])],
    )
    await _send(servers, intel, [(b"doc-1", invalid, [])])
    group = await _drain(db_url, db, servers, [bridge, intel], unknown_events="dlq")
    assert await db.fetchval("SELECT count(*) FROM event_logs") == 1

    rows = as_json(await omnisink(db_url, servers, "list", "--json"))
    kinds = _by_kind(rows)
    assert set(kinds) == {"decode", "unknown_type", "invalid_transition"}
    newest_first = sorted(rows, key=lambda r: (r["failed_at"], r["id"]), reverse=True)
    assert rows == newest_first
    decode = kinds["decode"]
    assert (decode["topic"], decode["partition"], decode["offset"]) == (bridge, 0, 1)
    assert decode["source"] == f"{bridge}[0]@1"
    assert (decode["status"], decode["attempts"], decode["redriven_at"]) == ("pending", 1, None)
    assert decode["consumer_group"] == group
    assert datetime.fromisoformat(decode["failed_at"]).tzinfo is not None
    assert "not valid JSON" in decode["message"]
    assert (kinds["unknown_type"]["event_type"], kinds["unknown_type"]["event_id"]) == (
        "SOMETHING_NEW",
        unknown_id,
    )
    assert kinds["invalid_transition"]["source"] == f"{intel}[0]@0"
    assert "RECEIVED -COMPLETE_INDEXING-> INDEXED" in kinds["invalid_transition"]["message"]

    table = ok(await omnisink(db_url, servers, "list"))
    for row in rows:
        assert row["source"] in table
        assert row["kind"] in table
    assert "RECEIVED -COMPLETE_INDEXING-> INDEXED" in table

    # --kind, --topic, --limit, --status
    only = as_json(await omnisink(db_url, servers, "list", "--kind", "decode", "--json"))
    assert [r["id"] for r in only] == [decode["id"]]
    only = as_json(await omnisink(db_url, servers, "list", "--topic", intel, "--json"))
    assert [r["kind"] for r in only] == ["invalid_transition"]
    only = as_json(await omnisink(db_url, servers, "list", "--limit", "1", "--json"))
    assert [r["id"] for r in only] == [rows[0]["id"]]
    assert as_json(await omnisink(db_url, servers, "list", "--status", "redriven", "--json")) == []
    assert len(as_json(await omnisink(db_url, servers, "list", "--status", "all", "--json"))) == 3
    bad = await omnisink(db_url, servers, "list", "--kind", "typo")
    assert bad.exit_code == 2
    assert "unknown_type" in bad.output

    # --since: the decode dead letter failed three days ago
    await db.execute(
        "UPDATE omnisink.dead_letters SET failed_at = now() - interval '3 days' WHERE id = $1",
        decode["id"],
    )
    recent = as_json(await omnisink(db_url, servers, "list", "--since", "2d", "--json"))
    assert {r["kind"] for r in recent} == {"unknown_type", "invalid_transition"}
    assert len(as_json(await omnisink(db_url, servers, "list", "--since", "4d", "--json"))) == 3
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    recent = as_json(await omnisink(db_url, servers, "list", "--since", yesterday, "--json"))
    assert len(recent) == 2
    everything = as_json(await omnisink(db_url, servers, "list", "--json"))
    assert everything[-1]["id"] == decode["id"]  # newest first: the oldest is last
    bad = await omnisink(db_url, servers, "list", "--since", "yesterday")
    assert bad.exit_code == 2
    assert "ISO 8601" in bad.output

    # show
    shown = as_json(await omnisink(db_url, servers, "show", str(decode["id"]), "--json"))
    assert {k: shown[k] for k in decode} == {**decode, "failed_at": shown["failed_at"]}
    assert shown["key"] == {"encoding": "hex", "data": "ff01", "bytes": 2}
    assert shown["value"] == {"encoding": "utf-8", "data": "{not json", "bytes": 9}
    assert shown["headers"] == [
        {"key": "trace", "value": {"encoding": "utf-8", "data": "abc", "bytes": 3}},
        {"key": "bin", "value": {"encoding": "hex", "data": "00ff", "bytes": 2}},
    ]
    assert shown["error_class"].endswith("DecodeError")
    assert "Traceback" in shown["stacktrace"]
    assert shown["dlq"]["topic"] == f"{bridge}.dlq"
    dlq_copy = f"{bridge}.dlq[{shown['dlq']['partition']}]@{shown['dlq']['offset']}"
    assert None not in (shown["dlq"]["partition"], shown["dlq"]["offset"])
    assert datetime.fromisoformat(shown["record_timestamp"]).tzinfo is not None

    text = ok(await omnisink(db_url, servers, "show", str(decode["id"])))
    for fact in (
        f"dead letter {decode['id']}",
        f"{bridge}[0]@1",
        "key (hex, 2 bytes)",
        "ff01",
        "value (utf-8, 9 bytes)",
        "{not json",
        "header trace (utf-8, 3 bytes)",
        "header bin (hex, 2 bytes)",
        dlq_copy,
        "DecodeError",
        "stacktrace:",
        "pending",
    ):
        assert fact in text, fact

    missing = await omnisink(db_url, servers, "show", "999999")
    assert missing.exit_code == 1
    assert "no dead letter with id 999999" in missing.stderr


# -- redrive -------------------------------------------------------------------------------


async def test_redrive_after_the_cause_is_fixed(
    kafka_server: Service, db_url: str, db: asyncpg.Connection, topic_factory: TopicFactory
) -> None:
    servers = kafka_server.url
    topic = await topic_factory("dlq-fixed", partitions=1)
    value, event_id = _event("SOMETHING_NEW")
    await _send(servers, topic, [(b"k1", value, [("trace", b"t1")])])
    group = await _drain(db_url, db, servers, [topic], unknown_events="dlq")
    [row] = as_json(await omnisink(db_url, servers, "list", "--json"))
    assert row["kind"] == "unknown_type"

    # Without a filter: refused. --dry-run: says what, changes nothing.
    refused = await omnisink(db_url, servers, "redrive")
    assert refused.exit_code == 2
    assert "--all" in refused.stderr
    dry = ok(await omnisink(db_url, servers, "redrive", "--all", "--dry-run"))
    assert f"1 would be redriven to {topic} (1)" in dry
    assert row["source"] in dry
    assert await db.fetchval("SELECT status FROM omnisink.dead_letters") == "pending"
    unknown = await omnisink(db_url, servers, "redrive", "--id", "999999")
    assert unknown.exit_code == 1
    assert "no dead letter with id 999999" in unknown.stderr

    out = ok(await omnisink(db_url, servers, "redrive", "--kind", "unknown_type"))
    assert f"1 redriven to {topic} (1)" in out
    status, redriven_at = await db.fetchrow(
        "SELECT status, redriven_at FROM omnisink.dead_letters WHERE id = $1", row["id"]
    )
    assert status == "redriven"
    assert redriven_at is not None
    # The original record and one copy (not two: the dry run published nothing).
    original, copy = await _read(servers, topic, 2)
    assert (copy.key, copy.value) == (original.key, original.value)
    assert copy.headers == (("trace", b"t1"), ("omnisink.redrive.of", str(row["id"]).encode()))

    # The cause is fixed: the sink keeps unknown types now, and writes the copy.
    await _drain(db_url, db, servers, [topic], resume=group, unknown_events="keep")
    assert (
        await db.fetchval("SELECT count(*) FROM event_logs WHERE id = $1", uuid.UUID(event_id)) == 1
    )
    assert as_json(await omnisink(db_url, servers, "list", "--json")) == []
    assert "no pending dead letters match" in ok(await omnisink(db_url, servers, "list"))
    again = ok(await omnisink(db_url, servers, "redrive", "--all"))
    assert "nothing to do" in again


async def test_a_redriven_record_that_still_fails_comes_back_as_a_new_dead_letter(
    kafka_server: Service, db_url: str, db: asyncpg.Connection, topic_factory: TopicFactory
) -> None:
    servers = kafka_server.url
    topic = await topic_factory("dlq-again", partitions=1)
    await _send(servers, topic, [(b"k1", b"{not json", [])])
    group = await _drain(db_url, db, servers, [topic])
    [first] = as_json(await omnisink(db_url, servers, "list", "--json"))

    out = ok(await omnisink(db_url, servers, "redrive", "--id", str(first["id"])))
    assert f"1 redriven to {topic} (1)" in out
    await _drain(db_url, db, servers, [topic], resume=group)

    [second] = as_json(await omnisink(db_url, servers, "list", "--json"))
    assert second["id"] != first["id"]
    assert (second["kind"], second["status"]) == ("decode", "pending")
    assert (second["topic"], second["offset"]) == (topic, 1)  # a new record: a new offset
    everything = as_json(await omnisink(db_url, servers, "list", "--status", "all", "--json"))
    assert [(r["id"], r["status"]) for r in everything] == [
        (second["id"], "pending"),
        (first["id"], "redriven"),
    ]
    shown = as_json(await omnisink(db_url, servers, "show", str(second["id"]), "--json"))
    assert shown["headers"] == [
        {
            "key": "omnisink.redrive.of",
            "value": {
                "encoding": "utf-8",
                "data": str(first["id"]),
                "bytes": len(str(first["id"])),
            },
        }
    ]

    # The old row is not redriven twice; redriving the new one replaces the redrive header.
    skipped = await omnisink(db_url, servers, "redrive", "--id", str(first["id"]))
    assert "nothing to do" in ok(skipped)
    assert f"{first['id']} (redriven)" in skipped.stderr
    ok(await omnisink(db_url, servers, "redrive", "--id", str(second["id"])))
    *_, copy = await _read(servers, topic, 3)
    assert copy.headers == (("omnisink.redrive.of", str(second["id"]).encode()),)


async def test_a_redrive_that_fails_part_way_marks_only_what_was_acknowledged(
    kafka_server: Service, db_url: str, db: asyncpg.Connection, topic_factory: TopicFactory
) -> None:
    servers = kafka_server.url
    topic = await topic_factory("dlq-partial", partitions=1)
    ids = [
        await _insert_dead_letter(db, topic, 0, b"first"),
        # Larger than the producer may send (OMNISINK_DLQ_MAX_REQUEST_BYTES): it refuses it.
        await _insert_dead_letter(db, topic, 1, b"x" * (3 * 1024 * 1024)),
        await _insert_dead_letter(db, topic, 2, b"third"),
    ]
    failed = await omnisink(
        db_url,
        servers,
        "redrive",
        "--topic",
        topic,
        OMNISINK_DLQ_MAX_REQUEST_BYTES=str(2 * 1024 * 1024),
    )
    assert failed.exit_code == 1, failed.output
    assert f"1 redriven to {topic} (1)" in failed.stdout
    assert f"dead letter {ids[1]} could not be published" in failed.stderr
    statuses = await db.fetch(
        "SELECT id, status, redriven_at IS NOT NULL AS at FROM omnisink.dead_letters ORDER BY id"
    )
    assert [tuple(r) for r in statuses] == [
        (ids[0], "redriven", True),
        (ids[1], "pending", False),
        (ids[2], "pending", False),
    ]
    [published] = await _read(servers, topic, 1)
    assert published.value == b"first"
    # The mark's guard: a row no longer pending is not marked again.
    assert await mark_redriven(db, ids[:1]) == []
    assert await mark_redriven(db, ids[2:]) == ids[2:]


async def test_connection_problems_exit_2_without_secrets(
    kafka_server: Service, pg_server: Service, db_url: str, db: asyncpg.Connection
) -> None:
    nowhere = f"postgresql://sink:hunter2@127.0.0.1:{free_port()}/omninode"
    result = await omnisink(nowhere, kafka_server.url, "list")
    assert result.exit_code == 2
    assert "cannot connect to PostgreSQL at postgresql://sink:***@127.0.0.1" in result.stderr
    assert "hunter2" not in result.output

    name = f"omnisink_e_{uuid.uuid4().hex[:12]}"
    await create_database(pg_server.url, name)
    try:
        result = await omnisink(with_database(pg_server.url, name), kafka_server.url, "list")
    finally:
        await drop_database(pg_server.url, name)
    assert result.exit_code == 2
    assert "omnisink migrate" in result.stderr

    dead = await _insert_dead_letter(db, "test.t.v1", 0, b"v")
    result = await omnisink(db_url, f"127.0.0.1:{free_port()}", "redrive", "--all")
    assert result.exit_code == 2, result.output
    assert "cannot reach the Kafka brokers" in result.stderr
    assert await db.fetchval("SELECT status FROM omnisink.dead_letters WHERE id = $1", dead) == (
        "pending"
    )


async def test_the_error_kinds_are_the_tables(db: asyncpg.Connection) -> None:
    check = await db.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'omnisink.dead_letters'::regclass AND contype = 'c' "
        "AND pg_get_constraintdef(oid) LIKE '%error_kind%'"
    )
    assert sorted(re.findall(r"'([a-z_]+)'", check)) == sorted(DEAD_LETTER_KINDS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", datetime(2026, 1, 2, 11, 30, tzinfo=UTC)),
        ("2h", datetime(2026, 1, 2, 10, 0, tzinfo=UTC)),
        ("7d", datetime(2025, 12, 26, 12, 0, tzinfo=UTC)),
        ("2026-01-01T08:00:00Z", datetime(2026, 1, 1, 8, 0, tzinfo=UTC)),
        ("2026-01-01T08:00:00+02:00", datetime(2026, 1, 1, 6, 0, tzinfo=UTC)),
        ("2026-01-01 08:00", datetime(2026, 1, 1, 8, 0, tzinfo=UTC)),
    ],
)
def test_since(text: str, expected: datetime) -> None:
    assert parse_since(text, now=datetime(2026, 1, 2, 12, 0, tzinfo=UTC)) == expected


@pytest.mark.parametrize("text", ["yesterday", "5 parsecs", "-3h", "", "99999999999d"])
def test_since_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"ISO 8601|further back"):
        parse_since(text)
