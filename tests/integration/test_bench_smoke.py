"""A small run of the benchmark keeps it working (its figures live in BENCHMARKS.md): every
measurement, on a tiny corpus, with every figure of bench-results.json present and plausible
(no timing is asserted: this machine's load is not the benchmark's)."""

from __future__ import annotations

import io

from rich.console import Console

from dev import bench
from dev.bench_queries import CRUD
from dev.bench_report import QUERY_TITLES
from dev.services import Service

TINY = bench.Options(
    events=300,
    naive_events=40,
    latency_s=3,
    latency_rate=200,
    query_rows=5_000,
    query_iterations=5,
    crud_iterations=5,
)


async def test_the_benchmark_measures_every_figure(
    pg_server: Service, kafka_server: Service
) -> None:
    output = io.StringIO()
    figures = await bench.bench(pg_server.url, kafka_server.url, TINY, Console(file=output))
    ceiling, sink, naive, replayed = figures.results
    assert sink.events >= 300
    assert ceiling.events == sink.events  # the same rows, written back with COPY
    assert 0 < naive.events <= 40
    assert replayed.events == sink.events  # the same stream, replayed into an empty database
    assert figures.two_members is not None
    assert figures.two_members.events == sink.events  # each event written once by the group
    assert all(r.seconds > 0 and r.rate > 0 for r in [*figures.results, figures.two_members])
    assert figures.latency is not None
    assert figures.latency.committed == figures.latency.sent == 600

    found = figures.as_json("abc1234")
    for key in (
        "copy_events_per_s",
        "sink_events_per_s",
        "naive_events_per_s",
        "replay_events_per_s",
        "two_members_events_per_s",
        "peak_rss_mb",
        "crud_p95_ms",
    ):
        assert found[key] > 0, key
    assert 20 < found["peak_rss_mb"] < 4096  # MB of a Python process, not KiB or bytes
    latency = found["latency_ms"]
    assert set(latency) == {"p50", "p95", "p99"}
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert set(found["queries_p95_ms"]) == set(QUERY_TITLES)
    assert all(ms > 0 for ms in found["queries_p95_ms"].values())
    assert set(found["crud_p95_ms_by_statement"]) == set(CRUD)
    assert found["machine"]
    assert found["commit"] == "abc1234"

    bench.report(Console(file=output, width=200), figures)
    table = output.getvalue()
    assert "latency produce -> committed" in table
    assert "sink peak RSS" in table
