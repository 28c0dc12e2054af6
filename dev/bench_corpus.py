"""A large synthetic corpus for the query benchmark, written with ``COPY`` into a fresh
migrated database.

Shaped like the sink's own tables after a month of the sample stream's traffic
(dev/sample.py): per bridge workflow, ten events in ``event_logs`` under its correlation (so
``events`` rows make ``events / 10`` workflows), three steps, two or three transitions and a
stamp; a workflow started some time in the last 30 days, in one of the sample's five
namespaces, ~10% FAILED, a few still running; 60% of the workflows belong to a session (five
workflows each). Beside them, half as many intelligence FSM entities (each with its path's
history, most finished, 3% in a transitional state, a third of those for more than an hour)
and a quarter as many intelligence workflows (6% RUNNING, a tenth of those stuck: not updated
for more than an hour, most for days).

Loading: the tables' secondary indexes (those no constraint owns) are dropped, the rows are
copied in (CSV, generated in chunks), the indexes are created again from their own
definitions, and the tables vacuumed and analysed: the state autovacuum would leave them in.
Triggers are off while copying (``session_replication_role = replica``): the rows already say
what the seed's triggers would have written (history, durations, updated_at).
"""

from __future__ import annotations

import csv
import io
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

NAMESPACES = tuple(f"omninode.tenant-{n}" for n in range(5))
CONTENT_TYPES = ("text/plain", "application/pdf", "image/png", "application/json", "text/x-python")
FSM_PATHS = {
    "INGESTION": ["RECEIVED", "PROCESSING", "INDEXED"],
    "PATTERN_LEARNING": ["FOUNDATION", "MATCHING", "VALIDATION", "TRACEABILITY", "COMPLETED"],
    "QUALITY_ASSESSMENT": ["RAW", "ASSESSING", "SCORED", "STORED"],
}
STEPS = (("hash", "compute"), ("stamp", "effect"), ("index", "effect"))
CHUNK_ROWS = 20_000
Row = Sequence[Any]


@dataclass
class Corpus:
    """What was loaded, and values to ask the queries about."""

    rows: dict[str, int] = field(default_factory=dict)
    correlation_ids: list[uuid.UUID] = field(default_factory=list)
    session_ids: list[uuid.UUID] = field(default_factory=list)
    namespaces: tuple[str, ...] = NAMESPACES
    fsm_types: tuple[str, ...] = tuple(FSM_PATHS)


class _Gen:
    def __init__(self, seed: int) -> None:
        # Sample data, not secrets: a seeded PRNG makes the corpus reproducible.
        self.rng = random.Random(seed)  # noqa: S311
        self.now = datetime.now(UTC)

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def ago(self, days: float) -> datetime:
        """A moment up to ``days`` ago."""
        return self.now - timedelta(seconds=self.rng.uniform(0, days * 86_400))


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _workflows(g: _Gen, count: int, corpus: Corpus) -> dict[str, list[Row]]:
    """The bridge tables: workflows with their steps, transitions, stamp and ten events."""
    out: dict[str, list[Row]] = {
        "workflow_executions": [],
        "workflow_steps": [],
        "fsm_transitions": [],
        "metadata_stamps": [],
        "event_logs": [],
    }
    session: uuid.UUID | None = None
    for n in range(count):
        rng = g.rng
        wid, row_id, corr = g.uuid(), g.uuid(), g.uuid()
        corpus.correlation_ids.append(corr)
        if n % 5 == 0:  # a new session every five workflows, 60% of them with one
            session = g.uuid() if rng.random() < 0.6 else None
            if session is not None:
                corpus.session_ids.append(session)
        namespace = NAMESPACES[n % len(NAMESPACES)]
        started = g.ago(30)
        roll = rng.random()
        state = (
            "FAILED"
            if roll < 0.10
            else "PROCESSING"
            if roll < 0.13
            else "PENDING"
            if roll < 0.14
            else "COMPLETED"
        )
        done = state in {"COMPLETED", "FAILED"}
        completed = started + timedelta(milliseconds=rng.randint(40, 30_000)) if done else None
        file_hash = rng.getrandbits(256).to_bytes(32, "big").hex()
        stamp_id = f"stamp-{wid.hex[:16]}"
        error = (
            {"message": "hash service unavailable", "code": f"E{rng.randint(100, 120)}"}
            if state == "FAILED"
            else {}
        )
        out["workflow_executions"].append(
            (
                row_id,
                wid,
                corr,
                state,
                _json({"path": f"/data/{n}.bin", "namespace": namespace}),
                _json({"chunks": rng.randint(1, 40)} if state == "COMPLETED" else {}),
                _json(error),
                started,
                completed,
                _json({"source": "orchestrator-1"}),
                stamp_id,
                file_hash,
                namespace,
                session,
                len(STEPS) if done else rng.randint(0, 2),
            )
        )
        t = started
        for order, (name, kind) in enumerate(STEPS, start=1):
            t += timedelta(milliseconds=rng.randint(2, 900))
            took = rng.randint(1, 800)
            out["workflow_steps"].append(
                (
                    g.uuid(),
                    row_id,
                    name,
                    kind,
                    order,
                    _json({"workflow_id": str(wid)}),
                    _json({"ok": True}),
                    "COMPLETED" if done or order == 1 else "RUNNING",
                    t,
                    t + timedelta(milliseconds=took),
                    took,
                    name,
                )
            )
        moves = [("PENDING", "PROCESSING")] + ([("PROCESSING", state)] if done else [])
        for k, (src, dst) in enumerate(moves):
            out["fsm_transitions"].append(
                (
                    g.uuid(),
                    row_id,
                    src,
                    dst,
                    started + timedelta(milliseconds=5 + k * 900),
                    "orchestrator",
                    _json({}),
                )
            )
        out["metadata_stamps"].append(
            (
                g.uuid(),
                stamp_id,
                file_hash,
                namespace,
                _json({"stamp_id": stamp_id, "file_hash": file_hash, "version": 1}),
                _json(
                    {
                        "content_type": CONTENT_TYPES[rng.randrange(len(CONTENT_TYPES))],
                        "file_size_bytes": rng.randint(200, 5_000_000),
                    }
                ),
                _json({"analysis_type": "security", "confidence_score": rng.random()}),
                started + timedelta(milliseconds=50),
            )
        )
        types = [
            "WORKFLOW_STARTED",
            "STATE_TRANSITION",
            "HASH_GENERATED",
            "STEP_STARTED",
            "STEP_COMPLETED",
            "STEP_STARTED",
            "STEP_COMPLETED",
            "STAMP_CREATED",
            "STATE_TRANSITION",
            "WORKFLOW_FAILED" if state == "FAILED" else "WORKFLOW_COMPLETED",
        ]
        t = started
        for event_type in types:
            t += timedelta(milliseconds=rng.randint(1, 400))
            payload: dict[str, Any] = {
                "workflow_id": str(wid),
                "namespace": namespace,
                "file_hash": file_hash,
            }
            if event_type == "WORKFLOW_FAILED":
                payload["error"] = error
            out["event_logs"].append(
                (
                    g.uuid(),
                    event_type,
                    corr,
                    session,
                    _json(payload),
                    _json({"source_node_id": "orchestrator-1", "event_version": "1.0"}),
                    t,
                )
            )
    return out


def _intelligence(g: _Gen, entities: int, workflows: int) -> dict[str, list[Row]]:
    """The intelligence tables: FSM entities with their history, and workflows."""
    rng = g.rng
    states: list[Row] = []
    history: list[Row] = []
    types = list(FSM_PATHS)
    for n in range(entities):
        fsm_type = types[n % len(types)]
        path = FSM_PATHS[fsm_type]
        # 3% in the path's second state (a transitional one), the rest at its end; of those
        # in transit, two in three got there in the last hour, the others are stuck.
        reached = 1 if rng.random() < 0.03 else len(path) - 1
        t = g.ago(30)
        if reached == 1 and rng.random() < 2 / 3:
            t = g.now - timedelta(minutes=rng.uniform(2, 50))
        created = t
        corr = str(g.uuid())
        entity = f"{fsm_type.lower()}-{n}"
        previous = None
        for k in range(reached + 1):
            spent = rng.uniform(50, 60_000) if k else None
            if k:
                t += timedelta(milliseconds=spent or 0)
            history.append(
                (
                    fsm_type,
                    entity,
                    previous,
                    path[k],
                    "INITIALIZE" if not k else f"ADVANCE_TO_{path[k]}",
                    t,
                    spent,
                    corr,
                    _json({}),
                    True,
                    t.date(),
                )
            )
            previous = path[k]
        states.append(
            (
                g.uuid(),
                fsm_type,
                entity,
                path[reached],
                path[reached - 1] if reached else None,
                t,
                _json({"source": "reducer-1"}),
                created,
                t,
            )
        )
    runs: list[Row] = []
    for n in range(workflows):
        roll = rng.random()
        status = "FAILED" if roll < 0.04 else "RUNNING" if roll < 0.10 else "COMPLETED"
        started = g.ago(30)
        if status == "RUNNING" and rng.random() < 0.9:  # most of those running are moving
            started = g.now - timedelta(minutes=rng.uniform(2, 50))
        took = rng.uniform(500, 600_000)
        ended = started + timedelta(milliseconds=took) if status != "RUNNING" else None
        updated = ended or started + timedelta(milliseconds=rng.uniform(0, 60_000))
        runs.append(
            (
                f"wf-{g.uuid().hex[:20]}",
                "DOCUMENT_INGESTION" if n % 3 else "PATTERN_LEARNING",
                f"doc-{n}",
                status,
                "index" if status == "RUNNING" else None,
                _json(["parse", "embed"] if status != "RUNNING" else ["parse"]),
                started,
                ended,
                took if ended else None,
                str(g.uuid()),
                _json({"path": f"/docs/{n}.md"}),
                _json({"chunks": 3} if status == "COMPLETED" else {}),
                "embedding timed out" if status == "FAILED" else None,
                started,
                updated,
            )
        )
    return {
        "intelligence.fsm_state": states,
        "intelligence.fsm_state_history": history,
        "intelligence.workflow_executions": runs,
    }


COLUMNS = {
    "workflow_executions": (
        "id, workflow_id, correlation_id, state, input_data, output_data, error_info, "
        "started_at, completed_at, metadata, stamp_id, file_hash, namespace, session_id, "
        "workflow_steps_executed"
    ),
    "workflow_steps": (
        "id, workflow_id, step_name, step_type, step_order, input_data, output_data, status, "
        "started_at, completed_at, execution_time_ms, step_key"
    ),
    "fsm_transitions": (
        "id, workflow_id, from_state, to_state, transition_at, triggered_by, metadata"
    ),
    "metadata_stamps": (
        "id, stamp_id, file_hash, namespace, stamp_data, file_metadata, intelligence_data, "
        "created_at"
    ),
    "event_logs": "id, event_type, correlation_id, session_id, payload, metadata, created_at",
    "intelligence.fsm_state": (
        "id, fsm_type, entity_id, current_state, previous_state, transition_timestamp, "
        "metadata, created_at, updated_at"
    ),
    "intelligence.fsm_state_history": (
        "fsm_type, entity_id, from_state, to_state, action, transitioned_at, duration_ms, "
        "correlation_id, metadata, success, partition_key"
    ),
    "intelligence.workflow_executions": (
        "workflow_id, operation_type, entity_id, status, current_step, completed_steps, "
        "started_at, completed_at, duration_ms, correlation_id, input_payload, "
        "output_results, error_message, created_at, updated_at"
    ),
}


async def _csv(rows: Sequence[Row]) -> AsyncIterator[bytes]:
    """The rows as CSV, a chunk at a time (None is an unquoted empty field: NULL)."""
    for start in range(0, len(rows), CHUNK_ROWS):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerows(_cells(rows[start : start + CHUNK_ROWS]))
        yield buffer.getvalue().encode()


def _cells(rows: Sequence[Row]) -> Iterator[list[object]]:
    for row in rows:
        yield [v.isoformat() if isinstance(v, datetime) else v for v in row]


def _name(table: str) -> tuple[str, str]:
    schema, _, name = table.rpartition(".")
    return schema or "public", name


async def load(
    db_url: str, events: int, *, seed: int = 11, progress: Callable[[str], None] | None = None
) -> Corpus:
    """``events`` event_logs rows (and ``events / 10`` workflows, etc.) into the migrated,
    empty database at ``db_url``."""
    corpus = Corpus()
    g = _Gen(seed)
    workflows = max(1, events // 10)
    tables = _workflows(g, workflows, corpus)
    tables.update(
        _intelligence(g, entities=max(3, workflows // 2), workflows=max(1, workflows // 4))
    )
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("SET maintenance_work_mem = '256MB'")
        for table, rows in tables.items():
            schema, name = _name(table)
            indexes = await conn.fetch(
                """
                SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
                FROM pg_index AS i
                WHERE i.indrelid = $1::regclass
                  AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)
                """,
                f"{schema}.{name}",
            )
            for index in indexes:
                await conn.execute(f"DROP INDEX {index['name']}")  # names from the catalogue
            await conn.copy_to_table(
                name,
                source=_csv(rows),
                columns=[c.strip() for c in COLUMNS[table].split(",")],
                schema_name=schema,
                format="csv",
            )
            for index in indexes:
                await conn.execute(index["def"])
            corpus.rows[table] = len(rows)
            if progress:
                progress(f"{table}: {len(rows):,} rows")
        for table in tables:
            schema, name = _name(table)
            await conn.execute(f'VACUUM (ANALYZE) "{schema}"."{name}"')  # our own table names
    finally:
        await conn.close()
    return corpus
