"""Which errors are transient (retry, keep the place), fatal (stop with a message) or
neither (the caller decides: permanent for the record)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from aiokafka import errors as kafka_errors

from consumer.deadletters import DeadLetterUnavailable
from consumer.errors import FatalError, is_fatal, is_transient


def _pg(cls: type[asyncpg.PostgresError]) -> asyncpg.PostgresError:
    return cls("x")


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError(),
        OSError("connection refused"),
        TimeoutError(),
        asyncpg.exceptions.ConnectionDoesNotExistError("closed"),
        asyncpg.InterfaceError("connection is closed"),
        _pg(asyncpg.SerializationError),
        _pg(asyncpg.DeadlockDetectedError),
        _pg(asyncpg.TooManyConnectionsError),
        _pg(asyncpg.AdminShutdownError),
        _pg(asyncpg.CannotConnectNowError),
        kafka_errors.KafkaConnectionError(),
        kafka_errors.NotLeaderForPartitionError(),
        kafka_errors.RequestTimedOutError(),
        DeadLetterUnavailable("dlq down"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient(exc: BaseException) -> None:
    assert is_transient(exc)
    assert not is_fatal(exc)


@pytest.mark.parametrize(
    "exc",
    [
        _pg(asyncpg.UniqueViolationError),
        _pg(asyncpg.CheckViolationError),
        _pg(asyncpg.NumericValueOutOfRangeError),
        ValueError("a bug"),
        asyncio.CancelledError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        FatalError("schema missing"),
        _pg(asyncpg.InvalidPasswordError),
        _pg(asyncpg.UndefinedTableError),
        _pg(asyncpg.InvalidCatalogNameError),
    ],
    ids=lambda e: type(e).__name__,
)
def test_fatal(exc: BaseException) -> None:
    assert is_fatal(exc)
    assert not is_transient(exc)
