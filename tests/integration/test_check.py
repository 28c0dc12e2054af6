"""``omnisink check`` against the real database and broker, as a subprocess: one line per check,
exit 0 when every check passes, 1 when one fails; an unreachable service fails its line within
the timeout, never with a traceback or a secret; nothing is created on the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumer import migrate
from consumer.check import Cluster, Line, Status, Topic, _reported, dead_letter_topics
from consumer.settings import redact_url
from dev.services import Service, free_port
from tests.conftest import TopicFactory
from tests.support import create_database, drop_database, with_database

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
MARK = "Zq7Vw3Lk9x"
HEAD = migrate.head_revision()


async def omnisink_check(env: dict[str, str], *args: str) -> tuple[int, list[str], str, float]:
    """``omnisink check ARGS`` with only ``env`` of OMNISINK_*: (exit status, stdout lines,
    stderr, seconds it took)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OMNISINK_")}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "omnisink"),
        "check",
        *args,
        env={"PYTHONIOENCODING": "utf-8", **base, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode().splitlines(), err.decode(), time.monotonic() - started


def line(lines: list[str], check: str) -> str:
    """The outcome line of ``check``: its first (its warnings, if any, follow it)."""
    found = [x for x in lines if re.match(rf"^\S+\s+{re.escape(check)}: ", x)]
    assert found, (check, lines)
    return found[0]


async def topic_names(servers: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def create_topics(servers: str, *topics: tuple[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, n, 1) for name, n in topics])
    finally:
        await admin.close()


def pattern_of(*topics: str) -> str:
    return "^(?:" + "|".join(re.escape(t) for t in topics) + ")$"


@pytest.fixture
async def password_url(db_url: str) -> AsyncIterator[str]:
    """The test's database, as a role whose password holds MARK."""
    role = f"check_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{MARK}'")  # ours
    finally:
        await conn.close()
    parts = urlsplit(db_url)
    host = parts.netloc.rpartition("@")[2]
    try:
        yield urlunsplit(parts._replace(netloc=f"{role}:{MARK}@{host}"))
    finally:
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(f"DROP ROLE IF EXISTS {role}")
        finally:
            await conn.close()


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


# -- everything passes -----------------------------------------------------------------------


async def test_everything_passes_one_line_each(
    kafka_server: Service, password_url: str, topic_factory: TopicFactory
) -> None:
    servers = kafka_server.url
    slug = f"check-{uuid.uuid4().hex[:6]}"
    a = await topic_factory(slug, partitions=3)
    b = await topic_factory(slug, partitions=1)
    await create_topics(servers, (f"{a}.dlq", 3), (f"{b}.dlq", 1))
    before = await topic_names(servers)
    code, lines, err, _ = await omnisink_check(
        {
            "OMNISINK_DATABASE_URL": password_url,
            "OMNISINK_KAFKA_BOOTSTRAP_SERVERS": servers,
            "OMNISINK_TOPIC_PATTERN": pattern_of(a, b),
            "OMNISINK_GROPU_ID": "typo",
        }
    )
    assert code == 0, (lines, err)
    assert err == ""
    assert MARK not in "\n".join(lines)
    first, second = sorted([a, b])
    assert lines == [
        "✓ configuration: the settings load (3 OMNISINK_* variables set, defaults for the rest)",
        "! configuration: OMNISINK_GROPU_ID is not a setting; ignored "
        "(did you mean OMNISINK_GROUP_ID?)",
        line(lines, "PostgreSQL"),
        f"✓ database schema: at the migrations' head, revision {HEAD}",
        line(lines, "Kafka"),
        f"✓ subscription: OMNISINK_TOPIC_PATTERN matches 2 topics: {first}, {second}",
        f"✓ dead-letter topics: all 2 exist: {first}.dlq, {second}.dlq",
        "omnisink check: all 6 checks passed (1 warning)",
    ]
    assert line(lines, "PostgreSQL").startswith(
        f"✓ PostgreSQL: reachable at {redact_url(password_url)} (PostgreSQL "
    )
    assert ":***@" in line(lines, "PostgreSQL")
    assert line(lines, "Kafka").startswith(f"✓ Kafka: reachable at {servers} (")
    assert await topic_names(servers) == before


async def test_a_missing_dead_letter_topic_is_announced_not_created(
    kafka_server: Service, db_url: str, topic_factory: TopicFactory
) -> None:
    servers = kafka_server.url
    has = await topic_factory("check-has", partitions=3)
    lacks = await topic_factory("check-lacks", partitions=2)
    await create_topics(servers, (f"{has}.dlq", 3))
    nowhere = f"test.omninode_bridge.onex.evt.check-nowhere-{uuid.uuid4().hex[:8]}.v1"
    before = await topic_names(servers)
    code, lines, err, _ = await omnisink_check(
        {
            "OMNISINK_DATABASE_URL": db_url,
            "OMNISINK_KAFKA_BOOTSTRAP_SERVERS": servers,
            "OMNISINK_TOPICS": f"{has},{lacks},{nowhere},{has}.dlq",
        }
    )
    assert code == 0, (lines, err)
    assert line(lines, "subscription") == (
        f"✓ subscription: OMNISINK_TOPICS: 2 of 3 topics exist: {has}, {lacks}"
    )
    assert (
        f"! subscription: OMNISINK_TOPICS names topics that do not exist (yet): {nowhere}; "
        "the sink consumes them once they are created"
    ) in lines
    assert (
        f"! subscription: OMNISINK_TOPICS names dead-letter topics, left out here: {has}.dlq; "
        "the sink would consume its own dead letters"
    ) in lines
    # Passed or a warning, by whether the broker says this principal may create topics (the
    # embedded broker does not say): never a failure, and the same plan either way.
    dead = line(lines, "dead-letter topics")
    assert re.match(r"^[✓!] ", dead), dead
    assert (
        f"dead-letter topics: 1 of 2 exist; {lacks}.dlq will be created with 2 partitions on "
        "first dead letter"
    ) in dead
    # The check created nothing: not the missing dead-letter topic, not the unknown topic.
    assert await topic_names(servers) == before
    assert f"{lacks}.dlq" not in before
    assert nowhere not in before


# -- what fails ------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["empty", "012"])
async def test_a_database_not_at_head_fails_its_line(
    kafka_server: Service, pg_server: Service, topic_factory: TopicFactory, state: str
) -> None:
    servers = kafka_server.url
    topic = await topic_factory("check-schema", partitions=1)
    await create_topics(servers, (f"{topic}.dlq", 1))
    name = f"omnisink_c_{uuid.uuid4().hex[:12]}"
    await create_database(pg_server.url, name)
    url = with_database(pg_server.url, name)
    try:
        if state != "empty":
            await asyncio.to_thread(migrate.upgrade, url, state)
        code, lines, err, _ = await omnisink_check(
            {
                "OMNISINK_DATABASE_URL": url,
                "OMNISINK_KAFKA_BOOTSTRAP_SERVERS": servers,
                "OMNISINK_TOPICS": topic,
            }
        )
    finally:
        await drop_database(pg_server.url, name)
    assert code == 1, (lines, err)
    assert "Traceback" not in err
    assert line(lines, "PostgreSQL").startswith("✓ PostgreSQL: reachable at ")
    if state == "empty":
        expected = (
            f"✗ database schema: not migrated (no revision recorded); the sink needs revision "
            f"{HEAD}: run `omnisink migrate`"
        )
    else:
        expected = (
            f"✗ database schema: at revision 012; the sink needs revision {HEAD}: run "
            "`omnisink migrate`"
        )
    assert line(lines, "database schema") == expected
    assert line(lines, "dead-letter topics") == f"✓ dead-letter topics: {topic}.dlq exists"
    assert lines[-1] == "omnisink check: 1 of 6 checks failed: database schema"


@pytest.mark.parametrize("how", ["refused", "silent"])
async def test_unreachable_database_and_broker_fail_fast_plainly(how: str) -> None:
    with silent_port() as silent_db, silent_port() as silent_kafka:
        db_port, kafka_port = (
            (free_port(), free_port()) if how == "refused" else (silent_db, silent_kafka)
        )
        env = {
            "OMNISINK_DATABASE_URL": f"postgresql://sink:{MARK}@127.0.0.1:{db_port}/omnisink",
            "OMNISINK_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
            "OMNISINK_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "OMNISINK_KAFKA_SASL_MECHANISM": "PLAIN",
            "OMNISINK_KAFKA_SASL_USERNAME": "sink",
            "OMNISINK_KAFKA_SASL_PASSWORD": f"{MARK}-sasl",
        }
        if how == "refused":
            # A terminal that cannot show ✓ and ✗ gets words.
            env["PYTHONIOENCODING"] = "ascii"
        code, lines, err, seconds = await omnisink_check(env, "--timeout-s", "2")
    assert seconds < 30, seconds
    assert code == 1, (lines, err)
    assert "Traceback" not in err
    assert MARK not in "\n".join(lines) + err
    fail, skip = ("FAIL", "skip") if how == "refused" else ("✗", "-")
    postgres, kafka = line(lines, "PostgreSQL"), line(lines, "Kafka")
    if how == "refused":
        assert postgres.startswith(
            f"FAIL PostgreSQL: cannot connect to PostgreSQL at "
            f"postgresql://sink:***@127.0.0.1:{db_port}/omnisink: "
        ), postgres
    else:
        assert postgres == (
            f"✗ PostgreSQL: no answer from PostgreSQL at postgresql://sink:***@127.0.0.1:"
            f"{db_port}/omnisink within 2 s: check OMNISINK_DATABASE_URL and that the server "
            "is running and reachable from here"
        )
        assert "no answer within 2 s" in kafka, kafka
    assert kafka.startswith(
        f"{fail} Kafka: cannot reach the Kafka brokers at 127.0.0.1:{kafka_port}: "
    ), kafka
    assert "OMNISINK_KAFKA_BOOTSTRAP_SERVERS" in kafka
    for check, because in (
        ("database schema", "PostgreSQL"),
        ("subscription", "Kafka"),
        ("dead-letter topics", "Kafka"),
    ):
        assert line(lines, check) == f"{skip} {check}: not checked: the {because} check failed"
    assert lines[-1] == "omnisink check: 2 of 6 checks failed: PostgreSQL, Kafka"


@pytest.mark.parametrize(
    "subscription",
    ["pattern-matches-nothing", "pattern-matches-only-dead-letters", "topics-missing", "dlq-only"],
)
async def test_a_subscription_matching_no_topic_fails(
    kafka_server: Service, db_url: str, topic_factory: TopicFactory, subscription: str
) -> None:
    servers = kafka_server.url
    topic = await topic_factory("check-sub", partitions=1)
    await create_topics(servers, (f"{topic}.dlq", 1))
    missing = f"test.omninode_bridge.onex.evt.check-none-{uuid.uuid4().hex[:8]}.v1"
    env, says = {
        "pattern-matches-nothing": (
            {"OMNISINK_TOPIC_PATTERN": pattern_of(missing)},
            "✗ subscription: OMNISINK_TOPIC_PATTERN matches none of the broker's ",
        ),
        # The pattern names the dead-letter topic itself: never subscribed.
        "pattern-matches-only-dead-letters": (
            {"OMNISINK_TOPIC_PATTERN": pattern_of(f"{topic}.dlq")},
            "✗ subscription: OMNISINK_TOPIC_PATTERN matches none of the broker's ",
        ),
        "topics-missing": (
            {"OMNISINK_TOPICS": missing},
            f"✗ subscription: none of the 1 topic of OMNISINK_TOPICS exists ({missing})",
        ),
        "dlq-only": (
            {"OMNISINK_TOPICS": f"{topic}.dlq"},
            f"✗ subscription: OMNISINK_TOPICS names only dead-letter topics ({topic}.dlq)",
        ),
    }[subscription]
    code, lines, err, _ = await omnisink_check(
        {"OMNISINK_DATABASE_URL": db_url, "OMNISINK_KAFKA_BOOTSTRAP_SERVERS": servers, **env}
    )
    assert code == 1, (lines, err)
    assert line(lines, "subscription").startswith(says), lines
    assert line(lines, "dead-letter topics") == (
        "- dead-letter topics: not checked: the subscription check failed"
    )
    assert lines[-1] == "omnisink check: 1 of 6 checks failed: subscription"
    assert missing not in await topic_names(servers)


# -- what the broker says about the principal (no ACLs on the test brokers: the values) -----

DESCRIBE, WRITE, CREATE = 1 << 8, 1 << 4, 1 << 5


@pytest.mark.parametrize(
    ("operations", "create"),
    [
        (None, None),
        (-(2**31), None),  # Kafka: not asked, or it does not tell
        (-1, None),  # the embedded broker's answer: no bitfield Kafka sends
        (0, None),  # Kafka: the principal may not describe the cluster
        (DESCRIBE, False),
        (DESCRIBE | CREATE, True),
    ],
)
def test_what_an_authorized_operations_field_says(operations: int | None, create: bool) -> None:
    assert _reported(operations, CREATE) is create


def _cluster(may_create: bool | None, dlq_writable: bool | None = None) -> Cluster:
    return Cluster(
        brokers=3,
        topics={
            "a.v1": Topic(6, internal=False, writable=None),
            "a.v1.dlq": Topic(6, internal=False, writable=dlq_writable),
            "b.v1": Topic(4, internal=False, writable=None),
        },
        may_create=may_create,
    )


def test_dead_letter_topics_by_what_the_principal_may_do() -> None:
    plan = "1 of 2 exist; b.v1.dlq will be created with 4 partitions on first dead letter"
    assert dead_letter_topics(_cluster(True), ["a.v1", "b.v1"]) == Line(
        Status.ok, "dead-letter topics", f"{plan} (this principal may create topics)"
    )
    refused = dead_letter_topics(_cluster(False), ["a.v1", "b.v1"])
    assert refused.status is Status.fail
    assert refused.text.startswith("1 of 2 exist; missing: b.v1.dlq (4 partitions), and this")
    assert "grant CREATE" in refused.text
    unknown = dead_letter_topics(_cluster(None), ["a.v1", "b.v1"])
    assert unknown.status is Status.warn
    assert unknown.text.startswith(plan + ", if this principal may create topics")
    no_write = dead_letter_topics(_cluster(True, dlq_writable=False), ["a.v1"])
    assert no_write.status is Status.fail
    assert no_write.text.startswith("this principal may not write to a.v1.dlq")
    assert dead_letter_topics(_cluster(None, dlq_writable=True), ["a.v1"]) == Line(
        Status.ok, "dead-letter topics", "a.v1.dlq exists"
    )
