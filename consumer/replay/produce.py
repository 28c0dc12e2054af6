"""``omnisink produce FILE.jsonl``: publish records from a file (an archive restore, a demo,
a test), acks=all.

Each line is either an envelope, sent as is to ``--topic``, or a record
``{"topic", "key", "value", "headers"}``: ``value`` a string sent as is or any other JSON value
sent serialised, ``headers`` a list of ``[name, value-or-null]``. A record without a key is
keyed as the producers key theirs (docs/contract.md section 1): the envelope's
``partition_key``, else ``correlation_id``, else ``source_node_id``, else ``event_id``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import typer
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from consumer.kafka import kafka_options
from consumer.replay.commands import ReplayError
from consumer.settings import Settings

KEY_FIELDS = ("partition_key", "correlation_id", "source_node_id", "event_id")


@dataclass(frozen=True)
class Line:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes | None]]


def _text(value: Any) -> bytes | None:
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else orjson.dumps(value)


def key_of(envelope: Any) -> bytes | None:
    """The producers' key for an envelope: its first entity id that is set."""
    if not isinstance(envelope, dict):
        return None
    for name in KEY_FIELDS:
        value = envelope.get(name)
        if value not in (None, ""):
            return str(value).encode()
    return None


def parse(number: int, text: str, topic: str | None) -> Line:
    """One line of the file; :class:`ReplayError` (exit 2) naming the line when it is not one
    of the two forms."""
    try:
        item = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ReplayError(f"line {number}: not JSON ({exc})", 2) from exc
    if isinstance(item, dict) and "value" in item and "topic" in item:
        value = item["value"]
        raw = value.encode() if isinstance(value, str) else orjson.dumps(value)
        try:
            headers = [(str(n), _text(v)) for n, v in item.get("headers") or []]
        except (TypeError, ValueError) as exc:
            raise ReplayError(f"line {number}: headers must be [name, value] pairs", 2) from exc
        envelope = value if isinstance(value, dict) else _loads_or_none(raw)
        key = _text(item.get("key")) if item.get("key") is not None else key_of(envelope)
        return Line(str(item["topic"]), key, raw, headers)
    if topic is None:
        raise ReplayError(
            f"line {number}: an envelope needs --topic (or write the line as "
            '{"topic": ..., "value": ...})',
            2,
        )
    return Line(topic, key_of(item), text.strip().encode(), [])


def _loads_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def lines(path: Path, topic: str | None) -> Iterator[Line]:
    with path.open(encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if text.strip():
                yield parse(number, text, topic)


async def produce(settings: Settings, path: Path, topic: str | None) -> None:
    """Publish every line, in order; all are checked before the first is sent."""
    try:
        records = list(lines(path, topic))
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror}", 2) from exc
    producer = AIOKafkaProducer(**kafka_options(settings), acks="all", linger_ms=5)
    try:
        await producer.start()
    except Exception as exc:
        raise ReplayError(
            f"cannot reach the Kafka brokers at {settings.kafka.bootstrap_servers}: {exc}", 2
        ) from exc
    out = Console(stderr=True)
    progress = Progress(
        TextColumn("produce"),
        BarColumn(),
        MofNCompleteColumn(),
        console=out,
        disable=not out.is_terminal,
    )
    try:
        with progress:
            task = progress.add_task("produce", total=len(records))
            pending = []
            for record in records:
                pending.append(
                    await producer.send(
                        record.topic, record.value, key=record.key, headers=record.headers
                    )
                )
                if len(pending) >= 1000:
                    for future in pending:
                        await future
                    progress.advance(task, len(pending))
                    pending.clear()
            for future in pending:
                await future
            progress.advance(task, len(pending))
    except Exception as exc:
        raise ReplayError(f"publishing failed: {exc}", 1) from exc
    finally:
        await producer.stop()
    topics = sorted({r.topic for r in records})
    typer.echo(f"omnisink produce: {len(records):,} records to {', '.join(topics) or 'nothing'}")
