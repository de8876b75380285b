"""The circuit breaker's states and the retry budget, on a controlled clock."""

from __future__ import annotations

import pytest

from streamrec.llm.breaker import BreakerState, CircuitBreaker
from streamrec.llm.budget import RetryBudget
from streamrec.llm.errors import LLMBreakerOpen


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_opens_after_consecutive_failures_and_fails_fast() -> None:
    clock, changes = Clock(), []
    b = CircuitBreaker(3, 10.0, on_change=changes.append, clock=clock)
    for _ in range(2):
        b.before_call()
        b.failure()
    b.before_call()
    b.success()  # a success resets the count
    for _ in range(3):
        b.before_call()
        b.failure()
    assert b.state is BreakerState.OPEN and b.trips == 1
    with pytest.raises(LLMBreakerOpen) as exc:
        b.before_call()
    assert exc.value.retry_in_s == pytest.approx(10.0)
    assert changes == [BreakerState.OPEN]


def test_half_open_admits_one_trial_and_its_outcome_decides() -> None:
    clock = Clock()
    b = CircuitBreaker(1, 5.0, clock=clock)
    b.before_call()
    b.failure()
    clock.t += 5.0
    b.before_call()  # the trial
    assert b.state is BreakerState.HALF_OPEN
    with pytest.raises(LLMBreakerOpen):
        b.before_call()  # everyone else still fails fast
    b.failure()  # trial failed: open for another period
    assert b.state is BreakerState.OPEN and b.trips == 2
    clock.t += 5.0
    b.before_call()
    b.success()
    assert b.state is BreakerState.CLOSED
    b.before_call()  # closed: anyone may call


def test_a_neutral_outcome_releases_the_trial_without_deciding() -> None:
    clock = Clock()
    b = CircuitBreaker(1, 1.0, clock=clock)
    b.before_call()
    b.failure()
    clock.t += 1.0
    b.before_call()
    b.neutral()  # e.g. a 429: nothing learnt about the provider's health
    assert b.state is BreakerState.HALF_OPEN
    b.before_call()  # the next caller may try


def test_retry_budget_allows_a_share_of_recent_calls() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.1, min_retries=2, window_s=10, clock=clock)
    for _ in range(50):
        budget.record_call()
    allowed = sum(budget.try_retry() for _ in range(20))
    assert allowed == 2 + 5  # min_retries + 10% of 50
    clock.t += 10.1  # the window passed: only the floor remains
    assert sum(budget.try_retry() for _ in range(20)) == 2
