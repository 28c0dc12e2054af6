"""The HTTP server of ``omnisink run``: exactly ``/metrics``, ``/health/live`` and
``/health/ready``, GET and HEAD only; a real server on a loopback port, read with a real
HTTP client."""

from __future__ import annotations

import dataclasses
import http.client
import time
from collections.abc import Iterator

import orjson
import pytest

from consumer.health import HealthServer, Snapshot
from consumer.metrics import Metrics

PATHS = ("/metrics", "/health/live", "/health/ready")


class Served:
    def __init__(self) -> None:
        self.snapshot = Snapshot(beat_at=time.monotonic(), started=True, joined=True)
        self.metrics = Metrics()
        self.metrics.records.labels(outcome="written").inc(3)
        self.server = HealthServer(self.metrics, lambda: self.snapshot, "127.0.0.1", 0)

    def request(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=5)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            body = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        finally:
            conn.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Served]:
    s = Served()
    s.server.start()
    try:
        yield s
    finally:
        s.server.stop()  # waits out serve_forever's poll: once per module


@pytest.fixture
def served(server: Served) -> Served:
    server.snapshot = Snapshot(beat_at=time.monotonic(), started=True, joined=True)
    return server


def test_the_three_paths_answer_get(served: Served) -> None:
    status, headers, body = served.request("GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert 'omnisink_records_total{outcome="written"} 3.0' in body.decode()
    assert int(headers["content-length"]) == len(body)
    for path in ("/health/live", "/health/ready"):
        status, headers, body = served.request("GET", path)
        assert (status, headers["content-type"]) == (200, "application/json")
        assert orjson.loads(body)["status"] == "ok"
    # A query string is not part of the path.
    assert served.request("GET", "/metrics?name[]=omnisink_records_total")[0] == 200


def test_readiness_follows_the_snapshot(served: Served) -> None:
    served.snapshot = Snapshot(beat_at=time.monotonic(), started=True, joined=False)
    status, _, body = served.request("GET", "/health/ready")
    assert (status, orjson.loads(body)["status"]) == (503, "unavailable")
    assert served.request("GET", "/health/live")[0] == 200
    assert served.request("HEAD", "/health/ready")[0] == 503


@pytest.mark.parametrize("path", PATHS)
def test_head_is_get_without_the_body(served: Served, path: str) -> None:
    got_status, got_headers, got_body = served.request("GET", path)
    status, headers, body = served.request("HEAD", path)
    assert status == got_status == 200
    assert body == b""
    assert headers["content-type"] == got_headers["content-type"]
    if path != "/metrics":  # the metrics' text changes between the two requests
        assert headers["content-length"] == got_headers["content-length"] == str(len(got_body))
    assert int(headers["content-length"]) > 0


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/nosuch",
        "/health",
        "/health/",
        "/health/live/",
        "/health/ready/",
        "/health/livex",
        "/metrics/",
        "/metricsx",
        "/favicon.ico",
        "/METRICS",
        "/health/live/extra",
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
def test_every_other_path_is_404(served: Served, path: str, method: str) -> None:
    status, headers, body = served.request(method, path)
    assert status == 404
    assert "allow" not in headers
    if method == "HEAD":
        assert body == b""
    else:
        assert b"/metrics, /health/live, /health/ready" in body


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_only_get_and_head_are_allowed(served: Served, path: str, method: str) -> None:
    status, headers, body = served.request(method, path)
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    assert b"GET, HEAD" in body


def test_readiness_turns_503_when_records_wait_with_no_commit() -> None:
    ready = Snapshot(beat_at=100.0, started=True, joined=True, stall_s=30.0)
    assert ready.verdict(now=110.0)[1]
    waiting = ready.waited(5, now=100.0)
    assert waiting.verdict(now=129.0)[1], "within the stall time"
    facts = waiting.verdict(now=131.0)[2]
    assert not waiting.verdict(now=131.0)[1]
    assert facts["stalled"]
    assert facts["records_waiting"] == 5
    # Still waiting: the clock runs from when records first waited, not from each refresh.
    assert not waiting.waited(7, now=125.0).verdict(now=131.0)[1]
    # A commit since then is progress: ready until stall_s after it.
    committed = dataclasses.replace(waiting.waited(7, now=125.0), last_commit_at=120.0)
    assert committed.verdict(now=149.0)[1]
    assert not committed.verdict(now=151.0)[1]
    # Nothing waits: ready whatever the time since the last commit.
    assert waiting.waited(0, now=140.0).verdict(now=210.0)[1]


def test_readiness_turns_503_while_the_database_does_not_answer_its_probe() -> None:
    ready = Snapshot(beat_at=100.0, started=True, joined=True)
    assert ready.verdict(now=101.0)[1]
    silent = dataclasses.replace(ready, database_answers=False)
    live, is_ready, facts = silent.verdict(now=101.0)
    assert live
    assert not is_ready
    assert facts["database_answers"] is False
