"""The migrated database against the two seed documents, fact by fact.

Seed 000 gives its tables as SQL: we run that SQL in an empty database and require every
column (type, nullability, default), constraint and index it creates to exist identically in
the migrated one. Seed 003 gives its tables as prose: we read the column, constraint, index,
trigger and function names it lists and check each exists in schema ``intelligence``, with
the type its description implies.
"""

from __future__ import annotations

import re
import uuid

import asyncpg
import pytest

from tests.support import (
    BRIDGE_TABLES,
    SEEDS_DIR,
    create_database,
    drop_database,
    with_database,
)

BRIDGE_SEED = (SEEDS_DIR / "bridge_database_guide.txt").read_text()
INTELLIGENCE_SEED = (SEEDS_DIR / "intelligence_schema.txt").read_text()


def _seed_ddl() -> list[str]:
    """The CREATE TABLE / CREATE INDEX statements of seed 000's ```sql blocks, in order."""
    statements: list[str] = []
    for block in re.findall(r"```sql\n(.*?)```", BRIDGE_SEED, flags=re.DOTALL):
        body = "\n".join(line for line in block.splitlines() if not line.strip().startswith("--"))
        for statement in body.split(";"):
            if re.match(r"\s*CREATE\s+(TABLE|INDEX)", statement, flags=re.IGNORECASE):
                statements.append(statement.strip())
    return statements


COLUMNS_SQL = """
    SELECT c.relname AS table_name, a.attname AS column_name,
           format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
           pg_get_expr(d.adbin, d.adrelid) AS default_expr
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE n.nspname = $1 AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
"""
CONSTRAINTS_SQL = """
    SELECT t.relname AS table_name, con.conname AS name, con.contype::text AS kind,
           pg_get_constraintdef(con.oid) AS definition
    FROM pg_constraint con JOIN pg_class t ON t.oid = con.conrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace
    WHERE n.nspname = $1
"""
INDEXES_SQL = """
    SELECT t.relname AS table_name, c.relname AS name, am.amname AS method,
           pg_get_indexdef(i.indexrelid) AS definition
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_class t ON t.oid = i.indrelid
    JOIN pg_am am ON am.oid = c.relam
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = $1
"""


async def _facts(url: str, schema: str) -> dict[str, dict[tuple[str, str], asyncpg.Record]]:
    conn = await asyncpg.connect(url)
    try:
        return {
            "columns": {
                (r["table_name"], r["column_name"]): r
                for r in await conn.fetch(COLUMNS_SQL, schema)
            },
            "constraints": {
                (r["table_name"], r["name"]): r for r in await conn.fetch(CONSTRAINTS_SQL, schema)
            },
            "indexes": {
                (r["table_name"], r["name"]): r for r in await conn.fetch(INDEXES_SQL, schema)
            },
        }
    finally:
        await conn.close()


def test_seed_000_gives_every_table_and_the_listed_indexes() -> None:
    ddl = _seed_ddl()
    tables = [re.search(r"CREATE TABLE (\w+)", s).group(1) for s in ddl if "TABLE" in s]  # type: ignore[union-attr]
    assert tables == list(BRIDGE_TABLES)
    # The seed's index table and its statements agree on the names we check below.
    assert sum(s.upper().startswith("CREATE INDEX") for s in ddl) == 25  # 4+3+2+3+3+5+5


async def test_bridge_tables_match_seed_000(any_pg_server: str, migrated_any_database: str) -> None:
    reference = f"omnisink_seed_{uuid.uuid4().hex[:10]}"
    await create_database(any_pg_server, reference)
    reference_url = with_database(any_pg_server, reference)
    try:
        conn = await asyncpg.connect(reference_url)
        try:
            for statement in _seed_ddl():
                await conn.execute(statement)
        finally:
            await conn.close()
        seed = await _facts(reference_url, "public")
        ours = await _facts(migrated_any_database, "public")
    finally:
        await drop_database(any_pg_server, reference)

    assert {table for table, _ in seed["columns"]} == set(BRIDGE_TABLES)
    for key, column in seed["columns"].items():
        assert key in ours["columns"], f"missing column {key}"
        mine = ours["columns"][key]
        for fact in ("type", "not_null", "default_expr"):
            assert mine[fact] == column[fact], f"{key}: {fact} {mine[fact]!r} != {column[fact]!r}"
    for key, constraint in seed["constraints"].items():
        assert key in ours["constraints"], f"missing constraint {key}"
        assert ours["constraints"][key]["definition"] == constraint["definition"], key
    foreign_keys = [k for k, c in seed["constraints"].items() if c["kind"] == "f"]
    assert len(foreign_keys) == 2  # workflow_steps and fsm_transitions -> workflow_executions
    for key, index in seed["indexes"].items():
        assert key in ours["indexes"], f"missing index {key}"
        assert ours["indexes"][key]["definition"] == index["definition"], key
        assert ours["indexes"][key]["method"] == index["method"], key
    gin = {name for (_, name), index in seed["indexes"].items() if index["method"] == "gin"}
    assert gin == {"idx_metadata_stamps_intelligence_gin", "idx_event_logs_payload_gin"}


# -- seed 003 ---------------------------------------------------------------------------------


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^### `{heading}`\n(.*?)(?=^### |^## )", text, flags=re.M | re.S)
    assert match, f"seed 003 has no section {heading}"
    return match.group(1)


def _listed(section: str, label: str) -> dict[str, str]:
    """`- `name`: description` lines under a **Label:** heading of a seed 003 section."""
    match = re.search(rf"\*\*{label}:\*\*\n(.*?)(?:\n\n|\Z)", section, flags=re.S)
    assert match, f"no {label} list"
    return dict(re.findall(r"^- `([^`]+)`: (.*)$", match.group(1), flags=re.M))


# (keyword in the seed's description or column name, type it implies), first match wins.
_TYPE_WORDS: tuple[tuple[str, str], ...] = (
    ("uuid", "uuid"),
    ("bigserial", "bigint"),
    ("jsonb", "jsonb"),
    ("timestamp", "timestamp with time zone"),
    ("duration", "double precision"),
    ("time spent", "double precision"),
    ("whether", "boolean"),
    ("number of", "integer"),
    ("epoch", "integer"),
    ("error if failed", "text"),
)


def _implied_type(name: str, description: str) -> str:
    """The column type a seed 003 description implies (its words, not our migration)."""
    words = f"{description.lower()} {name}".replace("_at ", "timestamp ")
    if name.endswith("_at"):
        words += " timestamp"
    return next((kind for word, kind in _TYPE_WORDS if word in words), "character varying")


def _seed_003_tables() -> dict[str, dict[str, str]]:
    tables = re.findall(r"^### `(\w+)`$", INTELLIGENCE_SEED.split("## Migrations")[0], re.M)
    assert tables == ["fsm_state", "fsm_state_history", "workflow_executions"]
    return {table: _listed(_section(INTELLIGENCE_SEED, table), "Columns") for table in tables}


async def test_intelligence_schema_matches_seed_003(migrated_any_database: str) -> None:
    ours = await _facts(migrated_any_database, "intelligence")
    for table, columns in _seed_003_tables().items():
        assert columns, table
        for name, description in columns.items():
            key = (table, name)
            assert key in ours["columns"], f"missing intelligence column {key}"
            expected = _implied_type(name, description)
            assert ours["columns"][key]["type"].startswith(expected), (
                f"{key}: {ours['columns'][key]['type']} is not {expected} ({description})"
            )
        primary = [
            c for (t, _), c in ours["constraints"].items() if t == table and c["kind"] == "p"
        ]
        assert len(primary) == 1, f"{table} needs one primary key"

    # "Unique constraint on (fsm_type, entity_id)"
    fsm = _section(INTELLIGENCE_SEED, "fsm_state")
    assert "Unique constraint on `(fsm_type, entity_id)`" in fsm
    uniques = [
        c["definition"]
        for (t, _), c in ours["constraints"].items()
        if t == "fsm_state" and c["kind"] == "u"
    ]
    assert "UNIQUE (fsm_type, entity_id)" in uniques

    # Every index the seed names, with GIN where it says JSONB.
    indexes = _listed(fsm, "Indexes")
    assert len(indexes) == 5
    for name, purpose in indexes.items():
        assert ("fsm_state", name) in ours["indexes"], f"missing index {name}"
        expected = "gin" if "jsonb" in purpose.lower() else "btree"
        assert ours["indexes"][("fsm_state", name)]["method"] == expected, name

    # workflow_executions here is the intelligence one: text ids, its own columns.
    assert ours["columns"][("workflow_executions", "workflow_id")]["type"].startswith(
        "character varying"
    )
    assert ours["columns"][("workflow_executions", "status")]["default_expr"].startswith(
        "'RUNNING'"
    )


async def test_intelligence_triggers_and_functions(migrated_any_database: str) -> None:
    conn = await asyncpg.connect(migrated_any_database)
    try:
        triggers = {
            (r["tgname"], r["relname"])
            for r in await conn.fetch(
                """
                SELECT t.tgname, c.relname FROM pg_trigger t
                JOIN pg_class c ON c.oid = t.tgrelid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'intelligence' AND NOT t.tgisinternal
                """
            )
        }
        functions = {
            r["proname"]: r["args"]
            for r in await conn.fetch(
                """
                SELECT p.proname, pg_get_function_arguments(p.oid) AS args FROM pg_proc p
                JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'intelligence'
                """
            )
        }
    finally:
        await conn.close()

    assert "Trigger `trigger_record_fsm_history`" in INTELLIGENCE_SEED
    assert ("trigger_record_fsm_history", "fsm_state") in triggers
    # The updated_at and duration triggers of the seed's origin (design/schema.md).
    assert ("trigger_fsm_state_updated_at", "fsm_state") in triggers
    assert ("trigger_workflow_exec_updated_at", "workflow_executions") in triggers
    assert ("trigger_calculate_duration", "workflow_executions") in triggers

    named = re.findall(r"^### `(\w+)\((\w+)\)`$", INTELLIGENCE_SEED, flags=re.M)
    assert [name for name, _ in named] == [
        "cleanup_old_fsm_history",
        "cleanup_completed_workflows",
        "find_stuck_workflows",
    ]
    for name, argument in named:
        assert name in functions, f"missing function {name}"
        assert functions[name].startswith(f"{argument} integer"), functions[name]


@pytest.mark.parametrize("table", BRIDGE_TABLES)
def test_every_bridge_table_is_described_in_seed_000(table: str) -> None:
    assert f"CREATE TABLE {table} (" in BRIDGE_SEED
