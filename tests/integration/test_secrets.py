"""No secret ever reaches the output of any ``omnisink`` command.

Each secret setting (``OMNISINK_DATABASE_URL``, ``OMNISINK_KAFKA_SASL_PASSWORD``), set
directly or through its ``_FILE``, holding a recognisable password, invalid or valid, with the
database unreachable or real, while every command that reads the settings runs as a
subprocess with DEBUG logs: the password is in no byte of stdout or stderr, no error comes
with a traceback, and each command exits as the README says.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from dev.services import Service, free_port

BIN = Path(sys.executable).parent
MARK = "Zq7Vw3Lk9x"
# The URL's password holds a percent-encoded '@': the written and the decoded forms both
# contain MARK, and neither may show.
DB_PASSWORD = f"{MARK}%40{MARK}"
SASL_PASSWORD = f"{MARK}-sasl"

COMMANDS: dict[str, list[str]] = {
    "config": ["config"],
    "config --env": ["config", "--env"],
    "check": ["check", "--timeout-s", "2"],
    "migrate": ["migrate"],
    "dlq list": ["dlq", "list"],
    "dlq show": ["dlq", "show", "{dead_letter}"],
    "dlq redrive --dry-run": ["dlq", "redrive", "--all", "--dry-run"],
    "dlq redrive": ["dlq", "redrive", "--all"],
    "dlq discard --dry-run": ["dlq", "discard", "--all", "--dry-run"],
    "run": ["run", "--until-caught-up", "--timeout-s", "1"],
    "replay list": ["replay", "list"],
    "replay --dry-run": ["replay", "--all-topics", "--from-beginning", "--dry-run"],
    "offsets show": ["offsets", "show"],
    "query failed": ["query", "failed"],
    "maintenance stuck": ["maintenance", "stuck"],
}
# What each command exits with, by what the configuration amounts to.
EXITS: dict[str, dict[str, int]] = {
    "invalid": dict.fromkeys(COMMANDS, 2),
    # `check` says which checks failed (exit 1); `config` needs no server.
    "unreachable": {**dict.fromkeys(COMMANDS, 2), "config": 0, "config --env": 0, "check": 1},
    # A real database, the broker unreachable: only what publishes or consumes fails.
    "reachable": {
        **dict.fromkeys(COMMANDS, 0),
        "check": 1,
        "dlq redrive": 2,
        "run": 2,
        "replay --dry-run": 2,
        "offsets show": 2,
    },
}


@dataclass
class Setup:
    """Where the commands' secrets point."""

    reachable_url: str  # the test's database, as a role whose password is DB_PASSWORD
    unreachable_url: str
    dead_letter: int
    tmp: Path

    def file(self, text: str) -> str:
        path = self.tmp / f"secret-{uuid.uuid4().hex[:8]}"
        path.write_text(text + "\n")
        return str(path)


@pytest.fixture
async def setup(pg_server: Service, db_url: str, tmp_path: Path) -> AsyncIterator[Setup]:
    role = f"sink_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(db_url)
    try:
        await admin.execute(
            f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{MARK}@{MARK}'"  # role: ours
        )
        dead_letter = int(
            await admin.fetchval(
                "INSERT INTO omnisink.dead_letters (consumer_group, topic, kafka_partition, "
                "kafka_offset, record_key, record_value, error_kind, error_class, "
                "error_message, dlq_topic) VALUES ('g', 'test.t.v1', 0, 0, 'k', 'v', 'decode', "
                "'x.DecodeError', 'bad', 'test.t.v1.dlq') RETURNING id"
            )
        )
    finally:
        await admin.close()
    parts = urlsplit(db_url)
    host = parts.netloc.rpartition("@")[2]
    reachable = urlunsplit(parts._replace(netloc=f"{role}:{DB_PASSWORD}@{host}"))
    try:
        yield Setup(
            reachable_url=reachable,
            unreachable_url=f"postgresql://sink:{DB_PASSWORD}@127.0.0.1:{free_port()}/omnisink",
            dead_letter=dead_letter,
            tmp=tmp_path,
        )
    finally:
        admin = await asyncpg.connect(pg_server.url)
        try:
            await admin.execute(f"DROP ROLE IF EXISTS {role}")
        finally:
            await admin.close()


def _sasl(password: str | None = None, *, file: str | None = None) -> dict[str, str]:
    env = {
        "OMNISINK_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "OMNISINK_KAFKA_SASL_MECHANISM": "PLAIN",
        "OMNISINK_KAFKA_SASL_USERNAME": "sink",
    }
    if password is not None:
        env["OMNISINK_KAFKA_SASL_PASSWORD"] = password
    if file is not None:
        env["OMNISINK_KAFKA_SASL_PASSWORD_FILE"] = file
    return env


def _cases(s: Setup) -> dict[str, tuple[str, dict[str, str]]]:
    """name: (what it amounts to, the environment)."""
    bad_scheme = f"mysql://sink:{DB_PASSWORD}@127.0.0.1/omnisink"
    bad_port = f"postgresql://sink:{DB_PASSWORD}@127.0.0.1:notaport/omnisink"
    unreachable, reachable = s.unreachable_url, s.reachable_url
    no_user = {k: v for k, v in _sasl().items() if "USERNAME" not in k}
    return {
        "url-invalid-scheme": ("invalid", {"OMNISINK_DATABASE_URL": bad_scheme}),
        "url-invalid-port": ("invalid", {"OMNISINK_DATABASE_URL": bad_port}),
        "url-file-invalid": ("invalid", {"OMNISINK_DATABASE_URL_FILE": s.file(bad_scheme)}),
        "url-and-url-file": (
            "invalid",
            {"OMNISINK_DATABASE_URL": reachable, "OMNISINK_DATABASE_URL_FILE": s.file(reachable)},
        ),
        "url-unreachable": ("unreachable", {"OMNISINK_DATABASE_URL": unreachable}),
        "url-file-unreachable": (
            "unreachable",
            {"OMNISINK_DATABASE_URL_FILE": s.file(unreachable)},
        ),
        "url-password-parameter-unreachable": (
            "unreachable",
            {
                "OMNISINK_DATABASE_URL": unreachable.replace(f":{DB_PASSWORD}@", "@")
                + f"?password={DB_PASSWORD}"
            },
        ),
        "url-reachable": ("reachable", {"OMNISINK_DATABASE_URL": reachable}),
        "url-file-reachable": ("reachable", {"OMNISINK_DATABASE_URL_FILE": s.file(reachable)}),
        "other-setting-invalid": (
            "invalid",
            {
                "OMNISINK_DATABASE_URL": reachable,
                "OMNISINK_BATCH_MAX_RECORDS": "many",
                **_sasl(SASL_PASSWORD),
            },
        ),
        "sasl-invalid": (
            "invalid",
            {"OMNISINK_DATABASE_URL": reachable, **no_user, "OMNISINK_KAFKA_SASL_PASSWORD": MARK},
        ),
        "sasl-file-invalid": (
            "invalid",
            {
                "OMNISINK_DATABASE_URL": reachable,
                **no_user,
                "OMNISINK_KAFKA_SASL_PASSWORD_FILE": s.file(SASL_PASSWORD),
            },
        ),
        "sasl-valid": ("reachable", {"OMNISINK_DATABASE_URL": reachable, **_sasl(SASL_PASSWORD)}),
        "sasl-file-valid": (
            "reachable",
            {"OMNISINK_DATABASE_URL": reachable, **_sasl(file=s.file(SASL_PASSWORD))},
        ),
        "sasl-unreachable-database": (
            "unreachable",
            {"OMNISINK_DATABASE_URL": unreachable, **_sasl(SASL_PASSWORD)},
        ),
    }


CASES = [
    "url-invalid-scheme",
    "url-invalid-port",
    "url-file-invalid",
    "url-and-url-file",
    "url-unreachable",
    "url-file-unreachable",
    "url-password-parameter-unreachable",
    "url-reachable",
    "url-file-reachable",
    "other-setting-invalid",
    "sasl-invalid",
    "sasl-file-invalid",
    "sasl-valid",
    "sasl-file-valid",
    "sasl-unreachable-database",
]


async def _omnisink(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "omnisink"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


@pytest.mark.parametrize("case", CASES)
async def test_no_command_ever_prints_a_secret(setup: Setup, case: str) -> None:
    cases = _cases(setup)
    assert sorted(cases) == sorted(CASES)
    kind, secrets = cases[case]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNISINK_")}
    env.update(
        {
            # Nothing listens there: what publishes or consumes fails at once.
            "OMNISINK_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "OMNISINK_STARTUP_TIMEOUT_S": "1",
            "OMNISINK_HTTP_PORT": "0",
            "OMNISINK_LOG_LEVEL": "DEBUG",
            **secrets,
        }
    )
    runs = {
        name: [arg.format(dead_letter=setup.dead_letter) for arg in args]
        for name, args in COMMANDS.items()
    }
    gate = asyncio.Semaphore(4)

    async def one(args: list[str]) -> tuple[int, str, str]:
        async with gate:
            return await _omnisink(args, env)

    results = dict(zip(runs, await asyncio.gather(*map(one, runs.values())), strict=True))
    for name, (code, out, err) in results.items():
        assert MARK not in out + err, f"`omnisink {name}` printed the password:\n{out}\n{err}"
        assert "Traceback" not in err, f"`omnisink {name}`:\n{err}"
        assert code == EXITS[kind][name], f"`omnisink {name}` exited {code}:\n{out}\n{err}"
    if kind == "reachable":
        # It did reach the database: the dead letter is listed, redacted URL and all.
        assert "test.t.v1" in results["dlq list"][1]
        assert "***" in results["config"][1]
