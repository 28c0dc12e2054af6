"""Helpers for tests: database URLs, scratch databases, the local PostgreSQL 15."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from consumer.settings import DatabaseSettings, KafkaSettings, Settings
from dev.sample import Record, produce  # noqa: F401 - the tests' producer
from dev.services import free_port

SEEDS_DIR = Path(__file__).resolve().parent / "fixtures" / "seeds"

# The seven tables of seed 000, in the order it creates them.
BRIDGE_TABLES = (
    "workflow_executions",
    "workflow_steps",
    "fsm_transitions",
    "bridge_states",
    "node_registrations",
    "metadata_stamps",
    "event_logs",
)

LOCAL_PG15_URL_ENV = "OMNISINK_TEST_PG15_URL"
LOCAL_PG15_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def with_database(url: str, database: str) -> str:
    """The same server URL, pointing at another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def _checked(name: str) -> str:
    # CREATE DATABASE cannot take a bind parameter; names come from our own fixtures only.
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a safe database name: {name!r}")
    return name


async def create_database(server_url: str, name: str, template: str | None = None) -> None:
    conn = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        if template is None:
            await conn.execute(f"CREATE DATABASE {_checked(name)}")
        else:
            await conn.execute(f"CREATE DATABASE {_checked(name)} TEMPLATE {_checked(template)}")
    finally:
        await conn.close()


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_checked(name)} WITH (FORCE)")
    finally:
        await conn.close()


@functools.cache
def local_pg15_url() -> str | None:
    """The URL of a PostgreSQL 15 server on this machine, or None if none answers."""
    url = os.environ.get(LOCAL_PG15_URL_ENV, LOCAL_PG15_DEFAULT)

    async def probe() -> int:
        conn = await asyncpg.connect(url, timeout=3)
        try:
            return int(await conn.fetchval("SHOW server_version_num"))
        finally:
            await conn.close()

    try:
        version = asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    return url if version // 10000 == 15 else None


SCHEMAS = ("public", "intelligence", "omnisink")

_SNAPSHOT_QUERIES = {
    "tables": """
        SELECT n.nspname || '.' || c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND n.nspname = ANY($1::text[])
          AND c.relname <> 'alembic_version'
        ORDER BY 1
    """,
    "columns": """
        SELECT n.nspname || '.' || c.relname || '.' || a.attname || ' '
               || format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
               || COALESCE(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
          AND n.nspname = ANY($1::text[]) AND c.relname <> 'alembic_version'
        ORDER BY 1
    """,
    "indexes": """
        SELECT pg_get_indexdef(i.indexrelid)
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1::text[]) AND t.relname <> 'alembic_version'
        ORDER BY 1
    """,
    "constraints": """
        SELECT n.nspname || '.' || t.relname || ' ' || con.conname || ' '
               || pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class t ON t.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = ANY($1::text[]) AND t.relname <> 'alembic_version'
        ORDER BY 1
    """,
    "triggers": """
        SELECT n.nspname || '.' || c.relname || ' ' || pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND n.nspname = ANY($1::text[])
        ORDER BY 1
    """,
    "functions": """
        SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_arguments(p.oid) || ') '
               || pg_get_function_result(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY($1::text[])
        ORDER BY 1
    """,
    "schemas": """
        SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[]) ORDER BY 1
    """,
}


async def schema_snapshot(
    conn: asyncpg.Connection, schemas: tuple[str, ...] = SCHEMAS
) -> dict[str, list[str]]:
    """Everything the migrations define, as sorted lists of catalog facts."""
    return {
        kind: [row[0] for row in await conn.fetch(query, list(schemas))]
        for kind, query in _SNAPSHOT_QUERIES.items()
    }


# -- the pipeline end to end ---------------------------------------------------------------

# Every table an event can write, and the columns that legitimately differ between two runs
# of the same events: surrogate serial ids and columns PostgreSQL fills with NOW() by trigger.
# event_logs.metadata also carries where the record was read (kafka_*), which differs when the
# same events are produced again elsewhere; those keys are dropped from the comparison.
DATA_TABLES: dict[str, tuple[str, ...]] = {
    "event_logs": (),
    "workflow_executions": (),
    "workflow_steps": (),
    "fsm_transitions": (),
    "metadata_stamps": (),
    "node_registrations": (),
    "bridge_states": (),
    "intelligence.fsm_state": ("created_at", "updated_at"),
    "intelligence.fsm_state_history": ("id",),
    "intelligence.workflow_executions": ("created_at", "updated_at"),
}
KAFKA_METADATA_KEYS = ("kafka_topic", "kafka_partition", "kafka_offset")


async def table_snapshot(conn: asyncpg.Connection) -> dict[str, list[str]]:
    """Every data table's rows as sorted JSON text, minus what legitimately differs."""
    out: dict[str, list[str]] = {}
    for table, volatile in DATA_TABLES.items():
        row = "to_jsonb(t) - $1::text[]"
        if table == "event_logs":
            row = f"({row}) || jsonb_build_object('metadata', t.metadata - $2::text[])"
        rows = await conn.fetch(
            f"SELECT ({row})::text AS r FROM {table} t ORDER BY 1",  # table: constant above
            list(volatile),
            *([list(KAFKA_METADATA_KEYS)] if table == "event_logs" else []),
        )
        out[table] = [r["r"] for r in rows]
    return out


async def assert_same_tables(reference_url: str, tested_url: str, distinct_events: int) -> None:
    """The tested database's data tables equal the reference run's, with one event_logs row
    per distinct event."""
    ref = await asyncpg.connect(reference_url)
    tested = await asyncpg.connect(tested_url)
    try:
        expected = await table_snapshot(ref)
        got = await table_snapshot(tested)
    finally:
        await ref.close()
        await tested.close()
    assert len(got["event_logs"]) == distinct_events
    for table in expected:
        assert got[table] == expected[table], f"{table} differs from the reference run"


def sink_settings(db_url: str, servers: str, group: str, **overrides: object) -> Settings:
    """Settings for a sink in a test: short group timeouts (the embedded broker's joins are
    slow), a short batch wait."""
    kafka = KafkaSettings(
        bootstrap_servers=servers, session_timeout_ms=6000, heartbeat_interval_ms=500
    )
    values: dict[str, object] = {
        "database": DatabaseSettings(url=db_url),
        "kafka": kafka,
        "group_id": group,
        "batch_max_wait_ms": 50,
        "http_port": 0,  # several sinks may run at once
        "log_format": "console",
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


async def run_omnisink(
    env: dict[str, str], *args: str, timeout_s: float = 300
) -> tuple[int, str, str]:
    """``omnisink ARGS`` in a process of its own, as an operator runs it: (exit, out, err)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def sink_env(db_url: str, servers: str, group: str, **extra: str) -> dict[str, str]:
    """The environment of an ``omnisink`` subprocess (same settings as sink_settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNISINK_")}
    env.update(
        {
            "OMNISINK_DATABASE_URL": db_url,
            "OMNISINK_KAFKA_BOOTSTRAP_SERVERS": servers,
            "OMNISINK_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "OMNISINK_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "OMNISINK_GROUP_ID": group,
            "OMNISINK_BATCH_MAX_WAIT_MS": "50",
            "OMNISINK_HTTP_PORT": "0",
            "OMNISINK_LOG_FORMAT": "json",
            "OMNISINK_LOG_LEVEL": "INFO",
        }
    )
    env.update(extra)
    return env


class Proxy:
    """A TCP proxy a test can cut: ``cut()`` closes every open connection and refuses new
    ones until ``restore()``. The target is ``host:port`` or a Unix socket path."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self.port = 0
        self.cut_count = 0
        self._blocked = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self._blocked = True
        self.cut_count += 1
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self._blocked = False

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if isinstance(self.target, str):
            return await asyncio.open_unix_connection(self.target)
        return await asyncio.open_connection(*self.target)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._blocked:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await self._open()
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self._writers -= {writer, upstream_writer}


def postgres_target(url: str) -> tuple[tuple[str, int] | str, str]:
    """Where a PostgreSQL URL points (TCP or Unix socket) and a TCP URL for a proxy's port
    placeholder ``{port}`` with the same user and database."""
    parts = urlsplit(url)
    query = dict(q.split("=", 1) for q in parts.query.split("&") if "=" in q)
    port = parts.port or 5432
    user = parts.username or "postgres"
    password = f":{parts.password}" if parts.password else ""
    proxied = f"postgresql://{user}{password}@127.0.0.1:{{port}}{parts.path}"
    socket_dir = query.get("host") or (
        parts.hostname if (parts.hostname or "").startswith("/") else None
    )
    if socket_dir:
        return f"{socket_dir}/.s.PGSQL.{port}", proxied
    return (parts.hostname or "127.0.0.1", port), proxied


# -- a PostgreSQL cluster of a test's own -----------------------------------------------------


def postgres_bindir() -> Path | None:
    """The local PostgreSQL server binaries, or None."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
    bindir = Path(done.stdout.strip())
    if done.returncode != 0 or not all((bindir / b).exists() for b in ("initdb", "pg_ctl")):
        return None
    return bindir


def unprivileged_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: who runs it when the test is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    pytest.skip("running as root with no unprivileged user to run PostgreSQL as")


class Cluster:
    """A PostgreSQL cluster of this test's own, driven as a DBA drives one: pg_ctl."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.user = unprivileged_user()
        # Short, and traversable by that user (pytest's tmp_path is private to root).
        self.root = Path(tempfile.mkdtemp(prefix="omnisink-pgc-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str) -> None:
        who: dict[str, object] = {}
        if self.user is not None:
            who = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        done = subprocess.run(
            [str(self.bindir / tool), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **who,  # type: ignore[arg-type]
        )
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise AssertionError(f"{tool} {args}: {done.stderr}\n{log[-3000:]}")

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--locale=C",
            "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                # A process crash loses nothing the OS has; a machine crash is not tested.
                "fsync = off\n"
                "full_page_writes = off\n"
                "max_connections = 40\n"
                "shared_buffers = 32MB\n"
            )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", mode, "stop")

    def restart(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-m", "fast",
            "restart",
        )  # fmt: skip

    def crash(self) -> None:
        """SIGKILL the postmaster and every child (pg_ctl starts it as a process group
        leader), wait until all are gone, then start it again: crash recovery runs."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        assert os.getpgid(postmaster) == postmaster, "the postmaster leads its process group"
        os.killpg(postmaster, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            try:
                os.killpg(postmaster, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, "the killed server's processes linger"
            time.sleep(0.05)
        self.start()

    def remove(self) -> None:
        with contextlib.suppress(AssertionError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
