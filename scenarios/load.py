"""Open-loop HTTP load on the serving worker, with the clients' retry policy, sampled per second.

- `RetryPolicy`: how a client retries a failed or slow request (no backoff in the storm: it
  retries at once). `honour_overload` makes it respect the worker's 503 + Retry-After +
  `X-Overloaded: do-not-retry`; `budget_ratio` caps retries at that share of first attempts
  (a client-side retry budget), `None` leaves them unbounded;
- `OpenLoop`: sends each scheduled request at its time whatever the earlier ones are doing
  (one asyncio task per request on one `aiohttp.ClientSession`), so a slow worker sees the
  load pile up as real traffic would, and records one `Outcome` per request. aiohttp, not
  httpx: at the scenarios' rates httpx's connection pool cost ~8 ms of client CPU per request
  (~0.56 ms for this one, `benchmarks/load_client_bench.py`), so the client fell behind its own
  schedule and measured itself instead of the worker;
- `per_second`: the outcomes as one row a second: p50/p99 latency (from the first send,
  retries included), answers, shed and error rates, attempts (the load the worker really
  got), clicks, and the share of each degradation level.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import aiohttp
import numpy as np
import orjson
import uvloop
from pydantic import BaseModel, ConfigDict, Field

from streamrec.scenarios.workload import Request

Kind = Literal["ok", "shed", "error", "timeout"]
T = TypeVar("T")
LEVELS = ("FULL", "STALE_FEATURES", "SIMPLE_RANKING", "POPULAR")


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: int = Field(3, ge=0)
    timeout_s: float = Field(1.0, gt=0, description="a slower answer counts as failed")
    honour_overload: bool = True
    budget_ratio: float | None = Field(0.1, ge=0)


@dataclass
class Outcome:
    t_s: float  # scheduled send time, since the start
    kind: Kind
    latency_ms: float  # from the first attempt's send to the last attempt's end
    attempts: int
    level: str | None = None
    items: list[str] = field(default_factory=list)
    clicks: int = 0
    attempt_times: list[float] = field(default_factory=list)  # each attempt's send time
    user_id: str = ""
    explored: list[str] = field(default_factory=list)  # the items the answer marked explored


class RetryBudget:
    """Retries allowed while they stay within `ratio` of first attempts plus `floor`: after
    any call, retries <= floor + ratio * firsts."""

    def __init__(self, ratio: float | None, floor: int = 10) -> None:
        self.ratio = ratio
        self.floor = floor
        self.firsts = 0
        self.retries = 0

    def first(self) -> None:
        self.firsts += 1

    def allow(self) -> bool:
        if self.ratio is None:
            return True
        # The retry this call grants counts against the bound too, so that the bound holds
        # after it (checking before the increment let one more through).
        if self.retries + 1 <= self.floor + self.ratio * self.firsts:
            self.retries += 1
            return True
        return False


class OpenLoop:
    """Sends `schedule` at its times against `url`; `on_answer` sees every answered request."""

    def __init__(
        self,
        url: str,
        policy: RetryPolicy,
        k: int = 10,
        on_answer: Callable[[Request, Outcome], Awaitable[None] | None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.policy = policy
        self.k = k
        self.on_answer = on_answer
        self.budget = RetryBudget(policy.budget_ratio)
        self.outcomes: list[Outcome] = []

    async def _attempt(self, client: aiohttp.ClientSession, request: Request) -> tuple[Kind, dict]:
        try:
            async with client.get(
                f"{self.url}/v1/users/{request.user_id}/recommendations",
                params={"k": self.k},
                timeout=aiohttp.ClientTimeout(total=self.policy.timeout_s),
            ) as r:
                if r.status == 200:
                    return "ok", orjson.loads(await r.read())  # a third of json's CPU
                await r.read()
                if r.status == 503 and r.headers.get("x-overloaded") == "do-not-retry":
                    return "shed", {}
                return "error", {}
        except TimeoutError:
            return "timeout", {}
        except aiohttp.ClientError:
            return "error", {}

    async def _one(self, client: aiohttp.ClientSession, request: Request, t0: float) -> None:
        # Latency counts from the first attempt's send, not from the schedule: this client
        # never waits for an answer before sending, so how late it sends is its own CPU, not
        # the worker's backpressure; that lag is reported apart (`client_lag_p99_ms`).
        sent = time.monotonic()
        self.budget.first()
        attempts: list[float] = []
        kind: Kind = "error"
        body: dict = {}
        for n in range(self.policy.retries + 1):
            if n and not self.budget.allow():
                break
            attempts.append(time.monotonic() - t0)
            kind, body = await self._attempt(client, request)
            if kind == "ok" or (kind == "shed" and self.policy.honour_overload):
                break
        outcome = Outcome(
            t_s=request.t_s,
            kind=kind,
            latency_ms=(time.monotonic() - sent) * 1000.0,
            attempts=len(attempts),
            level=body.get("level"),
            items=[i["item_id"] for i in body.get("items", [])],
            explored=[i["item_id"] for i in body.get("items", []) if i.get("explored")],
            attempt_times=attempts,
            user_id=request.user_id,
        )
        if kind == "ok" and self.on_answer is not None:
            result = self.on_answer(request, outcome)
            if result is not None:
                await result
        self.outcomes.append(outcome)

    async def run(self, schedule: Sequence[Request], max_connections: int = 512) -> list[Outcome]:
        connector = aiohttp.TCPConnector(limit=max_connections)
        async with aiohttp.ClientSession(connector=connector) as client:
            t0 = time.monotonic()
            tasks: list[asyncio.Task[None]] = []
            for request in schedule:
                delay = t0 + request.t_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # the open loop's own pacing
                tasks.append(asyncio.create_task(self._one(client, request, t0)))
            await asyncio.gather(*tasks)
        return self.outcomes


def run_client(main: Coroutine[object, object, T]) -> T:
    """Run a load coroutine on uvloop: ~20% less client CPU per request than asyncio's loop
    (272 against 330 µs a bare request at 1,500/s), CPU the worker under test shares."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def per_second(outcomes: Sequence[Outcome], duration_s: float) -> list[dict[str, float]]:
    """One row per second of scheduled time (see the module docstring for the columns)."""
    by_s: dict[int, list[Outcome]] = defaultdict(list)
    attempts: Counter[int] = Counter()
    for o in outcomes:
        by_s[int(o.t_s)].append(o)
        for t in o.attempt_times:
            attempts[int(t)] += 1
    rows = []
    for s in range(int(np.ceil(duration_s))):
        got = by_s.get(s, [])
        n = len(got)
        kinds = Counter(o.kind for o in got)
        ok = [o for o in got if o.kind == "ok"]
        lat = [o.latency_ms for o in got]
        levels = Counter(o.level for o in ok)
        row: dict[str, float] = {
            "t": float(s),
            "requests": float(n),
            "attempts": float(attempts.get(s, 0)),
            "answers": float(len(ok)),
            "p50_ms": float(np.percentile(lat, 50)) if lat else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if lat else float("nan"),
            "shed_rate": kinds["shed"] / n if n else 0.0,
            "error_rate": (kinds["error"] + kinds["timeout"]) / n if n else 0.0,
            "clicks": float(sum(o.clicks for o in got)),
        }
        for level in LEVELS:
            row[f"level_{level}"] = levels[level] / len(ok) if ok else 0.0
        rows.append(row)
    return rows


def summary(outcomes: Sequence[Outcome], duration_s: float) -> dict[str, float]:
    """The run as a whole: the figures of the terminal table."""
    n = len(outcomes)
    kinds = Counter(o.kind for o in outcomes)
    lat = [o.latency_ms for o in outcomes]
    ok = [o for o in outcomes if o.kind == "ok"]
    ok_lat = [o.latency_ms for o in ok]
    # How late the client sent first attempts: large, and the run measured the client.
    lag = [(o.attempt_times[0] - o.t_s) * 1000.0 for o in outcomes if o.attempt_times]
    attempts = sum(o.attempts for o in outcomes)
    return {
        "requests": float(n),
        "attempts_per_request": attempts / n if n else 0.0,
        "retry_share": (attempts - n) / n if n else 0.0,  # retries per first attempt
        "goodput_per_s": len(ok) / duration_s if duration_s else 0.0,
        "p50_ms": float(np.percentile(lat, 50)) if lat else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if lat else float("nan"),
        "p99_answered_ms": float(np.percentile(ok_lat, 99)) if ok_lat else float("nan"),
        "client_lag_p99_ms": float(np.percentile(lag, 99)) if lag else 0.0,
        "answered": len(ok) / n if n else 0.0,
        "shed_rate": kinds["shed"] / n if n else 0.0,
        "error_rate": (kinds["error"] + kinds["timeout"]) / n if n else 0.0,
        "full_share": sum(o.level == "FULL" for o in ok) / len(ok) if ok else 0.0,
        "clicks_per_s": sum(o.clicks for o in outcomes) / duration_s if duration_s else 0.0,
    }
