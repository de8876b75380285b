"""The HTTP API on the real stack: levels by taking dependencies away, bad input, overload,
impressions, and a promotion during a stream of requests."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis

from streamrec.analytics.experiments import variant_for
from streamrec.infra.settings import Settings
from streamrec.scenarios.seed import MovieLens
from streamrec.streams import codecs
from streamrec.streams.producer import flush, latency_producer, produce_event
from streamrec.topics import RECS_SERVED, REGISTRY_CHANGES, Impression, RegistryChange
from streamrec.topics.stores import REMOVED_ITEMS, USER_CANDIDATES
from tests.integration.serving.conftest import (
    USERS_WITH_FEATURES,
    USERS_WITHOUT_FEATURES,
    install_ranker,
    serve,
)
from tests.kafka_helpers import end_offsets, read_range, wait_for

pytestmark = pytest.mark.integration

# Users no test of this module changes (the first ten lose candidates, items, the model...).
UNTOUCHED = USERS_WITH_FEATURES[10:]


@pytest.fixture(scope="module")
def server(serving_stack: Settings):
    # No response cache here (each request shows its own level); the model poll is slow so
    # only registry.changes or a test triggers a reload.
    with serve(serving_stack, cache_ttl_s=0.0, refresh_s=0.2, model_poll_s=3600.0) as server:
        yield server


def recs(server, user: str, **params) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/users/{user}/recommendations", params=params, timeout=10)


def test_full_answer_ranked_by_the_promoted_model(server, movielens: MovieLens):
    r = recs(server, "1", k=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["level"] == "FULL"
    assert body["model_version"] == server.worker.models.version
    items = body["items"]
    assert len(items) == 10 and all(i["title"] for i in items)
    rated = {i for _, i, _ in movielens.history["1"]}
    assert rated.isdisjoint(i["item_id"] for i in items)
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)


def test_user_without_features_is_stale_features(server):
    body = recs(server, USERS_WITHOUT_FEATURES[0]).json()
    assert body["level"] == "STALE_FEATURES" and body["model_version"]
    assert len(body["items"]) == 20


def test_unknown_user_gets_a_cold_start_answer(server):
    body = recs(server, "someone-new", k=5).json()
    assert body["level"] == "POPULAR" and len(body["items"]) == 5


def test_session_context_excludes_what_was_just_seen(server):
    first = recs(server, "2", k=5).json()["items"]
    seen = [first[0]["item_id"], first[1]["item_id"]]
    r = httpx.post(
        f"{server.url}/v1/users/2/recommendations",
        json={"k": 5, "recent_item_ids": seen},
        timeout=10,
    )
    assert r.status_code == 200
    assert set(seen).isdisjoint(i["item_id"] for i in r.json()["items"])


def test_removed_items_are_filtered_once_announced(server):
    top = recs(server, "3", k=5).json()["items"][0]["item_id"]
    redis.Redis.from_url(server.settings.redis_url).sadd(REMOVED_ITEMS.key(), top)
    wait_for(
        lambda: top not in {i["item_id"] for i in recs(server, "3", k=5).json()["items"]},
        10,
        "the removed item to disappear",
    )


def test_removing_the_candidates_falls_back_to_popular(server):
    redis.Redis.from_url(server.settings.redis_url).delete(USER_CANDIDATES.key(user_id="4"))
    body = recs(server, "4", k=10).json()
    assert body["level"] == "POPULAR" and len(body["items"]) == 10


def test_unloading_the_model_falls_back_to_simple_ranking(server):
    server.worker.models.unload()
    try:
        body = recs(server, "5", k=10).json()
        assert body["level"] == "SIMPLE_RANKING" and body["model_version"] is None
        assert len(body["items"]) == 10
    finally:
        loop = server.worker.loop
        future = asyncio.run_coroutine_threadsafe(server.worker.models.refresh(), loop)
        assert future.result(60) is True
    assert recs(server, "5").json()["level"] == "FULL"


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/v1/users/1/recommendations", {"k": 0}, 422),
        ("/v1/users/1/recommendations", {"k": 1000}, 422),
        ("/v1/users/1/recommendations", {"k": "many"}, 422),
        ("/v1/users/1/recommendations", {"priority": "urgent"}, 422),
        ("/v1/users/bad%20id/recommendations", {}, 422),
        ("/v1/users/1/recommendations", {"budget_ms": 1}, 422),
    ],
)
def test_invalid_input_is_422_with_the_reason(server, path, params, status):
    r = httpx.get(server.url + path, params=params, timeout=10)
    assert r.status_code == status
    assert r.json()["detail"][0]["loc"]


def test_the_fast_path_answers_as_fastapi_does(server):
    """A plain GET is answered by serving.fast_path; the same request with a parameter the
    route does not declare goes through FastAPI's route (which ignores it): same answer."""
    fast = recs(server, UNTOUCHED[0], k=7)
    routed = recs(server, UNTOUCHED[0], k=7, utm="x")
    assert fast.status_code == routed.status_code == 200
    assert fast.headers["content-type"] == routed.headers["content-type"]
    a, b = fast.json(), routed.json()
    for body in (a, b):
        del body["request_id"], body["latency_ms"]
    assert a == b and a["level"] == "FULL" and len(a["items"]) == 7
    echoed = httpx.get(
        f"{server.url}/v1/users/{UNTOUCHED[0]}/recommendations",
        headers={"x-request-id": "fast-1"},
        timeout=10,
    )
    assert echoed.json()["request_id"] == "fast-1"


def test_bad_and_oversized_bodies(server):
    url = f"{server.url}/v1/users/1/recommendations"
    r = httpx.post(url, json={"k": 5, "surprise": 1}, timeout=10)
    assert r.status_code == 422 and "surprise" in r.text
    r = httpx.post(url, json={"recent_item_ids": ["x" * 100] * 300}, timeout=10)
    assert r.status_code == 413 and "request body over" in r.json()["detail"]


def test_health_readiness_metrics_and_openapi(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["ready"] and ready["model"] and ready["items"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'serving_breaker_state{dependency="candidates"}' in metrics
    assert 'serving_requests_total{channel="http",level="FULL"}' in metrics
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/users/{user_id}/recommendations" in schema["paths"]


def test_every_answer_publishes_an_impression(server):
    before = end_offsets(server.settings, RECS_SERVED.name)
    ids = []
    for n in range(3):
        r = httpx.get(
            f"{server.url}/v1/users/{USERS_WITH_FEATURES[n]}/recommendations",
            headers={"x-request-id": f"imp-{n}"},
            timeout=10,
        )
        ids.append((r.json()["request_id"], [i["item_id"] for i in r.json()["items"]]))

    def published() -> dict[str, Impression] | None:
        # Ours, by request id: earlier tests' answers on the same worker may still be
        # lingering in its producer and land in the same range.
        after = end_offsets(server.settings, RECS_SERVED.name)
        got = {}
        for _, value in read_range(server.settings, RECS_SERVED.name, before, after):
            imp = codecs.decode_json(Impression, value)
            got[imp.request_id] = imp
        return got if all(request_id in got for request_id, _ in ids) else None

    got = wait_for(published, 20, "impressions on recs.served", interval=0.3)
    for request_id, items in ids:
        assert got[request_id].item_ids == items and got[request_id].channel == "http"
        user = got[request_id].user_id
        assert got[request_id].variant == variant_for(server.settings, user)


def test_promotion_during_a_stream_of_requests_drops_none(server, trained_ranker: Path):
    old = server.worker.models.version
    results: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def stream(n: int) -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not stop.is_set():
                user = UNTOUCHED[(n * 7 + i) % len(UNTOUCHED)]
                r = client.get(f"{server.url}/v1/users/{user}/recommendations")
                results.append((r.status_code, r.json().get("model_version")))
                i += 1

    threads = [threading.Thread(target=stream, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(results) > 20, 30, "requests before the promotion")
        new = install_ranker(server.settings, trained_ranker, version=f"{old}-b")
        producer = latency_producer(server.settings)
        produce_event(
            producer,
            REGISTRY_CHANGES,
            RegistryChange(kind="ranker", name="ranker", version=new, action="promote"),
        )
        flush(producer)
        wait_for(lambda: any(v == new for _, v in results[-20:]), 60, "answers from the new model")
        mark = len(results)
        wait_for(lambda: len(results) > mark + 20, 30, "requests after the promotion")
    finally:
        stop.set()
        for t in threads:
            t.join()
    statuses = Counter(s for s, _ in results)
    assert statuses == {200: len(results)}, statuses
    versions = [v for _, v in results]
    assert set(versions) == {old, new}
    last_old = max(i for i, v in enumerate(versions) if v == old)
    first_new = versions.index(new)
    # Some overlap is possible across the 4 client threads, but never a gap (None = a fallback).
    assert first_new <= last_old + 4


@pytest.fixture(scope="module")
def small_server(serving_stack: Settings):
    # Two requests ranked at a time and a one-place background room: easy to overload.
    with serve(
        serving_stack,
        cache_ttl_s=0.0,
        max_in_flight=2,
        queue_interactive=200,
        queue_prefetch=1,
        queue_background=1,
        request_budget_ms=10_000,
        max_queue_share=0.9,
        retry_after_s=2,
    ) as server:
        yield server


async def test_overload_sheds_background_first_and_interactive_keeps_answering(small_server):
    users = UNTOUCHED
    async with httpx.AsyncClient(base_url=small_server.url, timeout=30) as client:

        async def ask(n: int, priority: str) -> httpx.Response:
            user = users[n % len(users)]
            return await client.get(
                f"/v1/users/{user}/recommendations", params={"priority": priority}
            )

        background = [ask(n, "background") for n in range(60)]
        interactive = [ask(n, "interactive") for n in range(30)]
        answers = await asyncio.gather(*background, *interactive)
    bg, it = answers[:60], answers[60:]
    shed = [r for r in bg if r.status_code == 503]
    assert shed, "no background request was shed"
    for r in shed:
        assert r.headers["retry-after"] == "2"
        assert r.headers["x-overloaded"] == "do-not-retry"
        assert r.json()["retry"] is False and "overloaded, do not retry" in r.json()["detail"]
    assert all(r.status_code in (200, 503) for r in bg)
    assert [r.status_code for r in it] == [200] * 30
    assert all(r.json()["level"] in ("FULL", "STALE_FEATURES") for r in it)


@pytest.mark.parametrize(
    "body",
    [
        b'{"k": NaN}',
        b'{"k": Infinity}',
        b'{"k": -Infinity}',
        b'{"surprise": NaN}',
        b'{"k": 1e400}',
        b'{"k": 123456789012345678901234567890}',
        b'{"recent_item_ids": ' + b"[" * 900 + b"]" * 900 + b"}",
        b'{"recent_item_ids": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
    ids=["nan", "inf", "-inf", "nan-unknown", "1e400", "huge-int", "nested", "too-nested"],
)
def test_any_body_that_does_not_validate_is_a_4xx_without_a_traceback(server, body, caplog):
    url = f"{server.url}/v1/users/1/recommendations"
    # uvicorn logs an application's exception on its own logger, which does not propagate.
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(caplog.handler)
    try:
        with caplog.at_level("ERROR"):
            headers = {"content-type": "application/json"}
            r = httpx.post(url, content=body, headers=headers, timeout=10)
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert r.status_code in (400, 422), r.text[:300]
    assert r.json()["detail"]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], "logged"


def test_the_body_limit_and_the_budget_rule_hold_on_the_fast_get(server):
    url = f"{server.url}/v1/users/{UNTOUCHED[1]}/recommendations"
    assert httpx.request("GET", url, content=b"x" * 10_000_000, timeout=30).status_code == 413
    for budget in ("0", "4"):
        get = httpx.get(url, params={"budget_ms": budget}, timeout=10)
        post = httpx.post(url, json={"budget_ms": int(budget)}, timeout=10)
        assert get.status_code == post.status_code == 422, budget
    assert httpx.get(url, params={"budget_ms": "5000"}, timeout=10).status_code == 200


@pytest.mark.parametrize("user", ["用户", "a b", "a:b/c"])
def test_user_ids_outside_the_shared_rule_are_refused(server, user):
    r = httpx.get(f"{server.url}/v1/users/{user}/recommendations", timeout=10)
    assert r.status_code in (404, 422)
