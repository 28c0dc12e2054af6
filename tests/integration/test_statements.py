"""Every SQL statement the handlers run is written out whole (handlers/sql.py) and prepares
against the migrated database: a statement that does not parse, names a missing column or a
wrong type fails here, not in a batch."""

from __future__ import annotations

import asyncpg
import pytest

import consumer.dlq.queries
import consumer.ops.queries
import consumer.replay.store
import consumer.store.batch
import consumer.store.database  # noqa: F401 - with the handlers, every module that has SQL
from handlers.sql import STATEMENTS, Sql

pytestmark = pytest.mark.integration


def test_the_handlers_register_their_statements() -> None:
    assert len(STATEMENTS) >= 10, [s.name for s in STATEMENTS]


@pytest.mark.parametrize("statement", STATEMENTS, ids=lambda s: s.name or s.sql[:40])
async def test_statement_prepares(db: asyncpg.Connection, statement: Sql) -> None:
    await db.prepare(statement.sql)
