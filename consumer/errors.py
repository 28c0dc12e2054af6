"""The sink's error classes, decided once: :func:`classify` is asked at every call into asyncpg
or aiokafka (the retry loop in consumer/retry.py, which the start-up's connect and schema check
go through too, and the savepoints of consumer/store/batch.py).

- **transient**: the database or broker is unavailable or refused this attempt (connection
  refused, reset or lost, a DNS failure, a database not accepting connections, starting up,
  shutting down or read-only, too many connections, serialization failure, deadlock, a lock
  or statement timeout, a dead letter the broker did not take, rows changed under a handler).
  Retried with backoff for as long as it lasts; the record keeps its place.
- **permanent**: these rows can never be written (PostgreSQL refused the data itself: SQLSTATE
  classes 22 data exception, 23 integrity constraint, 54 program limit). The batch is split
  down to the event that fails alone, which is dead-lettered; the rest goes on. (A handler's
  own decisions, ``Reject``/``Rejected``, and the envelope's ``DecodeError`` are permanent too,
  but they are values of the domain, not errors to classify.)
- **fatal**: the sink cannot run as configured (schema missing, bad credentials, missing
  database). At start-up these are retried like transient ones until
  ``OMNISINK_STARTUP_TIMEOUT_S`` has passed (a server restarting under the daemon is never
  fatal); then, or when one happens later, the process exits 2 with a message a person can
  act on.
- **unexpected**: anything else is a bug of the sink, never retried and never taken for bad
  data. Raised while judging one record it makes that record an ``internal`` dead letter
  (consumer/store/batch.py); anywhere else it propagates and stops the process (exit 1).

Handlers (``handlers/``) never see or raise a driver's exception class; what they can say about
concurrency, :class:`handlers.base.Contended`, is transient here.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import asyncpg
from aiokafka import errors as kafka_errors

from handlers.base import Contended

Verdict = Literal["transient", "permanent", "fatal", "unexpected"]

# SQLSTATE classes and codes that mean "try again": 08 connection exception, 25006 a read-only
# session (a failover onto a replica, default_transaction_read_only), 40001 serialization
# failure, 40P01 deadlock, 53 insufficient resources (too many connections), 55P03 lock not
# available (lock_timeout), 57P01/57P02/57P03 admin/crash shutdown and cannot connect now
# (the server shutting down, starting up or in recovery).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53")
_TRANSIENT_SQLSTATES = frozenset({"25006", "40001", "40P01", "55P03", "57P01", "57P02", "57P03"})
# Codes that are transient only with one message: 55000 object not in prerequisite state is
# also what a connection gets from a database that does not accept connections (ALTER DATABASE
# ... ALLOW_CONNECTIONS false), and 57014 query canceled is also a statement_timeout. The
# server's messages are matched as PostgreSQL writes them with lc_messages C or English.
_TRANSIENT_WHEN_SAYING = {
    "55000": "is not currently accepting connections",
    "57014": "statement timeout",
}
# Missing schema or table / bad credentials / missing database: retrying cannot help (the
# start-up still retries them for a while, consumer/store/database.py).
_FATAL_SQLSTATE_PREFIXES = ("28", "3D", "3F", "42P01")
# The data itself: the same rows can never be written.
_PERMANENT_SQLSTATE_PREFIXES = ("22", "23", "54")

_TRANSIENT_KAFKA_ERRORS = (
    kafka_errors.KafkaConnectionError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.RequestTimedOutError,
)


# A lost connection ("connection is closed") surfaces as asyncpg's InterfaceError. A session
# the server ends while it sits idle in the pool (a FATAL from pg_terminate_backend or a
# shutdown) can be handed out between the server's message and the closed socket: asyncpg then
# says InternalClientError ("another operation is in progress"). The next attempt opens a new
# session (consumer/store/database.py), so a fault of one session cannot repeat.
_TRANSIENT_CLASSES: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    ConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


class FatalError(Exception):
    """The sink cannot run as configured; the message says what to do."""


class TransientError(Exception):
    """A condition of the sink's own that retrying can clear (e.g. the dead-letter topic did
    not take a record)."""


_TRANSIENT_CLASSES += (TransientError, Contended)


def classify(exc: BaseException) -> Verdict:
    """What the sink does about ``exc``; see the module docstring."""
    if isinstance(exc, asyncio.CancelledError):
        verdict: Verdict = "unexpected"  # never retried, never swallowed: a cancel goes on
    elif isinstance(exc, FatalError):
        verdict = "fatal"
    elif isinstance(exc, _TRANSIENT_CLASSES):
        verdict = "transient"
    elif isinstance(exc, asyncpg.PostgresError):
        verdict = _sqlstate_verdict(getattr(exc, "sqlstate", None) or "", str(exc))
    elif isinstance(exc, kafka_errors.KafkaError):
        retriable = bool(getattr(exc, "retriable", False))
        verdict = (
            "transient" if retriable or isinstance(exc, _TRANSIENT_KAFKA_ERRORS) else ("unexpected")
        )
    else:
        verdict = "unexpected"
    return verdict


def _sqlstate_verdict(state: str, message: str) -> Verdict:
    if state in _TRANSIENT_SQLSTATES or state.startswith(_TRANSIENT_SQLSTATE_PREFIXES):
        return "transient"
    saying = _TRANSIENT_WHEN_SAYING.get(state)
    if saying is not None and saying in message:
        return "transient"
    if state.startswith(_FATAL_SQLSTATE_PREFIXES):
        return "fatal"
    if state.startswith(_PERMANENT_SQLSTATE_PREFIXES):
        return "permanent"
    return "unexpected"


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same work later can succeed."""
    return classify(exc) == "transient"


def is_fatal(exc: BaseException) -> bool:
    """Whether the error means the configuration or the schema is wrong."""
    return classify(exc) == "fatal"
