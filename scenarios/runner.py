"""Runs a cascade scenario against the real stack: one serving worker per mode, open-loop load.

A `Scenario` (definitions in `scenarios.cascades`) says how each mode's settings differ,
how its clients retry, what load it offers and which side processes it needs. `run` does,
per mode:

1. prepare the stores once for the run (`prepare`): the ML-100K catalog on catalog.items,
   the trending lists, the candidates and features of the workload's users (`scenarios.seed`,
   only what is missing), and a promoted ranker (trained for one epoch if there is none);
2. start the side processes (the local LLM provider, the LLM enricher) and the serving worker
   (`ServeProcess`) with the mode's settings, on fresh ports;
3. send the workload's requests open-loop (`scenarios.load.OpenLoop`); every answer is
   shown to the synthetic user, whose clicks (`scenarios.workload.ClickModel`) go to
   events.interactions as `Interaction`s; new uploads and the viral item go to catalog.items
   at their times;
4. stop everything and reduce the outcomes to per-second rows and a summary, plus the
   scenario's own figures (`Scenario.figures`: e.g. time back to FULL after an outage).

A scenario with an `outage` stops the stack's redis-server during the load
(`scenarios.faults`); one with its own `execute` (the invalidation storm's read path) runs
through that instead of a serving worker.

Naive mode is StreamRec with protections switched off through settings (the `serving.*`
fields documented as for comparison only), never a separate toy.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import aiohttp
import numpy as np

from streamrec.infra.processes import ChildProcess, free_port
from streamrec.infra.redis_clients import sync_client
from streamrec.infra.settings import Settings
from streamrec.llm.local_provider import LocalProvider, LogEntry
from streamrec.llm.requests import explanation_request
from streamrec.models.registry import ModelRegistry
from streamrec.scenarios.faults import Outage, OutageClock, RedisPause, run_outage
from streamrec.scenarios.load import (
    OpenLoop,
    Outcome,
    RetryPolicy,
    per_second,
    run_client,
    summary,
)
from streamrec.scenarios.report import ModeRun, ScenarioResult
from streamrec.scenarios.seed import MovieLens, seed_candidates, seed_popular, seed_user_features
from streamrec.scenarios.workload import (
    Catalog,
    Request,
    Workload,
    WorkloadConfig,
    make_users,
    to_interaction,
)
from streamrec.serving.process import ServeProcess
from streamrec.streams.catalog import publish_items
from streamrec.streams.producer import bulk_producer, flush, produce_event
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import CATALOG_ITEMS, EVENTS_INTERACTIONS, LLM_ENRICH_REQUESTS, CatalogItem
from streamrec.topics.base import utcnow
from streamrec.topics.stores import POPULAR, USER_CANDIDATES

Mode = Literal["naive", "streamrec"]
CLIENT_LAG_WARN_MS = 100.0
MODES: tuple[Mode, ...] = ("naive", "streamrec")


@dataclass
class RunFacts:
    """What one mode's run saw, for a scenario's own figures."""

    settings: Settings
    workload: Workload
    outcomes: list[Outcome]
    duration_s: float
    outage: OutageClock | None = None
    published: list[str] = field(default_factory=list)  # catalog items the run added


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    metric: str
    better: Literal["lower", "higher"]
    settings: dict[Mode, dict[str, dict[str, object]]]  # per mode: section -> fields
    clients: dict[Mode, RetryPolicy]
    workload: Callable[[float, int], WorkloadConfig]  # (duration, seed) -> the audience
    common: dict[str, dict[str, object]] = field(default_factory=dict)
    llm_provider: bool = False
    enricher: dict[Mode, bool] = field(default_factory=dict)
    # Requests per second the run offers on average; None: the workload's own rate. A
    # callable gets the measured capacity (answers/s) of the streamrec mode's worker.
    rate: Callable[[float], float] | None = None
    outage: Outage | None = None  # the online store stopped for real during the load
    modes: tuple[Mode, ...] = MODES  # what `--mode both` runs
    figures: Callable[[ModeRun, RunFacts], None] | None = None  # adds to run.summary/series
    # A scenario that is not a serving worker under HTTP load: (base, scenario, modes,
    # duration_s, seed, log) -> the result.
    execute: Callable[..., ScenarioResult] | None = None


def prepare(settings: Settings, ml: MovieLens, users: Sequence[str]) -> list[str]:
    """What the run needs in the stores, written only where missing; what was done."""
    done = []
    registry = ModelRegistry(settings)
    if registry.promoted("ranker") is None:
        from streamrec.models.train import train

        result = train(settings, retriever_epochs=1, ranker_epochs=1)
        registry.promote("ranker", result.ranker.version)
        done.append(f"trained and promoted ranker {result.ranker.version} (1 epoch)")
    publish_items(settings, ml.items)
    client = sync_client(settings)
    try:
        if not client.exists(POPULAR.key(window=settings.serving.popular_window)):
            seed_popular(settings, ml)
            done.append("seeded the trending lists")
        missing = [u for u in users if not client.exists(USER_CANDIDATES.key(user_id=u))]
    finally:
        client.close()
    if missing:
        seed_candidates(settings, ml, missing)
        seed_user_features(settings, ml, missing)
        done.append(f"seeded candidates and features of {len(missing)} users")
    return done


def audience(cfg: WorkloadConfig, ml: MovieLens) -> Workload:
    genres_of = {i.item_id: i.genres for i in ml.items}
    catalog = Catalog.from_items(ml.items, ml.popularity, cfg.zipf_s)
    history = {u: [genres_of.get(i, []) for _, i, _ in h] for u, h in ml.history.items()}
    return Workload(cfg, catalog, make_users(cfg, catalog.genres(), history))


def mode_settings(base: Settings, scenario: Scenario, mode: Mode) -> Settings:
    sections: dict[str, dict[str, object]] = {k: dict(v) for k, v in scenario.common.items()}
    for name, fields in scenario.settings.get(mode, {}).items():
        sections.setdefault(name, {}).update(fields)
    sections.setdefault("serving", {})["port"] = free_port()
    if scenario.llm_provider:
        port = free_port()
        sections.setdefault("llm", {}).update(
            {"local_port": port, "base_url": f"http://127.0.0.1:{port}/v1"}
        )
    return base.with_overrides(**sections)


class _Feedback:
    """Shows each answer to its user: clicks to events.interactions, explanation requests."""

    def __init__(
        self,
        settings: Settings,
        workload: Workload,
        titles: dict[str, str],
        seed: int,
        explain: bool,
    ) -> None:
        self.producer = bulk_producer(settings)
        self.workload = workload
        self.rng = np.random.default_rng([seed, 4])
        self.run_id = uuid.uuid4().hex[:8]
        self.n = 0
        self.explain = explain
        self.asked: set[tuple[str, str]] = set()
        self.titles = titles

    def __call__(self, request: Request, outcome: Outcome) -> None:
        user = self.workload.by_id.get(request.user_id)
        if user is None:
            return
        clicks = self.workload.clicks.clicks(user, outcome.items, self.rng)
        outcome.clicks = len(clicks)
        now = datetime.now(UTC)
        for click in clicks:
            self.n += 1
            event = to_interaction(click, now, f"scenario-{self.run_id}-{self.n}")
            produce_event(self.producer, EVENTS_INTERACTIONS, event)
        if self.explain and outcome.items and (user.user_id, outcome.items[0]) not in self.asked:
            # What the candidates processor asks for: the top item's explanation, off the path.
            self.asked.add((user.user_id, outcome.items[0]))
            item = self.workload.catalog.get(outcome.items[0])
            ask = explanation_request(
                user.user_id,
                outcome.items[0],
                title=self.titles.get(outcome.items[0], outcome.items[0]),
                because="",
                genres=list(item.genres) if item is not None else None,
            )
            produce_event(self.producer, LLM_ENRICH_REQUESTS, ask)
        self.producer.poll(0)

    def catalog_event(self, item: CatalogItem) -> None:
        produce_event(
            self.producer, CATALOG_ITEMS, item.model_copy(update={"updated_at": utcnow()})
        )
        self.producer.poll(0)

    def close(self) -> None:
        flush(self.producer)


async def _drive(
    url: str,
    policy: RetryPolicy,
    schedule: list[Request],
    workload: Workload,
    feedback: _Feedback,
    duration_s: float,
    outage: tuple[RedisPause, tuple[float, float], OutageClock] | None = None,
    log: Callable[[str], None] = print,
    published: list[str] | None = None,
) -> list[Outcome]:
    loop = OpenLoop(url, policy, on_answer=feedback)
    t0 = time.monotonic()

    async def catalog_events() -> None:
        for event in workload.catalog_events(duration_s):
            await asyncio.sleep(max(0.0, t0 + event.t_s - time.monotonic()))  # its time
            workload.apply(event)
            feedback.catalog_event(event.item)
            if published is not None:
                published.append(event.item.item_id)

    side = [asyncio.create_task(catalog_events())]
    if outage is not None:
        pause, window, clock = outage
        side.append(asyncio.create_task(run_outage(pause, window, t0, clock, log)))
    try:
        return await loop.run(schedule)
    finally:
        for task in side:
            task.cancel()
        # The outage's own `finally` resumes the store: wait for it, whatever happened.
        await asyncio.gather(*side, return_exceptions=True)


def _add_llm_calls(run: ModeRun, entries: Sequence[LogEntry]) -> None:
    """The provider's own log, per second of the run: calls it got, and those it refused."""
    calls: Counter[int] = Counter(int(e.t) for e in entries if e.t >= 0)
    refused: Counter[int] = Counter(int(e.t) for e in entries if e.t >= 0 and e.status == 429)
    for row in run.series:
        row["llm_calls"] = float(calls.get(int(row["t"]), 0))
        row["llm_429"] = float(refused.get(int(row["t"]), 0))
    run.summary["llm_calls"] = float(len(entries))
    run.summary["llm_429_share"] = sum(refused.values()) / len(entries) if entries else 0.0


def _closed_loop(url: str, users: Sequence[str], seconds: float, clients: int) -> int:
    """Answers (200s) of `clients` back-to-back clients over `seconds`."""

    async def main() -> int:
        done = 0
        stop_at = time.monotonic() + seconds
        timeout = aiohttp.ClientTimeout(total=2)

        async def client(http: aiohttp.ClientSession, n: int) -> None:
            nonlocal done
            i = n
            while time.monotonic() < stop_at:
                user = users[i % len(users)]
                i += clients
                try:
                    async with http.get(
                        f"{url}/v1/users/{user}/recommendations", timeout=timeout
                    ) as r:
                        await r.read()
                        done += r.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    continue

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as http:
            await asyncio.gather(*(client(http, n) for n in range(clients)))
        return done

    return run_client(main())


def warm_up(url: str, users: Sequence[str]) -> None:
    """A second of light traffic: the ranker's first calls and the pools' first connections
    are slower, and belong to neither mode's figures."""
    _closed_loop(url, users, 1.0, clients=4)


CAPACITY_CLIENTS = (32, 64, 128)


def measure_capacity(url: str, users: Sequence[str], seconds: float = 3.0) -> float:
    """Answers per second of the worker at saturation: the most of `CAPACITY_CLIENTS`
    back-to-back clients, asking for `users` in turn. One count is not enough: with 32 the
    worker answered a third of what it did with 128 (it ranks more per event-loop turn when
    more requests wait)."""
    warm_up(url, users)
    return max(_closed_loop(url, users, seconds, clients=c) for c in CAPACITY_CLIENTS) / seconds


def scaled_schedule(workload: Workload, duration_s: float, rate: float | None) -> list[Request]:
    """The workload's requests, with its session rate scaled so the mean is `rate`."""
    if rate is None:
        return workload.requests(duration_s)
    return workload.requests(duration_s, scale=rate / workload.mean_request_rate(duration_s))


def run(
    base: Settings,
    scenario: Scenario,
    *,
    modes: Sequence[Mode] | None = None,
    duration_s: float = 60.0,
    seed: int = 0,
    log: Callable[[str], None] = print,
    ml: MovieLens | None = None,
) -> ScenarioResult:
    modes = scenario.modes if modes is None else modes
    if scenario.execute is not None:
        return scenario.execute(base, scenario, modes, duration_s, seed, log)
    cfg = scenario.workload(duration_s, seed)
    ml = ml or MovieLens.load(base)
    users = [str(n) for n in range(1, cfg.users + 1)]
    for line in prepare(base, ml, users):
        log(line)
    result = ScenarioResult(
        name=scenario.name,
        title=scenario.title,
        description=scenario.description,
        metric=scenario.metric,
        better=scenario.better,
        parameters={"duration_s": f"{duration_s:g}", "seed": str(seed)},
        runs=[],
    )
    rate: float | None = None
    capacity: float | None = None
    if scenario.rate is not None:
        # The load is set from the worker's capacity, the same for every mode: StreamRec's
        # worker with admission off, so that back-to-back clients count answers at
        # saturation, not how fast refused ones come back for more.
        raw = mode_settings(base, scenario, "streamrec").with_overrides(
            serving={"admission": False}
        )
        probe = ServeProcess(raw).start()
        # The run's own mix of users (hot users hit the response cache as often as in it).
        mix = [r.user_id for r in audience(cfg, ml).requests(max(duration_s, 30.0))]
        try:
            capacity = measure_capacity(probe.url, mix or users)
        finally:
            probe.stop()
        rate = scenario.rate(capacity)
        result.parameters["capacity_answers_per_s"] = f"{capacity:.0f}"
        result.parameters["offered_rate_per_s"] = f"{rate:.0f}"
        log(f"capacity {capacity:.0f} answers/s; offering {rate:.0f} requests/s")
    titles = {i.item_id: i.title for i in ml.items}
    for mode in modes:
        settings = mode_settings(base, scenario, mode)
        workload = audience(cfg, ml)  # fresh per mode: uploads and the viral item again
        side: list[ChildProcess] = []
        server: ServeProcess | None = None
        explain = scenario.enricher.get(mode, False)
        feedback = _Feedback(settings, workload, titles, seed, explain)
        provider: LocalProvider | None = None
        llm_log: list[LogEntry] = []
        clock = OutageClock() if scenario.outage is not None else None
        published: list[str] = []
        try:
            if scenario.llm_provider:
                provider = LocalProvider(settings).start()
                side.append(provider)
            if explain:
                group = f"scenario-enricher-{uuid.uuid4().hex[:6]}"
                side.append(WorkerProcess(settings, "llm-enricher", group).start())
            log(f"[{mode}] starting the serving worker")
            server = ServeProcess(settings).start()
            warm_up(server.url, users)
            schedule = scaled_schedule(workload, duration_s, rate)
            log(f"[{mode}] {len(schedule)} requests over {duration_s:g} s")
            outage = None
            if scenario.outage is not None and clock is not None:
                outage = (RedisPause(settings), scenario.outage.window(duration_s), clock)
            wall0 = time.time()
            outcomes = run_client(
                _drive(
                    server.url,
                    scenario.clients[mode],
                    schedule,
                    workload,
                    feedback,
                    duration_s,
                    outage,
                    lambda line, mode=mode: log(f"[{mode}]{line}"),
                    published,
                )
            )
            if provider is not None:
                llm_log = [
                    LogEntry(t=e.t - wall0, status=e.status) for e in provider.admin.log(wall0)
                ]
        finally:
            feedback.close()
            if server is not None:
                server.stop()
            for proc in reversed(side):
                proc.stop()
        changed = {
            f"{section}.{k}": str(v)
            for section, fields in scenario.settings.get(mode, {}).items()
            for k, v in fields.items()
        }
        changed.update({f"client.{k}": str(v) for k, v in scenario.clients[mode]})
        run_ = ModeRun(
            mode=mode,
            series=per_second(outcomes, duration_s),
            summary=summary(outcomes, duration_s),
            settings=changed,
        )
        if capacity is not None:
            run_.summary["goodput_of_capacity"] = run_.summary["goodput_per_s"] / capacity
        if provider is not None:
            _add_llm_calls(run_, llm_log)
        if scenario.figures is not None:
            facts = RunFacts(settings, workload, outcomes, duration_s, clock, published)
            scenario.figures(run_, facts)
        result.runs.append(run_)
        figures = run_.summary
        log(f"[{mode}] p99 {figures['p99_ms']:.0f} ms, answered {figures['answered']:.0%}")
        if figures["client_lag_p99_ms"] > CLIENT_LAG_WARN_MS:
            log(
                f"[{mode}] the load generator sent late (p99 {figures['client_lag_p99_ms']:.0f} "
                "ms behind its schedule): this machine could not offer the scheduled load, "
                "so the figures measure the client as well as the worker"
            )
    return result
