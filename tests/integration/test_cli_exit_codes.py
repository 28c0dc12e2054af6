"""``omnisink migrate`` and ``omnisink dlq`` against a database they cannot use: exit 2 with
one plain message naming what to fix, never a traceback (README, "Database" and "Dead
letters")."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from dev.services import Service, free_port
from tests.support import with_database

BIN = Path(sys.executable).parent

COMMANDS = [
    ["migrate"],
    ["dlq", "list"],
    ["dlq", "show", "1"],
    ["dlq", "redrive", "--all"],
    ["dlq", "redrive", "--all", "--dry-run"],
]


def _urls(pg_server: Service) -> dict[str, tuple[str, str]]:
    """problem: (URL, what the message says)."""
    refused = f"postgresql://sink:pw@127.0.0.1:{free_port()}/omnisink"
    return {
        "missing-database": (
            with_database(pg_server.url, f"omnisink_missing_{uuid.uuid4().hex[:8]}"),
            "does not exist",
        ),
        "connection-refused": (refused, "cannot connect to PostgreSQL"),
        "port-not-a-number": (
            "postgresql://sink:pw@127.0.0.1:port/omnisink",
            "the port of OMNISINK_DATABASE_URL is not a number",
        ),
        "port-out-of-range": (
            "postgresql://sink:pw@127.0.0.1:70000/omnisink",
            "the port of OMNISINK_DATABASE_URL is not a number",
        ),
        "ssl-parameter": (
            "postgresql://sink:pw@127.0.0.1/omnisink?ssl=true",
            "`ssl` is not a libpq parameter",
        ),
        "bad-sslmode": (
            "postgresql://sink:pw@127.0.0.1/omnisink?sslmode=always",
            "sslmode must be one of",
        ),
    }


def _run(args: list[str], url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNISINK_")}
    env["OMNISINK_DATABASE_URL"] = url
    return subprocess.run(
        [str(BIN / "omnisink"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "problem",
    [
        "missing-database",
        "connection-refused",
        "port-not-a-number",
        "port-out-of-range",
        "ssl-parameter",
        "bad-sslmode",
    ],
)
async def test_a_database_that_cannot_be_used_exits_2_plainly(
    pg_server: Service, problem: str
) -> None:
    url, says = _urls(pg_server)[problem]
    results = await asyncio.gather(*(asyncio.to_thread(_run, args, url) for args in COMMANDS))
    for args, done in zip(COMMANDS, results, strict=True):
        command = " ".join(args)
        assert done.returncode == 2, (command, done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, (command, done.stderr)
        assert says in done.stderr, (command, done.stderr)
        assert "OMNISINK_DATABASE_URL" in done.stderr, (command, done.stderr)
        assert done.stdout == "", (command, done.stdout)


async def test_migrate_never_says_a_database_is_where_it_is_not(db_url: str) -> None:
    """Alembic's upgrade to an older revision changes nothing: ``omnisink migrate`` says where
    the database really is and exits 1, rather than "is at" the revision asked for."""
    from consumer.migrate import head_revision

    head = head_revision()
    older = f"{int(head) - 1:03d}"
    down = await asyncio.to_thread(_run, ["migrate", older], db_url)
    assert down.returncode == 1, (down.stdout, down.stderr)
    assert f"is at {head}, not {older}: migrate only upgrades" in down.stderr, down.stderr
    assert "Traceback" not in down.stderr
    up = await asyncio.to_thread(_run, ["migrate"], db_url)
    assert up.returncode == 0, (up.stdout, up.stderr)
    assert up.stdout.strip().endswith(f"is at {head}"), up.stdout
