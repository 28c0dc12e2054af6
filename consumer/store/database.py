"""The sink's connection pool, the check that the database is at the sink's schema, and what
a person does about either failing.

Both run through the worker's retrier (consumer/retry.py) like every other call into
PostgreSQL: at start-up within ``OMNISINK_STARTUP_TIMEOUT_S`` (:func:`startup_deadline`), so a
server restarting, refusing connections or still being migrated while the sink starts is
waited out, and only what outlasts the budget exits 2 with :func:`explain`'s message.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import cast

import asyncpg

from consumer.errors import FatalError
from consumer.retry import Deadline, Retrier
from consumer.settings import Settings
from handlers.sql import Sql

REVISION = Sql("SELECT version_num FROM alembic_version", name="database.revision")


# Whether this session may write: not on a hot standby, not read-only by default (a failover
# onto a replica, ALTER DATABASE ... SET default_transaction_read_only).
WRITABLE = Sql("SELECT current_setting('transaction_read_only') = 'off'", name="database.writable")


def server_settings(settings: Settings) -> dict[str, str]:
    """The settings of every session the daemon opens (the pool's and the watch's)."""
    return {
        "application_name": "omnisink",
        # A transaction whose client vanished (a network partition, not a clean close) would
        # hold its row and advisory locks until TCP noticed, and the reconnected sink would
        # wait on them; the server ends it instead.
        "idle_in_transaction_session_timeout": str(
            int(settings.database.idle_in_transaction_timeout_s * 1000)
        ),
    }


async def connect(settings: Settings) -> asyncpg.Pool:
    """The sink's pool (it opens ``OMNISINK_DATABASE_POOL_MIN_SIZE`` sessions at once)."""
    db = settings.database
    return await asyncpg.create_pool(
        db.dsn,
        min_size=min(db.pool_min_size, db.pool_max_size),
        max_size=db.pool_max_size,
        command_timeout=db.command_timeout_s,
        statement_cache_size=db.statement_cache_size,
        server_settings=server_settings(settings),
    )


async def session(settings: Settings, timeout_s: float) -> asyncpg.Connection:
    """One session outside the pool, with the pool's settings (consumer/vitals.py's watch)."""
    return await asyncpg.connect(
        settings.database.dsn,
        timeout=timeout_s,
        command_timeout=timeout_s,
        statement_cache_size=0,
        server_settings=server_settings(settings),
    )


async def open_checked(settings: Settings, retrier: Retrier) -> asyncpg.Pool:
    """The pool, once the database answers and is at the sink's schema: both retried within
    the start-up's budget (:func:`startup_deadline`). The pool is closed if the check fails."""
    deadline = startup_deadline(settings)
    pool = await retrier.run("connect", lambda: connect(settings), deadline=deadline)
    try:
        await retrier.run("check_schema", lambda: check_schema(pool, settings), deadline=deadline)
    except BaseException:
        with contextlib.suppress(Exception):
            await pool.close()
        raise
    return pool


@contextlib.asynccontextmanager
async def acquire(pool: asyncpg.Pool, *, fresh: bool = False) -> AsyncIterator[asyncpg.Connection]:
    """A session of the pool; with ``fresh`` a new one, every open session being replaced
    first. The worker asks for that on the attempt after a transient failure: the pool's
    sessions may be broken, on a server that went away, or read-only for good (a session keeps
    the ``default_transaction_read_only`` it started with, and the pool reopens idle sessions
    while an outage lasts)."""
    if fresh:
        await pool.expire_connections()
    async with pool.acquire() as conn:
        # The pool's proxy forwards every method of the connection it holds.
        yield cast(asyncpg.Connection, conn)


async def check_schema(pool: asyncpg.Pool, settings: Settings) -> None:
    """Raise FatalError unless the database is at the migrations' head."""
    from consumer.migrate import head_revision  # Alembic only when starting

    head = head_revision()
    async with acquire(pool) as conn:
        current = await _revision(conn)
    if current != head:
        raise FatalError(
            f"the database at {settings.database.redacted_url} is at schema revision "
            f"{current or 'none'}, the sink needs {head}: run `omnisink migrate` first."
        )


def startup_deadline(settings: Settings) -> Deadline:
    """The start-up's budget, from now; past it the last error exits 2 saying what to do."""
    return Deadline.after(settings.startup_timeout_s, lambda exc: explain(exc, settings))


def explain(exc: BaseException, settings: Settings) -> str:
    """What a person does about a database error the sink cannot run past, naming the setting
    to fix; never the password."""
    url = settings.database.redacted_url
    state = str(getattr(exc, "sqlstate", None) or "")
    if isinstance(exc, FatalError):
        text = str(exc)
    elif state.startswith("28"):
        text = (
            f"PostgreSQL at {url} refused the sink's login: {exc}. "
            "Check the user and password in OMNISINK_DATABASE_URL."
        )
    elif state.startswith("3D"):
        text = (
            f"the database of {url} does not exist: {exc}. Check the database name in "
            "OMNISINK_DATABASE_URL, or create the database and run `omnisink migrate`."
        )
    elif state.startswith(("3F", "42P01")):
        text = (
            f"the database at {url} lacks the sink's schema: {exc}. "
            "Run `omnisink migrate` (OMNISINK_DATABASE_URL names the database)."
        )
    else:
        text = (
            f"cannot connect to PostgreSQL at {url}: {type(exc).__name__}: {exc}. "
            "Check OMNISINK_DATABASE_URL and that the server is running and accepts "
            "connections."
        )
    return settings.scrub(text)


def root_cause(exc: BaseException) -> BaseException:
    """The driver's own error under the wrappers of SQLAlchemy and Alembic (``orig``, then
    the chain of causes), or ``exc`` itself."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError | TimeoutError | asyncpg.PostgresError | FatalError):
            return exc
        inner = getattr(exc, "orig", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            return exc
        exc = inner
    return exc


def is_connection_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or the driver's error under it) says PostgreSQL could not be reached
    or would not take the session: a refused or lost connection, a timeout, TLS, the login,
    a missing database."""
    cause = root_cause(exc)
    state = str(getattr(cause, "sqlstate", None) or "")
    unreachable = (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.ConnectionDoesNotExistError,
        asyncpg.ClientConfigurationError,
    )
    return isinstance(cause, unreachable) or state.startswith(("08", "28", "3D", "57P03"))


async def revision(settings: Settings) -> str | None:
    """The schema revision the database at OMNISINK_DATABASE_URL is at (None: not migrated)."""
    conn = await asyncpg.connect(settings.database.dsn)
    try:
        return await _revision(conn)
    finally:
        await conn.close()


async def _revision(conn: asyncpg.Connection) -> str | None:
    try:
        return cast(str | None, await conn.fetchval(REVISION.sql))
    except asyncpg.UndefinedTableError:
        return None


async def probe(settings: Settings) -> None:
    """Open one session to OMNISINK_DATABASE_URL and close it, as the sink's pool would (the
    URL's TLS parameters included); the driver's error when PostgreSQL cannot be reached."""
    conn = await asyncpg.connect(settings.database.dsn)
    await conn.close()
