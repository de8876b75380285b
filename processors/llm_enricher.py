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
- the provider refuses the key (401/403): the client opens its breaker at once and logs an
  error naming the setting; the request goes back to the queue (the breaker then holds every
  call until its trial), counted as `auth_refused`, the client's `auth_failures`;
- the provider refuses a request (other 4xx): logged and dropped (a bad model is a
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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, cast

import faust
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from streamrec.infra.redis_clients import async_client
from streamrec.infra.settings import LLMSettings, Settings
from streamrec.llm.breaker import BreakerState, CircuitBreaker
from streamrec.llm.client import ChatMessage, ClientStats, Completion, LLMClient
from streamrec.llm.errors import (
    LLMAuthenticationError,
    LLMBreakerOpen,
    LLMRequestError,
    LLMUnavailable,
)
from streamrec.llm.requests import prompt_for, requests_for_item, result_for
from streamrec.llm.work_queue import EnrichQueue
from streamrec.streams import codecs, metrics
from streamrec.streams.app import create_app, faust_topic
from streamrec.streams.dead_letters import AsyncDeadLetterSink, FaustDeadLetters
from streamrec.streams.decoding import AgentDecoder
from streamrec.streams.stop_on_failure import stop_on_failure
from streamrec.topics import (
    CATALOG_ITEMS,
    LLM_ENRICH_REQUESTS,
    LLM_ENRICH_RESULTS,
    CatalogItem,
    EnrichRequest,
)
from streamrec.topics.llm_enrichment import EnrichResult
from streamrec.topics.stores import LLM_RESULT

NAME = "llm-enricher"
log = logging.getLogger(__name__)
_MAX_REQUEUES = 2
_FLUSH_S = 0.5


def stats_key(group: str) -> str:
    """Redis hash of the enricher's running counts for consumer group `group`."""
    return f"streamrec:llm:stats:{group}"


class ResultStore(Protocol):
    """Where results are cached and counts kept (Redis: `RedisResults`); may raise
    RedisError, which the enricher absorbs."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...

    async def add_counts(
        self, key: str, deltas: Mapping[str, int], values: Mapping[str, int]
    ) -> None:
        """HINCRBY each delta and HSET each value of the hash `key`, in one round trip."""
        ...


class Completer(Protocol):
    """The provider's client (llm.client.LLMClient): its calls, stats and breaker."""

    stats: ClientStats
    breaker: CircuitBreaker

    async def complete(self, messages: list[ChatMessage]) -> Completion: ...

    async def aclose(self) -> None: ...


class RedisResults:
    """`ResultStore` over redis.asyncio."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def get(self, key: str) -> bytes | None:
        return cast(bytes | None, await self.redis.get(key))

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        await self.redis.set(key, value, ex=ttl_s)

    async def add_counts(
        self, key: str, deltas: Mapping[str, int], values: Mapping[str, int]
    ) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for k, v in deltas.items():
                pipe.hincrby(key, k, v)
            for k, v in values.items():
                pipe.hset(key, k, v)
            await pipe.execute()


class Enricher:
    """The queue, the client and the dispatch loop of one enricher process.

    Ports: `store` caches results and keeps the counts; `send_result` publishes a result to
    llm.enrich.results, `send_request` a request to llm.enrich.requests; `make_client` opens
    the provider's client (given the breaker callback) on the event loop that uses it."""

    def __init__(
        self,
        cfg: LLMSettings,
        store: ResultStore,
        send_result: Callable[[EnrichResult], Awaitable[None]],
        send_request: Callable[[EnrichRequest], Awaitable[None]],
        dead_letters: AsyncDeadLetterSink,
        stats_key: str,
        make_client: Callable[[Callable[[BreakerState], None]], Completer] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.send_result = send_result
        self.send_request = send_request
        self.stats_key = stats_key
        self._make_client = make_client or (
            lambda on_change: LLMClient(cfg, on_breaker_change=on_change)
        )
        self._sleep = sleep
        self.decode_request: AgentDecoder[EnrichRequest] = AgentDecoder(
            LLM_ENRICH_REQUESTS, NAME, dead_letters
        )
        self.decode_item: AgentDecoder[CatalogItem] = AgentDecoder(
            CATALOG_ITEMS, NAME, dead_letters
        )
        self.queue = EnrichQueue(cfg.queue_max)
        self.counts: Counter[str] = Counter()
        self._flushed: Counter[str] = Counter()
        self._requeues: Counter[str] = Counter()
        self.client: Completer | None = None
        self.in_flight = 0
        self._depth = metrics.QUEUE_DEPTH.labels(NAME, "enrich")
        self._breaker = metrics.BREAKER_STATE.labels(NAME, "llm")
        self._processed = metrics.EVENTS_PROCESSED.labels(NAME, LLM_ENRICH_REQUESTS.name)

    def offer(self, request: EnrichRequest) -> None:
        self.counts["received"] += 1
        self.queue.put(request)
        self._depth.set(len(self.queue))

    async def on_request(self, event: Any) -> None:
        """One llm.enrich.requests message: queued, or dead-lettered."""
        request = await self.decode_request(event)
        if request is None:
            self.counts["dead"] += 1
            return
        self.offer(request)

    async def on_catalog_item(self, event: Any) -> None:
        """One catalog.items message: request what the item lacks (description, genres)."""
        item = await self.decode_item(event)
        if item is None:
            return
        for request in requests_for_item(item, self.cfg.request_ttl_s):
            self.counts["requested"] += 1
            await self.send_request(request)

    def _on_breaker(self, state: BreakerState) -> None:
        self._breaker.set(int(state))
        log.warning("LLM circuit breaker %s", state.name)

    def open(self) -> Completer:
        """The provider's client, made on first use (on the loop that will use it)."""
        if self.client is None:
            self.client = self._make_client(self._on_breaker)
        return self.client

    async def run(self) -> None:
        """Dispatchers plus housekeeping, until cancelled (the worker stops)."""
        client = self.open()
        try:
            await asyncio.gather(
                self._housekeeping(),
                *(self._dispatch() for _ in range(self.cfg.concurrency)),
            )
        finally:
            with contextlib.suppress(Exception):
                await self.flush()
            await client.aclose()

    async def _dispatch(self) -> None:
        while True:
            await self.dispatch_one()

    async def dispatch_one(self) -> None:
        """Take the next request (waiting for one) and answer it, under the failure policy."""
        request = await self.queue.get()
        self._depth.set(len(self.queue))
        self.in_flight += 1
        try:
            await self._handle(request)
        except LLMBreakerOpen as exc:
            self.queue.requeue(request)
            # Fail fast means no provider call; wait for the trial instead of spinning.
            await self._sleep(min(max(exc.retry_in_s, 0.05), 1.0))
        except LLMUnavailable as exc:
            self._requeues[request.key] += 1
            if self._requeues[request.key] <= _MAX_REQUEUES:
                self.queue.requeue(request)
            else:
                self._requeues.pop(request.key, None)
                self.counts["failed"] += 1
                log.info("giving up on %s: %s", request.key, exc)
        except LLMAuthenticationError:
            # The key, not the request, is refused (the client logged it and opened its
            # breaker): keep the request for the trial that finds the key accepted.
            self.counts["auth_refused"] += 1
            self.queue.requeue(request)
        except LLMRequestError as exc:
            self.counts["failed"] += 1
            log.warning("provider refused %s: %s", request.key, exc)
        finally:
            self.in_flight -= 1

    async def _handle(self, request: EnrichRequest) -> None:
        client = self.open()
        if await self._cached_since(request):
            self.counts["cached"] += 1
            return
        completion = await client.complete(prompt_for(request))
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
        await self.send_result(result)
        try:
            await self.store.set(
                LLM_RESULT.key(key=result.key),
                codecs.encode(LLM_ENRICH_RESULTS, result),
                self.cfg.result_ttl_s,
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
                auth_failures=c.auth_failures,
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
        state = self.client.breaker.state if self.client else BreakerState.CLOSED
        gauges = {
            "queue_depth": len(self.queue),
            "in_flight": self.in_flight,
            "breaker_state": int(state),
        }
        await self.store.add_counts(self.stats_key, delta, gauges)
        self._flushed = now


def build(settings: Settings, group: str | None = None) -> faust.App:
    group = group or f"streamrec-{NAME}"
    app = create_app(settings, group)
    metrics.attach(app, settings, NAME)
    requests_topic = faust_topic(app, LLM_ENRICH_REQUESTS)
    results_topic = faust_topic(app, LLM_ENRICH_RESULTS)

    async def send_result(result: EnrichResult) -> None:
        await results_topic.send(
            key=LLM_ENRICH_RESULTS.key_of(result), value=codecs.encode(LLM_ENRICH_RESULTS, result)
        )

    async def send_request(request: EnrichRequest) -> None:
        await requests_topic.send(
            key=LLM_ENRICH_REQUESTS.key_of(request),
            value=codecs.encode(LLM_ENRICH_REQUESTS, request),
        )

    enricher = Enricher(
        settings.llm,
        RedisResults(async_client(settings, socket_timeout=1.0)),
        send_result,
        send_request,
        FaustDeadLetters(app),
        stats_key(group),
    )

    @app.agent(requests_topic, name=NAME)
    async def take_requests(stream: faust.StreamT) -> None:
        async for event in stream.events():
            with stop_on_failure(NAME):
                await enricher.on_request(event)

    if settings.llm.request_missing:

        @app.agent(faust_topic(app, CATALOG_ITEMS), name=f"{NAME}-catalog")
        async def request_missing(stream: faust.StreamT) -> None:
            async for event in stream.events():
                with stop_on_failure(NAME):
                    await enricher.on_catalog_item(event)

    @app.task
    async def dispatch() -> None:
        await enricher.run()

    return app
