"""Every class consumer/errors.py:classify gives: transient (retry, keep the place), permanent
(dead-letter the record), fatal (stop with a message) or unexpected (a bug: neither retried
nor taken for bad data)."""

from __future__ import annotations

import asyncio
import socket
import ssl

import asyncpg
import pytest
from aiokafka import errors as kafka_errors

from consumer.deadletters import DeadLetterUnavailable
from consumer.errors import FatalError, TransientError, Verdict, classify, is_fatal, is_transient
from handlers.base import Contended, Reject


def _pg(cls: type[asyncpg.PostgresError], message: str = "x") -> asyncpg.PostgresError:
    return cls(message)


def _state(sqlstate: str, message: str = "x") -> asyncpg.PostgresError:
    """The exception asyncpg builds from a server's error fields."""
    error: asyncpg.PostgresError = asyncpg.PostgresError.new({"C": sqlstate, "M": message})
    return error


NOT_ACCEPTING = 'database "omnisink" is not currently accepting connections'
READ_ONLY = "cannot execute INSERT in a read-only transaction"
STATEMENT_TIMEOUT = "canceling statement due to statement timeout"

CASES: dict[Verdict, list[BaseException]] = {
    "transient": [
        # The network and the connection.
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(),
        OSError("connection refused"),
        socket.gaierror(-2, "Name or service not known"),  # DNS
        ssl.SSLError("EOF occurred in violation of protocol"),
        TimeoutError(),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.InterfaceError("connection is closed"),
        # A pooled session the server ended, handed out before its socket closed.
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
        _state("08006", "connection failure"),
        _state("08001", "could not connect"),
        # A database that does not take the sink's sessions or writes now.
        _pg(asyncpg.ObjectNotInPrerequisiteStateError, NOT_ACCEPTING),
        _state("55000", NOT_ACCEPTING),
        _pg(asyncpg.ReadOnlySQLTransactionError, READ_ONLY),
        _pg(asyncpg.CannotConnectNowError, "the database system is starting up"),
        _pg(asyncpg.CannotConnectNowError, "the database system is in recovery mode"),
        _pg(asyncpg.AdminShutdownError, "terminating connection due to administrator command"),
        _pg(asyncpg.CrashShutdownError, "terminating connection because of crash"),
        _pg(asyncpg.TooManyConnectionsError, "sorry, too many clients already"),
        _state("53200", "out of memory"),
        # Concurrency and timeouts.
        _pg(asyncpg.SerializationError),
        _pg(asyncpg.DeadlockDetectedError),
        _pg(asyncpg.LockNotAvailableError, "canceling statement due to lock timeout"),
        _pg(asyncpg.QueryCanceledError, STATEMENT_TIMEOUT),
        Contended("rows changed under the handler"),
        # The sink's own, and Kafka's.
        TransientError("try again"),
        DeadLetterUnavailable("dlq down"),
        kafka_errors.KafkaConnectionError(),
        kafka_errors.KafkaTimeoutError(),
        kafka_errors.NodeNotReadyError(),
        kafka_errors.RequestTimedOutError(),
        kafka_errors.NotLeaderForPartitionError(),  # retriable
    ],
    "permanent": [
        _pg(asyncpg.UniqueViolationError),
        _pg(asyncpg.CheckViolationError),
        _pg(asyncpg.NotNullViolationError),
        _pg(asyncpg.NumericValueOutOfRangeError),
        _pg(asyncpg.InvalidTextRepresentationError),
        _state("54000", "index row size exceeds maximum"),
    ],
    "fatal": [
        FatalError("schema missing"),
        _pg(asyncpg.InvalidPasswordError, 'password authentication failed for user "sink"'),
        _pg(asyncpg.InvalidAuthorizationSpecificationError, 'role "sink" does not exist'),
        _pg(asyncpg.InvalidCatalogNameError, 'database "nowhere" does not exist'),
        _pg(asyncpg.InvalidSchemaNameError, 'schema "omnisink" does not exist'),
        _pg(asyncpg.UndefinedTableError, 'relation "event_logs" does not exist'),
    ],
    "unexpected": [
        ValueError("a bug"),
        RuntimeError("a bug"),
        KeyError("payload"),
        asyncio.CancelledError(),
        Reject("schema", "a decision, not an error to classify"),
        # The same codes with another meaning than the transient one.
        _pg(asyncpg.ObjectNotInPrerequisiteStateError, "cannot do this now"),
        _pg(asyncpg.QueryCanceledError, "canceling statement due to user request"),
        _state("XX000", "internal error"),
        _state("P0001", "raised by a trigger"),
        _state("42601", "syntax error"),
        kafka_errors.TopicAuthorizationFailedError(),  # not retriable
    ],
}


@pytest.mark.parametrize(
    ("verdict", "exc"),
    [(verdict, exc) for verdict, excs in CASES.items() for exc in excs],
    ids=lambda value: value if isinstance(value, str) else f"{type(value).__name__}:{value}",
)
def test_classify(verdict: Verdict, exc: BaseException) -> None:
    assert classify(exc) == verdict
    assert is_transient(exc) is (verdict == "transient")
    assert is_fatal(exc) is (verdict == "fatal")


def test_a_missing_sqlstate_is_not_guessed_at() -> None:
    error = asyncpg.PostgresError("no code")
    assert classify(error) == "unexpected"
