"""streams.metrics with real Redis: /metrics served, worker registered, beats, deregistered."""

from __future__ import annotations

import os

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from streamrec.streams import metrics
from streamrec.topics import EVENTS_INTERACTIONS
from tests.integration.analytics.helpers import interactions, produce
from tests.kafka_helpers import end_offsets, wait_for

pytestmark = pytest.mark.integration


def _mine(settings, name: str) -> list[metrics.WorkerBeat]:
    return [b for b in metrics.live_workers(settings) if b.name == name]


def test_serve_registers_exposes_beats_and_deregisters(stack, unique):
    settings = stack.with_overrides(analytics={"heartbeat_interval_s": 0.2, "heartbeat_ttl_s": 2})
    name = f"t-metrics-{unique}"
    handle = metrics.serve(settings, name)
    try:
        metrics.EVENTS_PROCESSED.labels(name, "events.interactions").inc(3)
        metrics.BREAKER_STATE.labels(name, "redis").set(metrics.BREAKER_OPEN)
        (beat,) = _mine(settings, name)
        assert beat.pid == os.getpid() and beat.metrics_url == handle.url and handle.port > 0
        text = httpx.get(handle.url, timeout=5).text
        sample = (
            f'streamrec_events_processed_total{{processor="{name}",topic="events.interactions"}}'
        )
        assert f"{sample} 3.0" in text
        assert f'streamrec_breaker_state{{dependency="redis",worker="{name}"}} 2.0' in text
        wait_for(
            lambda: any(b.heartbeat_at > beat.heartbeat_at for b in _mine(settings, name)),
            5,
            "a later heartbeat",
        )
    finally:
        handle.stop()
    assert _mine(settings, name) == []
    (record,) = [b for b in metrics.stopped_workers(settings) if b.name == name]
    assert record.state == "stopped" and record.stopped_at >= beat.heartbeat_at
    with pytest.raises(httpx.HTTPError):
        httpx.get(handle.url, timeout=2)


def test_serve_with_a_group_reports_its_consumer_lag(stack, unique):
    settings = stack.with_overrides(analytics={"heartbeat_interval_s": 0.2})
    group = f"t-lag-{unique}"
    produce(settings, interactions(unique, 20))  # committed at 0: the lag is the end offset
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
    consumer.commit(offsets=[TopicPartition(EVENTS_INTERACTIONS.name, 0, 0)], asynchronous=False)
    consumer.close()
    expected = end_offsets(settings, EVENTS_INTERACTIONS.name)[0]
    handle = metrics.serve(settings, f"t-lag-{unique}", group=group)
    try:
        sample = f'streamrec_consumer_lag{{group="{group}",topic="{EVENTS_INTERACTIONS.name}"}}'
        wait_for(
            lambda: f"{sample} {float(expected)}" in httpx.get(handle.url, timeout=5).text,
            15,
            "the lag gauge of the group",
        )
        (beat,) = _mine(settings, f"t-lag-{unique}")
        assert beat.group == group
    finally:
        handle.stop()


def test_a_stuck_worker_says_so_on_readyz_and_in_its_heartbeat_at_once(stack, unique):
    # A long beat interval: the stuck record must not wait for the next beat.
    settings = stack.with_overrides(analytics={"heartbeat_interval_s": 30})
    name = f"t-stuck-{unique}"
    metrics.READINESS.reset()
    handle = metrics.serve(settings, name)
    try:
        base = handle.url.removesuffix("/metrics")
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
        assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
        metrics.mark_stuck("inserts failing for 31 s")
        answer = httpx.get(f"{base}/readyz", timeout=5)
        assert answer.status_code == 503
        assert answer.json()["reason"] == "inserts failing for 31 s"
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200  # alive, not ready
        (beat,) = _mine(settings, name)  # still listed: it runs, and says why it is stuck
        assert beat.state == "stuck" and beat.reason == "inserts failing for 31 s"
        assert "streamrec_events_processed_total" in httpx.get(handle.url, timeout=5).text
    finally:
        handle.stop()
        metrics.READINESS.reset()
