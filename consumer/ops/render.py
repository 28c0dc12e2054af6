"""How ``omnisink query`` and ``omnisink maintenance`` show rows: rich tables; JSON is
``consumer.dlq.render.dumps`` (timestamps ISO 8601 in UTC, UUIDs as strings)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.table import Table
from rich.text import Text

from consumer.dlq.render import console, dumps

__all__ = ["cell", "console", "dumps", "table"]

JSON_WIDTH = 60


def cell(value: Any) -> str:
    """A value as a table cell: ``-`` for NULL, times in UTC to the millisecond, JSON compact
    and cut at :data:`JSON_WIDTH`."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        text = value.astimezone(UTC).isoformat(timespec="milliseconds")
        return text.replace("+00:00", "Z")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, dict | list):
        text = orjson.dumps(value).decode()
        return text if len(text) <= JSON_WIDTH else text[: JSON_WIDTH - 1] + "…"
    return str(value)


def table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str | None = None
) -> Table:
    """``columns`` of ``rows``; numbers right-aligned. Cells are plain text, never markup
    (every value is the data's)."""
    out = Table(title=title, title_justify="left")
    for name in columns:
        numeric = any(
            isinstance(r.get(name), int | float) and not isinstance(r.get(name), bool) for r in rows
        )
        out.add_column(name, no_wrap=True, justify="right" if numeric else "left")
    for r in rows:
        out.add_row(*(Text(cell(r.get(name))) for name in columns))
    return out
