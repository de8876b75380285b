"""LLM benchmark: serving latency and errors while the LLM provider is healthy, in a 429
storm, and hung, in one run.

    python -m benchmarks.llm_bench [--rate 30] [--duration 20] [--device cpu|cuda] [--keep]

On a fresh stack of its own, with ML-100K loaded as the serving benchmark does (catalog,
trending lists, 500 candidates per user, Feast features, a trained ranker promoted), it starts
the local LLM provider (500 requests/min, 200 ms-2 s latency, the issue's figures), the
`llm-enricher` worker and `streamrec serve` (explanations on, response cache off so every
request reads its explanations). Explanation requests for the served users' top items are
produced at 10x the provider's limit throughout. Phases, each `--duration` seconds under
vegeta's open-loop constant rate:

- `no-llm`: the enricher idle (no requests), the baseline;
- `healthy`: the provider answers;
- `hung`: the provider accepts calls and never answers (calls time out, the breaker opens);
- `healthy-again`: it answers again (the breaker closes, enrichment resumes);
- `429-storm`: the provider's limit drops to 50/min (every call beyond gets 429 +
  Retry-After, which pauses the client for up to the provider's 60 s window; last, so the
  pause does not hide the other phases).

For each phase: serving p50/p95/p99, errors (non-200 other than 503), shed (503), and the
enricher's counts (enriched, 429s absorbed, timeouts, breaker trips). Goal: serving
p99 unchanged beyond noise (compare each phase with `no-llm` and with `healthy-again`, both
measured in the same run) and zero serving errors. Explanations served from the LLM's cache vs
templates are counted at the end.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis
from pydantic import SecretStr

from benchmarks.common import bench_stack, machine, percentiles
from benchmarks.serving_bench import attack, promote, trained_ranker
from streamrec.infra.processes import free_port
from streamrec.infra.settings import Settings
from streamrec.llm.keys import explanation_key
from streamrec.llm.local_provider import LocalProvider
from streamrec.llm.requests import explanation_request
from streamrec.processors.llm_enricher import stats_key
from streamrec.scenarios.seed import MovieLens, seed_candidates, seed_popular, seed_user_features
from streamrec.serving.explanations import WatchedItem, explain_items_sync
from streamrec.serving.process import ServeProcess
from streamrec.streams.catalog import publish_items
from streamrec.streams.producer import bulk_producer, produce_event
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import LLM_ENRICH_REQUESTS
from streamrec.topics.stores import LLM_RESULT

GROUP = "bench-llm-enricher"


class Demand(threading.Thread):
    """Explanation requests for (user, top item) pairs at a constant rate while `on` is set."""

    def __init__(self, settings: Settings, pairs: list[tuple[str, str, str]], rate: float):
        super().__init__(daemon=True)
        self.settings, self.pairs, self.rate = settings, pairs, rate
        self.on = threading.Event()
        self.stop_flag = threading.Event()
        self.sent = 0

    def run(self) -> None:
        producer = bulk_producer(self.settings, **{"linger.ms": 5})
        rng = random.Random(9)
        next_at = time.monotonic()
        while not self.stop_flag.is_set():
            if not self.on.wait(0.1):
                next_at = time.monotonic()
                continue
            user, item, title = rng.choice(self.pairs)
            request = explanation_request(
                user, item, title=title, because="a film they rated", priority=rng.random(),
                ttl_s=60,
            )  # fmt: skip
            produce_event(producer, LLM_ENRICH_REQUESTS, request)
            self.sent += 1
            producer.poll(0)
            next_at += 1 / self.rate
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the offered load
        producer.flush(10)


@contextmanager
def serving(settings: Settings) -> Iterator[ServeProcess]:
    server = ServeProcess(settings).start()
    try:
        yield server
    finally:
        server.stop()


def top_items(url: str, users: list[str]) -> dict[str, list[str]]:
    out = {}
    with httpx.Client(timeout=5) as client:
        for u in users:
            r = client.get(f"{url}/v1/users/{u}/recommendations", params={"k": 10})
            r.raise_for_status()
            out[u] = [it["item_id"] for it in r.json()["items"]]
    return out


def explained_share(url: str, store: redis.Redis, users: list[str]) -> tuple[int, int, int]:
    """Items served, items with an explanation, and explanations that are the LLM's text."""
    served = with_text = from_llm = 0
    with httpx.Client(timeout=5) as client:
        for u in users:
            items = client.get(f"{url}/v1/users/{u}/recommendations", params={"k": 10}).json()[
                "items"
            ]
            keys = [LLM_RESULT.key(key=explanation_key(u, it["item_id"])) for it in items]
            cached = store.mget(keys)
            for it, raw in zip(items, cached, strict=True):
                served += 1
                with_text += bool(it.get("explanation"))
                from_llm += bool(raw) and it.get("explanation", "") in raw.decode()
    return served, with_text, from_llm


class ExplainProbe(threading.Thread):
    """`serving.explanations` called in-process at ~50/s for the served users' top items, so
    the explanation step's own latency is measured apart from the whole worker's."""

    def __init__(self, settings: Settings, tops: dict[str, list[str]]) -> None:
        super().__init__(daemon=True)
        self.store = redis.Redis.from_url(settings.redis_url, socket_timeout=0.05)
        self.tops = list(tops.items())
        self.done = threading.Event()
        self.latencies_ms: list[float] = []
        self.errors = 0

    def run(self) -> None:
        rng = random.Random(3)
        recent = [WatchedItem("0", "a film", ("Drama",))]
        while not self.done.wait(0.02):
            user, items = rng.choice(self.tops)
            t0 = time.perf_counter()
            try:
                got = explain_items_sync(self.store, user, items, recent=recent)
                self.errors += len(got) != len(set(items))
            except Exception:  # the function promises never to raise: count it if it does
                self.errors += 1
            self.latencies_ms.append((time.perf_counter() - t0) * 1000)


def ranker_source() -> Path:
    """The newest ranker the serving benchmark trained into the data cache, else a new one
    (training again publishes a version that exists already when nothing changed)."""
    from streamrec.models.registry import ModelRegistry

    base = Settings()
    cache = base.with_overrides(stack={"state_dir": base.data.cache_dir / "test-ranker"})
    versions = ModelRegistry(cache).list("ranker")
    return versions[-1].path if versions else trained_ranker(base)


def enricher_stats(store: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in store.hgetall(stats_key(GROUP)).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=30, help="serving requests/s")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the ranker)")
    parser.add_argument("--users", type=int, default=200, help="served users")
    parser.add_argument("--keep", action="store_true", help="keep the stack's data and logs")
    args = parser.parse_args()

    ml = MovieLens.load(Settings())
    source = ranker_source()
    with bench_stack(keep=args.keep) as base:
        port = free_port()
        settings = base.with_overrides(
            serving={"port": free_port(), "device": args.device, "cache_ttl_s": 0.0},
            analytics={"metrics_port": 0},
            llm={
                "base_url": f"http://127.0.0.1:{port}/v1",
                "api_key": SecretStr("sk-bench-not-a-real-key"),
                "local_port": port,
                "request_missing": False,
                # Shorter than the 30 s default so `healthy-again` shows the breaker's trial
                # call closing it within the phase.
                "breaker_reset_s": 10.0,
            },
        )
        publish_items(settings, ml.items)
        seed_popular(settings, ml)
        seed_candidates(settings, ml, ml.users, n=500)
        seed_user_features(settings, ml, ml.users)
        promote(settings, source)
        titles = {i.item_id: i.title for i in ml.items}
        store = redis.Redis.from_url(settings.redis_url)
        workdir = Path(tempfile.mkdtemp(prefix="llm-bench-"))
        limit = settings.llm.local_limit
        print(f"machine: {machine()}; device {args.device}; state {settings.state_dir}")
        print(
            f"provider: {limit}/min, latency {settings.llm.local_latency_min_ms}-"
            f"{settings.llm.local_latency_max_ms} ms; enricher bucket "
            f"{settings.llm.requests_per_minute}/min x {settings.llm.rate_safety}, timeout "
            f"{settings.llm.timeout_s:g} s, breaker reset {settings.llm.breaker_reset_s:g} s; "
            f"serving {args.rate} req/s for {args.duration:g} s per phase"
        )
        with (
            LocalProvider(settings) as provider,
            WorkerProcess(settings, "llm-enricher", GROUP) as enricher,
            serving(settings) as server,
        ):
            users = ml.users[: args.users]
            tops = top_items(server.url, users)
            pairs = [(u, i, titles.get(i, i)) for u, items in tops.items() for i in items]
            demand = Demand(settings, pairs, rate=10 * limit / 60)
            demand.start()
            attack(server.url, users, 50, 3, workdir)  # warm-up
            phases = [
                ("no-llm", None),
                ("healthy", {"limit": limit, "failure": "none"}),
                ("hung", {"failure": "hang"}),
                ("healthy-again", {"failure": "none"}),
                # Last: its Retry-After (up to the provider's 60 s window) pauses the client.
                ("429-storm", {"limit": max(1, limit // 10)}),
            ]
            rows = []
            try:
                for name, config in phases:
                    if config is None:
                        demand.on.clear()
                    else:
                        provider.admin.configure(**config)
                        demand.on.set()
                    before = enricher_stats(store)
                    probe = ExplainProbe(settings, tops)
                    probe.start()
                    res = attack(server.url, users, args.rate, args.duration, workdir)
                    probe.done.set()
                    probe.join()
                    after = enricher_stats(store)
                    ex = percentiles(probe.latencies_ms)
                    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                    rows.append((name, res, d, ex, probe.errors))
                    a = res["all"]
                    print(
                        f"{name:14s} serving p50 {a['p50']:6.1f} p95 {a['p95']:6.1f} "
                        f"p99 {a['p99']:6.1f} ms; {res['ok']}/{res['sent']} ok, "
                        f"errors {res['errors']}, shed {res['shed']} | explain step "
                        f"p50 {ex['p50']:.2f} p99 {ex['p99']:.2f} ms, {probe.errors} errors "
                        f"({len(probe.latencies_ms)} calls) | enricher: "
                        f"enriched {d.get('enriched', 0)}, 429s {d.get('rate_limited', 0)}, "
                        f"timeouts {d.get('timeouts', 0)}, breaker trips "
                        f"{d.get('breaker_trips', 0)}, fail-fast {d.get('breaker_rejected', 0)}, "
                        f"stale {d.get('stale', 0)}, shed {d.get('shed', 0)}, "
                        f"queue {after.get('queue_depth', 0)}"
                    )
                demand.on.clear()
                served, with_text, from_llm = explained_share(server.url, store, users)
                print(
                    f"explanations: {with_text}/{served} served items explained, {from_llm} "
                    f"with the LLM's cached text, the rest templates"
                )
                base_p99, base_ex = rows[0][1]["all"]["p99"], rows[0][3]["p99"]
                for name, res, _, ex, _ in rows[1:]:
                    print(
                        f"p99 {name} / no-llm: serving {res['all']['p99'] / base_p99:.2f}, "
                        f"explain step {ex['p99'] / base_ex:.2f}"
                    )
                errors = sum(r[1]["errors"] for r in rows)
                print(
                    f"serving errors over all phases: {errors}; explain-step errors: "
                    f"{sum(r[4] for r in rows)}"
                )
                log = provider.admin.log()
                print(
                    f"provider log: {len(log)} calls, {sum(e.status == 429 for e in log)} "
                    f"answered 429, {sum(e.status == 0 for e in log)} hung; "
                    f"enricher alive: {enricher.alive()}"
                )
            finally:
                demand.stop_flag.set()
                demand.join(15)
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
