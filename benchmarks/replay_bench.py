"""Replay benchmark: ML-100K produced to the broker, and consumed by a Faust agent.

    python -m benchmarks.replay_bench [--runs 3]

On a fresh stack of its own it measures, in one run:
- replay: events/s of `streamrec replay ml-100k` (read, validate, encode, produce, acks=all);
- bare producer: events/s of librdkafka producing the same pre-encoded bytes with the same
  settings, the physical limit the replay path is compared against (the ratio);
- consume: events/s of a Faust agent (the interaction-counter worker, a real `streamrec
  worker` process) reading and validating the 100,000 events, from its first batch to its
  last (and including start-up).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import redis

from benchmarks.common import bench_stack, machine
from streamrec.infra.settings import Settings
from streamrec.processors.interaction_counter import counter_key
from streamrec.streams import codecs, datasets
from streamrec.streams.producer import bulk_producer, flush
from streamrec.streams.replay import ReplayOptions, replay
from streamrec.streams.sources.base import RowError
from streamrec.streams.sources.movielens import MovieLensInteractions
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import EVENTS_INTERACTIONS


def bare_produce(settings: Settings, payloads: list[tuple[bytes | None, bytes]]) -> float:
    producer = bulk_producer(settings)
    t0 = time.perf_counter()
    for i, (key, value) in enumerate(payloads):
        while True:
            try:
                producer.produce(EVENTS_INTERACTIONS.name, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 2000 == 0:
            producer.poll(0)
    flush(producer)
    return len(payloads) / (time.perf_counter() - t0)


def consume(settings: Settings, expected: int) -> tuple[float, float]:
    group = f"bench-{uuid.uuid4().hex[:8]}"
    store = redis.Redis.from_url(settings.redis_url)
    t_start = time.perf_counter()
    first: tuple[float, int] | None = None
    with WorkerProcess(settings, "interaction-counter", group) as worker:
        while True:
            n = int(store.get(counter_key(group)) or 0)
            now = time.perf_counter()
            if n and first is None:
                first = (now, n)
            if n >= expected:
                break
            if not worker.alive() or now - t_start > 600:
                raise RuntimeError(
                    f"worker stopped or too slow at {n}/{expected}; see {worker.log}"
                )
            time.sleep(0.01)  # polling the counter; resolution 10 ms
    assert first is not None
    steady = (expected - first[1]) / (now - first[0])
    return steady, expected / (now - t_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    ml = datasets.fetch(Settings())
    events = [e for e in MovieLensInteractions(ml) if not isinstance(e, RowError)]
    payloads = [
        (EVENTS_INTERACTIONS.key_of(e), codecs.encode(EVENTS_INTERACTIONS, e)) for e in events
    ]

    with bench_stack() as settings:
        replay_rates, bare_rates = [], []
        for _ in range(args.runs):
            report = replay(
                settings, MovieLensInteractions(ml), "ml-100k", ReplayOptions(progress=False)
            )
            assert report.produced == 100_000
            replay_rates.append(report.events_per_s)
            bare_rates.append(bare_produce(settings, payloads))
        # The log now holds runs x 200,000 events; a consumer reads it all.
        total = args.runs * 2 * len(payloads)
        steady, with_startup = consume(settings, total)

    r, b = statistics.median(replay_rates), statistics.median(bare_rates)
    print(f"machine: {machine()}")
    print(
        f"replay ml-100k (median of {args.runs}): {r:,.0f} events/s "
        f"(runs: {', '.join(f'{x:,.0f}' for x in replay_rates)})"
    )
    print(f"bare librdkafka, same bytes (median): {b:,.0f} events/s; replay/bare = {r / b:.2f}")
    print(
        f"Faust agent consuming {total:,} events: {steady:,.0f} events/s steady, "
        f"{with_startup:,.0f} events/s including worker start-up"
    )


if __name__ == "__main__":
    main()
