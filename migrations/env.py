"""Alembic environment: one history for the bridge, intelligence and sink schemas.

The URL comes from ``OMNISINK_DATABASE_URL`` (via the sink's own settings), unless a caller
put one in ``config.attributes["url"]`` (tests migrating a scratch database do).
Migrations are raw SQL (no ORM metadata), so autogenerate is not used.

The session is opened by asyncpg from the URL itself, as the sink's pool and ``omnisink dlq``
open theirs: its libpq parameters (``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``, ...)
mean the same on every path. SQLAlchemy's asyncpg dialect would pass them to
``asyncpg.connect`` as keyword arguments, which it refuses.
"""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import context
from pydantic import ValidationError
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from consumer.settings import DatabaseSettings, Settings, describe

config = context.config


def _database() -> DatabaseSettings:
    explicit = config.attributes.get("url")
    try:
        if explicit:
            return DatabaseSettings(url=explicit)
        return Settings().database
    except ValidationError as exc:
        # pydantic's own message repeats the values, the URL's password included.
        raise SystemExit(f"invalid configuration:\n{describe(exc)}") from None


def _url() -> str:
    return _database().sqlalchemy_url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=None,
        transaction_per_migration=True,
        version_table="alembic_version",
        version_table_schema="public",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    dsn = _database().dsn

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    # The URL only names the dialect: the session is asyncpg's, from the whole DSN.
    engine = create_async_engine(
        "postgresql+asyncpg://", poolclass=pool.NullPool, async_creator=connect
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), literal_binds=True, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
