"""The seeds' query patterns and single-row statements, timed on a large corpus.

**Query patterns**: what ``omnisink query trace|namespace|failed|session|fsm`` and
``omnisink maintenance stuck`` run, through the same functions (consumer/ops/queries.py, so
their exact statements) on a connection decoding as theirs does; each pattern timed whole (a
trace is four statements), with parameters drawn from the corpus and varied per run. For a
pattern whose p95 misses its target, each of its statements is shown with
``EXPLAIN (ANALYZE, BUFFERS)``.

**CRUD**: the bridge guide's single-row statements on its tables, by key (seed 000, "Table
Definitions": its Usage Examples), written out whole below, each in its own transaction as an
application would run it.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from consumer.ops import queries
from dev.bench_corpus import Corpus
from handlers.sql import Sql

QUERY_TARGET_MS = 50.0
CRUD_TARGET_MS = 10.0


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Pattern:
    name: str
    statements: tuple[Sql, ...]
    # One run, with parameters drawn from the corpus; returns the parameters of each statement
    # (for EXPLAIN).
    run: Callable[[asyncpg.Connection, random.Random], Awaitable[list[tuple[Any, ...]]]]


def patterns(corpus: Corpus) -> list[Pattern]:
    """The six query patterns, each as the command runs it."""

    async def trace(conn: asyncpg.Connection, rng: random.Random) -> list[tuple[Any, ...]]:
        correlation = rng.choice(corpus.correlation_ids)
        await queries.trace(conn, correlation)
        return [(correlation,)] * 4

    async def namespace(conn: asyncpg.Connection, rng: random.Random) -> list[tuple[Any, ...]]:
        name = rng.choice(corpus.namespaces)
        await queries.namespace(conn, name)
        return [(name,)] * 2

    async def failed(conn: asyncpg.Connection, rng: random.Random) -> list[tuple[Any, ...]]:
        args = (rng.choice((1, 6, 24, 72, 168)), rng.choice((20, 100)))
        await queries.failed(conn, *args)
        return [args]

    async def session(conn: asyncpg.Connection, rng: random.Random) -> list[tuple[Any, ...]]:
        args = (rng.choice(corpus.session_ids), rng.choice((24, 168, 720)))
        await queries.session_events(conn, *args)
        return [args]

    async def fsm(conn: asyncpg.Connection, rng: random.Random) -> list[tuple[Any, ...]]:
        args = (rng.choice((None, *corpus.fsm_types)), rng.choice((1, 7, 30)))
        await queries.fsm(conn, *args)
        return [args]

    async def stuck(conn: asyncpg.Connection, rng: random.Random) -> list[tuple[Any, ...]]:
        args = (rng.choice((1, 6, 24)), rng.choice((1, 6)))
        await queries.stuck(conn, *args)
        return [(args[0],), (args[1],)]

    q = queries
    return [
        Pattern(
            "trace",
            (q.TRACE_WORKFLOWS, q.TRACE_STEPS, q.TRACE_TRANSITIONS, q.TRACE_EVENTS),
            trace,
        ),
        Pattern("namespace", (q.NAMESPACE_STAMPS, q.NAMESPACE_WORKFLOWS), namespace),
        Pattern("failed", (q.FAILED,), failed),
        Pattern("session", (q.SESSION,), session),
        Pattern("fsm", (q.FSM_STATS,), fsm),
        Pattern("stuck", (q.STUCK_WORKFLOWS, q.STUCK_ENTITIES), stuck),
    ]


@dataclass
class Timings:
    """Milliseconds per run, by name; the EXPLAIN of what missed its target."""

    runs: dict[str, list[float]] = field(default_factory=dict)
    explains: dict[str, str] = field(default_factory=dict)

    def p95(self) -> dict[str, float]:
        return {name: round(percentile(ms, 0.95), 2) for name, ms in self.runs.items()}


async def time_patterns(db_url: str, corpus: Corpus, iterations: int, *, seed: int = 5) -> Timings:
    """Each pattern ``iterations`` times (after two unmeasured runs), interleaved."""
    rng = random.Random(seed)  # noqa: S311 - parameters, not secrets
    timings = Timings()
    conn = await asyncpg.connect(db_url)
    try:
        await queries.decoding(conn)
        todo = patterns(corpus)
        # The parameters of each pattern's slowest run: what its EXPLAIN shows.
        slowest: dict[str, tuple[float, list[tuple[Any, ...]]]] = {}
        for _ in range(2):
            for pattern in todo:
                await pattern.run(conn, rng)
        for _ in range(iterations):
            for pattern in todo:
                started = time.perf_counter()
                params = await pattern.run(conn, rng)
                elapsed = (time.perf_counter() - started) * 1000
                timings.runs.setdefault(pattern.name, []).append(elapsed)
                if elapsed > slowest.get(pattern.name, (-1.0, []))[0]:
                    slowest[pattern.name] = (elapsed, params)
        for pattern in todo:
            if percentile(timings.runs[pattern.name], 0.95) >= QUERY_TARGET_MS:
                ms, params = slowest[pattern.name]
                plans = await _explain(conn, pattern, params)
                timings.explains[pattern.name] = f"(its slowest run, {ms:.1f} ms)\n{plans}"
    finally:
        await conn.close()
    return timings


async def _explain(
    conn: asyncpg.Connection, pattern: Pattern, params: list[tuple[Any, ...]]
) -> str:
    parts = []
    for statement, args in zip(pattern.statements, params, strict=True):
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {statement.sql}", *args)
        plan = "\n".join(r[0] for r in rows)
        parts.append(f"-- {statement.name} {args!r}\n{plan}")
    return "\n\n".join(parts)


# -- CRUD: seed 000 "Table Definitions", Usage Examples, on its tables by key -----------------

CRUD: dict[str, str] = {
    "workflow_insert": """
        INSERT INTO workflow_executions (
            workflow_id, correlation_id, state, input_data, started_at
        ) VALUES ($1, $2, $3, $4, NOW())
        RETURNING id
    """,
    "workflow_update_state": """
        UPDATE workflow_executions
        SET state = $1, output_data = $2, completed_at = NOW()
        WHERE id = $3
    """,
    "workflow_by_correlation": """
        SELECT * FROM workflow_executions
        WHERE correlation_id = $1
        ORDER BY started_at DESC
    """,
    "step_insert": """
        INSERT INTO workflow_steps (
            workflow_id, step_name, step_type, step_order,
            input_data, status, started_at
        ) VALUES ($1, $2, $3, $4, $5, $6, NOW())
        RETURNING id
    """,
    "step_complete": """
        UPDATE workflow_steps
        SET status = $1, output_data = $2,
            completed_at = NOW(), execution_time_ms = $3
        WHERE id = $4
    """,
    "bridge_state_insert": """
        INSERT INTO bridge_states (
            node_type, correlation_id, state, state_data
        ) VALUES ($1, $2, $3, $4)
    """,
    "bridge_state_update": """
        UPDATE bridge_states
        SET state = $1, state_data = $2, updated_at = NOW()
        WHERE correlation_id = $3 AND node_type = $4
    """,
    "node_register": """
        INSERT INTO node_registrations (
            node_id, node_type, node_version, endpoint_url, health_status
        ) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (node_id) DO UPDATE
        SET last_heartbeat = NOW(), health_status = EXCLUDED.health_status
    """,
    "node_heartbeat": """
        UPDATE node_registrations
        SET last_heartbeat = NOW(), health_status = $1
        WHERE node_id = $2
    """,
    "stamp_insert": """
        INSERT INTO metadata_stamps (
            stamp_id, file_hash, namespace,
            stamp_data, file_metadata, intelligence_data,
            metadata_version
        ) VALUES ($1, $2, $3, $4, $5, $6, $7)
    """,
    "stamp_by_file_hash": """
        SELECT * FROM metadata_stamps
        WHERE file_hash = $1
    """,
}


async def time_crud(db_url: str, corpus: Corpus, iterations: int) -> Timings:
    """Each statement ``iterations`` times, one round of the lifecycle after another (insert
    a workflow, its step, a bridge state, a node, a stamp; read and update them by key)."""
    timings = Timings()
    conn = await asyncpg.connect(db_url)
    try:
        await queries.decoding(conn)

        async def timed(name: str, call: Awaitable[Any]) -> Any:
            started = time.perf_counter()
            result = await call
            timings.runs.setdefault(name, []).append((time.perf_counter() - started) * 1000)
            return result

        for n in range(iterations + 2):
            if n == 2:
                timings.runs.clear()  # two rounds to prepare the statements, unmeasured
            correlation, node = uuid.uuid4(), uuid.uuid4()
            file_hash = uuid.uuid4().hex * 2
            stamp_id = f"stamp-bench-{uuid.uuid4().hex[:16]}"
            wid = await timed(
                "workflow_insert",
                conn.fetchval(
                    CRUD["workflow_insert"], uuid.uuid4(), correlation, "PENDING", {"n": n}
                ),
            )
            step = await timed(
                "step_insert",
                conn.fetchval(
                    CRUD["step_insert"], wid, "validate_input", "validation", 1, {}, "PENDING"
                ),
            )
            await timed(
                "bridge_state_insert",
                conn.execute(
                    CRUD["bridge_state_insert"], "REDUCER", correlation, "AGGREGATING", {"n": n}
                ),
            )
            await timed(
                "node_register",
                conn.execute(
                    CRUD["node_register"],
                    node,
                    "ORCHESTRATOR",
                    "1.0.0",
                    "http://orchestrator:8080",
                    "HEALTHY",
                ),
            )
            await timed(
                "stamp_insert",
                conn.execute(
                    CRUD["stamp_insert"],
                    stamp_id,
                    file_hash,
                    corpus.namespaces[n % len(corpus.namespaces)],
                    {"stamp_id": stamp_id},
                    {"content_type": "text/plain", "file_size_bytes": 1024},
                    {},
                    "0.1",
                ),
            )
            await timed(
                "step_complete",
                conn.execute(CRUD["step_complete"], "COMPLETED", {"ok": True}, 12, step),
            )
            await timed(
                "workflow_update_state",
                conn.execute(CRUD["workflow_update_state"], "COMPLETED", {"ok": True}, wid),
            )
            await timed(
                "bridge_state_update",
                conn.execute(
                    CRUD["bridge_state_update"], "PERSISTING", {"n": n}, correlation, "REDUCER"
                ),
            )
            await timed("node_heartbeat", conn.execute(CRUD["node_heartbeat"], "HEALTHY", node))
            # Reads of rows the corpus holds (a workflow of the corpus) and of the new stamp.
            await timed(
                "workflow_by_correlation",
                conn.fetch(
                    CRUD["workflow_by_correlation"],
                    corpus.correlation_ids[(n * 7919) % len(corpus.correlation_ids)],
                ),
            )
            await timed("stamp_by_file_hash", conn.fetch(CRUD["stamp_by_file_hash"], file_hash))
    finally:
        await conn.close()
    return timings


def overall_p95(timings: Timings) -> float:
    """The p95 of every CRUD statement's runs together."""
    return round(percentile([ms for runs in timings.runs.values() for ms in runs], 0.95), 2)
