"""The open-loop client: its retry policies against a worker that sheds or fails, and the
per-second rows the report draws."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from streamrec.scenarios.load import (
    OpenLoop,
    Outcome,
    RetryBudget,
    RetryPolicy,
    per_second,
    summary,
)
from streamrec.scenarios.workload import Request


@asynccontextmanager
async def worker(status: int, overloaded: bool) -> AsyncIterator[tuple[str, list[str]]]:
    """A local HTTP server that answers every request the same way; the paths it saw."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.path)
        if status == 200:
            body = {"level": "FULL", "items": [{"item_id": "1"}, {"item_id": "2"}]}
            return web.json_response(body)
        headers = {"retry-after": "1", "x-overloaded": "do-not-retry"} if overloaded else {}
        return web.json_response({"detail": "no"}, status=status, headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")), seen
    finally:
        await server.close()


SCHEDULE = [Request(t_s=0.001 * i, user_id=str(i), session_id="s", seq=i) for i in range(20)]


async def run(policy: RetryPolicy, status: int, overloaded: bool) -> tuple[list[Outcome], int]:
    async with worker(status, overloaded) as (url, seen):
        outcomes = await OpenLoop(url, policy).run(SCHEDULE)
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
    assert total["retry_share"] == pytest.approx(1 / 4)
    assert total["goodput_per_s"] == 1.0  # 2 answers over 2 s
    assert total["p99_answered_ms"] == pytest.approx(29.8)  # the answers only: 10 and 30 ms
    assert total["client_lag_p99_ms"] == 0.0  # every first attempt went out on time


async def test_a_slow_answer_is_a_timeout_and_a_refused_connection_an_error():
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)  # the worker is slower than the client's 0.05 s timeout
        return web.json_response({"level": "FULL", "items": []})

    app = web.Application()
    app.router.add_get("/{tail:.*}", slow)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url(""))
        outcomes = await OpenLoop(url, RetryPolicy(retries=0, timeout_s=0.05)).run(SCHEDULE[:3])
    finally:
        await server.close()
    assert {o.kind for o in outcomes} == {"timeout"}
    # Nothing listens there any more: every attempt is an error, retried within the budget.
    outcomes = await OpenLoop(url, RetryPolicy(retries=1, budget_ratio=None)).run(SCHEDULE[:3])
    assert {o.kind for o in outcomes} == {"error"} and {o.attempts for o in outcomes} == {2}


@pytest.mark.parametrize(("ratio", "firsts"), [(0.1, 38497), (0.1, 95), (0.25, 7), (0.0, 50)])
def test_the_retry_budget_never_passes_its_bound(ratio: float, firsts: int):
    budget = RetryBudget(ratio, floor=10)
    for _ in range(firsts):
        budget.first()
        while budget.allow():  # every first attempt asks for as many retries as it can get
            pass
        assert budget.retries <= budget.floor + ratio * budget.firsts
    # ...and it grants all it may: the bound, rounded down.
    assert budget.retries == int(10 + ratio * firsts)
