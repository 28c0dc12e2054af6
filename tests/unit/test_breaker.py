"""The circuit breaker's states, on a clock the test moves."""

from __future__ import annotations

from consumer.breaker import CircuitBreaker, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, changes: list[State] | None = None) -> CircuitBreaker:
    return CircuitBreaker(
        "db",
        failure_threshold=5,
        recovery_s=60,
        half_open_calls=3,
        clock=clock,
        on_change=(lambda _name, state: changes.append(state)) if changes is not None else None,
    )


def test_opens_after_five_consecutive_failures_only() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(4):
        breaker.failure()
    breaker.success()  # a success resets the count
    for _ in range(4):
        breaker.failure()
    assert breaker.state is State.CLOSED
    assert breaker.wait_s() == 0
    breaker.failure()
    assert breaker.state is State.OPEN
    assert breaker.wait_s() == 60


def test_recovers_through_three_half_open_successes() -> None:
    clock = Clock()
    changes: list[State] = []
    breaker = _breaker(clock, changes)
    for _ in range(5):
        breaker.failure()
    clock.now += 59.5
    assert breaker.state is State.OPEN
    assert breaker.wait_s() == 0.5
    clock.now += 0.5
    assert breaker.state is State.HALF_OPEN
    assert breaker.wait_s() == 0
    breaker.success()
    breaker.success()
    assert breaker.state is State.HALF_OPEN
    breaker.success()
    assert breaker.state is State.CLOSED
    assert changes == [State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_a_failed_trial_call_opens_it_again_for_a_full_period() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(5):
        breaker.failure()
    clock.now += 60
    breaker.success()
    breaker.failure()  # one failure in half-open is enough
    assert breaker.state is State.OPEN
    assert breaker.wait_s() == 60
    assert breaker.opened_count == 2
