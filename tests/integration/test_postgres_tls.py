"""One ``OMNISINK_DATABASE_URL`` with libpq's TLS parameters (``sslmode``, ``sslrootcert``,
``sslcert``, ``sslkey``) works for every path that connects: ``omnisink migrate`` (Alembic),
``omnisink dlq``, the sink's pool, and ``omnisink run`` writing events.

A PostgreSQL cluster of the test's own (the machine's server binaries: ``pg_config --bindir``)
with ``ssl = on`` and certificates made here with ``openssl``: a CA, the server's (for
127.0.0.1) and a client's (CN ``postgres``). Its pg_hba.conf takes no TCP session without TLS,
and one as ``postgres`` only with a client certificate the CA signed; the role ``tlsonly``
needs TLS but no certificate. So a path that dropped a parameter of the URL would fail here.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from consumer.settings import DatabaseSettings, Settings
from consumer.store import database
from dev import sample
from dev.services import Service
from tests.support import Cluster, postgres_bindir, produce, sink_env

pytestmark = pytest.mark.timeout(300)

BIN = Path(sys.executable).parent


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"openssl {args}: {done.stderr}"


def _ca(tls: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN=omnisink test {name}", "-keyout", f"{name}.key", "-out", f"{name}.crt",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=tls,
    )  # fmt: skip


def _signed(tls: Path, name: str, cn: str, extensions: str) -> None:
    """``name``.crt and .key for ``cn``, signed by the CA ``ca``."""
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
        "-keyout", f"{name}.key", "-out", f"{name}.csr",
        cwd=tls,
    )  # fmt: skip
    (tls / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext",
        cwd=tls,
    )  # fmt: skip
    (tls / f"{name}.key").chmod(0o600)


class TlsCluster:
    """The cluster, its certificates, and the URLs to reach it."""

    def __init__(self, cluster: Cluster, tls: Path) -> None:
        self.cluster = cluster
        self.tls = tls

    def admin_url(self, db: str) -> str:
        """The Unix socket (trusted): how the test itself reaches the cluster."""
        return f"postgresql://postgres@/{db}?host={self.cluster.root}&port={self.cluster.port}"

    def url(self, db: str, user: str = "postgres", **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://{user}@127.0.0.1:{self.cluster.port}/{db}?{query}"

    def full_url(self, db: str, **more: str) -> str:
        """Verified server, client certificate: every TLS parameter of libpq at once."""
        params = {
            "sslmode": "verify-full",
            "sslrootcert": str(self.tls / "ca.crt"),
            "sslcert": str(self.tls / "client.crt"),
            "sslkey": str(self.tls / "client.key"),
            **more,
        }
        return self.url(db, **{k: v for k, v in params.items() if v})

    async def admin(self, *statements: str, db: str = "postgres") -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.admin_url(db), timeout=10)
        try:
            rows: list[asyncpg.Record] = []
            for statement in statements:
                rows = await conn.fetch(statement)
            return rows
        finally:
            await conn.close()


@pytest.fixture
def tls_cluster() -> Iterator[TlsCluster]:
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no local PostgreSQL server binaries (pg_config --bindir: initdb, pg_ctl)")
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make the test's certificates")
    own = Cluster(bindir)
    try:
        own.init()
        tls = own.root / "tls"
        tls.mkdir()
        _ca(tls, "ca")
        _ca(tls, "other-ca")  # a CA that signed nothing here: verifying against it fails
        _signed(
            tls,
            "server",
            "127.0.0.1",
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "extendedKeyUsage=serverAuth\n",
        )
        _signed(
            tls, "client", "postgres", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
        )
        if own.user is not None:  # the server reads its key as the user it runs as
            os.chown(tls, own.user.pw_uid, own.user.pw_gid)
            for path in tls.iterdir():
                os.chown(path, own.user.pw_uid, own.user.pw_gid)
        with (own.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "ssl = on\n"
                f"ssl_cert_file = '{tls / 'server.crt'}'\n"
                f"ssl_key_file = '{tls / 'server.key'}'\n"
                f"ssl_ca_file = '{tls / 'ca.crt'}'\n"
            )
        (own.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostssl all tlsonly 127.0.0.1/32 trust\n"
            "hostssl all postgres 127.0.0.1/32 cert\n"
            "host all all 0.0.0.0/0 reject\n"
        )
        own.start()
        yield TlsCluster(own, tls)
    finally:
        own.remove()


def _omnisink(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OMNISINK_")}
    environ.update({"OMNISINK_DATABASE_URL": url, **env})
    return subprocess.run(
        [str(BIN / "omnisink"), *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _says_plainly(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


async def test_one_tls_url_serves_migrate_dlq_the_pool_and_the_sink(
    tls_cluster: TlsCluster, kafka_server: Service
) -> None:
    await tls_cluster.admin("CREATE DATABASE sink")
    url = tls_cluster.full_url("sink")

    # omnisink migrate: Alembic's session is opened from the URL, TLS parameters included.
    done = await asyncio.to_thread(_omnisink, url, "migrate")
    assert done.returncode == 0, done.stderr
    assert await tls_cluster.admin("SELECT version_num FROM alembic_version", db="sink"), (
        "migrate did not write the database"
    )

    # omnisink dlq list
    done = await asyncio.to_thread(_omnisink, url, "dlq", "list")
    assert done.returncode == 0, done.stderr
    assert "no pending dead letters match" in done.stdout

    # The sink's pool: every session over TLS, with the client certificate.
    settings = Settings(database=DatabaseSettings(url=url, pool_min_size=2))
    pool = await database.connect(settings)
    try:
        async with database.acquire(pool) as conn:
            row = await conn.fetchrow(
                "SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            )
    finally:
        await pool.close()
    assert row is not None
    assert row["ssl"] is True
    assert row["client_dn"] == "/CN=postgres"

    # omnisink run: events written through that pool.
    stream = sample.generate(60, env=f"tls{uuid.uuid4().hex[:8]}", seed=5)
    await produce(kafka_server.url, stream.records, partitions=1)
    env = sink_env(url, kafka_server.url, f"tls-{uuid.uuid4().hex[:8]}")
    env["OMNISINK_TOPICS"] = ",".join(stream.topics)
    done = await asyncio.to_thread(
        subprocess.run,
        [str(BIN / "omnisink"), "run", "--until-caught-up", "--timeout-s", "120"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [count] = await tls_cluster.admin("SELECT count(*) FROM event_logs", db="sink")
    assert count[0] == stream.distinct_events


async def test_sslmode_require_alone_serves_migrate_and_dlq(tls_cluster: TlsCluster) -> None:
    await tls_cluster.admin("CREATE ROLE tlsonly LOGIN SUPERUSER", "CREATE DATABASE plain")
    url = tls_cluster.url("plain", user="tlsonly", sslmode="require")
    done = await asyncio.to_thread(_omnisink, url, "migrate")
    assert done.returncode == 0, done.stderr
    done = await asyncio.to_thread(_omnisink, url, "dlq", "list")
    assert done.returncode == 0, done.stderr

    # Without TLS the server refuses it: the URL's sslmode is what is used, on both paths.
    no_tls = tls_cluster.url("plain", user="tlsonly", sslmode="disable")
    for args in (["migrate"], ["dlq", "list"]):
        done = await asyncio.to_thread(_omnisink, no_tls, *args)
        _says_plainly(done, 2, "pg_hba.conf")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"sslcert": "", "sslkey": ""}, "certificate"),  # no client certificate
        ({"sslrootcert": "other-ca.crt"}, "certificate verify failed"),  # unknown server
    ],
    ids=["without-client-certificate", "server-not-signed-by-sslrootcert"],
)
async def test_a_tls_failure_exits_2_plainly(
    tls_cluster: TlsCluster, change: dict[str, str], says: str
) -> None:
    await tls_cluster.admin("CREATE DATABASE sink")
    change = {k: str(tls_cluster.tls / v) if v else v for k, v in change.items()}
    url = tls_cluster.full_url("sink", **change)
    for args in (["migrate"], ["dlq", "list"]):
        done = await asyncio.to_thread(_omnisink, url, *args)
        _says_plainly(done, 2, says, "OMNISINK_DATABASE_URL")
