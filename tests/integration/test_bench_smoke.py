"""A small run of the benchmark keeps it working (its figures live in BENCHMARKS.md)."""

from __future__ import annotations

import io

from rich.console import Console

from dev import bench
from dev.services import Service


async def test_the_benchmark_runs_all_four_measurements(
    pg_server: Service, kafka_server: Service
) -> None:
    output = Console(file=io.StringIO())
    results = await bench.bench(pg_server.url, kafka_server.url, 300, 40, output)
    ceiling, sink, naive, replayed = results
    assert sink.events >= 300
    assert ceiling.events == sink.events  # the same rows, written back with COPY
    assert 0 < naive.events <= 40
    assert replayed.events == sink.events  # the same stream, replayed into an empty database
    assert all(r.seconds > 0 and r.rate > 0 for r in results)
