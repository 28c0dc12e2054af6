"""Prometheus metrics of the sink, and the HTTP endpoints that serve them with health.

``/metrics`` (Prometheus text format), ``/health/live`` (the worker loop is turning) and
``/health/ready`` (started, member of the group, circuit breaker not open), both JSON with
the breaker's state. Served by prometheus-client's own WSGI app and threaded WSGI server
(the same one its ``start_http_server`` uses), with two health routes in front of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    """The sink's metrics, in a registry of their own (tests run several workers)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "omnisink_records",
            "Records consumed, by outcome (written, duplicate, dead_letter).",
            ["outcome"],
            registry=r,
        )
        self.events = Counter(
            "omnisink_events_written",
            "Events written, by canonical type.",
            ["event_type"],
            registry=r,
        )
        self.dead_letters = Counter(
            "omnisink_dead_letters", "Dead letters, by kind.", ["kind"], registry=r
        )
        self.batches = Counter("omnisink_batches", "Batches committed.", registry=r)
        self.batch_seconds = Histogram(
            "omnisink_batch_duration_seconds",
            "Time to write and commit one batch.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.transient_errors = Counter(
            "omnisink_transient_errors",
            "Transient errors retried, by operation.",
            ["operation"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "omnisink_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["breaker"],
            registry=r,
        )
        self.lag = Gauge(
            "omnisink_consumer_lag",
            "Records between the partition's high watermark and the committed offset.",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned = Gauge(
            "omnisink_assigned_partitions", "Partitions assigned to this member.", registry=r
        )
        self.last_commit = Gauge(
            "omnisink_last_commit_timestamp_seconds",
            "Unix time of the last committed batch.",
            registry=r,
        )


class HealthServer:
    """Serves /metrics and /health/* from a daemon thread until ``stop()``."""

    def __init__(
        self,
        metrics: Metrics,
        health: Callable[[], tuple[bool, bool, dict[str, Any]]],
        host: str,
        port: int,
    ) -> None:
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._health = health
        self._server = make_server(
            host, port, self._app, ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="omnisink-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in {"/health/live", "/health/ready"}:
            live, ready, facts = self._health()
            ok = live if path == "/health/live" else ready
            body = orjson.dumps({"status": "ok" if ok else "unavailable", **facts})
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        result: Iterable[bytes] = self._metrics_app(environ, start_response)
        return result


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds are not worth a log line each."""
