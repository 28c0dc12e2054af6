"""Real services for the whole suite: one PostgreSQL and one broker per session.

Every test that asks for ``db_url`` gets its own database, cloned from a template migrated
to head once per session (cloning is ~50 ms; migrating is seconds). Every test that asks for
``topic_factory`` gets fresh, uniquely named topics. See dev/services.py for which
servers are used (environment URLs, testcontainers, or embedded).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumer import migrate
from dev.services import Service, running, start_kafka, start_postgres
from tests.support import (
    LOCAL_PG15_URL_ENV,
    Cluster,
    create_database,
    drop_database,
    local_pg15_url,
    postgres_bindir,
    with_database,
)

TopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Service]:
    with running(start_postgres(tuned_for_tests=True)) as service:
        yield service


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[Service]:
    with running(start_kafka()) as service:
        yield service


@pytest.fixture(scope="session")
def template_database(pg_server: Service) -> Iterator[str]:
    """A database migrated to head, used as the template of every test database."""
    name = f"omnisink_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(create_database(pg_server.url, name))
    try:
        migrate.upgrade(with_database(pg_server.url, name))
        yield name
    finally:
        asyncio.run(drop_database(pg_server.url, name))


@pytest.fixture
async def db_url(pg_server: Service, template_database: str) -> AsyncIterator[str]:
    """The URL of a fresh database at head, for this test only."""
    name = f"omnisink_t_{uuid.uuid4().hex[:12]}"
    await create_database(pg_server.url, name, template=template_database)
    try:
        yield with_database(pg_server.url, name)
    finally:
        await drop_database(pg_server.url, name)


@pytest.fixture
async def database_pair(pg_server: Service, template_database: str) -> AsyncIterator[list[str]]:
    """Two fresh databases at head: a clean run's (the reference) and the run under test's."""
    names = [f"omnisink_p_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    for name in names:
        await create_database(pg_server.url, name, template=template_database)
    try:
        yield [with_database(pg_server.url, name) for name in names]
    finally:
        for name in names:
            await drop_database(pg_server.url, name)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(db_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(params=["primary", "pg15-local"])
def any_pg_server(request: pytest.FixtureRequest, pg_server: Service) -> str:
    """Each PostgreSQL the schema must work on: the suite's own server, and PostgreSQL 15.

    ``pg15-local`` is the PostgreSQL 15 on 127.0.0.1:5432 of these machines (or
    ``$OMNISINK_TEST_PG15_URL``); it is skipped, saying so, where none answers.
    """
    if request.param == "primary":
        return pg_server.url
    url = local_pg15_url()
    if url is None:
        pytest.skip(f"no PostgreSQL 15 answers (set {LOCAL_PG15_URL_ENV})")
    if url == pg_server.url:
        pytest.skip("the suite's own server is already the local PostgreSQL 15")
    return url


@pytest.fixture
async def scratch_database(any_pg_server: str) -> AsyncIterator[str]:
    """An empty database (not migrated) on each server of ``any_pg_server``."""
    name = f"omnisink_s_{uuid.uuid4().hex[:12]}"
    await create_database(any_pg_server, name)
    try:
        yield with_database(any_pg_server, name)
    finally:
        await drop_database(any_pg_server, name)


@pytest.fixture
async def migrated_any_database(scratch_database: str) -> str:
    """A database at head on each server of ``any_pg_server``."""
    # Alembic's env runs its own event loop, so it must not run on this test's loop.
    await asyncio.to_thread(migrate.upgrade, scratch_database)
    return scratch_database


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL cluster of the test's own (the machine's server binaries, ``pg_config
    --bindir``), started, on a free loopback port: one a fault test may restart or kill."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no local PostgreSQL server binaries (pg_config --bindir: initdb, pg_ctl)")
    own = Cluster(bindir)
    try:
        own.init()
        own.start()
        yield own
    finally:
        own.remove()


@pytest.fixture
async def topic_factory(kafka_server: Service) -> AsyncIterator[TopicFactory]:
    """Creates uniquely named topics on the session's broker; deletes them afterwards."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_server.url)
    await admin.start()
    created: list[str] = []

    async def create(
        slug: str = "test-event", partitions: int = 3, prefix: str = "test.omninode_bridge"
    ) -> str:
        name = f"{prefix}.onex.evt.{slug}-{uuid.uuid4().hex[:10]}.v1"
        await admin.create_topics([NewTopic(name, partitions, 1)])
        created.append(name)
        return name

    try:
        yield create
    finally:
        # Best effort: topic names are unique per test, so a leftover harms nothing.
        with contextlib.suppress(Exception):
            if created:
                await admin.delete_topics(created)
        await admin.close()
