"""``omnisink check``: can the sink start here, and keep every record? One line per check.

Read-only, from the settings the sink would run with: the configuration loads (an
``OMNISINK_*`` variable that is no setting is a warning line); PostgreSQL answers at
``OMNISINK_DATABASE_URL`` (shown redacted) and is at the migrations' head; the Kafka brokers
answer; the subscription matches at least one topic (dead-letter topics never count); and each
matched topic's ``<topic>.dlq`` exists, or the principal may create it (the sink creates a
missing one on its first dead letter, with the source topic's partition count).

Nothing is created, written or produced. The broker is asked one Metadata request for every
topic at once (v8, which also says what the principal may do; older brokers get aiokafka's own
version), with topic auto-creation off: a request that named a missing topic would make some
brokers (the embedded test broker among them) create it, and a validate-only CreateTopics
creates it there too. Every step has a timeout (``--timeout-s``): a server that refuses, or
accepts and never answers, makes its line fail instead of the command hanging.

Exit status: 0 every check passed (warnings included), 1 one failed, 2 the configuration does
not load (nothing else is checked).

Also here: :func:`dotenv`, the settings as a ``.env`` file (``omnisink config --env``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg
import orjson
import typer
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import NoDecode, SettingsError

from consumer import __version__
from consumer.settings import (
    ENV_PREFIX,
    FILE_SUFFIX,
    ConfigurationError,
    Settings,
    describe,
    known_variables,
    unknown_variables,
)
from handlers.contract import DLQ_SUFFIX

DEFAULT_TIMEOUT_S = 5.0
# How many names a line gives before "and N more".
FEW = 3

# Kafka's AclOperation codes, as bits of the authorized-operations fields of Metadata v8+.
_WRITE = 1 << 4
_CREATE = 1 << 5


class Status(StrEnum):
    ok = "ok"
    warn = "warn"
    fail = "fail"
    skip = "skip"


_SYMBOLS = {Status.ok: "✓", Status.warn: "!", Status.fail: "✗", Status.skip: "-"}
_WORDS = {Status.ok: "ok", Status.warn: "warn", Status.fail: "FAIL", Status.skip: "skip"}

CONFIGURATION = "configuration"
POSTGRESQL = "PostgreSQL"
SCHEMA = "database schema"
KAFKA = "Kafka"
SUBSCRIPTION = "subscription"
DEAD_LETTERS = "dead-letter topics"


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the report: a check's outcome, or a warning of that check."""

    status: Status
    check: str
    text: str


def main(timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Run every check on the settings of this environment, print one line each and a
    summary; return the exit status."""
    settings, lines = configuration(os.environ)
    if settings is None:
        _print(lines)
        typer.echo("omnisink check: the configuration does not load; nothing else was checked")
        return 2
    lines += asyncio.run(services(settings, timeout_s))
    _print(lines)
    worst = _outcomes(lines)
    failed = [check for check, status in worst.items() if status is Status.fail]
    warned = sum(1 for line in lines if line.status is Status.warn)
    warnings = f" ({warned} warning{'s' if warned != 1 else ''})" if warned else ""
    if failed:
        typer.echo(
            f"omnisink check: {len(failed)} of {len(worst)} checks failed: "
            f"{', '.join(failed)}{warnings}"
        )
        return 1
    typer.echo(f"omnisink check: all {len(worst)} checks passed{warnings}")
    return 0


def _outcomes(lines: list[Line]) -> dict[str, Status]:
    """Each check's outcome: its worst line (a warning line does not fail it)."""
    rank = [Status.skip, Status.ok, Status.warn, Status.fail]
    worst: dict[str, Status] = {}
    for line in lines:
        held = worst.get(line.check)
        if held is None or rank.index(line.status) > rank.index(held):
            worst[line.check] = line.status
    return worst


def _print(lines: list[Line]) -> None:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "".join(_SYMBOLS.values()).encode(encoding)
        marks = _SYMBOLS
    except (UnicodeEncodeError, LookupError):
        marks = _WORDS
    width = max(len(mark) for mark in marks.values())
    for line in lines:
        typer.echo(f"{marks[line.status].ljust(width)} {line.check}: {line.text}")


# -- configuration ------------------------------------------------------------------------


def configuration(environ: Mapping[str, str]) -> tuple[Settings | None, list[Line]]:
    """The settings (None when they do not load) and the configuration's lines: loaded or
    not (what is wrong, never a value), then a warning per variable that is no setting."""
    warnings = [
        Line(
            Status.warn,
            CONFIGURATION,
            f"{name} is not a setting; ignored" + (f" (did you mean {close}?)" if close else ""),
        )
        for name, close in unknown_variables(environ)
    ]
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(line.strip() for line in describe(exc).splitlines())
        return None, [Line(Status.fail, CONFIGURATION, f"invalid: {problems}"), *warnings]
    except (ConfigurationError, SettingsError) as exc:
        # SettingsError: a value pydantic-settings could not parse; it names the field only.
        return None, [Line(Status.fail, CONFIGURATION, f"invalid: {exc}"), *warnings]
    from consumer import logs

    # Whatever is logged from here on (a library's exception text) is scrubbed of them.
    logs.hide(settings.secret_texts())
    known = known_variables()
    given = sum(1 for name in environ if name.upper() in known)
    loaded = Line(
        Status.ok,
        CONFIGURATION,
        f"the settings load ({given} OMNISINK_* variable{'s' if given != 1 else ''} set, "
        "defaults for the rest)",
    )
    return settings, [loaded, *warnings]


# -- the services ---------------------------------------------------------------------------


async def services(settings: Settings, timeout_s: float) -> list[Line]:
    """PostgreSQL's lines and Kafka's, checked at the same time."""
    db, kafka = await asyncio.gather(
        _guarded(database(settings, timeout_s), settings, (POSTGRESQL, SCHEMA)),
        _guarded(brokers(settings, timeout_s), settings, (KAFKA, SUBSCRIPTION, DEAD_LETTERS)),
    )
    return [*db, *kafka]


async def _guarded(
    work: Coroutine[Any, Any, list[Line]], settings: Settings, checks: tuple[str, ...]
) -> list[Line]:
    """``work``'s lines; an error nobody foresaw fails its first check (said, scrubbed of
    secrets, without a traceback) and skips the others."""
    try:
        lines = await work
    except Exception as exc:  # noqa: BLE001 - a check reports, it never crashes
        first, *rest = checks
        text = settings.scrub(f"unexpected error: {type(exc).__name__}: {exc}")
        return [Line(Status.fail, first, text), *(_skipped(check, first) for check in rest)]
    return lines


def _skipped(check: str, because: str) -> Line:
    return Line(Status.skip, check, f"not checked: the {because} check failed")


async def database(settings: Settings, timeout_s: float) -> list[Line]:
    """``PostgreSQL``: one session opens (the URL's TLS parameters included); ``database
    schema``: it is at the migrations' head."""
    from consumer.store.database import explain

    url = settings.database.redacted_url
    try:
        async with asyncio.timeout(timeout_s):
            conn = await asyncpg.connect(
                settings.database.dsn,
                timeout=timeout_s,
                command_timeout=timeout_s,
                statement_cache_size=0,
                server_settings={"application_name": "omnisink check"},
            )
    except TimeoutError:
        text = (
            f"no answer from PostgreSQL at {url} within {timeout_s:g} s: check "
            "OMNISINK_DATABASE_URL and that the server is running and reachable from here"
        )
        return [Line(Status.fail, POSTGRESQL, text), _skipped(SCHEMA, POSTGRESQL)]
    except Exception as exc:  # noqa: BLE001 - whatever stops a session is this line's failure
        return [Line(Status.fail, POSTGRESQL, explain(exc, settings)), _skipped(SCHEMA, POSTGRESQL)]
    try:
        version = conn.get_server_version()
        reached = Line(
            Status.ok,
            POSTGRESQL,
            f"reachable at {url} (PostgreSQL {version.major}.{version.minor})",
        )
        return [reached, await _schema(conn, settings, timeout_s)]
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=timeout_s)


async def _schema(conn: asyncpg.Connection, settings: Settings, timeout_s: float) -> Line:
    from alembic.script import ScriptDirectory

    from consumer.migrate import alembic_config, head_revision
    from consumer.store.database import REVISION

    head = head_revision()
    try:
        async with asyncio.timeout(timeout_s):
            current: str | None = await conn.fetchval(REVISION.sql)
    except asyncpg.UndefinedTableError:
        current = None
    except TimeoutError:
        return Line(Status.fail, SCHEMA, f"the schema revision was not read within {timeout_s:g} s")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        # Not allowed to read it, or the session was lost meanwhile.
        text = settings.scrub(f"cannot read the schema revision: {type(exc).__name__}: {exc}")
        return Line(Status.fail, SCHEMA, text)
    if current == head:
        return Line(Status.ok, SCHEMA, f"at the migrations' head, revision {head}")
    if current is None:
        return Line(
            Status.fail,
            SCHEMA,
            f"not migrated (no revision recorded); the sink needs revision {head}: run "
            "`omnisink migrate`",
        )
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(current)
    except Exception:  # noqa: BLE001 - any lookup failure: a revision this release lacks
        return Line(
            Status.fail,
            SCHEMA,
            f"at revision {current}, which this release's migrations do not know (migrated "
            f"by a newer omnisink?); this sink needs revision {head}",
        )
    return Line(
        Status.fail,
        SCHEMA,
        f"at revision {current}; the sink needs revision {head}: run `omnisink migrate`",
    )


# -- Kafka ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Topic:
    partitions: int
    internal: bool
    # Whether the principal may write to it; None when the broker does not say.
    writable: bool | None


@dataclass(frozen=True, slots=True)
class Cluster:
    brokers: int
    topics: dict[str, Topic]
    # Whether the principal may create topics; None when the broker does not say.
    may_create: bool | None


async def brokers(settings: Settings, timeout_s: float) -> list[Line]:
    """``Kafka``: the brokers answer; then the subscription and the dead-letter topics, from
    one metadata request."""
    from aiokafka.client import AIOKafkaClient

    from consumer.kafka import kafka_options

    servers = settings.kafka.bootstrap_servers
    options = {**kafka_options(settings), "request_timeout_ms": max(1, int(timeout_s * 1000))}
    with _kafka_log() as said:
        client = AIOKafkaClient(**options)
        try:
            async with asyncio.timeout(timeout_s):
                await client.bootstrap()
            async with asyncio.timeout(timeout_s):
                cluster = await _metadata(client)
        except Exception as exc:  # noqa: BLE001 - whatever stops the client is this line's
            if isinstance(exc, TimeoutError):
                why = f"no answer within {timeout_s:g} s"
            else:
                # aiokafka says why a broker could not be used only in its log, and its
                # exception just that none could: the last thing it logged is the reason.
                why = said[-1].rstrip() if said else f"{type(exc).__name__}: {exc}"
                if why.endswith(":"):  # a timeout's text is empty
                    why += f" no answer within {timeout_s:g} s"
            text = settings.scrub(
                f"cannot reach the Kafka brokers at {servers}: {why}. Check "
                "OMNISINK_KAFKA_BOOTSTRAP_SERVERS (and OMNISINK_KAFKA_SECURITY_PROTOCOL, "
                "OMNISINK_KAFKA_SASL_*)"
            )
            return [
                Line(Status.fail, KAFKA, text),
                _skipped(SUBSCRIPTION, KAFKA),
                _skipped(DEAD_LETTERS, KAFKA),
            ]
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), timeout_s)
    user_topics = sum(1 for t in cluster.topics.values() if not t.internal)
    reached = Line(
        Status.ok,
        KAFKA,
        f"reachable at {servers} ({_count(cluster.brokers, 'broker')}, "
        f"{_count(user_topics, 'topic')})",
    )
    lines, matched = subscription(settings, cluster)
    if not matched:
        return [reached, *lines, _skipped(DEAD_LETTERS, SUBSCRIPTION)]
    return [reached, *lines, dead_letter_topics(cluster, matched)]


def subscription(settings: Settings, cluster: Cluster) -> tuple[list[Line], list[str]]:
    """The subscription's lines and the existing topics it matches, as the daemon subscribes
    (consumer/kafka.py:subscribe): the explicit list, else the pattern, never a dead-letter
    topic nor an internal one."""
    from consumer.kafka import without_dlq

    existing = sorted(name for name, topic in cluster.topics.items() if not topic.internal)
    if settings.topics:
        listed = list(dict.fromkeys(settings.topics))
        dead = [t for t in listed if t.endswith(DLQ_SUFFIX)]
        named = [t for t in listed if not t.endswith(DLQ_SUFFIX)]
        present = set(existing)
        matched = [t for t in named if t in present]
        missing = [t for t in named if t not in present]
        lines: list[Line] = []
        if not named:
            text = (
                f"OMNISINK_TOPICS names only dead-letter topics ({_few(dead)}): the "
                "subscription needs a topic of events"
            )
            return [Line(Status.fail, SUBSCRIPTION, text)], []
        if matched:
            lines.append(
                Line(
                    Status.ok,
                    SUBSCRIPTION,
                    f"OMNISINK_TOPICS: {len(matched)} of {_count(len(named), 'topic')} exist: "
                    f"{_few(matched)}",
                )
            )
        else:
            lines.append(
                Line(
                    Status.fail,
                    SUBSCRIPTION,
                    f"none of the {_count(len(named), 'topic')} of OMNISINK_TOPICS exists"
                    + (f" ({_few(missing)})" if missing else "")
                    + ": check the names, and that the producers have created them",
                )
            )
        if matched and missing:
            lines.append(
                Line(
                    Status.warn,
                    SUBSCRIPTION,
                    f"OMNISINK_TOPICS names topics that do not exist (yet): {_few(missing)}; "
                    "the sink consumes them once they are created",
                )
            )
        if dead:
            lines.append(
                Line(
                    Status.warn,
                    SUBSCRIPTION,
                    f"OMNISINK_TOPICS names dead-letter topics, left out here: {_few(dead)}; "
                    "the sink would consume its own dead letters",
                )
            )
        return lines, matched
    pattern = re.compile(without_dlq(settings.topic_pattern))
    # match, not fullmatch: how aiokafka applies a subscription pattern to the topic names.
    matched = [t for t in existing if pattern.match(t) and not t.endswith(DLQ_SUFFIX)]
    which = (
        "OMNISINK_TOPIC_PATTERN"
        if "topic_pattern" in settings.model_fields_set
        else "the default OMNISINK_TOPIC_PATTERN"
    )
    if not matched:
        text = (
            f"{which} matches none of the broker's {_count(len(existing), 'topic')} "
            "(dead-letter topics never match): check the pattern, and that the producers "
            "have created their topics"
        )
        return [Line(Status.fail, SUBSCRIPTION, text)], []
    text = f"{which} matches {_count(len(matched), 'topic')}: {_few(matched)}"
    return [Line(Status.ok, SUBSCRIPTION, text)], matched


def dead_letter_topics(cluster: Cluster, matched: list[str]) -> Line:
    """Each matched topic's ``<topic>.dlq`` exists (and the principal may write to it, when
    the broker says), or the principal may create it (consumer/kafka.py:
    ensure_dead_letter_topics creates it on the first dead letter, with the partition count of
    its source topic)."""
    present = [t + DLQ_SUFFIX for t in matched if t + DLQ_SUFFIX in cluster.topics]
    refused = [d for d in present if cluster.topics[d].writable is False]
    missing = [
        (t + DLQ_SUFFIX, max(1, cluster.topics[t].partitions))
        for t in matched
        if t + DLQ_SUFFIX not in cluster.topics
    ]
    if refused:
        return Line(
            Status.fail,
            DEAD_LETTERS,
            f"this principal may not write to {_few(refused)} (the broker's ACLs grant no "
            "WRITE): grant it, or the sink stops at the first dead letter of those topics",
        )
    if not missing:
        return Line(
            Status.ok,
            DEAD_LETTERS,
            f"all {len(present)} exist: {_few(present)}"
            if len(present) > 1
            else f"{present[0]} exists",
        )
    exist = f"{len(present)} of {len(matched)} exist; " if present else ""
    plans = [f"{dlq} will be created with {_count(n, 'partition')}" for dlq, n in missing]
    plan = _few(plans) + " on first dead letter"
    if cluster.may_create is True:
        return Line(Status.ok, DEAD_LETTERS, f"{exist}{plan} (this principal may create topics)")
    if cluster.may_create is False:
        sizes = [f"{dlq} ({_count(n, 'partition')})" for dlq, n in missing]
        return Line(
            Status.fail,
            DEAD_LETTERS,
            f"{exist}missing: {_few(sizes)}, "
            "and this principal may not create topics (the broker's ACLs grant no CREATE on "
            "the cluster): create them with those partition counts, or grant CREATE, or the "
            "sink stops at the first dead letter of those topics",
        )
    return Line(
        Status.warn,
        DEAD_LETTERS,
        f"{exist}{plan}, if this principal may create topics: the broker does not say "
        "whether it may (create them beforehand to be sure)",
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:FEW])
    return shown if len(names) <= FEW else f"{shown} and {len(names) - FEW} more"


@contextlib.contextmanager
def _kafka_log() -> Iterator[list[str]]:
    """aiokafka's warnings and errors while the check runs, kept (the line says the last
    one) instead of printed."""
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    logger = logging.getLogger("aiokafka")
    handler = Keep(logging.WARNING)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield said
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


# Metadata v8 (Kafka 2.3+), which aiokafka lacks: every topic with its partitions, whether
# the principal may write to each, and what it may do on the cluster (CREATE: topics).
def _metadata_v8() -> tuple[Any, Any]:
    from aiokafka.protocol.api import Request, RequestStruct, Response
    from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Schema, String

    class MetadataResponseV8(Response):  # type: ignore[misc]
        API_KEY = 3
        API_VERSION = 8
        SCHEMA = Schema(
            ("throttle_time_ms", Int32),
            (
                "brokers",
                Array(
                    ("node_id", Int32),
                    ("host", String("utf-8")),
                    ("port", Int32),
                    ("rack", String("utf-8")),
                ),
            ),
            ("cluster_id", String("utf-8")),
            ("controller_id", Int32),
            (
                "topics",
                Array(
                    ("error_code", Int16),
                    ("name", String("utf-8")),
                    ("is_internal", Boolean),
                    (
                        "partitions",
                        Array(
                            ("error_code", Int16),
                            ("partition_index", Int32),
                            ("leader_id", Int32),
                            ("leader_epoch", Int32),
                            ("replica_nodes", Array(Int32)),
                            ("isr_nodes", Array(Int32)),
                            ("offline_replicas", Array(Int32)),
                        ),
                    ),
                    ("topic_authorized_operations", Int32),
                ),
            ),
            ("cluster_authorized_operations", Int32),
        )

    class MetadataRequestV8(RequestStruct):  # type: ignore[misc]
        API_KEY = 3
        API_VERSION = 8
        RESPONSE_TYPE = MetadataResponseV8
        SCHEMA = Schema(
            ("topics", Array(String("utf-8"))),
            ("allow_auto_topic_creation", Boolean),
            ("include_cluster_authorized_operations", Boolean),
            ("include_topic_authorized_operations", Boolean),
        )

    class EveryTopic(Request[MetadataRequestV8]):  # type: ignore[misc]
        API_KEY = 3

        def build(self, request_struct_class: Any) -> Any:
            # topics None: every topic, none of them named (so none is auto-created).
            return request_struct_class(None, False, True, True)

    from aiokafka.protocol.metadata import MetadataRequest

    return EveryTopic(), MetadataRequest(None, allow_auto_topic_creation=False)


def _reported(operations: int | None, bit: int) -> bool | None:
    """Whether an authorized-operations field grants ``bit``; None when the broker did not
    say: Kafka sends a non-negative bitfield, -2**31 when it was not asked or does not tell,
    and 0 when the principal may not even describe the resource."""
    if operations is None or operations <= 0:
        return None
    return bool(operations & bit)


async def _metadata(client: Any) -> Cluster:
    from aiokafka.errors import IncompatibleBrokerVersion

    everything, fallback = _metadata_v8()
    node = client.get_random_node()
    try:
        response = await client.send(node, everything)
    except (NotImplementedError, IncompatibleBrokerVersion):
        response = await client.send(node, fallback)  # a broker older than Kafka 2.3
    data = response.to_object()
    topics = {
        str(t.get("name", t.get("topic"))): Topic(
            partitions=len(t.get("partitions") or ()),
            internal=bool(t.get("is_internal", False)),
            writable=_reported(t.get("topic_authorized_operations"), _WRITE),
        )
        for t in data["topics"]
    }
    return Cluster(
        brokers=len(data.get("brokers") or ()),
        topics=topics,
        may_create=_reported(data.get("cluster_authorized_operations"), _CREATE),
    )


# -- the settings as a .env file (`omnisink config --env`) --------------------------------------

# What a .env value may hold without quotes (python-dotenv and a POSIX shell alike).
_PLAIN = re.compile(r"^[A-Za-z0-9_.,:/@%+=*-]*$")


def dotenv(settings: Settings, environ: Mapping[str, str]) -> str:
    """Every setting as ``OMNISINK_NAME=value`` lines that pydantic-settings reads back
    (``Settings(_env_file=...)``, or the lines exported): lists comma separated as
    ``OMNISINK_TOPICS`` is written, values single-quoted where needed, an unset setting
    commented out; a secret redacted (``***``), with a comment line saying so."""
    environ_upper = {name.upper(): value for name, value in environ.items()}
    body = [
        f"# omnisink {__version__}: every setting (`omnisink config --env`); unset ones are "
        "commented out, secrets redacted."
    ]
    for variable, value, decoded in _leaves(settings):
        name = ENV_PREFIX + variable
        if value is None:
            body.append(f"# {name}=")
            continue
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            shown = settings.database.redacted_url if variable == "DATABASE_URL" else "***"
            if shown != secret:
                what = "the password in" if variable == "DATABASE_URL" else "the value of"
                source = environ_upper.get(name + FILE_SUFFIX)
                origin = f", read from {name}{FILE_SUFFIX}={source}" if source else ""
                body.append(
                    f"# redacted: {what} {name} is shown as ***{origin}; put the real one "
                    f"back (or set {name}{FILE_SUFFIX} instead) before using this file"
                )
            body.append(f"{name}={_quoted(shown)}")
            continue
        text = _text(value, decoded)
        if "${" in text:
            body.append(f"# {name} holds '${{', which a .env reader may expand: check it")
        body.append(f"{name}={_quoted(text)}")
    return "\n".join(body) + "\n"


def _leaves(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, Any, bool]]:
    """(variable name without the prefix, value, whether pydantic-settings decodes it as
    JSON) of every leaf setting, in the model's order."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _leaves(value, f"{prefix}{name.upper()}_")
            continue
        no_decode = any(meta is NoDecode or isinstance(meta, NoDecode) for meta in field.metadata)
        yield f"{prefix}{name.upper()}", value, not no_decode


def _text(value: Any, decoded: bool) -> str:
    """A value as pydantic-settings reads it back from the environment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | set | dict):
        if not decoded and not isinstance(value, dict):
            # NoDecode lists (OMNISINK_TOPICS) are read as comma separated text.
            return ",".join(str(item) for item in value)
        return orjson.dumps(value).decode()
    return str(value)


def _quoted(text: str) -> str:
    """``text`` as a .env value python-dotenv reads back as ``text``: bare when nothing in
    it needs quotes, else in single quotes, where python-dotenv decodes ``\\\\`` and ``\\'``
    only (so a regular expression's backslashes stay as they are unless they must not)."""
    if _PLAIN.match(text):
        return text
    if "'" not in text and "\\\\" not in text and not text.endswith("\\"):
        return f"'{text}'"
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"
