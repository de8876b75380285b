"""The front door: refuses /v1/ requests cheaply while the event loop is behind or the waiting
room is full, lowest class first; lets everything else through."""

import asyncio
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from streamrec.serving.admission import AdmissionController
from streamrec.serving.front_door import FrontDoor
from streamrec.serving.loop_lag import LoopLag


async def ok(request):
    return JSONResponse({"ok": True})


class FixedLag:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def now(self) -> float:
        return self.seconds


def client_for(lag, admission=None, refused=None) -> httpx.AsyncClient:
    inner = Starlette(routes=[Route("/v1/users/{u}/recommendations", ok), Route("/metrics", ok)])
    app = FrontDoor(
        inner,
        lag=lag,
        admission=lambda: admission,
        max_lag_s=0.040,
        retry_after_s=3,
        on_refuse=lambda p, kind: refused.append((p, kind)) if refused is not None else None,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.mark.parametrize(
    ("lag_s", "expected"),
    [
        # interactive refused past 40 ms, prefetch past 20 ms, background past 10 ms
        (0.005, {"interactive": 200, "prefetch": 200, "background": 200}),
        (0.015, {"interactive": 200, "prefetch": 200, "background": 503}),
        (0.030, {"interactive": 200, "prefetch": 503, "background": 503}),
        (0.050, {"interactive": 503, "prefetch": 503, "background": 503}),
    ],
)
async def test_lag_refuses_the_lowest_classes_first(lag_s, expected):
    refused: list[tuple[str, str]] = []
    async with client_for(FixedLag(lag_s), refused=refused) as client:
        got = {}
        for priority in expected:
            r = await client.get("/v1/users/1/recommendations", params={"priority": priority})
            got[priority] = r.status_code
            if r.status_code == 503:
                assert r.headers["retry-after"] == "3"
                assert r.headers["x-overloaded"] == "do-not-retry"
                body = r.json()
                assert body["retry"] is False
                assert f"overloaded, do not retry ({priority}: event loop" in body["detail"]
        # Other paths (health, metrics) are never refused: operators must see an overload.
        assert (await client.get("/metrics")).status_code == 200
    assert got == expected
    assert refused == [(p, "event loop behind") for p, s in expected.items() if s == 503]


async def test_a_full_waiting_room_is_refused_at_the_door():
    admission = AdmissionController(1, {"interactive": 1, "prefetch": 0, "background": 0})
    await admission.acquire("interactive", 1.0)  # the one slot is taken
    waiter = asyncio.create_task(admission.acquire("interactive", 5.0))  # the room's one place
    while admission.queued("interactive") == 0:
        await asyncio.sleep(0)
    async with client_for(FixedLag(0.0), admission) as client:
        r = await client.get("/v1/users/1/recommendations")
    assert r.status_code == 503 and "waiting room full" in r.json()["detail"]
    admission.release()
    await waiter


async def test_loop_lag_sees_a_blocked_loop_and_recovers():
    lag = LoopLag(interval_s=0.005)
    lag.start()
    try:
        await asyncio.sleep(0.02)  # let the ticker run a few times
        assert lag.now() < 0.05
        busy_until = time.monotonic() + 0.1
        while time.monotonic() < busy_until:  # a handler hogging the loop for 100 ms
            pass
        assert lag.now() >= 0.09  # seen while it is still overdue, before the ticker runs
        async with client_for(lag) as client:
            r = await client.get("/v1/users/1/recommendations")
        assert r.status_code == 503
        for _ in range(100):  # the ticker wakes again on a free loop: lag back to ~0
            await asyncio.sleep(0.005)
            if lag.now() < 0.02:
                break
        assert lag.now() < 0.02
    finally:
        await lag.stop()
