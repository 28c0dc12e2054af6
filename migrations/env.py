"""Alembic environment: one history for the bridge, intelligence and sink schemas.

The URL comes from ``OMNISINK_DATABASE_URL`` (via the sink's own settings), unless a caller
put one in ``config.attributes["url"]`` (tests migrating a scratch database do).
Migrations are raw SQL (no ORM metadata), so autogenerate is not used.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from consumer.settings import DatabaseSettings, Settings

config = context.config


def _url() -> str:
    explicit = config.attributes.get("url")
    if explicit:
        return DatabaseSettings(url=explicit).sqlalchemy_url
    return Settings().database.sqlalchemy_url


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
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
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
