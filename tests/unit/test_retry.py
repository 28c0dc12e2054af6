"""The retrier at start-up (a deadline: fatal errors retried too, then a FatalError that says
what to do) and later (transient errors only), what readiness makes of it, and the messages
of a database error the sink cannot run past."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from consumer.breaker import CircuitBreaker
from consumer.errors import FatalError
from consumer.health import Snapshot
from consumer.retry import Deadline, Retrier
from consumer.settings import DatabaseSettings, Settings
from consumer.store.database import explain

SETTINGS = Settings(
    database=DatabaseSettings(url="postgresql://sink:s3cret@db.example:5432/events"),
    startup_timeout_s=1,
)


def _retrier(stopping: asyncio.Event | None = None) -> tuple[Retrier, list[str | None]]:
    failing: list[str | None] = []

    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    retrier = Retrier(
        CircuitBreaker("database", recovery_s=0),
        stopping=stopping or asyncio.Event(),
        sleep=no_wait,
        on_retry=lambda what: None,
        on_failing=failing.append,
        explain=lambda exc: explain(exc, SETTINGS),
    )
    return retrier, failing


def _failing_then(errors: list[BaseException]) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls = [0]

    async def fn() -> str:
        calls[0] += 1
        if errors:
            raise errors.pop(0)
        return "ok"

    return calls, fn


async def test_at_start_a_fatal_error_is_retried_until_it_clears() -> None:
    retrier, failing = _retrier()
    errors: list[BaseException] = [
        ConnectionRefusedError(111, "refused"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.InvalidPasswordError("password authentication failed"),
    ]
    calls, fn = _failing_then(errors)
    deadline = Deadline(time.monotonic() + 30, lambda exc: "gave up")
    assert await retrier.run("connect", fn, deadline=deadline) == "ok"
    assert calls == [4]
    assert failing == ["connect", None]  # fatal verdicts do not mark the write path failing
    assert retrier.breaker.state.value == "closed", "the start does not feed the breaker"


async def test_at_start_what_outlasts_the_deadline_is_fatal_with_its_message() -> None:
    retrier, _ = _retrier()

    async def refused() -> None:
        raise ConnectionRefusedError(111, "Connect call failed")

    deadline = Deadline(time.monotonic() + 0.2, lambda exc: f"gave up on {type(exc).__name__}")
    with pytest.raises(FatalError, match="gave up on ConnectionRefusedError"):
        await retrier.run("connect", refused, deadline=deadline)


async def test_later_a_fatal_error_stops_at_once_and_a_transient_one_is_retried() -> None:
    retrier, failing = _retrier()
    calls, fn = _failing_then([asyncpg.InvalidPasswordError("password authentication failed")])
    with pytest.raises(FatalError, match="Check the user and password in OMNISINK_DATABASE_URL"):
        await retrier.run("commit_batch", fn)
    assert calls == [1]
    calls, fn = _failing_then([asyncpg.ReadOnlySQLTransactionError("read-only")] * 3)
    assert await retrier.run("commit_batch", fn) == "ok"
    assert calls == [4]
    assert failing == ["commit_batch", None]


async def test_while_stopping_nothing_is_retried_nor_made_fatal() -> None:
    stopping = asyncio.Event()
    stopping.set()
    retrier, _ = _retrier(stopping)
    calls, fn = _failing_then([ConnectionRefusedError(111, "refused")])
    deadline = Deadline(time.monotonic() + 30, lambda exc: "gave up")
    with pytest.raises(ConnectionRefusedError):
        await retrier.run("connect", fn, deadline=deadline)
    assert calls == [1]


def test_readiness_is_503_while_an_operation_is_retried() -> None:
    ready = Snapshot(beat_at=time.monotonic(), started=True, joined=True)
    assert ready.verdict()[1] is True
    retrying = Snapshot(beat_at=time.monotonic(), started=True, joined=True, failing="connect")
    live, is_ready, facts = retrying.verdict()
    assert (live, is_ready, facts["retrying"]) == (True, False, "connect")


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (ConnectionRefusedError(111, "refused"), "cannot connect to PostgreSQL at"),
        (asyncpg.InvalidPasswordError("password authentication failed"), "user and password"),
        (asyncpg.InvalidCatalogNameError('database "events" does not exist'), "database name"),
        (asyncpg.UndefinedTableError('relation "x" does not exist'), "omnisink migrate"),
        (FatalError("run `omnisink migrate` first."), "omnisink migrate"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value,
)
def test_a_database_error_is_explained_naming_the_setting_and_no_secret(
    exc: BaseException, says: str
) -> None:
    text = explain(exc, SETTINGS)
    assert says in text
    assert "s3cret" not in text
    leaky = OSError("could not connect with postgresql://sink:s3cret@db.example/events")
    assert "s3cret" not in explain(leaky, SETTINGS)


async def test_a_call_succeeding_beside_a_failing_one_neither_hides_nor_heals_it() -> None:
    # The batch being written and the loop's own calls are retried at once: a broker call
    # succeeding while the write fails must not report the write healthy, nor close the
    # breaker, and the write's end (success or not) clears what it reported.
    reported: list[str | None] = []
    breaker = CircuitBreaker("database", failure_threshold=2, recovery_s=60, half_open_calls=1)
    stopping = asyncio.Event()
    retrier = Retrier(
        breaker,
        stopping=stopping,
        sleep=lambda s: asyncio.sleep(0),
        on_retry=lambda what: None,
        on_failing=reported.append,
    )
    outage = asyncio.Event()
    failed_thrice = asyncio.Event()
    calls = 0

    async def write() -> str:
        nonlocal calls
        calls += 1
        if calls >= 3:
            failed_thrice.set()
        if not outage.is_set():
            raise ConnectionResetError("database away")
        return "written"

    async def log_bounds() -> int:
        return 1

    writing = asyncio.create_task(retrier.run("commit_batch", write))
    await failed_thrice.wait()
    assert retrier.failing == "commit_batch"
    assert await retrier.run("log_bounds", log_bounds) == 1
    assert retrier.failing == "commit_batch", "a broker call does not heal the write"
    assert breaker.state.value == "open", "nor does it close the breaker"
    outage.set()
    assert await writing == "written"
    assert retrier.failing is None
    assert reported == ["commit_batch", None]
