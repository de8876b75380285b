"""The ranker the worker serves with: initial load, hot swap on promotion, the shadow model.

Responsibilities:
- load the promoted ranker at start; on a promotion (a `registry.changes` message, or the
  registry's PROMOTED pointer seen changed by a poll, whichever comes first) load the new
  version BESIDE the old one on a thread, then swap one reference: batches already running
  finish on the old model, the next batch uses the new one, no request is dropped;
- `score_batch`: the micro-batcher's function; returns each input's scores WITH the version
  that produced them (a swap between two batches is visible per answer);
- the optional shadow model: a given registry version scores a sample of batches on its own
  thread after the served answer is out; agreement@k, both models' scores and their time per
  batch go to /metrics and to a `serving/shadow.py` summary the poller writes to Redis every
  `serving.shadow_report_s` (`streamrec models shadow-report` reads it);
- the canary: the registry's CANARY state (read with the PROMOTED pointer, on the same
  wake-ups) names a candidate and a share; it is loaded beside the promoted ranker, and in
  each batch the users whose canary bucket (`analytics.experiments.canary_bucket`, computed
  here, in memory) is below the share are scored by it, the rest by the promoted one. A
  canary that fails is counted and its users are scored by the promoted ranker, so no
  request fails for it. `canary_variant` gives the impressions their variant;
- the skew sample: every 1/`serving.skew_sample`-th batch the promoted ranker scores is
  scored by the pass that also returns its dense inputs; the skew thread counts them into
  the bins of the version's training profile (`serving/skew_sampler.py`), and the poller
  writes the counts to Redis every `serving.skew_report_s`, and once more at stop (ADR 0131);
- `unload` (an operator's lever, and how tests take the model away).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import numpy as np
import redis
from confluent_kafka import Consumer, KafkaException

from streamrec.analytics.experiments import CANARY_VARIANT, canary_bucket, canary_limit
from streamrec.analytics.skew import skew_key
from streamrec.infra.redis_clients import sync_client
from streamrec.infra.settings import Settings
from streamrec.models.features import UserFeatures
from streamrec.models.registry import ModelRegistry, ModelVersion, RegistryError
from streamrec.serving.errors import DependencyError, ModelUnavailable
from streamrec.serving.metrics import ServingMetrics
from streamrec.serving.ports import ProfiledRanker, Ranker, RankInput
from streamrec.serving.ranker_adapter import RANKER_KIND, RegistryRanker, pick_device
from streamrec.serving.shadow import ShadowRecorder, shadow_key
from streamrec.serving.skew_sampler import BatchSampler, SkewSampler
from streamrec.streams import codecs
from streamrec.topics import REGISTRY_CHANGES, RegistryChange
from streamrec.topics.errors import SchemaError

log = logging.getLogger(__name__)

Loader = Callable[[ModelVersion, str], Ranker]
SHADOW_KEY_TTL_S = 86_400
SKEW_KEY_TTL_S = 86_400


@dataclass(frozen=True)
class _Canary:
    """The canary as one reference (swapped whole, read once per batch)."""

    ranker: Ranker
    limit: int  # users whose canary bucket is below this are the canary's
    share: float

    def serves(self, user_id: str) -> bool:
        return canary_bucket(user_id, self.ranker.version) < self.limit


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        metrics: ServingMetrics,
        loader: Loader | None = None,
        watch_topic: bool = True,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.loader: Loader = loader or functools.partial(
            RegistryRanker, compiled=settings.serving.ranker_compiled
        )
        self.watch_topic = watch_topic
        self.registry = ModelRegistry(settings)
        self.device = pick_device(settings.serving.device)
        self.current: Ranker | None = None
        self.shadow: Ranker | None = None
        self.canary: _Canary | None = None
        self.canary_error: str | None = None
        self.swaps = 0
        self.shadow_recorder: ShadowRecorder | None = None
        self._shadow_flushed = 0.0
        self._redis: redis.Redis | None = None
        self.load_error: str | None = None
        self._lock = asyncio.Lock()
        self._shadow_pool = ThreadPoolExecutor(1, thread_name_prefix="shadow")
        self.skew_sampler: SkewSampler | None = None
        self._skew_batches = BatchSampler(settings.serving.skew_sample)
        self._skew_pool = ThreadPoolExecutor(1, thread_name_prefix="skew")
        self._skew_flushed = 0.0
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._changes = threading.Event()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def version(self) -> str | None:
        model = self.current
        return model.version if model is not None else None

    async def start(self) -> None:
        await self.refresh()
        if self.settings.serving.shadow_version:
            await self._load_shadow(self.settings.serving.shadow_version)
        if self.watch_topic:
            self._watcher = threading.Thread(target=self._watch, name="registry-watch", daemon=True)
            self._watcher.start()
        self._task = asyncio.create_task(self._poll(), name="model-poll")

    async def stop(self) -> None:
        self._stop.set()
        self._changes.set()  # wakes the poller's thread, which then sees _stop
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.join, 5)
        self._shadow_pool.shutdown(wait=False, cancel_futures=True)
        # The batches sampled so far are counted and written: a stopping worker's last
        # seconds are not lost from the report.
        await asyncio.to_thread(self._skew_pool.shutdown, wait=True)
        await asyncio.to_thread(self.flush_skew)

    async def refresh(self) -> bool:
        """Load and swap in the promoted version if it is not the one serving, then follow
        the canary state. True if the promoted ranker was swapped."""
        async with self._lock:
            swapped = await self._refresh_promoted()
            await self._refresh_canary()
            return swapped

    async def _refresh_promoted(self) -> bool:
        try:
            promoted = await asyncio.to_thread(self.registry.promoted, RANKER_KIND)
        except RegistryError as exc:
            self.load_error = str(exc)
            return False
        if promoted is None or promoted.version == self.version:
            return False
        model = self.canary.ranker if self.canary else None
        try:
            if model is None or model.version != promoted.version:
                model = await asyncio.to_thread(self.loader, promoted, self.device)
                await asyncio.to_thread(_warm_up, model)
        except DependencyError as exc:
            # Keep serving with the old model (or the fallbacks) rather than nothing.
            self.load_error = str(exc)
            log.error("ranker %s not loaded: %s", promoted.version, exc)
            return False
        self.current = model  # the swap: one reference, read once per batch
        self._start_skew(model)
        self.load_error = None
        self.swaps += 1
        self.metrics.model_swaps.inc()
        self.metrics.model.info({"version": model.version, "device": self.device})
        log.info("serving ranker %s on %s", model.version, self.device)
        return True

    async def _refresh_canary(self) -> None:
        try:
            state = await asyncio.to_thread(self.registry.canary, RANKER_KIND)
        except (OSError, ValueError) as exc:  # a torn or unreadable file: keep what runs
            log.warning("canary state not read: %s", exc)
            return
        running = self.canary
        if state is None or state.version == self.version:
            if running is not None:
                log.info("canary %s ended", running.ranker.version)
            self.canary = None
            self.metrics.canary_share.set(0.0)
            return
        limit = canary_limit(state.share)
        if running is not None and running.ranker.version == state.version:
            if running.limit != limit:
                self.canary = _Canary(running.ranker, limit, state.share)
                log.info("canary %s at %.0f%%", state.version, state.share * 100)
            self.metrics.canary_share.set(state.share)
            return
        try:
            mv = await asyncio.to_thread(self.registry.get, RANKER_KIND, state.version)
            model = await asyncio.to_thread(self.loader, mv, self.device)
            await asyncio.to_thread(_warm_up, model)
        except (RegistryError, DependencyError) as exc:
            # No canary here: its users stay on the promoted ranker (the controller sees no
            # canary impressions from this worker).
            self.canary_error = str(exc)
            log.error("canary ranker %s not loaded: %s", state.version, exc)
            return
        self.canary = _Canary(model, limit, state.share)
        self.canary_error = None
        self.metrics.canary_share.set(state.share)
        log.info("canary %s at %.0f%% beside %s", state.version, state.share * 100, self.version)

    def canary_variant(self, user_id: str) -> str | None:
        """ "canary" when the running canary serves this user (the impression's variant)."""
        canary = self.canary
        return CANARY_VARIANT if canary is not None and canary.serves(user_id) else None

    def unload(self) -> None:
        self.current = None
        self.metrics.model.info({"version": "", "device": self.device})

    async def _load_shadow(self, version: str) -> None:
        try:
            mv = await asyncio.to_thread(self.registry.get, RANKER_KIND, version)
            self.shadow = await asyncio.to_thread(self.loader, mv, self.device)
        except (RegistryError, DependencyError) as exc:
            log.error("shadow ranker %s not loaded: %s", version, exc)
            return
        self.shadow_recorder = ShadowRecorder(version, self.worker)

    def _start_skew(self, model: Ranker) -> None:
        """A fresh sampler for a newly promoted version (none without a profile, or off)."""
        profile = model.feature_profile if isinstance(model, ProfiledRanker) else None
        if profile is None or self.settings.serving.skew_sample <= 0:
            self.skew_sampler = None
            return
        self.skew_sampler = SkewSampler(model.version, profile, self.worker)

    def _write_field(self, key: str, field: str, value: str, ttl_s: int) -> None:
        """One HSET (and its key's TTL) of a summary; a report, never a reason to disturb
        serving, so a Redis failure is logged."""
        try:
            if self._redis is None:
                self._redis = sync_client(self.settings, socket_timeout=2.0)
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(key, field, value)
            pipe.expire(key, ttl_s)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("summary %s not written: %s", key, exc)

    def flush_shadow(self) -> None:
        """The shadow summary to Redis (the poller's thread, every `shadow_report_s`)."""
        recorder = self.shadow_recorder
        if recorder is None:
            return
        summary = recorder.snapshot()
        if not summary.batches:
            return
        key = shadow_key(summary.shadow_version)
        self._write_field(key, summary.worker, summary.model_dump_json(), SHADOW_KEY_TTL_S)

    def flush_skew(self) -> None:
        """The skew counts to Redis (the poller's thread, every `skew_report_s`)."""
        sampler = self.skew_sampler
        if sampler is None:
            return
        sample = sampler.snapshot()
        if not sample.batches:
            return
        self._write_field(
            skew_key(sample.version), sample.worker, sample.model_dump_json(), SKEW_KEY_TTL_S
        )

    async def _poll(self) -> None:
        interval = self.settings.serving.model_poll_s
        if self.shadow_recorder is not None:  # the summary's interval, when it is shorter
            interval = min(interval, self._shadow_every())
        if self.settings.serving.skew_sample > 0:
            interval = min(interval, self.settings.serving.skew_report_s)
        while True:
            await asyncio.to_thread(self._changes.wait, interval)
            if self._stop.is_set():
                return
            self._changes.clear()
            try:
                await self.refresh()
            except Exception:  # never let the poller die: the next tick tries again
                log.exception("model refresh failed")
            now = time.monotonic()
            if self.shadow_recorder and now - self._shadow_flushed >= self._shadow_every():
                self._shadow_flushed = now
                await asyncio.to_thread(self.flush_shadow)
            skew_every = self.settings.serving.skew_report_s
            if self.skew_sampler and now - self._skew_flushed >= skew_every:
                self._skew_flushed = now
                await asyncio.to_thread(self.flush_skew)

    def _shadow_every(self) -> float:
        return self.settings.serving.shadow_report_s

    def _watch(self) -> None:
        """registry.changes -> wake the poller at once for any ranker change (canaries too)."""
        consumer = Consumer(
            {
                **self.settings.kafka_config(),
                "group.id": f"serving-registry-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "latest",
                "enable.auto.commit": False,
            }
        )
        try:
            consumer.subscribe([REGISTRY_CHANGES.name])
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                try:
                    change = codecs.decode_json(RegistryChange, msg.value())
                except SchemaError:
                    continue
                if change.kind == RANKER_KIND:
                    self._changes.set()
        except KafkaException as exc:
            log.warning("registry.changes watcher stopped (%s); polling continues", exc)
        finally:
            consumer.close()

    def score_batch(self, batch: list[RankInput]) -> list[tuple[np.ndarray, str]]:
        """Runs on the batcher's thread: each input's scores and the version that made them."""
        model = self.current
        if model is None:
            raise ModelUnavailable(self.load_error or "no ranker promoted yet")
        canary = self.canary
        if canary is None:
            return [(s, model.version) for s in self._score_served(model, batch)]
        mine = [canary.serves(x.user.user_id) for x in batch]
        served = [x for x, c in zip(batch, mine, strict=True) if not c]
        tried = [x for x, c in zip(batch, mine, strict=True) if c]
        scores = iter(self._score_served(model, served) if served else [])
        try:
            if self.settings.faults.canary_score_fails and tried:
                raise RuntimeError("faults.canary_score_fails is set")
            canary_scores = iter(canary.ranker.score(tried) if tried else [])
            canary_version = canary.ranker.version
        except Exception as exc:  # any canary failure: its users get the promoted ranker
            self.metrics.canary_errors.inc()
            log.warning("canary ranker %s failed: %s", canary.ranker.version, exc)
            canary_scores = iter(model.score(tried))
            canary_version = model.version
        results: list[tuple[np.ndarray, str]] = []
        for c in mine:
            if c:
                results.append((next(canary_scores), canary_version))
            else:
                results.append((next(scores), model.version))
        return results

    def _score_served(self, model: Ranker, batch: list[RankInput]) -> list[np.ndarray]:
        shadow = self.shadow
        if shadow is None or random.random() >= self.settings.serving.shadow_sample:
            return self._score_sampled(model, batch)
        started = time.perf_counter()
        scores = self._score_sampled(model, batch)
        elapsed = time.perf_counter() - started
        self._shadow_pool.submit(self._compare, shadow, model.version, batch, scores, elapsed)
        return scores

    def _score_sampled(self, model: Ranker, batch: list[RankInput]) -> list[np.ndarray]:
        """The promoted ranker's scores. A skew-sampled batch is scored by the pass that also
        returns its dense inputs, and the skew thread bins them: this thread only copies
        them out of the model (ADR 0131)."""
        sampler = self.skew_sampler
        # A sampler exists only for a ProfiledRanker (`_start_skew`); the version check
        # keeps a batch of the model swapped out from counting into its successor's bins.
        if sampler is None or sampler.version != model.version or not self._skew_batches.take():
            return model.score(batch)
        scores, features = cast(ProfiledRanker, model).score_with_features(batch)
        with contextlib.suppress(RuntimeError):  # the pool is shut down: stopping, not counted
            self._skew_pool.submit(_count, sampler, features)
        return scores

    def _compare(
        self,
        shadow: Ranker,
        served_version: str,
        batch: list[RankInput],
        served: list[np.ndarray],
        served_s: float,
    ) -> None:
        recorder = self.shadow_recorder
        started = time.perf_counter()
        try:
            other = shadow.score(batch)
        except DependencyError as exc:
            log.warning("shadow ranker failed: %s", exc)
            if recorder is not None:
                recorder.failed()
            return
        shadow_s = time.perf_counter() - started
        m = self.metrics
        m.child(m.shadow_seconds, "served").observe(served_s)
        m.child(m.shadow_seconds, "shadow").observe(shadow_s)
        if recorder is None:
            return
        for agreement in recorder.observe(served_version, served, other, served_s, shadow_s):
            m.shadow.observe(agreement)
        score_served, score_shadow = (
            m.child(m.shadow_score, "served"),
            m.child(m.shadow_score, "shadow"),
        )
        for a, b in zip(served, other, strict=True):
            if len(a):
                score_served.observe(float(np.median(a)))
                score_shadow.observe(float(np.median(b)))


def _count(sampler: SkewSampler, features: np.ndarray) -> None:
    """The skew thread: one sampled batch's inputs into the profile's bins."""
    try:
        sampler.observe(features)
    except Exception:  # a sample lost, never a reason to disturb serving
        log.exception("skew sample of ranker %s not counted", sampler.version)


def _warm_up(model: Ranker) -> None:
    """One small batch before the swap: the first call of a torch model is the slow one
    (of each graph: the skew sample's pass with inputs too)."""
    batch = [RankInput(UserFeatures(user_id="__warmup__"), ["1", "2", "3"])]
    model.score(batch)
    if isinstance(model, ProfiledRanker) and model.feature_profile is not None:
        model.score_with_features(batch)
