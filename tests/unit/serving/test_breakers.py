import pytest

from streamrec.serving.breakers import CircuitBreaker, State
from streamrec.serving.errors import BreakerOpen, DependencyError


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


async def ok():
    return 1


async def bad():
    raise DependencyError("x", "down")


async def test_opens_after_failures_then_half_open_trial_closes_it():
    clock, changes = Clock(), []
    b = CircuitBreaker(
        "x", failures=2, reset_s=5, on_change=lambda n, s: changes.append(s), clock=clock
    )
    for _ in range(2):
        with pytest.raises(DependencyError):
            await b.call(bad)
    assert b.state == State.OPEN
    with pytest.raises(BreakerOpen):
        await b.call(ok)
    clock.t = 5.0
    assert await b.call(ok) == 1
    assert b.state == State.CLOSED
    assert changes == [State.OPEN, State.HALF_OPEN, State.CLOSED]


async def test_failed_trial_reopens_and_only_one_trial_is_let_through():
    clock = Clock()
    b = CircuitBreaker("x", failures=1, reset_s=1, clock=clock)
    with pytest.raises(DependencyError):
        await b.call(bad)
    clock.t = 1.0
    assert b.allow() is True  # the trial
    assert b.allow() is False  # everyone else keeps failing fast
    b.failure()
    assert b.state == State.OPEN
    clock.t = 1.5
    with pytest.raises(BreakerOpen):
        await b.call(ok)


async def test_success_resets_the_count():
    b = CircuitBreaker("x", failures=2, reset_s=1)
    with pytest.raises(DependencyError):
        await b.call(bad)
    await b.call(ok)
    with pytest.raises(DependencyError):
        await b.call(bad)
    assert b.state == State.CLOSED
