"""The serving worker's composition root: builds every collaborator from the settings.

Responsibilities: open Redis, Feast and the model (in `start`, which the HTTP app's lifespan
and the topic-only runner both call), start the catalog follower, the popular refresher and
the micro-batcher, and close all of it in `stop`; `readiness` says what is missing (a ranker
and the item snapshot must be loaded). Tests pass other stores (in-memory doubles) through
the keyword arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Sequence
from typing import Any

from streamrec.infra.settings import Settings
from streamrec.serving.core import Recommender
from streamrec.serving.exploration import Explorer, explore_variants
from streamrec.serving.item_catalog import CatalogFollower, ItemCatalog
from streamrec.serving.loop_lag import LoopLag
from streamrec.serving.metrics import ServingMetrics
from streamrec.serving.model_manager import ModelManager
from streamrec.serving.ports import CandidateStore, PopularStore, UserFeatureStore
from streamrec.topics import RecommendedItem
from streamrec.topics.stores import REMOVED_ITEMS

log = logging.getLogger(__name__)


class Explainer:
    """The explanations (cached LLM text or a template) attached to the final items,
    under what is left of the budget and never more than `cap_s`."""

    def __init__(
        self,
        client: Any,
        catalog: ItemCatalog,
        popular: Any,
        cap_s: float = 0.02,
        check_removed: bool = False,
    ):
        from streamrec.serving.explanations import BATCH_LUA, CHECKED_LUA

        self.client = client
        self.catalog = catalog
        self.popular = popular  # () -> the trending ids held in memory
        self.cap_s = cap_s
        # check_removed: the answer's removal check rides in the same round trip (ADR 0056)
        self.script = client.register_script(CHECKED_LUA) if check_removed else None
        self.batch_script = client.register_script(BATCH_LUA)
        self.check_removed = check_removed

    def _watched(self, recent: list[str]) -> list[Any]:
        from streamrec.serving.explanations import WatchedItem

        watched = []
        for item_id in reversed(recent[-5:]):  # most recent first
            info = self.catalog.get(item_id)
            if info is not None:
                watched.append(WatchedItem(item_id, info.title, tuple(info.genres)))
        return watched

    async def explain_many(
        self, requests: Sequence[tuple[str, list[str], list[str]]], lefts_s: Sequence[float]
    ) -> tuple[list[list[str]], set[str] | None]:
        """A batch's explanations (per (user, final item ids, recent items), one text per
        item) and, when it checks them, which of all its items are removed now: ONE round
        trip for the batch, within the cap and the least time any member still has."""
        from streamrec.serving.explanations import explain_batch

        live = [left for left in lefts_s if left > 0]
        timeout_s = max(0.001, min(self.cap_s, min(live, default=0.0)))
        return await explain_batch(
            [(user_id, ids, self._watched(recent)) for user_id, ids, recent in requests],
            self.catalog.explainable_genres,
            self.popular(),
            script=self.batch_script,
            removed_key=REMOVED_ITEMS.key(),
            check_removed=self.check_removed,
            timeout_s=timeout_s,
        )

    async def __call__(
        self, user_id: str, items: list[RecommendedItem], recent: list[str], left_s: float
    ) -> tuple[list[RecommendedItem], set[str] | None]:
        """The items with explanations, and which of them are removed now (None: not
        checked here; the core checks them itself)."""
        from streamrec.serving.explanations import (
            ItemFacts,
            WatchedItem,
            explain_and_check,
            explain_items,
        )

        watched = []
        for item_id in reversed(recent[-5:]):  # most recent first
            info = self.catalog.get(item_id)
            if info is not None:
                watched.append(WatchedItem(item_id, info.title, tuple(info.genres)))
        trending = self.popular()
        facts = {}
        for it in items:
            info = self.catalog.get(it.item_id)
            genres = tuple(info.genres) if info is not None else ()
            facts[it.item_id] = ItemFacts(genres=genres, popular=it.item_id in trending)
        ids = [it.item_id for it in items]
        timeout_s = max(0.001, min(self.cap_s, left_s))
        gone: set[str] | None = None
        if self.script is not None:
            texts, gone = await explain_and_check(
                self.script,
                REMOVED_ITEMS.key(),
                user_id,
                ids,
                recent=watched,
                facts=facts,
                timeout_s=timeout_s,
            )
        else:
            texts = await explain_items(
                self.client, user_id, ids, recent=watched, facts=facts, timeout_s=timeout_s
            )
        # The items are the core's own (already checked): one construction each, no copy.
        make = RecommendedItem.model_construct
        explained = [
            make(item_id=it.item_id, score=it.score, explanation=texts[it.item_id].text)
            if it.item_id in texts
            else it
            for it in items
        ]
        return explained, gone


class _Trending:
    """The top 100 trending ids as a set, rebuilt only when the refresher replaces the list
    (it was rebuilt for every answer)."""

    def __init__(self, recommender: Recommender) -> None:
        self.recommender = recommender
        self.of: list[tuple[str, float]] | None = None
        self.ids: set[str] = set()

    def __call__(self) -> set[str]:
        popular = self.recommender.popular
        if popular is not self.of:
            self.ids, self.of = {i for i, _ in popular[:100]}, popular
        return self.ids


def set_ranker_threads(settings: Settings) -> None:
    """For a serving process (not a test's thread): the ranker's torch intra-op threads get
    this process's share of the cores minus the one its event loop needs. With both of 2 cores,
    torch's threads and the request path fought (ranking 3x slower per batch, the model's
    deadline missed and its breaker open at 150 req/s); with one, every answer was FULL at
    that rate (ADR 0045). The cores are those the process may run on, not the machine's: a
    container pinned to one core of a large node gets one thread, not one per node core.
    `serving.ranker_threads` sets the count instead (a container that is not pinned)."""
    import torch

    cfg = settings.serving
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cfg.ranker_threads or max(1, cores // cfg.workers - 1))


def explorer_for(settings: Settings) -> Explorer | None:
    """The exploration of `serving.explore_slots` for the users of `explore_variants`
    (their variant: the experiment's stable assignment, as on their impressions); None when
    off."""
    cfg = settings.serving
    if cfg.explore_slots <= 0:
        return None
    from streamrec.analytics.experiments import variant_for
    from streamrec.errors import ConfigError

    def variant_of(user_id: str) -> str:
        try:
            return variant_for(settings, user_id)
        except ConfigError:  # no variants configured: the impressions say "control" too
            return "control"

    return Explorer(cfg.explore_slots, explore_variants(cfg.explore_variants), variant_of)


class ServingWorker:
    def __init__(
        self,
        settings: Settings,
        features: UserFeatureStore | None = None,
        candidates: CandidateStore | None = None,
        popular: PopularStore | None = None,
        publish_impressions: bool = True,
    ) -> None:
        self.settings = settings
        self.metrics = ServingMetrics()
        self._given = (features, candidates, popular)
        self.publish_impressions = publish_impressions
        self.catalog = ItemCatalog()
        self.follower = CatalogFollower(settings, self.catalog)
        self.models = ModelManager(settings, self.metrics)
        self.lag = LoopLag(observe=self.metrics.loop_lag.observe)
        self.recommender: Recommender | None = None
        self._closers: list[Any] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> Recommender:
        from streamrec.serving.impressions import ImpressionPublisher
        from streamrec.serving.redis_stores import (
            RedisCandidates,
            RedisHistory,
            RedisPopular,
            RedisRequestReads,
            connect,
        )

        s = self.settings
        self.loop = asyncio.get_running_loop()
        self.lag.start()
        features, candidates, popular = self._given
        client = connect(s, s.redis.socket_timeout_s)
        self._closers.append(client.aclose)
        # The three per-request reads in one round trip, when all three are this Redis's.
        merged = s.serving.merged_reads and features is None and candidates is None
        candidates = candidates or RedisCandidates(client)
        popular_is_redis = popular is None  # the removed set is this client's Redis too
        popular = popular or RedisPopular(client)
        reads = None
        if features is None:
            from streamrec.serving.feature_store import FeastUserFeatures

            features = FeastUserFeatures(s, client)  # on the worker's Redis client
            if merged:
                reads = RedisRequestReads(client, features)
        # The first read opens Feast's registry (~0.2 s): pay for it here, not in a request.
        with contextlib.suppress(Exception):
            await features.read("__warmup__")
        impressions = None
        if self.publish_impressions:
            impressions = ImpressionPublisher(s, self.metrics)
            impressions.variant_override = self.models.canary_variant
            self._closers.append(impressions.close)
        self.follower.start()
        await self.models.start()
        self.recommender = Recommender(
            s.serving,
            features,
            candidates,
            popular,
            self.models.score_batch,
            self.catalog,
            self.metrics,
            impressions,
            loop_lag=self.lag.now,
            history=RedisHistory(client),
            reads=reads,
            explorer=explorer_for(s),
        )
        if s.serving.explain:
            self.recommender.explain = Explainer(
                client,
                self.catalog,
                _Trending(self.recommender),
                check_removed=s.serving.merged_reads and popular_is_redis,
            )
            if s.serving.explain_llm_inline:  # comparison runs only: the LLM on the path
                from streamrec.serving.inline_llm import InlineLLMExplainer

                inline = InlineLLMExplainer(self.recommender.explain, self.catalog, s.llm)
                self.recommender.explain = inline
                self._closers.append(inline.aclose)
        await self.recommender.start()
        # Everything loaded so far (torch, Feast's registry, pandas, the model) lives as long
        # as the process: move it out of the collector's generations. Otherwise every full
        # collection walks its ~300k+ objects, a 100-250 ms pause that lands on whichever
        # request allocates next (it was the p99 of the serving benchmark).
        gc.collect()
        gc.freeze()
        return self.recommender

    async def stop(self) -> None:
        if self.recommender is not None:
            await self.recommender.stop()
        await self.models.stop()
        await self.lag.stop()
        await asyncio.to_thread(self.follower.stop)
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                result = close()
                if asyncio.iscoroutine(result):
                    await result

    def readiness(self) -> dict[str, bool]:
        return {
            "model": self.models.current is not None,
            "items": self.follower.loaded.is_set(),
            "popular": self.recommender is not None and self.recommender.popular_loaded,
        }
