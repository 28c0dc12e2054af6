"""The sink's connection pool, and the check that the database is at the sink's schema."""

from __future__ import annotations

import asyncpg

from consumer.errors import FatalError
from consumer.settings import Settings
from handlers.sql import Sql

REVISION = Sql("SELECT version_num FROM alembic_version", name="database.revision")


async def connect(settings: Settings) -> asyncpg.Pool:
    """The sink's pool; FatalError (naming the setting) when PostgreSQL cannot be reached."""
    try:
        return await _create_pool(settings)
    except (OSError, asyncpg.PostgresError) as exc:
        raise FatalError(
            f"cannot connect to PostgreSQL at {settings.database.redacted_url}: {exc}. "
            "Check OMNISINK_DATABASE_URL and that the server is running."
        ) from exc


async def _create_pool(settings: Settings) -> asyncpg.Pool:
    db = settings.database
    return await asyncpg.create_pool(
        db.dsn,
        min_size=min(db.pool_min_size, db.pool_max_size),
        max_size=db.pool_max_size,
        command_timeout=db.command_timeout_s,
        statement_cache_size=db.statement_cache_size,
        server_settings={
            "application_name": "omnisink",
            # A transaction whose client vanished (a network partition, not a clean close)
            # would hold its row and advisory locks until TCP noticed, and the reconnected
            # sink would wait on them; the server ends it instead.
            "idle_in_transaction_session_timeout": str(
                int(db.idle_in_transaction_timeout_s * 1000)
            ),
        },
    )


async def check_schema(pool: asyncpg.Pool, settings: Settings) -> None:
    """Raise FatalError unless the database is at the migrations' head."""
    from consumer.migrate import head_revision  # Alembic only when starting

    head = head_revision()
    try:
        async with pool.acquire() as conn:
            current = await conn.fetchval(REVISION.sql)
    except asyncpg.UndefinedTableError:
        current = None
    if current != head:
        raise FatalError(
            f"the database at {settings.database.redacted_url} is at schema revision "
            f"{current or 'none'}, the sink needs {head}: run `omnisink migrate` first."
        )
