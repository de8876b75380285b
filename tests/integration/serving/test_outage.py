"""Taking Redis away for real: answers keep coming from memory (POPULAR), breakers open, and
the worker recovers when Redis is back."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from streamrec.scenarios.seed import MovieLens, seed_candidates, seed_popular
from streamrec.streams.admin import TopicManager
from streamrec.streams.catalog import publish_items
from tests.integration.serving.conftest import install_ranker, serve
from tests.kafka_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_redis_down_degrades_to_popular_and_recovers(
    stack_factory, movielens: MovieLens, trained_ranker: Path
):
    settings, manager = stack_factory()
    manager.up()
    TopicManager(settings).apply()
    publish_items(settings, movielens.items)
    seed_popular(settings, movielens)
    seed_candidates(settings, movielens, ["1", "2"])
    install_ranker(settings, trained_ranker)
    with serve(
        settings, cache_ttl_s=0.0, breaker_failures=2, breaker_reset_s=0.5, refresh_s=0.2
    ) as server:
        url = f"{server.url}/v1/users/1/recommendations"
        before = httpx.get(url, timeout=10).json()
        assert before["level"] == "STALE_FEATURES"  # candidates and model; no Feast rows

        manager.redis.stop()
        for _ in range(5):
            r = httpx.get(url, timeout=10)
            assert r.status_code == 200
            body = r.json()
            assert body["level"] == "POPULAR" and len(body["items"]) == 20
            assert body["latency_ms"] < 1000
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'serving_breaker_state{dependency="candidates"} 2.0' in metrics

        manager.redis.start()
        seed_candidates(settings, movielens, ["1"])  # whatever the restart kept or not
        wait_for(
            lambda: httpx.get(url, timeout=10).json()["level"] != "POPULAR",
            30,
            "answers from the candidates again",
        )
