"""The ranker the worker serves with: initial load, hot swap on promotion, the shadow model.

Responsibilities:
- load the promoted ranker at start; on a promotion (a `registry.changes` message, or the
  registry's PROMOTED pointer seen changed by a poll, whichever comes first) load the new
  version BESIDE the old one on a thread, then swap one reference: batches already running
  finish on the old model, the next batch uses the new one, no request is dropped;
- `score_batch`: the micro-batcher's function; returns each input's scores WITH the version
  that produced them (a swap between two batches is visible per answer);
- the optional shadow model: a given registry version scores a sample of batches on its own
  thread after the served answer is out, and only the top-k overlap is recorded;
- `unload` (an operator's lever, and how tests take the model away).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from confluent_kafka import Consumer, KafkaException

from streamrec.infra.settings import Settings
from streamrec.models.features import UserFeatures
from streamrec.models.registry import ModelRegistry, ModelVersion, RegistryError
from streamrec.serving.errors import DependencyError, ModelUnavailable
from streamrec.serving.metrics import ServingMetrics
from streamrec.serving.ports import Ranker, RankInput
from streamrec.serving.ranker_adapter import RANKER_KIND, RegistryRanker, pick_device
from streamrec.streams import codecs
from streamrec.topics import REGISTRY_CHANGES, RegistryChange
from streamrec.topics.errors import SchemaError

log = logging.getLogger(__name__)

Loader = Callable[[ModelVersion, str], Ranker]


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
        self.swaps = 0
        self.load_error: str | None = None
        self._lock = asyncio.Lock()
        self._shadow_pool = ThreadPoolExecutor(1, thread_name_prefix="shadow")
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

    async def refresh(self) -> bool:
        """Load and swap in the promoted version if it is not the one serving. True if swapped."""
        async with self._lock:
            try:
                promoted = await asyncio.to_thread(self.registry.promoted, RANKER_KIND)
            except RegistryError as exc:
                self.load_error = str(exc)
                return False
            if promoted is None or promoted.version == self.version:
                return False
            try:
                model = await asyncio.to_thread(self.loader, promoted, self.device)
                await asyncio.to_thread(_warm_up, model)
            except DependencyError as exc:
                # Keep serving with the old model (or the fallbacks) rather than nothing.
                self.load_error = str(exc)
                log.error("ranker %s not loaded: %s", promoted.version, exc)
                return False
            self.current = model  # the swap: one reference, read once per batch
            self.load_error = None
            self.swaps += 1
            self.metrics.model_swaps.inc()
            self.metrics.model.info({"version": model.version, "device": self.device})
            log.info("serving ranker %s on %s", model.version, self.device)
            return True

    def unload(self) -> None:
        self.current = None
        self.metrics.model.info({"version": "", "device": self.device})

    async def _load_shadow(self, version: str) -> None:
        try:
            mv = await asyncio.to_thread(self.registry.get, RANKER_KIND, version)
            self.shadow = await asyncio.to_thread(self.loader, mv, self.device)
        except (RegistryError, DependencyError) as exc:
            log.error("shadow ranker %s not loaded: %s", version, exc)

    async def _poll(self) -> None:
        interval = self.settings.serving.model_poll_s
        while True:
            await asyncio.to_thread(self._changes.wait, interval)
            if self._stop.is_set():
                return
            self._changes.clear()
            try:
                await self.refresh()
            except Exception:  # never let the poller die: the next tick tries again
                log.exception("model refresh failed")

    def _watch(self) -> None:
        """registry.changes -> wake the poller at once for ranker promotions and rollbacks."""
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
        """Runs on the batcher's thread: the served model's scores and its version."""
        model = self.current
        if model is None:
            raise ModelUnavailable(self.load_error or "no ranker promoted yet")
        scores = model.score(batch)
        shadow = self.shadow
        if shadow is not None and random.random() < self.settings.serving.shadow_sample:
            self._shadow_pool.submit(self._compare, shadow, batch, scores)
        return [(s, model.version) for s in scores]

    def _compare(self, shadow: Ranker, batch: list[RankInput], served: list[np.ndarray]) -> None:
        try:
            other = shadow.score(batch)
        except DependencyError as exc:
            log.warning("shadow ranker failed: %s", exc)
            return
        for a, b in zip(served, other, strict=True):
            k = min(20, len(a))
            if k:
                top_a = set(np.argsort(-a)[:k].tolist())
                top_b = set(np.argsort(-b)[:k].tolist())
                self.metrics.shadow.observe(len(top_a & top_b) / k)


def _warm_up(model: Ranker) -> None:
    """One small batch before the swap: the first call of a torch model is the slow one."""
    model.score([RankInput(UserFeatures(user_id="__warmup__"), ["1", "2", "3"])])
