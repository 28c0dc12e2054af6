"""Retrying transient faults without losing the place or the group (docs/failures.md).

A call into PostgreSQL or Kafka is run until it succeeds; every error it raises is judged by
``consumer.errors.classify``: transient errors are retried with exponential backoff and jitter
(tenacity), the wait stretched by the circuit breaker while it is open; a fatal one becomes
``FatalError``; anything else propagates to the caller. At start-up (a :class:`Deadline`)
fatal errors are retried too, with short waits and without the breaker, until the deadline:
a server restarting while the sink starts, or a migration still running, is waited out.

The wait itself is the caller's ``sleep``: the worker's keeps polling Kafka with its
partitions paused, so a long outage neither loses the records in hand nor gets the member
thrown out of the group. ``failing`` names the operation being retried until one succeeds
(readiness reports it, consumer/health.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from consumer.breaker import CircuitBreaker
from consumer.errors import FatalError, Verdict, classify

log = structlog.get_logger("omnisink.retry")

T = TypeVar("T")

# At start-up, what is retried until the deadline, and the longest wait between attempts.
RETRIED_AT_START: tuple[Verdict, ...] = ("transient", "fatal")
STARTUP_MAX_WAIT_S = 2.0


@dataclass(frozen=True)
class Deadline:
    """The start-up's budget (``OMNISINK_STARTUP_TIMEOUT_S``): until ``at`` (monotonic clock)
    fatal errors are retried as well as transient ones, without the circuit breaker; past it
    the last error becomes a FatalError whose message is ``explain(error)``."""

    at: float
    explain: Callable[[BaseException], str]

    @classmethod
    def after(cls, budget_s: float, explain: Callable[[BaseException], str]) -> Deadline:
        """``budget_s`` from now; past it the last error's message is ``explain(error)``,
        naming the budget (``OMNISINK_STARTUP_TIMEOUT_S``) it outlasted."""

        def gave_up(exc: BaseException) -> str:
            return f"{explain(exc)} (gave up after {budget_s:g} s: OMNISINK_STARTUP_TIMEOUT_S)"

        return cls(time.monotonic() + budget_s, gave_up)

    def left(self) -> float:
        return self.at - time.monotonic()


class Retrier:
    def __init__(
        self,
        breaker: CircuitBreaker,
        *,
        stopping: asyncio.Event,
        sleep: Callable[[float], Awaitable[None]],
        on_retry: Callable[[str], None],
        on_failing: Callable[[str | None], None] = lambda what: None,
        on_settled: Callable[[], None] = lambda: None,
        explain: Callable[[BaseException], str] = str,
    ) -> None:
        self.breaker = breaker
        # Called when a call that waited between attempts is over, whatever its outcome: the
        # worker resumes the partitions its waits paused.
        self._on_settled = on_settled
        self._stopping = stopping
        self._sleep = sleep
        self._on_retry = on_retry
        self._on_failing = on_failing
        # The message of the FatalError a fatal error becomes: what to fix, and where.
        self._explain = explain
        self._jitter = wait_random_exponential(multiplier=0.2, max=30)
        # Short waits at start-up: a server back from a restart is noticed within seconds.
        self._startup_jitter = wait_random_exponential(multiplier=0.2, max=STARTUP_MAX_WAIT_S)
        # The operation whose last attempt failed, until one succeeds: the database (or the
        # dead-letter topic) is unavailable to the write path meanwhile.
        self.failing: str | None = None
        # Every operation whose last attempt failed: calls can be retried at once (the batch
        # being written, and the loop's own), and one succeeding says nothing of the others.
        self._failing: dict[str, None] = {}

    def _wait(self, state: RetryCallState, deadline: Deadline | None) -> float:
        if deadline is not None:
            return max(0.0, min(self._startup_jitter(state), deadline.left()))
        return max(self._jitter(state), self.breaker.wait_s())

    def _set_failing(self, what: str, failed: bool) -> None:
        if failed:
            self._failing[what] = None
        else:
            self._failing.pop(what, None)
        first = next(iter(self._failing), None)
        if first != self.failing:
            self.failing = first
            self._on_failing(first)

    async def run(
        self, what: str, fn: Callable[[], Awaitable[T]], *, deadline: Deadline | None = None
    ) -> T:
        """``fn()`` until it succeeds, retrying transient errors (module docstring), and fatal
        ones too until the start-up ``deadline``. While stopping, an error is not retried: it
        propagates to the caller."""
        retried: tuple[Verdict, ...] = ("transient",) if deadline is None else RETRIED_AT_START
        waited = False

        def before_sleep(state: RetryCallState) -> None:
            nonlocal waited
            waited = True
            exc = state.outcome.exception() if state.outcome else None
            verdict = classify(exc) if exc else "transient"
            if verdict == "transient":
                self._on_retry(what)
            log.warning(
                "transient_error" if verdict == "transient" else "startup_error",
                operation=what,
                attempt=state.attempt_number,
                error_class=type(exc).__name__,
                error=str(exc),
                breaker=self.breaker.state.value,
                wait_s=round(state.upcoming_sleep, 2),
                **({} if deadline is None else {"gives_up_in_s": round(deadline.left(), 1)}),
            )

        def retryable(exc: BaseException) -> bool:
            return classify(exc) in retried and not self._stopping.is_set()

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(retryable),
                stop=lambda state: deadline is not None and deadline.left() <= 0,
                wait=lambda state: self._wait(state, deadline),
                sleep=self._sleep,
                before_sleep=before_sleep,
                reraise=True,
            ):
                with attempt:
                    try:
                        result = await fn()
                    except Exception as exc:
                        if classify(exc) == "transient":
                            self._set_failing(what, failed=True)
                            if deadline is None:
                                self.breaker.failure()
                        raise
                    self._set_failing(what, failed=False)
                    # Only once nothing fails: a call that does not touch the database (a
                    # broker's log bounds) succeeding while a batch's write fails is no
                    # sign the database is back.
                    if deadline is None and self.failing is None:
                        self.breaker.success()
                    return result
        except Exception as exc:
            verdict = classify(exc)
            if deadline is not None and verdict in retried and not self._stopping.is_set():
                raise FatalError(deadline.explain(exc)) from exc
            if verdict == "fatal" and not isinstance(exc, FatalError):
                raise FatalError(self._explain(exc)) from exc
            raise
        finally:
            # Over, whatever the outcome: no longer this call's failure to report.
            self._set_failing(what, failed=False)
            if waited:
                self._on_settled()
        raise AssertionError("unreachable")  # pragma: no cover
