"""Health: what the worker loop last said of itself, and the HTTP server that reports it.

``/metrics`` (Prometheus text format), ``/health/live`` (the worker loop is turning) and
``/health/ready`` (started, member of the group, circuit breaker not open, and the write path
not failing: no operation being retried), both JSON with the breaker's state and what is
being retried. Served by prometheus-client's own WSGI app and threaded WSGI server (the same
one its ``start_http_server`` uses), with two health routes in front of it.

Those three paths exactly, and GET or HEAD only: any other path is 404 (``/``, ``/health``,
``/metrics/``: prometheus-client alone would serve the metrics on every path), any other
method 405 with ``Allow: GET, HEAD``.

The loop writes a :class:`Snapshot` whenever a fact changes (a loop turn, a poll while
retrying, a breaker change, an assignment, a commit); the HTTP thread only reads the latest
one, so it never touches the worker's state (the circuit breaker is not thread-safe).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from consumer.errors import FatalError
from consumer.metrics import Metrics
from consumer.settings import Settings

# A loop turn (or a poll while retrying) at least this often, or the worker is stuck.
LIVENESS_S = 120.0

METRICS_PATH = "/metrics"
HEALTH_PATHS = ("/health/live", "/health/ready")
ALLOWED_METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class Snapshot:
    """The worker's facts as of ``beat_at`` (monotonic clock); immutable, so a reader on
    another thread sees one consistent set."""

    beat_at: float
    started: bool = False
    joined: bool = False
    stopping: bool = False
    breaker: str = "closed"
    assigned: int = 0
    last_commit_at: float | None = None
    # The operation being retried after a transient failure (consumer/retry.py), if any.
    failing: str | None = None
    # Records waiting (the lag of every owned partition, consumer/lag.py), since when (no
    # record waiting: None), and how long they may wait with no commit before not ready.
    waiting: int = 0
    waiting_since: float | None = None
    stall_s: float = 120.0
    # Whether PostgreSQL is there to write to (consumer/vitals.py, the database watch).
    database_answers: bool = True

    def beat(self, breaker: str, stopping: bool, **changes: Any) -> Snapshot:
        """The next snapshot: now, with these facts."""
        return dataclasses.replace(
            self, beat_at=time.monotonic(), breaker=breaker, stopping=stopping, **changes
        )

    def stalled(self, now: float) -> bool:
        """Records have waited ``stall_s`` and no batch committed meanwhile."""
        if self.waiting <= 0 or self.waiting_since is None:
            return False
        progress = max(self.waiting_since, self.last_commit_at or self.waiting_since)
        return now - progress > self.stall_s

    def waited(self, total: int, now: float) -> Snapshot:
        """This snapshot with ``total`` records waiting (since now, if none were)."""
        since = None if total <= 0 else (self.waiting_since or now)
        return dataclasses.replace(self, waiting=total, waiting_since=since)

    def verdict(self, now: float | None = None) -> tuple[bool, bool, dict[str, Any]]:
        """(live, ready, facts) for the health endpoints."""
        now = time.monotonic() if now is None else now
        live = now - self.beat_at < LIVENESS_S and not self.stopping
        stalled = self.stalled(now)
        ready = (
            live
            and self.started
            and self.joined
            and self.breaker != "open"
            and self.failing is None
            and self.database_answers
            and not stalled
        )
        since = None if self.last_commit_at is None else round(now - self.last_commit_at, 3)
        return (
            live,
            ready,
            {
                "circuit_breaker": self.breaker,
                "retrying": self.failing,
                "group_member": self.joined,
                "assigned_partitions": self.assigned,
                "seconds_since_last_commit": since,
                "database_answers": self.database_answers,
                "records_waiting": self.waiting,
                "stalled": stalled,
                "stopping": self.stopping,
            },
        )


class Board:
    """The latest :class:`Snapshot`: the loop writes it, the HTTP thread reads ``snapshot``."""

    def __init__(self, stall_s: float, breaker: Callable[[], str], stopping: Callable[[], bool]):
        self.snapshot = Snapshot(beat_at=time.monotonic(), stall_s=stall_s)
        self._breaker = breaker
        self._stopping = stopping

    def beat(self, **changes: Any) -> None:
        """The loop turned (or polled while retrying), with these facts."""
        self.snapshot = self.snapshot.beat(self._breaker(), self._stopping(), **changes)

    def waited(self, records: int) -> None:
        self.snapshot = self.snapshot.waited(records, time.monotonic())

    def update(self, **changes: Any) -> None:
        self.snapshot = dataclasses.replace(self.snapshot, **changes)


class HealthServer:
    """Serves /metrics and /health/* from a daemon thread until ``stop()``."""

    def __init__(
        self,
        metrics: Metrics,
        snapshot: Callable[[], Snapshot],
        host: str,
        port: int,
    ) -> None:
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._snapshot = snapshot
        self._server = make_server(
            host, port, self._app, ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="omnisink-http", daemon=True
        )

    @classmethod
    def serve(
        cls, metrics: Metrics, snapshot: Callable[[], Snapshot], settings: Settings
    ) -> HealthServer:
        """Started on OMNISINK_HTTP_HOST:PORT; FatalError naming the settings when it can't."""
        host, port = settings.http_host, settings.http_port
        try:
            server = cls(metrics, snapshot, host, port)
        except OSError as exc:
            raise FatalError(
                f"cannot serve /metrics and /health on {host}:{port}: {exc}. "
                "Set OMNISINK_HTTP_PORT (0: any free port) or OMNISINK_HTTP_ENABLED=false."
            ) from exc
        server.start()
        return server

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        status, headers, body = self._respond(environ.get("PATH_INFO", ""), method, environ)
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        # HEAD: the headers GET would have, Content-Length included, and no body.
        return [b""] if method == "HEAD" else [body]

    def _respond(
        self, path: str, method: str, environ: dict[str, Any]
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        if path != METRICS_PATH and path not in HEALTH_PATHS:
            paths = ", ".join((METRICS_PATH, *HEALTH_PATHS))
            return _plain("404 Not Found", f"not found; the paths served are {paths}")
        if method not in ALLOWED_METHODS:
            allowed = ", ".join(ALLOWED_METHODS)
            status, headers, body = _plain("405 Method Not Allowed", f"allowed: {allowed}")
            return status, [*headers, ("Allow", allowed)], body
        if path in HEALTH_PATHS:
            live, ready, facts = self._snapshot().verdict()
            ok = live if path == "/health/live" else ready
            body = orjson.dumps({"status": "ok" if ok else "unavailable", **facts})
            status = "200 OK" if ok else "503 Service Unavailable"
            return status, [("Content-Type", "application/json")], body
        # prometheus-client's app, which answers GET only (HEAD is GET without the body).
        answer: list[Any] = []

        def keep(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
            answer.extend((status, headers))

        chunks = self._metrics_app({**environ, "REQUEST_METHOD": "GET"}, keep)
        body = b"".join(chunks)
        status, headers = answer
        return status, [(k, v) for k, v in headers if k.lower() != "content-length"], body


def _plain(status: str, text: str) -> tuple[str, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", "text/plain; charset=utf-8")], f"{text}\n".encode()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds are not worth a log line each."""
