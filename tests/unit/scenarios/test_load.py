"""The open-loop client: its retry policies against a worker that sheds or fails, and the
per-second rows the report draws."""

from __future__ import annotations

import httpx
import pytest

from streamrec.scenarios.load import OpenLoop, Outcome, RetryPolicy, per_second, summary
from streamrec.scenarios.workload import Request


def worker(status: int, overloaded: bool) -> tuple[httpx.MockTransport, list[str]]:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if status == 200:
            body = {"level": "FULL", "items": [{"item_id": "1"}, {"item_id": "2"}]}
            return httpx.Response(200, json=body)
        headers = {"retry-after": "1", "x-overloaded": "do-not-retry"} if overloaded else {}
        return httpx.Response(status, headers=headers, json={"detail": "no"})

    return httpx.MockTransport(handle), seen


SCHEDULE = [Request(t_s=0.001 * i, user_id=str(i), session_id="s", seq=i) for i in range(20)]


async def run(policy: RetryPolicy, status: int, overloaded: bool) -> tuple[list[Outcome], int]:
    transport, seen = worker(status, overloaded)
    loop = OpenLoop("http://worker", policy)
    outcomes = await loop.run(SCHEDULE, transport=transport)
    return outcomes, len(seen)


async def test_a_client_that_honours_overload_does_not_retry_a_shed_request():
    outcomes, sent = await run(RetryPolicy(retries=3, honour_overload=True), 503, True)
    assert sent == len(SCHEDULE)
    assert {o.kind for o in outcomes} == {"shed"}


async def test_a_naive_client_retries_every_failure_three_times():
    naive = RetryPolicy(retries=3, honour_overload=False, budget_ratio=None)
    outcomes, sent = await run(naive, 503, True)
    assert sent == 4 * len(SCHEDULE)
    outcomes, sent = await run(naive, 500, False)
    assert sent == 4 * len(SCHEDULE)
    assert {o.kind for o in outcomes} == {"error"}


async def test_a_retry_budget_bounds_retries_to_its_share_of_first_attempts():
    policy = RetryPolicy(retries=3, honour_overload=True, budget_ratio=0.5)
    _, sent = await run(policy, 500, False)
    # 20 first attempts, then at most 10 (the floor) + 0.5 x 20 retries.
    assert sent == len(SCHEDULE) + 10 + 10


async def test_answers_carry_their_level_and_items():
    outcomes, _ = await run(RetryPolicy(), 200, False)
    assert {o.kind for o in outcomes} == {"ok"}
    assert all(o.level == "FULL" and o.items == ["1", "2"] and o.attempts == 1 for o in outcomes)


def test_rows_per_second_and_the_summary():
    outcomes = [
        Outcome(0.1, "ok", 10.0, 1, "FULL", clicks=2, attempt_times=[0.1]),
        Outcome(0.5, "ok", 30.0, 1, "POPULAR", attempt_times=[0.5]),
        Outcome(0.9, "timeout", 1000.0, 2, attempt_times=[0.9, 1.9]),
        Outcome(1.2, "shed", 2.0, 1, attempt_times=[1.2]),
    ]
    rows = per_second(outcomes, 2.0)
    assert [r["t"] for r in rows] == [0.0, 1.0]
    first, second = rows
    assert (first["requests"], first["answers"], first["attempts"]) == (3, 2, 3)
    assert second["attempts"] == 2  # the retry of the timed-out request landed in second 1
    assert first["error_rate"] == pytest.approx(1 / 3)
    assert second["shed_rate"] == 1.0
    assert first["level_FULL"] == 0.5 and first["level_POPULAR"] == 0.5
    assert first["clicks"] == 2
    total = summary(outcomes, 2.0)
    assert total["answered"] == 0.5 and total["clicks_per_s"] == 1.0
    assert total["attempts_per_request"] == pytest.approx(5 / 4)
