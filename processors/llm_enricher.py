"""LLM enricher: enrichment requests in, cached LLM results out, at the provider's pace.

Responsibilities:
- consume llm.enrich.requests (`EnrichRequest`) into a bounded, deduplicating priority queue
  (`llm.work_queue`): one entry per key, higher priority first, lowest shed when full,
  expired requests dropped unanswered;
- `concurrency` dispatch tasks call the provider through `llm.client.LLMClient` (token
  bucket at the provider's limit, timeouts, Retry-After, retry budget, circuit breaker) and
  publish each `EnrichResult` to the compacted llm.enrich.results topic and to Redis
  (`llm:{key}`, `LLMSettings.result_ttl_s`); a key whose cached result is newer than the
  request is not asked again;
- watch catalog.items and request a description (and genres) for items that arrive
  without them (`LLMSettings.request_missing`), prioritised by their popularity hint;
- expose queue depth and breaker state (streams.metrics) and keep running counts in the
  Redis hash `stats_key(group)` (the tests, benchmark and demo read it).

Failure policy:
- a malformed message (either topic) goes to dead.letters with the reason; the agent goes on;
- provider unavailable (timeout, 5xx, 429 past the call's deadline, breaker open): the
  request goes back to the queue with its priority and expiry (at most `_MAX_REQUEUES`
  times when the provider was actually tried); it is dropped when it expires. Serving
  never waits for any of this: it shows a template explanation meanwhile;
- the provider refuses a request (4xx): logged and dropped (a bad key or model is a
  configuration error, not the message's fault);
- Redis down: the result still goes to the topic (the cache's source); counted, not fatal;
- requests waiting in memory are lost if the worker dies (their offsets are committed when
  queued): enrichment is best effort and is requested again by its producers (ADR 0061).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

import faust
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from streamrec.infra.settings import Settings
from streamrec.llm.breaker import BreakerState
from streamrec.llm.client import LLMClient
from streamrec.llm.errors import LLMBreakerOpen, LLMRequestError, LLMUnavailable
from streamrec.llm.requests import prompt_for, requests_for_item, result_for
from streamrec.llm.work_queue import EnrichQueue
from streamrec.streams import codecs, metrics
from streamrec.streams.app import create_app, faust_topic
from streamrec.streams.dead_letters import FaustDeadLetters
from streamrec.topics import CATALOG_ITEMS, LLM_ENRICH_REQUESTS, LLM_ENRICH_RESULTS, EnrichRequest
from streamrec.topics.errors import SchemaError
from streamrec.topics.llm_enrichment import EnrichResult
from streamrec.topics.stores import LLM_RESULT

NAME = "llm-enricher"
log = logging.getLogger(__name__)
_MAX_REQUEUES = 2
_FLUSH_S = 0.5


def stats_key(group: str) -> str:
    """Redis hash of the enricher's running counts for consumer group `group`."""
    return f"streamrec:llm:stats:{group}"


class Enricher:
    """The queue, the client and the dispatch loop of one enricher process."""

    def __init__(self, settings: Settings, results: faust.TopicT, group: str) -> None:
        self.settings = settings
        self.results = results
        self.queue = EnrichQueue(settings.llm.queue_max)
        self.store = aioredis.from_url(settings.redis_url, socket_timeout=1.0)
        self.stats_key = stats_key(group)
        self.counts: Counter[str] = Counter()
        self._flushed: Counter[str] = Counter()
        self._requeues: Counter[str] = Counter()
        self.client: LLMClient | None = None
        self.in_flight = 0
        self._depth = metrics.QUEUE_DEPTH.labels(NAME, "enrich")
        self._breaker = metrics.BREAKER_STATE.labels(NAME, "llm")
        self._processed = metrics.EVENTS_PROCESSED.labels(NAME, LLM_ENRICH_REQUESTS.name)

    def offer(self, request: EnrichRequest) -> None:
        self.counts["received"] += 1
        self.queue.put(request)
        self._depth.set(len(self.queue))

    def _on_breaker(self, state: BreakerState) -> None:
        self._breaker.set(int(state))
        log.warning("LLM circuit breaker %s", state.name)

    async def run(self) -> None:
        """Dispatchers plus housekeeping, until cancelled (the worker stops)."""
        self.client = LLMClient(self.settings.llm, on_breaker_change=self._on_breaker)
        try:
            await asyncio.gather(
                self._housekeeping(),
                *(self._dispatch() for _ in range(self.settings.llm.concurrency)),
            )
        finally:
            with contextlib.suppress(Exception):
                await self.flush()
            await self.client.aclose()

    async def _dispatch(self) -> None:
        assert self.client is not None
        while True:
            request = await self.queue.get()
            self._depth.set(len(self.queue))
            self.in_flight += 1
            try:
                await self._handle(request)
            except LLMBreakerOpen as exc:
                self.queue.requeue(request)
                # Fail fast means no provider call; wait for the trial instead of spinning.
                await asyncio.sleep(min(max(exc.retry_in_s, 0.05), 1.0))
            except LLMUnavailable as exc:
                self._requeues[request.key] += 1
                if self._requeues[request.key] <= _MAX_REQUEUES:
                    self.queue.requeue(request)
                else:
                    self._requeues.pop(request.key, None)
                    self.counts["failed"] += 1
                    log.info("giving up on %s: %s", request.key, exc)
            except LLMRequestError as exc:
                self.counts["failed"] += 1
                log.warning("provider refused %s: %s", request.key, exc)
            finally:
                self.in_flight -= 1

    async def _handle(self, request: EnrichRequest) -> None:
        assert self.client is not None
        if await self._cached_since(request):
            self.counts["cached"] += 1
            return
        completion = await self.client.complete(prompt_for(request))
        result = result_for(request, completion.text, completion.model)
        self._requeues.pop(request.key, None)
        await self._publish(result)
        self.counts["enriched"] += 1
        self.counts[f"enriched_{request.kind}"] += 1
        self._processed.inc()

    async def _cached_since(self, request: EnrichRequest) -> bool:
        """A result for this key produced after the request was made already exists."""
        try:
            raw = await self.store.get(LLM_RESULT.key(key=request.key))
        except RedisError:
            return False
        if not raw:
            return False
        try:
            cached = EnrichResult.model_validate_json(raw)
        except ValidationError:
            return False
        return cached.produced_at >= request.requested_at

    async def _publish(self, result: EnrichResult) -> None:
        value = codecs.encode(LLM_ENRICH_RESULTS, result)
        await self.results.send(key=LLM_ENRICH_RESULTS.key_of(result), value=value)
        try:
            await self.store.set(
                LLM_RESULT.key(key=result.key), value, ex=self.settings.llm.result_ttl_s
            )
        except RedisError as exc:
            self.counts["store_errors"] += 1
            log.warning("could not cache %s in Redis: %s", result.key, type(exc).__name__)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_S)
            self.queue.sweep()
            self._depth.set(len(self.queue))
            with contextlib.suppress(RedisError):
                await self.flush()

    def snapshot(self) -> dict[str, int]:
        """Every count: the processor's, the queue's and the client's."""
        out = dict(self.counts)
        q = self.queue.stats
        out.update(
            queued=q.queued, merged=q.merged, stale=q.stale, shed=q.shed, requeued=q.requeued
        )
        if self.client is not None:
            c = self.client.stats
            out.update(
                calls=c.calls,
                attempts=c.attempts,
                rate_limited=c.rate_limited,
                timeouts=c.timeouts,
                server_errors=c.server_errors,
                breaker_rejected=c.breaker_rejected,
                budget_exhausted=c.budget_exhausted,
                breaker_trips=self.client.breaker.trips,
            )
        return out

    async def flush(self) -> None:
        """Add the counts since the last flush to the Redis stats hash (HINCRBY: several
        processes of one group add up); gauges are set."""
        now = Counter(self.snapshot())
        delta = {k: v - self._flushed[k] for k, v in now.items() if v != self._flushed[k]}
        failed = metrics.EVENTS_FAILED
        for reason in ("stale", "shed"):
            if delta.get(reason):
                failed.labels(NAME, LLM_ENRICH_REQUESTS.name, reason).inc(delta[reason])
        async with self.store.pipeline(transaction=False) as pipe:
            for k, v in delta.items():
                pipe.hincrby(self.stats_key, k, v)
            pipe.hset(self.stats_key, "queue_depth", len(self.queue))
            pipe.hset(self.stats_key, "in_flight", self.in_flight)
            state = self.client.breaker.state if self.client else BreakerState.CLOSED
            pipe.hset(self.stats_key, "breaker_state", int(state))
            await pipe.execute()
        self._flushed = now


def build(settings: Settings, group: str | None = None) -> faust.App:
    group = group or f"streamrec-{NAME}"
    app = create_app(settings, group)
    metrics.attach(app, settings, NAME)
    requests_topic = faust_topic(app, LLM_ENRICH_REQUESTS)
    results_topic = faust_topic(app, LLM_ENRICH_RESULTS)
    dead_letters = FaustDeadLetters(app, NAME)
    enricher = Enricher(settings, results_topic, group)

    @app.agent(requests_topic, name=NAME)
    async def take_requests(stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                request = codecs.decode(LLM_ENRICH_REQUESTS, event.value)
            except SchemaError as exc:
                await dead_letters.send(event, exc.reason)
                enricher.counts["dead"] += 1
                metrics.EVENTS_FAILED.labels(NAME, LLM_ENRICH_REQUESTS.name, "schema").inc()
                continue
            enricher.offer(request)  # type: ignore[arg-type]

    if settings.llm.request_missing:
        catalog_topic = faust_topic(app, CATALOG_ITEMS)

        @app.agent(catalog_topic, name=f"{NAME}-catalog")
        async def request_missing(stream: faust.StreamT) -> None:
            async for event in stream.events():
                try:
                    item = codecs.decode(CATALOG_ITEMS, event.value)
                except SchemaError as exc:
                    await dead_letters.send(event, exc.reason)
                    metrics.EVENTS_FAILED.labels(NAME, CATALOG_ITEMS.name, "schema").inc()
                    continue
                for request in requests_for_item(item, settings.llm.request_ttl_s):  # type: ignore[arg-type]
                    enricher.counts["requested"] += 1
                    await requests_topic.send(
                        key=LLM_ENRICH_REQUESTS.key_of(request),
                        value=codecs.encode(LLM_ENRICH_REQUESTS, request),
                    )

    @app.task
    async def dispatch() -> None:
        await enricher.run()

    return app
