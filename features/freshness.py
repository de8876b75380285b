"""Measuring feature freshness: from `produce()` to visible through Feast's online store.

Responsibilities:
- `measure_freshness(settings, items, rate, seconds)`: produce live events (event time =
  now) for synthetic users at `rate` events/s; every 10th is a probe; a reader thread polls
  `get_online_features` for the probes' users (up to 200 per read, one read every `poll_s`
  at most) and records, per probe, the time from its `produce()` call to the read that
  first shows its event time as the user's `last_event_ms`. Returns p50/p99/max in ms, the
  achieved rate, the probe count and the CPU the measuring process itself used per event.

The reader's own period (one Feast read, at least `poll_s`) is part of the figure: it is what
a reader sees. The period keeps the measurement from taking a core of its own: a reader
polling back to back (each Feast read costs milliseconds of CPU) competed with the worker
it measures on a small machine.
Probe events carry `source="freshness-probe"` and users `live-<tag>-<n>`.
- `group_lag(settings, group)`: what a consumer group has not committed yet (to start a
  measurement only once a worker has caught up).

Used by `benchmarks/features_bench.py` and the demo.
"""

from __future__ import annotations

import threading
import time
import uuid
import warnings
from collections import deque
from datetime import UTC, datetime

import numpy as np
from confluent_kafka import Consumer, TopicPartition
from pydantic import BaseModel

from streamrec.features import feast_store
from streamrec.features.session import ts_ms
from streamrec.infra.settings import Settings
from streamrec.streams.producer import flush, latency_producer, produce_event
from streamrec.streams.table_reader import end_offsets
from streamrec.topics import EVENTS_INTERACTIONS, Interaction

USERS = 5000
PROBE_EVERY = 10
PROBE_SOURCE = "freshness-probe"


class Freshness(BaseModel):
    rate: float
    probes: int
    unseen: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    measure_cpu_us: float = 0.0  # CPU of the measuring process (producer + reader) per event


def group_lag(settings: Settings, group: str, topic: str = EVENTS_INTERACTIONS.name) -> int:
    """Messages of `topic` not yet committed by consumer group `group` (all partitions)."""
    consumer = Consumer({**settings.kafka_config(), "group.id": group})
    try:
        ends = end_offsets(consumer, topic)
        tps = [TopicPartition(topic, p) for p in ends]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
        return sum(end - max(committed.get(p, 0), 0) for p, end in ends.items())
    finally:
        consumer.close()


def live_event(n: int, tag: str, items: list[str], now_ms: int) -> Interaction:
    return Interaction(
        event_id=f"live:{tag}:{n}",
        user_id=f"live-{tag}-{n % USERS}",
        item_id=items[n % len(items)],
        kind="view",
        ts=datetime.fromtimestamp(now_ms / 1000, UTC),
        source=PROBE_SOURCE,  # so consumers of the log (training, analytics) can skip them
    )


def measure_freshness(
    settings: Settings,
    items: list[str],
    rate: float,
    seconds: float,
    grace_s: float = 30.0,
    poll_s: float = 0.05,
) -> Freshness:
    store = feast_store.feature_store(settings)
    producer = latency_producer(settings)
    tag = uuid.uuid4().hex[:6]
    probes: deque[tuple[str, int, float]] = deque()
    lags: list[float] = []
    pending: dict[str, list[tuple[int, float]]] = {}
    done_producing = threading.Event()

    def reader() -> None:
        deadline: float | None = None
        next_read = 0.0
        while True:
            while probes:
                user, ts, t_prod = probes.popleft()
                pending.setdefault(user, []).append((ts, t_prod))
            if done_producing.is_set():
                deadline = deadline or time.perf_counter() + grace_s
                if (not pending and not probes) or time.perf_counter() > deadline:
                    return
            wait = next_read - time.perf_counter()
            if not pending or wait > 0:
                time.sleep(0.001 if not pending else wait)  # nothing to look for / the period
                continue
            next_read = time.perf_counter() + poll_s
            users = list(pending)[:200]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = store.get_online_features(
                    features=["user_session_fv:last_event_ms"],
                    entity_rows=[{"user_id": u} for u in users],
                ).to_dict()
            now = time.perf_counter()
            for user, last in zip(got["user_id"], got["last_event_ms"], strict=True):
                if last is None:
                    continue
                keep = []
                for ts, t_prod in pending[user]:
                    if last >= ts:
                        lags.append(now - t_prod)
                    else:
                        keep.append((ts, t_prod))
                if keep:
                    pending[user] = keep
                else:
                    del pending[user]

    thread = threading.Thread(target=reader, name="freshness-reader", daemon=True)
    cpu0 = time.process_time()
    thread.start()
    start = time.perf_counter()
    total = int(rate * seconds)
    for n in range(total):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing the producer to the target rate
        now_ms = ts_ms(time.time())
        event = live_event(n, tag, items, now_ms)
        produce_event(producer, EVENTS_INTERACTIONS, event)
        if n % PROBE_EVERY == 0:
            probes.append((event.user_id, now_ms, time.perf_counter()))
        producer.poll(0)
    achieved = total / (time.perf_counter() - start)
    flush(producer)
    done_producing.set()
    thread.join()
    cpu_us = (time.process_time() - cpu0) / max(total, 1) * 1e6
    arr = np.asarray(lags or [float("nan")]) * 1000
    return Freshness(
        rate=achieved,
        probes=len(lags),
        unseen=sum(len(v) for v in pending.values()),
        p50_ms=float(np.percentile(arr, 50)),
        p99_ms=float(np.percentile(arr, 99)),
        max_ms=float(arr.max()),
        measure_cpu_us=cpu_us,
    )
