"""A small run of the benchmark keeps it working (its figures live in BENCHMARKS.md)."""

from __future__ import annotations

import io

from rich.console import Console

from dev import bench
from dev.services import Service


async def test_the_benchmark_runs_all_three_measurements(
    pg_server: Service, kafka_server: Service
) -> None:
    output = Console(file=io.StringIO())
    ceiling, sink, naive = await bench.bench(pg_server.url, kafka_server.url, 300, 40, output)
    assert sink.events >= 300
    assert ceiling.events == sink.events  # the same rows, written back with COPY
    assert 0 < naive.events <= 40
    assert all(r.seconds > 0 and r.rate > 0 for r in (ceiling, sink, naive))
