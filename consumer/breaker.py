"""The circuit breaker in front of PostgreSQL and the dead-letter producer (seed 000's
``CIRCUIT_BREAKER_CONFIG``: open after 5 failures, retry after 60 s, test with 3 calls).

- **closed**: calls go through; consecutive transient failures are counted, a success resets
  the count; at ``failure_threshold`` the breaker opens.
- **open**: no call is made until ``recovery_s`` has passed (the worker waits, polling Kafka so
  it keeps its partitions, instead of hammering a database that is down).
- **half-open**: up to ``half_open_calls`` trial calls; that many successes close it, one
  failure opens it again for another ``recovery_s``.

Written here rather than taken from a library: the worker does not wrap a call in the breaker,
it asks the breaker how long to wait before its next attempt (``wait_s``) and tells it the
outcome, because the wait itself must keep polling Kafka; pybreaker is synchronous, and
purgatory/aiobreaker wrap calls and have no "N half-open trial calls" state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """See the module docstring. Not thread-safe; one per worker, used from its loop."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        recovery_s: float = 60.0,
        half_open_calls: int = 3,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, State], None] | None = None,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_s = recovery_s
        self.half_open_calls = half_open_calls
        self._clock = clock
        self._on_change = on_change
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_successes = 0
        self.opened_count = 0

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self._clock() - self._opened_at >= self.recovery_s:
            self._set(State.HALF_OPEN)
            self._trial_successes = 0
        return self._state

    def wait_s(self) -> float:
        """How long to wait before the next call may be made (0: now)."""
        if self.state is State.OPEN:
            return max(0.0, self._opened_at + self.recovery_s - self._clock())
        return 0.0

    def success(self) -> None:
        state = self.state
        self._failures = 0
        if state is State.HALF_OPEN:
            self._trial_successes += 1
            if self._trial_successes >= self.half_open_calls:
                self._set(State.CLOSED)

    def failure(self) -> None:
        state = self.state
        self._failures += 1
        if state is State.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self.opened_count += 1
            self._set(State.OPEN)

    def _set(self, state: State) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(self.name, state)
