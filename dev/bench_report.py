"""The benchmark's figures: one table with each and its target, the EXPLAIN of what missed,
Markdown rows for BENCHMARKS.md, and bench-results.json."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from dev.bench_latency import Latency
from dev.bench_queries import CRUD_TARGET_MS, QUERY_TARGET_MS, Timings, overall_p95

LATENCY_TARGET_MS = 250.0  # p99
RSS_TARGET_MB = 200.0

QUERY_TITLES = {
    "trace": "query trace (a workflow's trace)",
    "namespace": "query namespace (statistics)",
    "failed": "query failed (failed workflows)",
    "session": "query session (session events)",
    "fsm": "query fsm (FSM statistics)",
    "stuck": "maintenance stuck (stuck workflows)",
}


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


@dataclass
class Figures:
    """Everything one run measured; None where a part was skipped."""

    events: int
    latency_s: float
    latency_rate: float
    query_rows: int
    # OMNISINK_BATCH_MAX_WAIT_MS of the latency run's daemon; None: the setting's default.
    latency_batch_wait_ms: int | None = None
    # [COPY ceiling, sink, naive, replay]
    results: list[Result] = field(default_factory=list)
    two_members: Result | None = None
    peak_rss_mb: float = 0.0
    latency: Latency | None = None
    queries: Timings | None = None
    crud: Timings | None = None

    def as_json(self, commit: str | None) -> dict[str, Any]:
        """bench-results.json: the figures this run measured (and only those)."""
        ceiling, sink, naive, replayed = self.results
        return {
            "events": self.events,
            "copy_events_per_s": round(ceiling.rate),
            "sink_events_per_s": round(sink.rate),
            "naive_events_per_s": round(naive.rate),
            "replay_events_per_s": round(replayed.rate),
            "two_members_events_per_s": round(self.two_members.rate) if self.two_members else None,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "latency_ms": (
                {k: round(v, 1) for k, v in self.latency.figures.items()} if self.latency else None
            ),
            "latency_s": self.latency_s,
            "latency_rate": self.latency_rate,
            "latency_batch_max_wait_ms": self.latency_batch_wait_ms,
            "queries_p95_ms": self.queries.p95() if self.queries else None,
            "query_rows": self.query_rows,
            "crud_p95_ms": overall_p95(self.crud) if self.crud else None,
            "crud_p95_ms_by_statement": self.crud.p95() if self.crud else None,
            "machine": machine(),
            "commit": commit,
        }


def machine() -> str:
    return (
        f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()})"
    )


def _meets(ok: bool) -> str:
    return "yes" if ok else "NO"


def rows(f: Figures) -> list[tuple[str, str, str, str, str]]:
    """(what, figure, target, meets, note) for every figure."""
    out = []
    ceiling = f.results[0].rate
    for r in f.results:
        share = f" ({r.rate / ceiling:.0%} of COPY)" if ceiling and r is not f.results[0] else ""
        note = f"{r.events:,} events in {r.seconds:.2f} s; {r.note}"
        out.append((r.name, f"{r.rate:,.0f} events/s{share}", "-", "-", note))
    if f.two_members:
        single = f.results[1].rate
        times = f" ({f.two_members.rate / single:.2f}x one)" if single else ""
        note = f"{f.two_members.events:,} events in {f.two_members.seconds:.2f} s; "
        out.append(
            (
                f.two_members.name,
                f"{f.two_members.rate:,.0f} events/s{times}",
                "-",
                "-",
                note + f.two_members.note,
            )
        )
    out.append(
        (
            "sink peak RSS",
            f"{f.peak_rss_mb:.0f} MB",
            f"<= {RSS_TARGET_MB:.0f} MB",
            _meets(f.peak_rss_mb <= RSS_TARGET_MB),
            f"the sink's process, draining {f.events:,} events (ru_maxrss)",
        )
    )
    if f.latency:
        lat = f.latency
        out.append(
            (
                "latency produce -> committed",
                f"p50 {lat.p50_ms:.0f} / p95 {lat.p95_ms:.0f} / p99 {lat.p99_ms:.0f} ms",
                f"p99 <= {LATENCY_TARGET_MS:.0f} ms",
                _meets(lat.p99_ms <= LATENCY_TARGET_MS),
                f"{lat.sent:,} records at {lat.send_rate:,.0f}/s, {lat.committed:,} seen "
                f"committed; max {lat.max_ms:.0f} ms; p50 of the first tenth sent "
                f"{lat.first_tenth_p50_ms:.0f} ms, of the last {lat.last_tenth_p50_ms:.0f} ms",
            )
        )
    if f.queries:
        for name, p95 in f.queries.p95().items():
            out.append(
                (
                    QUERY_TITLES.get(name, name),
                    f"p95 {p95:.1f} ms",
                    f"< {QUERY_TARGET_MS:.0f} ms",
                    _meets(p95 < QUERY_TARGET_MS),
                    f"{len(f.queries.runs[name])} runs on {f.query_rows:,} event_logs rows",
                )
            )
    if f.crud:
        overall = overall_p95(f.crud)
        out.append(
            (
                "CRUD, all statements",
                f"p95 {overall:.1f} ms",
                f"< {CRUD_TARGET_MS:.0f} ms",
                _meets(overall < CRUD_TARGET_MS),
                "single-row statements, each its own transaction",
            )
        )
        for name, p95 in f.crud.p95().items():
            out.append(
                (
                    f"  {name}",
                    f"p95 {p95:.1f} ms",
                    f"< {CRUD_TARGET_MS:.0f} ms",
                    _meets(p95 < CRUD_TARGET_MS),
                    f"{len(f.crud.runs[name])} runs",
                )
            )
    return out


def report(console: Console, f: Figures) -> None:
    if f.queries:
        for name, plan in f.queries.explains.items():
            console.print(f"\n[bold]{QUERY_TITLES.get(name, name)} missed its target:[/bold]")
            console.print(plan, markup=False, highlight=False)
    table = Table(title=f"{f.events:,} events (notes: the Markdown rows below)")
    for column in ("what", "figure", "target", "meets"):
        table.add_column(column, justify="right" if column == "figure" else "left")
    lines = rows(f)
    for what, figure, target, meets, _ in lines:
        table.add_row(what, figure, target, meets)
    console.print(table)
    console.print(f"machine: {machine()}")
    for what, figure, target, meets, note in lines:
        console.print(f"| {what.strip()} | {figure} | {target} | {meets} | {note} |", markup=False)
