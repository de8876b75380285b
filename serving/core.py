"""The one core both channels (HTTP and the request topic) answer through.

Responsibilities, per request (DESIGN.md's request path):
1. a cached or in-flight answer for the same user/k/session is reused (`CoalescingCache`
   with XFetch early refresh, `serving.xfetch`);
2. admission (`AdmissionController`): bounded in flight, bounded rooms per priority class;
3. user features, candidates and the user's 50-item history read in one round trip
   (`RequestReads`, ADR 0056) or in parallel, each under its breaker and a deadline derived
   from the request's budget (a breaker counts the dependency's own failures, not the
   worker's overload: `_dependency_at_fault`);
4. ranking through the micro-batcher, under what is left of the budget (users with fewer
   than `cold_start_interactions` keep their retrieval order, ADR 0046);
5. re-ranking (removed, seen, diversity);
6. the answer with its level and model version, its items checked against removals (in the
   explanations' round trip when it can); the impression is published without waiting.

Every dependency failure lands in the fallback chain (`serving.fallback`); only admission
refuses a valid request (`Overloaded`). Background tasks keep the trending list and the removed
items in memory, so the POPULAR level needs nothing on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np

from streamrec.infra.settings import ServingSettings
from streamrec.models.features import UserFeatures
from streamrec.serving.admission import AdmissionController
from streamrec.serving.batcher import MicroBatcher
from streamrec.serving.breakers import CircuitBreaker, State
from streamrec.serving.deadlines import Deadline, within
from streamrec.serving.errors import BreakerOpen, DependencyError, DependencyTimeout
from streamrec.serving.fallback import PopularRanking, simple_scores, worst
from streamrec.serving.impressions import ImpressionPublisher
from streamrec.serving.item_catalog import ItemCatalog
from streamrec.serving.metrics import ServingMetrics
from streamrec.serving.ports import (
    Candidates,
    CandidateStore,
    FeatureRead,
    HistoryStore,
    PopularStore,
    RankInput,
    RequestReads,
    UserFeatureStore,
)
from streamrec.serving.rerank import rerank_arrays
from streamrec.serving.schemas import RecQuery
from streamrec.serving.xfetch import XFetchCache
from streamrec.streams import metrics as shared_metrics
from streamrec.topics import RecommendedItem, RecResponse
from streamrec.topics.recs_responses import Level

log = logging.getLogger(__name__)
T = TypeVar("T")

DEPENDENCIES = ("features", "history", "candidates", "model", "popular")
# (user id, the final items, the user's recent items, seconds left) -> (items with
# explanations, which of them are removed now, or None when it did not check)
Explainer = Callable[
    [str, list[RecommendedItem], list[str], float],
    Awaitable[tuple[list[RecommendedItem], set[str] | None]],
]
RankFn = Callable[[list[RankInput]], list[tuple[np.ndarray, str]]]
# What the request reads before ranking: features, candidates (or why not), the history.
UserReads = tuple[
    FeatureRead | DependencyError | None, Candidates | DependencyError | None, list[str]
]


def _cacheable(answer: RecResponse) -> bool:
    # Only full answers are kept: a degraded one must not outlive the dependency's recovery.
    return answer.level == "FULL"


class Recommender:
    def __init__(
        self,
        cfg: ServingSettings,
        features: UserFeatureStore,
        candidates: CandidateStore,
        popular: PopularStore,
        rank: RankFn,
        catalog: ItemCatalog,
        metrics: ServingMetrics | None = None,
        impressions: ImpressionPublisher | None = None,
        explain: Explainer | None = None,
        loop_lag: Callable[[], float] = lambda: 0.0,
        history: HistoryStore | None = None,
        reads: RequestReads | None = None,
    ) -> None:
        self.cfg = cfg
        self.reads = reads  # the three reads in one round trip (ADR 0056); None: one each
        self.loop_lag = loop_lag
        self.history = history
        self.features = features
        self.candidates = candidates
        self.popular_store = popular
        self.catalog = catalog
        self.metrics = metrics or ServingMetrics()
        self.impressions = impressions
        self.explain = explain
        m = self.metrics
        self.breakers = {
            name: CircuitBreaker(name, cfg.breaker_failures, cfg.breaker_reset_s, self._breaker)
            for name in DEPENDENCIES
        }
        for name in DEPENDENCIES:
            m.breaker_state.labels(name).set(0)
        self.admission = AdmissionController(
            cfg.max_in_flight,
            {
                "interactive": cfg.queue_interactive,
                "prefetch": cfg.queue_prefetch,
                "background": cfg.queue_background,
            },
            cfg.retry_after_s,
            on_shed=lambda p, reason: m.shed.labels(p, reason).inc(),
        )
        # XFetch (issue 8): a hot user's answer is recomputed once, early, in the background.
        self.cache: XFetchCache[RecResponse] = XFetchCache(cfg.cache_ttl_s, cfg.cache_max_entries)
        self.batcher: MicroBatcher[RankInput, tuple[np.ndarray, str]] = MicroBatcher(
            rank,
            cfg.batch_max_requests,
            cfg.batch_max_wait_ms / 1000.0,
            on_batch=self._on_batch,
        )
        self.popular: list[tuple[str, float]] = []
        self.popular_ranking = PopularRanking([], catalog.get)
        self.removed: set[str] = set()
        self.popular_loaded = False
        self.last_features: OrderedDict[str, UserFeatures] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.batcher.start()
        with contextlib.suppress(DependencyError):
            await self.refresh_popular()
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="popular-refresh"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.batcher.stop()

    async def refresh_popular(self) -> None:
        """The trending list and removed items into memory (kept as they were on failure)."""
        breaker = self.breakers["popular"]
        n = self.cfg.popular_size
        popular = await breaker.call(
            lambda: within("popular", self.popular_store.popular(self.cfg.popular_window, n), 1.0)
        )
        removed = await breaker.call(lambda: within("popular", self.popular_store.removed(), 1.0))
        self.popular, self.removed = popular, removed
        self.popular_loaded = True
        self.catalog.set_popularity(dict(popular))
        self.popular_ranking = PopularRanking(popular, self.catalog.get)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.refresh_s)  # a periodic refresh, not a race
            try:
                await self.refresh_popular()
            except DependencyError as exc:
                self.metrics.dependency_errors.labels("popular", type(exc).__name__).inc()

    # --- the request path ------------------------------------------------------------------

    async def recommend(self, q: RecQuery) -> RecResponse:
        """An answer at some level, or `Overloaded` from admission."""
        started = time.monotonic()
        key = (q.user_id, q.k, q.recent_item_ids)
        deadline = Deadline(q.budget_ms, start=started)
        if self.cache.get(key) is not None:
            # A hit skips admission (it costs nothing); XFetch may refresh it in the background.
            cached, _ = await self.cache.get_or_compute(
                key, lambda: self._compute(q, deadline), cacheable=_cacheable
            )
            self.metrics.cache.labels("hit").inc()
            shared_metrics.CACHE_REQUESTS.labels("responses", "hit").inc()
            return self._finish(await self._without_removed(cached), q, started)
        async with self.admission.slot(q.priority, deadline.budget_s * self.cfg.max_queue_share):
            self.metrics.in_flight.set(self.admission.in_flight)
            answer, source = await self.cache.get_or_compute(
                key, lambda: self._compute(q, deadline), cacheable=_cacheable
            )
        self.metrics.cache.labels(source).inc()
        shared_metrics.CACHE_REQUESTS.labels(
            "responses", "miss" if source == "computed" else "hit"
        ).inc()
        if source == "hit":  # a computed (or coalesced) answer was checked as it was made
            answer = await self._without_removed(answer)
        return self._finish(answer, q, started)

    async def _without_removed(
        self, answer: RecResponse, gone: set[str] | None = None
    ) -> RecResponse:
        """Drop items removed since the answer was computed (or cached): a removal is honoured
        at answer time, not at the next refresh of the in-memory set. One SMISMEMBER (~20 us),
        unless `gone` already says which are removed (the explanations' round trip asked);
        if Redis does not answer in time, the in-memory sets decide."""
        ids = [i.item_id for i in answer.items]
        if not ids:
            return answer
        if gone is None:
            gone = await self._removed_among(ids)
        if not gone:
            return answer
        self.removed |= gone
        kept = [i for i in answer.items if i.item_id not in gone]
        return answer.model_copy(update={"items": kept})

    async def _removed_among(self, ids: list[str]) -> set[str]:
        try:
            gone = await self.breakers["popular"].call(
                lambda: within(
                    "popular",
                    self.popular_store.removed_among(ids),
                    self.cfg.removed_check_ms / 1000.0,
                )
            )
        except DependencyError:
            gone = {i for i in ids if i in self.removed or i in self.catalog.removed}
        return gone

    def popular_answer(self, q: RecQuery) -> RecResponse:
        """The POPULAR answer from memory alone (no dependency call): for shed topic requests."""
        started = time.monotonic()
        exclude = self.removed | self.catalog.removed | set(q.recent_item_ids)
        ranking = self._popular_ranking()
        top = rerank_arrays(
            ranking.item_ids,
            ranking.scores_for(q.recent_item_ids),
            q.k,
            exclude,
            self.catalog.get,
            self.cfg.max_genre_share,
        )
        answer = RecResponse(
            correlation_id=q.request_id,
            user_id=q.user_id,
            items=[RecommendedItem(item_id=i, score=float(s)) for i, s in top],
            level="POPULAR",
            latency_ms=0.0,
        )
        return self._finish(answer, q, started)

    def _finish(self, answer: RecResponse, q: RecQuery, started: float) -> RecResponse:
        latency_ms = (time.monotonic() - started) * 1000.0
        if answer.correlation_id != q.request_id or answer.latency_ms != latency_ms:
            answer = answer.model_copy(
                update={"correlation_id": q.request_id, "latency_ms": latency_ms}
            )
        self.metrics.requests.labels(q.channel, answer.level).inc()
        self.metrics.latency.labels(q.channel).observe(latency_ms / 1000.0)
        shared_metrics.DEGRADATION.labels(answer.level).inc()
        shared_metrics.REQUEST_SECONDS.labels(q.channel).observe(latency_ms / 1000.0)
        if self.impressions is not None:
            self.impressions.publish(answer, q.channel)
        return answer

    async def _compute(self, q: RecQuery, deadline: Deadline) -> RecResponse:
        share, cap = self.cfg.dependency_share, self.cfg.dependency_cap_ms
        timeout = deadline.for_dependency(share, cap, self.cfg.rank_reserve_ms)
        if self.reads is not None:
            feats, cands, hist = await self._read_merged(q.user_id, timeout)
        else:
            feats, cands, hist = await asyncio.gather(
                self._guarded("features", lambda: self.features.read(q.user_id), timeout),
                self._guarded("candidates", lambda: self.candidates.read(q.user_id), timeout),
                self._history(q.user_id, timeout),
            )
        user, level = self._user_features(q, feats, hist)
        exclude = self.removed | self.catalog.removed | set(user.recent_items)
        model_version: str | None = None
        if not isinstance(cands, Candidates) or not cands.item_ids:
            level = "POPULAR"
            ranking = self._popular_ranking()
            ids, scores = ranking.item_ids, ranking.scores_for(user.recent_items)
        else:
            cand_list = cands.head(self.cfg.max_candidates)
            ids = cand_list.item_ids
            known = isinstance(feats, FeatureRead)
            scores, model_version = await self._score(user, known, cand_list, deadline)
            if model_version is None:
                level = worst(level, "SIMPLE_RANKING")
        top = rerank_arrays(ids, scores, q.k, exclude, self.catalog.get, self.cfg.max_genre_share)
        if len(top) < q.k and level != "POPULAR":
            # Too few candidates survived the rules: top up from the trending list, in its
            # order, below every ranked item.
            have = {i for i, _ in top} | exclude
            floor = min((s for _, s in top), default=0.0)
            extra = [i for i, _ in self._popular_list()]
            extra_scores = floor - 1.0 - np.arange(len(extra), dtype=np.float64)
            top += rerank_arrays(extra, extra_scores, q.k - len(top), have, self.catalog.get, 1.0)
        # Trusted values built here (ids from the stores, float scores): `model_construct`
        # skips validation, ~10 us an item on the hot path (ADR 0055).
        item = RecommendedItem.model_construct
        items = [item(item_id=i, score=float(s)) for i, s in top]
        gone: set[str] | None = None
        if self.explain is not None:
            try:
                items, gone = await self.explain(
                    q.user_id, items, user.recent_items, deadline.remaining_s()
                )
            except Exception:  # explanations are decoration: never fail an answer for them
                log.exception("explanations failed")
        answer = RecResponse.model_construct(
            correlation_id=q.request_id,
            user_id=q.user_id,
            items=items,
            level=level,
            model_version=model_version,
            latency_ms=deadline.elapsed_ms(),
            # Given, not defaulted: `model_construct` inspects a default factory's signature
            # on every call (pydantic 2.14).
            served_at=datetime.now(UTC),
        )
        # Checked once as it is made, for its caller and every caller coalesced on it; a
        # cached copy is checked again on each hit (`recommend`).
        return await self._without_removed(answer, gone)

    async def _guarded(
        self, name: str, call: Callable[[], Awaitable[T]], timeout_s: float
    ) -> T | DependencyError:
        if timeout_s <= 0:
            # The request spent its budget before this call: not the dependency's fault, so
            # the breaker does not count it.
            return DependencyTimeout(name, "no budget left")
        try:
            return await self.breakers[name].call(
                lambda: within(name, call(), timeout_s),
                blame=lambda exc: self._dependency_at_fault(exc, timeout_s),
            )
        except DependencyError as exc:
            self.metrics.dependency_errors.labels(name, type(exc).__name__).inc()
            return exc

    async def _read_merged(self, user_id: str, timeout_s: float) -> UserReads:
        """Features, candidates and history in one round trip (`RequestReads`), with what
        `_guarded` does for each read: a part whose breaker is open is not asked for, all
        parts share the deadline the separate reads each had, and each breaker is settled by
        its own part's outcome (a part that failed alone counts against its dependency
        alone; a failed or late round trip counts against every part asked for)."""
        names = ["features", "candidates"]
        if self.history is not None and self.cfg.history_len > 0:
            names.append("history")
        if timeout_s <= 0:  # the request spent its budget: not the dependencies' fault
            return (
                DependencyTimeout("features", "no budget left"),
                DependencyTimeout("candidates", "no budget left"),
                [],
            )
        got: dict[str, object] = {}
        asked = []
        for name in names:
            if self.breakers[name].allow():
                asked.append(name)
            else:
                got[name] = BreakerOpen(name, "circuit open")
        if asked:
            assert self.reads is not None
            try:
                async with asyncio.timeout(timeout_s):
                    read = await self.reads.read(user_id, tuple(asked), self.cfg.history_len)
            except TimeoutError:
                late = f"no answer within {timeout_s * 1000:.1f} ms"
                read = {n: DependencyTimeout(n, late) for n in asked}
            except DependencyError as exc:
                read = {n: DependencyError(n, exc.reason) for n in asked}
            except BaseException:
                for name in asked:
                    self.breakers[name].neutral()  # cancelled or a bug: neither health nor harm
                raise
            for name in asked:
                value = read[name]
                error = value if isinstance(value, DependencyError) else None
                self.breakers[name].settle(
                    error, blame=lambda exc: self._dependency_at_fault(exc, timeout_s)
                )
                got[name] = value
        for name, value in got.items():
            if isinstance(value, DependencyError):
                self.metrics.dependency_errors.labels(name, type(value).__name__).inc()
        hist = got.get("history", [])
        return (
            got["features"],  # type: ignore[return-value]
            got["candidates"],
            hist if isinstance(hist, list) else [],
        )

    def _dependency_at_fault(self, exc: DependencyError, timeout_s: float) -> bool:
        """A timeout while this worker's own event loop ran late (lag past a quarter of the
        timeout), or while waiting for the ranker behind other requests, is the worker's
        overload, not the dependency's failure: the breaker does not count it. Otherwise an
        overloaded worker opened its model and feature breakers and served SIMPLE_RANKING to
        everyone for `breaker_reset_s` after every load spike."""
        if not isinstance(exc, DependencyTimeout):
            return True
        if self.loop_lag() > timeout_s / 4:
            return False
        # The model's requests wait in the batcher's queue first: a timeout there is the
        # worker's overload (answered at SIMPLE_RANKING); only a slow or hung model itself
        # opens its breaker, or every request would fall back while it could rank most.
        # A request that reached the model late has a short timeout left: judge the model by
        # half the request's budget at least.
        limit_s = max(timeout_s, self.cfg.request_budget_ms / 2000.0)
        return exc.dependency != "model" or self.batcher.slow(limit_s)

    async def _history(self, user_id: str, timeout_s: float) -> list[str]:
        """The user's last `history_len` items (the ranker's training history); [] when not
        configured, not stored, or the store fails (Feast's last 10 are used then)."""
        if self.history is None or self.cfg.history_len <= 0:
            return []
        n = self.cfg.history_len
        read = await self._guarded("history", lambda: self.history.recent(user_id, n), timeout_s)
        return read if isinstance(read, list) else []

    def _user_features(
        self, q: RecQuery, read: FeatureRead | DependencyError | None, history: list[str]
    ) -> tuple[UserFeatures, Level]:
        """The features to rank with and the level they allow; a longer stored history
        replaces Feast's last 10 items, and the session's recent items are appended (newest
        last) either way."""
        level: Level = "FULL"
        if isinstance(read, FeatureRead):
            user = read.features
            stale_s = self.cfg.features_stale_s
            if stale_s > 0 and (
                read.updated_at is None
                or (datetime.now(UTC) - read.updated_at).total_seconds() > stale_s
            ):
                level = "STALE_FEATURES"
            self._remember(user)
        else:
            level = "STALE_FEATURES"  # missing (None) or the store failed: last seen, or none
            user = self.last_features.get(q.user_id) or UserFeatures(user_id=q.user_id)
        if len(history) > len(user.recent_items):
            # Feast's items newer than the stored history (its writer may lag) stay at the end.
            tail = set(history[-len(user.recent_items) :]) if user.recent_items else set()
            newer = [i for i in user.recent_items if i not in tail]
            merged = (history + newer)[-self.cfg.history_len :]
            user = user.model_copy(update={"recent_items": merged})
        if q.recent_item_ids:
            recent = [i for i in user.recent_items if i not in q.recent_item_ids]
            user = user.model_copy(update={"recent_items": recent + list(q.recent_item_ids)})
        return user, level

    def _remember(self, user: UserFeatures) -> None:
        self.last_features[user.user_id] = user
        self.last_features.move_to_end(user.user_id)
        if len(self.last_features) > self.cfg.cache_max_entries:
            self.last_features.popitem(last=False)

    async def _score(
        self, user: UserFeatures, known: bool, cands: Candidates, deadline: Deadline
    ) -> tuple[np.ndarray, str | None]:
        """The candidates' scores and the version of the model that gave them; None: the
        model failed and the scores are SIMPLE_RANKING's."""
        if known and user.n_interactions < self.cfg.cold_start_interactions:
            # A known user with too little history: the retrieval score (fused for session
            # users, candidates.builder) ranks them better than the ranker, which leans on
            # history they do not have (issue 5's cold-start table; ADR 0046).
            return np.asarray(cands.scores, dtype=np.float64), cands.model_version or "retrieval"
        scores, version = await self._rank(user, cands, deadline)
        if scores is None:
            return simple_scores(cands, self.catalog.popularity), None
        return scores, version

    async def _rank(
        self, user: UserFeatures, cands: Candidates, deadline: Deadline
    ) -> tuple[np.ndarray | None, str | None]:
        """Model scores, or (None, None) when the model is unavailable or over budget."""
        ids = cands.item_ids
        timeout = deadline.remaining_s() - self.cfg.rank_reserve_ms / 1000.0
        result = await self._guarded(
            "model", lambda: self.batcher.submit(RankInput(user, ids)), timeout
        )
        if isinstance(result, DependencyError):
            return None, None
        scores, version = result
        return np.asarray(scores, dtype=np.float64), version

    def _popular_ranking(self) -> PopularRanking:
        if self.popular:
            return self.popular_ranking
        return PopularRanking(self._popular_list(), self.catalog.get)

    def _popular_list(self) -> list[tuple[str, float]]:
        if self.popular:
            return self.popular
        # Never loaded (Redis down since start): the catalog by popularity is the last resort.
        items = sorted(self.catalog.items.values(), key=lambda i: i.popularity, reverse=True)
        return [(i.item_id, i.popularity) for i in items[: self.cfg.popular_size]]

    # --- metrics hooks ---------------------------------------------------------------------

    def _breaker(self, name: str, state: State) -> None:
        self.metrics.breaker_state.labels(name).set(int(state))
        shared_metrics.BREAKER_STATE.labels("serving", name).set(int(state))
        log.warning("breaker %s is now %s", name, state.name)

    def _on_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.batch_seconds.observe(seconds)


__all__ = ["DependencyTimeout", "Recommender"]
