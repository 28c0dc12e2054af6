"""The sink's error classes, decided once at the boundary where a driver is called.

- **transient**: the database or broker is unavailable or refused this attempt (connection
  lost, serialization failure, deadlock, too many connections, admin shutdown). Retried with
  backoff for as long as it lasts; the record keeps its place.
- **permanent**: this record can never be written (handlers.base.Reject, envelope DecodeError).
  Dead-lettered; the rest of the batch goes on.
- **fatal**: the sink cannot run as configured (schema missing, bad credentials). The process
  exits non-zero with a message a person can act on.
"""

from __future__ import annotations

import asyncio

import asyncpg
from aiokafka import errors as kafka_errors

from consumer.deadletters import DeadLetterUnavailable

# SQLSTATE classes and codes that mean "try again": 08 connection exception, 40001
# serialization failure, 40P01 deadlock, 53 insufficient resources (too many connections),
# 57P01/57P02/57P03 admin/crash shutdown and cannot connect now, 55P03 lock not available.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53")
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "55P03"})
# Missing schema or table / bad credentials: retrying cannot help.
_FATAL_SQLSTATE_PREFIXES = ("28", "3D", "3F", "42P01")


class FatalError(Exception):
    """The sink cannot run as configured; the message says what to do."""


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same work later can succeed."""
    if isinstance(exc, asyncio.CancelledError):
        return False
    # A dead letter the broker did not take holds its batch back until it does; a lost
    # connection ("connection is closed") surfaces as asyncpg's InterfaceError.
    if isinstance(
        exc,
        (
            DeadLetterUnavailable,
            OSError,
            asyncio.TimeoutError,
            ConnectionError,
            asyncpg.exceptions.InterfaceError,
        ),
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state in _TRANSIENT_SQLSTATES or state.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    if isinstance(exc, kafka_errors.KafkaError):
        return bool(getattr(exc, "retriable", False)) or isinstance(
            exc,
            (
                kafka_errors.KafkaConnectionError,
                kafka_errors.KafkaTimeoutError,
                kafka_errors.NodeNotReadyError,
                kafka_errors.RequestTimedOutError,
            ),
        )
    return False


def is_fatal(exc: BaseException) -> bool:
    """Whether the error means the configuration or the schema is wrong."""
    if isinstance(exc, FatalError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state.startswith(_FATAL_SQLSTATE_PREFIXES)
    return False
