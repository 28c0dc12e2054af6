"""Step 021: the dead-letter CHECK takes ``internal``; its downgrade refuses while an
``internal`` dead letter is pending and deletes the redriven or discarded ones."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from consumer import migrate

INSERT = """
INSERT INTO omnisink.dead_letters (consumer_group, topic, kafka_partition, kafka_offset,
    error_kind, error_class, error_message, dlq_topic, status)
VALUES ('g', 't', 0, $1, $2, 'builtins.RuntimeError', 'a bug', 't.dlq', $3)
"""


async def _rows(url: str) -> list[tuple[int, str, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT kafka_offset, error_kind, status FROM omnisink.dead_letters ORDER BY 1"
        )
    finally:
        await conn.close()
    return [(r["kafka_offset"], r["error_kind"], r["status"]) for r in rows]


async def test_internal_dead_letters_up_and_down(scratch_database: str) -> None:
    url = scratch_database
    await asyncio.to_thread(migrate.upgrade, url, "021")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(INSERT, 0, "internal", "pending")
        await conn.execute(INSERT, 1, "internal", "redriven")
        await conn.execute(INSERT, 2, "decode", "pending")
    finally:
        await conn.close()

    with pytest.raises(DBAPIError) as refused:
        await asyncio.to_thread(migrate.downgrade, url, "020")
    said = str(refused.value.orig)
    assert "holds 1 pending dead letter(s) of kind internal" in said
    assert "omnisink dlq redrive --kind internal" in said
    assert "SET status = 'discarded'" in said
    assert len(await _rows(url)) == 3, "a refused downgrade changes nothing"

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE omnisink.dead_letters SET status = 'discarded' "
            "WHERE error_kind = 'internal' AND status = 'pending'"
        )
    finally:
        await conn.close()
    await asyncio.to_thread(migrate.downgrade, url, "020")
    assert await _rows(url) == [(2, "decode", "pending")]
    conn = await asyncpg.connect(url)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(INSERT, 3, "internal", "pending")
    finally:
        await conn.close()
    await asyncio.to_thread(migrate.upgrade, url, "021")
