"""The history goes up, all the way down, and up again, on every server we support."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from consumer import migrate
from tests.support import schema_snapshot

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _cli(args: list[str], url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMNISINK_DATABASE_URL": url}
    return subprocess.run(
        args, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


async def _snapshot(url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(url)
    try:
        return await schema_snapshot(conn)
    finally:
        await conn.close()


async def _revision(url: str) -> str | None:
    conn = await asyncpg.connect(url)
    try:
        exists = await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL")
        if not exists:
            return None
        return await conn.fetchval("SELECT version_num FROM public.alembic_version")
    finally:
        await conn.close()


async def test_upgrade_downgrade_upgrade(scratch_database: str) -> None:
    url = scratch_database
    empty = await _snapshot(url)
    assert empty["tables"] == []

    # Plain Alembic, with nothing but OMNISINK_DATABASE_URL in the environment.
    done = _cli([str(BIN / "alembic"), "upgrade", "head"], url)
    assert done.returncode == 0, done.stderr
    assert await _revision(url) == migrate.head_revision()
    first = await _snapshot(url)
    assert "public.event_logs" in first["tables"]
    assert "intelligence.fsm_state" in first["tables"]
    assert "omnisink.consumer_offsets" in first["tables"]

    await asyncio.to_thread(migrate.downgrade, url, "base")
    down = await _snapshot(url)
    assert down == empty, "downgrade to base must remove everything the history created"
    assert await _revision(url) is None

    # And `omnisink migrate`, the product's own entry point.
    done = _cli([str(BIN / "omnisink"), "migrate"], url)
    assert done.returncode == 0, done.stderr
    assert "***" not in url or "***" in done.stdout  # the URL is shown redacted, if at all
    assert await _revision(url) == migrate.head_revision()
    assert await _snapshot(url) == first


async def test_every_step_downgrades_to_its_predecessor(scratch_database: str) -> None:
    url = scratch_database
    config = migrate.alembic_config(url)
    from alembic.script import ScriptDirectory

    revisions = [rev.revision for rev in ScriptDirectory.from_config(config).walk_revisions()]
    revisions.reverse()  # base first
    assert revisions[0] == "001"
    assert len(revisions) == len(set(revisions)), "one linear history"

    before = await _snapshot(url)
    for revision in revisions:
        await asyncio.to_thread(migrate.upgrade, url, revision)
        after = await _snapshot(url)
        assert after != before, f"step {revision} changed nothing"
        await asyncio.to_thread(migrate.downgrade, url, "-1")
        assert await _snapshot(url) == before, f"step {revision} does not downgrade cleanly"
        await asyncio.to_thread(migrate.upgrade, url, revision)
        assert await _snapshot(url) == after, f"step {revision} does not re-apply identically"
        before = after


def test_migrate_reports_an_unreachable_database_clearly() -> None:
    url = "postgresql://sink:topsecret@127.0.0.1:1/nowhere"
    done = _cli([str(BIN / "omnisink"), "migrate"], url)
    assert done.returncode == 2
    assert "cannot connect to PostgreSQL" in done.stderr
    assert "Traceback" not in done.stderr
    assert "topsecret" not in done.stderr + done.stdout
