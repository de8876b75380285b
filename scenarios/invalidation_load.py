"""The invalidation load scenario that the benchmark and the demo share (I/O, not the processor).

A steady request load reads a response cache in front of the precomputed candidates
(`cand:{user_id}` in Redis) while a "viral" new item (and then a model promotion) arrives,
with the invalidation worker running in one mode. It measures, per second: the response
cache hit ratio, the computations (a ranking on each response-cache miss; a candidate
computation, i.e. a vector search, on each candidate-store miss and on each refresh),
request latency, and how long each affected user waits for the new item to appear in their
precomputed candidates.

Parts:
- `World`: ML-100K loaded once (items, real MiniLM vectors, the 100,000 ratings) and
  published to the stack's topics; every user's candidates seeded;
- `ReadPath`: the request path (response cache with a TTL, candidate read, computations on
  misses) and the candidate computation (FAISS top-k over the item vectors with the user's
  taste vector, the same taste the processor uses);
- `RefreshApplier`: acts on cache.invalidations in a thread, as the candidates processor
  and the serving cache do: "refresh" recomputes and swaps in `cand:{user_id}` (old value
  serving meanwhile), "delete" drops the user's response-cache entry (broadcast);
- `run_mode`: one mode's run (warm-up, steady, viral item, promotion) and its figures.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis
from confluent_kafka import Consumer, TopicPartition

from streamrec.infra.redis_clients import sync_client
from streamrec.infra.settings import InvalidationSettings, Settings
from streamrec.invalidation.affected import TasteModel
from streamrec.invalidation.pacing import max_commands, max_in_any_window
from streamrec.models.embedder import Embedder, content_hash, item_text
from streamrec.processors.invalidation import stats_key
from streamrec.streams import codecs
from streamrec.streams.producer import bulk_producer, flush, produce_event
from streamrec.streams.sources.base import RowError
from streamrec.streams.sources.movielens import MovieLensInteractions, load_items
from streamrec.streams.table_reader import TopicReader, end_offsets, read_table
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import (
    CACHE_INVALIDATIONS,
    CANDIDATES,
    CATALOG_ITEMS,
    CATALOG_VECTORS,
    EVENTS_INTERACTIONS,
    REGISTRY_CHANGES,
    CandidatesUpdated,
    CatalogItem,
    Interaction,
    ItemVector,
    RegistryChange,
    candidate_codec,
)
from streamrec.topics.stores import USER_CANDIDATES, Candidate, CandidateList

SMOOTH_S = 3

# A drama close to one most ML-100K users rated highly: near ~600 of the 943 users at
# neighbour_rank 100 (a "viral" item). The demo's film suits fewer users (~80), so it spreads
# within its short run at the same bounded rate.
VIRAL_TEMPLATE = CatalogItem(
    item_id="viral", title="Good Will Hunting II", year=1998, genres=["Drama"]
)
POPULAR_TEMPLATE = CatalogItem(
    item_id="popular", title="The Wedding Summer", year=1998, genres=["Comedy", "Drama", "Romance"]
)


@dataclass
class World:
    """ML-100K as the scenario uses it: items, their vectors, ratings, users by activity."""

    items: list[CatalogItem]
    vectors: np.ndarray
    interactions: list[Interaction]
    users_by_activity: list[str]
    embedder: Embedder

    @classmethod
    def load(
        cls,
        settings: Settings,
        ml100k: Path,
        reuse_vectors: bool = False,
        interactions_from_log: bool = False,
    ) -> World:
        """With `reuse_vectors`, items already on catalog.vectors (the content pipeline's,
        same model) are not embedded again. With `interactions_from_log`, the interactions
        are those on events.interactions (what the processor reads: on a stack that ran
        other work, users beyond ML-100K's), not the ML-100K file."""
        embedder = Embedder(settings)
        items = load_items(ml100k)
        known = _published_vectors(settings) if reuse_vectors else {}
        missing = [i for i in items if i.item_id not in known]
        fresh = dict(
            zip(
                (i.item_id for i in missing),
                embedder.embed([item_text(i) for i in missing]),
                strict=True,
            )
        )
        vectors = np.stack([known.get(i.item_id, fresh.get(i.item_id)) for i in items])
        ratings = [e for e in MovieLensInteractions(ml100k) if not isinstance(e, RowError)]
        # The request load is over ML-100K's users, by activity, whatever else the log holds.
        counts: dict[str, int] = defaultdict(int)
        for e in ratings:
            counts[e.user_id] += 1
        users = sorted(counts, key=lambda u: (-counts[u], u))
        events = (_logged_interactions(settings) if interactions_from_log else []) or ratings
        return cls(items, vectors, events, users, embedder)

    def item_vector(self, item: CatalogItem, vector: np.ndarray) -> ItemVector:
        return ItemVector(
            item_id=item.item_id,
            model_version=self.embedder.model_version,
            content_hash=content_hash(item_text(item), self.embedder.model_version),
            vector=codecs.vector_bytes(vector),
        )

    def publish(self, settings: Settings, interactions: bool = True) -> None:
        """Catalog, vectors (and the ratings) to their topics: the processor's state."""
        producer = bulk_producer(settings)
        for item, vector in zip(self.items, self.vectors, strict=True):
            produce_event(producer, CATALOG_ITEMS, item)
            produce_event(producer, CATALOG_VECTORS, self.item_vector(item, vector))
        for i, event in enumerate(self.interactions if interactions else ()):
            produce_event(producer, EVENTS_INTERACTIONS, event)
            if i % 5000 == 0:
                producer.poll(0)
        flush(producer)


def _logged_interactions(settings: Settings) -> list[Interaction]:
    """Every valid interaction on events.interactions, in log order per partition."""
    found: list[Interaction] = []
    with TopicReader(settings.kafka_config(), EVENTS_INTERACTIONS, group="scenario") as reader:
        for msgs in reader.read_to_end(timeout_s=120.0):
            found.extend(c.event for c in reader.decode(msgs) if isinstance(c.event, Interaction))
    return found


def _published_vectors(settings: Settings) -> dict[str, np.ndarray]:
    table = read_table(settings.kafka_config(), CATALOG_VECTORS, group="scenario")
    return {
        item_id: codecs.vector_to_numpy(v).astype(np.float32)
        for item_id, v in table.rows.items()
        if isinstance(v, ItemVector)
    }


class ReadPath:
    """Response cache -> `cand:{user}` -> computations on misses; counts everything per second."""

    def __init__(
        self,
        settings: Settings,
        cfg: InvalidationSettings,
        world: World,
        ttl_s: float,
        k: int,
        ttl_jitter: float = 0.0,
    ) -> None:
        self.store = sync_client(settings)
        self.ttl_s = ttl_s
        # Each entry lives ttl * (1 +- jitter): with 0, users first served together (the
        # cold start) keep expiring together every TTL, a herd that echoes through the run.
        self.ttl_jitter = ttl_jitter
        self.rng = np.random.default_rng(7)
        self.k = k
        self.model = TasteModel(cfg)
        self.lock = threading.Lock()  # the load loop and the refresh thread share the model
        for item, vector in zip(world.items, world.vectors, strict=True):
            self.model.items.upsert(item.item_id, vector)
        for e in world.interactions:
            self.model.observe(e.user_id, e.item_id, e.ts.timestamp(), e.kind, e.rating)
        self.model.taste_matrix()
        self.cache: dict[str, tuple[float, list[str]]] = {}
        self.counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.latency: dict[int, list[float]] = defaultdict(list)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[int(time.monotonic())][what] += n

    def add_item(self, item_id: str, vector: np.ndarray) -> None:
        """The new item enters the index the candidate computations search (an index swap)."""
        with self.lock:
            self.model.items.upsert(item_id, vector)

    def compute_candidates(self, user_id: str) -> CandidateList:
        with self.lock:
            taste = self.model.taste(user_id)
            found = [] if taste is None else self.model.items.search(taste[None, :], self.k)[0]
        return CandidateList(
            user_id=user_id,
            model_version="bench",
            items=[Candidate(item_id=i, score=s, sources=["content"]) for i, s in found],
        )

    def store_candidates(self, cand: CandidateList) -> None:
        self.store.set(USER_CANDIDATES.key(user_id=cand.user_id), candidate_codec.encode(cand))

    def seed(self, users: list[str]) -> None:
        pipe = self.store.pipeline(transaction=False)
        for user in users:
            cand = self.compute_candidates(user)
            pipe.set(USER_CANDIDATES.key(user_id=user), candidate_codec.encode(cand))
        pipe.execute()
        self.cache.clear()

    def refresh(self, user_id: str) -> None:
        """Refresh-ahead: recompute and swap in; readers keep the old list meanwhile."""
        self.store_candidates(self.compute_candidates(user_id))
        self.count("candidates")

    def request(self, user_id: str) -> bool:
        """Serve one request; True on a response-cache hit."""
        now = time.monotonic()
        entry = self.cache.get(user_id)
        if entry is not None and entry[0] > now:
            self.count("hit")
            return True
        raw = self.store.get(USER_CANDIDATES.key(user_id=user_id))
        if raw is None:  # deleted: the request path recomputes (the "vector DB" query)
            cand = self.compute_candidates(user_id)
            self.store_candidates(cand)
            self.count("candidates")
            self.count("cand_miss")
        else:
            cand = candidate_codec.decode(raw)
        ranked = sorted(cand.items, key=lambda c: c.score, reverse=True)[:10]  # the ranking
        self.count("rank")
        self.count("miss")
        ttl = self.ttl_s * (1.0 + self.ttl_jitter * self.rng.uniform(-1.0, 1.0))
        self.cache[user_id] = (now + ttl, [c.item_id for c in ranked])
        return False


class RefreshApplier(threading.Thread):
    """Acts on refresh commands as the candidates processor and serving cache would."""

    def __init__(self, settings: Settings, path: ReadPath) -> None:
        super().__init__(daemon=True, name="refresh-applier")
        self.path = path
        self.stop_event = threading.Event()
        self.consumer = Consumer(
            {
                **settings.kafka_config(),
                "group.id": f"bench-applier-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
            }
        )
        # Only the commands issued from now on: start at the current end of each partition.
        ends = end_offsets(self.consumer, CACHE_INVALIDATIONS.name)
        self.consumer.assign(
            [TopicPartition(CACHE_INVALIDATIONS.name, p, o) for p, o in ends.items()]
        )
        self.by_cause: dict[str, dict[str, float]] = defaultdict(dict)  # cause -> user -> first
        self.commands = 0
        self.issued_s: list[float] = []  # when the processor issued each refresh (epoch s)

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                for msg in self.consumer.consume(500, timeout=0.2):
                    if msg.error():
                        continue
                    command = codecs.decode(CACHE_INVALIDATIONS, msg.value())
                    self.commands += 1
                    now = time.monotonic()
                    for cause in command.cause_ids:
                        self.by_cause[cause].setdefault(command.user_id, now)
                    if command.mode == "refresh":
                        self.issued_s.append(command.issued_at.timestamp())
                        self.path.refresh(command.user_id)
                    else:  # broadcast: every cache node drops the user's entry
                        self.path.cache.pop(command.user_id, None)
        finally:
            self.consumer.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)


@dataclass
class Phase:
    name: str
    start: int
    end: int


@dataclass
class ModeResult:
    mode: str
    phases: list[Phase]
    series: list[dict[str, float]]  # per second: t, requests, hit_ratio, computations
    p99_ms: dict[str, float]
    hit_ratio: dict[str, float]
    computations: dict[str, float]
    amplification: dict[str, float]
    affected: int = 0
    reached: int = 0
    reach_s: float | None = None
    reach_p50_s: float | None = None
    promotion_users: int = 0
    commands: int = 0
    # The emitter's smoothness: most refresh commands issued in any 1 s / 3 s window, and
    # what the bound allows there (rate * T + burst).
    max_refreshes: dict[str, int] = field(default_factory=dict)
    worker: dict[str, int] = field(default_factory=dict)  # the processor's counters at the end
    notes: list[str] = field(default_factory=list)


def _zipf_users(users: list[str], n: int, s: float, seed: int) -> list[str]:
    ranks = np.arange(1, len(users) + 1, dtype=float)
    p = ranks**-s
    p /= p.sum()
    rng = np.random.default_rng(seed)
    return [users[i] for i in rng.choice(len(users), size=n, p=p)]


def run_mode(
    settings: Settings,
    world: World,
    mode: str,
    *,
    rate: float,
    ttl_s: float,
    warmup_s: float,
    steady_s: float,
    viral_s: float,
    promotion_s: float,
    zipf_s: float = 1.0,
    template: CatalogItem = VIRAL_TEMPLATE,
    log: Callable[[str], None] = print,
    end_when_reached: bool = False,
    ttl_jitter: float = 0.0,
) -> ModeResult:
    """One mode: start its worker, seed candidates, load, inject, measure; stop the worker.

    With `end_when_reached` (no promotion phase), the viral phase ends early once the
    worker has emitted every refresh and every affected user's candidates hold the item;
    `viral_s` is then its longest."""
    cfg = settings.invalidation.model_copy(update={"mode": mode})
    settings = settings.with_overrides(invalidation={"mode": mode})
    path = ReadPath(settings, cfg, world, ttl_s, cfg.neighbour_rank, ttl_jitter)
    path.seed(world.users_by_activity)
    # The candidates processor announces lists; the invalidation worker reads them back.
    producer = bulk_producer(settings)
    for user in world.users_by_activity:
        produce_event(
            producer,
            CANDIDATES,
            CandidatesUpdated(user_id=user, count=cfg.neighbour_rank, model_version="bench"),
        )
    flush(producer)
    group = f"bench-invalidation-{mode}-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(settings, "invalidation", group).start()
    store = path.store
    deadline = time.monotonic() + 180
    while not store.exists(stats_key(group)):
        if not worker.alive() or time.monotonic() > deadline:
            worker.stop()
            raise RuntimeError(f"the invalidation worker did not start; see {worker.log}")
        time.sleep(0.2)  # polling the worker's first stats write, bounded by the deadline
    applier = RefreshApplier(settings, path)
    applier.start()
    viral = template.model_copy(update={"item_id": f"{template.item_id}-{mode}"})
    viral_vector = world.embedder.embed([item_text(viral)])[0]
    total_s = warmup_s + steady_s + viral_s + promotion_s
    schedule = _zipf_users(world.users_by_activity, int(rate * total_s) + 1, zipf_s, seed=42)
    t0 = time.monotonic()
    sec0 = int(t0)
    phases = [
        Phase("warmup", 0, int(warmup_s)),
        Phase("steady", int(warmup_s), int(warmup_s + steady_s)),
        Phase("viral", int(warmup_s + steady_s), int(warmup_s + steady_s + viral_s)),
        Phase("promotion", int(warmup_s + steady_s + viral_s), int(total_s)),
    ]
    injected_viral = injected_promotion = False
    viral_at = 0.0
    reached: dict[str, float] = {}
    next_check = 0.0
    try:
        for i, user in enumerate(schedule):
            due = t0 + i / rate
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)  # the load's own pacing: one request every 1/rate s
            elapsed = time.monotonic() - t0
            if not injected_viral and elapsed >= warmup_s + steady_s:
                path.add_item(viral.item_id, viral_vector)
                producer.produce(
                    CATALOG_ITEMS.name,
                    key=viral.item_id.encode(),
                    value=codecs.encode(CATALOG_ITEMS, viral),
                )
                produce_event(producer, CATALOG_VECTORS, world.item_vector(viral, viral_vector))
                flush(producer)
                injected_viral, viral_at = True, time.monotonic()
                log(f"  [{mode}] viral item {viral.item_id} injected at t={elapsed:.1f} s")
            promotion_due = promotion_s > 0 and elapsed >= warmup_s + steady_s + viral_s
            if not injected_promotion and promotion_due:
                change = RegistryChange(
                    kind="ranker", name="ranker", version=f"bench-{mode}", action="promote"
                )
                produce_event(producer, REGISTRY_CHANGES, change)
                flush(producer)
                injected_promotion = True
                log(f"  [{mode}] model promotion at t={elapsed:.1f} s")
            path.request(user)
            done = time.monotonic()
            path.latency[int(done)].append((done - due) * 1000.0)
            if injected_viral and done >= next_check:
                next_check = done + 0.25
                affected = applier.by_cause.get(viral.item_id, {})
                _check_reached(store, affected, viral.item_id, reached)
                if (
                    end_when_reached
                    and promotion_s <= 0
                    and _all_reached(store, group, affected, reached)
                ):
                    phases[2].end = max(phases[2].start + 1, int(done - t0))
                    phases[3].start = phases[3].end = phases[2].end
                    log(f"  [{mode}] every affected user has the item at t={done - t0:.1f} s")
                    break
        _check_reached(store, applier.by_cause.get(viral.item_id, {}), viral.item_id, reached)
    finally:
        applier.stop()
        worker_stats = {k.decode(): int(v) for k, v in store.hgetall(stats_key(group)).items()}
        worker.stop()
    log(f"  [{mode}] worker counters: {worker_stats}")
    result = _summarise(
        mode, path, phases, sec0, applier, viral.item_id, viral_at, reached, world, cfg
    )
    result.worker = worker_stats
    return result


def _all_reached(
    store: redis.Redis, group: str, affected: dict[str, float], reached: dict[str, float]
) -> bool:
    """The worker made its pass and emitted everything, and each command's user has it."""
    raw = store.hmget(stats_key(group), ["passes", "emitted", "idle"])
    passes, emitted, idle = (int(v or 0) for v in raw)
    return passes >= 1 and idle == 1 and len(affected) >= emitted and len(reached) >= emitted


def _check_reached(
    store: redis.Redis, affected: dict[str, float], item_id: str, reached: dict[str, float]
) -> None:
    waiting = [u for u in affected if u not in reached]
    if not waiting:
        return
    raws = store.mget([USER_CANDIDATES.key(user_id=u) for u in waiting])
    now = time.monotonic()
    for user, raw in zip(waiting, raws, strict=True):
        if raw is not None and item_id in candidate_codec.read_ranked(raw).item_ids:
            reached[user] = now


def _summarise(
    mode: str,
    path: ReadPath,
    phases: list[Phase],
    sec0: int,
    applier: RefreshApplier,
    viral_id: str,
    viral_at: float,
    reached: dict[str, float],
    world: World,
    cfg: InvalidationSettings,
) -> ModeResult:
    series = []
    seconds = sorted(s for s in path.counts if s >= sec0)
    for s in seconds:
        c = path.counts[s]
        requests = c["hit"] + c["miss"]
        series.append(
            {
                "t": s - sec0,
                "requests": requests,
                "hit_ratio": c["hit"] / requests if requests else float("nan"),
                "computations": c["rank"] + c["candidates"],
                "cand_miss": c["cand_miss"],
            }
        )
    by_t = {row["t"]: row for row in series}

    def rows(phase: Phase) -> list[dict[str, float]]:
        return [by_t[t] for t in range(phase.start, phase.end) if t in by_t]

    def lat(phase: Phase) -> list[float]:
        return [x for t in range(phase.start, phase.end) for x in path.latency.get(sec0 + t, [])]

    # Computations per second as a moving mean over `SMOOTH_S` seconds: one-second counts of
    # ~100 Poisson-like events vary by +-10 % on their own.
    comps = {r["t"]: r["computations"] for r in series}
    for r in series:
        window = [comps.get(r["t"] - d, r["computations"]) for d in range(SMOOTH_S)]
        r["computations_smooth"] = float(np.mean(window))
    steady = next(p for p in phases if p.name == "steady")
    steady_comp = float(np.mean([r["computations"] for r in rows(steady)]))
    result = ModeResult(
        mode=mode,
        phases=phases,
        series=series,
        p99_ms={},
        hit_ratio={},
        computations={},
        amplification={},
        commands=applier.commands,
    )
    for phase in phases[1:]:
        rs = rows(phase)
        if not rs:
            continue
        hits = sum(r["hit_ratio"] * r["requests"] for r in rs)
        reqs = sum(r["requests"] for r in rs)
        result.hit_ratio[phase.name] = hits / reqs if reqs else float("nan")
        result.hit_ratio[f"{phase.name}_min"] = min(r["hit_ratio"] for r in rs)
        result.computations[f"{phase.name}_mean"] = float(np.mean([r["computations"] for r in rs]))
        result.computations[f"{phase.name}_peak"] = float(max(r["computations"] for r in rs))
        result.computations[f"{phase.name}_peak_smooth"] = float(
            max(r["computations_smooth"] for r in rs)
        )
        peak = result.computations[f"{phase.name}_peak_smooth"]
        result.amplification[phase.name] = peak / steady_comp if steady_comp else float("nan")
        result.amplification[f"{phase.name}_1s"] = (
            result.computations[f"{phase.name}_peak"] / steady_comp if steady_comp else float("nan")
        )
        latencies = lat(phase)
        result.p99_ms[phase.name] = float(np.percentile(latencies, 99)) if latencies else 0.0
    affected = applier.by_cause.get(viral_id, {})
    result.affected = len(affected)
    result.reached = len(reached)
    if reached:
        waits = sorted(t - viral_at for t in reached.values())
        result.reach_p50_s = float(np.median(waits))
        if len(reached) == len(affected):
            result.reach_s = waits[-1]
    result.promotion_users = len(world.users_by_activity)
    viral = next(p for p in phases if p.name == "viral")
    if affected and steady_comp:
        # The viral phase split where the item's last command arrived: the seconds that carry
        # refreshes, and the rest, which shows the same statistic's noise with none.
        cut = min(int(max(affected.values())) - sec0 + 1, viral.end)
        for part, span in (
            ("refreshing", (viral.start, cut)),
            ("after", (cut + SMOOTH_S, viral.end)),
        ):
            rs = [by_t[t] for t in range(*span) if t in by_t]
            if len(rs) >= SMOOTH_S:
                c = result.computations
                c[f"viral_{part}_mean"] = float(np.mean([r["computations"] for r in rs]))
                c[f"viral_{part}_peak_smooth"] = float(max(r["computations_smooth"] for r in rs))
                for stat in ("mean", "peak_smooth"):
                    result.amplification[f"viral_{part}_{stat}"] = (
                        c[f"viral_{part}_{stat}"] / steady_comp
                    )
    for window in (1, SMOOTH_S):
        result.max_refreshes[f"{window}s"] = max_in_any_window(applier.issued_s, window)
        result.max_refreshes[f"{window}s_bound"] = max_commands(cfg, window)
    return result
