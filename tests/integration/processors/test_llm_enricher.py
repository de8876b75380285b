"""The LLM enricher end to end: real Kafka, Redis, a `streamrec worker llm-enricher` process
and the local provider process, whose own request log is the judge of the rate limit.

Time is scaled down 7.2x: the provider allows 60 requests per 1 s window (instead of 500 per
60 s) and the enricher's bucket runs at 3600/min; provider latency is 20-200 ms (instead of
200 ms-2 s), the call timeout 0.5 s and the breaker's reset 1 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from pydantic import SecretStr

from streamrec.infra.processes import free_port
from streamrec.infra.settings import Settings
from streamrec.llm.keys import classification_key, description_key, explanation_key
from streamrec.llm.local_provider import LocalProvider, max_in_window
from streamrec.llm.requests import GENRE_VOCABULARY, explanation_request
from streamrec.processors.llm_enricher import stats_key
from streamrec.serving.explanations import ItemFacts, WatchedItem, explain_items_sync
from streamrec.streams import codecs
from streamrec.streams.catalog import publish_items
from streamrec.streams.producer import bulk_producer, flush, produce_event
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import (
    DEAD_LETTERS,
    LLM_ENRICH_REQUESTS,
    CatalogItem,
    EnrichRequest,
    EnrichResult,
)
from streamrec.topics.stores import LLM_RESULT
from tests.kafka_helpers import end_offsets, read_range, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "sk-streamrec-enricher-test-91d2c7"
GROUP = "t-llm-enricher"


@pytest.fixture(scope="module")
def settings(isolated_stack: Settings) -> Settings:
    port = free_port()
    return isolated_stack.with_overrides(
        llm={
            "base_url": f"http://127.0.0.1:{port}/v1",
            "api_key": SecretStr(SECRET),
            "local_api_key": SecretStr(SECRET),
            "local_port": port,
            "local_limit": 60,
            "local_window_s": 1.0,
            "local_latency_min_ms": 20,
            "local_latency_max_ms": 200,
            "requests_per_minute": 3600,
            "burst": 1,
            "rate_safety": 0.9,
            "timeout_s": 0.5,
            "call_deadline_s": 3.0,
            "breaker_failures": 3,
            "breaker_reset_s": 1.0,
            "concurrency": 16,
            "queue_max": 2000,
        }
    )


@pytest.fixture(scope="module")
def provider(settings: Settings) -> Iterator[LocalProvider]:
    with LocalProvider(settings) as p:
        yield p


@pytest.fixture(scope="module")
def store(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


@pytest.fixture(scope="module")
def worker(
    settings: Settings, provider: LocalProvider, store: redis.Redis
) -> Iterator[WorkerProcess]:
    with WorkerProcess(settings, "llm-enricher", GROUP) as w:
        wait_for(
            lambda: store.hget(stats_key(GROUP), "queue_depth") is not None or not w.alive(),
            60,
            "the enricher to start",
        )
        assert w.alive(), w.log.read_text()[-3000:]
        # Consuming, not just started: one request answered end to end.
        producer = bulk_producer(settings)
        produce_event(producer, LLM_ENRICH_REQUESTS, _warmup())
        flush(producer)
        wait_for(
            lambda: (
                store.exists(LLM_RESULT.key(key=_warmup().key))
                and int(store.hget(stats_key(GROUP), "enriched") or 0) >= 1
            ),
            60,
            "a first enrichment",
        )
        yield w


def _warmup() -> EnrichRequest:
    return explanation_request("warm-u", "warm-i", title="Warm", because="Up", ttl_s=600)


def stats(store: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in store.hgetall(stats_key(GROUP)).items()}


def cached(store: redis.Redis, key: str) -> EnrichResult | None:
    raw = store.get(LLM_RESULT.key(key=key))
    return EnrichResult.model_validate_json(raw) if raw else None


def test_ten_times_the_limit_is_paced_prioritised_and_stale_work_shed(
    settings: Settings, provider: LocalProvider, worker: WorkerProcess, store: redis.Redis
) -> None:
    since = time.time()
    before = stats(store)
    producer = bulk_producer(settings, **{"linger.ms": 5})
    sent = {}
    # 600 requests/s for 5 s: ten times what the provider allows. Each is useful for 5 s;
    # one in twenty is urgent (priority 10), the rest routine.
    t0 = time.monotonic()
    for n in range(3000):
        user, item = f"u{n % 300}", f"i{n}"
        request = explanation_request(
            user,
            item,
            title=f"Film {n}",
            because=f"Seen {n % 7}",
            priority=10.0 if n % 20 == 0 else 0.0,
            ttl_s=5,
        )
        sent[request.key] = request
        produce_event(producer, LLM_ENRICH_REQUESTS, request)
        if n % 60 == 59:
            producer.poll(0)
            lag = t0 + (n + 1) / 600 - time.monotonic()
            if lag > 0:
                time.sleep(lag)  # pacing the offered load at 600/s, not waiting on a result
    flush(producer)

    # Serving answers every request meanwhile, from the cache or a template, never waiting.
    recent = [WatchedItem("w1", "Toy Story (1995)", ("Animation", "Comedy"))]
    facts = {f"i{n}": ItemFacts(("Comedy",), popular=n % 2 == 0) for n in range(3000)}
    sources: set[str] = set()
    for user_n in range(300):
        items = [f"i{user_n + 300 * k}" for k in range(10)]
        answer = explain_items_sync(store, f"u{user_n}", items, recent=recent, facts=facts)
        assert set(answer) == set(items) and all(e.text for e in answer.values())
        sources |= {e.source for e in answer.values()}
    assert sources == {"llm", "template"}

    final = wait_for(
        lambda: (
            (s := stats(store)).get("received", 0) >= 3000
            and s.get("queue_depth", 1) == 0
            and s.get("in_flight", 1) == 0
            and s
        ),
        60,
        "the enricher to take in and drain all 3000 requests",
    )
    log = provider.admin.log(since)
    assert max_in_window([e.t for e in log], 1.0) <= 60, "the provider saw more than its limit"
    assert not [e for e in log if e.status == 429], "the bucket let the provider refuse calls"
    assert final["enriched"] > 0 and final["stale"] > 1000, final

    done = {k: r for k in sent if (r := cached(store, k)) is not None}
    assert len(done) == final["enriched"] - before["enriched"]
    for key, result in done.items():
        # No result for a request that was already stale when it was taken from the queue.
        assert result.produced_at <= sent[key].expires_at + timedelta(seconds=3.5)
    urgent = [k for k, r in sent.items() if r.priority > 0]
    routine = [k for k, r in sent.items() if r.priority == 0]
    share_urgent = sum(k in done for k in urgent) / len(urgent)
    share_routine = sum(k in done for k in routine) / len(routine)
    # Urgent work goes first: on an idle machine ~all of it is served (the test's worst seen
    # under a load average of 17 was 65%, against 8% of the routine work).
    assert share_urgent >= 0.5 and share_urgent > 4 * share_routine, (
        share_urgent,
        share_routine,
        str(final),
    )


def test_a_hanging_provider_trips_the_breaker_and_the_enricher_recovers(
    settings: Settings, provider: LocalProvider, worker: WorkerProcess, store: redis.Redis
) -> None:
    provider.admin.configure(failure="hang")
    before = stats(store)
    producer = bulk_producer(settings)
    keys = []
    for n in range(30):
        request = explanation_request(
            f"hang-u{n}", f"hang-i{n}", title=f"H{n}", because="X", ttl_s=600
        )
        keys.append(request.key)
        produce_event(producer, LLM_ENRICH_REQUESTS, request)
    flush(producer)
    wait_for(
        lambda: stats(store).get("breaker_trips", 0) > before.get("breaker_trips", 0),
        30,
        "the breaker to trip on the hanging provider",
    )
    hang_started = time.time()
    wait_for(
        lambda: stats(store).get("breaker_rejected", 0) > before.get("breaker_rejected", 0),
        30,
        "calls to fail fast while the breaker is open",
    )
    provider.admin.configure(failure="none")
    wait_for(
        lambda: all(cached(store, k) is not None for k in keys),
        60,
        "every request held back during the hang to be enriched after it",
    )
    after = stats(store)
    assert after["breaker_state"] == 0  # closed again
    assert worker.alive()
    # While open, the breaker let at most one trial call per reset period reach the provider.
    hung = [e for e in provider.admin.log(hang_started) if e.status == 0]
    assert len(hung) <= 16 + 10, len(hung)

    # The API key is never logged, in the worker's log (which does hold the breaker's
    # warnings, so the check is not vacuous) or the provider's.
    text = worker.log.read_text()
    assert "circuit breaker OPEN" in text
    assert SECRET not in text
    assert SECRET not in provider.log_file.read_text()


def test_catalog_items_without_description_or_genres_are_enriched(
    settings: Settings, provider: LocalProvider, worker: WorkerProcess, store: redis.Redis
) -> None:
    items = [
        CatalogItem(item_id="cat-1", title="Heat", year=1995, genres=["Crime"], popularity_hint=5),
        CatalogItem(item_id="cat-2", title="Unknown Film", genres=["unknown"]),
        CatalogItem(item_id="cat-3", title="Described", genres=["Drama"], description="Known."),
    ]
    publish_items(settings, items)
    wait_for(
        lambda: (
            cached(store, description_key("cat-1"))
            and cached(store, description_key("cat-2"))
            and cached(store, classification_key("cat-2"))
        ),
        30,
        "descriptions and genres for the items that lack them",
    )
    labels = cached(store, classification_key("cat-2")).labels
    assert labels and set(labels) <= set(GENRE_VOCABULARY)
    assert "Heat" in cached(store, description_key("cat-1")).text
    assert cached(store, description_key("cat-3")) is None
    assert cached(store, classification_key("cat-1")) is None


def test_a_malformed_request_is_dead_lettered_and_the_worker_goes_on(
    settings: Settings, provider: LocalProvider, worker: WorkerProcess, store: redis.Redis
) -> None:
    dlq_before = end_offsets(settings, DEAD_LETTERS.name)
    producer = bulk_producer(settings)
    producer.produce(LLM_ENRICH_REQUESTS.name, key=b"bad", value=b'{"kind": "poem"}')
    good = explanation_request("dl-u", "dl-i", title="T", because="B", ttl_s=600)
    produce_event(producer, LLM_ENRICH_REQUESTS, good)
    flush(producer)
    wait_for(lambda: cached(store, explanation_key("dl-u", "dl-i")), 30, "the good request")
    wait_for(lambda: stats(store).get("dead", 0) >= 1, 10, "the dead letter count")
    letters = [
        codecs.decode(DEAD_LETTERS, v)
        for _k, v in read_range(
            settings, DEAD_LETTERS.name, dlq_before, end_offsets(settings, DEAD_LETTERS.name)
        )
    ]
    mine = [d for d in letters if d.processor == "llm-enricher" and d.key == "bad"]
    assert mine and "key" in mine[0].reason
    assert worker.alive()
