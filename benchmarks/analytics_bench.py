"""Analytics sink: rows/s into embedded ClickHouse, and the lag it keeps at 5,000 events/s.

Starts a fresh stack of its own, runs `streamrec worker analytics-sink` as a process (the
deployed shape: it owns the chDB directory) and measures:

1. burst: N interactions produced as fast as possible (encoded beforehand); rows/s = N /
   (first produce → the sink's group has committed everything). The same rows inserted
   straight into chDB from this process (no Kafka, no decoding) give the store's own
   ceilings for comparison: as
   Python rows (`schema.insert`) and as the Arrow blocks the sink now inserts, built
   beforehand (`ChdbTables.insert` of a `ColumnBlock`);
2. sustained: events produced at a paced rate (default 5,000/s, interactions and
   impressions 4:1) for `--seconds`; the group's lag is sampled every 0.5 s.

Then the sink is stopped and ClickHouse is counted: every produced event must be a row.

    .venv/bin/python -m benchmarks.analytics_bench [--burst 200000] [--rate 5000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka.admin import AdminClient

from benchmarks.common import bench_stack, machine, percentiles
from streamrec.analytics import schema
from streamrec.analytics.columns import ColumnBlock, from_events
from streamrec.analytics.store import store_session
from streamrec.infra.settings import Settings
from streamrec.processors.analytics_sink import NAME, ChdbTables
from streamrec.streams import codecs, metrics
from streamrec.streams.lag import admin_client, consumer_lags
from streamrec.streams.producer import (
    DeliveryTracker,
    bulk_producer,
    flush,
    produce,
    produce_event,
)
from streamrec.streams.replay import replay_producer
from streamrec.streams.worker_process import WorkerProcess
from streamrec.topics import EVENTS_INTERACTIONS, RECS_SERVED, Impression, Interaction

TOPICS = [EVENTS_INTERACTIONS.name, RECS_SERVED.name]
GROUP = "streamrec-bench-analytics"
START = datetime(2026, 1, 1, tzinfo=UTC)


def interaction(prefix: str, i: int) -> Interaction:
    return Interaction(
        event_id=f"{prefix}{i}",
        user_id=f"u{i % 943}",
        item_id=f"i{i % 1682}",
        kind="click" if i % 3 else "view",
        ts=START + timedelta(milliseconds=i),
    )


def impression(prefix: str, i: int) -> Impression:
    return Impression(
        event_id=f"{prefix}{i}",
        request_id=f"r{prefix}{i}",
        user_id=f"u{i % 943}",
        item_ids=[f"i{(i + k) % 1682}" for k in range(10)],
        level="FULL",
        latency_ms=float(i % 40),
    )


def lag(settings: Settings, admin: AdminClient) -> int:
    return sum(consumer_lags(admin, groups=[GROUP], topics=TOPICS).get(GROUP, {"x": 1}).values())


def wait_caught_up(settings: Settings, admin: AdminClient, timeout_s: float = 600) -> float:
    deadline = time.monotonic() + timeout_s
    while lag(settings, admin) != 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the sink did not catch up")
        time.sleep(0.1)
    return time.monotonic()


def store_ceiling(n: int) -> tuple[float, float]:
    """Rows/s of the two insert paths into a scratch chDB, no Kafka: Python rows
    (`schema.insert`) and prebuilt Arrow blocks (the sink's `ChdbTables.insert`)."""
    events = [interaction("c", i) for i in range(n)]
    rows = [schema.interaction_row(e) for e in events]
    blocks = []
    for k in range(0, n, 5000):
        block = ColumnBlock()
        block.add(from_events(events[k : k + 5000]))
        blocks.append(block)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings().with_overrides(stack={"state_dir": Path(tmp)})
        with store_session(settings) as client:
            started = time.perf_counter()
            for k in range(0, n, 5000):
                schema.insert(client, "streamrec", schema.INTERACTIONS, rows[k : k + 5000])
            by_rows = n / (time.perf_counter() - started)
            tables = ChdbTables(client, "streamrec")
            started = time.perf_counter()
            for block in blocks:
                tables.insert(schema.INTERACTIONS, block)
            by_arrow = n / (time.perf_counter() - started)
    return by_rows, by_arrow


def burst(settings: Settings, admin: AdminClient, n: int) -> float:
    # Encoded before the clock starts and produced in a tight loop, so that the benchmark's
    # own encoding (pydantic, ~4 us an event) does not bound the sink's rate on 2 cores.
    events = [interaction("b", i) for i in range(n)]
    payloads = [
        (EVENTS_INTERACTIONS.key_of(e), codecs.encode(EVENTS_INTERACTIONS, e)) for e in events
    ]
    failures = DeliveryTracker()
    producer = replay_producer(settings, failures)
    started = time.monotonic()
    for i, (key, value) in enumerate(payloads):
        produce(producer, EVENTS_INTERACTIONS, key, value)
        if i % 10_000 == 0:
            producer.poll(0)
    flush(producer)
    failures.raise_if_failed()
    produced = time.monotonic()
    done = wait_caught_up(settings, admin)
    print(
        f"burst: produced {n} in {produced - started:.1f} s, sink caught up after "
        f"{done - started:.1f} s"
    )
    return n / (done - started)


def sustained(
    settings: Settings, admin: AdminClient, rate: int, seconds: float
) -> tuple[list[float], int, float]:
    producer = bulk_producer(settings, **{"linger.ms": 5})
    tracker = DeliveryTracker()
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            samples.append(lag(settings, admin))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tick = 0.02
    sent = 0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(rate * elapsed)
        while sent < due:
            if sent % 5 == 4:
                produce_event(producer, RECS_SERVED, impression("s", sent), tracker)
            else:
                produce_event(producer, EVENTS_INTERACTIONS, interaction("s", sent), tracker)
            sent += 1
        producer.poll(0)
        time.sleep(tick)  # pacing the producer, not waiting on a result
    flush(producer)
    achieved = sent / (time.monotonic() - started)
    stop.set()
    sampler.join()
    tracker.raise_if_failed()
    wait_caught_up(settings, admin)
    return samples, sent, achieved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()

    print(machine())
    ceiling, arrow_ceiling = store_ceiling(args.burst)
    print(f"chDB insert ceiling (this process, 5,000-row inserts): {ceiling:,.0f} rows/s")
    print(f"chDB Arrow insert (this process, 5,000-row blocks): {arrow_ceiling:,.0f} rows/s")
    with bench_stack() as settings:
        admin = admin_client(settings)
        sink = WorkerProcess(settings, NAME, group=GROUP).start()
        try:
            deadline = time.monotonic() + 120
            while not any(b.name == NAME for b in metrics.live_workers(settings)):
                if time.monotonic() > deadline or not sink.alive():
                    raise RuntimeError(f"the sink did not start; see {sink.log}")
                time.sleep(0.2)
            rows_s = burst(settings, admin, args.burst)
            print(
                f"sink burst: {rows_s:,.0f} rows/s end to end ({rows_s / ceiling:.2f} of the "
                f"row insert path, {rows_s / arrow_ceiling:.2f} of the Arrow insert)"
            )
            samples, sent, achieved = sustained(settings, admin, args.rate, args.seconds)
            p = percentiles(samples)
            print(
                f"sustained {achieved:,.0f} events/s for {args.seconds:.0f} s ({sent} events): "
                f"lag p50 {p['p50']:.0f}, p95 {p['p95']:.0f}, max {p['max']:.0f} events "
                f"(= {p['max'] / args.rate * 1000:.0f} ms of traffic)"
            )
        finally:
            sink.stop()
        with store_session(settings) as client:
            db = settings.clickhouse.database
            rows = client.command(f"SELECT count() FROM {db}.interactions FINAL")
            rows += client.command(f"SELECT count() FROM {db}.impressions FINAL")
        expected = args.burst + sent
        print(f"rows in ClickHouse: {rows} of {expected} produced")
        if rows != expected:
            raise SystemExit("row count mismatch")


if __name__ == "__main__":
    main()
