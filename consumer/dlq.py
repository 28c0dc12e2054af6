"""The dead letters in PostgreSQL, for an operator: list them, show one, send them back (redrive).

Contract section 5. ``omnisink.dead_letters`` (migration 013) keeps every record the sink could
never write, with its original key, value and headers; the ``omnisink dlq`` commands
(consumer/cli.py) read it through this module.

Redrive publishes each selected record again to its ORIGINAL topic, with its original key,
value and headers plus ``omnisink.redrive.of: <dead letter id>``, with acks=all, in id order,
and marks exactly the acknowledged rows ``redriven``. The sink then consumes the copy as a new
record (new offset): written if the cause is gone, else dead-lettered again as a new row.

Decisions:

- **Rows are locked while their records are published** (``FOR UPDATE SKIP LOCKED``, one
  transaction per chunk of :data:`REDRIVE_CHUNK` rows), so two redrives running at once never
  publish the same dead letter twice; the mark also keeps its ``status = 'pending'`` guard.
  Chunks bound memory (a value is up to ``OMNISINK_MAX_MESSAGE_BYTES``) and the length of a
  transaction.
- **The selection is fixed when the command starts** (``id <= max(id)`` then): the copies it
  publishes may fail again and come back as new pending rows while it runs; they are not
  picked up by the same command, so a redrive always ends.
- **The partition is the producer's choice** (the default partitioner, by key), not the
  original partition: a keyed record lands with the other records of its key even if the
  topic gained partitions since.
- **A failure stops the redrive**: nothing after the first record that could not be
  published is sent; every record the broker acknowledged is marked (so running the command
  again does not publish it twice), the rest stays pending.
- **Bytes are shown as UTF-8 text when they decode to printable text**, else as hex, always
  saying which (``utf-8`` or ``hex``): a value with terminal escapes is never printed raw.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from consumer.settings import Settings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

# The error kinds of contract section 5 (the CHECK of omnisink.dead_letters.error_kind).
ERROR_KINDS = (
    "decode",
    "schema",
    "unknown_type",
    "invalid_transition",
    "conflict",
    "constraint",
    "oversize",
)
REDRIVE_HEADER = "omnisink.redrive.of"
REDRIVE_CHUNK = 500
MESSAGE_WIDTH = 60

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_TEXT_WHITESPACE = frozenset("\t\n\r")

_SUMMARY_COLUMNS = """
    id, failed_at, topic, kafka_partition, kafka_offset, error_kind, event_type, event_id,
    attempts, status, error_message, redriven_at, consumer_group
"""


class DlqError(Exception):
    """A command cannot do what was asked; the message says why, ``exit_code`` how badly
    (2: configuration or connection, 1: anything else)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- selection -----------------------------------------------------------------------------


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """An ISO 8601 timestamp (UTC when it has no offset) or a duration back from now:
    ``90s``, ``30m``, ``2h``, ``7d``, ``1w``."""
    relative = _RELATIVE.match(text)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2).lower()
        try:
            return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
        except OverflowError:
            raise ValueError(f"{text!r} is further back than a timestamp can go") from None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 timestamp (2026-11-21T08:00:00Z) nor a "
            "duration back from now (30m, 2h, 7d)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Filters:
    """Which dead letters: every given filter must hold."""

    topic: str | None = None
    kind: str | None = None
    since: datetime | None = None
    ids: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return self.topic is None and self.kind is None and self.since is None and not self.ids

    def where(self, status: str | None, args: list[Any]) -> str:
        """A WHERE clause of constant SQL; the values are appended to ``args`` as parameters."""
        clauses = ["TRUE"]

        def param(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if status is not None:
            clauses.append(f"status = {param(status)}")
        if self.topic is not None:
            clauses.append(f"topic = {param(self.topic)}")
        if self.kind is not None:
            clauses.append(f"error_kind = {param(self.kind)}")
        if self.since is not None:
            clauses.append(f"failed_at >= {param(self.since)}")
        if self.ids:
            clauses.append(f"id = ANY({param(list(self.ids))}::bigint[])")
        return " AND ".join(clauses)


# -- rows ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    """One dead letter, without its record: a line of ``dlq list``."""

    id: int
    failed_at: datetime
    topic: str
    partition: int
    offset: int
    kind: str
    event_type: str | None
    event_id: UUID | None
    attempts: int
    status: str
    message: str
    redriven_at: datetime | None
    consumer_group: str

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Summary:
        return cls(
            id=row["id"],
            failed_at=row["failed_at"],
            topic=row["topic"],
            partition=row["kafka_partition"],
            offset=row["kafka_offset"],
            kind=row["error_kind"],
            event_type=row["event_type"],
            event_id=row["event_id"],
            attempts=row["attempts"],
            status=row["status"],
            message=row["error_message"],
            redriven_at=row["redriven_at"],
            consumer_group=row["consumer_group"],
        )

    @property
    def source(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "failed_at": self.failed_at,
            "source": self.source,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "kind": self.kind,
            "event_type": self.event_type,
            "event_id": str(self.event_id) if self.event_id is not None else None,
            "attempts": self.attempts,
            "status": self.status,
            "message": self.message,
            "redriven_at": self.redriven_at,
            "consumer_group": self.consumer_group,
        }


@dataclass(frozen=True, slots=True)
class Payload:
    """Bytes as an operator reads them: UTF-8 text when printable, else hex."""

    encoding: str  # "utf-8" | "hex"
    data: str
    size: int

    @classmethod
    def of(cls, raw: bytes | None) -> Payload | None:
        if raw is None:
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return cls("hex", raw.hex(), len(raw))
        if all(c.isprintable() or c in _TEXT_WHITESPACE for c in text):
            return cls("utf-8", text, len(raw))
        return cls("hex", raw.hex(), len(raw))

    def to_json(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "data": self.data, "bytes": self.size}


@dataclass(frozen=True, slots=True)
class Detail:
    """Every fact of one dead letter: ``dlq show``."""

    summary: Summary
    record_timestamp: datetime | None
    key: Payload | None
    value: Payload | None
    headers: list[tuple[str, Payload | None]]
    error_class: str
    stacktrace: str | None
    dlq_topic: str
    dlq_partition: int | None
    dlq_offset: int | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Detail:
        return cls(
            summary=Summary.from_row(row),
            record_timestamp=row["record_timestamp"],
            key=Payload.of(row["record_key"]),
            value=Payload.of(row["record_value"]),
            headers=[
                (k, Payload.of(v))
                for k, v in zip(row["header_keys"], row["header_values"], strict=True)
            ],
            error_class=row["error_class"],
            stacktrace=row["error_stacktrace"],
            dlq_topic=row["dlq_topic"],
            dlq_partition=row["dlq_partition"],
            dlq_offset=row["dlq_offset"],
        )

    @property
    def dlq_position(self) -> str:
        if self.dlq_partition is None or self.dlq_offset is None:
            return f"{self.dlq_topic} (position not recorded)"
        return f"{self.dlq_topic}[{self.dlq_partition}]@{self.dlq_offset}"

    def to_json(self) -> dict[str, Any]:
        return {
            **self.summary.to_json(),
            "record_timestamp": self.record_timestamp,
            "key": self.key.to_json() if self.key else None,
            "value": self.value.to_json() if self.value else None,
            "headers": [{"key": k, "value": v.to_json() if v else None} for k, v in self.headers],
            "error_class": self.error_class,
            "stacktrace": self.stacktrace,
            "dlq": {
                "topic": self.dlq_topic,
                "partition": self.dlq_partition,
                "offset": self.dlq_offset,
            },
        }


# -- database ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection to OMNISINK_DATABASE_URL; failures become :class:`DlqError` (exit 2)
    naming the redacted URL."""
    db = settings.database
    try:
        conn = await asyncpg.connect(
            db.dsn,
            command_timeout=db.command_timeout_s,
            statement_cache_size=db.statement_cache_size,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DlqError(
            f"cannot connect to PostgreSQL at {db.redacted_url}: {exc}. "
            "Check OMNISINK_DATABASE_URL and that the server is running.",
            exit_code=2,
        ) from exc
    try:
        yield conn
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError) as exc:
        raise DlqError(
            f"the database at {db.redacted_url} has no omnisink.dead_letters table ({exc}): "
            "run `omnisink migrate` first.",
            exit_code=2,
        ) from exc
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.ConnectionDoesNotExistError) as exc:
        raise DlqError(
            f"lost the connection to PostgreSQL at {db.redacted_url}: {exc}", exit_code=2
        ) from exc
    finally:
        with contextlib.suppress(Exception):
            await conn.close()


async def fetch_list(
    conn: asyncpg.Connection, filters: Filters, status: str | None, limit: int | None
) -> list[Summary]:
    """Dead letters matching ``filters`` (and ``status``, None for any), newest first."""
    args: list[Any] = []
    where = filters.where(status, args)
    sql = (
        f"SELECT {_SUMMARY_COLUMNS} FROM omnisink.dead_letters WHERE {where} "
        "ORDER BY failed_at DESC, id DESC"
    )
    if limit is not None:
        args.append(limit)
        sql += f" LIMIT ${len(args)}"
    return [Summary.from_row(row) for row in await conn.fetch(sql, *args)]


async def fetch_one(conn: asyncpg.Connection, dead_letter_id: int) -> Detail | None:
    row = await conn.fetchrow("SELECT * FROM omnisink.dead_letters WHERE id = $1", dead_letter_id)
    return Detail.from_row(row) if row is not None else None


async def fetch_statuses(conn: asyncpg.Connection, ids: Sequence[int]) -> dict[int, str]:
    """The status of each of ``ids`` that exists."""
    rows = await conn.fetch(
        "SELECT id, status FROM omnisink.dead_letters WHERE id = ANY($1::bigint[])", list(ids)
    )
    return {row["id"]: row["status"] for row in rows}


async def pending(conn: asyncpg.Connection, filters: Filters) -> list[Summary]:
    """The pending dead letters a redrive with ``filters`` would publish, in id order."""
    args: list[Any] = []
    where = filters.where("pending", args)
    rows = await conn.fetch(
        f"SELECT {_SUMMARY_COLUMNS} FROM omnisink.dead_letters WHERE {where} ORDER BY id", *args
    )
    return [Summary.from_row(row) for row in rows]


async def mark_redriven(conn: asyncpg.Connection, ids: Sequence[int]) -> list[int]:
    """Mark ``ids`` redriven, those still pending only; return the ids marked."""
    rows = await conn.fetch(
        "UPDATE omnisink.dead_letters SET status = 'redriven', redriven_at = now() "
        "WHERE id = ANY($1::bigint[]) AND status = 'pending' RETURNING id",
        list(ids),
    )
    return sorted(row["id"] for row in rows)


# -- redrive -------------------------------------------------------------------------------


def redrive_headers(
    keys: Sequence[str], values: Sequence[bytes | None], dead_letter_id: int
) -> list[tuple[str, bytes]]:
    """The record's original headers plus ``omnisink.redrive.of`` (replacing an earlier one,
    when a redriven record is redriven again)."""
    kept = [(k, v or b"") for k, v in zip(keys, values, strict=True) if k != REDRIVE_HEADER]
    return [*kept, (REDRIVE_HEADER, str(dead_letter_id).encode())]


@dataclass
class RedriveResult:
    """What a redrive did: the dead letters published and marked, per topic; why it stopped."""

    redriven: list[int] = field(default_factory=list)
    topics: Counter[str] = field(default_factory=Counter)
    # The first record that could not be published, and why; the redrive stopped there.
    failed_id: int | None = None
    failed_topic: str | None = None
    error: BaseException | None = None
    # Published (acknowledged) but no longer pending when marked. The rows are locked while
    # published, so only a change that bypassed the lock could do this; reported if it happens.
    not_marked: list[int] = field(default_factory=list)


async def open_producer(settings: Settings) -> AIOKafkaProducer:
    """A started producer with acks=all; an unreachable broker is a :class:`DlqError` (exit 2)."""
    from aiokafka import AIOKafkaProducer

    from consumer.kafka import kafka_options

    producer = AIOKafkaProducer(
        **kafka_options(settings),
        acks="all",
        # The same cap as the dead-letter producer: what could be dead-lettered (an oversize
        # record included) can be sent back.
        max_request_size=settings.dlq_max_request_bytes,
    )
    try:
        await producer.start()
    except Exception as exc:
        with contextlib.suppress(Exception):
            await producer.stop()
        raise DlqError(
            f"cannot reach the Kafka brokers at {settings.kafka.bootstrap_servers}: {exc}. "
            "Check OMNISINK_KAFKA_BOOTSTRAP_SERVERS.",
            exit_code=2,
        ) from exc
    return producer


async def redrive(
    conn: asyncpg.Connection,
    producer: AIOKafkaProducer,
    filters: Filters,
    *,
    chunk: int = REDRIVE_CHUNK,
) -> RedriveResult:
    """Publish the pending dead letters matching ``filters`` to their original topics, in id
    order, and mark the acknowledged ones redriven (module docstring)."""
    result = RedriveResult()
    last = await conn.fetchval("SELECT max(id) FROM omnisink.dead_letters")
    if last is None:
        return result
    after = 0
    while result.error is None:
        args: list[Any] = [after, last, chunk]
        where = filters.where("pending", args)
        acked: list[asyncpg.Record] = []
        try:
            async with conn.transaction():
                rows = await conn.fetch(
                    "SELECT id, topic, record_key, record_value, header_keys, header_values "
                    f"FROM omnisink.dead_letters WHERE id > $1 AND id <= $2 AND {where} "
                    "ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
                    *args,
                )
                if not rows:
                    break
                after = rows[-1]["id"]
                acked = await _publish(producer, rows, result)
                marked = await mark_redriven(conn, [row["id"] for row in acked])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if not acked:
                raise
            ids = ", ".join(str(row["id"]) for row in acked)
            raise DlqError(
                f"{len(result.redriven)} redriven, then PostgreSQL failed ({exc}) after "
                f"{len(acked)} more were published (dead letters {ids}): those are still "
                "pending, so the next redrive publishes them again"
            ) from exc
        marked_set = set(marked)
        for row in acked:
            if row["id"] in marked_set:
                result.redriven.append(row["id"])
                result.topics[row["topic"]] += 1
            else:
                result.not_marked.append(row["id"])
    return result


async def _publish(
    producer: AIOKafkaProducer, rows: Sequence[asyncpg.Record], result: RedriveResult
) -> list[asyncpg.Record]:
    """Send ``rows`` in order and wait for the acknowledgements; stop sending at the first
    failure (recorded in ``result``). Returns the rows the broker acknowledged."""
    sent: list[tuple[asyncpg.Record, Any]] = []
    for row in rows:
        try:
            future = await producer.send(
                row["topic"],
                value=row["record_value"],
                key=row["record_key"],
                headers=redrive_headers(row["header_keys"], row["header_values"], row["id"]),
            )
        except Exception as exc:  # noqa: BLE001 - what was sent is still marked, then reported
            _failed(result, row, exc)
            break
        sent.append((row, future))
    acked: list[asyncpg.Record] = []
    for row, future in sent:
        try:
            await future
        except Exception as exc:  # noqa: BLE001 - the others may be acknowledged: mark them
            if result.failed_id is None or row["id"] < result.failed_id:
                _failed(result, row, exc)
            continue
        acked.append(row)
    return acked


def _failed(result: RedriveResult, row: asyncpg.Record, exc: BaseException) -> None:
    result.failed_id, result.failed_topic, result.error = row["id"], row["topic"], exc


# -- output --------------------------------------------------------------------------------


def dumps(value: Any) -> str:
    """JSON text (timestamps ISO 8601 in UTC, UUIDs as strings)."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z).decode()


def console() -> Console:
    """A console on stdout; when stdout is not a terminal (a pipe, a file), wide enough never
    to wrap or cut a row (a table is only as wide as its cells)."""
    out = Console(highlight=False, soft_wrap=False)
    if not out.is_terminal:
        out.width = max(out.width, 1000)
    return out


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _short(message: str, width: int = MESSAGE_WIDTH) -> str:
    first = message.strip().splitlines()[0] if message.strip() else ""
    if len(first) > width or first != message.strip():
        return first[: width - 1].rstrip() + "…"
    return first


def table(rows: Sequence[Summary], title: str | None = None) -> Table:
    out = Table(title=title, title_justify="left")
    for name in ("id", "failed_at", "source", "kind", "event_type", "attempts", "status"):
        out.add_column(
            name, no_wrap=True, justify="right" if name in {"id", "attempts"} else "left"
        )
    out.add_column("message", no_wrap=True, overflow="ellipsis")
    for r in rows:
        out.add_row(
            *(
                Text(cell)
                for cell in (
                    str(r.id),
                    _when(r.failed_at),
                    r.source,
                    r.kind,
                    r.event_type or "-",
                    str(r.attempts),
                    r.status,
                    _short(r.message),
                )
            )
        )
    return out


def detail_lines(d: Detail) -> list[str]:
    """``dlq show`` as plain lines (no markup: every value is the record's or the error's)."""
    s = d.summary

    def payload(p: Payload | None) -> tuple[str, str]:
        if p is None:
            return "null", "-"
        return f"{p.encoding}, {p.size} bytes", p.data

    facts: list[tuple[str, str]] = [
        ("status", s.status),
        ("redriven at", _when(s.redriven_at)),
        ("source", s.source),
        ("consumer group", s.consumer_group),
        ("record timestamp", _when(d.record_timestamp)),
        ("failed at", _when(s.failed_at)),
        ("attempts", str(s.attempts)),
        ("event id", str(s.event_id) if s.event_id else "-"),
        ("event type", s.event_type or "-"),
        ("error kind", s.kind),
        ("error class", d.error_class),
        ("error message", s.message),
        ("dead-letter copy", d.dlq_position),
    ]
    encoding, data = payload(d.key)
    facts.append((f"key ({encoding})", data))
    encoding, data = payload(d.value)
    facts.append((f"value ({encoding})", data))
    if not d.headers:
        facts.append(("headers", "none"))
    for name, header in d.headers:
        encoding, data = payload(header)
        facts.append((f"header {name} ({encoding})", data))
    width = max(len(label) for label, _ in facts)
    lines = [f"dead letter {s.id}"]
    for label, value in facts:
        first, *rest = value.splitlines() or [""]
        lines.append(f"  {label.ljust(width)}  {first}")
        lines.extend(f"  {' ' * width}  {more}" for more in rest)
    lines.append("  stacktrace:" if d.stacktrace else "  stacktrace: -")
    lines.extend(f"    {line}".rstrip() for line in (d.stacktrace or "").rstrip().splitlines())
    return lines


def topics_summary(topics: Counter[str]) -> str:
    return ", ".join(f"{topic} ({n})" for topic, n in sorted(topics.items()))
