"""How the dead-letter commands show what they found: rich tables, plain lines, JSON."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from consumer.dlq.model import Detail, Payload, Summary

MESSAGE_WIDTH = 60


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
