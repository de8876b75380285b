"""Redis with a replica and three Sentinels (`stack.redis_sentinel`): the primary is killed
under serving load; the Sentinels promote the replica, the serving worker answers every
request meanwhile (at a lower level while no primary answers), is FULL again after the
failover, and the clients made before the kill write to the new primary."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis

from streamrec.infra.processes import free_port
from streamrec.infra.redis_clients import sync_client
from streamrec.infra.settings import Settings
from streamrec.infra.stack import StackManager
from streamrec.scenarios.seed import MovieLens, seed_candidates, seed_popular, seed_user_features
from streamrec.streams.admin import TopicManager
from streamrec.streams.catalog import publish_items
from tests.conftest import make_settings
from tests.integration.serving.conftest import (  # noqa: F401 - fixtures shared with serving
    USERS_WITH_FEATURES,
    install_ranker,
    movielens,
    serve,
    trained_ranker,
)
from tests.kafka_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _sentinel_stack(tmp_path: Path) -> tuple[Settings, StackManager]:
    settings = make_settings(
        tmp_path / "stack",
        stack={
            "redis_sentinel": True,
            "redis_replica_port": free_port(),
            "redis_sentinel_ports": [free_port(), free_port(), free_port()],
        },
    )
    manager = StackManager(settings)
    started = manager.up()
    assert {"redis", "redis-replica", *(f"redis-sentinel-{i}" for i in (1, 2, 3))} <= {
        name for name, yes in started.items() if yes
    }
    return settings, manager


def _primary_port(settings: Settings) -> int:
    host, port = settings.redis_sentinels[0]
    answer = redis.Redis(host=host, port=port, socket_timeout=1).sentinel_get_master_addr_by_name(
        settings.redis.sentinel_master
    )
    return int(answer[1])


def test_the_primary_lost_under_serving_load_is_replaced_without_a_failed_request(
    tmp_path: Path,
    movielens: MovieLens,  # noqa: F811
    trained_ranker: Path,  # noqa: F811
):
    settings, manager = _sentinel_stack(tmp_path)
    try:
        TopicManager(settings).apply()
        stack = settings.stack
        assert _primary_port(settings) == stack.redis_port
        assert all(p.answers for p in manager.status() if p.name.startswith("redis"))
        publish_items(settings, movielens.items)
        seed_popular(settings, movielens)
        seed_candidates(settings, movielens, USERS_WITH_FEATURES)
        seed_user_features(settings, movielens, USERS_WITH_FEATURES)
        install_ranker(settings, trained_ranker)
        replica = redis.Redis(host=stack.host, port=stack.redis_replica_port, socket_timeout=1)
        client = sync_client(settings, socket_timeout=1.0)
        client.set("sentinel-test:before", "kept")
        wait_for(lambda: replica.get("sentinel-test:before") == b"kept", 30, "replication")

        answers: list[tuple[float, int, str]] = []  # (monotonic, status, level)
        stop = threading.Event()
        # A short response-cache life: answers are computed, not replayed from the cache.
        with serve(settings, cache_ttl_s=0.05, request_budget_ms=2000) as server:

            def load() -> None:
                with httpx.Client(base_url=server.url, timeout=10) as http:
                    n = 0
                    while not stop.is_set():
                        user = USERS_WITH_FEATURES[n % len(USERS_WITH_FEATURES)]
                        r = http.get(f"/v1/users/{user}/recommendations", params={"k": 10})
                        level = r.json().get("level", "") if r.status_code == 200 else ""
                        answers.append((time.monotonic(), r.status_code, level))
                        n += 1

            thread = threading.Thread(target=load, daemon=True)
            thread.start()
            wait_for(lambda: sum(lv == "FULL" for _, _, lv in answers) >= 20, 60, "FULL answers")
            pid = manager.redis.pid()
            assert pid is not None
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait_for(
                lambda: _primary_port(settings) == stack.redis_replica_port,
                60,
                "the Sentinels to promote the replica",
            )
            promoted_at = time.monotonic()
            wait_for(
                lambda: any(t > promoted_at and lv == "FULL" for t, _, lv in answers),
                60,
                "a FULL answer from the promoted replica",
            )
            stop.set()
            thread.join(timeout=30)
        statuses = Counter(status for _, status, _ in answers)
        during = Counter(lv for t, _, lv in answers if killed_at <= t <= promoted_at)
        full_again = min(t for t, _, lv in answers if t > promoted_at and lv == "FULL")
        print(
            f"sentinel-failover: {len(answers)} requests {dict(statuses)}; kill to promotion "
            f"{promoted_at - killed_at:.1f} s, levels meanwhile {dict(during)}; FULL again "
            f"{full_again - promoted_at:.2f} s after the promotion was seen"
        )
        assert set(statuses) == {200}, statuses  # every request answered, none failed
        # The same client object, made before the kill, reaches the new primary.
        client.set("sentinel-test:after", "written")
        assert client.get("sentinel-test:before") == b"kept"
        assert replica.get("sentinel-test:after") == b"written"
    finally:
        manager.down()
