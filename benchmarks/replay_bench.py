"""Replay benchmark: ML-100K produced to the broker, and consumed by a Faust agent.

    python -m benchmarks.replay_bench [--runs 3]

On a fresh stack of its own it measures, in one run:
- replay: events/s of `streamrec replay ml-100k` (read, validate, encode, produce, acks=all);
- bare producer: events/s of librdkafka producing the same pre-encoded bytes with the same
  settings (replay's producer: failed deliveries reported only), the physical limit the
  replay path is compared against (the ratio);
- Python cost per event: the process's CPU time in replay minus that of the bare producer
  (librdkafka's threads do the same work in both), divided by the events;
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
from streamrec.streams.producer import DeliveryTracker, flush
from streamrec.streams.replay import ReplayOptions, replay, replay_producer
from streamrec.streams.sources.base import RowError
from streamrec.streams.sources.movielens import MovieLensInteractions
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import EVENTS_INTERACTIONS


def bare_produce(
    settings: Settings, payloads: list[tuple[bytes | None, bytes]]
) -> tuple[float, float]:
    """(events/s, process CPU seconds) of librdkafka producing `payloads`, configured as
    replay's producer is (failed deliveries reported only). The producer is connected and
    has its idempotence id before the clock starts (one warm-up event, acknowledged), and
    the loop is the tightest Python can make: the ceiling of any replay."""
    failures = DeliveryTracker()
    producer = replay_producer(settings, failures)
    topic = EVENTS_INTERACTIONS.name
    producer.produce(topic, payloads[0][1], payloads[0][0])
    flush(producer)
    produce, poll = producer.produce, producer.poll
    t0, cpu0 = time.perf_counter(), time.process_time()
    for key, value in payloads:
        try:
            produce(topic, value, key)
        except BufferError:
            while True:
                poll(0.05)
                try:
                    produce(topic, value, key)
                    break
                except BufferError:
                    continue
    flush(producer)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    failures.raise_if_failed()
    return len(payloads) / elapsed, cpu


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
        replay_rates, bare_rates, extra_cpu = [], [], []
        for _ in range(args.runs):
            # Replay's producer connects while replay reads the file; the bare producer is
            # warmed up before its clock starts, so neither pays for connecting.
            cpu0 = time.process_time()
            report = replay(
                settings, MovieLensInteractions(ml), "ml-100k", ReplayOptions(progress=False)
            )
            replay_cpu = time.process_time() - cpu0
            assert report.produced == 100_000
            replay_rates.append(report.events_per_s)
            rate, bare_cpu = bare_produce(settings, payloads)
            bare_rates.append(rate)
            extra_cpu.append((replay_cpu - bare_cpu) / report.produced * 1e6)
        # The log now holds runs x (200,000 events + 1 warm-up); a consumer reads it all.
        total = args.runs * (2 * len(payloads) + 1)
        steady, with_startup = consume(settings, total)

    r, b = statistics.median(replay_rates), statistics.median(bare_rates)
    print(f"machine: {machine()}")
    print(
        f"replay ml-100k (median of {args.runs}): {r:,.0f} events/s "
        f"(runs: {', '.join(f'{x:,.0f}' for x in replay_rates)})"
    )
    print(f"bare librdkafka, same bytes (median): {b:,.0f} events/s; replay/bare = {r / b:.2f}")
    print(
        f"Python cost per event (replay CPU - bare CPU, median): "
        f"{statistics.median(extra_cpu):.2f} µs "
        f"(runs: {', '.join(f'{x:.2f}' for x in extra_cpu)})"
    )
    print(
        f"Faust agent consuming {total:,} events: {steady:,.0f} events/s steady, "
        f"{with_startup:,.0f} events/s including worker start-up"
    )


if __name__ == "__main__":
    main()
