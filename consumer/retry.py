"""Retrying transient faults without losing the place or the group (docs/failures.md).

A call into PostgreSQL or Kafka is run until it succeeds; every error it raises is judged by
``consumer.errors.classify``: transient errors are retried with exponential backoff and jitter
(tenacity), the wait stretched by the circuit breaker while it is open; a fatal one becomes
``FatalError``; anything else propagates to the caller. The wait itself is the caller's
``sleep``: the worker's keeps polling Kafka with its partitions paused, so a long outage
neither loses the records in hand nor gets the member thrown out of the group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from consumer.breaker import CircuitBreaker
from consumer.errors import FatalError, classify

log = structlog.get_logger("omnisink.retry")

T = TypeVar("T")


class Retrier:
    def __init__(
        self,
        breaker: CircuitBreaker,
        *,
        stopping: asyncio.Event,
        sleep: Callable[[float], Awaitable[None]],
        on_retry: Callable[[str], None],
    ) -> None:
        self.breaker = breaker
        self._stopping = stopping
        self._sleep = sleep
        self._on_retry = on_retry
        self._jitter = wait_random_exponential(multiplier=0.2, max=30)

    def _wait(self, state: RetryCallState) -> float:
        return max(self._jitter(state), self.breaker.wait_s())

    async def run(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()`` until it succeeds, retrying transient errors (module docstring). While
        stopping, a transient error is not retried: it propagates to the caller."""

        def before_sleep(state: RetryCallState) -> None:
            self._on_retry(what)
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "transient_error",
                operation=what,
                attempt=state.attempt_number,
                error_class=type(exc).__name__,
                error=str(exc),
                breaker=self.breaker.state.value,
                wait_s=round(state.upcoming_sleep, 2),
            )

        def retryable(exc: BaseException) -> bool:
            return classify(exc) == "transient" and not self._stopping.is_set()

        async for attempt in AsyncRetrying(
            retry=retry_if_exception(retryable),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                try:
                    result = await fn()
                except Exception as exc:
                    verdict = classify(exc)
                    if verdict == "fatal" and not isinstance(exc, FatalError):
                        raise FatalError(f"{what}: {exc}") from exc
                    if verdict == "transient":
                        self.breaker.failure()
                    raise
                self.breaker.success()
                return result
        raise AssertionError("unreachable")  # pragma: no cover
