"""The LLM enricher's logic with an in-memory client, result store and producers: what is
queued, asked, published, cached and counted, and what each provider failure does."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta

import httpx
from redis.exceptions import ConnectionError as RedisConnectionError

from streamrec.infra.settings import LLMSettings
from streamrec.llm.breaker import BreakerState, CircuitBreaker
from streamrec.llm.client import ChatMessage, ClientStats, Completion, LLMClient
from streamrec.llm.errors import (
    LLMAuthenticationError,
    LLMBreakerOpen,
    LLMRequestError,
    LLMUnavailable,
)
from streamrec.processors.llm_enricher import Enricher
from streamrec.streams import codecs
from streamrec.topics import (
    CATALOG_ITEMS,
    LLM_ENRICH_REQUESTS,
    LLM_ENRICH_RESULTS,
    CatalogItem,
    EnrichRequest,
    EnrichResult,
)
from streamrec.topics.base import utcnow
from streamrec.topics.stores import LLM_RESULT
from tests.unit.processors.fakes import AsyncLetters, Offsets

STATS = "streamrec:llm:stats:test"


class Client:
    """Answers from a script: a text, or an exception to raise, per call."""

    def __init__(self, *script: str | Exception) -> None:
        self.script = list(script)
        self.prompts: list[list[ChatMessage]] = []
        self.stats = ClientStats()
        self.breaker = CircuitBreaker(3, 1.0)
        self.closed = False

    async def complete(self, messages: list[ChatMessage]) -> Completion:
        self.prompts.append(messages)
        self.stats.calls += 1
        answer = self.script.pop(0) if self.script else "A fine film."
        if isinstance(answer, Exception):
            raise answer
        return Completion(text=answer, model="local-1", attempts=1)

    async def aclose(self) -> None:
        self.closed = True


class Store:
    def __init__(self, down: bool = False) -> None:
        self.values: dict[str, tuple[bytes, int]] = {}
        self.hash: dict[str, int] = {}
        self.down = down

    async def get(self, key: str) -> bytes | None:
        if self.down:
            raise RedisConnectionError("redis down")
        entry = self.values.get(key)
        return None if entry is None else entry[0]

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if self.down:
            raise RedisConnectionError("redis down")
        self.values[key] = (value, ttl_s)

    async def add_counts(
        self, key: str, deltas: Mapping[str, int], values: Mapping[str, int]
    ) -> None:
        assert key == STATS
        for k, v in deltas.items():
            self.hash[k] = self.hash.get(k, 0) + v
        self.hash.update(values)


class World:
    def __init__(self, client: Client | None = None, store: Store | None = None) -> None:
        self.client = client or Client()
        self.store = store or Store()
        self.results: list[EnrichResult] = []
        self.requests: list[EnrichRequest] = []
        self.letters = AsyncLetters()
        self.slept: list[float] = []
        self.breaker_cb: list[Callable[[BreakerState], None]] = []
        self.enricher = Enricher(
            LLMSettings(result_ttl_s=600, request_ttl_s=60),
            self.store,
            self._result,
            self._request,
            self.letters,
            STATS,
            make_client=self._make,
            sleep=self._sleep,
        )
        self.offsets = Offsets(LLM_ENRICH_REQUESTS)

    def _make(self, on_change: Callable[[BreakerState], None]) -> Client:
        self.breaker_cb.append(on_change)
        return self.client

    async def _result(self, result: EnrichResult) -> None:
        self.results.append(result)

    async def _request(self, request: EnrichRequest) -> None:
        self.requests.append(request)

    async def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    async def offer(self, *requests: EnrichRequest) -> None:
        for request in requests:
            await self.enricher.on_request(self.offsets.event(request))

    async def dispatch_all(self) -> int:
        """Dispatch until the queue is empty (never waits on an empty one)."""
        n = 0
        while len(self.enricher.queue):
            await self.enricher.dispatch_one()
            n += 1
        return n


def _request(key: str = "desc:i1", **kw: object) -> EnrichRequest:
    fields: dict[str, object] = {"kind": "item_description", "item_id": "i1"}
    fields.update(kw)
    return EnrichRequest(key=key, context={"title": "Heat"}, **fields)  # type: ignore[arg-type]


async def test_a_request_is_answered_published_and_cached():
    w = World(Client("  A heist   film. "))
    await w.offer(_request())
    assert await w.dispatch_all() == 1
    (result,) = w.results
    assert (result.key, result.text, result.model) == ("desc:i1", "A heist film.", "local-1")
    value, ttl = w.store.values[LLM_RESULT.key(key="desc:i1")]
    assert ttl == 600 and codecs.decode(LLM_ENRICH_RESULTS, value) == result
    assert "Heat" in w.client.prompts[0][-1].content
    counts = w.enricher.counts
    assert counts["received"] == 1 and counts["enriched"] == 1
    assert counts["enriched_item_description"] == 1
    assert w.enricher.in_flight == 0


async def test_a_result_newer_than_the_request_is_not_asked_again():
    w = World()
    asked_at = utcnow()
    cached = EnrichResult(
        key="desc:i1", kind="item_description", item_id="i1", text="old", model="m"
    )
    w.store.values[LLM_RESULT.key(key="desc:i1")] = (cached.model_dump_json().encode(), 600)
    await w.offer(_request(requested_at=asked_at - timedelta(seconds=5)))
    await w.dispatch_all()
    assert w.client.prompts == [] and w.results == []
    assert w.enricher.counts["cached"] == 1
    # A request made after the cached result was produced is asked again.
    await w.offer(_request(requested_at=cached.produced_at + timedelta(seconds=1)))
    await w.dispatch_all()
    assert len(w.results) == 1


async def test_an_unavailable_provider_is_retried_twice_then_given_up():
    w = World(Client(*[LLMUnavailable("503")] * 3))
    await w.offer(_request())
    assert await w.dispatch_all() == 3  # the first try and two requeues
    assert w.results == [] and w.enricher.counts["failed"] == 1
    assert w.enricher.queue.stats.requeued == 2


async def test_a_request_that_fails_once_then_succeeds_is_published():
    w = World(Client(LLMUnavailable("timeout"), "Fine."))
    await w.offer(_request())
    assert await w.dispatch_all() == 2
    assert [r.text for r in w.results] == ["Fine."]
    assert w.enricher.counts["failed"] == 0


async def test_an_open_breaker_requeues_without_a_retry_and_waits_its_trial():
    w = World(Client(LLMBreakerOpen(0.01), LLMBreakerOpen(7.0), "Ok."))
    await w.offer(_request())
    assert await w.dispatch_all() == 3
    assert w.slept == [0.05, 1.0]  # clamped to [0.05, 1.0] s
    assert [r.text for r in w.results] == ["Ok."]


async def test_a_refused_request_is_dropped():
    w = World(Client(LLMRequestError("401 bad key")))
    await w.offer(_request())
    assert await w.dispatch_all() == 1
    assert w.results == [] and w.enricher.counts["failed"] == 1


async def test_redis_down_still_publishes_the_result_and_counts_it():
    w = World(store=Store(down=True))
    await w.offer(_request())
    await w.dispatch_all()
    assert len(w.results) == 1  # the topic is the cache's source
    assert w.enricher.counts["store_errors"] == 1


async def test_malformed_requests_are_dead_lettered_and_counted():
    w = World()
    await w.enricher.on_request(w.offsets.raw(b"not json", partition=2))
    await w.offer(_request())
    (letter,) = w.letters.got
    assert (letter.source_topic, letter.partition, letter.processor) == (
        "llm.enrich.requests",
        2,
        "llm-enricher",
    )
    assert w.enricher.counts["dead"] == 1 and len(w.enricher.queue) == 1


async def test_an_item_without_description_or_genres_asks_for_both():
    w = World()
    items = Offsets(CATALOG_ITEMS)
    await w.enricher.on_catalog_item(items.event(CatalogItem(item_id="n1", title="New")))
    await w.enricher.on_catalog_item(
        items.event(CatalogItem(item_id="n2", title="Full", description="d", genres=["Drama"]))
    )
    await w.enricher.on_catalog_item(items.raw(b"{}"))
    assert sorted(r.kind for r in w.requests) == ["item_classification", "item_description"]
    assert {r.item_id for r in w.requests} == {"n1"}
    assert w.enricher.counts["requested"] == 2
    assert [letter.source_topic for letter in w.letters.got] == ["catalog.items"]


async def test_flush_adds_only_the_counts_since_the_last_flush():
    w = World()
    await w.offer(_request("a"), _request("b"))
    w.enricher.open()
    await w.enricher.dispatch_one()
    await w.enricher.flush()
    assert w.store.hash["received"] == 2 and w.store.hash["enriched"] == 1
    assert w.store.hash["calls"] == 1
    assert w.store.hash["queue_depth"] == 1 and w.store.hash["breaker_state"] == 0
    await w.enricher.dispatch_one()
    await w.enricher.flush()
    assert w.store.hash["received"] == 2 and w.store.hash["enriched"] == 2
    assert w.store.hash["queue_depth"] == 0
    assert len(w.breaker_cb) == 1  # one client, made on first use


async def test_a_refused_key_keeps_the_request_and_says_so_in_the_counts():
    w = World(Client(LLMAuthenticationError("provider refused the key: 401"), "Ok."))
    await w.offer(_request())
    assert await w.dispatch_all() == 2  # kept for the trial after the key is accepted again
    assert [r.text for r in w.results] == ["Ok."]
    assert w.enricher.counts["auth_refused"] == 1 and w.enricher.counts["failed"] == 0


async def test_with_a_refused_key_the_provider_is_called_once_not_at_its_rate():
    """The real client against a provider that answers 401: its breaker opens at the first
    refusal, so 30 dispatches make one provider call; the breaker gauge says open."""
    calls = 0

    def refuse(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(401)

    w = World()
    settings = LLMSettings(requests_per_minute=60_000, burst=50)
    w.enricher._make_client = lambda on_change: LLMClient(  # type: ignore[method-assign]
        settings, on_breaker_change=on_change, transport=httpx.MockTransport(refuse)
    )
    await w.offer(*(_request(key=f"desc:i{i}", item_id=f"i{i}") for i in range(10)))
    for _ in range(30):
        await w.enricher.dispatch_one()
    assert calls == 1
    assert len(w.enricher.queue) == 10 and w.results == []
    snapshot = w.enricher.snapshot()
    assert snapshot["auth_failures"] == 1 and snapshot["auth_refused"] == 1
    assert snapshot["breaker_rejected"] == 29
    assert w.enricher._breaker._value.get() == int(BreakerState.OPEN)
    await w.enricher.client.aclose()  # type: ignore[union-attr]
