"""What the dead-letter commands select and show: filters, rows, and bytes as an operator
reads them; and :class:`DlqError`, the one error the commands raise."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_TEXT_WHITESPACE = frozenset("\t\n\r")


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
