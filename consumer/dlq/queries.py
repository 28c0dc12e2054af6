"""The dead-letter commands' connection and statements, each statement written out whole.

The text PostgreSQL runs is the text below, whatever the operator asked for: a filter is a
parameter that is NULL when not given (``($1::text IS NULL OR topic = $1)``), never SQL put
together in Python. The statements that select by the operator's filters take them first and
in one order, :func:`_filters`: ``$1`` topic, ``$2`` error kind, ``$3`` failed at or after,
``$4`` ids.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import asyncpg

from consumer.dlq.model import Detail, DlqError, Filters, Summary
from consumer.settings import Settings
from handlers.sql import Sql

# Dead letters matching the filters and $5 (a status, NULL for any), newest first, at most
# $6 (NULL: no limit). The columns are Summary's.
LIST = Sql(
    """
    SELECT id, failed_at, topic, kafka_partition, kafka_offset, error_kind, event_type,
           event_id, attempts, status, error_message, redriven_at, consumer_group
    FROM omnisink.dead_letters
    WHERE ($1::text IS NULL OR topic = $1)
      AND ($2::text IS NULL OR error_kind = $2)
      AND ($3::timestamptz IS NULL OR failed_at >= $3)
      AND ($4::bigint[] IS NULL OR id = ANY($4))
      AND ($5::text IS NULL OR status = $5)
    ORDER BY failed_at DESC, id DESC
    LIMIT $6
""",
    name="dlq.list",
)

SHOW = Sql("SELECT * FROM omnisink.dead_letters WHERE id = $1", name="dlq.show")

STATUSES = Sql(
    "SELECT id, status FROM omnisink.dead_letters WHERE id = ANY($1::bigint[])", name="dlq.statuses"
)

# Where a redrive's selection ends: the rows that exist when it starts.
LAST_ID = Sql("SELECT max(id) FROM omnisink.dead_letters", name="dlq.last_id")

# The next chunk of a redrive: pending rows matching the filters with $5 < id <= $6, in id
# order, at most $7, locked until the transaction ends; rows another redrive holds are skipped.
LOCK_CHUNK = Sql(
    """
    SELECT id, topic, record_key, record_value, header_keys, header_values
    FROM omnisink.dead_letters
    WHERE ($1::text IS NULL OR topic = $1)
      AND ($2::text IS NULL OR error_kind = $2)
      AND ($3::timestamptz IS NULL OR failed_at >= $3)
      AND ($4::bigint[] IS NULL OR id = ANY($4))
      AND status = 'pending' AND id > $5 AND id <= $6
    ORDER BY id
    LIMIT $7
    FOR UPDATE SKIP LOCKED
""",
    name="dlq.lock_chunk",
)

# Only rows still pending are marked: the ids marked are returned.
MARK_REDRIVEN = Sql(
    """
    UPDATE omnisink.dead_letters SET status = 'redriven', redriven_at = now()
    WHERE id = ANY($1::bigint[]) AND status = 'pending'
    RETURNING id
""",
    name="dlq.mark_redriven",
)


# Mark the pending dead letters matching the filters discarded, in one statement: a row a
# redrive holds locked is waited for, and skipped once the redrive has marked it. The rows
# marked are returned.
MARK_DISCARDED = Sql(
    """
    UPDATE omnisink.dead_letters SET status = 'discarded'
    WHERE ($1::text IS NULL OR topic = $1)
      AND ($2::text IS NULL OR error_kind = $2)
      AND ($3::timestamptz IS NULL OR failed_at >= $3)
      AND ($4::bigint[] IS NULL OR id = ANY($4))
      AND status = 'pending'
    RETURNING id, topic
""",
    name="dlq.mark_discarded",
)


def _filters(filters: Filters) -> tuple[str | None, str | None, datetime | None, list[int] | None]:
    """``$1`` to ``$4`` of a statement that selects by the operator's filters."""
    return filters.topic, filters.kind, filters.since, list(filters.ids) or None


@contextlib.asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection to OMNISINK_DATABASE_URL; failures become :class:`DlqError` (exit 2)
    naming the redacted URL."""
    db = settings.database
    try:
        conn = await asyncpg.connect(
            db.dsn,
            command_timeout=db.command_timeout_s,
            statement_cache_size=db.statement_cache_size,
        )
    except (
        OSError,
        TimeoutError,
        ValueError,  # what asyncpg makes of a malformed URL (a non-numeric ?port=)
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ) as exc:
        raise DlqError(
            f"cannot connect to PostgreSQL at {db.redacted_url}: {exc}. "
            "Check OMNISINK_DATABASE_URL and that the server is running.",
            exit_code=2,
        ) from exc
    try:
        yield conn
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError) as exc:
        raise DlqError(
            f"the database at {db.redacted_url} has no omnisink.dead_letters table ({exc}): "
            "run `omnisink migrate` first.",
            exit_code=2,
        ) from exc
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.ConnectionDoesNotExistError) as exc:
        raise DlqError(
            f"lost the connection to PostgreSQL at {db.redacted_url}: {exc}", exit_code=2
        ) from exc
    finally:
        with contextlib.suppress(Exception):
            await conn.close()


async def fetch_list(
    conn: asyncpg.Connection, filters: Filters, status: str | None, limit: int | None
) -> list[Summary]:
    """Dead letters matching ``filters`` (and ``status``, None for any), newest first."""
    rows = await conn.fetch(LIST.sql, *_filters(filters), status, limit)
    return [Summary.from_row(row) for row in rows]


async def fetch_one(conn: asyncpg.Connection, dead_letter_id: int) -> Detail | None:
    row = await conn.fetchrow(SHOW.sql, dead_letter_id)
    return Detail.from_row(row) if row is not None else None


async def fetch_statuses(conn: asyncpg.Connection, ids: Sequence[int]) -> dict[int, str]:
    """The status of each of ``ids`` that exists."""
    rows = await conn.fetch(STATUSES.sql, list(ids))
    return {row["id"]: row["status"] for row in rows}


async def pending(conn: asyncpg.Connection, filters: Filters) -> list[Summary]:
    """The pending dead letters a redrive with ``filters`` would publish, in id order."""
    rows = await fetch_list(conn, filters, "pending", None)
    return sorted(rows, key=lambda row: row.id)


async def last_id(conn: asyncpg.Connection) -> int | None:
    """The newest dead letter's id; None when there is none."""
    last: int | None = await conn.fetchval(LAST_ID.sql)
    return last


async def lock_chunk(
    conn: asyncpg.Connection, filters: Filters, after: int, last: int, limit: int
) -> list[asyncpg.Record]:
    """The next chunk of a redrive (:data:`LOCK_CHUNK`); call it in a transaction."""
    return await conn.fetch(LOCK_CHUNK.sql, *_filters(filters), after, last, limit)


async def mark_redriven(conn: asyncpg.Connection, ids: Sequence[int]) -> list[int]:
    """Mark ``ids`` redriven, those still pending only; return the ids marked."""
    rows = await conn.fetch(MARK_REDRIVEN.sql, list(ids))
    return sorted(row["id"] for row in rows)


async def mark_discarded(conn: asyncpg.Connection, filters: Filters) -> list[tuple[int, str]]:
    """Mark the pending dead letters matching ``filters`` discarded; return (id, topic) of
    each one marked, in id order."""
    rows = await conn.fetch(MARK_DISCARDED.sql, *_filters(filters))
    return sorted((row["id"], row["topic"]) for row in rows)
