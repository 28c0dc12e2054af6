"""``omnisink dlq discard``: pending dead letters marked discarded, exactly those selected; kept
in the table, listed by ``--status discarded``, never redriven. Against the real database and
broker, with dead letters made by the worker (tests/integration/test_dlq_cli.py's helpers)."""

from __future__ import annotations

import asyncpg
import pytest

from dev.services import Service
from tests.conftest import TopicFactory
from tests.integration.test_dlq_cli import (
    _drain,
    _event,
    _insert_dead_letter,
    _read,
    _send,
    as_json,
    ok,
    omnisink,
)

pytestmark = pytest.mark.integration


async def _statuses(db: asyncpg.Connection) -> dict[int, str]:
    rows = await db.fetch("SELECT id, status FROM omnisink.dead_letters ORDER BY id")
    return {row["id"]: row["status"] for row in rows}


async def test_discard_marks_exactly_the_selected_pending_dead_letters(
    kafka_server: Service, db_url: str, db: asyncpg.Connection, topic_factory: TopicFactory
) -> None:
    servers = kafka_server.url
    bridge = await topic_factory("dlq-discard", partitions=1)
    other = await topic_factory("dlq-discard-other", partitions=1)
    unknown, _ = _event("SOMETHING_NEW")
    good, _ = _event(
        "NODE_HEARTBEAT", {"node_id": "n1", "node_type": "reducer", "health_status": "healthy"}
    )
    await _send(
        servers,
        bridge,
        [
            (b"k0", b"{not json", []),
            (b"k1", b"{nor this", []),
            (b"k2", unknown, []),
            (b"k3", good, []),
        ],
    )
    await _send(servers, other, [(b"k4", b"{not json either", [])])
    await _drain(db_url, db, servers, [bridge, other], unknown_events="dlq")
    rows = as_json(await omnisink(db_url, servers, "list", "--json"))
    by_source = {(r["topic"], r["offset"]): r["id"] for r in rows}
    assert sorted(by_source) == [(bridge, 0), (bridge, 1), (bridge, 2), (other, 0)]
    decode_a, decode_b, unknown_type = (by_source[(bridge, n)] for n in range(3))
    elsewhere = by_source[(other, 0)]
    everything = sorted(by_source.values())
    assert await _statuses(db) == dict.fromkeys(everything, "pending")

    # Without a filter: refused, nothing changed.
    refused = await omnisink(db_url, servers, "discard")
    assert refused.exit_code == 2
    assert "--all" in refused.stderr
    # An unknown id: exit 1 before anything changes, even beside an id that exists.
    missing = await omnisink(db_url, servers, "discard", "--id", str(decode_a), "--id", "999999")
    assert missing.exit_code == 1
    assert "no dead letter with id 999999; nothing was discarded" in missing.stderr
    # --dry-run: says which, changes nothing.
    dry = ok(
        await omnisink(
            db_url, servers, "discard", "--kind", "decode", "--topic", bridge, "--dry-run"
        )
    )
    assert f"dry run: 2 would be discarded from {bridge} (2)" in dry
    assert f"{bridge}[0]@0" in dry
    assert f"{bridge}[0]@1" in dry
    assert await _statuses(db) == dict.fromkeys(everything, "pending")

    # The decode dead letters of one topic: exactly those two.
    out = ok(await omnisink(db_url, servers, "discard", "--kind", "decode", "--topic", bridge))
    assert f"omnisink dlq discard: 2 discarded from {bridge} (2)" in out
    assert await _statuses(db) == {
        decode_a: "discarded",
        decode_b: "discarded",
        unknown_type: "pending",
        elsewhere: "pending",
    }
    listed = as_json(await omnisink(db_url, servers, "list", "--status", "discarded", "--json"))
    assert sorted(r["id"] for r in listed) == [decode_a, decode_b]
    assert {r["status"] for r in listed} == {"discarded"}
    pending = as_json(await omnisink(db_url, servers, "list", "--json"))
    assert sorted(r["id"] for r in pending) == sorted([unknown_type, elsewhere])
    shown = ok(await omnisink(db_url, servers, "show", str(decode_a)))
    assert "discarded" in shown

    # An id no longer pending is skipped, and said so; the pending one beside it is discarded.
    mixed = await omnisink(
        db_url, servers, "discard", "--id", str(decode_a), "--id", str(unknown_type)
    )
    assert f"1 discarded from {bridge} (1)" in ok(mixed)
    assert f"not pending, skipped: {decode_a} (discarded)" in mixed.stderr
    assert (await _statuses(db))[unknown_type] == "discarded"
    again = await omnisink(db_url, servers, "discard", "--id", str(decode_a))
    assert "nothing to do" in ok(again)
    assert f"{decode_a} (discarded)" in again.stderr

    # A redrive of every pending dead letter leaves the discarded ones alone: only the other
    # topic's is published, and the first topic gets no record back.
    redriven = ok(await omnisink(db_url, servers, "redrive", "--all"))
    assert f"1 redriven to {other} (1)" in redriven
    assert await _statuses(db) == {
        decode_a: "discarded",
        decode_b: "discarded",
        unknown_type: "discarded",
        elsewhere: "redriven",
    }
    assert len(await _read(servers, bridge, 4)) == 4  # the four records produced, no copy
    assert len(await _read(servers, other, 2)) == 2  # its record and the redriven copy
    # A redriven dead letter is not discarded either.
    late = await omnisink(db_url, servers, "discard", "--id", str(elsewhere))
    assert "nothing to do" in ok(late)
    assert f"{elsewhere} (redriven)" in late.stderr
    assert (await _statuses(db))[elsewhere] == "redriven"
    assert "nothing to do" in ok(await omnisink(db_url, servers, "redrive", "--all"))


async def test_discard_since_and_all(
    kafka_server: Service, db_url: str, db: asyncpg.Connection
) -> None:
    servers = kafka_server.url
    topic = "test.discard.v1"
    old, recent, newest = [await _insert_dead_letter(db, topic, n, b"v") for n in range(3)]
    await db.execute(
        "UPDATE omnisink.dead_letters SET failed_at = now() - interval '3 days' WHERE id = $1", old
    )
    out = ok(await omnisink(db_url, servers, "discard", "--since", "1d", "--id", str(recent)))
    assert f"1 discarded from {topic} (1)" in out
    assert await _statuses(db) == {old: "pending", recent: "discarded", newest: "pending"}
    out = ok(await omnisink(db_url, servers, "discard", "--all"))
    assert f"2 discarded from {topic} (2)" in out
    assert await _statuses(db) == dict.fromkeys((old, recent, newest), "discarded")
    assert "nothing to do" in ok(await omnisink(db_url, servers, "discard", "--all"))
    assert "nothing to do" in ok(await omnisink(db_url, servers, "discard", "--all", "--dry-run"))
