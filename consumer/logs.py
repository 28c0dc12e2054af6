"""Structured logging: one JSON (or console) line per event name, context bound per batch.

Secrets never reach a line: the CLI hands the configured ones to :func:`hide` (the database
URL and its password, the SASL password), and every line, the libraries' included, has them
replaced by ``***`` wherever they appear (an exception's message, a traceback).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal

import structlog

_hidden: tuple[str, ...] = ()


def hide(secrets: Iterable[str]) -> None:
    """The texts no log line may contain, from now on (longest first)."""
    global _hidden  # noqa: PLW0603 - one logging configuration per process
    _hidden = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _hidden:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value


def scrub_secrets(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A processor: every string of the event (a traceback ``format_exc_info`` rendered
    too) without a secret, before JSON escapes a secret's quotes or backslashes."""
    if _hidden:
        for key, value in event_dict.items():
            if key != "exc_info":  # a tuple the renderer formats: see _Scrubbed
                event_dict[key] = _scrubbed(value)
    return event_dict


class _Scrubbed:
    """A renderer whose line is scrubbed once more: what it rendered itself (a library
    record's exception) is covered too."""

    def __init__(self, renderer: structlog.typing.Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> Any:
        return _scrubbed(self._renderer(logger, name, event_dict))


def configure(level: str = "INFO", fmt: Literal["json", "console"] = "json") -> None:
    """Configure structlog (and the stdlib loggers of aiokafka/asyncpg) once per process."""
    renderer: structlog.typing.Processor = _Scrubbed(
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            scrub_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Library loggers (aiokafka's rebalance messages, asyncpg) through the same renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                scrub_secrets,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.getLevelName(level), logging.INFO))
    # aiokafka logs every rebalance step at INFO; keep WARNING and above.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
